"""FlexEControl (thesis ch. 9): several condition maps steer one shared copied encoder.

Modules: ``adapter`` (shared Kronecker x low-rank updates, eq. 9.2, and the
PHM baseline), ``encoder`` (the ControlNet copy and its four training methods),
``conditions`` (condition layers: drawing/upload extraction, checks),
``losses`` (L_mask, eq. 9.5-9.6; L_ca, eq. 9.3-9.4, is shared in ``pipelines.attention.supervision``), ``data`` (ShapesWorld training data),
``train`` (accelerate training), ``pipeline`` (generation and fusion),
``metrics`` (edge SSIM, segmentation mIoU); ``python -m pipelines.flexecontrol``
trains the tiny weights.
"""

from .adapter import KroneckerLowRankLayer, PHMAdaptedLayer, kron_lowrank_parameter_count, kron_sum
from .conditions import MAX_CONDITIONS, WEIGHT_RANGE, Condition, from_drawing, from_upload, prepare_conditions
from .encoder import METHODS, CopiedEncoder, EncoderConfig, build_copied_encoder, load_copied_encoder
from ..attention.supervision import cross_attention_loss, segment_attention
from .losses import condition_mask, masked_diffusion_loss, total_loss
from .metrics import edge_ssim, segmentation_miou, ssim
from .pipeline import ConditionBatch, FlexEControlOutput, FlexEControlPipeline, fuse_residuals

__all__ = [
    "KroneckerLowRankLayer", "PHMAdaptedLayer", "kron_lowrank_parameter_count", "kron_sum",
    "MAX_CONDITIONS", "WEIGHT_RANGE", "Condition", "from_drawing", "from_upload", "prepare_conditions",
    "METHODS", "CopiedEncoder", "EncoderConfig", "build_copied_encoder", "load_copied_encoder",
    "condition_mask", "cross_attention_loss", "masked_diffusion_loss", "segment_attention", "total_loss",
    "edge_ssim", "segmentation_miou", "ssim",
    "ConditionBatch", "FlexEControlOutput", "FlexEControlPipeline", "fuse_residuals",
]
