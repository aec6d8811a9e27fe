"""Still ShapesWorld scenes: layouts, truth and the seeded sampler.

A scene is one to three flat-coloured shapes on a low-saturation background,
never overlapping (boxes keep a gap of :func:`object_gap` pixels), each fully
inside the frame. The truth of every object (shape, colour, float box, mask,
depth) is known exactly, and the caption is written from it.

Depth model: the background is a ground plane receding upward, with depth
:data:`DEPTH_FAR` at the top row and :data:`BACKGROUND_NEAR` at the bottom row;
each object is a flat card standing on the plane at its box's bottom edge, one
:data:`OBJECT_LIFT` nearer than the plane there. Depth units are arbitrary;
smaller is nearer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InvalidInputError
from .captions import CaptionSpec, ObjectSpec, format_caption
from .metrics import relation_holds
from .render import (
    TEXTURES,
    Background,
    Box,
    composite,
    luminance,
    render_background,
    shape_box,
    shape_coverage,
    to_uint8,
)
from .splits import SPLITS, heldout_compositions, is_heldout
from .vocab import COLOURS, MAX_OBJECTS, RELATIONS, SHAPES

MIN_SIZE = 16
MAX_SIZE = 1024

# Object side as a fraction of the frame side, for 1-2 and for 3 objects.
SIDE_RANGE = (0.2, 0.4)
SIDE_RANGE_CROWDED = (0.18, 0.32)
# Gap between object boxes: this fraction of the frame side, at least MIN_GAP pixels.
GAP_FRACTION = 0.05
MIN_GAP = 2.0
# Attempts to place all objects before the sampler gives up (never reached in practice).
MAX_LAYOUT_TRIES = 1000

DEPTH_FAR = 10.0
BACKGROUND_NEAR = 4.0
OBJECT_LIFT = 1.0
# Nearest depth an object can have (standing on the bottom row).
DEPTH_NEAR = BACKGROUND_NEAR - OBJECT_LIFT

# Sampled backgrounds: grey level range, per-channel tint, texture amplitude.
BACKGROUND_GREY = (30, 230)
BACKGROUND_TINT = 12
BACKGROUND_MAX_CHROMA = 2 * BACKGROUND_TINT
TEXTURE_AMPLITUDE = (4.0, 12.0)
# Grey-level gap between the background and every object, so grayscale Canny
# and optical flow (which never see colour) see every object's edges.
MIN_LUMINANCE_CONTRAST = 40.0
# Default background of render_scene: light grey, >= 52 grey levels from every object colour.
DEFAULT_BACKGROUND = Background(colour=(235, 235, 235))


@dataclass(frozen=True)
class Placement:
    """Where to draw one object, in fractions of the frame side (size independent)."""

    shape: str
    colour: str
    # Centre (x, y), each in [0, 1] of the frame side.
    center: tuple[float, float]
    # Side of the object's box, in (0, 1] of the frame side.
    side: float

    def __post_init__(self) -> None:
        ObjectSpec(colour=self.colour, shape=self.shape)  # validates both words
        if not 0.0 < self.side <= 1.0:
            raise InvalidInputError(f"A placement's side is a fraction in (0, 1], got {self.side}.")

    def box(self, size: int) -> Box:
        """The object's box in pixels for a ``size`` x ``size`` frame."""
        return shape_box((self.center[0] * size, self.center[1] * size), self.side * size)

    @classmethod
    def from_box(cls, shape: str, colour: str, box: Box, size: int) -> Placement:
        """The placement whose box in a ``size`` frame is ``box``."""
        x0, y0, x1, y1 = box
        return cls(shape, colour, ((x0 + x1) / (2 * size), (y0 + y1) / (2 * size)), (x1 - x0) / size)


@dataclass
class ObjectTruth:
    """The known truth of one object in a still scene."""

    shape: str
    colour: str
    # (x0, y0, x1, y1) in float pixels; pixel (i, j) spans [j, j+1) x [i, i+1).
    box: Box
    # bool [H, W]: pixels at least half covered by the object.
    mask: np.ndarray
    # Smaller is nearer (see the module docstring).
    depth: float

    @property
    def centroid(self) -> tuple[float, float]:
        """Centre (x, y) of the box in pixels."""
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)

    @property
    def spec(self) -> ObjectSpec:
        """The object's caption words."""
        return ObjectSpec(colour=self.colour, shape=self.shape)


