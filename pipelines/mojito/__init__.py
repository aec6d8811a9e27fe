"""Mojito (thesis ch. 10): text-to-video with directional motion control and a motion-intensity modulator.

Modules: ``trajectory`` (keyframed boxes per object phrase, eq. 10.3-10.4),
``model`` (UNet3D inflated from the tiny image UNet), ``modulator`` (the
Motion Intensity Modulator, eq. 10.8), ``train`` (``make tiny-t2v``),
``pack`` (writing the tiny text-to-video pack).
"""

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
