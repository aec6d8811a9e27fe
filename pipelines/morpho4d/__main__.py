"""Command line for Morpho4D scenes: ``python -m pipelines.morpho4d <command> ...``.

    example  --seed 3 --out scene.npz            a ShapesWorld 4D scene
    fit      --seed 3 --out fitted.npz           reconstruct one from its video (RGB-D + features)
    render   scene.npz --t 2 --azimuth 30 --out view.png [--mode rgb|depth|alpha]
    edit     scene.npz --op recolour --query "red square" --colour blue --out edited.npz
    export   scene.npz --ply-dir plys/ | --video sweep.mp4 [--kind time|orbit]
    say      "a red ball bounces quickly from right to left" "make the ball blue" --out scene.npz [--llm]
             (the language front end: each command's plan as JSON and what was done)
    rerun    scene.npz | scene.ply | sweep.mp4 [--out OUT]   replay the recipe a studio output carries

Errors a user can fix (bad file, unknown object, time outside the scene) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import exits_on_error
from ..utils import set_torch_threads


def _scene(path: str):
    from . import load_scene, read_ply

    return read_ply(path) if Path(path).suffix.lower() == ".ply" else load_scene(path)


@exits_on_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rerun"]:
        from ..recipes import rerun_main

        return rerun_main("morpho4d", argv[1:])
    parser = argparse.ArgumentParser(prog="python -m pipelines.morpho4d", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    example = commands.add_parser("example", help="build a ShapesWorld 4D scene")
    fit = commands.add_parser("fit", help="fit a scene to a ShapesWorld video")
    for sub in (example, fit):
        sub.add_argument("--seed", type=int, default=3)
        sub.add_argument("--size", type=int, default=64)
        sub.add_argument("--frames", type=int, default=8)
        sub.add_argument("--gaussians", type=int, default=6000)
        sub.add_argument("--out", required=True)
    fit.add_argument("--steps", type=int, default=150)
    view = commands.add_parser("render", help="render a view to a PNG")
    view.add_argument("scene")
    view.add_argument("--t", type=float, default=0.0)
    view.add_argument("--azimuth", type=float, default=None, help="orbit the scene's centre (default: home camera)")
    view.add_argument("--elevation", type=float, default=10.0)
    view.add_argument("--size", type=int, default=256)
    view.add_argument("--mode", choices=("rgb", "depth", "alpha"), default="rgb")
    view.add_argument("--out", required=True)
    edit = commands.add_parser("edit", help="apply one edit by object query")
    edit.add_argument("scene")
    edit.add_argument("--op", required=True, choices=("recolour", "multiply", "delete", "extract"))
    edit.add_argument("--query", required=True)
    edit.add_argument("--colour", default=None)
    edit.add_argument("--out", required=True)
    export = commands.add_parser("export", help="PLY per frame and/or a video")
    export.add_argument("scene")
    export.add_argument("--ply-dir", default=None)
    export.add_argument("--video", default=None)
    export.add_argument("--kind", choices=("time", "orbit"), default="time")
    export.add_argument("--codec", choices=("h264", "vp9"), default="h264")
    say = commands.add_parser("say", help="commands in words: generate a scene, then edit it")
    say.add_argument("commands", nargs="+")
    say.add_argument("--out", required=True)
    say.add_argument("--llm", action="store_true", help="parse with the hub preset's local LLM (grammar fallback)")
    say.add_argument("--preset", default="tiny", help="models of the frames and the depth (default: tiny)")
    say.add_argument("--steps", type=int, default=None, help="fitting steps of GEN (default: GenConfig's)")
    say.add_argument("--teacher", default="auto", help="features of GEN: auto / detector / attention / clip "
                     "(clip: learned from the tiny pack's CLIP, eq. 11.12)")
    args = parser.parse_args(argv)
    set_torch_threads()

    from . import (
        EditSession, FitConfig, FitFrames, build_shapes_scene, default_encoder, export_video, fit_scene, orbit_camera, render,
        save_scene, to_uint8, truth_frames, write_ply_sequence,
    )
    from ..shapesworld import sample_video

    if args.command == "example":
        scene = build_shapes_scene(seed=args.seed, size=args.size, n_frames=args.frames, n_gaussians=args.gaussians)
        print(save_scene(scene, args.out), scene.n_gaussians, "Gaussians:", scene.meta["caption"])
    elif args.command == "fit":
        frames = FitFrames.from_truth(truth_frames(sample_video(args.seed, args.size, args.frames)))
        frames.feature_space = default_encoder().space  # truth_frames' features are this encoder's
        result = fit_scene(frames, FitConfig(steps=args.steps, init_gaussians=args.gaussians))
        print(save_scene(result.scene, args.out), f"loss {result.initial_loss:.4f} -> {result.final_loss:.4f}")
    elif args.command == "render":
        scene = _scene(args.scene)
        camera = scene.camera.resized(args.size, args.size) if args.azimuth is None else orbit_camera(
            scene.centre(), args.azimuth, args.elevation, float(np.linalg.norm(scene.camera.position - scene.centre())),
            args.size, args.size)
        image = render(scene, camera, args.t, args.mode)
        if args.mode == "rgb":
            array = to_uint8(image)
        else:
            values = image.cpu().numpy()
            array = (255 * (values - values.min()) / max(float(np.ptp(values)), 1e-9)).astype(np.uint8)
        Image.fromarray(array).save(args.out)
        print(args.out)
    elif args.command == "edit":
        session = EditSession(_scene(args.scene))
        edit = session.apply(args.op, args.query, args.colour)
        print(save_scene(session.scene, args.out), edit.describe())
    elif args.command == "say":
        import json

        from dataclasses import replace

        from ..models import ModelManager
        from .commands import LLMCommandParser
        from .generation import GenConfig
        from .runner import Morpho4DRunner, write_scene_file

        config = GenConfig(teacher=args.teacher)
        if args.steps is not None:
            config.fit = replace(config.fit, steps=args.steps)
        runner = Morpho4DRunner(ModelManager(args.preset), config=config)
        session = runner.new_session()
        if args.llm:
            session.parser = LLMCommandParser.from_preset("hub")
        for text in args.commands:
            record = session.run(text)
            print(json.dumps({"command": text, "plan": record.plan, "backend": record.backend,
                              "done": record.outcome}))
        if session.scene is not None:
            print(write_scene_file(runner, session, args.out)[0])
    elif args.command == "export":
        scene = _scene(args.scene)
        if args.ply_dir:
            print(*write_ply_sequence(scene, args.ply_dir, Path(args.scene).stem), sep="\n")
        if args.video:
            print(export_video(scene, args.video, args.kind, codec=args.codec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
