"""Encode frames as a video that plays in browsers, through an ``ffmpeg`` subprocess.

OpenCV's ``mp4v`` files do not play in Chromium (FACTS.md), so WorldStudio writes either H.264 in an
MP4 (``libx264``, ``yuv420p``, ``+faststart`` so playback starts before the whole file arrives) or VP9
in a WebM (``libvpx-vp9``). yuv420p needs even sides: odd frames are padded by one pixel, repeating
the edge. ``ffmpeg`` comes from the system (Debian's package; ``make system-deps`` installs it) or the
``WORLDSTUDIO_FFMPEG`` variable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .errors import InvalidInputError, WorldStudioError

CODECS: dict[str, dict] = {
    "h264": {"suffix": ".mp4", "args": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                                         "-pix_fmt", "yuv420p", "-movflags", "+faststart"]},
    "vp9": {"suffix": ".webm", "args": ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "32", "-deadline", "realtime",
                                         "-cpu-used", "8", "-pix_fmt", "yuv420p"]},
}
MAX_FRAMES = 2000
# Seconds an encode may take before it is abandoned.
TIMEOUT_S = 300


class VideoEncodingError(WorldStudioError, RuntimeError):
    """ffmpeg is missing or failed to encode."""


def ffmpeg_path() -> str:
    """The ffmpeg executable (``WORLDSTUDIO_FFMPEG`` or the one on PATH); raises if there is none."""
    path = os.environ.get("WORLDSTUDIO_FFMPEG") or shutil.which("ffmpeg")
    if not path:
        raise VideoEncodingError("ffmpeg was not found; install it (Debian: apt-get install ffmpeg, or `make system-deps`).")
    return path


def _even_frames(frames) -> np.ndarray:
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] < 1:
        raise InvalidInputError(f"Frames must be an array [T, H, W, 3], got shape {array.shape}.")
    if array.shape[0] > MAX_FRAMES:
        raise InvalidInputError(f"At most {MAX_FRAMES} frames can be encoded, got {array.shape[0]}.")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array * 255.0 if array.max(initial=0) <= 1.0 else array), 0, 255).astype(np.uint8)
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(array)


def encode_video(frames, path, fps: float = 8.0, codec: str = "h264") -> Path:
    """Write ``frames`` (uint8 or float in [0, 1], ``[T, H, W, 3]``) to ``path`` as H.264 MP4 or VP9 WebM.

    The suffix of ``path`` is replaced by the codec's (``.mp4`` / ``.webm``). Returns the path written.
    """
    if codec not in CODECS:
        raise InvalidInputError(f"Unknown video codec {codec!r}; expected one of {tuple(CODECS)}.")
    if not 0.1 <= float(fps) <= 120:
        raise InvalidInputError(f"Frames per second must be in [0.1, 120], got {fps!r}.")
    video = _even_frames(frames)
    path = Path(path).with_suffix(CODECS[codec]["suffix"])
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = video.shape[1:3]
    command = [
        ffmpeg_path(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{width}x{height}", "-r", f"{float(fps):g}", "-i", "-", "-an", *CODECS[codec]["args"], str(path),
    ]
    try:
        result = subprocess.run(command, input=video.tobytes(), capture_output=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise VideoEncodingError(f"ffmpeg took longer than {TIMEOUT_S} s to encode {len(video)} frames.") from None
    if result.returncode != 0 or not path.is_file() or path.stat().st_size == 0:
        message = result.stderr.decode("utf-8", "replace").strip()[-500:]
        raise VideoEncodingError(f"ffmpeg failed to encode {path.name} ({codec}): {message or 'no output'}")
    return path
