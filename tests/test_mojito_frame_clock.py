"""The level's frame clock (pipelines/mojito/frame_clock.py) on tiny random components."""

import pytest
import torch
from test_mojito import assert_concurrent_calls_match_alone, denoise, tiny_components

from pipelines.mojito import MojitoPipeline
from pipelines.mojito.frame_clock import LevelClock, add_frame_clock
from pipelines.mojito.model import FramePositions, add_frame_positions, sinusoidal_positions, temporal_blocks
from pipelines.mojito.modulator import MotionIntensityEncoder
from pipelines.mojito.pack import save_pack
from pipelines.mojito.train import VideoDenoiser, parse_args, upgrade_motion_conditioning


def clocked(seed: int = 0) -> VideoDenoiser:
    """Tiny components with 16 frame positions, the "tokens" MIM (ordinal level rows) and the frame clock."""
    parts = tiny_components(seed)
    add_frame_positions(parts["unet"], 16)
    model = VideoDenoiser(parts["unet"].eval(), parts["text_encoder"],
                          MotionIntensityEncoder(embedding_dim=32, frame_positions=16))
    upgrade_motion_conditioning(model, temporal_text=False, mim_tokens=True, frame_clock=True)
    model.motion_encoder.start_levels_at(5.0)
    return model


def contexts(model: VideoDenoiser, levels, seed: int = 0) -> torch.Tensor:
    text = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(seed)).expand(len(levels), -1, -1)
    return model.motion_encoder(text, model.motion_encoder.index(levels)).detach()


def test_sinusoids_at_integer_times_are_diffusers_table():
    table = FramePositions(24, 16).table
    torch.testing.assert_close(sinusoidal_positions(torch.arange(16.0), 24), table[0])
    # half-way times lie between their neighbours on the slowest channel pair (cos falls monotonically there)
    half = sinusoidal_positions(torch.tensor([2.5]), 24)[0]
    assert table[0, 3, -1] < half[-1] < table[0, 2, -1]


def test_clock_reads_each_rows_level_off_c_m():
    model = clocked()
    clock = LevelClock(model.motion_encoder.embedding, model.unet._caption_of_this_call)
    model.unet._caption_of_this_call.caption = contexts(model, [None, 1, 5, 8, 10])
    torch.testing.assert_close(clock(), torch.tensor([1.0, 0.2, 1.0, 1.6, 2.0]))
    model.unet._caption_of_this_call.caption = None
    assert clock() is None


def test_clocked_positions_by_hand():
    """Rate 2 over 6 frames: the frames get the table's rows 0, 2, ..., 10, each video its own rate."""
    positions = FramePositions(8, 16)
    positions.clock = lambda: torch.tensor([2.0, 0.5])
    hidden = torch.randn(2 * 3, 6, 8)  # 2 videos x 3 pixels, 6 frames
    out = positions(hidden)
    torch.testing.assert_close(out[:3], hidden[:3] + positions.table[:, 0:12:2])
    torch.testing.assert_close(out[3:], hidden[3:] + sinusoidal_positions(torch.arange(6) * 0.5, 8))


def test_level_five_is_the_plain_model_and_other_levels_change_it():
    model = clocked(1)
    video = torch.randn(1, 4, 6, 16, 16)
    c = {level: contexts(model, [level], seed=1) for level in (None, 5, 10)}
    with_clock = {level: denoise(model.unet, video, x) for level, x in c.items()}
    for block in temporal_blocks(model.unet):
        block.pos_embed.clock = None
    plain = {level: denoise(model.unet, video, x) for level, x in c.items()}
    torch.testing.assert_close(with_clock[5], plain[5])  # rate 1: the frame indices themselves
    torch.testing.assert_close(with_clock[None], plain[None])
    assert (with_clock[10] - plain[10]).abs().mean() > 1e-4


def test_pack_with_clock_loads_back_with_it_and_calls_do_not_leak(tmp_path):
    model = clocked(2)
    parts = tiny_components(2)
    save_pack(tmp_path, MojitoPipeline(**{**parts, "unet": model.unet, "motion_encoder": model.motion_encoder}),
              model.unet, model.text_encoder, model.motion_encoder)
    loaded = MojitoPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.motion_encoder.config.frame_clock
    clocks = {block.pos_embed.clock for block in temporal_blocks(loaded.unet)}
    assert len(clocks) == 1 and next(iter(clocks)).embedding is loaded.motion_encoder.embedding
    assert_concurrent_calls_match_alone(loaded.unet)


def test_clock_needs_tokens_and_frame_positions():
    with pytest.raises(ValueError, match="frame clock"):
        MotionIntensityEncoder(embedding_dim=32, combine="add", frame_positions=16, frame_clock=True)
    with pytest.raises(ValueError, match="frame clock"):
        MotionIntensityEncoder(embedding_dim=32, combine="tokens", frame_clock=True)
    with pytest.raises(ValueError, match="has none"):
        add_frame_clock(tiny_components()["unet"], torch.nn.Embedding(11, 32))
    with pytest.raises(SystemExit):
        parse_args(["--frame-clock"])
    with pytest.raises(SystemExit):
        parse_args(["--frame-clock", "--mim-tokens", "--frame-positions", "0"])
    assert parse_args(["--frame-clock", "--mim-tokens"]).frame_clock
