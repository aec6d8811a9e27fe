"""ShapesWorld 4D scenes: a ShapesWorld video's truth turned into a Scene4D (examples and test truth).

Geometry: the video's background is a plane at z = 0 spanning [-1, 1] x [-1, 1] (x right, y up), seen
by the home camera at (0, 0, CAMERA_DISTANCE) looking down -z, whose intrinsics map the plane exactly
onto the frame. Objects are flat layers of Gaussians OBJECT_LIFT in front of the plane, placed so that
the home view reproduces the video's pixels (their x, y are scaled by the perspective at their depth).
The moving object has one motion basis, the translation of its box centre per frame; the still one
and the background have none.

Features come from identity: every Gaussian of an object carries the query encoder's embedding of the
object's name ("red circle"), the plane carries that of "background" (:mod:`.queries`), optionally
with Gaussian noise (``feature_noise``, per component, before renormalising) to mimic learnt features.
``object_ids`` index ``object_names`` = ("background", name of object 1, ...).

:func:`truth_frames` gives the per-frame targets a reconstruction fits (RGB, depth, features,
instance ids), all from the video's own truth, not from this module's renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InvalidInputError
from ..shapesworld.video import VideoScene, sample_video
from ..shapesworld.vocab import COLOURS
from .queries import BACKGROUND, QueryEncoder, default_encoder
from .scene import Camera, Scene4D, check_gaussian_count, look_at, rgb_to_sh, logit

CAMERA_DISTANCE = 3.0
PLANE_HALF_WIDTH = 1.0
OBJECT_LIFT = 0.15
# Objects get this many times the background's Gaussians per pixel of area.
OBJECT_DENSITY = 2.0
# Gaussian standard deviation as a fraction of the grid spacing (in-plane) and depth thickness.
SCALE_PER_SPACING = 0.6
THICKNESS_PER_SPACING = 0.15
OPACITY = 0.98
# Object Gaussians keep this far (pixels) inside the shape's outline: overlapping blobs saturate alpha
# past their centres, so without it objects render about a pixel too large (measured: the rendered
# object's IoU with the truth mask rises from 0.78 to 0.95 at 6000 Gaussians, 0.74 to 0.93 at 20000).
OBJECT_INSET_PX = 0.7
MIN_GAUSSIANS, MAX_DEFAULT_GAUSSIANS = 200, 200_000


def home_camera(size: int) -> Camera:
    """The camera of the video: at (0, 0, 3) looking at the origin, the plane filling the frame."""
    focal = (size / 2.0) * CAMERA_DISTANCE / PLANE_HALF_WIDTH
    K = np.array([[focal, 0, size / 2.0], [0, focal, size / 2.0], [0, 0, 1]], dtype=np.float32)
    return Camera(look_at([0.0, 0.0, CAMERA_DISTANCE], [0.0, 0.0, 0.0]), K, size, size)


def pixel_to_world(u, v, size: int, z: float) -> np.ndarray:
    """World points at height ``z`` that the home camera sees at pixel coordinates (u, v): ``[..., 3]``."""
    perspective = (CAMERA_DISTANCE - z) / CAMERA_DISTANCE
    x = (np.asarray(u, np.float64) / size * 2.0 - 1.0) * PLANE_HALF_WIDTH * perspective
    y = (1.0 - np.asarray(v, np.float64) / size * 2.0) * PLANE_HALF_WIDTH * perspective
    return np.stack([x, y, np.full_like(x, z)], axis=-1)


def background_image(video: VideoScene) -> np.ndarray:
    """The background without objects, float32 ``[H, W, 3]`` in [0, 1]: each pixel's mean over the frames
    where no object covers it; pixels never uncovered take the median uncovered colour."""
    frames = video.frames.astype(np.float32) / 255.0
    covered = np.zeros(frames.shape[:3], dtype=bool)
    for obj in video.objects:
        covered |= obj.masks
    free = (~covered)[..., None].astype(np.float32)
    seen = free.sum(axis=0)
    image = (frames * free).sum(axis=0) / np.maximum(seen, 1.0)
    never = seen[..., 0] == 0
    if never.any():
        image[never] = np.median(image[~never], axis=0) if (~never).any() else 0.5
    return image


def _object_points(shape: str, box, spacing_px: float, inset_px: float = 0.0) -> np.ndarray:
    """Pixel coordinates ``[M, 2]`` of a grid with ``spacing_px`` inside a shape drawn in ``box`` (the
    shapes of ``shapesworld.render.shape_coverage``: inscribed circle, full square, upward triangle),
    at least ``inset_px`` from its outline."""
    x0, y0, x1, y1 = (float(c) for c in box)
    xs = np.arange(x0 + spacing_px / 2, x1, spacing_px)
    ys = np.arange(y0 + spacing_px / 2, y1, spacing_px)
    px, py = np.meshgrid(xs, ys)
    cx, cy, half_w, half_h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if shape == "circle":  # the boxes are square, so the inscribed ellipse is a circle
        depth = min(half_w, half_h) - np.hypot(px - cx, py - cy)
    elif shape == "square":
        depth = np.minimum(half_w - np.abs(px - cx), half_h - np.abs(py - cy))
    elif shape == "triangle":  # apex (cx, y0), base from (x0, y1) to (x1, y1)
        slant = np.hypot(half_w, y1 - y0)
        left = ((y1 - y0) * (px - x0) + half_w * (py - y1)) / slant
        right = ((y1 - y0) * (x1 - px) + half_w * (py - y1)) / slant
        depth = np.minimum(np.minimum(left, right), y1 - py)
    else:
        raise InvalidInputError(f"Unknown shape {shape!r}.")
    inside = depth >= inset_px
    return np.stack([px[inside], py[inside]], axis=1)


@dataclass
class TruthFrames:
    """What a fitter sees, from the video's truth: float32 RGB, depth (camera z) and features, int ids."""

    rgb: np.ndarray  # [T, H, W, 3] in [0, 1]
    depth: np.ndarray  # [T, H, W]
    features: np.ndarray  # [T, H, W, D]
    instance_ids: np.ndarray  # int32 [T, H, W], index into names (0 = background)
    names: tuple[str, ...]
    camera: Camera


