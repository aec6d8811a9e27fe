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
- ``studio_seconds``: one 16-frame video at the tab's defaults, guided and unguided.

Run: ``WORLDSTUDIO_THREADS=2 .venv/bin/python bench/mojito.py`` (``--n``, ``--subset``, ``--steps`` to scale).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit, machine  # noqa: E402
from pipelines.models import TINY_PACK_DIR  # noqa: E402
from pipelines.mojito import GuidanceConfig, MojitoPipeline  # noqa: E402
from pipelines.mojito.evaluate import (  # noqa: E402
    detected_centres,
    motion_alignment,
    shapes_detections,
    track_metrics,
)
from pipelines.mojito.trajectory import boxes_from_points, preset_points  # noqa: E402
from pipelines.shapesworld import COLOURS, DIRECTIONS, SHAPES  # noqa: E402
from pipelines.shapesworld.video import INTENSITY_STEP, speed_word  # noqa: E402
from pipelines.shapesworld.vocab import article  # noqa: E402

BENCH = "mojito"
N_FRAMES = 16
# Box side: about a ShapesWorld video object's side (0.14-0.22 of the frame), so a perfect hit has IoU near 1.
SIDE = 0.22
KINDS = ("straight", "zigzag", "arc")


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


def run(pipe: MojitoPipeline, case: Case, steps: int, guidance: GuidanceConfig | None, use_mim: bool = True):
    """Generate a case (guided if ``guidance``); return (frames, seconds)."""
    started = time.perf_counter()
    out = pipe(case.prompt, trajectories=case.boxes if guidance is not None else None, intensity=case.intensity,
               num_frames=N_FRAMES, num_inference_steps=steps, guidance=guidance, use_motion_encoder=use_mim,
               generator=torch.Generator().manual_seed(case.seed))
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


