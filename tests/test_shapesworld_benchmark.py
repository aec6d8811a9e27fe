"""The Winoground-shaped compositional benchmark: held-out, minimal pairs, verifiable, round-trips."""

import numpy as np
import pytest

from pipelines.errors import InvalidInputError
from pipelines.shapesworld import (
    KINDS,
    caption_verdict,
    compositional_groups,
    is_heldout,
    load_winoground,
    parse_caption,
    save_winoground,
    winoground_scores,
)
from pipelines.shapesworld.benchmark import winoground_accuracy


@pytest.fixture(scope="module")
def groups():
    return compositional_groups(100, seed=0)


def test_groups_cycle_kinds_and_are_deterministic(groups):
    assert [g.kind for g in groups[:5]] == list(KINDS)
    again = compositional_groups(10, seed=0)
    assert all(a.images[k].tobytes() == b.images[k].tobytes() for a, b in zip(groups, again) for k in (0, 1))
    other = compositional_groups(10, seed=1)
    assert any(a.captions != b.captions for a, b in zip(groups, other))


def test_each_caption_is_true_of_its_own_image_only(groups):
    for group in groups:
        for i in (0, 1):
            for j in (0, 1):
                verdict = caption_verdict(group.images[j], group.captions[i])
                assert verdict.ok == (i == j), (group.kind, group.captions, i, j)


def test_pairs_are_minimal_swaps_on_heldout_compositions(groups):
    for group in groups:
        first, second = (parse_caption(c) for c in group.captions)
        scenes = group.truth
        assert scenes is not None and group.captions != (group.captions[1], group.captions[0])
        assert scenes[0].background == scenes[1].background
        if group.kind in ("colour", "shape", "relation"):
            assert is_heldout(scenes[0].objects) and is_heldout(scenes[1].objects)
        if group.kind == "colour":
            assert [o.shape for o in first.objects] == [o.shape for o in second.objects]
            assert [o.colour for o in first.objects] == [o.colour for o in second.objects][::-1]
            assert first.relation == second.relation
        elif group.kind == "shape":
            assert [o.colour for o in first.objects] == [o.colour for o in second.objects]
            assert [o.shape for o in first.objects] == [o.shape for o in second.objects][::-1]
        elif group.kind == "relation":
            assert first.objects == second.objects and first.relation != second.relation
        else:
            assert len(first.objects) == len(second.objects) == 1
            same = "shape" if group.kind == "colour_single" else "colour"
            assert getattr(first.objects[0], same) == getattr(second.objects[0], same)
            assert first.objects[0] != second.objects[0]
            assert scenes[0].objects[0].box == scenes[1].objects[0].box


def test_winoground_scores_follow_the_definitions():
    assert winoground_scores([[1.0, 0.0], [0.0, 1.0]]) == {"text": True, "image": True, "group": True}
    # Caption 0 wins everywhere: image 1 prefers the wrong caption, so no text score.
    assert winoground_scores([[0.9, 0.8], [0.1, 0.2]]) == {"text": False, "image": True, "group": False}
    # Image 0 wins for both captions: no image score, but each image prefers its own caption.
    assert winoground_scores([[0.9, 0.1], [0.8, 0.2]]) == {"text": True, "image": False, "group": False}
    assert winoground_scores(np.ones((2, 2)))["group"] is False
    assert winoground_accuracy([np.eye(2), np.ones((2, 2))]) == {"text": 0.5, "image": 0.5, "group": 0.5}
    with pytest.raises(InvalidInputError):
        winoground_scores(np.ones(3))


def test_save_and_load_round_trip(groups, tmp_path):
    examples = save_winoground(groups[:10], tmp_path)
    assert examples.name == "examples.jsonl" and (tmp_path / "images" / "ex_0_img_1.png").is_file()
    loaded = load_winoground(tmp_path)
    assert len(loaded) == 10
    for saved, back in zip(groups, loaded):
        assert back.captions == saved.captions and back.kind == saved.kind and back.truth is None
        assert all(np.array_equal(a, b) for a, b in zip(saved.images, back.images))
    assert len(load_winoground(examples)) == 10
    with pytest.raises(InvalidInputError):
        load_winoground(tmp_path / "missing")


def test_bad_benchmark_arguments():
    with pytest.raises(InvalidInputError):
        compositional_groups(0)
    with pytest.raises(InvalidInputError):
        compositional_groups(5, kinds=("colour", "count"))
