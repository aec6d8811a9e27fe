"""Morpho4D language: words -> trajectory (speed-dependent spacing), GEN (frames -> depth -> features ->
fitted Scene4D), commands applied to a session (edits, unknown targets, undo, motion edits that replay
appearance edits), the tiny depth model, and Mojito as a frame source."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.errors import InvalidInputError
from pipelines.morpho4d import render
from pipelines.morpho4d.commands import GrammarParser
from pipelines.morpho4d.depth import DepthEstimator, to_home_depth
from pipelines.morpho4d.fitting import FitConfig, FitFrames, fit_scene
from pipelines.morpho4d.generation import (
    STAND_IN_LABEL,
    GenConfig,
    MojitoSource,
    ShapesWorldStandIn,
    UndrawableObjectError,
    generate_scene,
    instance_masks,
    object_tracks,
    pixel_features,
)
from pipelines.morpho4d.language import CommandSession, NoSceneError, UnknownTargetError
from pipelines.morpho4d.motion import SIZE_SIDES, plan_trajectories
from pipelines.morpho4d.queries import default_encoder
from pipelines.morpho4d.shapes4d import home_camera
from pipelines.shapesworld import box_iou, detect
from pipelines.shapesworld.vocab import DIRECTIONS

PARSER = GrammarParser()
FAST = GenConfig(n_frames=6, size=64, fit=FitConfig(steps=40, init_gaussians=1500, init_frames=3))


def plan(text):
    return PARSER.parse_plan(text)


@pytest.fixture(scope="module")
def depth_model():
    return DepthEstimator.from_preset("tiny")


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_trajectory_follows_the_direction_words(direction):
    objects = plan(f"a red ball moves {direction} quickly").objects
    boxes = plan_trajectories(objects, 8, seed=3)["red circle"].boxes(8)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    moved = centres[-1] - centres[0]
    assert np.dot(moved / np.linalg.norm(moved), DIRECTIONS[direction]) > 0.999
    assert boxes.min() >= 0 and boxes.max() <= 1
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], SIZE_SIDES["medium"], atol=1e-9)


def test_faster_words_space_the_boxes_farther_apart():
    spacing = {}
    for speed in ("slowly", "steadily", "quickly"):
        objects = plan(f"a big blue box slides from right to left {speed}").objects
        centres = plan_trajectories(objects, 8)["blue square"].centres(8)
        steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        np.testing.assert_allclose(steps, steps[0], rtol=1e-6)  # constant speed
        spacing[speed] = steps[0]
    assert spacing["slowly"] < 0.7 * spacing["steadily"] < 0.7 * spacing["quickly"]
    side = plan_trajectories(plan("a big blue box slides upward").objects, 8)["blue square"].boxes(8)
    assert side[0, 2] - side[0, 0] == pytest.approx(SIZE_SIDES["large"])


def test_bounces_arc_upward_and_still_objects_keep_clear():
    objects = plan("a red ball bounces from left to right while a green box stays still").objects
    trajectories = plan_trajectories(objects, 9, seed=1)
    centres = trajectories["red circle"].centres(9)
    assert centres[4, 1] < min(centres[0, 1], centres[-1, 1]) - 0.05  # y is down: the middle is higher
    still = trajectories["green square"].boxes(9)
    assert np.ptp(still, axis=0).max() == 0
    mover = trajectories["red circle"].boxes(9)
    assert all(box_iou(tuple(still[0]), tuple(b)) == 0 for b in mover)


def test_stand_in_draws_along_the_boxes_and_says_it_is_not_generated():
    p = plan("a purple triangle moves downward steadily while a yellow ball stays still")
    boxes = {k: t.boxes(6) for k, t in plan_trajectories(p.objects, 6, seed=2).items()}
    video = ShapesWorldStandIn()(p, boxes, 6, 64, 2)
    assert video.frames.shape == (6, 64, 64, 3) and not video.generated and video.label == STAND_IN_LABEL
    for t in range(6):
        found = {(d.colour, d.shape): d.box for d in detect(video.frames[t])}
        assert box_iou(found[("purple", "triangle")], tuple(boxes["purple triangle"][t] * 64)) > 0.7
    with pytest.raises(UndrawableObjectError, match="circles"):
        generate_scene(plan("a car is moving from right to left"))


def test_tiny_depth_model_separates_objects_from_the_plane(depth_model):
    p = plan("a big orange box moves from left to right steadily")
    boxes = {k: t.boxes(4) for k, t in plan_trajectories(p.objects, 4).items()}
    frames = ShapesWorldStandIn()(p, boxes, 4, 64, 0).frames
    depth = depth_model(frames)
    ids = instance_masks(frames, p.objects, boxes)
    assert depth.shape == (4, 64, 64)
    inner = ids > 0
    assert np.median(depth[inner]) < np.median(depth[~inner]) - 0.08  # objects 0.15 nearer
    assert abs(np.median(depth[~inner]) - 3.0) < 0.03


def test_gen_fits_a_scene_whose_object_moves_the_commanded_way(depth_model):
    p = plan("a big red ball moves from left to right quickly while a blue box stays still")
    result = generate_scene(p, depth_model=depth_model, config=FAST)
    scene = result.scene
    assert scene.object_names == ("background", "red circle", "blue square")
    assert scene.meta["generated"] is False and scene.meta["source"] == STAND_IN_LABEL
    assert result.teacher == "detector" and result.fit.final_loss < 0.5 * result.fit.initial_loss
    ball = scene.object_ids == 1
    path = np.stack([scene.means_at(t)[ball].mean(axis=0) for t in range(scene.n_frames)])
    assert path[-1, 0] - path[0, 0] > 0.5 and abs(path[-1, 1] - path[0, 1]) < 0.1  # world x right, y up
    box = scene.object_ids == 2
    assert np.abs(scene.means_at(5)[box] - scene.means_at(0)[box]).max() < 0.05


def test_instance_masks_take_every_piece_and_fall_back_to_the_box_only_when_asked():
    from pipelines.shapesworld.render import composite, render_background, shape_coverage, to_uint8
    from pipelines.shapesworld.scene import sample_background
    from pipelines.shapesworld.vocab import COLOURS

    p = plan("a red ball moves from left to right quickly while a blue box stays still")
    boxes = {k: t.boxes(2) for k, t in plan_trajectories(p.objects, 2).items()}
    canvas = render_background(sample_background(np.random.default_rng(0), ["red", "blue"]), 64)
    pieces = [(4.0, 4.0, 16.0, 16.0), (40.0, 40.0, 52.0, 52.0)]  # a red ball drawn in two places, no box
    for piece in pieces:
        composite(canvas, shape_coverage("circle", piece, 64), COLOURS["red"])
    frames = np.stack([to_uint8(canvas)] * 2)
    blue_box = shape_coverage("square", tuple(boxes["blue square"][0] * 64), 64) >= 0.5
    for fallback in (True, False):
        ids = instance_masks(frames, p.objects, boxes, box_fallback=fallback)
        assert all((ids[0][shape_coverage("circle", piece, 64) >= 0.9] == 1).all() for piece in pieces)
        assert (ids[0][blue_box] == 2).mean() == (1.0 if fallback else 0.0)


def test_object_tracks_follow_pieces_start_new_ones_and_absorb_specks():
    ids = np.zeros((4, 20, 20), np.int32)
    for t in range(4):
        ids[t, 2:5, 2 + t:5 + t] = 1  # a piece moving right
        ids[t, 15:18, 2:5] = 2  # another object
        if t >= 2:
            ids[t, 12:15, 12:15] = 1  # a second piece of object 1 appears at frame 2
    ids[1, 0, 19] = 1  # a one-pixel speck of object 1
    tracks = object_tracks(ids)
    assert [int(tracks[t, 3, 3 + t]) for t in range(4)] == [1, 1, 1, 1]
    assert [int(tracks[t, 16, 3]) for t in range(4)] == [2, 2, 2, 2]
    assert [int(tracks[t, 13, 13]) for t in range(4)] == [0, 0, 3, 3]
    assert tracks[1, 0, 19] == 1 and np.array_equal(tracks > 0, ids > 0)


def _appearing_piece_video(T=4, S=32):
    """A red square moving right and a second red piece of the same object that appears at frame 2."""
    rgb = np.full((T, S, S, 3), 0.5, np.float32)
    depth = np.full((T, S, S), 3.0, np.float32)
    ids = np.zeros((T, S, S), np.int32)
    for t in range(T):
        for r, c in [(4, 4 + 3 * t)] + ([(20, 20)] if t >= 2 else []):
            rgb[t, r:r + 7, c:c + 7] = (0.9, 0.1, 0.1)
            depth[t, r:r + 7, c:c + 7] = 2.85
            ids[t, r:r + 7, c:c + 7] = 1
    return rgb, depth, ids


def test_tracks_let_the_fit_show_a_piece_only_where_the_video_has_it():
    rgb, depth, ids = _appearing_piece_video()
    errors, scenes = {}, {}
    for use_tracks in (False, True):
        frames = FitFrames(rgb=rgb, depth=depth, camera=home_camera(32), instance_ids=ids,
                           tracks=object_tracks(ids) if use_tracks else None)
        scene = fit_scene(frames, FitConfig(steps=40, init_gaussians=800)).scene
        errors[use_tracks] = np.mean([np.abs(render(scene, t=float(t)).numpy() - rgb[t]).mean() for t in range(4)])
        scenes[use_tracks] = scene
    scene = scenes[True]
    assert scene.visibility_logits.shape == (scene.n_gaussians, 4) and scene.n_bases == 1  # the new piece stays put
    assert np.abs(render(scene, t=0.0).numpy()[21:26, 21:26] - 0.5).max() < 0.05  # not there yet
    assert render(scene, t=3.0).numpy()[21:26, 21:26, 0].min() > 0.8  # there, red
    assert errors[True] < 0.5 * errors[False]  # measured 0.009 vs 0.030
    with pytest.raises(InvalidInputError, match="inside one instance"):
        FitFrames(rgb=rgb, depth=depth, camera=home_camera(32), instance_ids=ids, tracks=np.ones_like(ids))


def test_attention_teacher_projects_maps_into_the_query_space():
    encoder = default_encoder()
    ids = np.zeros((2, 8, 8), np.int32)
    maps = np.zeros((2, 4, 4), np.float32)
    maps[:, 1, 1] = 1.0
    features, teacher = pixel_features(ids, ("background", "red circle"), encoder, {"red circle": maps})
    assert teacher == "attention" and features.shape == (2, 8, 8, encoder.dim)
    ball, background = encoder.encode("red circle"), encoder.encode("background")
    assert features[0, 2, 2] @ ball > 0.99 and features[0, 7, 7] @ background > 0.99


def test_mojito_is_a_frame_source_with_its_own_attention():
    from test_mojito import tiny_components
    from transformers import CLIPTextConfig, CLIPTextModel

    from dummies import dummy_tokenizer
    from pipelines.mojito.pipeline import MojitoPipeline

    components = tiny_components()
    tokenizer = dummy_tokenizer(("a", "red", "circle", "moves", "from", "left", "to", "right", "quickly"))
    torch.manual_seed(0)
    components["tokenizer"] = tokenizer
    components["text_encoder"] = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = MojitoPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    source = MojitoSource(pipe, num_inference_steps=2)
    p = plan("a red circle moves from left to right quickly")
    boxes = {k: t.boxes(4) for k, t in plan_trajectories(p.objects, 4).items()}
    video = source(p, boxes, 4, 32, 0)
    assert video.generated and video.frames.shape == (4, 32, 32, 3)
    assert video.prompt == "a red circle moves from left to right quickly"
    assert video.attention["red circle"].shape[0] == 4

    # End to end: the scene says it was generated; its features come from the detector's masks by default
    # where the detector finds the objects, else from CLIP (random frames: nothing found), and from the
    # generator's attention on request.
    depth = lambda frames: np.full(frames.shape[:3], 3.0, np.float32)  # noqa: E731
    for teacher in ("auto", "attention"):
        config = GenConfig(n_frames=4, size=32, teacher=teacher, fit=FitConfig(steps=3, init_gaussians=400))
        result = generate_scene(p, source, depth, config=config)
        found = bool((result.instance_ids > 0).any())
        assert result.teacher == {"attention": "attention", "auto": "detector" if found else "clip"}[teacher]
        assert result.scene.meta["generated"] is True and result.scene.meta["source"].startswith("Mojito")
        assert result.scene.meta["teacher"] == result.teacher


# ----- a session of commands
@pytest.fixture(scope="module")
def session(depth_model):
    return CommandSession(depth_model=depth_model, config=FAST)


def _object_pixels(image, colour):
    return (np.abs(image.astype(int) - np.array(colour)).sum(axis=-1) < 90).sum()


def test_commands_build_edit_undo_and_regenerate(session):
    with pytest.raises(NoSceneError, match="no scene"):
        session.run("make the ball blue")
    record = session.run("A big red ball moves from left to right quickly while a green box stays still.")
    assert record.plan["mode"] == "GEN" and "stand-in, NOT generated" in record.outcome
    scene = session.scene
    before = render(scene, scene.camera, 2.0).numpy()

    # Recolour: only the ball's Gaussians change, and they turn blue.
    record = session.run("paint the ball blue")
    assert record.plan["operation"] == "recolour" and "recoloured 'red circle'" in record.outcome
    edited = session.scene
    changed = np.any(edited.sh_dc != scene.sh_dc, axis=1)
    ball = scene.object_ids == 1
    assert changed.sum() > 0.9 * ball.sum() and (changed & ~ball).sum() <= 0.02 * changed.sum()
    np.testing.assert_allclose(edited.colours[changed], [[40 / 255, 90 / 255, 225 / 255]] * changed.sum(), atol=1e-6)
    after = (render(edited, scene.camera, 2.0).numpy() * 255).astype(np.uint8)
    assert _object_pixels(after, (40, 90, 225)) > 50 and _object_pixels(after, (220, 35, 45)) < 5

    # An unknown target is answered with the scene's objects; nothing changes.
    with pytest.raises(UnknownTargetError, match="background, red circle and green square"):
        session.run("make the fish and the ball black")
    assert session.scene is edited or np.array_equal(session.scene.sh_dc, edited.sh_dc)

    # Several targets in one command; undo takes the whole command back, bit-exact.
    session.run("make the ball and the box yellow")
    session.run("undo")
    np.testing.assert_array_equal(session.scene.sh_dc, edited.sh_dc)

    # A motion edit regenerates along the new trajectory and replays the recolour.
    record = session.run("now make it go right to left")
    assert record.plan["operation"] == "change_direction" and "Replayed 1 of 1" in record.outcome
    regenerated = session.scene
    ball = regenerated.object_ids == 1
    path = np.stack([regenerated.means_at(t)[ball].mean(axis=0) for t in range(regenerated.n_frames)])
    assert path[-1, 0] - path[0, 0] < -0.5
    assert np.median(regenerated.colours[ball], axis=0) == pytest.approx([40 / 255, 90 / 255, 225 / 255], abs=0.05)
    session.run("undo")
    np.testing.assert_array_equal(session.scene.sh_dc, edited.sh_dc)
    assert before.shape == (64, 64, 3)


def test_failed_commands_are_recorded_with_their_message(session):
    record = session.try_run("")
    assert not record.ok and "empty" in record.outcome
    record = session.try_run("delete the bus")
    assert not record.ok and record.plan["operation"] == "delete" and "It has:" in record.outcome
    with pytest.raises(InvalidInputError, match="fastest"):
        session.run("speed up the ball")


def test_command_line_says_a_scene_and_an_edit(tmp_path, capsys):
    import json

    from pipelines.morpho4d import load_scene
    from pipelines.morpho4d.__main__ import main

    out = tmp_path / "said.npz"
    assert main(["say", "a big red ball moves from left to right quickly", "make the ball blue", "--steps", "5",
                 "--out", str(out)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["plan"]["mode"] for line in lines] == ["GEN", "EDIT"] and "recoloured" in lines[1]["done"]
    assert load_scene(out).object_names == ("background", "red circle")
    assert main(["say", "make the ball blue", "--out", str(out)]) == 2
    assert "no scene to edit yet" in capsys.readouterr().err


def test_a_dpt_depth_model_is_read_as_inverse_depth_in_the_home_range():
    """The hub preset's kind of model (DPT, relative inverse depth), built tiny and random here."""
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(0)
    model = DPTForDepthEstimation(DPTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        neck_hidden_sizes=[8, 16, 16, 16], fusion_hidden_size=16, backbone_out_indices=[0, 1, 2, 3]))
    estimator = DepthEstimator(model)
    assert estimator.inverse and estimator.input_size == 32
    frames = (np.random.default_rng(0).random((3, 48, 48, 3)) * 255).astype(np.uint8)
    depth = estimator(frames)
    assert depth.shape == (3, 48, 48) and np.isfinite(depth).all()
    assert 2.8 <= depth.min() and depth.max() <= 3.2
    # The rescaling: high disparity (near) -> the objects' depth, low (far) -> the plane's.
    disparity = np.ones((1, 20, 20), np.float32)
    disparity[0, 5:10, 5:10] = 4.0
    home = to_home_depth(disparity, inverse=True)
    assert home[0, 7, 7] == pytest.approx(2.85, abs=1e-5) and home[0, 15, 15] == pytest.approx(3.0, abs=1e-5)
