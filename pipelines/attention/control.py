"""One context manager over a diffusers UNet's cross-attention, shared by every method."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import InvalidInputError, WorldStudioError
from .layers import PROCESSOR_SUFFIX, cross_attention_layers
from .offsets import AttentionOffsets
from .processor import CrossAttentionProcessor
from .store import AttentionStore, LayerSelector, StepSelector, layer_predicate


class CrossAttentionControl:
    """Record cross-attention maps and/or apply key/value offsets while the block runs.

    Works on any diffusers model with attention processors
    (``UNet2DConditionModel``, ``UNet3DConditionModel``, ``ControlNetModel``)::

        with CrossAttentionControl(unet, differentiable=True, keep_steps="last") as ctl:
            noise_pred = unet(latents, t, encoder_hidden_states=emb).sample
            maps = ctl.store.maps_for(ctl.layers[0])  # [B, heads, h, w, tokens]

    Each UNet call is one step: a forward pre-hook reads the sample's shape
    (``[B, C, H, W]`` or ``[B, C, F, H, W]``) so each layer's map size follows
    the latent. Only spatial text cross-attention layers get a
    :class:`CrossAttentionProcessor` (the recorded ones, and those with
    offsets); self-attention and temporal attention keep their processors.
    On exit, also after an exception, the original processors are restored and
    the hook removed; ``ctl.store`` stays readable.

    Args:
        unet: the model whose cross-attention to control.
        record: store the maps of the selected layers in ``self.store``.
        differentiable: keep maps in the autograd graph (thesis eq. 10.7).
        layers: which layers to record (:data:`~pipelines.attention.store.LayerSelector`).
        steps: which UNet calls to record (:data:`~pipelines.attention.store.StepSelector`).
        keep_steps: ``"last"`` keeps only the latest recorded step.
        offsets: learnable ``p_k``, ``p_v`` added to ``W_k``, ``W_v`` (thesis eq. 5.5).
        to_cpu: move detached maps to the CPU as float32 (ignored when differentiable).
        values: record ``"probs"`` (softmax, the default) or the pre-softmax ``"logits"``
            ``QK^T / sqrt(d)`` that Discffusion's score pools (thesis eq. 5.4).
    """

    def __init__(
        self,
        unet: nn.Module,
        *,
        record: bool = True,
        differentiable: bool = False,
        layers: LayerSelector = None,
        steps: StepSelector = None,
        keep_steps: Literal["all", "last"] = "all",
        offsets: AttentionOffsets | None = None,
        to_cpu: bool = False,
        values: Literal["probs", "logits"] = "probs",
    ) -> None:
        available = cross_attention_layers(unet)
        if not available:
            raise InvalidInputError(f"{type(unet).__name__} has no text cross-attention layers.")
        if record:
            wanted = layer_predicate(layers)
            self.layers = [name for name in available if wanted(name)]
            if not self.layers:
                raise InvalidInputError(f"layers={layers!r} selects none of {available}.")
        else:
            self.layers = []
        if offsets is not None:
            offsets.check_fits(unet)
        if not self.layers and offsets is None:
            raise InvalidInputError("Nothing to do: pass record=True or offsets.")

        self.unet = unet
        self.offsets = offsets
        self.store = AttentionStore(
            differentiable=differentiable, to_cpu=to_cpu, steps=steps, keep_steps=keep_steps, values=values
        )
        self.step = 0  # UNet calls this control has seen (across its blocks); the next call's index
        self._original: dict[str, Any] | None = None
        self._hook: RemovableHandle | None = None

    def _processors(self) -> dict[str, CrossAttentionProcessor]:
        """The processors to install: recorded layers get the store, offset layers their ``(p_k, p_v)``."""
        with_offsets = self.offsets.layer_names if self.offsets is not None else []
        return {
            name + PROCESSOR_SUFFIX: CrossAttentionProcessor(
                name,
                store=self.store if name in self.layers else None,
                offsets=self.offsets.pair(name) if name in with_offsets else None,
            )
            for name in dict.fromkeys([*self.layers, *with_offsets])
        }

    def _on_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs.get("sample")
        if not isinstance(sample, torch.Tensor):
            raise InvalidInputError(f"{type(module).__name__} was called without a sample tensor.")
        self.store.begin_step(self.step, tuple(sample.shape))
        self.step += 1

    def __enter__(self) -> CrossAttentionControl:
        if self._original is not None:
            raise WorldStudioError("This CrossAttentionControl is already active.")
        original = dict(self.unet.attn_processors)
        replaced = {**original, **self._processors()}
        self.unet.set_attn_processor(replaced)  # diffusers pops entries from the dict it is given
        self._original = original
        self._hook = self.unet.register_forward_pre_hook(self._on_forward, with_kwargs=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.unet.set_attn_processor(dict(self._original))
        finally:
            self._hook.remove()
            self._hook = None
            self._original = None
