"""Morpho4D CPU rendering speed at 256x256 (issue: Morpho4D scene; bar: >= 10 frames/s at 20k Gaussians
on 2 cores).

Prints JSON lines: frames per second of the tile rasterizer for 10k, 20k and 50k Gaussians, with 1 and
2 torch threads, for two scenes: a ShapesWorld 4D scene (the studio's own kind: a background plane and
objects, seen from the home camera and from an orbit view) and a random volume (Gaussians spread
through a box, each pixel covered by over a hundred of them, the hard case); and the speed ratio to
the reference renderer (one timed render, at ``--reference-sizes`` only: the reference takes minutes)
with the largest difference between the two images; and at each size the speed ratio of the viewer's
compiled compositing path to the differentiable torch path (the one fitting uses), same scene, same run.
Run: ``.venv/bin/python bench/morpho4d_render.py [--sizes 10000 20000 50000]``. On a shared machine
the numbers are noisy: each case reports the median and the best of up to ``--repeats`` renders
(at most ``--case-seconds`` per case, so an oversubscribed machine cannot stall the run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit, machine  # noqa: E402
from pipelines.morpho4d import Scene4D, build_shapes_scene, orbit_camera, render  # noqa: E402
from pipelines.morpho4d.rendering import rasterize, scene_tensors  # noqa: E402
from pipelines.morpho4d.scene import Camera, intrinsics, look_at  # noqa: E402

BENCH = "morpho4d_render"
SIZE = 256


def random_volume(n: int, seed: int = 0) -> Scene4D:
    """n Gaussians in a 2 x 2 x 2 box in front of the camera, sized so the view is covered many times."""
    rng = np.random.default_rng(seed)
    spacing = 2.0 / n ** (1 / 3)
    camera = Camera(look_at([0, 0, 4.0], [0, 0, 0]), intrinsics(36.0, SIZE, SIZE), SIZE, SIZE)
    return Scene4D.from_activated(
        means=rng.uniform(-1, 1, (n, 3)),
        scales=spacing * 0.5 * np.exp(rng.normal(0, 0.3, (n, 3))),
        colours=rng.uniform(0, 1, (n, 3)),
        opacities=rng.uniform(0.3, 0.95, n),
        quats=rng.normal(size=(n, 4)),
        camera=camera,
    )


def frames_per_second(scene: Scene4D, camera: Camera, repeats: int, budget: float) -> tuple[float, float, int]:
    """(median fps, best fps, renders timed) over up to ``repeats`` times spread over the scene."""
    times = [float(t) for t in np.linspace(0, scene.n_frames - 1, repeats)]
    render(scene, camera, times[0])  # warm-up
    seconds, began = [], time.perf_counter()
    for t in times:
        start = time.perf_counter()
        render(scene, camera, t)
        seconds.append(time.perf_counter() - start)
        if time.perf_counter() - began > budget:
            break
    return 1.0 / statistics.median(seconds), 1.0 / min(seconds), len(seconds)


def path_seconds(scene: Scene4D, camera: Camera, differentiable: bool, repeats: int = 3) -> float:
    """Median seconds of one RGB rasterization at t = 0 through the viewer's path or the autograd path."""
    tensors = scene_tensors(scene, 0.0)
    colours = tensors["colours"].requires_grad_(differentiable)
    args = (tensors["means"], tensors["quats"], tensors["scales"], tensors["opacities"], colours,
            torch.from_numpy(camera.viewmat), torch.from_numpy(camera.K), camera.width, camera.height)
    seconds = []
    with torch.set_grad_enabled(differentiable):
        for _ in range(repeats + 1):  # the first is a warm-up
            start = time.perf_counter()
            rasterize(*args, backend="cpu")
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000, 50_000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--case-seconds", type=float, default=15.0)
    parser.add_argument("--reference-sizes", type=int, nargs="*", default=[10_000])
    args = parser.parse_args(argv)
    emit(BENCH, "machine", machine())
    for n in args.sizes:
        shapes = build_shapes_scene(seed=1, n_gaussians=n)
        home = shapes.camera.resized(SIZE, SIZE)
        orbit = orbit_camera(shapes.centre(), 30.0, 20.0, 3.0, SIZE, SIZE, fov_deg=37.0)
        volume = random_volume(n)
        cases = {"shapes_home": (shapes, home), "shapes_orbit": (shapes, orbit), "random_volume": (volume, volume.camera)}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for name, (scene, camera) in cases.items():
                fps, best, timed = frames_per_second(scene, camera, args.repeats, args.case_seconds)
                emit(BENCH, "cpu_fps", round(fps, 2), best=round(best, 2), renders=timed, gaussians=scene.n_gaussians,
                     scene=name, threads=threads, size=f"{SIZE}x{SIZE}")
        torch.set_num_threads(max(args.threads))
        viewer, autograd = path_seconds(shapes, home, False), path_seconds(shapes, home, True)
        emit(BENCH, "viewer_path_speedup", round(autograd / viewer, 2), viewer_seconds=round(viewer, 4),
             autograd_seconds=round(autograd, 4), gaussians=shapes.n_gaussians, scene="shapes_home",
             threads=max(args.threads))
        if n not in args.reference_sizes:
            continue
        torch.set_num_threads(min(args.threads))
        for name in ("shapes_home", "random_volume"):
            scene, camera = cases[name]
            start = time.perf_counter()
            fast = render(scene, camera, 0)
            fast_seconds = time.perf_counter() - start
            start = time.perf_counter()
            slow = render(scene, camera, 0, backend="reference")
            slow_seconds = time.perf_counter() - start
            emit(BENCH, "speedup_vs_reference", round(slow_seconds / fast_seconds, 1), gaussians=scene.n_gaussians,
                 scene=name, reference_seconds=round(slow_seconds, 2), cpu_seconds=round(fast_seconds, 4),
                 max_abs_difference=float((fast - slow).abs().max()), threads=min(args.threads))


if __name__ == "__main__":
    main()
