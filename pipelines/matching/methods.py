"""The matching methods by name, built lazily from one model manager (shared by the CLI and the studio)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ..attention import AttentionOffsets
from ..errors import InvalidInputError
from ..models import ModelManager, get_preset
from .backbone import DiffusionBackbone
from .classifier import ClassifierConfig, DiffusionClassifier
from .clip import ClipMatcher, ComClipMatcher
from .discffusion import DiscffusionConfig, DiscffusionScorer, HeadWeighting
from .results import MatchResult
from .loading import backbone_from_manager, clip_from_manager

METHODS: dict[str, str] = {
    "discffusion": "Discffusion (cross-attention LSE, eq. 5.4)",
    "discffusion-hw": "Discffusion + head attribution maps (eq. 5.7 as written)",
    "discffusion-hw-scalar": "Discffusion + one attribution weight per head (scalar reading of eq. 5.7)",
    "clip": "CLIP (cosine similarity)",
    "comclip": "ComCLIP (subimages re-weighted, eq. 4.4-4.5)",
    "dc-uniform": "Diffusion Classifier, uniform sampling (eq. 5.9)",
    "dc-hierarchical": "Diffusion Classifier, hierarchical beam sampling (section 5.5)",
}

# Discffusion method name -> its head weighting (eq. 5.7)
DISCFFUSION_WEIGHTINGS: dict[str, HeadWeighting] = {
    "discffusion": "none", "discffusion-hw": "attribution", "discffusion-hw-scalar": "scalar"}


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """``"all"``, a comma-separated string or a list of names from :data:`METHODS`."""
    if isinstance(methods, str):
        methods = list(METHODS) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InvalidInputError(f"Unknown or no methods {list(methods)}; choose from {list(METHODS)} or 'all'.")
    return list(dict.fromkeys(methods))


class Matchers:
    """Every method over one preset's models, built on first use.

    ``discffusion`` and ``classifier`` settings can be replaced; offsets
    loaded with :meth:`load_offsets` (safetensors) apply to both Discffusion methods.
    """

    def __init__(
        self,
        manager: ModelManager | None = None,
        *,
        backbone: DiffusionBackbone | None = None,
        clip: ClipMatcher | None = None,
        discffusion: DiscffusionConfig | None = None,
        classifier: ClassifierConfig | None = None,
    ) -> None:
        self._manager = manager
        self._backbone = backbone
        self._clip = clip
        self.discffusion_config = discffusion or DiscffusionConfig()
        self.classifier_config = classifier or ClassifierConfig()
        self.offsets: AttentionOffsets | None = None

    @cached_property
    def backbone(self) -> DiffusionBackbone:
        if self._backbone is None:
            if self._manager is None:
                raise InvalidInputError("Matchers needs a model manager or a backbone.")
            self._backbone = backbone_from_manager(self._manager)
        return self._backbone

    def text_to_image(self):
        """The preset's text-to-image pipeline (to generate an image to match)."""
        if self._manager is None:
            raise InvalidInputError("Generating an image needs a model manager.")
        return self._manager.get("text-to-image")

    @cached_property
    def clip(self) -> ClipMatcher:
        if self._clip is None:
            if self._manager is None:
                raise InvalidInputError("Matchers needs a model manager or a CLIP matcher.")
            self._clip = clip_from_manager(self._manager)
        return self._clip

    def locate_phrases(self) -> Callable[[np.ndarray, list[str]], list[tuple]] | None:
        """ComCLIP's entity boxes from the preset's open-vocabulary ``detector`` (OWL-ViT): its best box per
        phrase; None when the preset has none (then the ShapesWorld detector finds the objects)."""
        if self._manager is None or "detector" not in get_preset(self._manager.preset).sources:
            return None
        from ..mojito.evaluate import owlvit_detections, owlvit_from_manager

        model, processor = owlvit_from_manager(self._manager)

        def locate(image: np.ndarray, phrases: list[str]) -> list[tuple]:
            return [found.box for phrase in phrases for found in owlvit_detections(image[None], phrase, model, processor)]

        return locate

    def discffusion(self, head_weighting: HeadWeighting | None = None, **changes) -> DiscffusionScorer:
        config = self.discffusion_config
        if head_weighting is not None:
            changes["head_weighting"] = head_weighting
        return DiscffusionScorer(self.backbone, replace(config, **changes), offsets=self.offsets)

    def classifier(self, sampling: str) -> DiffusionClassifier:
        return DiffusionClassifier(self.backbone, replace(self.classifier_config, sampling=sampling))

    def load_offsets(self, path: str | Path) -> AttentionOffsets:
        """Offsets for the Discffusion layers from a safetensors file written by ``AttentionOffsets.save``."""
        offsets = AttentionOffsets.from_unet(self.backbone.unet, layers=self.discffusion().layers)
        offsets.load(path)
        self.offsets = offsets
        return offsets

    def scorer(self, method: str) -> Callable[..., MatchResult]:
        """``score(image, captions) -> MatchResult`` of one method."""
        if method in DISCFFUSION_WEIGHTINGS:
            scorer = self.discffusion(head_weighting=DISCFFUSION_WEIGHTINGS[method])

            def named(image, captions):
                result = scorer.score(image, captions)
                result.method = method
                return result

            return named
        if method == "clip":
            return self.clip.score
        if method == "comclip":
            return ComClipMatcher(self.clip, locate=self.locate_phrases()).score
        if method in ("dc-uniform", "dc-hierarchical"):
            return self.classifier(method.removeprefix("dc-")).score
        raise InvalidInputError(f"Unknown method {method!r}; choose from {list(METHODS)}.")
