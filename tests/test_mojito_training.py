"""Mojito's training script continues from a shipped pack (``--resume``) and writes a loadable pack."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipelines.models import TINY_PACK_DIR
from pipelines.mojito import MojitoPipeline
from pipelines.mojito.model import temporal_blocks
from pipelines.mojito.pipeline import MAX_FRAMES
from pipelines.mojito.train import (
    build_video_arrays,
    draw_timesteps,
    losses_from_log,
    main,
    motion_targets,
    object_weighted_error,
    per_frame_attention_loss,
    steps_before,
    without_speed_word,
)
from pipelines.errors import InvalidInputError
from pipelines.shapesworld import sample_video
from pipelines.tinypack.train import GROUNDING_SCALE, place_directions

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


def test_speed_word_is_removed_and_nothing_else():
    assert without_speed_word("a red circle moves quickly from left to right") == "a red circle moves from left to right"
    assert (without_speed_word("a blue square slides toward the top left steadily while a red circle stays still")
            == "a blue square slides toward the top left while a red circle stays still")
    assert without_speed_word("a red circle stays still") == "a red circle stays still"


def test_video_arrays_keep_each_objects_mask_per_frame():
    videos = build_video_arrays(3, 64, 4, mask_side=16)
    assert videos.object_masks.shape == (3, 4, 3, 16, 16)
    video = sample_video(1, size=64, n_frames=4)
    for j, obj in enumerate(video.objects):
        expected = obj.masks.reshape(4, 16, 4, 16, 4).mean(axis=(2, 4)) * 255
        assert np.abs(videos.object_masks[1, :, j].astype(float) - expected).max() <= 0.5
    assert videos.object_words[1] == [o.spec.words for o in video.objects]


def test_per_frame_supervision_and_speed_dropout_change_training_and_are_reported(tmp_path, monkeypatch):
    def run(*extra: str) -> dict:
        return main(["--smoke", "--resume", str(SHIPPED), "--out", str(tmp_path / "-".join(extra or ("plain",))),
                     "--checkpoints", str(tmp_path / "checkpoints"), "--supervision-max-timestep", "1000", *extra])

    plain = run()["stages"]
    supervised = run("--attention-supervision", "1000")
    assert supervised["attention_supervision"] == 1000.0
    first = next(iter(plain))
    assert supervised["stages"][first]["final_loss"] > plain[first]["final_loss"] + 1.0
    assert run("--speed-word-dropout", "1.0")["speed_word_dropout"] == 1.0
    for module in ("pipelines.training", "pipelines.mojito.train"):  # bf16 runs and is reported, even where emulated
        monkeypatch.setattr(f"{module}.fast_bf16", lambda device: True)
    mixed = run("--bf16")
    assert mixed["bf16"] is True
    assert mixed["stages"][first]["final_loss"] == pytest.approx(plain[first]["final_loss"], rel=0.1)


def recorded(maps: torch.Tensor) -> SimpleNamespace:
    """A stand-in for a CrossAttentionControl that recorded ``maps`` on one layer."""
    return SimpleNamespace(layers=["layer"], store=SimpleNamespace(maps_for=lambda name: maps))


def test_per_frame_attention_loss_repeats_token_sets_over_frames():
    """Two frames, one object: the loss equals eq. 9.4 computed by hand on the per-frame maps."""
    maps = torch.zeros(1, 2, 1, 2, 2, 3)  # [B, T, heads, h, w, tokens]: one video, two frames
    maps[0, 0, 0, 0, 0, 1] = 1.0  # frame 0: the object token attends at the top-left pixel only
    maps[0, 1, 0, :, :, 1] = 0.5  # frame 1: half everywhere
    token_sets = torch.tensor([[[0.0, 1.0, 0.0]]])  # [B, J, tokens]
    masks = torch.zeros(1, 2, 1, 2, 2, dtype=torch.uint8)
    masks[0, 0, 0, 0, 0] = 255  # frame 0: object at the top-left
    masks[0, 1, 0, 1, 1] = 255  # frame 1: object at the bottom-right
    loss = per_frame_attention_loss(recorded(maps), token_sets, torch.tensor([[True]]), masks, torch.tensor([False]),
                                    torch.tensor([True]), "cpu")
    frame0 = 0.0
    frame1 = (3 * 0.25 + 0.25) / 4  # (0.5 - 0)^2 on three pixels, (0.5 - 1)^2 on one
    assert float(loss) == pytest.approx((frame0 + frame1) / 2)
    dropped = per_frame_attention_loss(recorded(maps), token_sets, torch.tensor([[True]]), masks, torch.tensor([True]),
                                       torch.tensor([True]), "cpu")
    assert float(dropped) == 0.0


def test_per_frame_attention_loss_ignores_the_mims_extra_tokens():
    """With the MIM's "tokens" reading the maps have two more tokens than the caption; the loss is the same as
    on the caption's tokens alone."""
    torch.manual_seed(0)
    maps = torch.rand(1, 2, 1, 2, 2, 5)  # 3 caption tokens + 2 c_M tokens
    masks = torch.randint(0, 256, (1, 2, 1, 2, 2), dtype=torch.uint8)
    token_sets = torch.tensor([[[0.0, 1.0, 0.0]]])
    args = (torch.tensor([[True]]), masks, torch.tensor([False]), torch.tensor([True]), "cpu")
    with_extra = per_frame_attention_loss(recorded(maps), token_sets, *args)
    assert float(with_extra) == pytest.approx(float(per_frame_attention_loss(recorded(maps[..., :3]), token_sets, *args)))


