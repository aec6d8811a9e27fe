"""Mojito: does the object follow the sketched path, at the asked speed? (issue 6, thesis ch. 10)

Over seeded ShapesWorld trajectories (straight lines in the eight caption
directions, zigzags, arcs; one moving object, or one moving and one still),
each case is generated unguided and guided from the same noise by the tiny
text-to-video pack, and the ShapesWorld detector is run on every frame.
JSON lines:

- ``guided`` / ``unguided``: mIoU, AP50, CD, in-box hit rate and the
  "plausible" share (detected shape and colour right and size within 2x of
  the unguided median of that case), means over cases and objects;
- ``miou_ratio``, ``time_ratio`` (guided / unguided seconds, same run);
- ``unguided_quality``: share of frames where the caption's moving object is
  detected, and share of straight-line cases whose unguided object moves in
  the caption's direction;
- ``mim_alignment``: |measured Farneback intensity - requested| / 10 of the
  unguided videos with the Motion Intensity Modulator and with its "none" row
  (the caption still says slowly/steadily/quickly), and their ratio;
- ``steps_ablation`` (K = 1, 5, 10, 30 guided steps of 30) and ``eta_sweep``
  on the first ``--subset`` cases;
- ``intensity_sweep``: the unguided video of a caption without a speed word at every intensity 1-10
  (same noise), the Spearman correlation between the requested level and the measured Farneback
  intensity, per caption and its mean (issue 19's bar: >= 0.8); ``intensity_sweep_alignment``: over the
  same sweep, |measured - requested| / 10 with the MIM and with its "none" row (issue 19's bar: 2x lower with);
- ``studio_seconds``: one 16-frame video at the tab's defaults, guided and unguided.

Run: ``WORLDSTUDIO_THREADS=2 .venv/bin/python bench/mojito.py`` (``--n``, ``--subset``, ``--steps`` to scale).
The cases and the ablations run in ``--workers`` one-thread processes (one per core: a 16-frame video of
16x16 latents is no faster on two threads than on one), then the studio timing alone in this process;
``--cases A:B`` / ``--parts`` and ``--summarise`` run or summarise a part by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit, machine  # noqa: E402
from pipelines.models import TINY_PACK_DIR  # noqa: E402
from pipelines.mojito import GuidanceConfig, MojitoPipeline  # noqa: E402
from pipelines.mojito.pipeline import DEFAULT_STEPS  # noqa: E402
from pipelines.mojito.evaluate import (  # noqa: E402
    detected_centres,
    motion_alignment,
    shapes_detections,
    track_metrics,
)
from pipelines.mojito.train import without_speed_word  # noqa: E402
from pipelines.mojito.trajectory import boxes_from_points, preset_points  # noqa: E402
from pipelines.shapesworld import COLOURS, DIRECTIONS, SHAPES  # noqa: E402
from pipelines.shapesworld.video import INTENSITY_STEP, speed_word  # noqa: E402
from pipelines.shapesworld.vocab import article  # noqa: E402

BENCH = "mojito"
N_FRAMES = 16
# Box side: about a ShapesWorld video object's side (0.14-0.22 of the frame), so a perfect hit has IoU near 1.
SIDE = 0.22
KINDS = ("straight", "zigzag", "arc")
# Work of the ablations in units of one main case (an unguided and a guided 10-step video), for splitting
# the bench over processes: 8 guided videos at 30 steps, 14 guided and 2 unguided at 10 (about 22 units).
ABLATION_UNITS = 22.0
# A main case that is also generated without MIM costs this much more.
NO_MIM_UNITS = 0.45


@dataclass
class Case:
    seed: int
    kind: str
    prompt: str
    # phrase -> [T, 4] target boxes (fractions); the first phrase moves
    boxes: dict[str, np.ndarray]
    intensity: int
    direction: str


def _straight(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    unit = np.array(DIRECTIONS[direction])
    length = rng.uniform(0.35, 0.6)
    lo, hi = SIDE / 2, 1 - SIDE / 2
    offsets = np.outer(np.linspace(0, length, N_FRAMES), unit)
    low, high = lo - offsets.min(0), hi - offsets.max(0)
    start = rng.uniform(low, np.maximum(low, high))
    return start + offsets, direction


def make_case(seed: int, two: bool | None = None) -> Case:
    """Case ``seed``: kind by seed, colours/shapes/path/second object from a seeded generator."""
    rng = np.random.default_rng([seed, 6])
    kind = KINDS[seed % len(KINDS)]
    two = seed % 2 == 1 if two is None else two
    colours = rng.choice(sorted(COLOURS), size=2, replace=False)
    shapes = rng.choice(SHAPES, size=2)
    if kind == "straight":
        points, direction = _straight(rng)
    else:
        points = preset_points(kind, N_FRAMES, side=SIDE)
        direction = "from left to right"
        if rng.random() < 0.5:  # mirrored: right to left
            points = np.stack([1 - points[:, 0], points[:, 1]], axis=1)
            direction = "from right to left"
    path = np.hypot(*np.diff(points, axis=0).T).mean()
    intensity = int(np.clip(round(path / INTENSITY_STEP), 1, 10))
    verb = "bounces" if kind == "arc" else "moves"
    mover = f"{colours[0]} {shapes[0]}"
    prompt = f"{article(colours[0])} {mover} {verb} {direction} {speed_word(intensity)}"
    boxes = {mover: boxes_from_points(points, SIDE / 2)}
    if two:
        still = f"{colours[1]} {shapes[1]}"
        prompt += f" while {article(colours[1])} {still} stays still"
        # the still object sits on the side of the frame the path uses least
        centre = np.array([0.5, 0.18 if points[:, 1].mean() > 0.5 else 0.82])
        boxes[still] = boxes_from_points(np.repeat(centre[None], N_FRAMES, 0), SIDE / 2)
    return Case(seed, kind, prompt, boxes, intensity, direction)


def run(pipe: MojitoPipeline, case: Case, steps: int, guidance: GuidanceConfig | None, use_mim: bool = True,
        intensity_guidance: float | None = None):
    """Generate a case (guided if ``guidance``); return (frames, seconds)."""
    started = time.perf_counter()
    out = pipe(case.prompt, trajectories=case.boxes if guidance is not None else None, intensity=case.intensity,
               num_frames=N_FRAMES, num_inference_steps=steps, guidance=guidance, use_motion_encoder=use_mim,
               intensity_guidance_scale=intensity_guidance, generator=torch.Generator().manual_seed(case.seed))
    return out.frames, time.perf_counter() - started


def judge(frames: np.ndarray, case: Case, reference: dict[str, float] | None):
    """Per object metrics; also each object's median detected size (the next call's reference)."""
    side = frames.shape[2]
    metrics, sizes, detections = {}, {}, {}
    for phrase, boxes in case.boxes.items():
        found = shapes_detections(frames, phrase)
        found_sizes = [d.size for d in found if d.box is not None and d.matches]
        sizes[phrase] = float(np.median(found_sizes)) if found_sizes else None
        metrics[phrase] = track_metrics(found, boxes, side, (reference or {}).get(phrase))
        detections[phrase] = found
    return metrics, sizes, detections


def mean_metrics(records: list[dict]) -> dict:
    """Means over cases and objects of per-object metric dicts (``TrackMetrics.as_dict``); None stays out."""
    keys = ("miou", "ap50", "cd", "hit_rate", "plausible", "detected")
    values = {k: [m[k] for case in records for m in case.values() if m[k] is not None] for k in keys}
    return {k: round(float(np.mean(v)), 4) if v else None for k, v in values.items()}


def moves_in_direction(detections, direction: str, side: int) -> bool:
    """Whether the detected centre moves along the caption's direction (first to last detected frame)."""
    centres = detected_centres(detections, side)
    found = np.flatnonzero(np.isfinite(centres[:, 0]))
    if len(found) < 2:
        return False
    shift = centres[found[-1]] - centres[found[0]]
    return float(shift @ np.array(DIRECTIONS[direction])) > 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=51, help="seeded cases (a multiple of 3 mixes the kinds evenly)")
    parser.add_argument("--subset", type=int, default=2, help="cases in the steps ablation and the eta sweep")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps of the main comparison")
    parser.add_argument("--guided-steps", type=int, default=5, help="K of the main comparison")
    parser.add_argument("--strength", type=float, default=GuidanceConfig().strength)
    parser.add_argument("--mim-cases", type=int, default=12, help="cases also generated without MIM")
    parser.add_argument("--model", type=Path, default=TINY_PACK_DIR / "shapes-t2v")
    parser.add_argument("--intensity-guidance", type=float, default=None,
                        help="the pipeline's intensity_guidance_scale s_M (default: ordinary CFG)")
    parser.add_argument("--parts", default="main,ablations,intensity,studio",
                        help="comma-separated subset of main, ablations, intensity, studio (to run them as separate "
                             "processes)")
    parser.add_argument("--sweep-captions", type=int, default=4, help="captions in the intensity sweep")
    parser.add_argument("--cases", default=None,
                        help="FIRST:LAST: only these cases of the main comparison, no summary (run slices in parallel)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for the main comparison and the ablations (1: all in this process)")
    parser.add_argument("--summarise", nargs="+", type=Path, default=None,
                        help="print the main comparison's summary from the case lines of these JSONL files")
    args = parser.parse_args()
    if args.summarise:
        records = [json.loads(line) for path in args.summarise for line in path.read_text().splitlines()
                   if line.startswith("{") and json.loads(line)["name"] == "case"]
        summarise(records)
        return
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    emit(BENCH, "machine", None, **machine())
    if args.workers > 1 and not args.cases and parts & {"main", "ablations"}:
        process_seconds = run_workers(args, parts)
        if "intensity" in parts:
            intensity_sweep(MojitoPipeline.from_pretrained(args.model, local_files_only=True), args)
        if "studio" in parts:
            studio()
        total = time.perf_counter() - started
        emit(BENCH, "bench_seconds", round(total, 1), parts=sorted(parts), workers=args.workers,
             process_seconds=process_seconds, bar="< 1200 s", met=bool(total < 1200))
        return
    pipe = MojitoPipeline.from_pretrained(args.model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    cases = [make_case(seed) for seed in range(args.n)]
    limit = pipe.tokenizer.model_max_length  # a caption past it would lose the still object's words
    cases = [c if len(pipe.tokenizer(c.prompt).input_ids) <= limit else make_case(c.seed, two=False) for c in cases]
    main_guidance = GuidanceConfig(strength=args.strength, steps=args.guided_steps)
    emit(BENCH, "settings", None, cases=len(cases), kinds={k: sum(c.kind == k for c in cases) for k in KINDS},
         two_objects=sum(len(c.boxes) == 2 for c in cases), steps=args.steps, guidance=vars(main_guidance) | {
             "layers": list(main_guidance.layers)}, box_side=SIDE)

    if "main" in parts:
        first, last = (int(v) for v in args.cases.split(":")) if args.cases else (0, len(cases))
        records = []
        for case in cases[first:last]:
            records.append(case_record(pipe, case, args, main_guidance))
            emit(BENCH, "case", case.seed, **records[-1])
        if not args.cases:
            summarise(records)
    if "ablations" in parts:  # reference sizes: the subset's unguided medians
        references = [judge(run(pipe, c, args.steps, None)[0], c, None)[1] for c in cases[: args.subset]]
        ablations(pipe, cases[: args.subset], references, args)
    if "intensity" in parts:
        intensity_sweep(pipe, args)
    if "studio" in parts:
        studio()
    total = time.perf_counter() - started
    emit(BENCH, "bench_seconds", round(total, 1), parts=sorted(parts), bar="< 1200 s", met=bool(total < 1200))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's of the ranks; ties broken by order, as levels have none)."""
    ranks_a, ranks_b = (np.argsort(np.argsort(x)).astype(float) for x in (a, b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def intensity_sweep(pipe: MojitoPipeline, args) -> None:
    """Issue 19's intensity bars: straight-line captions with their speed word removed, each generated
    unguided at intensity 1..10 from the same noise; Spearman between the level and the measured
    Farneback intensity (:func:`motion_alignment`), per caption and averaged; and the alignment error
    |measured - level| / 10 over the sweep with the MIM against the same caption and noise generated with
    its "none" row (one video, which no level can change, judged against every level)."""
    pipe.set_progress_bar_config(disable=True)
    levels = np.arange(1, 11)
    correlations, errors_mim, errors_none = [], [], []
    for seed in range(1002, 1002 + 3 * args.sweep_captions, 3):  # seed % 3 == 0: make_case's straight lines
        case = make_case(seed, two=False)
        caption = without_speed_word(case.prompt)

        def generate(level: int, use_mim: bool = True) -> np.ndarray:
            return pipe(caption, intensity=level, num_frames=N_FRAMES, num_inference_steps=args.steps,
                        use_motion_encoder=use_mim, intensity_guidance_scale=args.intensity_guidance,
                        generator=torch.Generator().manual_seed(case.seed)).frames

        measured = np.array([motion_alignment(generate(int(level)), int(level))[0] for level in levels])
        without = motion_alignment(generate(1, use_mim=False), 1)[0]
        correlations.append(spearman(levels, measured))
        errors_mim.append(float(np.mean(np.abs(measured - levels)) / 10))
        errors_none.append(float(np.mean(np.abs(without - levels)) / 10))
        emit(BENCH, "intensity_sweep_caption", round(correlations[-1], 3), prompt=caption,
             measured=[round(float(m), 2) for m in measured], without_mim=round(float(without), 2),
             alignment_error=round(errors_mim[-1], 4), alignment_error_without_mim=round(errors_none[-1], 4))
    mean = float(np.mean(correlations))
    emit(BENCH, "intensity_sweep", round(mean, 3), captions=len(correlations), steps=args.steps,
         intensity_guidance=args.intensity_guidance,
         bar="Spearman >= 0.8 between level 1-10 and measured flow, no speed word", met=bool(mean >= 0.8))
    with_mim, without_mim = float(np.mean(errors_mim)), float(np.mean(errors_none))
    emit(BENCH, "intensity_sweep_alignment", round(with_mim, 4), without_mim=round(without_mim, 4),
         ratio=round(without_mim / max(with_mim, 1e-6), 3), captions=len(correlations), levels=len(levels),
         intensity_guidance=args.intensity_guidance,
         bar="sweep alignment error with MIM at least 2x lower than with its none row", met=bool(without_mim >= 2 * with_mim))


def studio() -> None:
    """One 16-frame video at the tab's defaults, unguided and guided, at this process' threads, through the
    runner the tab calls (the preset's model)."""
    from pipelines.models import ModelManager, choose_placement
    from pipelines.mojito.runner import MojitoRequest, MojitoRunner, TrajectoryInput

    runner = MojitoRunner(ModelManager("tiny", choose_placement("cpu")))
    runner.pipe.set_progress_bar_config(disable=True)
    case = make_case(0)
    keyframes = [TrajectoryInput(phrase, [[t, *map(float, box)] for t, box in enumerate(boxes)])
                 for phrase, boxes in case.boxes.items()]
    report = runner.run(MojitoRequest(case.prompt, keyframes, case.intensity, steps=DEFAULT_STEPS, seed=case.seed,
                                      n_frames=N_FRAMES, with_unguided=True))
    for label, seconds, bar in (("unguided", report.unguided_seconds, 15), ("guided", report.seconds, 30)):
        emit(BENCH, "studio_seconds", round(seconds, 2), mode=label, frames=N_FRAMES, steps=DEFAULT_STEPS,
             bar=f"<= {bar} s", met=bool(seconds <= bar))


def worker_commands(args, parts: set[str]) -> list[list[str]]:
    """Split the main cases into contiguous slices over ``args.workers`` processes, the ablations on the
    last one, so that every process gets about the same work (``ABLATION_UNITS``, ``NO_MIM_UNITS``)."""
    costs = [1.0 + NO_MIM_UNITS * (seed < args.mim_cases) for seed in range(args.n)] if "main" in parts else []
    extra = ABLATION_UNITS if "ablations" in parts else 0.0
    # the last worker's cases fill what the ablations leave of an even share; the others split the rest
    last_cases = max(0.0, (sum(costs) + extra) / args.workers - extra)
    share = (sum(costs) - last_cases) / max(args.workers - 1, 1)
    bounds, load = [0], 0.0
    for i, cost in enumerate(costs):
        if len(bounds) < args.workers and load + cost / 2 > share * len(bounds):
            bounds.append(i)
        load += cost
    bounds += [len(costs)] * (args.workers + 1 - len(bounds))
    common = [sys.executable, str(Path(__file__).resolve()), "--workers", "1", "--n", str(args.n),
              "--subset", str(args.subset), "--steps", str(args.steps), "--guided-steps", str(args.guided_steps),
              "--strength", str(args.strength), "--mim-cases", str(args.mim_cases), "--model", str(args.model)]
    if args.intensity_guidance is not None:
        common += ["--intensity-guidance", str(args.intensity_guidance)]
    commands = []
    for w in range(args.workers):
        mine = (["main"] if bounds[w] < bounds[w + 1] else []) + (["ablations"] if extra and w == args.workers - 1 else [])
        if mine:
            commands.append(common + ["--parts", ",".join(mine), "--cases", f"{bounds[w]}:{bounds[w + 1]}"])
    return commands


def run_workers(args, parts: set[str]) -> dict[str, float]:
    """Run the main comparison and the ablations in one-thread worker processes; print their lines and the
    main comparison's summary; return the seconds each worker took."""
    env = os.environ | {"WORLDSTUDIO_THREADS": "1"}
    commands = worker_commands(args, parts)
    labels = [f"{c[c.index('--parts') + 1]} {c[c.index('--cases') + 1]}" for c in commands]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"worker-{i}.jsonl" for i in range(len(commands))]
        workers = [subprocess.Popen(c, stdout=path.open("w"), env=env) for c, path in zip(commands, paths)]
        seconds: dict[str, float] = {}
        while len(seconds) < len(workers):
            for label, worker in zip(labels, workers):
                if label not in seconds and worker.poll() is not None:
                    seconds[label] = round(time.perf_counter() - started, 1)
            time.sleep(0.5)
        failed = [label for label, worker in zip(labels, workers) if worker.returncode]
        if failed:
            raise RuntimeError(f"bench workers {failed} failed (exit status {[w.returncode for w in workers]})")
        lines = [line for path in paths for line in path.read_text().splitlines() if line.startswith("{")]
    records = []
    for line in lines:
        record = json.loads(line)
        if record["name"] in ("machine", "settings", "bench_seconds"):
            continue
        print(line, flush=True)
        if record["name"] == "case":
            records.append(record)
    if records:
        summarise(records)
    return seconds


def case_record(pipe, case: Case, args, guidance: GuidanceConfig) -> dict:
    """Unguided (with and, for seeds below ``--mim-cases``, without MIM) and guided generation of one case."""
    frames, unguided_s = run(pipe, case, args.steps, None, intensity_guidance=args.intensity_guidance)
    unguided, sizes, detections = judge(frames, case, None)
    mover = next(iter(case.boxes))
    direction = moves_in_direction(detections[mover], case.direction, frames.shape[2]) if case.kind == "straight" \
        else None
    align_mim = motion_alignment(frames, case.intensity)[1]
    align_none = None
    if case.seed < args.mim_cases:
        align_none = motion_alignment(run(pipe, case, args.steps, None, use_mim=False)[0], case.intensity)[1]
    frames, guided_s = run(pipe, case, args.steps, guidance, intensity_guidance=args.intensity_guidance)
    guided = judge(frames, case, sizes)[0]
    return dict(kind=case.kind, prompt=case.prompt, objects=len(case.boxes), intensity=case.intensity,
                unguided={p: m.as_dict() for p, m in unguided.items()}, guided={p: m.as_dict() for p, m in guided.items()},
                seconds=[round(unguided_s, 2), round(guided_s, 2)], mover_detected=unguided[mover].detected,
                direction_ok=direction, align_mim=round(align_mim, 4),
                align_none=None if align_none is None else round(align_none, 4))


def summarise(records: list[dict]) -> None:
    """The summary lines of the main comparison from its ``case`` records (one run or several slices)."""
    guided, unguided = mean_metrics([r["guided"] for r in records]), mean_metrics([r["unguided"] for r in records])
    emit(BENCH, "unguided", unguided["miou"], cases=len(records), **unguided)
    emit(BENCH, "guided", guided["miou"], cases=len(records), **guided)
    ratio = guided["miou"] / max(unguided["miou"], 1e-6)
    emit(BENCH, "miou_ratio", round(ratio, 3), bar=">= 3 with guided plausible >= 0.8",
         met=bool(ratio >= 3 and guided["plausible"] >= 0.8))
    groups = {f"guided_{kind}": [r for r in records if r["kind"] == kind] for kind in KINDS}
    groups |= {f"guided_{n}_objects": [r for r in records if r["objects"] == n] for n in (1, 2)}
    for name, picked in groups.items():
        emit(BENCH, name, mean_metrics([r["guided"] for r in picked])["miou"], cases=len(picked),
             guided=mean_metrics([r["guided"] for r in picked]), unguided=mean_metrics([r["unguided"] for r in picked]))
    times = np.array([r["seconds"] for r in records])
    time_ratio = float(times[:, 1].sum() / times[:, 0].sum())
    emit(BENCH, "time_ratio", round(time_ratio, 3), guided_s=round(float(times[:, 1].mean()), 2),
         unguided_s=round(float(times[:, 0].mean()), 2), bar="<= 2", met=bool(time_ratio <= 2))
    direction = [r["direction_ok"] for r in records if r["direction_ok"] is not None]
    present = [r["mover_detected"] for r in records]
    emit(BENCH, "unguided_quality", round(float(np.mean(direction)), 3), object_detected=round(float(np.mean(present)), 3),
         straight_cases=len(direction), bar="object in most frames, direction right in >= 70% of seeds",
         met=bool(np.mean(present) > 0.5 and np.mean(direction) >= 0.7))
    paired = [r for r in records if r["align_none"] is not None]
    with_mim = float(np.mean([r["align_mim"] for r in paired]))
    without = float(np.mean([r["align_none"] for r in paired]))
    emit(BENCH, "mim_alignment", round(with_mim, 4), without_mim=round(without, 4), cases=len(paired),
         with_mim_all_cases=round(float(np.mean([r["align_mim"] for r in records])), 4),
         ratio=round(without / max(with_mim, 1e-6), 3), bar="error with MIM at least 2x lower",
         met=bool(without >= 2 * with_mim))


def ablations(pipe, subset, references, args) -> None:
    """Guided steps K = 1, 5, 10, 30 (of 30), the eta sweep and eq. 10.7's raw step on ``subset``."""

    def scores(steps: int, guidance: GuidanceConfig) -> dict:
        per_case = []
        for case, reference in zip(subset, references):
            metrics = judge(run(pipe, case, steps, guidance)[0], case, reference)[0]
            per_case.append({p: m.as_dict() for p, m in metrics.items()})
        return mean_metrics(per_case)

    for k in (1, 5, 10, 30):
        emit(BENCH, "steps_ablation", k, denoising_steps=30, cases=len(subset),
             **scores(30, GuidanceConfig(strength=args.strength, steps=k)))
    for eta in (0.05, 0.1, 0.25, 0.5, 1.0, 2.0):
        emit(BENCH, "eta_sweep", eta, cases=len(subset), **scores(args.steps, GuidanceConfig(strength=eta,
                                                                                                steps=args.guided_steps)))
    emit(BENCH, "raw_sigma_step", 0.05, note="eq. 10.7 as written, sigma_t^2 = (1-abar)/abar", cases=len(subset),
         **scores(args.steps, GuidanceConfig(strength=0.05, steps=args.guided_steps, gradient="raw")))


if __name__ == "__main__":
    main()
