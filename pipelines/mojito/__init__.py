"""Mojito (thesis ch. 10): text-to-video with directional motion control and a motion-intensity modulator.

Modules: ``trajectory`` (keyframed boxes per object phrase, eq. 10.3-10.4), ``modulator`` (the Motion
Intensity Modulator, eq. 10.8), ``pipeline`` (``MojitoPipeline``, a ``TextToVideoSDPipeline`` subclass whose
Directional Motion Control, eq. 10.5-10.7, is :mod:`pipelines.attention.guidance`), ``runner`` (requests in,
reports out), ``evaluate`` (detector -> mIoU, AP50, CD, plausible share; motion alignment), ``export``
(videos, GIF, box overlays), ``model`` (UNet3D inflated from the tiny image UNet), ``train``
(``make tiny-t2v``), ``pack`` (writing the tiny text-to-video pack).
"""

from ..attention.guidance import GuidanceConfig, GuidanceDivergedError
from .modulator import MotionIntensityEncoder
from .pipeline import MojitoPipeline, MojitoPipelineOutput

from .trajectory import (
    PRESETS,
    BoxOutsideFrameError,
    BoxSizeError,
    Keyframe,
    KeyframeOrderError,
    KeyframeRangeError,
    PhraseNotInPromptError,
    TooFewKeyframesError,
    Trajectory,
    boxes_from_points,
    check_phrase,
    check_trajectories,
    preset_trajectory,
    trajectory_from_points,
)

__all__ = [
    "GuidanceConfig",
    "GuidanceDivergedError",
    "MojitoPipeline",
    "MojitoPipelineOutput",
    "MotionIntensityEncoder",
    "PRESETS",
    "BoxOutsideFrameError",
    "BoxSizeError",
    "Keyframe",
    "KeyframeOrderError",
    "KeyframeRangeError",
    "PhraseNotInPromptError",
    "TooFewKeyframesError",
    "Trajectory",
    "boxes_from_points",
    "check_phrase",
    "check_trajectories",
    "preset_trajectory",
    "trajectory_from_points",
]
