"""The runners share one ModelManager: derived objects are built once (also under concurrent calls), every
runner honours the manager's preset, and Morpho4D's frames come from the Mojito runner's pipeline."""

from __future__ import annotations

import threading
import time

import pytest

from pipelines.errors import ModelNotFoundError
from pipelines.models import TINY_PACK_DIR, ModelManager
from pipelines.models.presets import method_weights


def test_derived_objects_are_built_once_per_manager_even_from_several_threads():
    manager = ModelManager("tiny")
    calls = []

    def build():
        calls.append(1)
        time.sleep(0.05)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(manager.derived("thing", build))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1
    assert ModelManager("tiny").derived("thing", build) is not results[0] and len(calls) == 2


def test_each_runner_follows_the_preset():
    from pipelines.flexecontrol.runner import FlexEControlRunner
    from pipelines.morpho4d.runner import Morpho4DRunner

    assert method_weights("tiny", "flexecontrol") == TINY_PACK_DIR / "flexecontrol"
    with pytest.raises(ModelNotFoundError, match="Preset 'hub' has no flexecontrol weights"):
        FlexEControlRunner(ModelManager("hub")).pipe  # nothing falls back to the tiny weights
    hub = Morpho4DRunner(ModelManager("hub"))
    assert hub.resolved_frames() == "mojito" and hub.manager.preset == "hub"  # the hub's video model, not tiny's


@pytest.mark.skipif(not (TINY_PACK_DIR / "shapes-t2v").is_dir(), reason="needs the shapes-t2v pack")
def test_morpho4d_frames_come_from_the_mojito_runners_pipeline():
    from pipelines.mojito.runner import MojitoRunner
    from pipelines.morpho4d.runner import Morpho4DRunner

    manager = ModelManager("tiny")
    source = Morpho4DRunner(manager).frame_source("mojito")
    assert source.pipe is MojitoRunner(manager).pipe  # the video model loads once for both tabs
    assert manager.loaded() == ["text-to-video"]
