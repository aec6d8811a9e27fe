"""Command line: write ShapesWorld samples or the Winoground-format benchmark.

    python -m pipelines.shapesworld sample --n 16 --out DIR [--size 64] [--seed 0]
                                          [--split train|test] [--video] [--frames 16]
    python -m pipelines.shapesworld benchmark --n 200 --out DIR [--size 64] [--seed 0]

``sample`` writes ``NNNNN.png`` (``NNNNN.gif`` with ``--video``) and
``NNNNN.json`` (the truth) per sample, plus ``index.json``. Sample ``i`` uses
``scene.derive_seed(seed, i)``, the seed of item ``i`` of the datasets, so the
files match ``ShapesImageDataset(n, size, seed, split)[i]``. Bad arguments
print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

from ..errors import InvalidInputError, exits_on_error
from .benchmark import compositional_groups, save_winoground
from .scene import SPLITS, check_size, derive_seed, sample_scene
from .video import check_frames, sample_video

# Display time of one GIF frame in milliseconds.
GIF_FRAME_MS = 100


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the usage and exit by itself
        raise InvalidInputError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipelines.shapesworld", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sample = commands.add_parser("sample", help="write sample images or videos with their truth")
    sample.add_argument("--n", type=int, required=True, help="number of samples")
    sample.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    sample.add_argument("--size", type=int, default=64, help="frame side in pixels")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--split", default="train", help="train or test (held-out compositions)")
    sample.add_argument("--video", action="store_true", help="write videos (GIF) instead of images")
    sample.add_argument("--frames", type=int, default=16, help="frames per video")
    bench = commands.add_parser("benchmark", help="write the Winoground-format compositional split")
    bench.add_argument("--n", type=int, default=200, help="number of groups")
    bench.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    bench.add_argument("--size", type=int, default=64)
    bench.add_argument("--seed", type=int, default=0)
    return parser


def _check(args: argparse.Namespace) -> None:
    """Validate arguments before any work, and make the output folder."""
    if args.n < 1:
        raise InvalidInputError(f"--n must be at least 1, got {args.n}")
    if args.seed < 0:
        raise InvalidInputError(f"--seed must be non-negative, got {args.seed}")
    check_size(args.size)
    if args.command == "sample":
        if args.split not in SPLITS:
            raise InvalidInputError(f"--split must be one of {', '.join(SPLITS)}, got {args.split!r}")
        if args.video:
            check_frames(args.frames)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        probe = args.out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InvalidInputError(f"cannot write to {args.out}: {error.strerror or error}") from error


def _write_samples(args: argparse.Namespace) -> None:
    entries = []
    for index in range(args.n):
        seed = derive_seed(args.seed, index)
        stem = f"{index:05d}"
        if args.video:
            video = sample_video(seed, args.size, args.frames)
            frames = [Image.fromarray(frame) for frame in video.frames]
            media = f"{stem}.gif"
            frames[0].save(args.out / media, save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
            record = video.record()
        else:
            scene = sample_scene(seed, args.size, split=args.split)
            media = f"{stem}.png"
            Image.fromarray(scene.image).save(args.out / media)
            record = scene.record()
        record.update(index=index, file=media)
        (args.out / f"{stem}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        entries.append({"index": index, "file": media, "truth": f"{stem}.json", "caption": record["caption"]})
    index = {
        "kind": "video" if args.video else "image",
        "n": args.n,
        "size": args.size,
        "seed": args.seed,
        "split": None if args.video else args.split,
        "samples": entries,
    }
    (args.out / "index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    print(f"wrote {args.n} {'videos' if args.video else 'images'} to {args.out}")


@exits_on_error
def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    _check(args)
    if args.command == "sample":
        _write_samples(args)
    else:
        examples = save_winoground(compositional_groups(args.n, args.seed, args.size), args.out)
        print(f"wrote {args.n} groups to {examples}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
