"""WorldStudio entry point: builds the studio and serves it (also the Space's app_file)."""

from __future__ import annotations

import argparse
import os
import sys

from pipelines.errors import exits_on_error
from pipelines.utils import set_torch_threads
from pipelines.zerogpu import on_zero_gpu
from studio import StudioContext, build_studio


@exits_on_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve WorldStudio.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--preset", default=os.environ.get("WORLDSTUDIO_PRESET", "tiny"))
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: automatic)")
    args = parser.parse_args(argv)
    set_torch_threads()
    context = StudioContext(preset=args.preset, device=args.device)
    if on_zero_gpu():  # ZeroGPU: models placed at start-up, outside the calls that borrow a GPU
        context.manager.preload()
    studio = build_studio(context)
    studio.launch(server_name=args.host, server_port=args.port, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
