"""Truth-based edit metrics (issue 23, item 2): each Gaussian's truth object from the renderer's own masks,
the query set by colour / shape / both / synonym, precision and recall of the editing engine's selections."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import InvalidInputError
from pipelines.morpho4d import build_shapes_scene
from pipelines.morpho4d.commands import GrammarParser
from pipelines.morpho4d.generation import ShapesWorldStandIn
from pipelines.morpho4d.motion import object_name, plan_trajectories
from pipelines.morpho4d.truth import (
    gaussian_truth,
    plan_truth,
    precision_recall,
    query_set,
    read_query,
    truth_edit_metrics,
    video_truth,
)
from pipelines.shapesworld import sample_video
from pipelines.shapesworld.vocab import COLOURS


@pytest.fixture(scope="module")
def built():
    video = sample_video(3, 32, 4, 2)
    return video, build_shapes_scene(video, n_gaussians=900)


def test_truth_of_a_built_scene_is_its_construction(built):
    """The builder knows each Gaussian's object: the renderer-mask vote agrees on every labelled Gaussian,
    and only hidden ones (the plane under the objects) go unlabelled."""
    video, scene = built
    ids, names = video_truth(video)
    truth = gaussian_truth(scene, ids)
    labelled = truth >= 0
    assert names == scene.object_names
    assert (truth[labelled] == scene.object_ids[labelled]).mean() >= 0.99
    assert 0.6 <= labelled.mean() < 1.0
    assert labelled[scene.object_ids > 0].mean() >= 0.95  # object Gaussians are seen


def test_precision_recall_counts():
    truth = np.array([1, 1, 1, 0, 0, -1, 2])
    selected = np.array([True, True, False, True, False, True, False])
    precision, recall = precision_recall(selected, truth, [1])
    assert precision == pytest.approx(2 / 3) and recall == pytest.approx(2 / 3)  # the unlabelled one is left out
    assert precision_recall(selected, truth, [1, 2]) == pytest.approx((2 / 3, 2 / 4))
    assert precision_recall(np.zeros(7, bool), truth, [1]) == (0.0, 0.0)


def test_query_set_by_colour_shape_both_and_synonym():
    queries = {q.text: q for q in query_set(("background", "red circle", "red square", "blue circle"))}
    assert queries["red"].targets == ("red circle", "red square") and queries["red"].kind == "colour"
    assert queries["circle"].targets == ("red circle", "blue circle") and queries["circle"].kind == "shape"
    assert queries["red square"].targets == ("red square",) and queries["red square"].kind == "both"
    assert queries["red ball"].targets == ("red circle",) and queries["red ball"].kind == "synonym"
    assert read_query("red ball") == "red circle" and read_query("boxes") == "square"


def test_engine_on_a_built_scene_scores_one_and_a_wrong_selection_scores_zero(built):
    video, scene = built
    ids, names = video_truth(video)
    rows = truth_edit_metrics(scene, ids, names)
    assert {r["kind"] for r in rows} == {"colour", "shape", "both", "synonym"}
    # (At 32 px and 900 Gaussians a few of the still object's Gaussians draw mostly another label: 18 of 21.)
    assert all(r["precision"] >= 0.85 and r["recall"] >= 0.99 and not r["refused"] for r in rows), rows
    assert np.mean([r["precision"] for r in rows]) >= 0.93
    truth = gaussian_truth(scene, ids)
    other = truth == 2
    assert precision_recall(other, truth, [1]) == (0.0, 0.0)


def test_plan_truth_is_the_stand_in_renderers_drawing():
    """The stand-in draws the plan along its boxes; the truth masks hold each object's fully covered pixels
    (the mover on top) and, by the renderer's half-coverage rule, pixels at least half the object's colour."""
    plan = GrammarParser().parse_plan("a red circle moves left to right while a blue square moves right to left")
    boxes = {name: trajectory.boxes(6) for name, trajectory in plan_trajectories(plan.objects, 6, 0).items()}
    video = ShapesWorldStandIn()(plan, boxes, 6, 48, 0)
    ids, names = plan_truth(plan.objects, boxes, 48)
    assert names == ("background", "red circle", "blue square") == ("background", *map(object_name, plan.objects))
    frames = video.frames.astype(int)
    for k, obj in enumerate(plan.objects, start=1):
        distance = np.abs(frames - np.array(COLOURS[obj.colour])).sum(-1)
        full = distance <= 6  # pixels the shape covers whole
        truth = ids == k
        assert full.sum() > 0 and (full & truth).sum() / full.sum() >= 0.99
        # Truth pixels are covered at least half: nearer the object's colour than the frame's median.
        median = np.median(frames.reshape(-1, 3), axis=0)
        nearer = distance <= np.abs(frames - median).sum(-1)
        assert (truth & nearer).sum() / truth.sum() >= 0.95


def test_truth_masks_must_fit_the_scene(built):
    _, scene = built
    with pytest.raises(InvalidInputError):
        gaussian_truth(scene, np.zeros((2, 32, 32), np.int32))
