"""People's own Winoground-style benchmarks: a ``.zip`` of a Winoground folder, or an ``examples.jsonl`` /
``.csv`` given with its image files.

Rows and images are read by :func:`~pipelines.shapesworld.benchmark.load_winoground` (each group two images and
two captions; a bad row, a missing, unreadable or huge image is refused naming the group). A zip is checked
before anything is unpacked: a readable archive, at most :data:`MAX_MEMBERS` files and :data:`MAX_UNPACKED_BYTES`
unpacked, no paths that leave the folder, no encryption.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import InvalidInputError
from ..shapesworld.benchmark import EXAMPLES_FILE, IMAGE_SUFFIXES, Group, image_index, load_winoground

TABLE_SUFFIXES = (".jsonl", ".csv")
UPLOAD_SUFFIXES = (".zip", *TABLE_SUFFIXES, *IMAGE_SUFFIXES)
# Groups one evaluation may hold (the ShapesWorld split's range too).
MAX_GROUPS = 200
# What a zip may hold: files, and bytes once unpacked (checked while unpacking, not only from its headers).
MAX_MEMBERS = 2000
MAX_UNPACKED_BYTES = 512 * 2**20


def _unpack(archive_path: Path, folder: Path) -> None:
    """Unpack ``archive_path`` into ``folder`` within the limits (module docstring)."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except (zipfile.BadZipFile, OSError):
        raise InvalidInputError(f"{archive_path.name} is not a zip file that can be opened.") from None
    with archive:
        # (folders, and the files archivers add: __MACOSX/, .DS_Store)
        members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")
                   and not PurePosixPath(m.filename).name.startswith(".")]
        if len(members) > MAX_MEMBERS:
            raise InvalidInputError(f"{archive_path.name} holds {len(members)} files; at most {MAX_MEMBERS} are read.")
        unpacked = 0
        for member in members:
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts or ":" in member.filename:
                raise InvalidInputError(f"{archive_path.name} holds a file outside its folder ({member.filename}).")
            if member.flag_bits & 0x1:
                raise InvalidInputError(f"{archive_path.name} is encrypted; upload a zip without a password.")
            target = folder.joinpath(*name.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as source, open(target, "wb") as sink:
                    while block := source.read(1 << 20):
                        unpacked += len(block)
                        if unpacked > MAX_UNPACKED_BYTES:
                            raise InvalidInputError(f"{archive_path.name} unpacks to more than "
                                                    f"{MAX_UNPACKED_BYTES // 2**20} MB.")
                        sink.write(block)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError):
                raise InvalidInputError(f"{archive_path.name} is damaged ({member.filename} cannot be read).") from None


def _examples_in(folder: Path, archive_name: str) -> Path:
    """The one examples table in an unpacked zip (``examples.jsonl`` first)."""
    tables = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
    preferred = [p for p in tables if p.name == EXAMPLES_FILE]
    if len(preferred) == 1:
        return preferred[0]
    if len(tables) == 1:
        return tables[0]
    if not tables:
        raise InvalidInputError(f"{archive_name} holds no {EXAMPLES_FILE} or .csv listing its groups.")
    raise InvalidInputError(f"{archive_name} holds {len(tables)} example tables "
                            f"({', '.join(p.name for p in tables[:4])}); keep one.")


def read_upload(files: str | Path | Sequence[str | Path]) -> list[Group]:
    """The groups of an upload: one ``.zip``, or one ``.jsonl`` / ``.csv`` with the image files it names (alone,
    the images are looked for beside it)."""
    paths = [Path(f) for f in ([files] if isinstance(files, (str, Path)) else (files or []))]
    if not paths:
        raise InvalidInputError(f"No file was given: upload a .zip, or an {EXAMPLES_FILE} or .csv with its images.")
    odd = [p.name for p in paths if p.suffix.lower() not in UPLOAD_SUFFIXES]
    if odd:
        raise InvalidInputError(f"{', '.join(odd)}: not a .zip, .jsonl, .csv or image file.")
    archives = [p for p in paths if p.suffix.lower() == ".zip"]
    tables = [p for p in paths if p.suffix.lower() in TABLE_SUFFIXES]
    if archives:
        if len(paths) > 1:
            raise InvalidInputError("Upload one .zip on its own, or the examples file with its images (no zip).")
        folder = Path(tempfile.mkdtemp(prefix="worldstudio-upload-"))
        try:
            _unpack(archives[0], folder)
            examples = _examples_in(folder, archives[0].name)
            groups = load_winoground(examples)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    elif len(tables) != 1:
        raise InvalidInputError(f"Give one {EXAMPLES_FILE} or .csv listing the groups ({len(tables)} were given).")
    else:
        images = [p for p in paths if p not in tables]
        groups = load_winoground(tables[0], images=image_index(images) if images else None)
    if len(groups) > MAX_GROUPS:
        raise InvalidInputError(f"The upload holds {len(groups)} groups; at most {MAX_GROUPS} are evaluated at once.")
    return groups
