"""The request is the recipe: every output file carries how it was made.

A :class:`Recipe` is a runner's request as plain JSON plus what it ran on: the
preset, a content hash of each model folder it used, the package version, the
torch thread count, and a SHA-256 of the raw result (pixels or scene arrays)
so that ``python -m pipelines.<method> rerun FILE`` can say whether it got the
same bits back. Where it is stored depends on the kind of file:

* PNG: a ``worldstudio-recipe`` text chunk;
* NPZ: a ``recipe`` entry (uint8 bytes of the JSON);
* PLY: a ``comment worldstudio-recipe {...}`` header line;
* ZIP (every frame of a scene as PLY): a ``recipe.json`` entry;
* MP4 and WebM: the container's ``comment`` tag (remuxed by ffmpeg, the video stream copied);
* GIF: a comment extension block after the global colour table;
* JSON (tables of results): a top-level ``recipe`` entry;
* CSV (tables of results): a first line ``# worldstudio-recipe {...}`` before the header.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import InvalidInputError

PNG_KEY = "worldstudio-recipe"
PLY_PREFIX = b"comment worldstudio-recipe "
ZIP_ENTRY = "recipe.json"
VIDEO_KINDS = (".mp4", ".webm")
# Marks a GIF comment as a recipe (the comment is this prefix and the JSON).
GIF_PREFIX = b"worldstudio-recipe "
# The first line of a CSV that carries a recipe is this prefix and the JSON.
CSV_PREFIX = "# worldstudio-recipe "


class NoRecipeError(InvalidInputError):
    """A file that carries no WorldStudio recipe (made elsewhere, or stripped)."""


@dataclass
class Recipe:
    """How one output was made (module docstring)."""

    # The method whose runner made it: "matching", "flexecontrol", "mojito" or "morpho4d".
    method: str
    # The runner's request as plain JSON values (images as nested lists are never stored: see each runner).
    request: dict
    # The model preset the runner loaded from.
    preset: str
    # Role -> content hash of the model folder (local) or "hub id@revision" (hub).
    models: dict = field(default_factory=dict)
    # WorldStudio's version and the torch thread count it ran with (bit-identity needs the same count).
    version: str = __version__
    threads: int = field(default_factory=torch.get_num_threads)
    # SHA-256 of the raw result (see :func:`digest`), compared by ``rerun``.
    output_sha256: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in ("method", "request", "preset", "models", "version", "threads",
                                               "output_sha256")})
        except (ValueError, KeyError, TypeError) as error:
            raise NoRecipeError(f"The file's recipe is malformed ({error}).") from None

    def command_line(self, path: str | Path) -> str:
        """The command that reproduces the file at ``path``."""
        return f"python -m pipelines.{self.method} rerun {shlex.quote(str(path))}"


def encode_image(image: np.ndarray) -> str:
    """A uint8 map or image ([H, W] or [H, W, 3]) as base64 PNG text, lossless, for a recipe's request."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(text: str) -> np.ndarray:
    """The array :func:`encode_image` stored; :class:`InvalidInputError` when it is not a PNG."""
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as image:
            if image.format != "PNG":
                raise InvalidInputError("A recipe's image is not a PNG.")
            return np.asarray(image).copy()
    except (binascii.Error, UnidentifiedImageError, ValueError) as error:
        raise InvalidInputError(f"A recipe's image cannot be read ({error}).") from None


def digest(*arrays: np.ndarray) -> str:
    """SHA-256 over arrays' dtypes, shapes and bytes (the raw result a recipe promises)."""
    hasher = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        hasher.update(f"{array.dtype.str}{array.shape}".encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()


@functools.lru_cache(maxsize=64)
def _folder_hash(path: str, stamp: tuple) -> str:
    hasher = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        hasher.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
    return hasher.hexdigest()


def folder_hash(path: str | Path) -> str:
    """Content hash of a model folder (relative file names and bytes); cached until a file changes."""
    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError(f"No model folder at {root}.")
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file())
    return _folder_hash(str(root), stamp)


