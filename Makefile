# WorldStudio: `make studio` serves the studio, `make test` runs the whole suite.
# Both create .venv on first use and install what the project needs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# One torch thread in tests: on 2 cores a busy neighbour made 2 threads 50-150x slower.
TEST_THREADS ?= 1

.PHONY: setup studio test test-all bench tiny-models tiny-flexecontrol tiny-flexecontrol-ablations tiny-reward tiny-depth tiny-t2v system-deps browser-deps clean

# Debian packages (packages.txt, which a Space and the Dockerfile read too): libusb, libGL and libEGL for open3d,
# ffmpeg for H.264 video export.
system-deps:
	@bash scripts/apt_install.sh $$(cat packages.txt)

# Debian chromium for the browser tests (Playwright drives it; it downloads no browser).
browser-deps:
	@bash scripts/apt_install.sh chromium

$(STAMP): requirements.txt requirements-dev.txt constraints.txt packages.txt
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@touch $(STAMP)

setup: $(STAMP)

studio: setup
	$(PY) app.py

test: setup browser-deps
	WORLDSTUDIO_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -rs --durations=15

# Also the checks marked slow.
test-all: setup browser-deps
	WORLDSTUDIO_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -rs -m "" --durations=15

# Train the tiny pack from scratch (fixed seeds; the v2 recipe of issue 19). Measured by parts on the 2-core CPU:
# autoencoder 29 min at 2 threads; text-to-image 4000 x 32 with grounding and L_ca 0.87 CPU-s a step at one thread
# (58 min; the shipped run took 63 min at one thread beside other work); 40000 scenes and their latents about
# 10 min; CLIP 2 min: about 1 h 30 min to 1 h 40 min in all, at or past issue 19's 90 min. Faster on a GPU.
# Several GPUs or machines: .venv/bin/accelerate launch -m pipelines.tinypack
tiny-models: setup
	WORLDSTUDIO_THREADS=$$(nproc) $(PY) -m pipelines.tinypack --out assets/models/tiny

# Mojito's text-to-video model (shapes-sd v2's UNet inflated to a UNet3D with its own head split, + the Motion
# Intensity Modulator as tokens), as shipped (run F of issue 19, docs/notes/mojito.md): 1500 steps on paths that
# start on the side they leave from, speed words dropped from half the captions, motion grounding, and 30% of
# the samples noised to t >= 600. Run F's steps took 2.4-2.9 s each at 2 threads when alone (about 65 min) plus
# about 5 min rendering and encoding the videos: about 70-75 min on 2 CPU cores; faster on a GPU.
T2V := WORLDSTUDIO_THREADS=$$(nproc) $(PY) -m pipelines.mojito.train --out assets/models/tiny/shapes-t2v
tiny-t2v: setup
	$(T2V) --steps 1500 --video-start leaving_side --speed-word-dropout 0.5 --mim-tokens --text-grounding 1.0 \
		--high-noise-share 0.3 --high-noise-from 600 --checkpoints runs/mojito

# Morpho4D's depth model (a ~150k-parameter GLPN on ShapesWorld truth depth; ~5 min on one CPU thread).
tiny-depth: setup
	WORLDSTUDIO_THREADS=1 $(PY) -m pipelines.morpho4d.depth --out assets/models/tiny/shapes-depth

# FlexEControl's tiny weights over shapes-sd and the full copy bench/flexecontrol.py compares them with (9000 steps
# each as three resumed runs of 3000, batch 8, 4000 scenes with half of the maps drawn by hand, seeds 0 / 1 / 2): two
# one-thread runs at a time, 3000 steps in 16 min (3.1 steps/s, nothing else running) to 29 min (beside other
# work) here, so about 50-90 min on 2 CPU cores; checkpoints in runs/flexecontrol/.
tiny-flexecontrol: setup
	bash scripts/train_flexecontrol.sh $(PY) assets/models/tiny/flexecontrol weights

# The two ablations of the bench (without L_ca, without L_mask), trained exactly as above: as long again.
tiny-flexecontrol-ablations: setup
	bash scripts/train_flexecontrol.sh $(PY) assets/models/tiny/flexecontrol ablations

# The cycle-consistency reward's segmenter (FlexEControl's --cycle-weight; ~6 min on one thread).
tiny-reward: setup
	WORLDSTUDIO_THREADS=1 $(PY) -m pipelines.flexecontrol.reward --out assets/models/tiny/shapes-seg --steps 800 --scenes 4000

bench: setup
	@for script in $(filter-out bench/common.py bench/__init__.py,$(wildcard bench/*.py)); do echo "# $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) artifacts .pytest_cache
