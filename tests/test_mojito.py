"""Mojito (thesis ch. 10) with tiny random components: trajectories, DMC energy, MIM, pipeline, export."""

from __future__ import annotations

import json
import math
import threading

import cv2
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet3DConditionModel
from dummies import dummy_tokenizer
from transformers import CLIPTextConfig, CLIPTextModel

from pipelines.errors import InvalidInputError
from pipelines.mojito import (
    BoxOutsideFrameError,
    BoxSizeError,
    GuidanceConfig,
    GuidanceDivergedError,
    Keyframe,
    KeyframeOrderError,
    KeyframeRangeError,
    MojitoPipeline,
    MotionIntensityEncoder,
    PhraseNotInPromptError,
    PRESETS,
    TooFewKeyframesError,
    Trajectory,
    boxes_from_points,
    preset_trajectory,
)
from pipelines.mojito.evaluate import FrameDetection, motion_alignment, owlvit_detections, track_metrics
from pipelines.mojito.export import overlay_boxes, write_gif, write_video
from pipelines.attention.guidance import (
    box_energy,
    box_masks,
    guidance_step,
    sigma_squared,
    temporal_smoothness,
)
from pipelines.mojito.model import (FramePositions, add_frame_positions, inflate_unet, set_spatial_heads,
                                   spatial_head_counts, temporal_blocks)
from pipelines.mojito.modulator import ordinal_level_rows
from pipelines.mojito.pack import save_pack
from pipelines.shapesworld import sample_video

PROMPT = "a red circle left of a blue square"


def tiny_components(seed: int = 0) -> dict:
    """A 32x32, 2-level UNet3D text-to-video model with random weights and a MIM."""
    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )
    tokenizer = dummy_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              steps_offset=1)
    motion_encoder = MotionIntensityEncoder(embedding_dim=32)
    torch.nn.init.normal_(motion_encoder.embedding.weight, std=0.5)
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                motion_encoder=motion_encoder)


def denoise(unet, video, caption):
    """One UNet call at timestep 10 without gradients."""
    with torch.no_grad():
        return unet(video, 10, encoder_hidden_states=caption).sample


def assert_concurrent_calls_match_alone(unet, threads: int = 4) -> None:
    """``threads`` threads denoising the same video with different captions at once each get what they get alone
    (per-call state such as a hook's caption must not leak between concurrent studio calls)."""
    video = torch.randn(1, 4, 3, 16, 16)
    captions = [torch.randn(1, 5, 32) for _ in range(threads)]
    alone = [denoise(unet, video, c) for c in captions]
    results = [None] * threads
    start = threading.Barrier(threads)

    def work(i):
        start.wait()
        for _ in range(3):
            results[i] = denoise(unet, video, captions[i])

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for got, expected in zip(results, alone):
        torch.testing.assert_close(got, expected)


@pytest.fixture(scope="module")
def pipe() -> MojitoPipeline:
    pipeline = MojitoPipeline(**tiny_components())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def left_to_right(n_frames: int) -> Trajectory:
    return preset_trajectory("left to right", "red circle", n_frames, side=0.5)


# -- trajectories ----------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["linear", "smooth"])
def test_interpolation_hits_every_keyframe_exactly(interpolation):
    keys = ((0, (0.0, 0.0, 0.3, 0.3)), (5, (0.6, 0.1, 0.9, 0.4)), (9, (0.2, 0.6, 0.5, 0.9)), (15, (0.7, 0.7, 1.0, 1.0)))
    trajectory = Trajectory("red circle", keys, interpolation)
    boxes = trajectory.boxes(20)
    assert boxes.shape == (20, 4)
    for frame, box in keys:
        assert tuple(boxes[frame]) == box
    assert np.all(boxes[15:] == boxes[15])  # held after the last keyframe
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0  # the smooth curve does not overshoot the frame
    # between keyframes 0 and 5, x0 moves monotonically from 0 to 0.6
    assert np.all(np.diff(boxes[:6, 0]) > 0)


def test_smooth_differs_from_linear_between_keyframes():
    keys = ((0, (0.0, 0.0, 0.2, 0.2)), (4, (0.4, 0.0, 0.6, 0.2)), (12, (0.8, 0.6, 1.0, 0.8)))
    linear = Trajectory("red circle", keys, "linear").boxes(13)
    smooth = Trajectory("red circle", keys, "smooth").boxes(13)
    assert np.abs(linear - smooth).max() > 0.01


