"""Command line: ``python -m pipelines.matching score IMAGE CAPTION... [--methods ...]``,
``python -m pipelines.matching eval --benchmark shapesworld-comp --methods all`` and
``python -m pipelines.matching rerun FILE [--out OUT]`` (remake a generated PNG from its recipe)."""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

from ..errors import WorldStudioError, exits_on_error
from ..models import ModelManager
from ..utils import set_torch_threads
from .benchmark import collect, format_table, load_benchmark, summarise
from .methods import METHODS, Matchers, parse_methods


def _score(args: argparse.Namespace, matchers: Matchers) -> None:
    try:
        with Image.open(args.image) as opened:
            image = np.asarray(opened.convert("RGB"))
    except OSError as error:
        raise WorldStudioError(f"Cannot read the image {args.image}: {error}") from error
    for method in parse_methods(args.methods):
        result = matchers.scorer(method)(image, args.captions)
        print(f"{method} ({result.seconds:.2f} s, {result.unet_evaluations} UNet evaluations)")
        for rank, index in enumerate(result.ranking(), start=1):
            print(f"  {rank}. {result.scores[index]:+.4f}  {result.captions[index]}")


def _eval(args: argparse.Namespace, matchers: Matchers) -> None:
    groups = load_benchmark(args.benchmark, n=args.groups, seed=args.seed)
    summaries = []
    for method in parse_methods(args.methods):
        outcomes = collect(groups, matchers.scorer(method), desc=method)
        summaries.append(summarise(method, next(iter(outcomes.values()))))
    print(f"{args.benchmark}: {len(groups)} groups")
    print(format_table(summaries))


@exits_on_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rerun"]:
        from ..recipes import rerun_main

        return rerun_main("matching", argv[1:])
    parser = argparse.ArgumentParser(prog="python -m pipelines.matching", description=__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--offsets", help="prompt-learned offsets (.safetensors) for Discffusion")
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="rank captions for one image")
    score.add_argument("image")
    score.add_argument("captions", nargs="+")
    score.add_argument("--methods", default="discffusion,clip", help=f"comma-separated from {list(METHODS)} or 'all'")
    evaluate = sub.add_parser("eval", help="Winoground-style accuracy on a benchmark")
    evaluate.add_argument("--benchmark", default="shapesworld-comp",
                          help="'shapesworld-comp', or a Winoground-format folder, .zip, examples.jsonl or .csv")
    evaluate.add_argument("--methods", default="all")
    evaluate.add_argument("--groups", type=int, default=200)
    evaluate.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_torch_threads()
    matchers = Matchers(ModelManager(args.preset))
    if args.offsets:
        matchers.load_offsets(args.offsets)
    (_score if args.command == "score" else _eval)(args, matchers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
