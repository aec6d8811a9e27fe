"""Input components that answer a bad value with one sentence naming the field, never with Gradio's own error.

Gradio reads every input before a handler runs; a corrupt upload or an out-of-range number failed there with
"Could not preprocess input component at index 1 ... UnidentifiedImageError" and a server path. These
subclasses check the value where it is typed or uploaded (before any long run) and raise a ``gr.Error`` in
words. ``is_template`` makes the browser draw them as the Gradio component they extend.
"""

from __future__ import annotations

import logging

import gradio as gr

from pipelines.errors import InvalidInputError

from .errors import user_message

logger = logging.getLogger("worldstudio.studio")

IMAGE_TYPES = "PNG, JPEG, WebP, BMP or GIF"


def _label(component) -> str:
    return str(getattr(component, "label", None) or "This field")


def _number(value) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return repr(value)


def user_error(message: str) -> gr.Error:
    """A message for a person's mistake: shown once, logged as one line (no traceback)."""
    return user_message(InvalidInputError(message))


class _RangeChecked:
    """Numbers outside [minimum, maximum] are refused naming the field and its range."""

    is_template = True

    def preprocess(self, payload):
        if payload is not None and not isinstance(payload, (int, float)):
            try:
                payload = float(payload)
            except (TypeError, ValueError):
                raise user_error(f"{_label(self)}: {payload!r} is not a number.") from None
        low, high = self.minimum, self.maximum
        if payload is not None and ((low is not None and payload < low) or (high is not None and payload > high)):
            bounds = (f"from {_number(low)} to {_number(high)}" if low is not None and high is not None
                      else f"at least {_number(low)}" if low is not None else f"at most {_number(high)}")
            raise user_error(f"{_label(self)} must be {bounds}; {_number(payload)} is out of range.")
        try:
            return super().preprocess(payload)
        except gr.Error as error:
            raise user_error(f"{_label(self)}: {error.message}") from None

from gradio.events import Dependency

class Number(_RangeChecked, gr.Number):
    """``gr.Number`` that names itself and its range when a value is out of bounds."""
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class Slider(_RangeChecked, gr.Slider):
    """``gr.Slider`` that names itself and its range when a value (e.g. from the API) is out of bounds."""
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def _check_side(component, value, min_side: int):
    """Refuse an image (array or path) with a side under ``min_side`` pixels."""
    if value is None or not min_side:
        return value
    if isinstance(value, str):
        from PIL import Image as PILImage

        with PILImage.open(value) as opened:
            width, height = opened.size
    elif isinstance(value, dict):  # ImageEditor: the composite is what the handlers read
        composite = value.get("composite")
        if composite is None or not hasattr(composite, "shape"):
            return value
        height, width = composite.shape[:2]
    else:
        height, width = getattr(value, "shape", (min_side, min_side))[:2]
    if min(width, height) < min_side:
        raise user_error(f"{_label(component)}: the image is {width}x{height} pixels; give one at least "
                         f"{min_side} pixels on each side.")
    return value


class _ImageChecked:
    """Uploads that are not images (corrupt, wrong type) or are too small are refused in words."""

    is_template = True

    def __init__(self, *args, min_side: int = 0, **kwargs):
        self.min_side = min_side
        super().__init__(*args, **kwargs)

    def preprocess(self, payload):
        try:
            value = super().preprocess(payload)
        except gr.Error as error:
            raise user_error(f"{_label(self)}: {error.message}") from None
        except Exception as error:  # PIL's UnidentifiedImageError, a truncated file, a wrong type
            logger.warning("unreadable upload for %s: %s", _label(self), type(error).__name__)
            raise user_error(f"{_label(self)}: the file is not an image this studio can read; upload a "
                             f"{IMAGE_TYPES} picture.") from None
        return _check_side(self, value, self.min_side)


class Image(_ImageChecked, gr.Image):
    """``gr.Image`` that refuses unreadable or tiny uploads in words."""
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class ImageEditor(_ImageChecked, gr.ImageEditor):
    """``gr.ImageEditor`` that refuses unreadable or tiny uploads in words."""
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


class File(_Drawn, gr.File):
    """``gr.File`` that refuses files of the wrong type (by suffix) in words, also when sent through the API."""

    def preprocess(self, payload):
        allowed = [t.lower() for t in (self.file_types or []) if t.startswith(".")]
        given = [] if payload is None else list(payload.root) if hasattr(payload, "root") else [payload]
        for item in given:
            name = str(getattr(item, "orig_name", None) or getattr(item, "path", "") or "").lower()
            name = name.replace("\\", "/").rsplit("/", 1)[-1]
            if allowed and not any(name.endswith(suffix) for suffix in allowed):
                kind = name.rsplit(".", 1)[-1].upper() if "." in name else "Files without a suffix"
                raise user_error(f"{_label(self)}: {kind + ' files' if '.' in name else kind} are not accepted "
                                 f"here; give {' or '.join(allowed)}.")
        try:
            return super().preprocess(payload)
        except gr.Error as error:
            raise user_error(f"{_label(self)}: {error.message}") from None
        except Exception as error:
            logger.warning("unreadable upload for %s: %s", _label(self), type(error).__name__)
            raise user_error(f"{_label(self)}: the file could not be read.") from None
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component
class CheckedImage(_ImageChecked, gr.Image):
    """``gr.Image`` that refuses unreadable or tiny uploads in words."""
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    
class CheckedImageEditor(_ImageChecked, gr.ImageEditor):
    """``gr.ImageEditor`` that refuses unreadable or tiny uploads in words."""
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    