def test_motion_targets_are_the_mean_place_and_the_unit_direction_by_hand():
    """A 4x4 grid, three frames: object 0 moves one cell right per frame on row 1, object 1 stays put."""
    masks = torch.zeros(1, 3, 2, 4, 4)
    for t in range(3):
        masks[0, t, 0, 1, t] = 1.0  # object 0 at (x = t, y = 1)
        masks[0, t, 1, 3, 3] = 1.0  # object 1 at (3, 3)
    targets = motion_targets(masks)
    centre = lambda cell: (cell + 0.5) / 4 - 0.5  # noqa: E731
    torch.testing.assert_close(targets[0, 0], torch.tensor([centre(1), centre(1), 0.5, 0.0]))  # mean x of 0,1,2
    torch.testing.assert_close(targets[0, 1], torch.tensor([centre(3), centre(3), 0.0, 0.0]))  # still: no direction
    diagonal = torch.zeros(1, 2, 1, 4, 4)
    diagonal[0, 0, 0, 3, 0] = diagonal[0, 1, 0, 0, 3] = 1.0  # bottom-left to top-right
    torch.testing.assert_close(targets.new_tensor([0.5, -0.5]) / 2 ** 0.5, motion_targets(diagonal)[0, 0, 2:])


def test_motion_directions_extend_the_image_models_place_directions():
    image = place_directions(64)
    video = place_directions(64, 4)
    torch.testing.assert_close(video[:, :2], image)  # the video model reads places as its base did
    torch.testing.assert_close(video.T @ video, torch.eye(4) * GROUNDING_SCALE ** 2, atol=1e-5, rtol=0)


def test_motion_grounding_adds_its_term_and_is_reported(tmp_path):
    def run(*extra: str) -> dict:
        return main(["--smoke", "--out", str(tmp_path / "-".join(extra or ("plain",))),
                     "--checkpoints", str(tmp_path / "checkpoints"), *extra])

    plain, grounded = run(), run("--text-grounding", "100")
    assert grounded["text_grounding"] == 100.0 and plain["text_grounding"] == 0.0
    first = next(iter(plain["stages"]))
    assert grounded["stages"][first]["final_loss"] > plain["stages"][first]["final_loss"] + 1.0


