"""Test-wide settings: one torch thread (FACTS.md: 2 threads beside a busy
process ran tiny pipelines 50-150x slower), offline hub, artifacts folder."""

import os
from pathlib import Path

os.environ.setdefault("WORLDSTUDIO_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["WORLDSTUDIO_THREADS"]))

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Folder for files a test keeps for people to look at (screenshots, samples)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
