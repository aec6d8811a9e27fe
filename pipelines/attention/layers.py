"""Finding the spatial cross-attention layers of a diffusers UNet."""

from __future__ import annotations

from diffusers.models.attention_processor import Attention
from torch import nn

from ..errors import InvalidInputError

PROCESSOR_SUFFIX = ".processor"


def cross_attention_layers(unet: nn.Module) -> list[str]:
    """Names of the text cross-attention layers, e.g. ``"mid_block.attentions.0.transformer_blocks.0.attn2"``.

    A layer is a processor key without ``".processor"`` whose module is a
    cross-attention ``attn2``. UNet3D's temporal transformers
    (``temp_attentions``, ``transformer_in``) also have an ``attn2``, but it is
    a self-attention over frames (``is_cross_attention`` is False) and is left out.
    """
    processors = getattr(unet, "attn_processors", None)
    if processors is None:
        raise InvalidInputError(f"{type(unet).__name__} has no diffusers attention processors.")
    names = []
    for key in processors:
        name = key.removesuffix(PROCESSOR_SUFFIX)
        if name.endswith("attn2") and attention_module(unet, name).is_cross_attention:
            names.append(name)
    return names


def attention_module(unet: nn.Module, name: str) -> Attention:
    """The ``Attention`` module called ``name`` inside ``unet``."""
    try:
        return unet.get_submodule(name)
    except AttributeError:
        raise InvalidInputError(f"{type(unet).__name__} has no attention layer {name!r}.") from None
