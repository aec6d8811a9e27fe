"""Turn WorldStudio's typed errors into messages a person reads in the UI."""

from __future__ import annotations

import functools
import inspect
import logging
import re

import gradio as gr

from pipelines.errors import RunStopped, WorldStudioError

logger = logging.getLogger("worldstudio.studio")

# Absolute paths (POSIX or Windows) that must never reach a person.
_PATH = re.compile(r"(?:[A-Za-z]:\\|/)(?:[\w.\-]+[\\/])+[\w.\-]*")


def plain(message: str) -> str:
    """``message`` with any file-system path replaced by its file name."""
    return _PATH.sub(lambda match: re.split(r"[\\/]", match.group(0))[-1] or "a file", str(message))


def user_message(error: WorldStudioError) -> gr.Error:
    """A person's mistake (or a run they stopped) as one toast (shown until closed) and one log line, never a
    traceback."""
    message = plain(str(error))
    if isinstance(error, RunStopped):
        logger.warning("run stopped on request")
    else:
        logger.warning("user input refused: %s", message)
    return gr.Error(message, duration=None, print_exception=False)


def shows_errors(handler):
    """Decorate a Gradio handler: a :class:`WorldStudioError` becomes a ``gr.Error`` with its message.

    Anything else is logged once with its traceback and reported in words without internals, so no input
    can take the server down and no path or traceback reaches a person.
    """

    def translate(error: Exception):
        if isinstance(error, gr.Error):
            return error
        if isinstance(error, WorldStudioError):
            return user_message(error)
        logger.exception("handler %s failed", getattr(handler, "__name__", "handler"))
        return gr.Error(f"Something went wrong inside the studio ({type(error).__name__}); nothing was changed. "
                        "Try again, or with other settings.", duration=None, print_exception=False)

    if inspect.isgeneratorfunction(getattr(handler, "func", handler)):
        @functools.wraps(handler)
        def wrapped_generator(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except Exception as error:
                raise translate(error) from error

        return wrapped_generator

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as error:
            raise translate(error) from error

    return wrapped
