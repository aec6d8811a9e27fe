"""The request is the recipe: every output file carries how it was made.

A :class:`Recipe` is a runner's request as plain JSON plus what it ran on: the
preset, a content hash of each model folder it used, the package version, the
torch thread count, and a SHA-256 of the raw result (pixels or scene arrays)
so that ``python -m pipelines.<method> rerun FILE`` can say whether it got the
same bits back. Where it is stored depends on the kind of file:

* PNG: a ``worldstudio-recipe`` text chunk;
* NPZ: a ``recipe`` entry (uint8 bytes of the JSON);
* PLY: a ``comment worldstudio-recipe {...}`` header line;
* MP4, WebM and GIF: a sidecar ``FILE.recipe.json`` beside the video.
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
SIDECAR_SUFFIX = ".recipe.json"
SIDECAR_KINDS = (".mp4", ".webm", ".gif")


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


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_png(image: np.ndarray, path: str | Path, recipe: Recipe) -> Path:
    """``image`` (uint8 [H, W, 3]) as a PNG whose text chunk holds ``recipe``."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    info = PngInfo()
    info.add_text(PNG_KEY, recipe.to_json())
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG", pnginfo=info)
    return path


def attach(path: str | Path, recipe: Recipe) -> Path:
    """Store ``recipe`` with a file already written: NPZ entry, PLY comment or video sidecar."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open("recipe.npy", "w") as handle:
                np.lib.format.write_array(handle, np.frombuffer(recipe.to_json().encode("utf-8"), np.uint8))
    elif suffix == ".ply":
        raw = path.read_bytes()
        end = raw.index(b"end_header\n")
        line = PLY_PREFIX + recipe.to_json().encode("ascii") + b"\n"
        path.write_bytes(raw[:end] + line + raw[end:])
    elif suffix in SIDECAR_KINDS:
        sidecar(path).write_text(recipe.to_json(), encoding="utf-8")
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
    elif suffix == ".ply":
        with open(path, "rb") as handle:
            for line in iter(handle.readline, b""):
                if line.startswith(PLY_PREFIX):
                    text = line[len(PLY_PREFIX):].decode("ascii")
                    break
                if line.startswith(b"end_header") or len(line) == 0:
                    break
    elif suffix in SIDECAR_KINDS and sidecar(path).is_file():
        text = sidecar(path).read_text(encoding="utf-8")
    if text is None:
        raise NoRecipeError(f"{path.name} carries no WorldStudio recipe (it was not written by a runner).")
    return Recipe.from_json(text)


def rerun_main(method: str, argv: list[str], rerun) -> int:
    """``rerun FILE [--out OUT]`` for ``python -m pipelines.<method>``: ``rerun(recipe, out) -> digest`` remakes
    the file; prints whether the raw result is bit-identical, exits 0 when it is and 1 when it is not."""
    import argparse

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
    got = rerun(recipe, out)
    same = got == recipe.output_sha256
    print(json.dumps({"file": str(out), "identical": same, "threads": recipe.threads,
                      "version": recipe.version, "now_version": __version__}))
    return 0 if same else 1
