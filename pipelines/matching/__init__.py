"""Image-text matching: Discffusion (thesis ch. 5), the Diffusion Classifier (eq. 5.9, section 5.5),
CLIP and ComCLIP (ch. 4), and Winoground-style benchmarks. No gradio here.

``python -m pipelines.matching score ...`` and ``... eval --benchmark shapesworld-comp --methods all``
are the command line (see ``__main__``).
"""

from .backbone import DiffusionBackbone, coarse_to_fine, stratified_timesteps
from .benchmark import BENCHMARKS, SWAP_TYPES, Summary, collect, format_table, load_benchmark, summarise
from .classifier import ClassifierConfig, ClassifierTrace, DiffusionClassifier
from .clip import ClipMatcher, ComClipMatcher, caption_entities, counterfactual
from .discffusion import (
    DiscffusionConfig,
    DiscffusionFeatures,
    DiscffusionScorer,
    HEAD_WEIGHTINGS,
    HeadWeighting,
    Reading,
    head_attribution,
    head_weights,
    pool_attributions,
    pool_heads,
    select_layers,
)
from .inputs import MAX_CAPTIONS, check_captions, check_image
from .loading import backbone_from_manager, clip_from_manager
from .methods import METHODS, Matchers
from .prompt_learning import PromptLearningConfig, train_offsets, triplet_loss
from .results import MatchResult

__all__ = [
    "BENCHMARKS",
    "HEAD_WEIGHTINGS",
    "MAX_CAPTIONS",
    "METHODS",
    "SWAP_TYPES",
    "ClassifierConfig",
    "ClassifierTrace",
    "ClipMatcher",
    "ComClipMatcher",
    "DiffusionBackbone",
    "DiffusionClassifier",
    "DiscffusionConfig",
    "DiscffusionFeatures",
    "DiscffusionScorer",
    "HeadWeighting",
    "Matchers",
    "MatchResult",
    "PromptLearningConfig",
    "Reading",
    "Summary",
    "backbone_from_manager",
    "caption_entities",
    "check_captions",
    "check_image",
    "clip_from_manager",
    "coarse_to_fine",
    "collect",
    "counterfactual",
    "format_table",
    "head_attribution",
    "head_weights",
    "load_benchmark",
    "pool_attributions",
    "pool_heads",
    "select_layers",
    "stratified_timesteps",
    "summarise",
    "train_offsets",
    "triplet_loss",
]
