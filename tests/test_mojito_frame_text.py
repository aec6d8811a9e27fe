"""Frame-aware text (pipelines/mojito/frame_text.py) on tiny random components."""

import math

import pytest
import torch
from test_mojito import assert_concurrent_calls_match_alone, denoise, tiny_components

from pipelines.attention.layers import attention_module, cross_attention_layers
from pipelines.mojito import MojitoPipeline
from pipelines.mojito.frame_text import GRID_OCTAVES, FrameText, add_frame_text, frame_text_query_dims, grid_features
from pipelines.mojito.model import add_frame_positions
from pipelines.mojito.pack import save_pack
from pipelines.mojito.train import VideoDenoiser, upgrade_motion_conditioning


def equipped(seed: int = 0) -> VideoDenoiser:
    parts = tiny_components(seed)
    parts["motion_encoder"].register_to_config(frame_positions=8)
    model = VideoDenoiser(parts["unet"].eval(), parts["text_encoder"], parts["motion_encoder"])
    add_frame_positions(model.unet, 8)
    upgrade_motion_conditioning(model, temporal_text=False, mim_tokens=False, frame_text_layers=1)
    return model


def wake(frame_text: FrameText, std: float = 0.5) -> None:
    """Move the zero-initialised outputs off zero, as training does."""
    torch.nn.init.normal_(frame_text.out.weight, std=std)
    for projection in frame_text.query_positions:
        torch.nn.init.normal_(projection.weight, std=std)


def test_grid_features_by_hand():
    features = grid_features(2, 2)
    assert features.shape == (4, 4 * GRID_OCTAVES)
    # pixel 1 (row 0, column 1): x = 0.75, y = 0.25; octave k: sin, cos of pi 2^k x, then of y
    x, y = 0.75, 0.25
    angles = [math.pi * 2**k for k in range(GRID_OCTAVES)]
    expected = [math.sin(a * x) for a in angles] + [math.cos(a * x) for a in angles] \
        + [math.sin(a * y) for a in angles] + [math.cos(a * y) for a in angles]
    torch.testing.assert_close(features[1], torch.tensor(expected))
    # every place has its own code
    codes = grid_features(16, 16)
    assert torch.cdist(codes, codes).add(torch.eye(256) * 10).min() > 0.1


def test_contexts_by_hand_and_start_as_the_caption():
    torch.manual_seed(0)
    frame_text = FrameText(text_dim=8, query_dims=(16,), layers=1, heads=2, max_frames=6).eval()
    caption = torch.randn(2, 3, 8)
    start = frame_text.contexts(caption, 4)
    torch.testing.assert_close(start, caption.repeat_interleave(4, dim=0))  # W_o = 0
    wake(frame_text)
    contexts = frame_text.contexts(caption, 4)
    assert contexts.shape == (8, 3, 8)
    for b in range(2):
        for f in range(4):
            token = frame_text.frame_in(frame_text.frame_table[f])
            mixed = frame_text.mixer(torch.cat([caption[b], token[None]])[None])[0, :3]
            torch.testing.assert_close(contexts[b * 4 + f], caption[b] + frame_text.out(mixed), atol=1e-5, rtol=1e-5)
    assert (contexts[0] - contexts[3]).abs().max() > 1e-2  # frames differ
    with pytest.raises(ValueError, match="frame tokens"):
        frame_text.contexts(caption, 7)


def test_cross_attention_reads_per_frame_contexts():
    model = equipped(1)
    frame_text = model.motion_encoder.frame_text
    wake(frame_text)
    seen = {}
    for name in cross_attention_layers(model.unet):
        attention_module(model.unet, name).register_forward_hook(
            lambda m, args, kwargs, out, name=name: seen.update({name: kwargs["encoder_hidden_states"]}),
            with_kwargs=True)
    video, caption = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 5, 32)
    denoise(model.unet, video, caption)
    with torch.no_grad():
        expected = frame_text.contexts(caption, 3)
    assert len(seen) == len(cross_attention_layers(model.unet)) > 0
    for context in seen.values():
        torch.testing.assert_close(context, expected)


def test_equipped_model_starts_unchanged_then_depends_on_the_frame():
    parts = tiny_components(2)
    plain = parts["unet"].eval()
    video, caption = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 5, 32)
    before = denoise(plain, video, caption)
    model = VideoDenoiser(plain, parts["text_encoder"], parts["motion_encoder"])
    upgrade_motion_conditioning(model, temporal_text=False, mim_tokens=False, frame_text_layers=1)
    assert model.motion_encoder.config.frame_text_query_dims == frame_text_query_dims(plain)
    assert torch.equal(denoise(plain, video, caption), before)  # zero W_o and W_p: the identity start
    wake(model.motion_encoder.frame_text)
    after = denoise(plain, video, caption)
    assert (after - before).abs().max() > 1e-3
    # Only the frame tokens differ between frames: other frame tokens change the output.
    with torch.no_grad():
        model.motion_encoder.frame_text.frame_in.weight.add_(torch.randn(32, 32))
    assert (denoise(plain, video, caption) - after).abs().max() > 1e-3


def test_query_positions_are_added_to_the_query_input_only():
    model = equipped(3)
    frame_text = model.motion_encoder.frame_text
    wake(frame_text)
    layer = 0
    attn = attention_module(model.unet, cross_attention_layers(model.unet)[layer])
    seen = []
    attn.register_forward_hook(lambda m, args, kwargs, out: seen.append(args[0]), with_kwargs=True)
    video, caption = torch.randn(1, 4, 2, 16, 16), torch.randn(1, 5, 32)
    denoise(model.unet, video, caption)
    with_positions = seen[-1]
    side = math.isqrt(with_positions.shape[1])
    expected = (grid_features(side, side) @ frame_text.query_positions[layer].weight.T).detach()  # W_p g(x, y)
    for projection in frame_text.query_positions:
        projection.weight.data.zero_()
    denoise(model.unet, video, caption)
    torch.testing.assert_close(with_positions - seen[-1], expected.expand_as(with_positions), atol=1e-5, rtol=1e-5)


def test_widths_must_match_and_maps_must_be_square():
    unet = tiny_components()["unet"]
    wrong = FrameText(32, tuple(d + 1 for d in frame_text_query_dims(unet)))
    with pytest.raises(ValueError, match="do not match"):
        add_frame_text(unet, wrong)
    right = FrameText(32, frame_text_query_dims(unet))
    with pytest.raises(ValueError, match="square"):
        right.positions(0, 12, torch.float32)


def test_pack_with_frame_text_loads_back_with_it(tmp_path):
    model = equipped(4)
    wake(model.motion_encoder.frame_text)
    parts = tiny_components(4)
    save_pack(tmp_path, MojitoPipeline(**{**parts, "unet": model.unet, "motion_encoder": model.motion_encoder}),
              model.unet, model.text_encoder, model.motion_encoder)
    loaded = MojitoPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.motion_encoder.config.frame_text_layers == 1
    assert loaded.unet._frame_text["module"] is loaded.motion_encoder.frame_text
    video, caption = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 5, 32)
    # (saving rounded the UNet to float16 and back, as the pack stores it)
    torch.testing.assert_close(denoise(loaded.unet, video, caption), denoise(model.unet, video, caption),
                               atol=1e-4, rtol=1e-4)


def test_concurrent_calls_each_use_their_own_contexts():
    model = equipped(5)
    wake(model.motion_encoder.frame_text)
    assert_concurrent_calls_match_alone(model.unet)