def test_point_path_to_boxes_by_tolerance():
    points = np.array([[0.3, 0.4], [0.5, 0.5], [0.7, 0.6]])
    boxes = boxes_from_points(points, (0.1, 0.2))  # eq. 10.4
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], 0.2)
    np.testing.assert_allclose(boxes[:, 3] - boxes[:, 1], 0.4)
    np.testing.assert_allclose((boxes[:, :2] + boxes[:, 2:]) / 2, points)
    with pytest.raises(BoxOutsideFrameError):
        boxes_from_points([[0.05, 0.5], [0.5, 0.5]], 0.1)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_stay_inside_and_move(name):
    centres = preset_trajectory(name, "red circle", 16, side=0.3).centres(16)
    boxes = preset_trajectory(name, "red circle", 16, side=0.3).boxes(16)
    assert boxes.min() >= 0 and boxes.max() <= 1
    assert np.linalg.norm(centres[-1] - centres[0]) > 0.3 or name == "circle"
    if name == "left to right":
        assert np.all(np.diff(centres[:, 0]) > 0)
    if name == "up":
        assert np.all(np.diff(centres[:, 1]) < 0)
    if name == "circle":
        np.testing.assert_allclose(centres[0], centres[-1], atol=1e-9)


@pytest.mark.parametrize(
    "keyframes, error",
    [
        (((0, (0.1, 0.1, 0.4, 0.4)),), TooFewKeyframesError),
        (((5, (0.1, 0.1, 0.4, 0.4)), (2, (0.5, 0.1, 0.8, 0.4))), KeyframeOrderError),
        (((2, (0.1, 0.1, 0.4, 0.4)), (2, (0.5, 0.1, 0.8, 0.4))), KeyframeOrderError),
        (((0, (0.1, 0.1, 0.4, 0.4)), (3, (0.8, 0.1, 1.2, 0.4))), BoxOutsideFrameError),
        (((0, (-0.1, 0.1, 0.4, 0.4)), (3, (0.5, 0.1, 0.8, 0.4))), BoxOutsideFrameError),
        (((0, (0.1, 0.1, 0.1, 0.4)), (3, (0.5, 0.1, 0.8, 0.4))), BoxSizeError),
        (((0, (0.4, 0.1, 0.1, 0.4)), (3, (0.5, 0.1, 0.8, 0.4))), BoxSizeError),
        (((0, (0.1, 0.1, 0.12, 0.4)), (3, (0.5, 0.1, 0.8, 0.4))), BoxSizeError),
        (((-1, (0.1, 0.1, 0.4, 0.4)), (3, (0.5, 0.1, 0.8, 0.4))), KeyframeRangeError),
    ],
)
def test_bad_keyframes_raise_typed_errors(keyframes, error):
    with pytest.raises(error) as raised:
        Trajectory("red circle", keyframes)
    assert isinstance(raised.value, InvalidInputError)


def test_keyframe_beyond_last_frame():
    trajectory = Trajectory("red circle", (Keyframe(0, (0.1, 0.1, 0.4, 0.4)), Keyframe(20, (0.5, 0.1, 0.8, 0.4))))
    with pytest.raises(KeyframeRangeError, match="frame 20"):
        trajectory.boxes(16)


def test_rows_round_trip():
    trajectory = left_to_right(8)
    again = Trajectory.from_rows("red circle", trajectory.rows())
    np.testing.assert_array_equal(again.boxes(8), trajectory.boxes(8))


# -- Directional Motion Control ---------------------------------------------------------------


