"""Shared Kronecker x low-rank weight updates, thesis eq. 9.2, and the PHM baseline.

FlexEControl adapts a frozen weight ``W`` (``k x d``) by

    delta W = sum_{i=1..n} H_i kron (u_i v_i^T),    H_i: n x n,  u_i: k/n x r,  v_i^T: r x d/n   (eq. 9.2)

The ``H_i`` are the "slow" weights shared by every condition type (thesis
9.2.2: "a set of condition-shared decomposed weights in each layer"); each
condition type has its own "fast" low-rank pair ``u_i, v_i``. A layer with
``T`` condition types therefore trains ``n^3 + T * r * (k + d)`` numbers
(:func:`kron_lowrank_parameter_count`). ``v`` starts at zero, so delta W = 0
and the adapted layer is the frozen layer at initialisation.

Why not PEFT's LoKr (peft 0.21.0, ``peft.tuners.lokr``): a LoKr layer owns its
factors ``w1, w2`` per adapter name in its own ``ParameterDict``s, computes a
single Kronecker product ``w1 kron w2`` (not a sum of ``n`` of them) and
activates whole adapters, so one adapter per condition type would give each
type its own ``w1``; nothing in its API shares a factor between adapters, and
tying parameters by hand would break its save/merge paths. So the layer is
written here, on plain ``nn.Linear`` / ``nn.Conv2d`` weights.

:class:`PHMAdaptedLayer` is the Kronecker-only baseline (Zhang et al. 2021,
the thesis' [546]): ``delta W = sum_i A_i kron S_i`` with the ``A_i`` shared
by all layers and full ``S_i`` per layer, the same for every condition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError


def kron_sum(hub: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """``sum_i hub[i] kron blocks[i]``: hub ``[n, n, n]``, blocks ``[n, p, q]`` -> ``[n*p, n*q]``."""
    n, _, _ = hub.shape
    _, p, q = blocks.shape
    return torch.einsum("iab,ipq->apbq", hub, blocks).reshape(n * p, n * q)


def weight_matrix_shape(layer: nn.Module) -> tuple[int, int]:
    """``(k, d)`` of the matrix an adapter updates: a linear weight, or a conv weight as ``out x in*kh*kw``."""
    if isinstance(layer, nn.Linear):
        return layer.out_features, layer.in_features
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise InvalidInputError(f"Grouped convolutions are not adapted (groups={layer.groups}).")
        kh, kw = layer.kernel_size
        return layer.out_channels, layer.in_channels * kh * kw
    raise InvalidInputError(f"Only nn.Linear and nn.Conv2d are adapted, got {type(layer).__name__}.")


def fits(layer: nn.Module, n: int) -> bool:
    """Whether ``layer``'s weight matrix splits into ``n x n`` blocks."""
    if not isinstance(layer, (nn.Linear, nn.Conv2d)) or getattr(layer, "groups", 1) != 1:
        return False
    k, d = weight_matrix_shape(layer)
    return k % n == 0 and d % n == 0


def kron_lowrank_parameter_count(k: int, d: int, n: int, rank: int, num_types: int) -> int:
    """Trainable numbers of one adapted ``k x d`` weight: ``n^3`` shared + ``T * r * (k + d)`` per type."""
    return n**3 + num_types * rank * (k + d)


