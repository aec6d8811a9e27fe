"""ShapesWorld still scenes: determinism, truth, layouts, splits, sizes."""

import numpy as np
import pytest

from pipelines.errors import InvalidInputError
from pipelines.shapesworld import Background, Placement, is_heldout, relation_holds, render_scene, sample_scene
from pipelines.shapesworld.render import luminance
from pipelines.shapesworld.scene import (
    BACKGROUND_MAX_CHROMA,
    MIN_LUMINANCE_CONTRAST,
    background_depth,
    boxes_apart,
    object_gap,
)
from pipelines.shapesworld.splits import HELDOUT_FRACTION, heldout_compositions
from pipelines.shapesworld.vocab import COLOURS


def test_same_seed_gives_identical_bytes_and_truth():
    for seed in (0, 7, 123456):
        a, b = sample_scene(seed), sample_scene(seed)
        assert a.image.tobytes() == b.image.tobytes()
        assert a.depth.tobytes() == b.depth.tobytes()
        assert a.record() == b.record()
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.objects, b.objects))


def test_different_seeds_differ():
    images = {sample_scene(seed).image.tobytes() for seed in range(50)}
    assert len(images) == 50


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_truth_is_clean_at_every_size(size):
    for seed in range(40):
        scene = sample_scene(seed, size=size)
        assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
        assert scene.depth.shape == (size, size)
        assert 1 <= len(scene.objects) <= 3
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            ys, xs = np.nonzero(obj.mask)
            # The mask lies in the box (half-covered pixels only).
            assert xs.min() >= np.floor(x0) and xs.max() < np.ceil(x1)
            assert ys.min() >= np.floor(y0) and ys.max() < np.ceil(y1)
            assert np.allclose(scene.depth[obj.mask], obj.depth)
            assert (background_depth(size)[obj.mask] > obj.depth).all()  # nearer than the plane behind it
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                assert boxes_apart(a.box, b.box, object_gap(size))
                assert not (a.mask & b.mask).any()


def test_backgrounds_are_low_saturation_and_contrast_with_objects():
    for seed in range(200):
        scene = sample_scene(seed)
        background = scene.background
        assert max(background.colour) - min(background.colour) <= BACKGROUND_MAX_CHROMA
        for obj in scene.objects:
            gap = abs(background.luminance - luminance(COLOURS[obj.colour])) - background.amplitude
            assert gap >= MIN_LUMINANCE_CONTRAST


def test_stated_relation_holds_on_the_truth():
    seen = 0
    for seed in range(400):
        scene = sample_scene(seed)
        if len(scene.objects) == 2:
            assert scene.relation is not None
        if scene.relation is not None:
            subject, relation, other = scene.relation
            assert relation_holds(scene.objects[subject].box, scene.objects[other].box, relation)
            assert relation in scene.caption
            seen += 1
    assert seen > 150


def test_heldout_fraction_and_train_split_never_shows_one():
    keys = heldout_compositions()
    assert abs(len(keys) / 126 - HELDOUT_FRACTION) < 0.06
    for seed in range(2000):
        assert not is_heldout(sample_scene(seed, split="train").objects)


def test_test_split_draws_heldout_compositions():
    for seed in range(200):
        scene = sample_scene(seed, split="test")
        assert len(scene.objects) >= 2 and is_heldout(scene.objects[:2])


def test_render_scene_places_objects_where_asked():
    placements = [Placement("circle", "red", (0.25, 0.5), 0.3), Placement("square", "blue", (0.75, 0.5), 0.3)]
    scene = render_scene(placements, size=64, relation="left of")
    assert scene.caption == "a red circle left of a blue square"
    assert scene.objects[0].box == pytest.approx((6.4, 22.4, 25.6, 41.6))
    swapped = render_scene(placements[::-1], size=64, relation="right of")
    assert swapped.caption == "a blue square right of a red circle"
    again = [Placement.from_box(o.shape, o.colour, o.box, 64) for o in scene.objects]
    assert render_scene(again, 64).image.tobytes() == render_scene(placements, 64).image.tobytes()


def test_render_scene_rejects_bad_layouts():
    left = Placement("circle", "red", (0.25, 0.5), 0.3)
    with pytest.raises(InvalidInputError, match="overlap"):
        render_scene([left, Placement("square", "blue", (0.3, 0.5), 0.3)])
    with pytest.raises(InvalidInputError, match="leaves the frame"):
        render_scene([Placement("square", "blue", (0.95, 0.5), 0.3)])
    with pytest.raises(InvalidInputError, match="does not hold"):
        render_scene([left, Placement("square", "blue", (0.75, 0.5), 0.3)], relation="above")
    with pytest.raises(InvalidInputError):
        Placement("hexagon", "red", (0.5, 0.5), 0.2)
    with pytest.raises(InvalidInputError):
        Background((0, 0, 0), texture="marble")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -64, 8, 100_000, 64.0, "64", True])
def test_bad_sizes_are_rejected(size):
    with pytest.raises(InvalidInputError):
        sample_scene(0, size=size)


def test_bad_arguments_are_rejected():
    with pytest.raises(InvalidInputError):
        sample_scene(0, split="validation")
    with pytest.raises(InvalidInputError):
        sample_scene(0, n_objects=4)
    with pytest.raises(InvalidInputError):
        sample_scene(0, n_objects=1, split="test")
    with pytest.raises(InvalidInputError):
        sample_scene(-1)