def test_energy_is_zero_inside_and_one_outside():
    masks = box_masks(np.array([[0.0, 0.0, 0.5, 0.5]] * 3), 8, 8)  # top-left quarter, grid-aligned
    assert masks.sum().item() == 3 * 16
    inside = torch.zeros(3, 8, 8)
    inside[:, :4, :4] = torch.rand(3, 4, 4) + 0.1
    outside = torch.zeros(3, 8, 8)
    outside[:, 4:, :] = torch.rand(3, 4, 8) + 0.1
    np.testing.assert_allclose(box_energy(inside, masks).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(box_energy(outside, masks).numpy(), 1.0, atol=1e-6)
    half = torch.ones(3, 8, 8)  # uniform attention: a quarter inside -> (1 - 1/4)^2
    np.testing.assert_allclose(box_energy(half, masks).numpy(), 0.5625, atol=1e-6)


def test_box_masks_cover_cut_cells_partially():
    masks = box_masks(np.array([[0.0, 0.0, 0.1875, 1.0]]), 4, 4)  # 3/16 of the width: 3/4 of the first column
    np.testing.assert_allclose(masks[0, :, 0].numpy(), 0.75)
    assert masks[0, :, 1:].sum().item() == 0


def test_smoothness_is_zero_for_identical_frames():
    frame = torch.rand(1, 8, 8)
    assert temporal_smoothness(frame.repeat(5, 1, 1)).item() == 0.0
    changing = torch.rand(5, 8, 8)
    expected = np.mean([((changing[i] - changing[i - 1]) ** 2).sum().item() for i in range(1, 5)])
    assert temporal_smoothness(changing).item() == pytest.approx(expected, rel=1e-5)


def test_sigma_follows_the_scheduler(pipe):
    scheduler = pipe.scheduler
    scheduler.set_timesteps(10)
    values = []
    for t in scheduler.timesteps:
        alpha_bar = scheduler.alphas_cumprod[int(t)].item()
        assert sigma_squared(scheduler, t) == pytest.approx((1 - alpha_bar) / alpha_bar, rel=1e-6)
        values.append(sigma_squared(scheduler, t))
    assert all(a > b for a, b in zip(values, values[1:]))  # falls as the noise falls


def test_guidance_step_goes_down_the_gradient_and_catches_nan(pipe):
    latents = torch.zeros(1, 4, 2, 4, 4)
    gradient = torch.ones_like(latents)
    raw = guidance_step(latents, gradient, GuidanceConfig(strength=2.0, gradient="raw"), pipe.scheduler, 500)
    expected = -sigma_squared(pipe.scheduler, 500) * 2.0
    np.testing.assert_allclose(raw.numpy(), expected, rtol=1e-5)
    normalized = guidance_step(latents, 3 * gradient, GuidanceConfig(strength=2.0), pipe.scheduler, 500)
    alpha_bar = pipe.scheduler.alphas_cumprod[500].item()
    np.testing.assert_allclose(normalized.numpy(), -2.0 * (1 - alpha_bar), rtol=1e-5)
    with pytest.raises(GuidanceDivergedError):
        guidance_step(latents, gradient * 1e36, GuidanceConfig(strength=1e10, gradient="raw"), pipe.scheduler, 999)


def test_bad_guidance_settings():
    for bad in (dict(strength=-1.0), dict(strength=float("nan")), dict(steps=-1), dict(smoothness=-0.5),
                dict(gradient="sideways"), dict(inner_steps=0), dict(layers=())):
        with pytest.raises(InvalidInputError):
            GuidanceConfig(**bad)


# -- models ------------------------------------------------------------------------------


def test_inflated_unet_equals_the_image_unet_per_frame():
    """Weights mapped, temporal layers the identity: frame by frame, the video UNet is the image UNet.

    (Channels C = a^2 so that diffusers' 2D and 3D head splits coincide, see ``inflate_unet``.)
    """
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 16, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
    ).eval()
    unet3d = inflate_unet(unet2d).eval()
    video = torch.randn(1, 4, 3, 8, 8)
    text = torch.randn(1, 5, 16)
    with torch.no_grad():
        out3d = unet3d(video, 10, encoder_hidden_states=text).sample
        for f in range(3):
            out2d = unet2d(video[:, :, f], 10, encoder_hidden_states=text).sample
            torch.testing.assert_close(out3d[:, :, f], out2d, atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in unet3d.parameters()) > sum(p.numel() for p in unet2d.parameters())


