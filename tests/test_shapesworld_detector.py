"""The ShapesWorld detector on clean, blurred+noisy and resized images, and the metrics built on it."""

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.errors import InvalidInputError
from pipelines.shapesworld import (
    Placement,
    ap50,
    box_iou,
    caption_verdict,
    centroid_distance,
    detect,
    relation_holds,
    render_scene,
    sample_scene,
)
from pipelines.shapesworld.metrics import average_precision

N_IMAGES = 500


def degrade(image: np.ndarray, rng: np.random.Generator, sigma: float = 1.0, noise: float = 8.0) -> np.ndarray:
    """Blur of ``sigma`` pixels plus Gaussian noise of ``noise`` grey levels: like a tiny generator's output."""
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)
    return np.clip(np.rint(blurred + rng.normal(0.0, noise, image.shape)), 0, 255).astype(np.uint8)


def score(scenes, transform=lambda image: (image, 1.0)):
    """Match detections to truth by IoU; return (colour acc, shape acc, mean IoU, found, extra)."""
    colour = shape = found = extra = total = 0
    ious = []
    for scene in scenes:
        image, scale = transform(scene.image)
        detections = detect(image)
        used = set()
        for obj in scene.objects:
            total += 1
            truth = tuple(v * scale for v in obj.box)
            overlaps = [box_iou(truth, d.box) if i not in used else -1.0 for i, d in enumerate(detections)]
            if not overlaps or max(overlaps) < 0.5:
                continue
            best = int(np.argmax(overlaps))
            used.add(best)
            found += 1
            colour += detections[best].colour == obj.colour
            shape += detections[best].shape == obj.shape
            ious.append(overlaps[best])
        extra += len(detections) - len(used)
    return colour / total, shape / total, float(np.mean(ious)), found / total, extra


@pytest.fixture(scope="module")
def scenes():
    return [sample_scene(seed) for seed in range(N_IMAGES)]


def test_detector_on_clean_images(scenes):
    assert sum(len(s.objects) for s in scenes) > 900
    colour, shape, iou, found, extra = score(scenes)
    assert found == 1.0 and extra == 0
    assert colour == 1.0
    assert shape >= 0.97
    assert iou >= 0.9


def test_detector_on_blurred_noisy_images(scenes):
    rng = np.random.default_rng(0)
    colour, shape, iou, found, extra = score(scenes, lambda image: (degrade(image, rng), 1.0))
    assert found >= 0.99 and extra <= 5
    assert colour >= 0.99
    assert shape >= 0.90
    assert iou >= 0.85


@pytest.mark.parametrize(
    "factor, interpolation",
    [(2.0, cv2.INTER_LINEAR), (4.0, cv2.INTER_NEAREST), (0.5, cv2.INTER_AREA), (0.75, cv2.INTER_LINEAR)],
)
def test_detector_on_resized_images(scenes, factor, interpolation):
    def resize(image):
        side = int(round(image.shape[0] * factor))
        return cv2.resize(image, (side, side), interpolation=interpolation), side / image.shape[0]

    colour, shape, iou, found, _ = score(scenes[:100], resize)
    assert found == 1.0 and colour == 1.0
    assert shape >= 0.97
    assert iou >= 0.85


@pytest.mark.parametrize("size", [32, 128, 256])
def test_detector_at_other_sizes(size):
    colour, shape, iou, found, extra = score([sample_scene(seed, size=size) for seed in range(40)])
    assert (found, colour, extra) == (1.0, 1.0, 0)
    assert shape >= 0.97 and iou >= 0.9


def test_detector_accepts_pil_and_reports_consistent_fields():
    scene = sample_scene(11, n_objects=3)
    detections = detect(Image.fromarray(scene.image))
    assert len(detections) == 3
    assert [d.confidence for d in detections] == sorted((d.confidence for d in detections), reverse=True)
    for d in detections:
        assert 0.0 <= d.confidence <= 1.0
        assert d.mask.shape == (64, 64) and d.mask.dtype == bool
        assert d.box[0] <= d.centroid[0] <= d.box[2] and d.box[1] <= d.centroid[1] <= d.box[3]
        assert abs(d.area - d.mask.sum()) < 0.25 * d.area
        assert sum(d.shape_scores.values()) == pytest.approx(1.0)


