"""Mojito's training script continues from a shipped pack (``--resume``) and writes a loadable pack."""

import json

import torch

from pipelines.models import TINY_PACK_DIR
from pipelines.mojito import MojitoPipeline
from pipelines.mojito.model import temporal_blocks
from pipelines.mojito.pipeline import MAX_FRAMES
from pipelines.mojito.train import losses_from_log, main, steps_before

SHIPPED = TINY_PACK_DIR / "shapes-t2v"


def test_two_step_resume_starts_from_the_shipped_weights(tmp_path):
    report = main(["--smoke", "--resume", str(SHIPPED), "--out", str(tmp_path / "pack"),
                   "--checkpoints", str(tmp_path / "checkpoints")])
    assert report["resumed_from"] == str(SHIPPED)
    assert report["steps_before_resume"] == steps_before(SHIPPED) >= 300
    assert json.loads((tmp_path / "pack" / "training_report.json").read_text())["steps"] == 2
    shipped = MojitoPipeline.from_pretrained(SHIPPED, local_files_only=True)
    resumed = MojitoPipeline.from_pretrained(tmp_path / "pack", local_files_only=True)
    assert resumed.motion_encoder is not None
    assert resumed.motion_encoder.config.frame_positions == MAX_FRAMES  # recorded, and applied on load:
    assert all(block.pos_embed is not None for block in temporal_blocks(resumed.unet))
    before = dict(shipped.unet.named_parameters())
    # Two small steps from the shipped weights (EMA warm-up keeps them close), not a fresh inflation.
    changes = [float((p - before[name]).abs().max().detach()) for name, p in resumed.unet.named_parameters()]
    assert max(changes) > 0
    assert max(changes) < 0.05
    zero_init = resumed.unet.get_submodule("transformer_in").proj_out.weight
    assert float(zero_init.detach().abs().max()) > 0  # trained temporal layers, not the identity start


def test_losses_are_read_back_from_a_resumed_runs_progress_bar():
    text = ("text-to-video (resumed):   1%|          | 10/1500 [00:50<2:04:10,  5.00s/it, loss=0.0700]"
            "text-to-video (resumed):   1%|          | 20/1500 [01:40<2:03:20,  5.00s/it, loss=0.0650]"
            "text-to-video (resumed):   2%|          | 30/1500 [02:30<2:02:30,  5.00s/it, loss=0.0600]")
    assert losses_from_log(text, 20) == ([0.07, 0.065], 100.0)


def test_resume_with_temporal_text_adds_and_trains_caption_attention(tmp_path):
    from pipelines.mojito.temporal_text import TemporalTextAttnProcessor, temporal_text_dims

    report = main(["--smoke", "--resume", str(SHIPPED), "--temporal-text", "--out", str(tmp_path / "pack"),
                   "--checkpoints", str(tmp_path / "checkpoints")])
    assert report["temporal_text"] is True
    resumed = MojitoPipeline.from_pretrained(tmp_path / "pack", local_files_only=True)
    assert tuple(resumed.motion_encoder.config.temporal_text_dims) == temporal_text_dims(resumed.unet)
    assert all(isinstance(block.attn1.processor, TemporalTextAttnProcessor) for block in temporal_blocks(resumed.unet))
    values = [float(kv.to_v.weight.abs().max()) for kv in resumed.motion_encoder.temporal_text]
    assert min(values) > 0  # W_vc started at zero and was trained
    shipped = MojitoPipeline.from_pretrained(SHIPPED, local_files_only=True)
    torch.testing.assert_close(resumed.motion_encoder.embedding.weight, shipped.motion_encoder.embedding.weight,
                               atol=0.05, rtol=0)  # the MIM's embedding carried over, not re-initialised
