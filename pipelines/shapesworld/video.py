"""ShapesWorld videos: one object moving along a straight line or an arc, and its motion intensity.

Motion intensity (thesis 10.3.3, "Optical Flow Map Generator"): consecutive
frames are converted to grayscale and OpenCV's Farneback flow is computed
between them. The *magnitude* of a video is the mean flow length over the
pixels that changed between the two frames, divided by the frame width and
averaged over frame pairs: the fraction of the frame width that the moving
content travels per frame. Averaging over changed pixels, not all pixels,
makes it independent of how big the object is; dividing by the width makes it
independent of the frame size (the Farneback window also scales with the
frame, :func:`flow_window`). The level is that magnitude in steps of
:data:`INTENSITY_STEP` (0.5% of the width per frame), rounded and clipped to
1..10: level 10 moves 5% of the frame width per frame, 75% of it over 16
frames. :func:`speed_for_intensity` is the inverse, used to render a video
of a requested level.

Against pixel noise (generated videos) the grayscale frames are smoothed by
:data:`PRESMOOTH` pixels first, and a pixel "changed" when its grey level
moved by at least :data:`MIN_CHANGE` or by :data:`NOISE_FACTOR` times the
median change of the frame pair, whichever is larger, so that static noise
does not dilute the mean. On clean ShapesWorld videos the measured magnitude
is the rendered speed to within 1-5% at 32-256 pixels; blur (1 px) plus noise
(std 8) makes it read about 20% low.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InvalidInputError
from .captions import CaptionSpec, MotionSpec, ObjectSpec, format_caption
from .render import Background, Box, composite, render_background, shape_box, shape_coverage, to_uint8
from .scene import boxes_apart, check_seed, check_size, object_gap, sample_background
from .vocab import ARC_VERBS, COLOURS, DIRECTIONS, MOTION_VERBS, SHAPES, SPEEDS

LEVELS = range(1, 11)
# One intensity level is this fraction of the frame width per frame.
INTENSITY_STEP = 0.005
# A pixel changed if its grey level moved by at least this much (clean videos) ...
MIN_CHANGE = 4.0
# ... or by this multiple of the frame pair's median change (noisy videos).
NOISE_FACTOR = 3.0
# Farneback window at a 64-pixel frame; it scales with the frame side.
FLOW_WINDOW_AT_64 = 15
# The other Farneback settings: OpenCV's sample values (3-level pyramid, 5-pixel polynomial).
FARNEBACK = dict(pyr_scale=0.5, levels=3, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
# Gaussian smoothing (pixels) of the grayscale frames before the flow, against pixel noise.
PRESMOOTH = 1.0
MIN_FRAMES, MAX_FRAMES = 2, 64

# Object side as a fraction of the frame side, and the arc's height over its chord.
VIDEO_SIDE_RANGE = (0.14, 0.22)
ARC_HEIGHT = 0.25
# Speed jitter within a level's bin, as a fraction of one step (keeps the measured level on target).
SPEED_JITTER = 0.25
MAX_PATH_TRIES = 200
# ``start="leaving_side"``: along each axis the path moves on, the start is drawn from this fraction of its room
# nearest the side the caption leaves from ("from left to right" starts near the left edge).
LEAVING_SIDE_SHARE = 0.2
# An axis the path moves less than this many pixels along counts as still (uniform start there).
STILL_AXIS_PX = 0.5
VIDEO_STARTS = ("anywhere", "leaving_side")
# Second entry of the video sampler's seed sequence, so videos and scenes of one seed differ.
VIDEO_STREAM = 2


@dataclass
class VideoObject:
    """The truth of one object in a video."""

    shape: str
    colour: str
    # float32 [T, 4]: (x0, y0, x1, y1) per frame, pixels.
    boxes: np.ndarray
    # bool [T, H, W]: pixels at least half covered, per frame.
    masks: np.ndarray
    # False for the still distractor.
    moving: bool

    @property
    def spec(self) -> ObjectSpec:
        """The object's caption words."""
        return ObjectSpec(colour=self.colour, shape=self.shape)


@dataclass
class VideoScene:
    """A video with its caption and truth. ``objects[0]`` moves; ``objects[1]``, if any, stays still."""

    # uint8 [T, H, W, 3]
    frames: np.ndarray
    caption: str
    objects: list[VideoObject]
    # Words of the caption: a key of vocab.DIRECTIONS, of vocab.SPEEDS, and a motion verb.
    direction: str
    speed: str
    verb: str
    # Measured motion intensity 1..10 and magnitude (fraction of the width per frame).
    intensity: int
    flow_magnitude: float
    # Path speed in pixels per frame, as rendered.
    pixel_speed: float
    seed: int
    size: int

    def record(self) -> dict:
        """The truth as plain JSON-ready data (no pixels, no masks)."""
        return {
            "caption": self.caption,
            "size": self.size,
            "seed": self.seed,
            "n_frames": int(self.frames.shape[0]),
            "direction": self.direction,
            "speed": self.speed,
            "verb": self.verb,
            "intensity": self.intensity,
            "flow_magnitude": round(self.flow_magnitude, 6),
            "pixel_speed": round(self.pixel_speed, 4),
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "moving": o.moving,
                    "boxes": np.round(o.boxes.astype(np.float64), 4).tolist(),
                }
                for o in self.objects
            ],
        }


