"""ZeroGPU: ``spaces.GPU(duration=...)`` on a Hugging Face Space, the function unchanged anywhere else.

On a ZeroGPU Space a GPU is lent per call to the functions decorated with ``@spaces.GPU`` (the ``spaces``
package comes with such Spaces). :func:`gpu` puts that decorator on the runners' GPU-bound calls when the
process runs on a Space (``SPACE_ID`` is set) and ``spaces`` imports; on a laptop, a GPU machine or in Docker
it returns the function as it is. It decides once, when the runner modules are imported.

A decorated call runs in a process of its own on ZeroGPU and only its return value comes back, so it is put
on calls that return a report (Match, FlexEControl, Mojito), not on ones that change an object in place; and
``app.py`` loads the preset's models at start-up there (:func:`on_zero_gpu`), as ZeroGPU expects.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable, TypeVar

Function = TypeVar("Function", bound=Callable)

# Seconds of GPU a call may hold (ZeroGPU's default is 60; longer calls wait longer for a GPU).
DURATIONS: dict[str, int] = {
    "match": 60,  # scoring a few captions, or one image
    "match-batch": 300,  # prompt learning or a batch evaluation
    "flexecontrol": 60,  # one image
    "mojito": 180,  # a guided video, and optionally the unguided one
}


def on_space() -> bool:
    """Whether this process runs on a Hugging Face Space."""
    return bool(os.environ.get("SPACE_ID"))


def on_zero_gpu() -> bool:
    """Whether this Space lends GPUs per call (ZeroGPU sets ``SPACES_ZERO_GPU``): models must then be loaded
    at start-up, outside the decorated calls, or each call would load them again in its own process."""
    return on_space() and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def gpu(kind: str) -> Callable[[Function], Function]:
    """Decorator: ``spaces.GPU(duration=DURATIONS[kind])`` on a Space with ``spaces``, identity elsewhere."""
    duration = DURATIONS[kind]

    def decorate(function: Function) -> Function:
        if not on_space():
            return function
        try:
            spaces = importlib.import_module("spaces")
        except ImportError:
            return function
        return spaces.GPU(duration=duration)(function)

    return decorate
