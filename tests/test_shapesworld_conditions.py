"""Condition maps: shapes, dtypes and agreement with the truth."""

import cv2
import numpy as np
import pytest

from pipelines.errors import InvalidInputError
from pipelines.shapesworld import (
    CONDITION_TYPES,
    canny,
    depth,
    detect,
    sample_scene,
    segmentation,
    segmentation_from_detections,
    sketch,
)
from pipelines.shapesworld.conditions import SEGMENTATION_PALETTE, condition_maps


def _inner_outline(mask: np.ndarray) -> np.ndarray:
    return mask & (cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_maps_have_the_scene_size_and_uint8(size):
    scene = sample_scene(2, size=size)
    maps = condition_maps(scene)
    assert list(maps) == list(CONDITION_TYPES)
    for name, array in maps.items():
        assert array.dtype == np.uint8
        assert array.shape == ((size, size, 3) if name == "segmentation" else (size, size))


def test_segmentation_agrees_with_truth_masks_and_detections():
    for seed in range(50):
        scene = sample_scene(seed)
        seg = segmentation(scene)
        covered = np.zeros(seg.shape[:2], bool)
        for obj in scene.objects:
            assert (seg[obj.mask] == SEGMENTATION_PALETTE[obj.shape]).all()
            covered |= obj.mask
        assert (seg[~covered] == 0).all()
        from_detector = segmentation_from_detections(detect(scene.image), scene.size)
        assert (from_detector == seg).all(axis=2).mean() > 0.98
    with pytest.raises(InvalidInputError):
        segmentation_from_detections(detect(scene.image), 32)


def test_canny_and_sketch_trace_the_objects_and_not_the_background():
    for seed in range(50):
        scene = sample_scene(seed)
        edges, lines = canny(scene) > 0, sketch(scene) > 0
        near_edges = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        around = np.zeros_like(edges)
        for obj in scene.objects:
            outline = _inner_outline(obj.mask)
            assert (near_edges[outline]).mean() > 0.95
            assert (lines[outline]).all()
            around |= cv2.dilate(obj.mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert not edges[~around].any() and not lines[~around].any()
        # The sketch is one stroke per object, thinner than Canny's double-sided edges.
        assert lines.sum() <= edges.sum() * 1.2
        # From the image alone (detector masks) the sketch is nearly the same; the
        # differences are edge pixels covered exactly half, on either side of 0.5.
        assert ((sketch(scene.image) > 0) != lines).mean() < 0.03


def test_depth_is_bright_when_near():
    scene = sample_scene(4, n_objects=3)
    grey = depth(scene)
    assert grey[0].mean() < grey[-1].mean()  # the ground plane comes nearer toward the bottom
    for obj in scene.objects:
        assert len(np.unique(grey[obj.mask])) == 1
    nearest = min(scene.objects, key=lambda o: o.depth)
    farthest = max(scene.objects, key=lambda o: o.depth)
    assert grey[nearest.mask][0] >= grey[farthest.mask][0]


def test_unknown_condition_type_raises():
    with pytest.raises(InvalidInputError):
        condition_maps(sample_scene(0), ["normals"])