def test_inflated_unet_keeps_per_level_head_counts_and_equals_the_image_unet_per_frame(tmp_path):
    """Pack v2's 2D UNet has a head count per level (1, 2, 2): the UNet3D takes over that split, so frame by
    frame it is the image UNet; the motion encoder records the counts and a loaded pipeline applies them."""
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32, 48), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=(1, 2, 2), norm_num_groups=8,
    ).eval()
    assert spatial_head_counts(unet2d) == (1, 2, 2)
    unet3d = inflate_unet(unet2d).eval()
    heads = {name: module.heads for name, module in unet3d.named_modules()
             if name.endswith("attentions.0.transformer_blocks.0.attn2") and "temp_" not in name}
    assert heads["down_blocks.0.attentions.0.transformer_blocks.0.attn2"] == 1  # 16 channels in one head
    assert heads["down_blocks.1.attentions.0.transformer_blocks.0.attn2"] == 2
    assert heads["mid_block.attentions.0.transformer_blocks.0.attn2"] == 2
    assert heads["up_blocks.2.attentions.0.transformer_blocks.0.attn2"] == 1
    video, text = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 5, 16)
    with torch.no_grad():
        out3d = unet3d(video, 10, encoder_hidden_states=text).sample
        for f in range(3):
            torch.testing.assert_close(out3d[:, :, f], unet2d(video[:, :, f], 10, encoder_hidden_states=text).sample,
                                       atol=1e-4, rtol=1e-4)
    # Saved and loaded as a pack: the UNet3D's config alone has heads of 16 channels; the encoder brings (1, 2, 2).
    unet3d.save_pretrained(tmp_path / "unet")
    loaded = UNet3DConditionModel.from_pretrained(tmp_path / "unet").eval()
    assert loaded.down_blocks[0].attentions[0].transformer_blocks[0].attn2.heads == 1  # 16 / 16 either way
    assert loaded.down_blocks[1].attentions[0].transformer_blocks[0].attn2.heads == 2  # 32 / 16 either way
    assert loaded.mid_block.attentions[0].transformer_blocks[0].attn2.heads == 3  # 48 / 16: not the image's 2
    assert set_spatial_heads(loaded, (1, 2, 2)) == 2 * (1 + 1 + 1 + 2 + 2)  # self + cross, down 2, mid 1, up 2 x 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(video, 10, encoder_hidden_states=text).sample, out3d)
    with pytest.raises(ValueError, match="levels"):
        set_spatial_heads(loaded, (1, 2))


def test_motion_encoder_adds_one_embedding_to_every_token():
    encoder = MotionIntensityEncoder(embedding_dim=8)
    torch.nn.init.normal_(encoder.embedding.weight)
    text = torch.randn(2, 5, 8)
    rows = encoder.index([7, None])
    combined = encoder(text, rows)
    added = combined - text
    torch.testing.assert_close(added[0], encoder.embedding.weight[7].expand(5, 8))  # c_L = c_T + c_M, duplicated
    assert torch.equal(added[1], torch.zeros(5, 8))  # "none" leaves c_T unchanged
    assert encoder.word(7) == "seven"
    for bad in (0, 11, 2.5, "3", True, float("nan")):
        with pytest.raises(InvalidInputError):
            encoder.index([bad])


def test_motion_encoder_tokens_append_duplicated_c_m():
    encoder = MotionIntensityEncoder(embedding_dim=8, combine="tokens", copies=2)
    torch.nn.init.normal_(encoder.embedding.weight)
    text = torch.randn(2, 5, 8)
    combined = encoder(text, encoder.index([7, None]))
    assert combined.shape == (2, 7, 8) and encoder.extra_tokens == 2
    torch.testing.assert_close(combined[:, :5], text)  # c_T untouched
    torch.testing.assert_close(combined[0, 5:], encoder.embedding.weight[7].expand(2, 8))  # c_M, twice
    torch.testing.assert_close(combined[1, 5:], encoder.embedding.weight[0].expand(2, 8))  # "none" is learned
    with pytest.raises(ValueError, match="combine"):
        MotionIntensityEncoder(combine="concat")


def test_levels_start_ordinal_at_the_asked_length_and_none_is_kept():
    encoder = MotionIntensityEncoder(embedding_dim=4, combine="tokens")
    encoder.embedding.weight.data[0] = 0.5
    encoder.start_levels_at(2.0)
    rows = encoder.embedding.weight.detach()
    # Level k, width 4: (cos(pi k/20), sin(pi k/20), cos(pi k/10), sin(pi k/10)), length sqrt(2), scaled to 2.
    k = 3
    hand = torch.tensor([math.cos(math.pi * k / 20), math.sin(math.pi * k / 20),
                         math.cos(math.pi * k / 10), math.sin(math.pi * k / 10)]) * (2.0 / math.sqrt(2))
    torch.testing.assert_close(rows[k], hand)
    torch.testing.assert_close(rows[1:].norm(dim=1), torch.full((10,), 2.0))
    assert torch.all(rows[0] == 0.5)  # "none" untouched
    distance = torch.cdist(rows[1:], rows[1:])
    assert torch.all(distance[0, 1:].diff() > 0)  # further from level 1, the further the level
    wide = ordinal_level_rows(10, 64, 7.6)
    assert torch.all(torch.cdist(wide, wide)[0, 1:].diff() > 0)
    with pytest.raises(ValueError, match="even"):
        ordinal_level_rows(10, 5, 1.0)


