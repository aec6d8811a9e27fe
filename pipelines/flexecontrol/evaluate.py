"""Does the output obey the conditions? Placement, mIoU and edge SSIM on held-out ShapesWorld scenes.

A *setting* is a list of ``(type, part)`` conditions (:data:`SETTINGS`): one map
of the whole scene, or the scene split by object into two maps (thesis 9.3.3's
homogeneous and heterogeneous cases). A *source* says how the maps were made:
``"extracted"`` (the extractors on the render: Canny, detector outlines and
segmentation, truth depth) or ``"drawn"`` (by hand, :mod:`.strokes`, read
through the studio's :func:`.conditions.from_drawing`). The scenes' truth then
judges the output: for each condition, the share of its objects the detector
finds where they were drawn (box IoU >= 0.5, :func:`.metrics.object_placement`)
and with the right shape and colour; segmentation mIoU against the truth, and
against the segmentation map given (ControlNet++'s reading: drawn brushes are a
little off the truth in place and size, and the output should follow the
drawing); SSIM of the output's edges against the truth's Canny edges. The
detector's own mIoU on the renders is the ceiling a generator can be judged
against (ControlNet++'s reading).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import ControlScenes
from .metrics import edge_ssim, object_placement, segmentation_miou
from .pipeline import ConditionBatch, FlexEControlPipeline, object_regions
from .train import composition_maps

SETTINGS: dict[str, list[tuple[str, str]]] = {
    "single_canny": [("canny", "all")],
    "single_sketch": [("sketch", "all")],
    "single_segmentation": [("segmentation", "all")],
    "single_depth": [("depth", "all")],
    "two_canny": [("canny", "chosen"), ("canny", "rest")],
    "canny_segmentation": [("canny", "chosen"), ("segmentation", "rest")],
}
SOURCES = ("extracted", "drawn")


@dataclass
class ControlScore:
    """Judged outputs of one model, setting and source."""

    setting: str
    source: str
    # Over all objects of all conditions: share placed (IoU >= 0.5), and placed with shape and colour right.
    placed: float
    right: float
    # The same per condition slot of the setting (e.g. canny's object, segmentation's object).
    placed_per_condition: list[float] = field(default_factory=list)
    right_per_condition: list[float] = field(default_factory=list)
    objects: int = 0
    miou_segmentation: float = 0.0
    ssim_canny: float = 0.0
    # Segmentation mIoU against the segmentation map given, when one map covers the whole scene (else None).
    miou_condition: float | None = None


def condition_slots(scenes: ControlScenes, setting: str, source: str, seed: int = 0):
    """The setting's condition slots for every scene, and per slot each scene's object indices."""
    index = np.arange(len(scenes.images))
    composition = SETTINGS[setting]
    maps = composition_maps(scenes, index, composition, torch.Generator().manual_seed(seed),
                            drawn_probability=1.0 if source == "drawn" else 0.0)
    return [ConditionBatch(kind, m) for kind, m, _ in maps], [parts for _, _, parts in maps]


def judge(scenes: ControlScenes, images: np.ndarray, slots: Sequence[ConditionBatch], parts_per_slot: Sequence[list],
          setting: str, source: str) -> ControlScore:
    """Placement, mIoU and SSIM of ``images`` (one per scene) against the scenes' truth, and mIoU against a
    whole-scene segmentation condition among ``slots``."""
    from ..shapesworld.detector import detect

    detections = [detect(image) for image in images]
    per_slot_placed, per_slot_right = [], []
    for parts in parts_per_slot:
        placed, right = [], []
        for b, part in enumerate(parts):
            objects = scenes.objects[b] if part is None else [scenes.objects[b][j] for j in part]
            verdict = object_placement(objects, images[b], detections[b])
            placed += verdict.placed
            right += verdict.right
        per_slot_placed.append(placed)
        per_slot_right.append(right)
    every_placed = [p for slot in per_slot_placed for p in slot]
    every_right = [r for slot in per_slot_right for r in slot]
    mious = [segmentation_miou(truth_segmentation(scenes, b), im) for b, im in enumerate(images)]
    ssims = [edge_ssim(scenes.maps["canny"][b, 0].numpy(), im) for b, im in enumerate(images)]
    whole = [s for s, parts in zip(slots, parts_per_slot) if s.type == "segmentation" and all(p is None for p in parts)]
    mean = lambda v: float(np.mean(v)) if len(v) else 0.0  # noqa: E731
    miou_condition = None if not whole else mean([segmentation_miou(condition_image(whole[0], b), im)
                                                  for b, im in enumerate(images)])
    return ControlScore(setting, source, mean(every_placed), mean(every_right),
                        [mean(p) for p in per_slot_placed], [mean(r) for r in per_slot_right],
                        len(every_placed), mean(mious), mean(ssims), miou_condition)


def condition_image(slot: ConditionBatch, b: int) -> np.ndarray:
    """Scene ``b``'s map of a condition slot as the uint8 [H, W, C] image it was drawn or extracted as."""
    return (slot.maps[b].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def slot_regions(pipe: FlexEControlPipeline, scenes: ControlScenes, slots: Sequence[ConditionBatch]) -> list:
    """Each scene's phrase-to-region ties (:func:`.pipeline.object_regions`), read from its condition maps."""
    regions = []
    for b, caption in enumerate(scenes.captions):
        maps = [(s.type, condition_image(s, b)) for s in slots]
        maps = [(kind, m if kind == "segmentation" else m[..., 0]) for kind, m in maps]
        regions.append(object_regions(caption, maps, pipe.tokenizer))
    return regions


def score_model(pipe: FlexEControlPipeline, scenes: ControlScenes, setting: str, source: str,
                steps: int = 25, guidance: float | None = None, use_conditions: bool = True,
                conditional_control: bool = True, bind_objects: bool = True) -> ControlScore:
    """Generate one image per scene (seed = scene number) under the setting's conditions and judge it.

    ``use_conditions=False`` generates from the captions alone and judges
    against the same conditions (the no-condition floor). ``conditional_control``
    and ``bind_objects`` are the pipeline's options (both on in the studio).
    """
    slots, parts = condition_slots(scenes, setting, source)
    generators = [torch.Generator().manual_seed(i) for i in range(len(scenes.images))]
    kwargs = {} if guidance is None else {"guidance_scale": guidance}
    regions = slot_regions(pipe, scenes, slots) if use_conditions and bind_objects else None
    images = pipe.generate(scenes.captions, slots if use_conditions else [], generators, num_inference_steps=steps,
                           progress=False, conditional_control=conditional_control, regions=regions, **kwargs)
    return judge(scenes, images, slots, parts, setting, source)


def truth_segmentation(scenes: ControlScenes, b: int) -> np.ndarray:
    """Scene ``b``'s truth segmentation map, uint8 [H, W, 3]."""
    return scenes.maps["segmentation"][b].permute(1, 2, 0).numpy()


def detector_ceiling(scenes: ControlScenes) -> float:
    """The detector's segmentation mIoU on the renders themselves: the best a generator can be scored."""
    return float(np.mean([segmentation_miou(truth_segmentation(scenes, b), image)
                          for b, image in enumerate(scenes.images)]))