@dataclass
class Scene:
    """One still image with its caption and full truth."""

    # uint8 [H, W, 3]
    image: np.ndarray
    caption: str
    objects: list[ObjectTruth]
    # (subject index, relation word, object index) into ``objects``; the caption states it.
    relation: tuple[int, str, int] | None
    # float32 [H, W], smaller is nearer; ``conditions.depth`` turns it into a grey map.
    depth: np.ndarray
    background: Background
    # Seed of sample_scene, or None for render_scene.
    seed: int | None
    size: int
    # "train" or "test" for sampled scenes, None for render_scene.
    split: str | None = None

    @property
    def placements(self) -> list[Placement]:
        """The layout of the scene, ready for :func:`render_scene` (e.g. after a swap)."""
        return [Placement.from_box(o.shape, o.colour, o.box, self.size) for o in self.objects]

    def record(self) -> dict:
        """The truth as plain JSON-ready data (no pixels, no masks)."""
        return {
            "caption": self.caption,
            "size": self.size,
            "seed": self.seed,
            "split": self.split,
            "relation": None if self.relation is None else list(self.relation),
            "background": asdict(self.background),
            "objects": [
                {"shape": o.shape, "colour": o.colour, "box": [round(v, 4) for v in o.box], "depth": round(o.depth, 4)}
                for o in self.objects
            ],
        }


def derive_seed(seed: int, index: int) -> int:
    """A well-mixed 32-bit seed for item ``index`` of a collection seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def check_seed(seed: int) -> int:
    """Return ``seed`` if it is a non-negative integer, else raise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"A seed is a non-negative integer, got {seed!r}.")
    return int(seed)


def check_size(size: int) -> int:
    """Return ``size`` if it is an integer frame side in [MIN_SIZE, MAX_SIZE], else raise."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInputError(f"Frame size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}.")
    return int(size)


def object_gap(size: int) -> float:
    """The least gap in pixels kept between object boxes in a ``size`` frame."""
    return max(MIN_GAP, GAP_FRACTION * size)


def boxes_apart(a: Box, b: Box, gap: float) -> bool:
    """True if boxes ``a`` and ``b`` are separated by at least ``gap`` pixels along some axis."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def background_depth(size: int) -> np.ndarray:
    """Depth of the ground plane, float32 ``[size, size]``: far at the top, near at the bottom."""
    rows = (np.arange(size, dtype=np.float32) + 0.5) / size
    column = DEPTH_FAR - (DEPTH_FAR - BACKGROUND_NEAR) * rows
    return np.repeat(column[:, None], size, axis=1)


def object_depth(box: Box, size: int) -> float:
    """Depth of an object whose box is ``box``: the plane's depth at its bottom edge, lifted."""
    bottom = min(max(box[3] / size, 0.0), 1.0)
    return DEPTH_FAR - (DEPTH_FAR - BACKGROUND_NEAR) * bottom - OBJECT_LIFT


def holding_relations(a: Box, b: Box) -> list[str]:
    """The relations that hold for "object with box a <relation> object with box b"."""
    return [relation for relation in RELATIONS if relation_holds(a, b, relation)]


def render_scene(
    placements: Sequence[Placement],
    size: int = 64,
    background: Background | None = None,
    relation: str | None = None,
    *,
    seed: int | None = None,
    split: str | None = None,
) -> Scene:
    """Render the objects of ``placements`` and write their caption.

    ``relation`` (between the first two objects) must hold on the layout;
    objects must lie inside the frame and keep :func:`object_gap` between boxes.
    Raises :class:`InvalidInputError` otherwise.
    """
    size = check_size(size)
    if not 1 <= len(placements) <= MAX_OBJECTS:
        raise InvalidInputError(f"A scene has 1 to {MAX_OBJECTS} objects, got {len(placements)}.")
    background = DEFAULT_BACKGROUND if background is None else background
    boxes = [placement.box(size) for placement in placements]
    for placement, box in zip(placements, boxes):
        if box[0] < 0 or box[1] < 0 or box[2] > size or box[3] > size:
            raise InvalidInputError(f"The {placement.colour} {placement.shape} at {placement.center} leaves the frame.")
    gap = object_gap(size)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if not boxes_apart(boxes[i], boxes[j], gap):
                raise InvalidInputError(f"Objects {i} and {j} overlap or are closer than {gap:.1f} pixels.")
    if relation is not None and (len(boxes) < 2 or not relation_holds(boxes[0], boxes[1], relation)):
        raise InvalidInputError(f"The relation {relation!r} does not hold between the first two objects.")

    canvas = render_background(background, size)
    depth = background_depth(size)
    objects = []
    for placement, box in zip(placements, boxes):
        coverage = shape_coverage(placement.shape, box, size)
        composite(canvas, coverage, COLOURS[placement.colour])
        mask = coverage >= 0.5
        object_z = object_depth(box, size)
        depth[mask] = object_z
        objects.append(ObjectTruth(placement.shape, placement.colour, box, mask, object_z))

    spec = CaptionSpec(objects=tuple(o.spec for o in objects), relation=relation)
    return Scene(
        image=to_uint8(canvas),
        caption=format_caption(spec),
        objects=objects,
        relation=None if relation is None else (0, relation, 1),
        depth=depth,
        background=background,
        seed=seed,
        size=size,
        split=split,
    )