def test_only_intensity_tokens_can_change_where_attention_goes():
    """Adding c_M to every key shifts a query's logits alike (softmax is unchanged); tokens get their own keys."""
    torch.manual_seed(0)
    w_k, queries, text = torch.randn(8, 8), torch.randn(6, 8), torch.randn(1, 5, 8)

    def weights_on_text(encoder, level):
        keys = encoder(text, encoder.index([level]))[0] @ w_k.T
        return torch.softmax(queries @ keys.T, dim=-1)[:, :5]  # attention on the caption's own tokens

    added = MotionIntensityEncoder(embedding_dim=8, combine="add")
    tokens = MotionIntensityEncoder(embedding_dim=8, combine="tokens")
    for encoder in (added, tokens):
        torch.nn.init.normal_(encoder.embedding.weight)
    torch.testing.assert_close(weights_on_text(added, 1), weights_on_text(added, 10))
    assert (weights_on_text(tokens, 1) - weights_on_text(tokens, 10)).abs().max() > 0.01

def test_frame_positions_tell_the_temporal_layers_which_frame_is_which():
    """Without positions temporal attention is blind to frame order; with them it is not (AnimateDiff's fix)."""
    table = FramePositions(dim=6, max_frames=4).table[0]
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))  # sin 0, cos 0
    assert not torch.allclose(table[1], table[2])
    unet = tiny_components()["unet"].eval()
    for block in temporal_blocks(unet):  # only temporal attention, so a frame's output is order-blind without positions
        torch.nn.init.normal_(block.attn1.to_out[0].weight, std=0.5)
    for module in unet.modules():
        if type(module).__name__ == "TemporalConvLayer":
            module.forward = lambda hidden_states, num_frames=1: hidden_states
    video, text = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 5, 32)
    swapped = video[:, :, [2, 1, 0]]

    def middle(x):
        with torch.no_grad():
            return unet(x, 10, encoder_hidden_states=text).sample[:, :, 1]

    torch.testing.assert_close(middle(video), middle(swapped), atol=1e-4, rtol=1e-4)
    blocks = len(temporal_blocks(unet))
    assert blocks == add_frame_positions(unet, 8) > 0 and add_frame_positions(unet, 8) == 0  # idempotent
    assert (middle(video) - middle(swapped)).abs().max() > 1e-3
    assert not any("pos_embed" in key for key in unet.state_dict())  # a function of the sizes, not a weight
    with pytest.raises(ValueError, match="frame positions"):
        unet(torch.randn(1, 4, 9, 16, 16), 10, encoder_hidden_states=text)


def test_pack_records_frame_positions_and_the_pipeline_applies_them(tmp_path):
    components = tiny_components(2)
    components["motion_encoder"].register_to_config(frame_positions=16)
    add_frame_positions(components["unet"], 16)
    save_pack(tmp_path, MojitoPipeline(**components), components["unet"], components["text_encoder"],
              components["motion_encoder"])
    loaded = MojitoPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert all(isinstance(block.pos_embed, FramePositions) for block in temporal_blocks(loaded.unet))
    assert all(block.pos_embed.table.shape[1] == 16 for block in temporal_blocks(loaded.unet))
    plain = tiny_components(2)
    wrapped = MojitoPipeline.from_base(MojitoPipeline(**{**plain, "motion_encoder": None}), plain["motion_encoder"])
    assert all(block.pos_embed is None for block in temporal_blocks(wrapped.unet))  # frame_positions 0: none


# -- pipeline ----------------------------------------------------------------------------