def mean_metrics(all_metrics: list[dict]) -> dict:
    keys = ("miou", "ap50", "cd", "hit_rate", "plausible", "detected")
    values = {k: [getattr(m, k) for case in all_metrics for m in case.values()] for k in keys}
    return {k: round(float(np.nanmean(v)), 4) if v else None for k, v in values.items()}


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
    args = parser.parse_args()
    started = time.perf_counter()
    emit(BENCH, "machine", None, **machine())
    pipe = MojitoPipeline.from_pretrained(args.model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    cases = [make_case(seed) for seed in range(args.n)]
    limit = pipe.tokenizer.model_max_length  # a caption past it would lose the still object's words
    cases = [c if len(pipe.tokenizer(c.prompt).input_ids) <= limit else make_case(c.seed, two=False) for c in cases]
    main_guidance = GuidanceConfig(strength=args.strength, steps=args.guided_steps)
    emit(BENCH, "settings", None, cases=len(cases), kinds={k: sum(c.kind == k for c in cases) for k in KINDS},
         two_objects=sum(len(c.boxes) == 2 for c in cases), steps=args.steps, guidance=vars(main_guidance) | {
             "layers": list(main_guidance.layers)}, box_side=SIDE)

    guided_m, unguided_m, times_g, times_u, references = [], [], [], [], []
    present, direction_ok, align_mim, align_none = [], [], [], []
    for case in cases:
        frames, seconds = run(pipe, case, args.steps, None)
        metrics, sizes, detections = judge(frames, case, None)
        unguided_m.append(metrics)
        times_u.append(seconds)
        references.append(sizes)
        mover = next(iter(case.boxes))
        present.append(metrics[mover].detected)
        if case.kind == "straight":
            direction_ok.append(moves_in_direction(detections[mover], case.direction, frames.shape[2]))
        align_mim.append(motion_alignment(frames, case.intensity)[1])
        if len(align_none) < args.mim_cases:
            plain, _ = run(pipe, case, args.steps, None, use_mim=False)
            align_none.append(motion_alignment(plain, case.intensity)[1])
        frames, seconds = run(pipe, case, args.steps, main_guidance)
        guided_m.append(judge(frames, case, sizes)[0])
        times_g.append(seconds)
        emit(BENCH, "case", case.seed, kind=case.kind, prompt=case.prompt,
             unguided={p: m.as_dict() for p, m in unguided_m[-1].items()},
             guided={p: m.as_dict() for p, m in guided_m[-1].items()}, seconds=[round(times_u[-1], 2), round(seconds, 2)])

    guided, unguided = mean_metrics(guided_m), mean_metrics(unguided_m)
    emit(BENCH, "unguided", unguided["miou"], **unguided)
    emit(BENCH, "guided", guided["miou"], **guided)
    ratio = guided["miou"] / max(unguided["miou"], 1e-6)
    emit(BENCH, "miou_ratio", round(ratio, 3), bar=">= 3 with guided plausible >= 0.8",
         met=bool(ratio >= 3 and guided["plausible"] >= 0.8))
    for kind in KINDS:
        picked = [i for i, c in enumerate(cases) if c.kind == kind]
        emit(BENCH, f"guided_{kind}", mean_metrics([guided_m[i] for i in picked])["miou"],
             guided=mean_metrics([guided_m[i] for i in picked]), unguided=mean_metrics([unguided_m[i] for i in picked]))
    for count in (1, 2):
        picked = [i for i, c in enumerate(cases) if len(c.boxes) == count]
        emit(BENCH, f"guided_{count}_objects", mean_metrics([guided_m[i] for i in picked])["miou"],
             guided=mean_metrics([guided_m[i] for i in picked]), unguided=mean_metrics([unguided_m[i] for i in picked]))
    time_ratio = float(np.sum(times_g) / np.sum(times_u))
    emit(BENCH, "time_ratio", round(time_ratio, 3), guided_s=round(float(np.mean(times_g)), 2),
         unguided_s=round(float(np.mean(times_u)), 2), bar="<= 2", met=bool(time_ratio <= 2))
    emit(BENCH, "unguided_quality", round(float(np.mean(direction_ok)), 3), object_detected=round(float(np.mean(present)), 3),
         straight_cases=len(direction_ok), bar="object in most frames, direction right in >= 70% of seeds",
         met=bool(np.mean(present) > 0.5 and np.mean(direction_ok) >= 0.7))
    with_mim, without = float(np.mean(align_mim[: len(align_none)])), float(np.mean(align_none))
    emit(BENCH, "mim_alignment", round(with_mim, 4), without_mim=round(without, 4), cases=len(align_none),
         with_mim_all_cases=round(float(np.mean(align_mim)), 4), ratio=round(without / max(with_mim, 1e-6), 3),
         bar="error with MIM at least 2x lower", met=bool(without >= 2 * with_mim))

    subset = cases[: args.subset]
    for k in (1, 5, 10, 30):
        metrics = [judge(run(pipe, c, 30, GuidanceConfig(strength=args.strength, steps=k))[0], c, references[i])[0]
                   for i, c in enumerate(subset)]
        emit(BENCH, "steps_ablation", k, denoising_steps=30, cases=len(subset), **mean_metrics(metrics))
    for eta in (0.1, 0.25, 0.5, 1.0, 2.0):
        metrics = [judge(run(pipe, c, args.steps, GuidanceConfig(strength=eta, steps=args.guided_steps))[0], c,
                         references[i])[0] for i, c in enumerate(subset)]
        emit(BENCH, "eta_sweep", eta, cases=len(subset), **mean_metrics(metrics))
    raw = [judge(run(pipe, c, args.steps, GuidanceConfig(strength=s, steps=args.guided_steps, gradient="raw"))[0], c,
                 references[i])[0] for i, c in enumerate(subset) for s in (0.05,)]
    emit(BENCH, "raw_sigma_step", 0.05, note="eq. 10.7 as written, sigma_t^2 = (1-abar)/abar", **mean_metrics(raw))

    studio_case = make_case(0)
    for label, guidance in (("unguided", None), ("guided", GuidanceConfig())):
        _, seconds = run(pipe, studio_case, 20, guidance)
        bar = 15 if guidance is None else 30
        emit(BENCH, "studio_seconds", round(seconds, 2), mode=label, frames=N_FRAMES, steps=20,
             bar=f"<= {bar} s", met=bool(seconds <= bar))
    total = time.perf_counter() - started
    emit(BENCH, "bench_seconds", round(total, 1), bar="< 1200 s", met=bool(total < 1200))


if __name__ == "__main__":
    main()
