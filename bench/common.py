"""Helpers for benchmarks: each prints one JSON object per line."""

from __future__ import annotations

import json
import platform
import sys
import time
import weakref
from collections.abc import Iterable
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

from pipelines.utils import set_torch_threads


def emit(bench: str, name: str, value, **fields) -> dict:
    """Print one JSON line ``{"bench", "name", "value", ...}`` and return it."""
    record = {"bench": bench, "name": name, "value": value, **fields}
    print(json.dumps(record), flush=True)
    return record


def machine() -> dict:
    """The machine's facts for the first JSON line; also applies ``WORLDSTUDIO_THREADS`` to torch."""
    set_torch_threads()
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "argv": sys.argv[1:]}


@contextmanager
def timer():
    """``with timer() as t: ...`` then ``t()`` is the elapsed seconds."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storage created inside the block and still alive: ``current`` and ``peak``.

    Every op's outputs are counted once per storage (views and in-place results share it) and
    uncounted when the storage is freed, so on a CPU, which has no allocator statistics, this is the
    peak of activations, gradients and optimiser state a training step holds at once. Storages of
    ``existing`` tensors (the models' weights) are never counted, also when an op returns a view of
    them. Deterministic, unlike the process' resident size.

        with LiveTensorBytes([*model.parameters(), *model.buffers()]) as memory:
            train_step()
        memory.peak  # bytes
    """

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._sizes = WeakIdKeyDictionary()
        for tensor in existing:
            self._sizes[tensor.untyped_storage()] = 0
        self.current = 0
        self.peak = 0

    def _freed(self, nbytes: int) -> None:
        self.current -= nbytes

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage in self._sizes:
            return
        nbytes = storage.nbytes()
        self._sizes[storage] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._freed, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._count, out)
        return out
