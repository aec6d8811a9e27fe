"""Uploaded PLYs get learned features (pipelines.morpho4d.distil): views rendered, CLIP per pixel, distilled into
the Gaussians with geometry frozen; a text query then selects the object the PLY holds.

Truth for the shipped example PLY (`assets/examples/morpho4d/shapesworld_seed8_t0.ply`): it is frame 0 of the
ShapesWorld example scene of seed 8 (2000 Gaussians asked, 2057 built; its means and colours equal the builder's bit
for bit, checked below), whose video holds one orange square. A Gaussian's truth is the ShapesWorld renderer's own
mask of frame 0, voted by blending weight from the camera the video was drawn with (`truth.gaussian_truth`;
hidden Gaussians under the square left out); the builder's ids give the same 121 square Gaussians.
"""

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipelines.errors import InvalidInputError
from pipelines.models import ModelManager
from pipelines.morpho4d import read_ply
from pipelines.morpho4d.distil import distil_features, feature_views
from pipelines.morpho4d.editing import select
from pipelines.morpho4d.fitting import FitConfig, FitFrames, fit_scene
from pipelines.morpho4d.runner import Morpho4DRunner
from pipelines.morpho4d.shapes4d import build_shapes_scene, home_camera
from pipelines.morpho4d.truth import gaussian_truth, precision_recall, video_truth
from pipelines.shapesworld import sample_video
from pipelines.shapesworld.vocab import COLOURS

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "morpho4d" / "shapesworld_seed8_t0.ply"
GEOMETRY = ("means", "quats", "log_scales", "opacity_logits", "sh_dc")


@pytest.fixture(scope="module")
def ply():
    return read_ply(EXAMPLE)


@pytest.fixture(scope="module")
def truth(ply):
    """Per Gaussian: 1 = the orange square, 0 = background, -1 = hidden (module docstring)."""
    built = build_shapes_scene(seed=8, size=64, n_frames=8, n_gaussians=2000)
    assert np.array_equal(built.means_at(0.0), ply.means) and np.array_equal(built.sh_dc, ply.sh_dc)
    ids, names = video_truth(sample_video(8, 64, 8))
    assert names == ("background", "orange square")
    labels = gaussian_truth(replace(ply, camera=home_camera(64)), ids[:1])
    assert np.array_equal(labels == 1, built.object_ids == 1) and (labels == 1).sum() == 121
    return labels


@pytest.fixture(scope="module")
def distilled(ply):
    return distil_features(ply, ModelManager("tiny"))


def test_distilled_features_name_the_square_and_leave_the_splats_as_they_were(ply, distilled):
    assert distilled.object_names == ("background", "orange square")
    assert distilled.feature_space.startswith("clip-windows:shapes-clip:w16s4:bg")
    assert distilled.features.shape == (ply.n_gaussians, 64)
    assert np.isfinite(distilled.features).all()
    for name in GEOMETRY:
        assert np.array_equal(getattr(distilled, name), getattr(ply, name)), name
    assert distilled.camera == ply.camera and distilled.meta["source"] == "ply"


@pytest.mark.parametrize("query", ["orange square", "square", "orange"])
def test_a_text_query_selects_the_square_of_the_example_ply(distilled, truth, query):
    selection = select(distilled, query)
    precision, recall = precision_recall(selection.mask, truth, [1])
    # Measured: precision 1.000, recall 0.909 (110 of 121) for each query, at threshold 0.8 (CLIP's scan goes below
    # the thesis' 0.85, which gave recall 0.884: the square's rim sits near 0.8).
    assert selection.threshold < 0.85
    assert precision >= 0.9 and recall >= 0.9


def test_text_edits_through_the_runner_change_the_square_and_nothing_else(ply, truth):
    runner = Morpho4DRunner(ModelManager("tiny"))
    session = runner.load_ply(ply, EXAMPLE.name)
    assert "orange square" in session.history[-1].outcome and session.origin == {"file": EXAMPLE.name}
    before = session.scene
    session.run("make the orange square blue")
    after = session.scene
    changed = np.any(after.sh_dc != before.sh_dc, axis=1)
    assert changed.sum() >= 0.9 * (truth == 1).sum()
    assert not (changed & (truth != 1)).any()
    assert np.allclose(after.colours[changed], np.asarray(COLOURS["blue"]) / 255.0, atol=1e-5)
    for name in ("means", "quats", "log_scales", "opacity_logits"):
        assert np.array_equal(getattr(after, name), getattr(before, name))
    session.run("undo")
    assert np.array_equal(session.scene.sh_dc, before.sh_dc)
    session.run("delete the square")
    gone = session.editor.edits[session.editor.cursor - 1].mask  # over the opened scene's Gaussians
    assert session.scene.n_gaussians == before.n_gaussians - gone.sum()
    assert gone.sum() >= 0.9 * (truth == 1).sum() and not (gone & (truth != 1)).any()


def test_without_a_clip_model_the_ply_opens_and_says_it_cannot_be_edited_by_text(ply):
    manager = ModelManager("tiny")
    manager.is_available = lambda role: role != "clip"
    session = Morpho4DRunner(manager).load_ply(ply, EXAMPLE.name)
    assert "not edited by text" in session.history[-1].outcome
    assert session.scene.feature_space == "" and "no CLIP model" in session.scene.meta["features"]
    with pytest.raises(InvalidInputError, match="cannot be edited by a text query"):
        session.apply_edit("recolour", "orange square", "blue")


def test_feature_views_frame_the_scene_and_distillation_refuses_what_it_cannot_do(ply):
    cameras = feature_views(ply, 64, ((0.0, 0.0, 1.0), (20.0, 0.0, 0.8)))
    assert [c.width for c in cameras] == [64, 64]
    centre = ply.centre()
    distances = [float(np.linalg.norm(c.position - centre)) for c in cameras]
    assert distances[1] == pytest.approx(0.8 * distances[0])
    assert distances[0] < 0.6 * float(np.linalg.norm(ply.camera.position - centre))  # closer than the PLY's home
    moving = build_shapes_scene(seed=8, size=32, n_frames=2, n_gaussians=300)
    with pytest.raises(InvalidInputError, match="static scene"):
        distil_features(moving)
    frames = FitFrames(rgb=np.zeros((2, 8, 8, 3)), depth=np.zeros((2, 8, 8)), camera=cameras[0].resized(8, 8),
                       cameras=[c.resized(8, 8) for c in cameras])
    with pytest.raises(InvalidInputError, match="give that scene"):
        fit_scene(frames, FitConfig(steps=1))
    with pytest.raises(InvalidInputError, match="train must be"):
        fit_scene(frames, FitConfig(steps=1, train="colours"), init=ply)
    with pytest.raises(InvalidInputError, match="cameras must be"):
        replace(frames, cameras=cameras[:1])
