"""Morpho4D edit selections judged against ShapesWorld truth (issue 23, item 2; :mod:`pipelines.morpho4d.truth`).

For each scene, every query of :func:`~pipelines.morpho4d.truth.query_set` (an object's colour, its shape,
both, and both with the shape's synonym: "red", "circle", "red circle", "red ball") is selected by the
editing engine (eq. 11.13-11.14, threshold search) and scored: precision and recall of the selected
Gaussians against the Gaussians whose truth object is one the query names. A Gaussian's truth object is
the label of the pixels it draws in the renderer's own masks (blending-weight vote over all frames; hidden
Gaussians left out), never the masks a scene was taught with. Three kinds of scene:

* ``built``: the ShapesWorld 4D builder on a sampled video, features with Gaussian noise (``--noise``);
* ``fitted``: fitted (eq. 11.8-11.12, ``--steps``) to the video's RGB, depth, per-pixel features and
  instance masks (:class:`~pipelines.morpho4d.fitting.FitFrames.from_truth`); features by ``--teacher``:
  ``identity`` (each object's name embedding inside its truth mask: the taught upper bound) or ``clip``
  (learned: the tiny pack's CLIP window features, :mod:`pipelines.morpho4d.clip_features`);
* ``generated``: GEN of the GEN bench's prompts through a :class:`Morpho4DRunner` session (frames from the
  tiny pack's Mojito or the labelled stand-in, named in each line; ``--teacher`` ``clip`` for learned
  features, else the detector teacher); truth is the renderer's drawing of the plan's objects along
  their trajectory boxes (the stand-in's exact masks; for generated frames, the commanded layout).

Prints one JSON line per scene and, per kind and query kind, mean precision / recall with the number of
queries ``n``. Run: ``.venv/bin/python bench/morpho4d_truth.py | tee bench/results/morpho4d_truth.jsonl``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import emit, machine  # noqa: E402
from bench.morpho4d_gen import PROMPTS  # noqa: E402
from pipelines.models import ModelManager  # noqa: E402
from pipelines.morpho4d import FitConfig, FitFrames, GenConfig, build_shapes_scene, default_encoder, fit_scene, truth_frames  # noqa: E402
from pipelines.morpho4d.clip_features import clip_encoder  # noqa: E402
from pipelines.morpho4d.generation import CLIP_LATENT_DIM  # noqa: E402
from pipelines.morpho4d.runner import Morpho4DRunner  # noqa: E402
from pipelines.morpho4d.truth import QUERY_KINDS, plan_truth, truth_edit_metrics, video_truth  # noqa: E402
from pipelines.shapesworld import sample_video  # noqa: E402
from pipelines.utils import set_torch_threads  # noqa: E402

BENCH = "morpho4d_truth"


def shapes_scene(kind: str, seed: int, args):
    """A built or fitted scene of ShapesWorld video ``seed`` and its truth masks."""
    video = sample_video(seed, 64, 8)
    ids, names = video_truth(video)
    if kind == "built":
        return build_shapes_scene(video, n_gaussians=args.gaussians, feature_noise=args.noise), ids, names, "shapesworld"
    frames = FitFrames.from_truth(truth_frames(video))
    frames.feature_space = default_encoder().space
    if args.teacher == "clip":
        encoder = clip_encoder(background=np.median(video.frames[0].reshape(-1, 3), axis=0) / 255.0)
        frames.features, frames.feature_space = encoder.pixel_features(video.frames), encoder.space
    result = fit_scene(frames, FitConfig(steps=args.steps, init_gaussians=args.gaussians, seed=seed,
                                         latent_dim=CLIP_LATENT_DIM if args.teacher == "clip" else None))
    result.scene.meta["teacher"] = args.teacher
    return result.scene, ids, names, "shapesworld video"


def generated_scene(prompt: str, runner: Morpho4DRunner):
    session = runner.new_session()
    session.run(prompt)
    gen = session.gen
    ids, names = plan_truth(gen.plan.objects, gen.boxes, gen.scene.camera.width)
    return gen.scene, ids, names, gen.video.label


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["built", "fitted", "generated"])
    parser.add_argument("--scenes", type=int, default=10, help="scenes per kind (generated: prompts)")
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--gaussians", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--stand-in", action="store_true", help="GEN frames from the labelled stand-in renderer")
    parser.add_argument("--teacher", choices=("identity", "clip"), default="identity",
                        help="features of fitted and generated scenes (identity: truth masks / detector; clip: learned)")
    parser.add_argument("--gen-steps", type=int, default=None, help="GEN fitting steps (default: GenConfig's)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    set_torch_threads(args.threads)
    start = time.perf_counter()
    emit(BENCH, "machine", machine())
    runner = None
    for kind in args.kinds:
        rows = []
        for i in range(args.scenes):
            if kind == "generated":
                if runner is None:
                    config = GenConfig(teacher="clip" if args.teacher == "clip" else "auto")
                    if args.gen_steps:
                        config.fit.steps = args.gen_steps
                    runner = Morpho4DRunner(ModelManager("tiny"), frames="stand-in" if args.stand_in else "auto",
                                            config=config)
                if i >= len(PROMPTS):
                    break
                scene, ids, names, source = generated_scene(PROMPTS[i], runner)
                label = PROMPTS[i]
            else:
                scene, ids, names, source = shapes_scene(kind, 1000 + i, args)
                label = f"seed {1000 + i}"
            metrics = truth_edit_metrics(scene, ids, names)
            rows += metrics
            emit(BENCH, "scene", label, kind=kind, source=source, teacher=scene.meta.get("teacher", "builder"),
                 n_gaussians=scene.n_gaussians, queries=metrics)
        for query_kind in ("all", *QUERY_KINDS):
            chosen = [r for r in rows if query_kind == "all" or r["kind"] == query_kind]
            if not chosen:
                continue
            emit(BENCH, f"{kind}_{query_kind}_precision_mean", teacher=args.teacher if kind != "built" else "builder",
                 value=round(statistics.mean(r["precision"] for r in chosen), 4),
                 recall_mean=round(statistics.mean(r["recall"] for r in chosen), 4),
                 precision_min=min(r["precision"] for r in chosen), recall_min=min(r["recall"] for r in chosen),
                 refused=sum(bool(r["refused"]) for r in chosen), n=len(chosen))
    emit(BENCH, "bench_seconds", round(time.perf_counter() - start, 1))


if __name__ == "__main__":
    main()