def test_high_noise_share_moves_that_share_of_timesteps_above_its_first_timestep():
    uniform = draw_timesteps(4000, 1000, 0.0, 600, torch.Generator().manual_seed(0))
    torch.testing.assert_close(uniform, torch.randint(0, 1000, (4000,), generator=torch.Generator().manual_seed(0)))
    assert abs(float((uniform >= 600).float().mean()) - 0.4) < 0.03
    half = draw_timesteps(4000, 1000, 0.5, 600, torch.Generator().manual_seed(0))
    assert abs(float((half >= 600).float().mean()) - (0.5 + 0.5 * 0.4)) < 0.03  # 0.7 expected
    assert int(half.min()) >= 0 and int(half.max()) <= 999
    assert int(draw_timesteps(500, 1000, 1.0, 800, torch.Generator().manual_seed(1)).min()) >= 800
    for share, first in ((1.5, 600), (0.3, 1000), (0.3, -1)):
        with pytest.raises(InvalidInputError):
            draw_timesteps(8, 1000, share, first, torch.Generator())


def test_object_weighted_error_counts_covered_cells_by_one_plus_weight():
    prediction, target = torch.zeros(1, 2, 1, 1, 2), torch.tensor([1.0, 2.0]).expand(1, 2, 1, 1, 2)
    # Two objects: the first covers cell 0 fully, the second cell 0 and half of cell 1 (255 = full).
    coverage = torch.tensor([[[[[255, 0]], [[255, 128]]]]], dtype=torch.uint8)  # [B=1, T=1, J=2, h=1, w=2]
    weighted = object_weighted_error(prediction, target, coverage, 4.0)
    # cell 0: error 1 at weight 1 + 4 * 1 (coverage capped at 1); cell 1: error 4 at weight 1 + 4 * 128/255
    expected = (1.0 * 5.0 + 4.0 * (1 + 4 * 128 / 255)) / 2
    torch.testing.assert_close(weighted, torch.tensor([expected]))
    torch.testing.assert_close(object_weighted_error(prediction, target, None, 4.0), torch.tensor([2.5]))
    torch.testing.assert_close(object_weighted_error(prediction, target, coverage, 0.0), torch.tensor([2.5]))


@pytest.mark.parametrize("option", ["--snr-floor", "--object-loss-weight", "--mim-start-norm"])
def test_negative_loss_and_start_options_are_refused(option, capsys):
    with pytest.raises(SystemExit):
        main(["--smoke", option, "-1"])
    assert f"{option} must be 0 or more" in capsys.readouterr().err


def test_fresh_pack_keeps_the_image_models_head_split_and_reports_the_high_noise_share(tmp_path):
    report = main(["--smoke", "--out", str(tmp_path / "pack"), "--checkpoints", str(tmp_path / "checkpoints"),
                   "--high-noise-share", "0.5", "--high-noise-from", "700", "--snr-floor", "0.2",
                   "--object-loss-weight", "2", "--mim-start-norm", "3"])
    assert (report["high_noise_share"], report["high_noise_from"]) == (0.5, 700)
    assert (report["snr_floor"], report["object_loss_weight"], report["mim_start_norm"]) == (0.2, 2.0, 3.0)
    base_heads = tuple(json.loads((TINY_PACK_DIR / "shapes-sd" / "unet" / "config.json").read_text())["attention_head_dim"])
    pipe = MojitoPipeline.from_pretrained(tmp_path / "pack", local_files_only=True)
    assert tuple(pipe.motion_encoder.config.spatial_heads) == base_heads
    # two small steps from level rows of length 3
    torch.testing.assert_close(pipe.motion_encoder.embedding.weight[1:].norm(dim=1), torch.full((10,), 3.0),
                               atol=0.05, rtol=0)
    assert pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn2.heads == base_heads[-1]
    assert pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.heads == base_heads[0]