def sample_background(rng: np.random.Generator, colours: Sequence[str]) -> Background:
    """A random low-saturation background whose grey level is far from every object's."""
    object_luma = [luminance(COLOURS[c]) for c in colours]
    while True:
        grey = int(rng.integers(BACKGROUND_GREY[0], BACKGROUND_GREY[1] + 1))
        tint = rng.integers(-BACKGROUND_TINT, BACKGROUND_TINT + 1, size=3)
        colour = tuple(int(v) for v in np.clip(grey + tint, 0, 255))
        texture = str(rng.choice(TEXTURES))
        amplitude = float(rng.uniform(*TEXTURE_AMPLITUDE)) if texture != "plain" else 0.0
        background = Background(colour, texture, amplitude, int(rng.integers(2**31)))  # type: ignore[arg-type]
        if all(abs(background.luminance - luma) - amplitude >= MIN_LUMINANCE_CONTRAST for luma in object_luma):
            return background


def _sample_objects(rng: np.random.Generator, n: int, split: str) -> list[ObjectSpec]:
    """Distinct (colour, shape) pairs; train avoids held-out compositions, test starts with one."""
    colours, shapes = sorted(COLOURS), list(SHAPES)

    def draw() -> ObjectSpec:
        return ObjectSpec(colour=str(rng.choice(colours)), shape=str(rng.choice(shapes)))

    while True:
        if split == "train":
            objects = [draw() for _ in range(n)]
        else:
            keys = [key for key in heldout_compositions() if key[0][0] != key[0][1] or key[1][0] != key[1][1]]
            (colour_a, colour_b), (shape_a, shape_b) = keys[int(rng.integers(len(keys)))]
            if rng.random() < 0.5:
                shape_a, shape_b = shape_b, shape_a
            first, second = ObjectSpec(colour_a, shape_a), ObjectSpec(colour_b, shape_b)
            if rng.random() < 0.5:
                first, second = second, first
            objects = [first, second] + [draw() for _ in range(n - 2)]
        distinct = len({(o.colour, o.shape) for o in objects}) == n
        if distinct and (split == "test" or not is_heldout(objects)):
            return objects


def sample_layout(
    rng: np.random.Generator, n: int, size: int, need_relation: bool
) -> tuple[list[tuple[tuple[float, float], float]], list[str]]:
    """Centres and sides (fractions) of ``n`` non-overlapping objects, and relations of the first two."""
    low, high = SIDE_RANGE if n < 3 else SIDE_RANGE_CROWDED
    gap = object_gap(size)
    for _ in range(MAX_LAYOUT_TRIES):
        sides = rng.uniform(low, high, size=n)
        centers = [(float(rng.uniform(s / 2, 1 - s / 2)), float(rng.uniform(s / 2, 1 - s / 2))) for s in sides]
        boxes = [shape_box((cx * size, cy * size), s * size) for (cx, cy), s in zip(centers, sides)]
        if not all(boxes_apart(boxes[i], boxes[j], gap) for i in range(n) for j in range(i + 1, n)):
            continue
        relations = holding_relations(boxes[0], boxes[1]) if n >= 2 else []
        if relations or not need_relation:
            return [(c, float(s)) for c, s in zip(centers, sides)], relations
    raise RuntimeError(f"No layout of {n} objects found in {MAX_LAYOUT_TRIES} tries at size {size}.")


def sample_scene(seed: int, size: int = 64, n_objects: int | None = None, split: str = "train") -> Scene:
    """A random scene, the same for the same arguments (identical image bytes and truth).

    ``n_objects`` is 1-3 (random if None). Two-object scenes always state a
    relation that holds; three-object scenes state one half of the time.
    ``split="train"`` never shows a held-out composition (:mod:`.splits`);
    ``split="test"`` always shows one between its first two objects, so it
    needs 2 or 3 objects (2 or 3 at random if None).
    """
    size = check_size(size)
    if split not in SPLITS:
        raise InvalidInputError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    seed = check_seed(seed)
    lowest = 1 if split == "train" else 2
    if n_objects is not None and not lowest <= n_objects <= MAX_OBJECTS:
        raise InvalidInputError(f"The {split} split has {lowest} to {MAX_OBJECTS} objects per scene, got {n_objects}.")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    n = int(rng.integers(lowest, MAX_OBJECTS + 1)) if n_objects is None else int(n_objects)

    objects = _sample_objects(rng, n, split)
    wants_relation = n == 2 or (n == 3 and rng.random() < 0.5)
    layout, relations = sample_layout(rng, n, size, need_relation=wants_relation)
    relation = str(rng.choice(relations)) if wants_relation else None
    background = sample_background(rng, [o.colour for o in objects])
    placements = [Placement(o.shape, o.colour, center, side) for o, (center, side) in zip(objects, layout)]
    return render_scene(placements, size, background, relation, seed=seed, split=split)
