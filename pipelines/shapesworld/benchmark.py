"""A Winoground-shaped compositional benchmark on held-out ShapesWorld compositions.

Each :class:`Group` holds two images and two captions; caption ``i`` describes
image ``i`` and the other caption is a minimal swap of it (Winoground, Thrush
et al. 2022). Kinds:

* ``colour``: "a red circle left of a blue square" / "a blue circle left of a red square";
* ``shape``: "a red circle left of a blue square" / "a red square left of a blue circle";
* ``relation``: "a red circle left of a blue square" / "a red circle right of a blue square"
  (the second image mirrors the layout across the relation's axis);
* ``colour_single``: "a red circle" / "a green circle";
* ``shape_single``: "a red circle" / "a red square".

Two-object groups use compositions held out of the training split
(:mod:`.splits`); the swaps keep the composition, so both images of a group
are unseen in training. Single-object groups test attribute binding alone
(every single object appears in training). Both images of a group share their
background and layout, so only the swapped attribute differs.

On disk the benchmark is Winoground's format: ``examples.jsonl`` with one
``{"id", "caption_0", "caption_1", "image_0", "image_1"}`` object per line
(plus ``"kind"`` and the truth), and ``images/<image_k>.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidInputError
from ..utils import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from .scene import (
    Placement,
    Scene,
    check_size,
    render_scene,
    sample_background,
    sample_layout,
)
from .splits import heldout_compositions
from .vocab import COLOURS, OPPOSITE_RELATION, SHAPES

KINDS: tuple[str, ...] = ("colour", "shape", "relation", "colour_single", "shape_single")
EXAMPLES_FILE = "examples.jsonl"
IMAGES_DIR = "images"
# The fields every example needs (Winoground's names).
EXAMPLE_FIELDS = ("caption_0", "caption_1", "image_0", "image_1")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
# The side benchmark images are reduced to once read (the largest any preset's matchers look at: Stable Diffusion
# 2.1-base's 512); their smallest and largest sides (pipelines.utils) are read from the header, before decoding.
READ_SIDE = 512


@dataclass
class Group:
    """Two images and two captions; caption i describes image i."""

    images: tuple[np.ndarray, np.ndarray]
    captions: tuple[str, str]
    kind: str
    # The two scenes, or None for a group loaded from disk.
    truth: tuple[Scene, Scene] | None = None
    # The group's id in its examples file ("" for generated groups).
    name: str = ""


def _pair_group(kind: str, rng: np.random.Generator, size: int) -> Group:
    """A colour, shape or relation group on a held-out composition."""
    keys = [
        key
        for key in heldout_compositions()
        if (key[0][0] != key[0][1] and key[1][0] != key[1][1])
        or (kind == "relation" and (key[0][0] != key[0][1] or key[1][0] != key[1][1]))
    ]
    (colour_a, colour_b), (shape_a, shape_b) = keys[int(rng.integers(len(keys)))]
    if rng.random() < 0.5:
        shape_a, shape_b = shape_b, shape_a
    if rng.random() < 0.5:
        (colour_a, shape_a), (colour_b, shape_b) = (colour_b, shape_b), (colour_a, shape_a)
    layout, relations = sample_layout(rng, 2, size, need_relation=True)
    relation = str(rng.choice(relations))
    background = sample_background(rng, [colour_a, colour_b])
    (centre_a, side_a), (centre_b, side_b) = layout
    first = [Placement(shape_a, colour_a, centre_a, side_a), Placement(shape_b, colour_b, centre_b, side_b)]
    if kind == "colour":
        second = [Placement(shape_a, colour_b, centre_a, side_a), Placement(shape_b, colour_a, centre_b, side_b)]
        second_relation = relation
    elif kind == "shape":
        second = [Placement(shape_b, colour_a, centre_a, side_a), Placement(shape_a, colour_b, centre_b, side_b)]
        second_relation = relation
    else:
        horizontal = relation in ("left of", "right of")

        def mirror(centre: tuple[float, float]) -> tuple[float, float]:
            return (1.0 - centre[0], centre[1]) if horizontal else (centre[0], 1.0 - centre[1])

        second = [Placement(p.shape, p.colour, mirror(p.center), p.side) for p in first]
        second_relation = OPPOSITE_RELATION[relation]
    scenes = (
        render_scene(first, size, background, relation, split="test"),
        render_scene(second, size, background, second_relation, split="test"),
    )
    return Group((scenes[0].image, scenes[1].image), (scenes[0].caption, scenes[1].caption), kind, scenes)


def _single_group(kind: str, rng: np.random.Generator, size: int) -> Group:
    """A one-object group that swaps the colour or the shape."""
    colour, shape = str(rng.choice(sorted(COLOURS))), str(rng.choice(SHAPES))
    if kind == "colour_single":
        other_colour, other_shape = str(rng.choice([c for c in sorted(COLOURS) if c != colour])), shape
    else:
        other_colour, other_shape = colour, str(rng.choice([s for s in SHAPES if s != shape]))
    [(centre, side)], _ = sample_layout(rng, 1, size, need_relation=False)
    background = sample_background(rng, [colour, other_colour])
    scenes = (
        render_scene([Placement(shape, colour, centre, side)], size, background),
        render_scene([Placement(other_shape, other_colour, centre, side)], size, background),
    )
    return Group((scenes[0].image, scenes[1].image), (scenes[0].caption, scenes[1].caption), kind, scenes)


def compositional_groups(n: int, seed: int = 0, size: int = 64, kinds: Sequence[str] = KINDS) -> list[Group]:
    """``n`` groups, cycling through ``kinds`` in order; the same for the same arguments."""
    size = check_size(size)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(f"The number of groups must be a positive integer, got {n!r}.")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise InvalidInputError(f"Unknown or no group kinds {list(kinds)}; expected some of {KINDS}.")
    groups = []
    for index in range(n):
        kind = kinds[index % len(kinds)]
        rng = np.random.default_rng([int(seed), index, 3])
        maker = _single_group if kind.endswith("_single") else _pair_group
        groups.append(maker(kind, rng, size))
    return groups


def winoground_scores(sim) -> dict[str, bool]:
    """Winoground's text, image and group scores of one group.

    ``sim[i][j]`` is the score of caption ``i`` with image ``j``. Text score:
    each image prefers its own caption, s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1).
    Image score: each caption prefers its own image, s(c0,i0) > s(c0,i1) and
    s(c1,i1) > s(c1,i0). Group score: both.
    """
    s = np.asarray(sim, dtype=np.float64)
    if s.shape != (2, 2) or not np.all(np.isfinite(s)):
        raise InvalidInputError(f"A Winoground similarity is a finite 2x2 array, got shape {s.shape}.")
    text = bool(s[0, 0] > s[1, 0] and s[1, 1] > s[0, 1])
    image = bool(s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0])
    return {"text": text, "image": image, "group": text and image}


def winoground_accuracy(sims: Sequence) -> dict[str, float]:
    """Mean text, image and group scores over many groups' 2x2 similarities."""
    if len(sims) == 0:
        raise InvalidInputError("No similarities to score.")
    scores = [winoground_scores(sim) for sim in sims]
    return {key: float(np.mean([score[key] for score in scores])) for key in ("text", "image", "group")}