def flow_window(width: int) -> int:
    """Farneback averaging window for a frame ``width`` pixels wide (odd, at least 5)."""
    return max(5, int(round(FLOW_WINDOW_AT_64 * width / 64)) | 1)


def _as_frames(frames) -> np.ndarray:
    """Validate and return frames as uint8 ``[T, H, W, 3]``."""
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] < MIN_FRAMES:
        raise InvalidInputError(f"Frames must be an array [T>=2, H, W, 3], got shape {array.shape}.")
    if array.dtype != np.uint8:
        array = np.clip(array * 255.0 if array.max(initial=0) <= 1.0 else array, 0, 255).astype(np.uint8)
    return array


def _grey(video: np.ndarray) -> np.ndarray:
    """Grayscale frames smoothed by PRESMOOTH pixels (against pixel noise): uint8 ``[T, H, W]``."""
    return np.stack([cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (0, 0), PRESMOOTH) for f in video])


def _farneback(grey: np.ndarray) -> np.ndarray:
    """Flow between consecutive grayscale frames ``[T, H, W]``: float32 ``[T-1, H, W, 2]``."""
    window = flow_window(grey.shape[2])
    return np.stack(
        [cv2.calcOpticalFlowFarneback(a, b, None, winsize=window, **FARNEBACK) for a, b in zip(grey[:-1], grey[1:])]
    )


def flow_fields(frames) -> np.ndarray:
    """Farneback optical flow between consecutive grayscale frames: float32 ``[T-1, H, W, 2]`` (dx, dy)."""
    return _farneback(_grey(_as_frames(frames)))


def motion_intensity(frames) -> tuple[int, float]:
    """Motion intensity of a video: (level 1..10, magnitude), thesis 10.3.3 (see the module docstring)."""
    video = _as_frames(frames)
    grey = _grey(video)
    flows = _farneback(grey)
    grey = grey.astype(np.float32)
    per_pair = []
    for t, flow in enumerate(flows):
        change = np.abs(grey[t + 1] - grey[t])
        changed = change >= max(MIN_CHANGE, NOISE_FACTOR * float(np.median(change)))
        length = np.hypot(flow[..., 0], flow[..., 1])
        per_pair.append(float(length[changed].mean()) if changed.any() else 0.0)
    magnitude = float(np.mean(per_pair)) / video.shape[2]
    return intensity_level(magnitude), magnitude


def intensity_level(magnitude: float) -> int:
    """The level 1..10 of a magnitude (fraction of the frame width per frame)."""
    return int(np.clip(round(magnitude / INTENSITY_STEP), LEVELS[0], LEVELS[-1]))


def speed_for_intensity(level: int, size: int) -> float:
    """Pixels per frame that a ``size``-wide video moves at intensity ``level``: the inverse of the labels."""
    if level not in LEVELS:
        raise InvalidInputError(f"Motion intensity is an integer level in 1..10, got {level!r}.")
    return level * INTENSITY_STEP * check_size(size)


def check_frames(n_frames: int) -> int:
    """Return ``n_frames`` if it is an integer in [MIN_FRAMES, MAX_FRAMES], else raise."""
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)):
        raise InvalidInputError(f"n_frames must be an integer, got {n_frames!r}.")
    if not MIN_FRAMES <= n_frames <= MAX_FRAMES:
        raise InvalidInputError(f"n_frames must be in [{MIN_FRAMES}, {MAX_FRAMES}], got {n_frames}.")
    return int(n_frames)


def max_intensity(n_frames: int) -> int:
    """The highest level whose straight path, with the smallest object, fits the frame in ``n_frames``."""
    room = 1.0 - VIDEO_SIDE_RANGE[0]
    return int(min(LEVELS[-1], np.floor(room / (INTENSITY_STEP * (check_frames(n_frames) - 1)) - SPEED_JITTER)))


def speed_word(level: int) -> str:
    """The speed word whose levels include ``level`` (vocab.SPEEDS)."""
    for word, levels in SPEEDS.items():
        if level in levels:
            return word
    raise InvalidInputError(f"Motion intensity is an integer level in 1..10, got {level!r}.")


