"""Typed exceptions shared by every pipeline.

The studio turns any :class:`WorldStudioError` into a message for the user; the
command lines print it without a traceback. Anything else is a bug.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class WorldStudioError(Exception):
    """Base class of every error WorldStudio raises on purpose."""


class InvalidInputError(WorldStudioError, ValueError):
    """An argument from a user or caller is out of range, malformed or empty."""


class ModelNotFoundError(WorldStudioError, FileNotFoundError):
    """A preset's weights are not on disk or in the Hugging Face cache."""


class UnknownPresetError(WorldStudioError, KeyError):
    """A preset name that the registry does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class RunStopped(WorldStudioError):
    """A long run was stopped on request (a Stop button) at one of its steps (:mod:`pipelines.stopping`)."""


class UnknownWordsWarning(UserWarning):
    """A prompt has words the model's tokenizer does not know (the tiny pack's closed vocabulary)."""


def exits_on_error(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command line's ``main``: a :class:`WorldStudioError` prints ``error: ...`` and returns status 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except WorldStudioError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapped
