"""ShapesWorld: a deterministic synthetic world whose truth is known, and its detector.

Flat-coloured circles, squares and triangles on low-saturation backgrounds,
captioned in a closed grammar; videos of one moving object; condition maps;
a held-out compositional benchmark in Winoground's format; and a pixel
detector that judges any image against a caption. See DESIGN.md, "ShapesWorld".

Modules: ``vocab`` (words), ``captions`` (grammar), ``render`` (rasteriser),
``splits`` (held-out compositions), ``scene`` (still scenes), ``video``
(videos, motion intensity), ``conditions`` (canny, sketch, segmentation,
depth), ``detector``, ``metrics``, ``benchmark``, ``datasets`` (torch);
``python -m pipelines.shapesworld`` is the command line.
"""

from .benchmark import KINDS, Group, compositional_groups, load_winoground, save_winoground, winoground_scores
from .captions import CaptionSpec, MotionSpec, ObjectSpec, format_caption, parse_caption
from .conditions import CONDITION_TYPES, canny, depth, segmentation, segmentation_from_detections, sketch
from .datasets import ShapesConditionDataset, ShapesImageDataset, ShapesVideoDataset
from .detector import Detection, detect
from .metrics import Verdict, ap50, box_iou, caption_verdict, centroid_distance, relation_holds
from .render import Background
from .scene import ObjectTruth, Placement, Scene, render_scene, sample_scene
from .splits import is_heldout
from .video import VideoObject, VideoScene, motion_intensity, sample_video, speed_for_intensity
from .vocab import COLOURS, DIRECTIONS, MOTION_VERBS, RELATIONS, SHAPES, SPEEDS, vocabulary

__all__ = [
    "CONDITION_TYPES",
    "COLOURS",
    "DIRECTIONS",
    "KINDS",
    "MOTION_VERBS",
    "RELATIONS",
    "SHAPES",
    "SPEEDS",
    "Background",
    "CaptionSpec",
    "Detection",
    "Group",
    "MotionSpec",
    "ObjectSpec",
    "ObjectTruth",
    "Placement",
    "Scene",
    "ShapesConditionDataset",
    "ShapesImageDataset",
    "ShapesVideoDataset",
    "Verdict",
    "VideoObject",
    "VideoScene",
    "ap50",
    "box_iou",
    "canny",
    "caption_verdict",
    "centroid_distance",
    "compositional_groups",
    "depth",
    "detect",
    "format_caption",
    "is_heldout",
    "load_winoground",
    "motion_intensity",
    "parse_caption",
    "relation_holds",
    "render_scene",
    "sample_scene",
    "sample_video",
    "save_winoground",
    "segmentation",
    "segmentation_from_detections",
    "sketch",
    "speed_for_intensity",
    "vocabulary",
    "winoground_scores",
]