def test_pipeline_generates_guided_video_with_maps(pipe):
    out = pipe(PROMPT, trajectories=[left_to_right(4)], intensity=5, num_frames=4, num_inference_steps=3,
               guidance=GuidanceConfig(strength=1.0, steps=2), generator=torch.Generator().manual_seed(0),
               return_attention=True)
    assert out.frames.shape == (4, 32, 32, 3) and out.frames.dtype == np.uint8
    assert out.guided and len(out.energies) == 2 and out.intensity == 5
    assert 0.0 <= out.energies[0]["red circle"] <= 1.0
    assert out.attention["red circle"].shape[0] == 4
    np.testing.assert_array_equal(out.boxes["red circle"], left_to_right(4).boxes(4))


def test_guidance_lowers_the_energy(pipe):
    """Gradient steps of eq. 10.7 lower E on a random model: the update goes the right way."""
    trajectory = {"red circle": left_to_right(2).boxes(2)}
    out = pipe(PROMPT, trajectories=trajectory, num_frames=2, num_inference_steps=5, guidance_scale=1.0,
               guidance=GuidanceConfig(strength=0.3, steps=5, smoothness=0.0), generator=torch.Generator().manual_seed(1))
    first, last = out.energies[0]["red circle"], out.energies[-1]["red circle"]
    assert last < first


def test_intensity_and_mim_change_the_video(pipe):
    def run(**kwargs):
        return pipe("a red circle", num_frames=2, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0), **kwargs).frames.astype(int)

    assert np.abs(run(intensity=2) - run(intensity=9)).mean() > 0
    assert np.array_equal(run(intensity=9, use_motion_encoder=False), run(intensity=2, use_motion_encoder=False))


def test_intensity_guidance_by_hand(pipe, monkeypatch):
    """One step with intensity_guidance_scale s_M: eps = eps(none) + s (eps(c_T, none) - eps(none)) +
    s_M (eps(c_L) - eps(c_T, none)), the three conditions in one UNet batch."""
    latents = torch.randn(1, 4, 2, 16, 16, generator=torch.Generator().manual_seed(3))
    seen, step = [], pipe.scheduler.step
    monkeypatch.setattr(pipe.scheduler, "step", lambda noise, t, sample, **kw: seen.append((noise, t)) or step(
        noise, t, sample, **kw))
    pipe("a red circle", intensity=8, num_frames=2, num_inference_steps=1, guidance_scale=3.0,
         intensity_guidance_scale=9.0, latents=latents.clone())
    (noise, t), = seen
    encoder = pipe.motion_encoder
    text, uncond = pipe.encode_prompt("a red circle", "cpu", 1, True, negative_prompt=None)
    contexts = torch.cat([encoder(uncond, encoder.index([None])), encoder(text, encoder.index([None])),
                          encoder(text, encoder.index([8]))])
    with torch.no_grad():
        eps_none, eps_text, eps_level = pipe.unet(pipe.scheduler.scale_model_input(torch.cat([latents] * 3), t), t,
                                                  encoder_hidden_states=contexts).sample.chunk(3)
    expected = eps_none + 3.0 * (eps_text - eps_none) + 9.0 * (eps_level - eps_text)
    torch.testing.assert_close(noise, expected.permute(0, 2, 1, 3, 4).reshape(2, 4, 16, 16), atol=1e-5, rtol=1e-5)


def test_intensity_guidance_scales_only_the_intensity(pipe):
    def run(**kwargs):
        return pipe("a red circle", num_frames=2, num_inference_steps=2, guidance_scale=4.0,
                    generator=torch.Generator().manual_seed(0), **kwargs).frames.astype(int)

    plain = run(intensity=7)
    assert np.array_equal(run(intensity=7, intensity_guidance_scale=4.0), plain)  # s_M = s: ordinary CFG
    assert np.abs(run(intensity=7, intensity_guidance_scale=12.0) - plain).mean() > 0
    # without the MIM there is no intensity to guide on
    assert np.array_equal(run(intensity=7, use_motion_encoder=False, intensity_guidance_scale=12.0),
                          run(intensity=7, use_motion_encoder=False))


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(trajectories={"green triangle": np.full((4, 4), 0.5)}), PhraseNotInPromptError, "not in the prompt"),
        (dict(trajectories=[Trajectory("red circle", ((0, (0.1, 0.1, 0.4, 0.4)), (9, (0.5, 0.1, 0.8, 0.4))))]),
         KeyframeRangeError, "beyond the last frame"),
        (dict(intensity=11), InvalidInputError, "1 to 10"),
        (dict(intensity=0), InvalidInputError, "1 to 10"),
        (dict(num_frames=1), InvalidInputError, "num_frames"),
        (dict(prompt=""), InvalidInputError, "prompt"),
        (dict(intensity_guidance_scale=-1.0), InvalidInputError, "intensity_guidance_scale"),
        (dict(intensity_guidance_scale=float("nan")), InvalidInputError, "intensity_guidance_scale"),
        (dict(trajectories=[left_to_right(4)], guidance=GuidanceConfig(steps=12)), InvalidInputError, "cannot exceed"),
    ],
)
def test_pipeline_bad_input(pipe, kwargs, error, words):
    call = dict(prompt=PROMPT, num_frames=4, num_inference_steps=10)
    call.update(kwargs)
    with pytest.raises(error, match=words):
        pipe(call.pop("prompt"), **call)


