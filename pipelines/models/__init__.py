"""Model presets (tiny pack, hub ids), device/dtype choice and lazy loading."""

from .loading import ModelManager, Placement, choose_placement, load_source, missing_model_message
from .presets import PRESETS, ROLES, TINY_PACK_DIR, ModelSource, Preset, get_preset, get_source

__all__ = [
    "PRESETS",
    "ROLES",
    "TINY_PACK_DIR",
    "ModelManager",
    "ModelSource",
    "Placement",
    "Preset",
    "choose_placement",
    "get_preset",
    "get_source",
    "load_source",
    "missing_model_message",
]