def model_hashes(manager, roles) -> dict[str, str]:
    """Role -> content hash (local folder) or ``hub id@revision`` for the roles a runner used."""
    from .models import get_source

    out = {}
    for role in roles:
        source = get_source(manager.preset, role)
        out[role] = folder_hash(source.path) if source.local else f"{source.location}@{source.revision or 'main'}"
    return out


def _gif_comment_block(data: bytes) -> bytes:
    """A GIF comment extension (0x21 0xFE, sub-blocks of at most 255 bytes, a zero terminator)."""
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)]
    return b"\x21\xfe" + b"".join(bytes([len(c)]) + c for c in chunks) + b"\x00"


def _attach_gif(path: Path, recipe: Recipe) -> None:
    raw = path.read_bytes()
    if raw[:6] not in (b"GIF87a", b"GIF89a"):
        raise InvalidInputError(f"{path.name} is not a GIF.")
    flags = raw[10]
    start = 13 + (3 * 2 ** ((flags & 0x07) + 1) if flags & 0x80 else 0)
    path.write_bytes(b"GIF89a" + raw[6:start] + _gif_comment_block(GIF_PREFIX + recipe.to_json().encode()) + raw[start:])


def _attach_video(path: Path, recipe: Recipe) -> None:
    import subprocess

    from .video_io import VideoEncodingError, ffmpeg_path

    staged = path.with_name(f".{path.stem}-recipe{path.suffix}")
    command = [ffmpeg_path(), "-y", "-loglevel", "error", "-i", str(path), "-map", "0", "-c", "copy",
               "-metadata", f"comment={recipe.to_json()}", *(["-movflags", "+faststart"] if path.suffix == ".mp4"
                                                            else []), str(staged)]
    result = subprocess.run(command, capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise VideoEncodingError(f"ffmpeg could not add the recipe to {path.name}: "
                                 f"{result.stderr.decode('utf-8', 'replace')[-300:]}")
    staged.replace(path)


def _video_comment(path: Path) -> str | None:
    import subprocess

    from .video_io import ffmpeg_path

    probe = str(Path(ffmpeg_path()).with_name("ffprobe"))
    result = subprocess.run([probe, "-v", "error", "-show_entries", "format_tags=comment", "-of", "json", str(path)],
                            capture_output=True, timeout=60, check=False)
    if result.returncode != 0:
        return None
    comment = json.loads(result.stdout or b"{}").get("format", {}).get("tags", {}).get("comment")
    return comment if comment and comment.startswith("{") else None


def write_png(image: np.ndarray, path: str | Path, recipe: Recipe) -> Path:
    """``image`` (uint8 [H, W, 3]) as a PNG whose text chunk holds ``recipe``."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    info.add_text(PNG_KEY, recipe.to_json())
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG", pnginfo=info)
    return path


def write_table(rows: list[dict], path: str | Path, recipe: Recipe, **extra) -> Path:
    """Result rows (dicts with the same keys) as ``.csv`` (the recipe on its first line) or ``.json`` (``{"recipe",
    "rows"}`` and any ``extra`` entries)."""
    import csv
    import io

    path = Path(path)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps({"recipe": json.loads(recipe.to_json()), **extra, "rows": rows}, indent=1),
                        encoding="utf-8")
    elif path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_text(CSV_PREFIX + recipe.to_json() + "\n" + buffer.getvalue(), encoding="utf-8")
    else:
        raise InvalidInputError(f"Tables are written as .csv or .json, not {path.suffix or 'a file without suffix'}.")
    return path


def attach(path: str | Path, recipe: Recipe) -> Path:
    """Store ``recipe`` with a file already written: NPZ entry, PLY comment, video or GIF comment."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open("recipe.npy", "w") as handle:
                np.lib.format.write_array(handle, np.frombuffer(recipe.to_json().encode("utf-8"), np.uint8))
    elif suffix == ".zip":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(ZIP_ENTRY, recipe.to_json())
    elif suffix == ".ply":
        raw = path.read_bytes()
        end = raw.index(b"end_header\n")
        line = PLY_PREFIX + recipe.to_json().encode("ascii") + b"\n"
        path.write_bytes(raw[:end] + line + raw[end:])
    elif suffix in VIDEO_KINDS:
        _attach_video(path, recipe)
    elif suffix == ".gif":
        _attach_gif(path, recipe)
    else:
        raise InvalidInputError(f"No recipe slot for {suffix or 'a file without suffix'} files.")
    return path


def read_recipe(path: str | Path) -> Recipe:
    """The recipe a file carries; :class:`NoRecipeError` when it has none."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"No file at {path}.")
    suffix = path.suffix.lower()
    text = None
    if suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            text = image.text.get(PNG_KEY) if hasattr(image, "text") else None
    elif suffix == ".npz":
        try:
            with zipfile.ZipFile(path) as archive, archive.open("recipe.npy") as handle:
                text = np.lib.format.read_array(handle, allow_pickle=False).tobytes().decode("utf-8")
        except (KeyError, zipfile.BadZipFile):
            text = None
    elif suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                text = archive.read(ZIP_ENTRY).decode("utf-8")
        except (KeyError, zipfile.BadZipFile):
            text = None
    elif suffix == ".ply":
        with open(path, "rb") as handle:
            for line in iter(handle.readline, b""):
                if line.startswith(PLY_PREFIX):
                    text = line[len(PLY_PREFIX):].decode("ascii")
                    break
                if line.startswith(b"end_header") or len(line) == 0:
                    break
    elif suffix in VIDEO_KINDS:
        text = _video_comment(path)
    elif suffix == ".gif":
        from PIL import Image

        with Image.open(path) as image:
            comment = image.info.get("comment", b"")
        text = comment[len(GIF_PREFIX):].decode("utf-8") if comment.startswith(GIF_PREFIX) else None
    elif suffix == ".json":
        try:
            recipe = json.loads(path.read_text(encoding="utf-8")).get("recipe")
        except (ValueError, AttributeError):
            recipe = None
        text = json.dumps(recipe) if isinstance(recipe, dict) else None
    elif suffix == ".csv":
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
        text = first[len(CSV_PREFIX):] if first.startswith(CSV_PREFIX) else None
    if text is None:
        raise NoRecipeError(f"{path.name} carries no WorldStudio recipe (it was not written by a runner).")
    return Recipe.from_json(text)


def rerun_main(method: str, argv: list[str]) -> int:
    """``rerun FILE [--out OUT]`` for ``python -m pipelines.<method>``: the method runner's ``rerun(recipe, out)
    -> digest`` remakes the file; prints whether the raw result is bit-identical, exits 0 when it is and 1 when
    it is not."""
    import argparse
    import importlib

    from .utils import set_torch_threads

    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{method} rerun",
                                     description="Reproduce an output from the recipe it carries.")
    parser.add_argument("file")
    parser.add_argument("--out", default=None, help="where to write the remade file (default: FILE with '-rerun')")
    args = parser.parse_args(argv)
    recipe = read_recipe(args.file)
    if recipe.method != method:
        raise InvalidInputError(f"{args.file} was made by {recipe.method}; run `python -m pipelines.{recipe.method} "
                                f"rerun {args.file}`.")
    set_torch_threads(recipe.threads)
    source = Path(args.file)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}-rerun{source.suffix}")
    got = importlib.import_module(f"pipelines.{method}.runner").rerun(recipe, out)
    same = got == recipe.output_sha256
    print(json.dumps({"file": str(out), "identical": same, "threads": recipe.threads,
                      "version": recipe.version, "now_version": __version__}))
    return 0 if same else 1
