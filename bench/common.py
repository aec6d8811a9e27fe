"""Helpers for benchmarks: each prints one JSON object per line."""

from __future__ import annotations

import json
import platform
import sys
import time
from contextlib import contextmanager

import torch

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
