"""Building the matchers from a preset's models (the studio's ModelManager or a path)."""

from __future__ import annotations

from transformers import CLIPProcessor

from ..models import ModelManager, get_source
from .backbone import DiffusionBackbone
from .clip import ClipMatcher


def backbone_from_manager(manager: ModelManager) -> DiffusionBackbone:
    """The text-to-image model of ``manager``'s preset as a :class:`DiffusionBackbone`."""
    return DiffusionBackbone.from_pipeline(manager.get("text-to-image"))


def clip_from_manager(manager: ModelManager) -> ClipMatcher:
    """The CLIP model of ``manager``'s preset with its processor."""
    model = manager.get("clip")
    source = get_source(manager.preset, "clip")
    location = str(source.path) if source.local else source.location
    processor = CLIPProcessor.from_pretrained(location, local_files_only=source.local)
    return ClipMatcher(model, processor)
