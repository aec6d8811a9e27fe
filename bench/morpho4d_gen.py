"""Morpho4D generation from language (issue 23's bars over the prompts: the object count of every fitted
frame equals the plan's in >= 0.95 of the frames, the object's 3D path goes the commanded way for >= 0.9 of
the prompts, GEN mean <= 20 s on a CPU, truth edit precision and recall >= 0.9 each).

For each prompt, timed end to end: the grammar parses it (eq. 11.5), GEN builds the scene
(trajectory -> frames -> tiny depth model -> features -> fitting, :func:`generate_scene`; the frame
source is Mojito's generator if the tiny pack has its text-to-video model, else the labelled
ShapesWorld stand-in, named in every line). Then:

* **object count**: the fitted scene is rendered from the home camera at every frame and ShapesWorld's
  detector counts the objects of each render; a frame is right when the count equals the plan's (the
  ``colour_match`` field also asks for the plan's colours). Beside it, what the frame check saw in the
  source video before repair (``source_right_fraction``), the frames repaired, the seed of the frames kept
  and the object Gaussians pruned;
* **direction**: the Gaussians that the moving object's name selects (eq. 11.13-11.14, the same
  selection an edit uses, not the truth ids) are averaged at the first and the last frame, weighted by
  their opacity there (a piece of the object may be hidden in one of them); the
  world displacement (x right, y up) must have cosine >= 0.7 with the commanded direction (image y
  flipped) and length >= 0.1 world units (5% of the plane);
* **edit precision / recall**: "make the <object> <colour>" through a session of :class:`Morpho4DRunner`; the home
  view is rendered at every frame before and after; a pixel is *edited* when its colour moved by at
  least half the distance between the object's old and new colours (the same half-coverage rule as the
  detector's masks); precision = |edited & mask| / |edited|, recall = |edited & mask| / |mask|, with
  the detector's masks of the source frames (matched to the object by colour and shape);
* **truth edit precision / recall** (:mod:`pipelines.morpho4d.truth`): before the edit, every query of the
  scene by colour, shape, both and synonym is selected (eq. 11.13-11.14) and scored against the Gaussians'
  truth objects from the ShapesWorld renderer's drawing of the plan along its boxes (not the detector's
  masks, not the features' teacher); a prompt's value is the mean over its queries.

Prints one JSON line per prompt and summary lines. Run: ``.venv/bin/python bench/morpho4d_gen.py``
(``| tee bench/results/morpho4d_gen.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import emit, machine  # noqa: E402
from pipelines.models import ModelManager  # noqa: E402
from pipelines.morpho4d import GenConfig, render, to_uint8  # noqa: E402
from pipelines.morpho4d.editing import NAMED_COLOURS  # noqa: E402
from pipelines.morpho4d.motion import object_name  # noqa: E402
from pipelines.morpho4d.generation import TEACHERS  # noqa: E402
from pipelines.morpho4d.runner import Morpho4DRunner  # noqa: E402
from pipelines.morpho4d.truth import plan_truth, truth_edit_metrics  # noqa: E402
from pipelines.shapesworld import detect  # noqa: E402
from pipelines.shapesworld.vocab import DIRECTIONS  # noqa: E402
from pipelines.utils import set_torch_threads  # noqa: E402

BENCH = "morpho4d_gen"
PROMPTS = (
    "a red ball moves from left to right quickly",
    "a blue square slides from right to left slowly",
    "a green triangle moves upward steadily",
    "an orange circle slides downward quickly",
    "a purple box moves toward the top right steadily",
    "a yellow triangle moves toward the bottom left quickly",
    "a small red ball bounces quickly from right to left",
    "a big blue box slides upward slowly while a yellow ball stays still",
    "a green circle bounces from left to right steadily",
    "A purple triangle moves downward slowly while a red square stays still.",
    "an orange square moves toward the top left quickly",
    "a blue ball rolls toward the bottom right steadily",
    "a red triangle glides from left to right slowly",
    "a big yellow square moves from right to left quickly",
    "Generate a scene where a green box slides downward steadily",
    "a purple ball hops from right to left quickly",
    "a blue triangle drifts upward quickly while an orange ball stays still",
    "a red square moves toward the top right quickly",
    "show an orange triangle moving from left to right steadily",
    "a big green ball moves toward the bottom left steadily while a purple box stays still",
    "a yellow circle slides upward quickly",
    "a small blue square bounces from left to right quickly",
)


def edit_colour(colour: str) -> str:
    """A colour far from ``colour`` for the recolour edit."""
    return "yellow" if colour in ("blue", "purple") else "blue"


def run_prompt(prompt: str, runner: Morpho4DRunner, source=None) -> dict:
    """One prompt through a session of the studio's runner (``source`` replaces its frame source)."""
    session = runner.new_session()
    if source is not None:
        session.source = source
    start = time.perf_counter()
    session.run(prompt)
    gen_seconds = time.perf_counter() - start
    result, scene = session.gen, session.scene
    mover = result.plan.objects[0]
    name = object_name(mover)

    # Direction of the selected Gaussians' mean path.
    selection = session.editor.preview(name)
    first, last = (np.average(scene.means_at(t)[selection.mask], axis=0, weights=scene.opacities_at(t)[selection.mask])
                   for t in (0.0, float(scene.n_frames - 1)))
    moved = (last - first)[:2]
    want = np.array(DIRECTIONS[mover.direction]) * np.array([1.0, -1.0])
    length = float(np.linalg.norm(moved))
    cosine = float(moved @ want / length) if length > 0 else 0.0
    correct = cosine >= 0.7 and length >= 0.1

    # Selections against the renderer's truth (before any edit).
    truth_ids, truth_names = plan_truth(result.plan.objects, result.boxes, scene.camera.width)
    truth_rows = truth_edit_metrics(scene, truth_ids, truth_names)

    # Objects per fitted frame (home view) against the plan.
    views = [render(scene, scene.camera, float(t)) for t in range(scene.n_frames)]
    found = [detect(to_uint8(view)) for view in views]
    before = [view.numpy() for view in views]
    planned = sorted(obj.colour for obj in result.plan.objects)
    count_right = [len(d) == len(planned) for d in found]
    colour_match = [sorted(x.colour for x in d) == planned for d in found]
    frame_check = json.loads(scene.meta["frame_check"])

    # Edit precision / recall against the detector's masks of the frames.
    new = edit_colour(mover.colour)
    edit_start = time.perf_counter()
    record = session.run(f"make the {mover.phrase} {new}")
    edit_seconds = time.perf_counter() - edit_start
    after = [render(session.scene, scene.camera, float(t)).numpy() for t in range(scene.n_frames)]
    old_rgb = np.array(NAMED_COLOURS[mover.colour]) / 255.0
    new_rgb = np.array(NAMED_COLOURS[new]) / 255.0
    half = 0.5 * np.abs(new_rgb - old_rgb).sum()
    edited = np.stack([np.abs(a - b).sum(axis=-1) >= half for a, b in zip(after, before)])
    mask = result.instance_ids == 1
    hit = float((edited & mask).sum())
    return {
        "prompt": prompt, "gen_seconds": round(gen_seconds, 2), "stages": result.seconds,
        "object_count_right": sum(count_right), "colour_match": sum(colour_match), "frames": len(count_right),
        "counts": [len(d) for d in found], "source_right_fraction": round(result.frame_check.right_fraction, 4),
        "repaired": result.repaired, "frames_seed": frame_check["frames_seed"], "pruned": result.pruned,
        "fit_steps": len(result.fit.losses),
        "direction": mover.direction, "speed": mover.speed, "path": mover.path,
        "world_displacement": [round(float(v), 3) for v in moved], "cosine": round(cosine, 3),
        "direction_correct": bool(correct), "selected_gaussians": int(selection.mask.sum()),
        "edit": record.plan["parameters"]["colour"], "edit_seconds": round(edit_seconds, 2),
        "edit_precision": round(hit / max(edited.sum(), 1), 4), "edit_recall": round(hit / max(mask.sum(), 1), 4),
        "truth_edit_precision": round(float(np.mean([r["precision"] for r in truth_rows])), 4),
        "truth_edit_recall": round(float(np.mean([r["recall"] for r in truth_rows])), 4),
        "truth_queries": truth_rows, "mask_pixels": int(mask.sum()), "fit_loss": [round(result.fit.initial_loss, 5), round(result.fit.final_loss, 5)],
        "source": result.video.label, "generated": result.video.generated, "teacher": result.teacher,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mojito", default=None, help="a Mojito text-to-video folder to generate with "
                        "(default: the tiny pack's, else the stand-in)")
    parser.add_argument("--stand-in", action="store_true", help="frames from the labelled ShapesWorld stand-in "
                        "renderer (not generated), e.g. | tee bench/results/morpho4d_gen_standin.jsonl")
    parser.add_argument("--denoising-steps", type=int, default=20)
    parser.add_argument("--teacher", choices=TEACHERS, default="auto")
    args = parser.parse_args(argv)
    set_torch_threads(args.threads)
    bench_start = time.perf_counter()
    emit(BENCH, "machine", machine())
    config = GenConfig(teacher=args.teacher)
    runner = Morpho4DRunner(ModelManager("tiny"), frames="stand-in" if args.stand_in else "auto", config=config)
    source = None
    if args.mojito:  # another text-to-video folder, at its own number of denoising steps
        from pipelines.mojito.pipeline import MojitoPipeline
        from pipelines.morpho4d import MojitoSource

        pipe = MojitoPipeline.from_pretrained(args.mojito, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        source = MojitoSource(pipe, num_inference_steps=args.denoising_steps)
    label = source.label if source is not None else runner.resolved_frames()
    emit(BENCH, "settings", {"source": label, "teacher": config.teacher, "n_frames": config.n_frames,
                             "size": config.size, "fit_size": config.fit_size, "fit_steps": config.fit.steps,
                             "converge_window": config.fit.converge_window,
                             "init_gaussians": config.fit.init_gaussians, "regenerations": config.regenerations,
                             "min_right_fraction": config.min_right_fraction, "relief": config.relief,
                             "nice": os.nice(0)})
    rows = []
    for prompt in PROMPTS[: args.prompts]:
        row = run_prompt(prompt, runner, source)
        rows.append(row)
        emit(BENCH, "prompt", row["direction_correct"], **row)
    frames = sum(r["frames"] for r in rows)
    fraction = sum(r["object_count_right"] for r in rows) / frames
    emit(BENCH, "object_count_fraction", round(fraction, 4), bar=0.95, met=bool(fraction >= 0.95), frames=frames,
         prompts=len(rows), colour_match=round(sum(r["colour_match"] for r in rows) / frames, 4),
         source_right_fraction=round(statistics.mean(r["source_right_fraction"] for r in rows), 4),
         regenerated=sum(r["frames_seed"] != config.seed for r in rows))
    seconds = [r["gen_seconds"] for r in rows]
    emit(BENCH, "gen_seconds_mean", round(statistics.mean(seconds), 2), max=max(seconds), bar=20.0,
         met=bool(statistics.mean(seconds) <= 20.0), prompts=len(rows), threads=args.threads,
         stages={stage: round(statistics.mean(r["stages"].get(stage, 0.0) for r in rows), 2) for stage in rows[0]["stages"]})
    fraction = sum(r["direction_correct"] for r in rows) / len(rows)
    emit(BENCH, "direction_fraction", round(fraction, 4), bar=0.9, met=bool(fraction >= 0.9), prompts=len(rows))
    for key in ("truth_edit_precision", "truth_edit_recall"):
        values = [r[key] for r in rows]
        emit(BENCH, f"{key}_mean", round(statistics.mean(values), 4), min=min(values), bar=0.9,
             met=bool(statistics.mean(values) >= 0.9), prompts=len(rows),
             queries=sum(len(r["truth_queries"]) for r in rows), teacher=config.teacher)
    for key in ("edit_precision", "edit_recall"):
        values = [r[key] for r in rows]
        emit(BENCH, f"{key}_mean", round(statistics.mean(values), 4), min=min(values), bar=0.9,
             met=bool(statistics.mean(values) >= 0.9))
    emit(BENCH, "bench_seconds", round(time.perf_counter() - bench_start, 1), bar=1200.0)


if __name__ == "__main__":
    main()
