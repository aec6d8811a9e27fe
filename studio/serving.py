"""Serve the studio (``app.py``) in a subprocess on a free loopback port: for browser tests and the load bench."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served_studio(folder: Path, timeout: float = 120.0, threads: str | None = None):
    """Yield the URL of a studio served from a fresh process; its Gradio files and log live in ``folder``.

    ``threads``: WORLDSTUDIO_THREADS for the server (None keeps the caller's, else 1).
    """
    folder = Path(folder)
    port = free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(folder / "gradio"), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    if threads is not None:
        env["WORLDSTUDIO_THREADS"] = threads
    env.setdefault("WORLDSTUDIO_THREADS", "1")
    log = open(folder / "studio.log", "w")
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=REPO_ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"studio exited early: {(folder / 'studio.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"studio did not answer at {url} within {timeout} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
