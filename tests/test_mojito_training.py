"""Mojito's training script continues from a shipped pack (``--resume``) and writes a loadable pack."""

import json

import torch

from pipelines.models import TINY_PACK_DIR
from pipelines.mojito import MojitoPipeline
from pipelines.mojito.train import main

SHIPPED = TINY_PACK_DIR / "shapes-t2v"


def test_two_step_resume_starts_from_the_shipped_weights(tmp_path):
    report = main(["--smoke", "--resume", str(SHIPPED), "--out", str(tmp_path / "pack"),
                   "--checkpoints", str(tmp_path / "checkpoints")])
    assert report["resumed_from"] == str(SHIPPED)
    assert json.loads((tmp_path / "pack" / "training_report.json").read_text())["steps"] == 2
    shipped = MojitoPipeline.from_pretrained(SHIPPED, local_files_only=True)
    resumed = MojitoPipeline.from_pretrained(tmp_path / "pack", local_files_only=True)
    assert resumed.motion_encoder is not None
    before = dict(shipped.unet.named_parameters())
    # Two small steps from the shipped weights (EMA warm-up keeps them close), not a fresh inflation.
    changes = [float((p - before[name]).abs().max().detach()) for name, p in resumed.unet.named_parameters()]
    assert max(changes) > 0
    assert max(changes) < 0.05
    zero_init = resumed.unet.get_submodule("transformer_in").proj_out.weight
    assert float(zero_init.detach().abs().max()) > 0  # trained temporal layers, not the identity start