def save_winoground(groups: Sequence[Group], out_dir: str | Path) -> Path:
    """Write ``groups`` in Winoground's format under ``out_dir``; return the examples file."""
    root = Path(out_dir)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    lines = []
    for index, group in enumerate(groups):
        record = {"id": index, "kind": group.kind}
        for k in (0, 1):
            name = f"ex_{index}_img_{k}"
            Image.fromarray(group.images[k]).save(root / IMAGES_DIR / f"{name}.png")
            record[f"caption_{k}"] = group.captions[k]
            record[f"image_{k}"] = name
            if group.truth is not None:
                record[f"truth_{k}"] = group.truth[k].record()
        lines.append(json.dumps(record))
    examples = root / EXAMPLES_FILE
    examples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return examples


def read_examples(path: Path) -> list[dict]:
    """The rows of a Winoground examples file: JSON lines (``.jsonl``) or a table with a header (``.csv``).

    Every row needs ``caption_0``, ``caption_1``, ``image_0`` and ``image_1`` (``id`` and ``kind`` are kept when
    given); two different, non-empty captions. A bad row raises :class:`InvalidInputError` naming its line.
    """
    import csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path.name} is not UTF-8 text.") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [name for name in EXAMPLE_FIELDS if name not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(f"{path.name} has no column{'s' if len(missing) > 1 else ''} "
                                    f"{', '.join(missing)}; its header needs {', '.join(EXAMPLE_FIELDS)}.")
        numbered = [(number, dict(row)) for number, row in enumerate(reader, start=2)]
    else:
        numbered = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise InvalidInputError(f"{path.name}, line {number}: not a JSON object.") from None
            if not isinstance(row, dict):
                raise InvalidInputError(f"{path.name}, line {number}: not a JSON object.")
            numbered.append((number, row))
    rows = []
    for number, row in numbered:
        missing = [name for name in EXAMPLE_FIELDS if not str(row.get(name) or "").strip()]
        if missing:
            raise InvalidInputError(f"{path.name}, line {number}: {', '.join(missing)} "
                                    f"{'is' if len(missing) == 1 else 'are'} missing or empty.")
        clean = {name: str(row[name]).strip() for name in EXAMPLE_FIELDS}
        if clean["caption_0"] == clean["caption_1"]:
            raise InvalidInputError(f"{path.name}, line {number}: both captions are {clean['caption_0']!r}; a group "
                                    "needs two different captions.")
        clean["id"] = str(row["id"]) if str(row.get("id", "")).strip() else str(number)
        clean["kind"] = str(row.get("kind", "") or "")
        rows.append(clean)
    if not rows:
        raise InvalidInputError(f"{path.name} holds no groups.")
    return rows


