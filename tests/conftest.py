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


def use_hub_cache(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at ``cache``, offline: the variables for child processes and the constant that
    the library read at import (every download function looks it up at call time)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def hub_shaped_cache(tmp_path_factory) -> Path:
    """A Hugging Face cache with a tiny random stand-in of every hub preset checkpoint (built once)."""
    from pipelines.models.hub_shaped import write_hub_shaped_cache

    cache = tmp_path_factory.mktemp("huggingface") / "hub"
    write_hub_shaped_cache(cache)
    return cache


_HUB_MANAGERS: dict = {}
# Tests over models run on the CPU in fp32 everywhere, and again in fp16 on CUDA where a GPU exists (marked gpu).
PLACEMENTS = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


@pytest.fixture(params=PLACEMENTS)
def hub_models(request, hub_shaped_cache, monkeypatch):
    """The hub preset's ModelManager over the hub-shaped cache, offline: CPU fp32, or CUDA fp16. One per
    placement and session, so each checkpoint loads once, always while the cache is patched in."""
    from pipelines.models import ModelManager, choose_placement

    use_hub_cache(monkeypatch, hub_shaped_cache)
    device = request.param
    if device not in _HUB_MANAGERS:
        _HUB_MANAGERS[device] = ModelManager("hub", choose_placement(device, "float32" if device == "cpu" else "float16"))
    return _HUB_MANAGERS[device]
