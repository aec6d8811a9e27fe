"""Pure functions on recorded cross-attention maps: LSE pooling and per-token heatmaps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .store import AttentionStore, LayerSelector, layer_predicate


def lse_pool(attention: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """LogSumExp pooling of a cross-attention map, thesis eq. 5.4.

    ``f(A) = 1/n sum_i 1/lam log sum_j exp(lam A_ij)`` for ``A`` of shape
    ``[..., n, m]`` (n image positions, m text tokens): a smooth maximum over
    tokens for each position, averaged over positions. As ``lam`` grows it
    tends to the mean of the row maxima. Returns ``[...]``.
    """
    if attention.ndim < 2:
        raise InvalidInputError(f"lse_pool needs a [..., n, m] map, got shape {list(attention.shape)}.")
    if not (math.isfinite(lam) and lam > 0):
        raise InvalidInputError(f"lam must be a positive finite number, got {lam!r}.")
    row = torch.logsumexp(lam * attention, dim=-1) / lam  # [..., n]
    return row.mean(dim=-1)


def heatmap_size(height: int, width: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """Output ``(h, w)`` for a heatmap of a ``height x width`` latent.

    ``None`` keeps the latent size; an int is the long side, the short side
    follows the latent's aspect ratio; a tuple is used as given.
    """
    if size is None:
        return height, width
    if isinstance(size, int):
        if size < 1:
            raise InvalidInputError(f"size must be positive, got {size}.")
        scale = size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    if len(size) != 2 or min(size) < 1:
        raise InvalidInputError(f"size must be an int or (height, width), got {size!r}.")
    return int(size[0]), int(size[1])


def average_resized(maps, size: tuple[int, int]) -> torch.Tensor:
    """The mean of maps ``[..., h_k, w_k]`` (layers and steps of different resolutions), each bilinearly resized
    to ``size``: the one heatmap aggregation every caller uses (:func:`aggregate_maps`, Discffusion's per-word
    heatmaps, Mojito's phrase maps). Returns ``[..., *size]``."""
    total, count = None, 0
    for item in maps:
        lead = item.shape[:-2]
        flat = item.reshape(-1, 1, *item.shape[-2:]).float()
        resized = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False).reshape(*lead, *size)
        total = resized if total is None else total + resized
        count += 1
    if total is None:
        raise InvalidInputError("No maps to average.")
    return total / count


def aggregate_maps(
    store: AttentionStore,
    token_ids: Sequence[int],
    *,
    layers: LayerSelector = None,
    steps: Sequence[int] | None = None,
    batch_index: int = 0,
    size: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Per-token heatmap: attention mass on ``token_ids``, averaged over heads, layers and steps.

    For every selected recorded step (``steps`` indexes ``store.records``,
    default all) and layer, the probabilities of the tokens (the softmax of a
    ``values="logits"`` store) are summed (the
    mass a position gives to a word or phrase), averaged over heads,
    bilinearly resized to a common size (see :func:`heatmap_size`; the default
    is the latent size, so the image's aspect ratio is kept) and averaged.
    Returns ``[h, w]`` for an image UNet and ``[F, h, w]`` for a video UNet.
    The graph is kept when the store is differentiable.
    """
    if not token_ids:
        raise InvalidInputError("token_ids is empty.")
    wanted = layer_predicate(layers)
    records = [store.step_maps(i) for i in steps] if steps is not None else store.records
    if not records:
        raise InvalidInputError("Nothing was recorded: run the UNet inside CrossAttentionControl first.")
    ids = list(token_ids)
    out_size = heatmap_size(*records[0].latent_shape[-2:], size)
    masses = []
    for record in records:
        for name, maps in record.maps.items():
            if not wanted(name):
                continue
            if not -maps.shape[0] <= batch_index < maps.shape[0]:
                raise InvalidInputError(f"batch_index {batch_index} is out of range for batch {maps.shape[0]}.")
            num_tokens = maps.shape[-1]
            if not all(-num_tokens <= i < num_tokens for i in ids):
                raise InvalidInputError(f"token_ids {ids} out of range for {num_tokens} tokens.")
            chosen = maps[batch_index]  # [(F,) heads, h, w, m]
            if store.values == "logits":
                chosen = chosen.softmax(dim=-1)
            masses.append(chosen[..., ids].sum(dim=-1).mean(dim=-3))  # [(F,) h, w]
    if not masses:
        raise InvalidInputError(f"layers={layers!r} selects none of the recorded layers {store.layer_names}.")
    return average_resized(masses, out_size)  # [h, w] (image) or [F, h, w] (video)
