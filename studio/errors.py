"""Turn WorldStudio's typed errors into messages a person reads in the UI."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from pipelines.errors import WorldStudioError

logger = logging.getLogger("worldstudio.studio")


def shows_errors(handler):
    """Decorate a Gradio handler: a :class:`WorldStudioError` becomes a ``gr.Error`` with its message.

    Anything else is logged with its traceback and reported as an internal
    error, so no input can take the server down.
    """

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except WorldStudioError as error:
            raise gr.Error(str(error), duration=None) from error
        except Exception as error:  # the server keeps running; the log keeps the traceback
            logger.exception("handler %s failed", handler.__name__)
            raise gr.Error(f"Internal error ({type(error).__name__}): {error}", duration=None) from error

    return wrapped