def _bulge(direction: str, rng: np.random.Generator) -> np.ndarray:
    """Unit normal an arc bulges along: upward like a bounce, or to a random side for vertical motion."""
    unit = DIRECTIONS[direction]
    normal = np.array([unit[1], -unit[0]])
    if normal[1] == 0:
        return normal * (1.0 if rng.random() < 0.5 else -1.0)
    return normal if normal[1] < 0 else -normal


def _path_offsets(direction: str, length: float, n_frames: int, bulge: np.ndarray | None) -> np.ndarray:
    """Centre offsets from the start, float ``[T, 2]``, spaced ``length / (T-1)`` apart along the path.

    A straight path (``bulge`` None) follows the direction; an arc follows a
    parabola over the chord in that direction, ``ARC_HEIGHT`` x chord high
    toward ``bulge``. Either way consecutive centres are the same distance apart
    along the path (constant speed).
    """
    unit = np.asarray(DIRECTIONS[direction], dtype=np.float64)
    if bulge is None:
        return np.outer(np.linspace(0.0, length, n_frames), unit)
    normal = bulge
    t = np.linspace(0.0, 1.0, 2001)
    shape = np.outer(t, unit) + np.outer(4.0 * ARC_HEIGHT * t * (1.0 - t), normal)
    arc_length = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(shape, axis=0).T))])
    chord = length / arc_length[-1]
    targets = np.linspace(0.0, arc_length[-1], n_frames)
    samples = np.interp(targets, arc_length, t)
    return chord * (np.outer(samples, unit) + np.outer(4.0 * ARC_HEIGHT * samples * (1.0 - samples), normal))


def _pick(rng: np.random.Generator, value: str | None, allowed, name: str) -> str:
    """``value`` if given (validated), else a random choice from ``allowed``."""
    allowed = tuple(allowed)
    if value is None:
        return str(rng.choice(allowed))
    if value not in allowed:
        raise InvalidInputError(f"Unknown {name} {value!r}; expected one of {allowed}.")
    return value


def _choose_speed(
    rng: np.random.Generator, speed: str | None, intensity: int | None, n_frames: int, size: int
) -> tuple[str, int, float]:
    """(speed word, target level, pixel speed) from the request, within what fits in ``n_frames``."""
    top = max_intensity(n_frames)
    if intensity is not None:
        word = speed_word(intensity)
        if speed is not None and speed != word:
            raise InvalidInputError(f"Intensity {intensity} is {word!r}, not {speed!r}.")
        if intensity > top:
            raise InvalidInputError(f"Intensity {intensity} does not fit in {n_frames} frames; the most is {top}.")
        level = intensity
    else:
        if speed in SPEEDS and SPEEDS[speed][0] > top:
            raise InvalidInputError(f"Moving {speed!r} does not fit in {n_frames} frames; the most is intensity {top}.")
        word = _pick(rng, speed, [w for w, levels in SPEEDS.items() if levels[0] <= top], "speed")
        level = int(rng.choice([lv for lv in SPEEDS[word] if lv <= top]))
    jitter = rng.uniform(-SPEED_JITTER, SPEED_JITTER) * INTENSITY_STEP * size
    return word, level, speed_for_intensity(level, size) + jitter


def _start_range(low: np.ndarray, high: np.ndarray, offsets: np.ndarray, start: str) -> tuple[np.ndarray, np.ndarray]:
    """Where the path's first centre may lie, per axis: all of ``[low, high]``, or with ``start="leaving_side"``
    the :data:`LEAVING_SIDE_SHARE` of it on the side the path leaves from, on each axis it moves along."""
    if start == "anywhere":
        return low, high
    net = offsets[-1] - offsets[0]
    share = LEAVING_SIDE_SHARE * (high - low)
    lead_low = np.where(net < -STILL_AXIS_PX, high - share, low)
    lead_high = np.where(net > STILL_AXIS_PX, low + share, high)
    return lead_low, lead_high


def _layout(
    rng: np.random.Generator, n: int, offsets: np.ndarray, size: int, start: str
) -> tuple[list[Box], Box | None]:
    """Boxes of the moving object per frame (inside the frame) and of the still one (clear of them)."""
    gap = object_gap(size)
    for _ in range(MAX_PATH_TRIES):
        sides = rng.uniform(*VIDEO_SIDE_RANGE, size=n) * size
        low = sides[0] / 2 - offsets.min(axis=0)
        high = size - sides[0] / 2 - offsets.max(axis=0)
        if np.any(low > high):
            continue
        centres = rng.uniform(*_start_range(low, high, offsets, start)) + offsets
        moving = [shape_box((float(x), float(y)), float(sides[0])) for x, y in centres]
        if n == 1:
            return moving, None
        x, y = rng.uniform(sides[1] / 2, size - sides[1] / 2, size=2)
        still = shape_box((float(x), float(y)), float(sides[1]))
        if all(boxes_apart(box, still, gap) for box in moving):
            return moving, still
    raise InvalidInputError(f"No layout of this path fits a {size}x{size} frame; use fewer frames.")


