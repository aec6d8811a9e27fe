"""Video files of a generation: H.264/VP9 that play in Chromium (``pipelines.video_io``), GIF, box overlays."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import InvalidInputError
from ..video_io import encode_video
from .trajectory import to_pixels

# One colour per object (RGB), cycled; the tab uses the same order.
OBJECT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 40, 40), (40, 120, 255), (20, 200, 80), (255, 170, 0), (190, 60, 255),
)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``[T, H, W, 3]`` (tiny 64x64 videos are hard to see at their size)."""
    if factor < 1:
        raise InvalidInputError(f"The upscaling factor must be >= 1, got {factor!r}.")
    return np.repeat(np.repeat(frames, factor, axis=1), factor, axis=2) if factor > 1 else frames


def overlay_boxes(frames: np.ndarray, boxes: dict[str, np.ndarray], scale: int = 1,
                  detected: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Frames (upscaled by ``scale``) with each phrase's target box drawn per frame; detections dashed-thin.

    ``boxes`` and ``detected`` map phrases to ``[T, 4]`` fractions (rows of NaN are skipped).
    """
    video = np.ascontiguousarray(upscale(np.asarray(frames, dtype=np.uint8), scale))
    height, width = video.shape[1:3]
    for k, (phrase, per_frame) in enumerate(boxes.items()):
        colour = OBJECT_COLOURS[k % len(OBJECT_COLOURS)]
        found = None if detected is None else detected.get(phrase)
        for t in range(len(video)):
            x0, y0, x1, y1 = (int(round(v)) for v in to_pixels(per_frame[t], width, height))
            cv2.rectangle(video[t], (x0, y0), (x1 - 1, y1 - 1), colour, max(1, scale // 2))
            if found is not None and np.all(np.isfinite(found[t])):
                a0, b0, a1, b1 = (int(round(v)) for v in to_pixels(found[t], width, height))
                cv2.rectangle(video[t], (a0, b0), (a1 - 1, b1 - 1), (255, 255, 255), 1)
    return video


def write_video(frames: np.ndarray, path, fps: float = 8.0, codec: str = "h264") -> Path:
    """``frames`` as a browser-playable video (H.264 MP4 or VP9 WebM)."""
    return encode_video(frames, path, fps=fps, codec=codec)


def write_gif(frames: np.ndarray, path, fps: float = 8.0) -> Path:
    """``frames`` as a looping GIF."""
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or len(frames) < 1:
        raise InvalidInputError(f"Frames must be [T, H, W, 3], got shape {list(frames.shape)}.")
    path = Path(path).with_suffix(".gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path
