"""Learned per-pixel features from a CLIP image encoder and queries from its paired text encoder
(thesis eq. 11.12: ``F^s = E^s(I)``; compared with queries by eq. 11.13-11.14).

**Per-pixel features (colour-gated window embeddings).** For a frame, a grid of windows (``window`` pixels
wide, every ``stride`` pixels) is cut out; each window keeps only its pixels of about its centre pixel's
colour (``colour_gate``, raw RGB: no detector, no labels), the rest filled with the frame's median colour
(ComCLIP's counterfactual image, thesis ch. 4), and stays in place in a frame-sized image; with ``zoom`` the
window alone is the image, resized to CLIP's input (LERF's crops: the object fills the view; spaces named
``w..s..z``). CLIP's image encoder embeds it. The
grid is brought to every pixel by joint bilateral upsampling: the 4 grid points around a pixel, bilinear
weights times a weight for how close each grid point's centre colour is to the pixel's. A pixel's feature
is "what CLIP sees of the thing this pixel belongs to", in CLIP's joint image-text space.

How it was chosen, measured against ShapesWorld truth masks, which the features never see: on the tiny
pack's ``shapes-clip`` (64x64 images, 8x8 patches) the vision tower's projected patch tokens (the MaskCLIP
reading) classified pixels among the objects' names and a background at 0.30; plain 16-px windows at
stride 4 at 0.96, but a query's pixels (p >= 0.85, CLIP's temperature) had precision 0.47, recall 0.86
(every window near an object looks like it); the colour gate raised that to precision 1.00, recall 0.84
(5 objects of 4 videos, 4 frames each). On generated scenes (the GEN stand-in's frames of 8 prompts, 10
objects, query pixels p >= 0.85) 16-px windows with a gate of 60 had precision 0.998, recall 0.577: a window
centred on an object's rim saw only part of it, and anti-aliased rim pixels fell outside the gate. Windows of
24 px (32: the same) with a gate of 100 give 0.997 / 0.798 (gate 80: 0.686, 125: 0.802 at precision 0.994).
In place, a small object is a few per cent of the image CLIP sees, and its embedding stays close to the plain
background's: on the red ball of "a red ball moves from left to right quickly" the query's pixel recall was
0.22 (median p 0.78). Zoomed windows (24 px, gate 100) give precision 0.995, recall 0.960 on the same 10
objects (16 px: 0.994 / 0.962; the red ball 0.95), so generated scenes use them (``GenConfig``). On ShapesWorld
videos with two objects of one colour, zoomed windows read the inside of a large object as another shape (8
objects of 4 videos: precision 0.961, recall 0.639 against 0.839 / 0.724 in place), so in place stays the
default (docs/notes/morpho4d_issue23.md section 9).

**Queries.** An object name is embedded by CLIP's text encoder (:meth:`ClipFeatureEncoder.encode`). The
background has no caption in ShapesWorld's language, so "background" is embedded by the image encoder: a
frame of the scene's plain background colour, which is part of the feature space's identity
(``clip-windows:<model>:w24s4:bg<rrggbb>``), so a saved scene finds the same encoder again
(:func:`encoder_for_space`). A photo has no plain background colour, and its queries are open-vocabulary
words: there "background" is the text encoder's embedding of the word (``...:bgtext``), so that a query
and its alternatives all come from the text tower; an image embedding of a plain frame would sit on CLIP's
image side of the modality gap, closer to every pixel's (image) feature than any text is, and win
everywhere.

The detector plays no part: features come from the frames and the encoder only.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from ..shapesworld.vocab import vocabulary
from .editing import DEFAULT_THRESHOLDS
from .queries import BACKGROUND, FILLER_WORDS, UnknownQueryError, register_encoder

SPACE_PATTERN = re.compile(
    r"clip-windows:(?P<model>[a-z0-9_.-]+):w(?P<w>\d+)s(?P<s>\d+)(?P<zoom>z?):bg(?P<bg>[0-9a-f]{6}|text)")
# Window side and stride (pixels of a 64-pixel frame; scaled with the frame side).
WINDOW, STRIDE = 24, 4
# Colour gate (sum of absolute RGB differences, 0-765): a window keeps only the pixels this close to its
# centre pixel's colour, and a pixel takes features from grid points of its own colour (module docstring).
COLOUR_GATE = 100.0


class ClipFeatureEncoder:
    """A CLIP model as the 2D encoder of eq. 11.12 and the query encoder of eq. 11.14 (module docstring)."""

    def __init__(self, clip, model_name: str = "shapes-clip", background: Sequence[float] | None = (0.5, 0.5, 0.5),
                 window: int = WINDOW, stride: int = STRIDE, colour_gate: float | None = COLOUR_GATE,
                 zoom: bool = False) -> None:
        """``background``: the scene's plain background colour (RGB in [0, 1]), or None for the word
        "background" embedded by the text encoder (photos; module docstring, "Queries"). ``zoom``: embed each
        window resized to CLIP's input rather than in place in the frame (module docstring)."""
        if not 1 <= stride <= window:
            raise InvalidInputError(f"The stride must be in [1, window], got window {window}, stride {stride}.")
        self.clip = clip  # a pipelines.matching.ClipMatcher (model + processor)
        self.model_name, self.window, self.stride = model_name, int(window), int(stride)
        self.colour_gate = None if colour_gate is None else float(colour_gate)
        self.zoom = bool(zoom)
        self.background = None if background is None else tuple(float(min(max(c, 0.0), 1.0)) for c in background)
        tag = "text" if self.background is None else "".join(f"{int(round(c * 255)):02x}" for c in self.background)
        self.space = f"clip-windows:{model_name}:w{self.window}s{self.stride}{'z' if self.zoom else ''}:bg{tag}"
        self._vocabulary = frozenset(vocabulary()) if model_name == "shapes-clip" else None
        self._background_vector: np.ndarray | None = None
        self.dim = int(self.encode_texts(["circle"]).shape[1])
        # Softmax temperature of eq. 11.13 in this space: CLIP's own, 1 / logit scale (tiny pack: 1 / 27.4).
        self.temperature = float(1.0 / self.clip.model.logit_scale.exp().item())
        # Selection thresholds the search of eq. 11.13 scans in this space (editing.select): CLIP's per-pixel
        # probabilities are softer than a taught identity's, so the scan goes on below the thesis' 0.85 and the
        # rendered-IoU score picks; an object's rim sits near 0.8 (example PLY: recall 0.884 -> 0.909 at
        # precision 1.0, docs/notes/morpho4d_issue23.md).
        self.thresholds = (*DEFAULT_THRESHOLDS, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)

    def with_background(self, background: Sequence[float] | None) -> ClipFeatureEncoder:
        """The same model, with another background colour (another feature space)."""
        return ClipFeatureEncoder(self.clip, self.model_name, background, self.window, self.stride, self.colour_gate,
                                  self.zoom)

    # ----- queries (QueryEncoder protocol)
    def words(self, text: str) -> tuple[str, ...]:
        if not isinstance(text, str) or not text.strip():
            raise UnknownQueryError("The query is empty; name an object, e.g. 'red circle'.")
        tokens = [t for t in re.findall(r"[a-z]+", text.lower()) if t not in FILLER_WORDS]
        known = self._vocabulary
        if known is not None:  # the tiny CLIP read ShapesWorld captions only
            tokens = [t[:-1] if t.endswith("s") and t[:-1] in known and t not in known else t for t in tokens]
        unknown = [t for t in tokens if known is not None and t != BACKGROUND and t not in known]
        if unknown:
            raise UnknownQueryError(f"The CLIP text encoder does not know {', '.join(map(repr, unknown))} "
                                    f"(in the query {text!r}).")
        if not tokens:
            raise UnknownQueryError(f"The query {text!r} names no colour or shape, e.g. 'red circle'.")
        return tuple(dict.fromkeys(tokens))

    def encode(self, text: str) -> np.ndarray:
        words = self.words(text)
        if words == (BACKGROUND,):
            return self.background_vector()
        return self.encode_texts([" ".join(w for w in words if w != BACKGROUND)])[0]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.clip.text_embeddings(list(texts)).cpu().numpy().astype(np.float32)

    def background_vector(self) -> np.ndarray:
        """The image embedding of a frame of the plain background colour, or with no colour the text embedding of
        "background" (module docstring, "Queries")."""
        if self._background_vector is None and self.background is None:
            self._background_vector = self.encode_texts([BACKGROUND])[0]
        if self._background_vector is None:
            plain = np.empty((64, 64, 3), np.uint8)
            plain[:] = np.round(np.asarray(self.background) * 255).astype(np.uint8)
            self._background_vector = self.clip.image_embeddings([plain])[0].cpu().numpy().astype(np.float32)
        return self._background_vector

    # ----- pixels (eq. 11.12)
    def pixel_features(self, frames: np.ndarray, batch: int = 256) -> np.ndarray:
        """float32 ``[T, H, W, D]`` unit features of uint8 frames ``[T, H, W, 3]`` (module docstring)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InvalidInputError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}.")
        T, H, W = frames.shape[:3]
        scale = max(H, W) / 64.0
        window, stride = max(2, round(self.window * scale)), max(1, round(self.stride * scale))
        ys, xs = np.arange(stride / 2, H, stride), np.arange(stride / 2, W, stride)
        out = np.zeros((T, H, W, self.dim), np.float32)
        for t in range(T):
            frame = frames[t]
            fill = np.median(frame.reshape(-1, 3), axis=0).astype(np.uint8)
            colour = frame.astype(np.float32)
            crops, centres = [], []
            for cy in ys:
                for cx in xs:
                    centre = colour[min(int(cy), H - 1), min(int(cx), W - 1)]
                    crops.append(self._window_image(frame, colour, fill, centre, cy, cx, window))
                    centres.append(centre)
            embeddings = torch.cat([self.clip.image_embeddings(crops[i : i + batch]) for i in range(0, len(crops), batch)])
            grid = embeddings.reshape(len(ys), len(xs), -1).cpu().numpy()
            out[t] = self._upsample(grid, np.asarray(centres).reshape(len(ys), len(xs), 3), colour, stride)
        return out

    def _window_image(self, frame: np.ndarray, colour: np.ndarray, fill: np.ndarray, centre: np.ndarray, cy: float,
                      cx: float, window: int) -> np.ndarray:
        """The image CLIP embeds for the window centred at (``cy``, ``cx``): its pixels of about the centre's
        colour on ``fill``; the window alone (``zoom``, padded with ``fill`` past the frame's edge) or in place
        in a frame-sized image."""
        H, W = frame.shape[:2]
        if self.zoom:  # the window's own square image; (y0, x0) is its top-left corner in the frame
            y0, x0 = int(round(cy - window / 2)), int(round(cx - window / 2))
            top, bottom, left, right = max(0, y0), min(H, y0 + window), max(0, x0), min(W, x0 + window)
            out = np.full((window, window, 3), fill, np.uint8)
        else:  # a frame-sized image: the window sits where it is
            y0 = x0 = 0
            top, bottom = int(max(0, cy - window / 2)), int(min(H, cy + window / 2))
            left, right = int(max(0, cx - window / 2)), int(min(W, cx + window / 2))
            out = np.full_like(frame, fill)
        target = out[top - y0 : bottom - y0, left - x0 : right - x0]
        pixels = frame[top:bottom, left:right]
        keep = np.ones(pixels.shape[:2], bool)
        if self.colour_gate is not None:  # keep the window's pixels of the centre's colour
            keep &= np.abs(colour[top:bottom, left:right] - centre).sum(-1) <= self.colour_gate
        target[keep] = pixels[keep]
        return out

    def _upsample(self, grid: np.ndarray, centres: np.ndarray, colour: np.ndarray, stride: int) -> np.ndarray:
        """Each pixel's feature from the 4 grid points around it: bilinear weights, times (with a colour gate)
        a weight for the grid point's centre colour matching the pixel's (joint bilateral upsampling)."""
        H, W = colour.shape[:2]
        gy, gx = grid.shape[:2]
        fy = np.clip((np.arange(H) + 0.5) / stride - 0.5, 0, gy - 1)
        fx = np.clip((np.arange(W) + 0.5) / stride - 0.5, 0, gx - 1)
        y0, x0 = np.floor(fy).astype(int), np.floor(fx).astype(int)
        y1, x1 = np.minimum(y0 + 1, gy - 1), np.minimum(x0 + 1, gx - 1)
        wy, wx = fy - y0, fx - x0
        total = np.zeros((H, W, grid.shape[-1]), np.float64)
        weight_sum = np.zeros((H, W, 1), np.float64)
        for ys_, wys in ((y0, 1 - wy), (y1, wy)):
            for xs_, wxs in ((x0, 1 - wx), (x1, wx)):
                weight = (wys[:, None] * wxs[None, :])[..., None] + 1e-6
                if self.colour_gate is not None:
                    distance = np.abs(colour - centres[ys_][:, xs_]).sum(-1)[..., None]
                    weight = weight * np.exp(-(distance / self.colour_gate) ** 2)
                total += weight * grid[ys_][:, xs_]
                weight_sum += weight
        dense = total / np.maximum(weight_sum, 1e-12)
        return (dense / np.maximum(np.linalg.norm(dense, axis=-1, keepdims=True), 1e-8)).astype(np.float32)


# (preset, placement) -> its CLIP matcher, loaded once per process (a CPU and a CUDA manager keep their own).
_CLIPS: dict[tuple, object] = {}


def clip_encoder(manager=None, background: Sequence[float] | None = (0.5, 0.5, 0.5),
                 zoom: bool = False) -> ClipFeatureEncoder:
    """The preset's CLIP (default: the tiny pack's ``shapes-clip``) as a feature encoder for ``background`` (a
    colour, or None: the word), with windows in place or zoomed, registered for its feature space."""
    from ..matching.loading import clip_from_manager
    from ..models import ModelManager

    manager = manager or ModelManager("tiny")
    key = (manager.preset, manager.placement)
    if key not in _CLIPS:
        _CLIPS[key] = clip_from_manager(manager)
    name = "shapes-clip" if manager.preset == "tiny" else f"{manager.preset}-clip"
    return register_encoder(ClipFeatureEncoder(_CLIPS[key], name, background, zoom=zoom))


def encoder_for_space(space: str) -> ClipFeatureEncoder | None:
    """The CLIP feature encoder a ``clip-windows:...`` space names (``shapes-clip``: the tiny pack's model,
    ``<preset>-clip``: that preset's), or None."""
    from ..models import PRESETS, ModelManager

    match = SPACE_PATTERN.fullmatch(space or "")
    preset = None if match is None else "tiny" if match["model"] == "shapes-clip" else match["model"].removesuffix("-clip")
    if preset not in PRESETS:
        return None
    background = None if match["bg"] == "text" else tuple(int(match["bg"][i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    encoder = clip_encoder(ModelManager(preset), background=background, zoom=bool(match["zoom"]))
    if (encoder.window, encoder.stride) != (int(match["w"]), int(match["s"])):
        encoder = register_encoder(ClipFeatureEncoder(encoder.clip, encoder.model_name, background,
                                                      int(match["w"]), int(match["s"]), zoom=bool(match["zoom"])))
    return encoder