class _DeltaLayer(nn.Module):
    """A frozen linear/conv layer plus ``delta_weight()``; the output is ``base(x) + x * delta``."""

    def __init__(self, base: nn.Module, n: int) -> None:
        super().__init__()
        if not fits(base, n):
            raise InvalidInputError(f"A {tuple(base.weight.shape)} weight does not split into {n}x{n} blocks.")
        self.base = base
        self.n = n
        self.k, self.d = weight_matrix_shape(base)
        base.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:  # [k, d]
        raise NotImplementedError

    def _apply_delta(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if isinstance(self.base, nn.Linear):
            return F.linear(x, delta)
        conv = self.base
        return F.conv2d(x, delta.view_as(conv.weight), None, conv.stride, conv.padding, conv.dilation)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.base(x, *args, **kwargs) + self._apply_delta(x, self.delta_weight().to(x.dtype))


class KroneckerLowRankLayer(_DeltaLayer):
    """``base(x) + x (sum_i H_i kron u_i v_i^T)`` for the active condition type, thesis eq. 9.2.

    ``hub`` (the ``H_i``, ``[n, n, n]``) is one tensor for every condition
    type; ``u[type]`` (``[n, k/n, r]``) and ``v[type]`` (``[n, r, d/n]``) are per
    type. :func:`set_condition_type` chooses the type before a forward.
    """

    def __init__(self, base: nn.Module, n: int, rank: int, condition_types: Sequence[str]) -> None:
        super().__init__(base, n)
        if rank < 1:
            raise InvalidInputError(f"rank must be >= 1, got {rank}.")
        if not condition_types:
            raise InvalidInputError("At least one condition type is needed.")
        self.rank = rank
        self.condition_types = tuple(condition_types)
        self.active: str | list[str] | None = None
        # Slow weights, shared across condition types: random so every H_i gets a gradient.
        self.hub = nn.Parameter(torch.randn(n, n, n) / math.sqrt(n))
        # Fast low-rank weights per type; v = 0 makes delta W = 0 at initialisation.
        self.u = nn.ParameterDict(
            {t: nn.Parameter(torch.randn(n, self.k // n, rank) / math.sqrt(self.d)) for t in self.condition_types}
        )
        self.v = nn.ParameterDict({t: nn.Parameter(torch.zeros(n, rank, self.d // n)) for t in self.condition_types})

    def delta_weight(self, condition_type: str | None = None) -> torch.Tensor:
        kind = condition_type or self.active
        if not isinstance(kind, str):
            raise InvalidInputError("No single condition type is active on a FlexEControl layer; call set_condition_type.")
        if kind not in self.u:
            raise InvalidInputError(f"Unknown condition type {kind!r}; this adapter knows {list(self.condition_types)}.")
        return kron_sum(self.hub, self.u[kind] @ self.v[kind])  # [k, d]

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """With several active types, the batch is that many equal chunks, chunk ``j`` adapted for type ``j``."""
        if isinstance(self.active, str) or self.active is None:
            return super().forward(x, *args, **kwargs)
        out = self.base(x, *args, **kwargs)
        chunks = x.chunk(len(self.active))
        deltas = [self._apply_delta(chunk, self.delta_weight(kind).to(x.dtype)) for chunk, kind in zip(chunks, self.active)]
        return out + torch.cat(deltas)


class PHMAdaptedLayer(_DeltaLayer):
    """Kronecker-only baseline: ``delta W = sum_i A_i kron S_i`` with ``A`` shared across layers, ``S = 0`` at init."""

    def __init__(self, base: nn.Module, shared: nn.Parameter) -> None:
        super().__init__(base, shared.shape[0])
        n = self.n
        self.shared = [shared]  # a list, so the shared tensor is registered once, by its owner
        self.blocks = nn.Parameter(torch.zeros(n, self.k // n, self.d // n))

    def delta_weight(self) -> torch.Tensor:
        return kron_sum(self.shared[0], self.blocks)


def replace_layers(model: nn.Module, names: Sequence[str], make) -> dict[str, nn.Module]:
    """Replace each submodule ``names[j]`` of ``model`` by ``make(name, module)``; return the new layers by name."""
    new = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new[name] = make(name, parent.get_submodule(child))
        setattr(parent, child, new[name])  # also replaces ModuleList items, whose names are digits
    return new


def set_condition_type(model: nn.Module, condition_type: str | Sequence[str] | None) -> None:
    """Make ``condition_type``'s fast weights active in every :class:`KroneckerLowRankLayer` of ``model``.

    A list of types means the batch is that many equal chunks, one per type.
    """
    if condition_type is not None and not isinstance(condition_type, str):
        condition_type = list(condition_type)
    for module in model.modules():
        if isinstance(module, KroneckerLowRankLayer):
            module.active = condition_type