def test_too_large_guidance_is_reported_not_returned_black(pipe):
    with pytest.raises(GuidanceDivergedError, match="guidance strength"):
        pipe(PROMPT, trajectories=[left_to_right(2)], num_frames=2, num_inference_steps=2,
             guidance=GuidanceConfig(strength=1e38, steps=1, gradient="raw"), generator=torch.Generator().manual_seed(0))


def test_pack_round_trip(tmp_path):
    components = tiny_components(1)
    base = MojitoPipeline(**components)
    save_pack(tmp_path, base, components["unet"], components["text_encoder"], components["motion_encoder"])
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in files) < 10 * 2**20
    assert "motion_encoder" not in json.loads((tmp_path / "model_index.json").read_text())
    loaded = MojitoPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.unet.dtype == torch.float32
    torch.testing.assert_close(loaded.motion_encoder.embedding.weight, components["motion_encoder"].embedding.weight)


# -- evaluation and export -----------------------------------------------------------------


def test_metrics_on_a_true_video():
    video = sample_video(3, 64, 8, n_objects=1, direction="from left to right", intensity=6)
    thing = video.objects[0]
    from pipelines.mojito.evaluate import shapes_detections

    detections = shapes_detections(video.frames, f"{thing.colour} {thing.shape}")
    good = track_metrics(detections, thing.boxes / 64.0, 64)
    assert good.miou > 0.9 and good.ap50 == 1.0 and good.cd < 0.01 and good.plausible == 1.0
    reversed_path = track_metrics(detections, thing.boxes[::-1] / 64.0, 64)
    assert reversed_path.miou < 0.5 and reversed_path.cd > 0.05
    missing = track_metrics([FrameDetection(None)] * 8, thing.boxes / 64.0, 64)
    assert missing.miou == 0.0 and missing.detected == 0.0
    measured, error = motion_alignment(video.frames, 6)
    assert abs(measured - 6) < 1 and error < 0.1


def test_owlvit_detections_structurally():
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    tokenizer = dummy_tokenizer()
    config = OwlViTConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = OwlViTForObjectDetection(config).eval()
    processor = OwlViTProcessor(
        image_processor=OwlViTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    frames = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    detections = owlvit_detections(frames, "red circle", model, processor)
    assert len(detections) == 3
    for det in detections:  # pixel boxes from OWL-ViT's normalised (cx, cy, w, h), a score in [0, 1]
        x0, y0, x1, y1 = det.box
        assert np.isfinite(det.box).all() and x0 <= x1 and y0 <= y1
        assert 0.0 <= det.confidence <= 1.0 and det.size >= 0 and det.matches


def test_export_has_the_right_frames(tmp_path):
    frames = sample_video(1, 64, 12, n_objects=1).frames
    boxed = overlay_boxes(frames, {"red circle": left_to_right(12).boxes(12)}, scale=2)
    assert boxed.shape == (12, 128, 128, 3) and not np.array_equal(boxed[:, :, :, 0], np.repeat(np.repeat(frames, 2, 1), 2, 2)[..., 0])
    for codec in ("h264", "vp9"):
        path = write_video(boxed, tmp_path / "video", codec=codec)
        capture = cv2.VideoCapture(str(path))
        count = 0
        while capture.read()[0]:
            count += 1
        assert count == 12
    from PIL import Image

    gif = Image.open(write_gif(frames, tmp_path / "video"))
    assert gif.n_frames == 12
