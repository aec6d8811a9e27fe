"""The tiny pack on CUDA in fp16 (run by scripts/gpu_check.sh; skipped without a GPU): FlexEControl and Mojito
run and make non-blank outputs of the CPU's shapes (Match's accuracy checks run on CUDA in test_matching_pack)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.models import TINY_PACK_DIR, ModelManager, choose_placement

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager("tiny", choose_placement("cuda", "float16"))


def test_flexecontrol_draws_the_outlined_circle_in_fp16(manager):
    from pipelines.flexecontrol.runner import ConditionInput, FlexEControlRequest, FlexEControlRunner

    drawing = np.zeros((64, 64, 3), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    drawing[np.abs(np.hypot(yy - 32, xx - 20) - 10) < 1.5] = 255
    report = FlexEControlRunner(manager).run(FlexEControlRequest("a red circle", [ConditionInput("sketch", drawing)],
                                                                 steps=20), progress=False)
    assert report.image.shape == (64, 64, 3) and report.image.std() > 5  # not a blank or NaN-black image
    assert len(report.rows[0]["objects"]) == 1  # the outline is read as one object


@pytest.mark.skipif(not (TINY_PACK_DIR / "shapes-t2v").is_dir(), reason="needs the shapes-t2v pack")
def test_mojito_guides_a_video_in_fp16(manager):
    from pipelines.mojito.runner import MojitoRequest, MojitoRunner, TrajectoryInput

    request = MojitoRequest("a red circle moves from left to right", [TrajectoryInput(
        "red circle", [[0, 0.05, 0.35, 0.35, 0.65], [15, 0.65, 0.35, 0.95, 0.65]])], steps=10)
    report = MojitoRunner(manager).run(request)
    assert report.frames.shape[0] == 16 and report.frames.std() > 5 and np.isfinite(report.measured)
    assert 0.0 <= report.objects[0].metrics.miou <= 1.0
