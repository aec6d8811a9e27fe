"""Morpho4D scenes with the right objects (issue 23, item 4): the frame check, its repair along the
trajectory's boxes, regeneration with another seed, pruning of fragments, and depth relief; and what makes a
GEN quick (item 6): fitting smaller frames, stopping when the loss stops falling.

The two videos under ``tests/data/morpho4d_mojito_*.png`` (8 frames of 64x64 side by side) are the tiny
pack's Mojito generator's frames (``shapes-t2v``, 20 denoising steps, seed 0, the grammar's trajectory at
seed 0) for the prompts the issue reports: "a big green triangle slides upward slowly" (a second green
blob in frame 0, brown smudges the detector reads as orange and red objects) and "a red ball moves from
left to right quickly" (a bar mid-sweep, a red fragment left at the start in frames 4-7).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.morpho4d import render
from pipelines.morpho4d.commands import GrammarParser
from pipelines.morpho4d.depth import DepthEstimator, relief_depth
from pipelines.morpho4d.fitting import FitConfig, FitFrames, init_from_rgbd, prune_unmatched
from pipelines.morpho4d.frame_check import check_frames, repair_frames
from pipelines.morpho4d.generation import GenConfig, ShapesWorldStandIn, SourceVideo, generate_scene, plan_prompt
from pipelines.morpho4d.motion import plan_trajectories
from pipelines.morpho4d.shapes4d import home_camera
from pipelines.shapesworld import box_iou, detect
from pipelines.shapesworld.render import composite, shape_coverage, to_uint8
from pipelines.shapesworld.vocab import COLOURS

DATA = Path(__file__).parent / "data"
PARSER = GrammarParser()
VIDEOS = {
    "a big green triangle slides upward slowly": "morpho4d_mojito_green_triangle_upward_slowly_seed0.png",
    "a red ball moves from left to right quickly": "morpho4d_mojito_red_ball_left_to_right_quickly_seed0.png",
}


def saved_video(prompt):
    """(plan, boxes, frames uint8 [8, 64, 64, 3]) of a saved Mojito video."""
    plan = PARSER.parse_plan(prompt)
    boxes = {name: t.boxes(8) for name, t in plan_trajectories(plan.objects, 8, 0).items()}
    strip = np.asarray(Image.open(DATA / VIDEOS[prompt]).convert("RGB"))
    return plan, boxes, np.stack(np.split(strip, 8, axis=1))


class Replay:
    """A generator that returns given frames per seed (and counts its calls)."""

    label = "replayed generator frames"

    def __init__(self, by_seed):
        self.by_seed, self.seeds = by_seed, []

    def __call__(self, plan, boxes, n_frames, size, seed, progress=None):
        self.seeds.append(seed)
        return SourceVideo(self.by_seed[seed], self.label, True, plan_prompt(plan))


@pytest.fixture(scope="module")
def depth_model():
    return DepthEstimator.from_preset("tiny")


def test_the_check_finds_the_reported_duplicates_smears_and_fragments():
    plan, boxes, frames = saved_video("a big green triangle slides upward slowly")
    check = check_frames(frames, plan.objects, boxes)
    assert check.counts == [2, 2, 3, 2, 2, 2, 1, 1] and check.expected == 1
    assert len(check.owned[0][0]) == 2  # frame 0: the triangle and a second green blob
    assert np.flatnonzero(check.frame_right).tolist() == [6, 7]

    plan, boxes, frames = saved_video("a red ball moves from left to right quickly")
    check = check_frames(frames, plan.objects, boxes)
    assert np.flatnonzero(check.frame_right).tolist() == [0, 1]
    assert [d.shape for d in check.owned[2][0]] == ["square"]  # the bar mid-sweep
    assert all(len(check.owned[t][0]) == 2 for t in range(4, 8))  # the fragment left behind


@pytest.mark.parametrize("prompt", list(VIDEOS))
def test_repaired_frames_hold_the_plans_objects_in_every_frame(prompt):
    plan, boxes, frames = saved_video(prompt)
    check = check_frames(frames, plan.objects, boxes)
    repaired, which = repair_frames(frames, check, plan.objects, boxes)
    assert which == np.flatnonzero(~check.frame_right).tolist()
    after = check_frames(repaired, plan.objects, boxes)
    assert after.counts == [1] * 8 and after.frame_right.all()  # measured: 8 of 8 for both videos
    for t in np.flatnonzero(check.frame_right):  # right frames are untouched
        assert np.array_equal(repaired[t], frames[t])


def test_an_object_never_drawn_right_is_drawn_in_its_box_and_unplanned_objects_go():
    plan = PARSER.parse_plan("a red ball moves from left to right quickly while a blue box stays still")
    boxes = {name: t.boxes(4) for name, t in plan_trajectories(plan.objects, 4, 0).items()}
    ball_only = replace(plan, objects=plan.objects[:1])  # the blue box missing in frames 0-1 ...
    canvas = ShapesWorldStandIn()(ball_only, boxes, 4, 64, 0).frames.astype(np.float32)
    for t in (2, 3):  # ... a speck of it in frames 2-3 (2/5 of its side: right colour and shape, too small)
        x0, y0, x1, y1 = boxes["blue square"][t] * 64
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 5
        composite(canvas[t], shape_coverage("square", (cx - side, cy - side, cx + side, cy + side), 64), COLOURS["blue"])
    composite(canvas[2], shape_coverage("triangle", (44, 44, 58, 58), 64), COLOURS["yellow"])  # ... a yellow extra
    frames = to_uint8(canvas)
    assert [d.shape for d in detect(frames[3]) if d.colour == "blue"] == ["square"]
    check = check_frames(frames, plan.objects, boxes)
    assert check.object_right[:, 0].all() and not check.object_right[:, 1].any() and check.extras[2]
    repaired, _ = repair_frames(frames, check, plan.objects, boxes)
    for t in range(4):
        found = {(d.colour, d.shape): d for d in detect(repaired[t])}
        assert set(found) == {("red", "circle"), ("blue", "square")}
        assert box_iou(found[("blue", "square")].box, tuple(boxes["blue square"][t] * 64)) >= 0.8


def test_a_video_with_too_few_right_frames_is_made_again_with_another_seed(depth_model):
    plan, boxes, bad = saved_video("a red ball moves from left to right quickly")
    good = ShapesWorldStandIn()(plan, boxes, 8, 64, 0).frames
    fit = FitConfig(steps=2, init_gaussians=400)
    strict = GenConfig(fit=fit, min_right_fraction=0.5)
    source = Replay({0: bad, 1: good})
    result = generate_scene(plan, source, depth_model, config=strict)
    assert source.seeds == [0, 1] and result.repaired == []  # the ball right in 2 of 8 -> seed 1, all right
    assert '"frames_seed": 1' in result.scene.meta["frame_check"]

    source = Replay({0: bad, 1: bad})  # no better: seed 0's video is kept and repaired
    result = generate_scene(plan, source, depth_model, config=strict)
    assert source.seeds == [0, 1] and result.repaired == [2, 3, 4, 5, 6, 7]
    assert [len(detect(f)) for f in result.video.frames] == [1] * 8

    source = Replay({0: bad})  # by default one right frame per object is enough to repair from
    generate_scene(plan, source, depth_model, config=GenConfig(fit=fit))
    assert source.seeds == [0]
    never_right = bad.copy()
    never_right[:2] = bad[2]  # the bar: the ball is right in no frame
    source = Replay({0: never_right, 1: good})
    generate_scene(plan, source, depth_model, config=GenConfig(fit=fit))
    assert source.seeds == [0, 1]
    source = Replay({0: never_right})
    generate_scene(plan, source, depth_model, config=GenConfig(fit=fit, regenerations=0))
    assert source.seeds == [0]


def test_the_fitted_scene_of_a_smeared_video_shows_one_ball_in_each_frame(depth_model):
    plan, boxes, frames = saved_video("a red ball moves from left to right quickly")
    config = GenConfig(fit=FitConfig(steps=60, init_gaussians=1500, init_frames=3), regenerations=0)
    scene = generate_scene(plan, Replay({0: frames}), depth_model, config=config).scene
    counts = [len(detect(render(scene, t=float(t)).numpy())) for t in range(8)]
    assert sum(c == 1 for c in counts) >= 7, counts  # before the check: 1 in 2 of 8 source frames


def test_pruning_removes_object_gaussians_that_never_match_their_object():
    rgb = np.full((2, 32, 32, 3), 0.5, np.float32)
    ids = np.zeros((2, 32, 32), np.int32)
    ids[:, 10:20, 10:20] = 1
    rgb[ids == 1] = (0.9, 0.1, 0.1)
    frames = FitFrames(rgb=rgb, depth=np.full((2, 32, 32), 3.0, np.float32), camera=home_camera(32),
                       instance_ids=ids, names=("background", "red square"))
    scene = init_from_rgbd(frames, 600)
    fragment = np.flatnonzero(scene.object_ids == 1)[:5]
    scene.means[fragment, :2] = (-0.8, 0.8)  # top left, far from the square in both frames
    pruned, count = prune_unmatched(scene, frames)
    assert count == 5 and pruned.n_gaussians == scene.n_gaussians - 5
    assert (pruned.object_ids == 0).sum() == (scene.object_ids == 0).sum()  # the background stays


def test_relief_turns_a_disc_into_a_dome_and_the_scene_into_more_than_a_card(depth_model):
    size, focal = 64, float(home_camera(64).K[0, 0])
    ids = (shape_coverage("circle", (16.0, 16.0, 48.0, 48.0), size) >= 0.5).astype(np.int32)[None]
    depth = relief_depth(np.full((1, size, size), 2.85, np.float32), ids, focal)
    radius_world = 16 * 2.85 / focal  # the disc's radius at its depth
    assert abs((2.85 - depth[0, 32, 32]) - radius_world) < 0.1 * radius_world  # a hemisphere's apex
    assert 2.85 - depth[0, 32, 17] < 0.5 * radius_world and depth[0, 2, 2] == 2.85

    plan = PARSER.parse_plan("a big red ball moves from left to right quickly")
    fit = FitConfig(steps=10, init_gaussians=1500)
    extents = {}
    for relief in (0.0, 1.0):
        scene = generate_scene(plan, depth_model=depth_model, config=GenConfig(fit=fit, relief=relief)).scene
        ball = scene.means[scene.object_ids == 1]
        spread = lambda axis: float(np.subtract(*np.percentile(ball[:, axis], [90, 10])))  # noqa: E731
        extents[relief] = spread(2) / spread(0)  # depth against width (10th-90th percentiles: rims are mixed)
    assert extents[1.0] >= 0.3 and extents[1.0] > 2 * extents[0.0], extents  # measured 0.43 vs 0.15


def test_the_fit_sees_smaller_frames_and_the_scene_keeps_the_videos_camera(depth_model):
    rng = np.random.default_rng(0)
    ids = np.zeros((2, 64, 64), np.int32)
    ids[:, 8:24, 8:24] = 1
    frames = FitFrames(rgb=rng.random((2, 64, 64, 3), np.float32), depth=np.full((2, 64, 64), 3.0, np.float32),
                       camera=home_camera(64), features=rng.random((2, 64, 64, 7), np.float32), instance_ids=ids)
    small = frames.resized(32)
    assert small.camera.width == 32 and np.allclose(small.camera.K, home_camera(32).K)
    assert np.allclose(small.rgb[0, 0, 0], frames.rgb[0, :2, :2].mean(axis=(0, 1)), atol=1e-6)  # area mean
    assert np.array_equal(small.features[1, 5, 6], frames.features[1, 10, 12])  # nearest: one pixel's feature
    assert small.instance_ids.dtype == np.int32 and (small.instance_ids[:, 4:12, 4:12] == 1).all()
    assert small.instance_ids.sum() == 2 * 64  # nearest: 8x8 pixels a frame, no mixed ids
    assert frames.resized(64) is frames

    plan = PARSER.parse_plan("a red ball moves from left to right quickly")
    errors = {}
    for refine in (0, 15):  # the full-size steps start from the small frames' fit
        config = GenConfig(fit_size=32, refine_steps=refine, fit=FitConfig(steps=30, init_gaussians=800))
        result = generate_scene(plan, depth_model=depth_model, config=config)
        scene = result.scene
        assert (scene.camera.width, scene.camera.height) == (64, 64) and len(result.fit.losses) == 30 + refine
        errors[refine] = np.mean([np.abs(render(scene, t=float(t)).numpy() - result.video.frames[t] / 255.0).mean()
                                  for t in range(scene.n_frames)])
    assert errors[15] < 0.8 * errors[0], errors


def test_the_fit_stops_when_a_window_of_steps_no_longer_lowers_the_loss():
    from pipelines.morpho4d.fitting import _converged, fit_scene

    falling = [1.0 * 0.9 ** (i // 4) for i in range(16)]  # 10% lower each window of 4
    assert not any(_converged(falling[:n], 4, 0.03) for n in range(1, 17))
    flat = [0.5, 0.5, 0.52, 0.5, 0.5, 0.51, 0.49, 0.5]  # windows of 4: 0.505 then 0.5, 1% lower
    assert _converged(flat, 4, 0.03) and not _converged(flat, 0, 0.03) and not _converged(flat[:7], 4, 0.03)

    rgb = np.full((2, 32, 32, 3), 0.5, np.float32)  # a plain frame: the start already fits it
    frames = FitFrames(rgb=rgb, depth=np.full((2, 32, 32), 3.0, np.float32), camera=home_camera(32))
    stopped = fit_scene(frames, FitConfig(steps=60, init_gaussians=300, converge_window=8))
    assert len(stopped.losses) < 60 and len(stopped.losses) % 8 == 0
    assert len(fit_scene(frames, FitConfig(steps=20, init_gaussians=300)).losses) == 20
