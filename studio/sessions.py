"""Serving many people at once: which events may run side by side, per-user state with a time to live and a
memory bound, and temporary files that are deleted.

* **Cheap** events (scrubbing a slider, switching a heatmap, previews, overlay toggles, loading an example)
  run with no concurrency limit, so they never wait behind anyone's generation.
* **Heavy** events (anything that runs a diffusion model) share one pool, ``concurrency_id="models"``: the
  models and their attention hooks are shared by every user, so at most ``WORLDSTUDIO_HEAVY_CONCURRENCY``
  (default 1) run at a time and the rest wait in the queue, shown their position.
* **Scene** events (fitting or reading a 4D scene, no shared model) have their own small pool.
* **Memory**: what one person holds is bounded by ``WORLDSTUDIO_SESSION_MB`` (default 512): a Match session that
  grows past it is cleared with a warning (:func:`check_session_size`), a scene opened in Morpho4D that alone
  is over it is refused before it replaces the one held (:func:`require_within_bound`). Mojito's keyframes and
  FlexEControl's last result are bounded by the tabs' own input limits (16 keyframes an object, checked images).
* **Stop** buttons stop the run on the server, not only in the browser: a long handler wrapped by
  :func:`stoppable` registers a :class:`~pipelines.stopping.Stop` for this person and kind of run, its progress
  callback checks it at every step, and the button wired by :func:`wire_stop` sets it (Gradio's own
  ``cancels=`` only drops the browser's wait; the worker thread would run on, holding the shared models).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from pipelines.errors import InvalidInputError
from pipelines.stopping import Stop, stopping

logger = logging.getLogger("worldstudio.studio")

HEAVY = {"concurrency_id": "models",
         "concurrency_limit": int(os.environ.get("WORLDSTUDIO_HEAVY_CONCURRENCY", "1"))}
SCENES = {"concurrency_id": "scenes", "concurrency_limit": 2}
CHEAP = {"concurrency_limit": None}
# How long a person's state (scene, scores, keyframes) is kept after its last change, in seconds.
SESSION_TTL = float(os.environ.get("WORLDSTUDIO_SESSION_TTL", str(2 * 3600)))
# The most one person's state may hold (arrays and tensors), in bytes.
MAX_SESSION_BYTES = int(float(os.environ.get("WORLDSTUDIO_SESSION_MB", "512")) * 2**20)
# Output files older than this are deleted (Gradio's own cache copies follow Blocks(delete_cache=...)).
SCRATCH_TTL = float(os.environ.get("WORLDSTUDIO_SCRATCH_TTL", str(2 * 3600)))
SCRATCH_ROOT = Path(tempfile.gettempdir()) / "worldstudio"
_last_sweep = [0.0]


class SessionTooLargeError(InvalidInputError):
    """What a person asked to hold is over the per-session memory bound (``WORLDSTUDIO_SESSION_MB``)."""


def session_state() -> gr.State:
    """A per-user ``gr.State`` that Gradio deletes ``SESSION_TTL`` seconds after its last change."""
    return gr.State(None, time_to_live=SESSION_TTL, delete_callback=_released)


def _released(value) -> None:
    logger.info("session state released (%s, %.1f MB)", type(value).__name__, state_bytes(value) / 2**20)


def state_bytes(value, depth: int = 0, seen: set | None = None) -> int:
    """Bytes held by arrays and tensors inside ``value`` (dataclasses, dicts, lists, objects' attributes)."""
    seen = set() if seen is None else seen
    if value is None or depth > 8 or id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # a torch tensor
        return int(value.element_size() * value.nelement())
    if isinstance(value, (str, bytes, int, float, bool)):
        return 0
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, (list, tuple, set)):
        items = value
    elif is_dataclass(value):
        items = [getattr(value, f.name, None) for f in fields(value)]
    elif hasattr(value, "__dict__"):
        items = vars(value).values()
    else:
        return 0
    return sum(state_bytes(item, depth + 1, seen) for item in items)


