"""The cross-attention processor that records maps and applies key/value offsets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from .store import AttentionStore


def attention_logits(
    attn: Attention, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Pre-softmax scores ``QK^T / sqrt(d)`` (+ additive mask), float32, ``[B*heads, n, m]``.

    The same product as ``Attention.get_attention_scores`` without its softmax:
    the Discffusion code pools these logits with LogSumExp (thesis eq. 5.4),
    which a softmax would reduce to a near-constant (each row of probabilities
    sums to one). ``softmax(logits, -1)`` gives the probabilities back exactly.
    """
    logits = torch.bmm(query.float(), key.float().transpose(-1, -2)) * attn.scale  # [B*heads, n, m]
    if attention_mask is not None:
        logits = logits + attention_mask.float()
    return logits


class CrossAttentionProcessor:
    """A diffusers attention processor for one cross-attention layer.

    It computes what diffusers' ``AttnProcessor``/``AttnProcessor2_0`` compute
    (spatial and group norm, 4D inputs, attention mask, ``norm_cross``, q/k
    norms, residual connection, output rescale) and adds two things:

    - with ``store``, the probabilities ``softmax(QK^T / sqrt(d))`` (thesis
      ch. 5.3.2; the maps A of eq. 5.4 and eq. 10.5) come from
      ``attn.get_attention_scores`` and are handed to the store; a store with
      ``values="logits"`` gets the pre-softmax scores ``QK^T / sqrt(d)``
      instead (:func:`attention_logits`, what the Discffusion code pools) and
      the layer's output uses their softmax;
    - with ``offsets = (p_k, p_v)``, the key and value projections become
      ``W_k + p_k`` and ``W_v + p_v`` (thesis eq. 5.5), computed as
      ``to_k(c) + c @ p_k^T`` so ``to_k`` itself (LoRA or not) is untouched.

    When the store is not recording this step, attention runs through
    ``F.scaled_dot_product_attention`` as in ``AttnProcessor2_0``.
    """

    def __init__(
        self,
        name: str,
        store: AttentionStore | None = None,
        offsets: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.offsets = offsets

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)  # [B, n, c]

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states  # [B, m, c_ctx]
        batch_size, sequence_length, _ = context.shape
        # [B*heads, 1 or n, m] additive mask, or None
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # [B, n, heads*d]
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context)  # [B, m, heads*d]
        value = attn.to_v(context)  # [B, m, heads*d]
        if self.offsets is not None:
            p_k, p_v = self.offsets  # [heads*d, c_ctx] each
            key = key + F.linear(context, p_k.to(context.dtype))
            value = value + F.linear(context, p_v.to(context.dtype))

        heads = attn.heads
        head_dim = key.shape[-1] // heads
        query = query.view(batch_size, -1, heads, head_dim).transpose(1, 2)  # [B, heads, n, d]
        key = key.view(batch_size, -1, heads, head_dim).transpose(1, 2)  # [B, heads, m, d]
        value = value.view(batch_size, -1, heads, head_dim).transpose(1, 2)  # [B, heads, m, d]
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.store is not None and self.store.recording:
            if self.store.values == "logits":
                logits = attention_logits(attn, query.flatten(0, 1), key.flatten(0, 1), attention_mask)  # [B*heads, n, m]
                self.store.add(self.name, logits, heads)
                probs = logits.softmax(dim=-1).to(query.dtype)
            else:
                probs = attn.get_attention_scores(query.flatten(0, 1), key.flatten(0, 1), attention_mask)
                self.store.add(self.name, probs, heads)  # [B*heads, n, m]
            hidden_states = torch.bmm(probs, value.flatten(0, 1))  # [B*heads, n, d]
            hidden_states = hidden_states.view(batch_size, heads, -1, head_dim)  # [B, heads, n, d]
        else:
            if attention_mask is not None:
                attention_mask = attention_mask.view(batch_size, heads, -1, attention_mask.shape[-1])
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, scale=attn.scale
            )  # [B, heads, n, d]
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, heads * head_dim)  # [B, n, heads*d]
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