def _render(
    specs: list[ObjectSpec], background: Background, moving: list[Box], still: Box | None, size: int
) -> tuple[np.ndarray, list[VideoObject]]:
    """Frames uint8 ``[T, H, W, 3]`` and the objects' truth."""
    n_frames = len(moving)
    base = render_background(background, size)
    objects = []
    if still is not None:
        coverage = shape_coverage(specs[1].shape, still, size)
        composite(base, coverage, COLOURS[specs[1].colour])
        boxes = np.tile(np.asarray(still, np.float32), (n_frames, 1))
        masks = np.repeat((coverage >= 0.5)[None], n_frames, axis=0)
        objects.append(VideoObject(specs[1].shape, specs[1].colour, boxes, masks, moving=False))
    frames, masks = [], []
    for box in moving:
        canvas = base.copy()
        coverage = shape_coverage(specs[0].shape, box, size)
        composite(canvas, coverage, COLOURS[specs[0].colour])
        frames.append(to_uint8(canvas))
        masks.append(coverage >= 0.5)
    mover = VideoObject(specs[0].shape, specs[0].colour, np.asarray(moving, np.float32), np.stack(masks), moving=True)
    return np.stack(frames), [mover, *objects]


def sample_video(
    seed: int,
    size: int = 64,
    n_frames: int = 16,
    n_objects: int | None = None,
    *,
    direction: str | None = None,
    speed: str | None = None,
    intensity: int | None = None,
    verb: str | None = None,
    start: str = "anywhere",
) -> VideoScene:
    """A random video, the same for the same arguments.

    One object moves ``direction`` at the pixel speed of an intensity level of
    its ``speed`` word (``intensity`` picks the level itself; levels above
    :func:`max_intensity` do not fit the frame and are not drawn); "bounces" moves
    along an arc, "moves" and "slides" along a straight line. With two objects
    (``n_objects`` 1-2, random if None) the second stays still, clear of the
    moving one's path. ``intensity`` on the result is measured from the frames
    by :func:`motion_intensity`. ``start`` places the path: ``"anywhere"`` it
    fits, or ``"leaving_side"``: near the side the caption's direction leaves
    from (:data:`LEAVING_SIDE_SHARE` of the room), so the caption also says where
    the object is in each frame. Raises :class:`InvalidInputError` for a
    requested speed or intensity that cannot fit in the frame over ``n_frames``,
    or an unknown ``start``.
    """
    # 1. Check inputs.
    size = check_size(size)
    seed = check_seed(seed)
    n_frames = check_frames(n_frames)
    if start not in VIDEO_STARTS:
        raise InvalidInputError(f"A video starts {' or '.join(map(repr, VIDEO_STARTS))}, got {start!r}.")
    if n_objects is not None and n_objects not in (1, 2):
        raise InvalidInputError(f"A video has 1 or 2 objects, got {n_objects!r}.")
    rng = np.random.default_rng([seed, VIDEO_STREAM])

    # 2. Words, speed and objects.
    n = int(rng.integers(1, 3)) if n_objects is None else int(n_objects)
    verb = _pick(rng, verb, MOTION_VERBS, "motion verb")
    direction = _pick(rng, direction, DIRECTIONS, "direction")
    speed, _, pixel_speed = _choose_speed(rng, speed, intensity, n_frames, size)
    specs = [ObjectSpec(str(rng.choice(sorted(COLOURS))), str(rng.choice(SHAPES)))]
    while len(specs) < n:
        other = ObjectSpec(str(rng.choice(sorted(COLOURS))), str(rng.choice(SHAPES)))
        if other != specs[0]:
            specs.append(other)

    # 3. Path, layout, render.
    bulge = _bulge(direction, rng) if verb in ARC_VERBS else None
    offsets = _path_offsets(direction, pixel_speed * (n_frames - 1), n_frames, bulge)
    moving, still = _layout(rng, n, offsets, size, start)
    background = sample_background(rng, [spec.colour for spec in specs])
    frames, objects = _render(specs, background, moving, still, size)

    # 4. Caption and measured intensity.
    caption = format_caption(CaptionSpec(objects=tuple(specs), motion=MotionSpec(verb, direction, speed)))
    level, magnitude = motion_intensity(frames)
    return VideoScene(
        frames=frames,
        caption=caption,
        objects=objects,
        direction=direction,
        speed=speed,
        verb=verb,
        intensity=level,
        flow_magnitude=magnitude,
        pixel_speed=float(pixel_speed),
        seed=seed,
        size=size,
    )