def test_detector_finds_nothing_on_a_plain_or_textured_background():
    assert detect(np.full((64, 64, 3), 128, np.uint8)) == []
    rng = np.random.default_rng(1)
    grey = rng.normal(120, 10, (64, 64, 1)).repeat(3, axis=2)
    assert detect(np.clip(grey, 0, 255).astype(np.uint8)) == []
    with pytest.raises(InvalidInputError):
        detect(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(InvalidInputError):
        detect(np.zeros((8, 8, 3), np.uint8), min_area=-1)


def test_box_iou_and_centroid_distance():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert centroid_distance((0, 0, 0, 0), (64, 64, 64, 64), 64) == pytest.approx(1.0)
    assert centroid_distance((0, 0, 10, 10), (0, 0, 10, 10), 64) == 0.0
    assert centroid_distance((0, 0, 2, 2), (30, 0, 32, 2), (64, 32)) == pytest.approx(30 / np.hypot(64, 32))


def test_average_precision():
    truths = [(0, 0, 10, 10), (20, 20, 30, 30)]
    assert ap50([((0, 0, 10, 10), 0.9), ((20, 20, 30, 30), 0.8)], truths) == pytest.approx(1.0)
    # A confident false positive first: precision 1/2 then 2/3; interpolated (best at any
    # higher recall) both recall steps get 2/3.
    ranked = [((40, 40, 50, 50), 0.95), ((0, 0, 10, 10), 0.9), ((20, 20, 30, 30), 0.8)]
    assert ap50(ranked, truths) == pytest.approx(2 / 3)
    assert ap50([((0, 0, 10, 10), 0.9)], truths) == pytest.approx(0.5)
    assert ap50([], []) == 1.0 and ap50([((0, 0, 1, 1), 0.5)], []) == 0.0
    scenes = [sample_scene(seed) for seed in range(30)]
    predictions = [[(d.box, d.confidence) for d in detect(s.image)] for s in scenes]
    assert average_precision(predictions, [[o.box for o in s.objects] for s in scenes]) == pytest.approx(1.0)


def test_relation_holds_needs_a_margin():
    a, b = (0, 0, 10, 10), (20, 0, 30, 10)
    assert relation_holds(a, b, "left of") and relation_holds(b, a, "right of")
    assert not relation_holds(a, b, "above") and not relation_holds(a, b, "right of")
    assert not relation_holds((0, 0, 10, 10), (4, 20, 14, 30), "left of")  # 4 px < half a width
    assert relation_holds((0, 0, 10, 10), (4, 20, 14, 30), "above")
    with pytest.raises(InvalidInputError):
        relation_holds(a, b, "near")


def test_caption_verdict_checks_colour_shape_binding_and_relation():
    image = render_scene(
        [Placement("circle", "red", (0.25, 0.4), 0.3), Placement("square", "blue", (0.75, 0.6), 0.3)]
    ).image
    assert caption_verdict(image, "a red circle left of a blue square").ok
    assert caption_verdict(image, "a red circle").ok
    assert caption_verdict(image, "a blue square right of a red circle").ok
    swapped = caption_verdict(image, "a red circle right of a blue square")
    assert not swapped.ok and swapped.both_present and swapped.relation_ok is False
    bound = caption_verdict(image, "a blue circle left of a red square")
    assert not bound.ok and bound.colour_ok and bound.shape_ok and not bound.both_present
    missing = caption_verdict(image, "a green triangle")
    assert not missing.ok and not missing.colour_ok and not missing.shape_ok
    assert caption_verdict(image, "a red circle").relation_ok is None
    twice = caption_verdict(image, "a red circle above a red circle")
    assert not twice.both_present
    with pytest.raises(InvalidInputError):
        caption_verdict(image, "a red blob")


def test_caption_verdict_on_generated_truth(scenes):
    for scene in scenes[:200]:
        verdict = caption_verdict(scene.image, scene.caption)
        assert verdict.ok, scene.caption
