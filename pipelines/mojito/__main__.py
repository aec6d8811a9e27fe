"""Command line for Mojito: ``python -m pipelines.mojito rerun FILE [--out OUT]`` remakes a video from the
recipe beside it (training is ``python -m pipelines.mojito.train``)."""

from __future__ import annotations

import argparse
import sys

from ..errors import exits_on_error


@exits_on_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rerun"]:
        from ..recipes import rerun_main

        return rerun_main("mojito", argv[1:])
    parser = argparse.ArgumentParser(prog="python -m pipelines.mojito", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["rerun"])
    parser.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
