"""Stopping a long run from outside it (the studio's Stop buttons).

A :class:`Stop` is a flag that one side sets and a run checks between its steps. Runners take a ``progress``
callback and call it at every step (a denoising step, a benchmark group, a prompt-learning step, a fitting step);
a caller that wants a run stoppable gives :func:`stopping` ``(progress, stop)`` instead, which raises
:class:`~pipelines.errors.RunStopped` at the first step after the flag is set. The run then ends within one step,
through the same ``finally`` blocks as any error (attention hooks removed, a Morpho4D scene restored), and keeps
nothing it half made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import RunStopped


class Stop:
    """A flag a run checks at each step (module docstring)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`RunStopped` when the stop was asked for."""
        if self._event.is_set():
            raise RunStopped("Stopped: the run was cancelled before it finished; nothing was changed.")


def stopping(progress: Callable | None, stop: Stop) -> Callable:
    """``progress`` (or nothing) that first raises :class:`RunStopped` when ``stop`` is set."""

    def report(*args, **kwargs):
        stop.check()
        if progress is not None:
            return progress(*args, **kwargs)
        return None

    return report
