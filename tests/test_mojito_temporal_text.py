"""Text-aware temporal attention (pipelines/mojito/temporal_text.py) on tiny random components."""

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from test_mojito import assert_concurrent_calls_match_alone, denoise, tiny_components

from pipelines.mojito import MojitoPipeline
from pipelines.mojito.model import add_frame_positions, temporal_blocks
from pipelines.mojito.pack import save_pack
from pipelines.mojito.temporal_text import (
    CaptionKeyValue,
    TemporalTextAttnProcessor,
    _CaptionOfThisCall,
    add_temporal_text,
    temporal_text_dims,
)
from pipelines.mojito.train import VideoDenoiser, upgrade_motion_conditioning


def equipped(seed: int = 0) -> VideoDenoiser:
    parts = tiny_components(seed)
    parts["motion_encoder"].register_to_config(frame_positions=8)
    model = VideoDenoiser(parts["unet"].eval(), parts["text_encoder"], parts["motion_encoder"])
    add_frame_positions(model.unet, 8)
    upgrade_motion_conditioning(model, temporal_text=True, mim_tokens=False)
    return model


def test_processor_adds_attention_of_the_same_queries_to_the_caption():
    """out = W_o [softmax(Q K_f^T/sqrt d) V_f + softmax(Q K_c^T/sqrt d) V_c] (+ W_o's bias), by hand."""
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    key_value = CaptionKeyValue(text_dim=6, inner_dim=8)
    torch.nn.init.normal_(key_value.to_v.weight)
    current = _CaptionOfThisCall()
    frames = torch.randn(2 * 3, 5, 8)  # batch 2, 3 pixels, 5 frames
    caption = torch.randn(2, 4, 6)
    current.caption = caption
    out = TemporalTextAttnProcessor(key_value, current)(attn, frames)

    q = attn.to_q(frames).view(2, 3, 5, 2, 4)
    k, v = key_value.to_k(caption).view(2, 4, 2, 4), key_value.to_v(caption).view(2, 4, 2, 4)
    weights = torch.softmax(torch.einsum("bpfhd,bnhd->bpfhn", q, k) / 2.0, dim=-1)  # sqrt(4) = 2
    text = torch.einsum("bpfhn,bnhd->bpfhd", weights, v).reshape(6, 5, 8)
    expected = AttnProcessor2_0()(attn, frames) + text @ attn.to_out[0].weight.T
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    current.caption = None  # no caption (a call without text): plain temporal self-attention
    torch.testing.assert_close(TemporalTextAttnProcessor(key_value, current)(attn, frames), AttnProcessor2_0()(attn, frames))


def test_equipped_model_starts_unchanged_then_follows_the_caption():
    parts = tiny_components(1)
    plain = parts["unet"].eval()
    add_frame_positions(plain, 8)
    video, caption, other = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    before = denoise(plain, video, caption)
    model = VideoDenoiser(plain, parts["text_encoder"], parts["motion_encoder"])
    upgrade_motion_conditioning(model, temporal_text=True, mim_tokens=False)
    assert len(model.motion_encoder.temporal_text) == len(temporal_blocks(plain)) > 0
    assert torch.equal(denoise(plain, video, caption), before)  # zero W_vc: the identity start
    for key_value in model.motion_encoder.temporal_text:
        torch.nn.init.normal_(key_value.to_v.weight, std=0.5)
    after = denoise(plain, video, caption)
    assert (after - before).abs().max() > 1e-3
    # The temporal path now reads the caption: swapping it changes the output by more than the spatial path alone does.
    for key_value in model.motion_encoder.temporal_text:
        key_value.to_v.weight.data.zero_()
    spatial_only = (denoise(plain, video, other) - before).abs().mean()
    for key_value in model.motion_encoder.temporal_text:
        torch.nn.init.normal_(key_value.to_v.weight, std=0.5)
    assert (denoise(plain, video, other) - after).abs().mean() > 1.2 * spatial_only
    # The unet's own state dict does not hold the caption projections (the motion encoder does).
    assert not any("to_k.weight" in k and "processor" in k for k in plain.state_dict())


def test_widths_must_match_the_unets_temporal_blocks():
    unet = tiny_components()["unet"]
    wrong = torch.nn.ModuleList(CaptionKeyValue(32, width + 1) for width in temporal_text_dims(unet))
    with pytest.raises(ValueError, match="do not match"):
        add_temporal_text(unet, wrong)


def test_pack_with_temporal_text_loads_back_with_it(tmp_path):
    model = equipped(2)
    for key_value in model.motion_encoder.temporal_text:
        torch.nn.init.normal_(key_value.to_v.weight, std=0.5)
    parts = tiny_components(2)
    save_pack(tmp_path, MojitoPipeline(**{**parts, "unet": model.unet, "motion_encoder": model.motion_encoder}),
              model.unet, model.text_encoder, model.motion_encoder)
    loaded = MojitoPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert list(loaded.motion_encoder.config.temporal_text_dims) == list(temporal_text_dims(loaded.unet))
    assert all(isinstance(b.attn1.processor, TemporalTextAttnProcessor) for b in temporal_blocks(loaded.unet))
    video, caption = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 5, 32)
    # (saving rounded the UNet to float16 and back, as the pack stores it)
    torch.testing.assert_close(denoise(loaded.unet, video, caption), denoise(model.unet, video, caption),
                               atol=1e-4, rtol=1e-4)


def test_concurrent_calls_each_use_their_own_caption():
    model = equipped(3)
    for key_value in model.motion_encoder.temporal_text:
        torch.nn.init.normal_(key_value.to_v.weight, std=0.5)
    assert_concurrent_calls_match_alone(model.unet)