def check_session_size(value, what: str = "this session"):
    """``value`` if it holds under ``MAX_SESSION_BYTES``; else None (the state is dropped) and a warning."""
    size = state_bytes(value)
    if size <= MAX_SESSION_BYTES:
        return value
    logger.warning("session state over its bound (%.0f MB > %.0f MB); dropped", size / 2**20, MAX_SESSION_BYTES / 2**20)
    gr.Warning(f"{what[:1].upper() + what[1:]} grew to {size / 2**20:.0f} MB, over the {MAX_SESSION_BYTES / 2**20:.0f} MB a "
               "person may hold; it was cleared. Start again from an example.")
    return None


def require_within_bound(value, what: str) -> None:
    """Refuse ``value`` (something a person is about to hold, e.g. an opened scene) when it alone is over
    ``MAX_SESSION_BYTES``: a :class:`SessionTooLargeError` in words, before it replaces what they hold."""
    size = state_bytes(value)
    if size > MAX_SESSION_BYTES:
        raise SessionTooLargeError(f"{what} needs {size / 2**20:.0f} MB, over the {MAX_SESSION_BYTES / 2**20:.0f} MB "
                                   "one person may hold here; open a smaller one (fewer Gaussians or frames).")


def scratch_dir(prefix: str) -> Path:
    """A fresh private folder for output files; folders older than ``SCRATCH_TTL`` are deleted on the way."""
    SCRATCH_ROOT.mkdir(parents=True, exist_ok=True)
    sweep_scratch()
    return Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH_ROOT))


def sweep_scratch(now: float | None = None, ttl: float | None = None) -> int:
    """Delete output folders older than ``ttl`` seconds (at most once a minute unless ``now`` is given);
    returns how many were deleted."""
    now = time.time() if now is None else now
    if now - _last_sweep[0] < 60 and ttl is None:
        return 0
    _last_sweep[0] = now
    ttl = SCRATCH_TTL if ttl is None else ttl
    deleted = 0
    for folder in SCRATCH_ROOT.glob("*"):
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > ttl:
                shutil.rmtree(folder, ignore_errors=True)
                deleted += 1
        except OSError:
            continue
    return deleted


class StopRegistry:
    """The stoppable runs going on, by (session, kind): what a Stop button stops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], list[Stop]] = {}

    @contextmanager
    def running(self, session: str | None, kind: str):
        """Register a run of ``kind`` for ``session`` while the block runs; yields its :class:`Stop`."""
        key, stop = (session or "", kind), Stop()
        with self._lock:
            self._running.setdefault(key, []).append(stop)
        try:
            yield stop
        finally:
            with self._lock:
                self._running[key].remove(stop)
                if not self._running[key]:
                    del self._running[key]

    def stop(self, session: str | None, kind: str) -> int:
        """Ask every run of ``kind`` of ``session`` to stop; returns how many were running."""
        with self._lock:
            stops = list(self._running.get((session or "", kind), []))
        for stop in stops:
            stop.set()
        return len(stops)


STOPS = StopRegistry()


def stoppable(handler, kind: str):
    """``handler`` (one with a ``progress`` parameter: ``gr.Progress()`` for a bar, or None) as a run that its
    ``kind``'s Stop button stops at the next progress report. Gradio gives the wrapper the person's request (their
    session) as its first argument; a direct call may pass ``request=`` or nothing."""
    signature = inspect.signature(handler)
    at = list(signature.parameters).index("progress")

    def wrapped(*args, **kwargs):
        request = kwargs.pop("request", None)
        if args and isinstance(args[0], gr.Request):
            request, *args = args
        args = list(args)
        with STOPS.running(getattr(request, "session_hash", None), kind) as stop:
            if len(args) > at:
                args[at] = stopping(args[at], stop)
            else:
                kwargs["progress"] = stopping(kwargs.get("progress", signature.parameters["progress"].default), stop)
            return handler(*args, **kwargs)

    request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
    wrapped.__signature__ = signature.replace(parameters=[request, *signature.parameters.values()])
    wrapped.__annotations__ = {"request": gr.Request}  # how Gradio knows to pass the request
    wrapped.__name__ = getattr(handler, "__name__", "handler")
    return wrapped


def wire_stop(button: gr.Button, kind: str, events: list) -> None:
    """``button`` stops this person's runs of ``kind`` on the server and drops the browser's wait for ``events``."""

    def stop(request: gr.Request) -> None:
        STOPS.stop(request.session_hash, kind)

    button.click(stop, inputs=None, outputs=None, queue=False, api_name=False, cancels=events)
