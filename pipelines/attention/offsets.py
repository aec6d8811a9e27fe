"""Learnable key/value offsets for attention-based prompt learning (thesis eq. 5.5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import InvalidInputError
from .layers import attention_module, cross_attention_layers
from .store import LayerSelector, layer_predicate

_KEY_SUFFIX = ".p_k"
_VALUE_SUFFIX = ".p_v"


class AttentionOffsets(nn.Module):
    """Per-layer offsets ``p_k``, ``p_v`` on the cross-attention key and value projections.

    Thesis eq. 5.5: ``W_k' = W_k + p_k`` and ``W_v' = W_v + p_v`` with ``W_k``,
    ``W_v`` frozen and only ``p_k``, ``p_v`` trained (see
    :func:`prompt_learning_mode`). Each offset is shaped like the layer's
    ``to_k.weight`` / ``to_v.weight`` (``[heads*d, cross_attention_dim]``) and
    starts at zero, so a fresh instance leaves the UNet's output unchanged.
    Offsets are float32 whatever the UNet's dtype; the processor casts them.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[Sequence[int], Sequence[int]]],
        *,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not shapes:
            raise InvalidInputError("AttentionOffsets needs at least one layer.")
        self.layer_names: list[str] = list(shapes)
        self._index = {name: i for i, name in enumerate(self.layer_names)}
        self.p_k = nn.ParameterList(
            [nn.Parameter(torch.zeros(*k_shape, device=device)) for k_shape, _ in shapes.values()]
        )
        self.p_v = nn.ParameterList(
            [nn.Parameter(torch.zeros(*v_shape, device=device)) for _, v_shape in shapes.values()]
        )

    @classmethod
    def from_unet(cls, unet: nn.Module, layers: LayerSelector = None) -> AttentionOffsets:
        """Zero offsets for every spatial cross-attention layer of ``unet`` that ``layers`` selects."""
        wanted = layer_predicate(layers)
        names = [name for name in cross_attention_layers(unet) if wanted(name)]
        if not names:
            raise InvalidInputError(f"layers={layers!r} selects none of the UNet's cross-attention layers.")
        modules = {name: attention_module(unet, name) for name in names}
        shapes = {name: (m.to_k.weight.shape, m.to_v.weight.shape) for name, m in modules.items()}
        return cls(shapes, device=next(iter(modules.values())).to_k.weight.device)

    def pair(self, layer: str) -> tuple[nn.Parameter, nn.Parameter]:
        """``(p_k, p_v)`` of one layer, each ``[heads*d, cross_attention_dim]``."""
        if layer not in self._index:
            raise InvalidInputError(f"No offsets for layer {layer!r}; have {self.layer_names}.")
        i = self._index[layer]
        return self.p_k[i], self.p_v[i]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Offsets keyed ``"<layer>.p_k"`` / ``"<layer>.p_v"`` (the safetensors layout)."""
        out = {}
        for name in self.layer_names:
            p_k, p_v = self.pair(name)
            out[name + _KEY_SUFFIX] = p_k
            out[name + _VALUE_SUFFIX] = p_v
        return out

    def check_fits(self, unet: nn.Module) -> None:
        """Raise :class:`InvalidInputError` unless every layer exists in ``unet`` with matching shapes."""
        available = set(cross_attention_layers(unet))
        problems = []
        for name in self.layer_names:
            if name not in available:
                problems.append(f"{name}: not a cross-attention layer of this UNet")
                continue
            module = attention_module(unet, name)
            p_k, p_v = self.pair(name)
            if p_k.shape != module.to_k.weight.shape or p_v.shape != module.to_v.weight.shape:
                problems.append(
                    f"{name}: offsets {list(p_k.shape)}/{list(p_v.shape)} vs to_k/to_v "
                    f"{list(module.to_k.weight.shape)}/{list(module.to_v.weight.shape)}"
                )
        if problems:
            raise InvalidInputError("Offsets do not fit this UNet: " + "; ".join(problems))

    def save(self, path: str | Path) -> None:
        """Write the offsets to a safetensors file keyed by layer name."""
        save_file({k: v.detach().contiguous().cpu() for k, v in self.tensors().items()}, str(path))

    def load(self, path: str | Path) -> None:
        """Copy offsets from a safetensors file written by :meth:`save`, in place.

        The file must hold exactly this instance's layers with the same shapes;
        anything else raises :class:`InvalidInputError` naming the mismatch.
        """
        try:
            loaded = load_file(str(path))
        except (FileNotFoundError, SafetensorError) as exc:
            raise InvalidInputError(f"Cannot read offsets from {path}: {exc}") from exc
        expected = self.tensors()
        missing = sorted(set(expected) - set(loaded))
        unexpected = sorted(set(loaded) - set(expected))
        wrong = [
            f"{k}: file {list(loaded[k].shape)} vs {list(expected[k].shape)}"
            for k in expected
            if k in loaded and loaded[k].shape != expected[k].shape
        ]
        if missing or unexpected or wrong:
            raise InvalidInputError(
                f"Offsets file {path} does not match: missing {missing}, unexpected {unexpected}, shapes {wrong}."
            )
        with torch.no_grad():
            for key, param in expected.items():
                param.copy_(loaded[key])


def prompt_learning_mode(offsets: AttentionOffsets, *modules: nn.Module) -> list[nn.Parameter]:
    """Freeze ``modules`` (UNet, text encoder, ...) and make only ``offsets`` trainable.

    Thesis ch. 5.3.4: ``W_k``, ``W_v`` and everything else stay frozen; ``p_k``
    and ``p_v`` receive gradients. Returns the parameters to give an optimizer.
    Train/eval mode is left as it is.
    """
    for module in modules:
        module.requires_grad_(False)
    offsets.requires_grad_(True)
    return list(offsets.parameters())
