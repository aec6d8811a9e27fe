"""Cross-attention as the shared mechanism (DESIGN.md principle 3).

One context manager, :class:`CrossAttentionControl`, over any diffusers UNet
(image or video) or ControlNet: it records cross-attention probabilities per
layer, head, token and step into an :class:`AttentionStore` (probabilities, or
the pre-softmax logits with ``values="logits"``; detached, or with
their graph for an energy on the latent, thesis eq. 10.5-10.7), and adds
learnable key/value offsets (:class:`AttentionOffsets`, thesis eq. 5.5).
:func:`token_indices` finds a phrase's tokens; :func:`lse_pool` (eq. 5.4) and
:func:`aggregate_maps` turn maps into scores and heatmaps. :mod:`.guidance` is box guidance on the maps
(eq. 10.5-10.7: Mojito's Directional Motion Control) and :mod:`.layout` the same on one frame for
text-to-image (Match and About tabs).
"""

from .control import CrossAttentionControl
from .layers import cross_attention_layers
from .offsets import AttentionOffsets, prompt_learning_mode
from .pooling import aggregate_maps, average_resized, heatmap_size, lse_pool
from .processor import CrossAttentionProcessor, attention_logits
from .store import AttentionStore, LayerSelector, StepMaps, StepSelector, latent_grid
from .tokens import token_indices

__all__ = [
    "AttentionOffsets",
    "AttentionStore",
    "CrossAttentionControl",
    "CrossAttentionProcessor",
    "LayerSelector",
    "StepMaps",
    "StepSelector",
    "aggregate_maps",
    "attention_logits",
    "average_resized",
    "cross_attention_layers",
    "heatmap_size",
    "latent_grid",
    "lse_pool",
    "prompt_learning_mode",
    "token_indices",
]
