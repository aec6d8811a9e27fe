"""The MIM in the time embedding (pipelines/mojito/time_intensity.py) on tiny random components."""

import pytest
import torch
from test_mojito import assert_concurrent_calls_match_alone, denoise, tiny_components

from pipelines.mojito import MojitoPipeline
from pipelines.mojito.modulator import MotionIntensityEncoder
from pipelines.mojito.pack import save_pack
from pipelines.mojito.time_intensity import IntensityToTime, add_time_intensity, time_embedding_dim
from pipelines.mojito.train import VideoDenoiser, upgrade_motion_conditioning


def equipped(seed: int = 0) -> VideoDenoiser:
    parts = tiny_components(seed)
    model = VideoDenoiser(parts["unet"].eval(), parts["text_encoder"], parts["motion_encoder"])
    upgrade_motion_conditioning(model, temporal_text=False, mim_tokens=True, mim_time=True)
    return model


def test_time_embedding_gets_w_t_of_the_last_context_token_by_hand():
    """emb = TimeEmbedding(t) + W_t c_M with c_M = c_L[:, -1]: read at the time embedding's output."""
    model = equipped(1)
    to_time = model.motion_encoder.to_time
    torch.nn.init.normal_(to_time.proj.weight)
    torch.nn.init.normal_(to_time.proj.bias)
    seen = []
    handle = model.unet.time_embedding.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    video, caption = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 6, 32)
    denoise(model.unet, video, caption)
    handle.remove()
    model.unet._caption_of_this_call.caption = None  # outside a UNet call the hook adds nothing
    with torch.no_grad():
        plain = model.unet.time_embedding(model.unet.time_proj(torch.tensor([10, 10])))
        expected = plain + caption[:, -1] @ to_time.proj.weight.T + to_time.proj.bias
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=1e-5)


def test_equipped_model_starts_unchanged_then_each_level_changes_the_output():
    parts = tiny_components(2)
    unet = parts["unet"].eval()
    video, text = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 5, 32)
    model = VideoDenoiser(unet, parts["text_encoder"], parts["motion_encoder"])
    upgrade_motion_conditioning(model, temporal_text=False, mim_tokens=True)
    torch.nn.init.normal_(model.motion_encoder.embedding.weight)
    context = {level: model.motion_encoder(text, model.motion_encoder.index([level])).detach() for level in (2, 9)}
    before = {level: denoise(unet, video, c) for level, c in context.items()}
    upgrade_motion_conditioning(model, temporal_text=False, mim_tokens=True, mim_time=True)
    assert model.motion_encoder.config.time_embedding_dim == time_embedding_dim(unet) > 0
    for level, c in context.items():  # zero W_t: the identity start
        assert torch.equal(denoise(unet, video, c), before[level])
    torch.nn.init.normal_(model.motion_encoder.to_time.proj.weight, std=0.5)
    gap_before = (before[9] - before[2]).abs().mean()
    gap_after = (denoise(unet, video, context[9]) - denoise(unet, video, context[2])).abs().mean()
    assert gap_after > 2 * gap_before  # the level now also reaches every ResNet block


def test_time_path_needs_tokens_and_the_unets_width():
    with pytest.raises(ValueError, match="needs combine='tokens'"):
        MotionIntensityEncoder(embedding_dim=32, combine="add", time_embedding_dim=64)
    unet = tiny_components()["unet"]
    with pytest.raises(ValueError, match="time embedding has"):
        add_time_intensity(unet, IntensityToTime(32, time_embedding_dim(unet) + 1))


def test_pack_with_time_path_loads_back_with_it(tmp_path):
    model = equipped(3)
    torch.nn.init.normal_(model.motion_encoder.to_time.proj.weight, std=0.5)
    parts = tiny_components(3)
    save_pack(tmp_path, MojitoPipeline(**{**parts, "unet": model.unet, "motion_encoder": model.motion_encoder}),
              model.unet, model.text_encoder, model.motion_encoder)
    loaded = MojitoPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.motion_encoder.to_time is not None and loaded.unet._time_intensity[0] is loaded.motion_encoder.to_time
    # W_t lives in the motion encoder only: the UNet's weights (and a training checkpoint) hold it once.
    assert not any("proj" in key and "time_intensity" in key for key in model.unet.state_dict())
    assert len({p.data_ptr() for p in model.parameters()}) == len(list(model.parameters()))
    video, caption = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 5, 32)
    # (saving rounded the UNet to float16 and back, as the pack stores it)
    torch.testing.assert_close(denoise(loaded.unet, video, caption), denoise(model.unet, video, caption),
                               atol=1e-4, rtol=1e-4)


def test_concurrent_calls_each_use_their_own_intensity():
    model = equipped(4)
    torch.nn.init.normal_(model.motion_encoder.to_time.proj.weight, std=0.5)
    assert_concurrent_calls_match_alone(model.unet)