def image_index(files: Sequence[Path], root: Path | None = None) -> dict[str, Path]:
    """Names an examples file may give an image by -> its file: the path under ``root`` with or without its
    suffix and without a leading ``images/``, and the bare file name and stem."""
    index: dict[str, Path] = {}
    for file in files:
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        relative = file.relative_to(root).as_posix() if root is not None else file.name
        names = {relative, relative.removeprefix(f"{IMAGES_DIR}/"), file.name}
        for name in list(names):
            names.add(name.rsplit(".", 1)[0])
        for name in names:
            index.setdefault(name, file)
    return index


def read_image(path: Path, where: str) -> np.ndarray:
    """An image file as uint8 RGB, refused in words when unreadable, tiny or huge (checked before decoding);
    reduced to at most :data:`READ_SIDE` pixels a side."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max(width, height) > MAX_IMAGE_SIDE:
                raise InvalidInputError(f"{where}: {path.name} is {width}x{height} pixels; the largest side allowed "
                                        f"is {MAX_IMAGE_SIDE}.")
            if min(width, height) < MIN_IMAGE_SIDE:
                raise InvalidInputError(f"{where}: {path.name} is {width}x{height} pixels; give at least "
                                        f"{MIN_IMAGE_SIDE} pixels a side.")
            image = image.convert("RGB")
            image.thumbnail((READ_SIDE, READ_SIDE))
            return np.asarray(image)
    except (OSError, Image.DecompressionBombError):
        raise InvalidInputError(f"{where}: {path.name} is not an image this studio can read.") from None


def load_winoground(path: str | Path, images: dict[str, Path] | None = None) -> list[Group]:
    """Read a Winoground-format benchmark (a folder, or its ``examples.jsonl`` / ``.csv``); groups have no truth.

    Images are looked up in ``images`` (see :func:`image_index`) or, by default, among the image files beside the
    examples file (``images/<image_k>.png`` in Winoground's release; a name may carry its suffix or not).
    """
    path = Path(path)
    examples = path / EXAMPLES_FILE if path.is_dir() else path
    if not examples.is_file():
        raise InvalidInputError(f"No Winoground examples file at {examples}.")
    rows = read_examples(examples)
    if images is None:
        images = image_index([p for p in examples.parent.rglob("*") if p.is_file()], examples.parent)
    groups = []
    for row in rows:
        where = f"{examples.name}, group {row['id']}"
        pair = []
        for key in ("image_0", "image_1"):
            name = row[key].removeprefix("./")
            if name not in images:
                raise InvalidInputError(f"{where}: {key} names {name!r}, which is not among the images.")
            pair.append(read_image(images[name], where))
        groups.append(Group((pair[0], pair[1]), (row["caption_0"], row["caption_1"]), row["kind"], name=row["id"]))
    return groups