def object_names(video: VideoScene) -> tuple[str, ...]:
    """("background", "red circle", ...) in the order of ``video.objects``."""
    return (BACKGROUND, *(f"{obj.colour} {obj.shape}" for obj in video.objects))


def truth_frames(video: VideoScene, encoder: QueryEncoder | None = None) -> TruthFrames:
    """Per-frame RGB, depth, features and instance ids of ``video`` seen by :func:`home_camera`."""
    encoder = encoder or default_encoder()
    names = object_names(video)
    ids = np.zeros(video.frames.shape[:3], dtype=np.int32)
    for index, obj in enumerate(video.objects, start=1):
        ids[obj.masks] = index
    table = np.stack([encoder.encode(name) for name in names])
    depth = np.where(ids > 0, CAMERA_DISTANCE - OBJECT_LIFT, CAMERA_DISTANCE).astype(np.float32)
    return TruthFrames(
        rgb=video.frames.astype(np.float32) / 255.0,
        depth=depth,
        features=table[ids],
        instance_ids=ids,
        names=names,
        camera=home_camera(video.size),
    )


def build_shapes_scene(
    video: VideoScene | None = None,
    *,
    seed: int = 0,
    size: int = 64,
    n_frames: int = 8,
    n_objects: int | None = None,
    n_gaussians: int = 6000,
    encoder: QueryEncoder | None = None,
    feature_noise: float = 0.0,
) -> Scene4D:
    """A Scene4D of a ShapesWorld video (``video``, or ``sample_video(seed, size, n_frames, n_objects)``)
    with about ``n_gaussians`` Gaussians; see the module docstring for the geometry and features."""
    if isinstance(n_gaussians, bool) or not isinstance(n_gaussians, (int, np.integer)) or n_gaussians < MIN_GAUSSIANS:
        raise InvalidInputError(f"n_gaussians must be an integer of at least {MIN_GAUSSIANS}, got {n_gaussians!r}.")
    check_gaussian_count(int(n_gaussians))
    if not np.isfinite(feature_noise) or feature_noise < 0:
        raise InvalidInputError(f"feature_noise must be a non-negative number, got {feature_noise!r}.")
    video = video if video is not None else sample_video(seed, size, n_frames, n_objects)
    encoder = encoder or default_encoder()
    size, names = video.size, object_names(video)
    rng = np.random.default_rng([video.seed, 4])

    # 1. Budget: background grid of side G, objects OBJECT_DENSITY times denser per pixel.
    areas = [float(obj.masks[0].sum()) for obj in video.objects]
    per_pixel = n_gaussians / (size * size + (OBJECT_DENSITY - 1.0) * sum(areas))
    grid = max(2, int(round(np.sqrt(per_pixel) * size)))
    spacing_px = size / grid

    # 2. Background plane, coloured from the video's uncovered pixels.
    background = background_image(video)
    colours = [cv2.resize(background, (grid, grid), interpolation=cv2.INTER_AREA).reshape(-1, 3)]
    centres = (np.arange(grid) + 0.5) * spacing_px
    uu, vv = np.meshgrid(centres, centres)
    means = [pixel_to_world(uu.reshape(-1), vv.reshape(-1), size, 0.0)]
    spacing_world = [np.full(grid * grid, 2.0 * PLANE_HALF_WIDTH / grid)]
    ids = [np.zeros(grid * grid, np.int32)]

    # 3. Objects at frame 0, and the moving one's basis.
    object_spacing = spacing_px / np.sqrt(OBJECT_DENSITY)
    perspective = (CAMERA_DISTANCE - OBJECT_LIFT) / CAMERA_DISTANCE
    for index, obj in enumerate(video.objects, start=1):
        points = _object_points(obj.shape, obj.boxes[0], object_spacing, OBJECT_INSET_PX)
        if len(points) == 0:
            raise InvalidInputError(f"Object {names[index]!r} is too small for {n_gaussians} Gaussians.")
        means.append(pixel_to_world(points[:, 0], points[:, 1], size, OBJECT_LIFT))
        colours.append(np.tile(np.asarray(COLOURS[obj.colour], np.float32) / 255.0, (len(points), 1)))
        spacing_world.append(np.full(len(points), 2.0 * PLANE_HALF_WIDTH * perspective * object_spacing / size))
        ids.append(np.full(len(points), index, np.int32))
    means, colours = np.concatenate(means).astype(np.float32), np.concatenate(colours).astype(np.float32)
    spacing_world, object_ids = np.concatenate(spacing_world), np.concatenate(ids)
    n = len(means)
    check_gaussian_count(n)

    moving = [index for index, obj in enumerate(video.objects, start=1) if obj.moving]
    n_steps = video.frames.shape[0]
    bases = np.zeros((len(moving), n_steps, 3), np.float32)
    coeffs = np.zeros((n, len(moving)), np.float32)
    for b, index in enumerate(moving):
        boxes = video.objects[index - 1].boxes.astype(np.float64)
        centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        path = pixel_to_world(centre[:, 0], centre[:, 1], size, OBJECT_LIFT)
        bases[b] = path - path[0]
        coeffs[object_ids == index, b] = 1.0

    # 4. Features from identity (+ optional noise), flat discs facing the camera.
    table = np.stack([encoder.encode(name) for name in names])
    features = table[object_ids]
    if feature_noise > 0:
        features = features + rng.normal(0.0, feature_noise, features.shape).astype(np.float32)
        features /= np.linalg.norm(features, axis=1, keepdims=True)
    scales = np.stack(
        [spacing_world * SCALE_PER_SPACING, spacing_world * SCALE_PER_SPACING, spacing_world * THICKNESS_PER_SPACING], 1
    )
    return Scene4D(
        means=means,
        quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        log_scales=np.log(scales).astype(np.float32),
        opacity_logits=np.full(n, logit(OPACITY), np.float32),
        sh_dc=rgb_to_sh(colours),
        features=features.astype(np.float32),
        object_ids=object_ids,
        motion_bases=bases,
        motion_coeffs=coeffs,
        camera=home_camera(size),
        object_names=names,
        feature_space=encoder.space,
        background=tuple(float(c) for c in np.median(background.reshape(-1, 3), axis=0)),
        meta={"source": "shapesworld", "seed": int(video.seed), "size": int(size), "caption": video.caption,
              "n_frames": int(n_steps)},
    )
