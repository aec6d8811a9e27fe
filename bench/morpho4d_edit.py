"""Morpho4D editing by object query on ShapesWorld 4D scenes (issue: Morpho4D scene; bar: precision and
recall >= 0.95 each on >= 20 scenes).

For every scene and every object in it, the Gaussians selected for the object's name (eq. 11.13-11.14
with the threshold search over 0.85-0.95) are compared with the truth (``object_ids``). Three kinds:

* ``built``: the ShapesWorld 4D builder with Gaussian noise (``--noise``, per feature component, before
  renormalising; 0.15 puts the noise's norm at about 0.6 of the unit feature) on every feature;
* ``fitted``: a scene reconstructed from the video alone (RGB, depth, per-pixel identity features,
  instance masks; Open3D RGB-D initialisation, then ``--steps`` of fitting, eq. 11.8-11.12); truth is
  the object whose pixels a Gaussian was initialised from;
* ``fitted_blurred`` (stress, no bar): as ``fitted`` but the target feature maps are blurred by one
  pixel and noised (0.1), like a low-resolution 2D encoder; object-edge Gaussians become ambiguous.

Truth is ``object_ids``: the builder's, or for a fitted scene the object a Gaussian was initialised
from (so a fitted Gaussian at an object's edge that drifted to draw background still counts as the
object's). Prints JSON lines per kind: mean and minimum precision and recall over objects, objects
counted; latencies (selection, an ``EditSession.apply`` delete, an undo); and the IoU, over all
frames, of the pixels the selection covers with the object's truth masks. Run: ``.venv/bin/python bench/morpho4d_edit.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit, machine  # noqa: E402
from pipelines.morpho4d import (  # noqa: E402
    EditSession,
    FitConfig,
    FitFrames,
    build_shapes_scene,
    default_encoder,
    fit_scene,
    render,
    select,
    truth_frames,
)
from pipelines.shapesworld import sample_video  # noqa: E402

BENCH = "morpho4d_edit"


def blurred(frames: FitFrames, seed: int) -> FitFrames:
    rng = np.random.default_rng(seed)
    features = np.stack([cv2.GaussianBlur(frame, (0, 0), 1.0) for frame in frames.features])
    features = features + rng.normal(0, 0.1, frames.features.shape)
    frames.features = features.astype(np.float32)
    return frames


def make_scene(kind: str, seed: int, args):
    video = sample_video(seed, 64, 8)
    if kind == "built":
        return build_shapes_scene(video, n_gaussians=args.gaussians, feature_noise=args.noise), video
    frames = FitFrames.from_truth(truth_frames(video))
    frames.feature_space = default_encoder().space
    if kind == "fitted_blurred":
        frames = blurred(frames, seed)
    result = fit_scene(frames, FitConfig(steps=args.steps, init_gaussians=args.gaussians, seed=seed))
    return result.scene, video


def pixel_iou(scene, mask, video, index) -> float:
    """IoU of the pixels the selection covers (> half) with the object's truth mask, over all frames."""
    extra = torch.from_numpy(mask.astype(np.float32)[:, None])
    inter = union = 0
    for t in range(scene.n_frames):
        covered = render(scene, None, t, "features", extra_values=extra)[..., -1].cpu().numpy() > 0.5
        truth = video.objects[index - 1].masks[t]
        inter += int((covered & truth).sum())
        union += int((covered | truth).sum())
    return inter / max(union, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--kinds", nargs="+", default=["built", "fitted", "fitted_blurred"])
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--gaussians", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    emit(BENCH, "machine", machine())
    for kind in args.kinds:
        precisions, recalls, ious, select_s, apply_s, undo_s = [], [], [], [], [], []
        start = time.perf_counter()
        for seed in range(args.scenes):
            scene, video = make_scene(kind, seed, args)
            for index, name in enumerate(scene.object_names[1:], start=1):
                truth = scene.object_ids == index
                selection = select(scene, name)
                hits = int((selection.mask & truth).sum())
                precisions.append(hits / max(int(selection.mask.sum()), 1))
                recalls.append(hits / max(int(truth.sum()), 1))
                select_s.append(selection.seconds)
                ious.append(pixel_iou(scene, selection.mask, video, index))
                session = EditSession(scene)
                t0 = time.perf_counter()
                session.apply("delete", name)
                session.scene  # noqa: B018 (materialise the edited scene: part of the latency)
                apply_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                session.undo()
                session.scene  # noqa: B018
                undo_s.append(time.perf_counter() - t0)
        fields = {"kind": kind, "scenes": args.scenes, "objects": len(precisions), "threads": args.threads,
                  "seconds": round(time.perf_counter() - start, 1)}
        emit(BENCH, "precision_mean", round(statistics.mean(precisions), 4), **fields, min=round(min(precisions), 4))
        emit(BENCH, "recall_mean", round(statistics.mean(recalls), 4), **fields, min=round(min(recalls), 4))
        emit(BENCH, "pixel_iou_mean", round(statistics.mean(ious), 4), **fields, min=round(min(ious), 4))
        emit(BENCH, "select_ms_median", round(1000 * statistics.median(select_s), 1), **fields)
        emit(BENCH, "apply_delete_ms_median", round(1000 * statistics.median(apply_s), 1), **fields)
        emit(BENCH, "undo_ms_median", round(1000 * statistics.median(undo_s), 1), **fields)


if __name__ == "__main__":
    main()
