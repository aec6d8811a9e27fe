"""Tests for pipelines.attention on tiny random UNets (2D, 3D, ControlNet) and a tokenizer built in code."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel, UNet3DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTokenizer

from pipelines.attention import (
    AttentionOffsets,
    CrossAttentionControl,
    CrossAttentionProcessor,
    aggregate_maps,
    cross_attention_layers,
    latent_grid,
    lse_pool,
    prompt_learning_mode,
    token_indices,
)
from pipelines.errors import InvalidInputError, WorldStudioError

TOKENS = 7  # text sequence length of the random embeddings
TEXT_DIM = 32  # cross_attention_dim of the tiny UNets


def make_unet2d() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=16,
        sample_size=16,
    ).eval()


def make_unet3d() -> UNet3DConditionModel:
    torch.manual_seed(0)
    return UNet3DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=16,
        sample_size=16,
    ).eval()


@pytest.fixture(scope="module")
def unet2d() -> UNet2DConditionModel:
    return make_unet2d()


@pytest.fixture(scope="module")
def unet3d() -> UNet3DConditionModel:
    return make_unet3d()


def text(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(seed))  # [B, m, c]


def latent(*shape: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- recording: shapes, normalisation, output unchanged ------------------------------------


@pytest.mark.parametrize("height, width", [(16, 16), (15, 13)])
def test_2d_maps_shapes_sum_to_one_and_output_unchanged(unet2d, height, width):
    x, emb = latent(2, 4, height, width), text(2)
    with torch.no_grad():
        plain = unet2d(x, 10, encoder_hidden_states=emb).sample
        with CrossAttentionControl(unet2d) as ctl:
            recorded = unet2d(x, 10, encoder_hidden_states=emb).sample
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)

    store = ctl.store
    assert set(store.layer_names) == set(cross_attention_layers(unet2d))  # run order vs module order
    assert len(store.layer_names) == 7
    assert store.num_steps == 1 and store.steps == [0]
    half = (-(-height // 2), -(-width // 2))  # the stride-2 downsample rounds up
    for name in store.layer_names:
        maps = store.maps_for(name)
        heads = unet2d.get_submodule(name).heads
        size = (height, width) if name.startswith(("down_blocks.0", "up_blocks.1")) else half
        assert maps.shape == (2, heads, *size, TOKENS), name
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), atol=1e-5, rtol=0)


def test_3d_maps_have_frame_axis_and_skip_temporal_attention(unet3d):
    frames, height, width = 3, 15, 13
    x, emb = latent(2, 4, frames, height, width), text(2)
    processors = unet3d.attn_processors
    with torch.no_grad():
        plain = unet3d(x, 10, encoder_hidden_states=emb).sample
        with CrossAttentionControl(unet3d) as ctl:
            inside = unet3d.attn_processors
            recorded = unet3d(x, 10, encoder_hidden_states=emb).sample
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)

    # temporal transformers also have an attn2, but it is self-attention over frames
    temporal = [k for k in processors if "temp_attentions" in k or k.startswith("transformer_in")]
    assert any(k.endswith("attn2.processor") for k in temporal)
    assert all(inside[k] is processors[k] for k in temporal)
    assert all(inside[k] is processors[k] for k in processors if "attn1" in k)
    assert ctl.store.layer_names == [  # the order the UNet runs them
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
        "mid_block.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
    ]
    for name in ctl.store.layer_names:
        maps = ctl.store.maps_for(name)
        heads = unet3d.get_submodule(name).heads
        size = (8, 7) if name.startswith("mid_block") else (height, width)
        assert maps.shape == (2, frames, heads, *size, TOKENS), name
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), atol=1e-5, rtol=0)


def test_3d_batch_and_frame_axes_are_not_mixed(unet3d):
    # identical frames stay identical through the tiny UNet3D (its temporal convs start as
    # identity), so maps must agree across F and differ across B if the axes are right
    frame = latent(2, 4, 1, 8, 8)
    x = frame.expand(2, 4, 3, 8, 8).contiguous()
    with torch.no_grad(), CrossAttentionControl(unet3d, layers="down_blocks.0") as ctl:
        unet3d(x, 10, encoder_hidden_states=text(2))
    maps = ctl.store.maps_for(ctl.layers[0])  # [B, F, heads, h, w, m]
    for f in (1, 2):
        torch.testing.assert_close(maps[:, f], maps[:, 0], atol=1e-5, rtol=0)
    assert not torch.allclose(maps[0], maps[1], atol=1e-3)


def test_guidance_batch_slice_matches_a_single_run(unet2d):
    x, emb = latent(1, 4, 16, 16), text(2)
    layer = "mid_block.attentions.0.transformer_blocks.0.attn2"
    with torch.no_grad(), CrossAttentionControl(unet2d, layers="mid_block") as ctl:
        unet2d(torch.cat([x, x]), 10, encoder_hidden_states=emb)  # uncond + cond
        unet2d(x, 10, encoder_hidden_states=emb[1:])
    assert ctl.store.layer_names == [layer] and ctl.store.steps == [0, 1]
    cond = ctl.store.maps_for(layer, step=0, batch=slice(1, None))
    torch.testing.assert_close(cond, ctl.store.maps_for(layer, step=1), atol=1e-5, rtol=1e-5)


def test_controlnet_is_recorded_too(unet2d):
    controlnet = ControlNetModel.from_unet(unet2d, conditioning_embedding_out_channels=(16, 32)).eval()
    x, emb = latent(1, 4, 16, 16), text(1)
    condition = torch.rand(1, 3, 32, 32)  # image space: the conditioning embedding halves it
    with torch.no_grad(), CrossAttentionControl(controlnet) as ctl:
        controlnet(x, 10, encoder_hidden_states=emb, controlnet_cond=condition)
    assert len(ctl.store.layer_names) == 3
    maps = ctl.store.maps_for("mid_block.attentions.0.transformer_blocks.0.attn2")
    assert maps.shape[2:4] == (8, 8)
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), atol=1e-5, rtol=0)


# -- memory options: filters, last step only, CPU copies ------------------------------------


def test_layer_and_step_filters_keep_last_and_detach(unet2d):
    x = latent(1, 4, 16, 16).requires_grad_(True)
    with CrossAttentionControl(unet2d, layers=["up_blocks.1"], steps=[1, 2], to_cpu=True) as ctl:
        for _ in range(3):
            unet2d(x, 10, encoder_hidden_states=text(1))
    assert ctl.step == 3 and ctl.store.steps == [1, 2]
    assert all(name.startswith("up_blocks.1.") for name in ctl.store.layer_names)
    maps = ctl.store.maps_for(ctl.store.layer_names[0])
    assert not maps.requires_grad and maps.dtype == torch.float32 and maps.device.type == "cpu"

    with CrossAttentionControl(unet2d, differentiable=True, keep_steps="last", layers="mid_block") as ctl:
        for _ in range(3):
            unet2d(x, 10, encoder_hidden_states=text(1))
        assert ctl.store.steps == [2]
        assert ctl.store.maps_for(ctl.layers[0]).requires_grad
        ctl.store.reset()
        assert ctl.store.num_steps == 0

    with pytest.raises(InvalidInputError, match="selects none"):
        CrossAttentionControl(unet2d, layers="up_blocks.10")


# -- differentiable mode: energy on the maps reaches the latent (thesis eq. 10.5-10.7) --------


def box_energy(maps: torch.Tensor, token: int) -> torch.Tensor:
    """Eq. 10.5 with the box = top-left quadrant, on maps [..., heads, h, w, m]."""
    a = maps[..., token].mean(dim=-3)  # [..., h, w]
    h, w = a.shape[-2:]
    inside = a[..., : h // 2, : w // 2].sum((-1, -2)) / a.sum((-1, -2))
    return ((1 - inside) ** 2).sum()


@pytest.mark.parametrize("video", [False, True])
def test_energy_gradient_reaches_latent(unet2d, unet3d, video):
    unet = unet3d if video else unet2d
    shape = (1, 4, 2, 15, 13) if video else (1, 4, 15, 13)
    x = latent(*shape).requires_grad_(True)
    with torch.enable_grad(), CrossAttentionControl(unet, differentiable=True, keep_steps="last") as ctl:
        unet(x, 10, encoder_hidden_states=text(1))
        energy = sum(box_energy(ctl.store.maps_for(name), token=2) for name in ctl.store.layer_names)
        (grad,) = torch.autograd.grad(energy, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# -- learnable offsets (thesis eq. 5.5) ---------------------------------------------------------


def test_only_offsets_train_and_offsets_round_trip(tmp_path):
    unet = make_unet2d()
    x, emb = latent(1, 4, 16, 16), text(1)
    offsets = AttentionOffsets.from_unet(unet)
    assert offsets.layer_names == cross_attention_layers(unet)
    with torch.no_grad():
        plain = unet(x, 10, encoder_hidden_states=emb).sample
        with CrossAttentionControl(unet, record=False, offsets=offsets):
            zero = unet(x, 10, encoder_hidden_states=emb).sample
    torch.testing.assert_close(zero, plain, atol=1e-5, rtol=1e-5)

    frozen = {k: v.clone() for k, v in unet.state_dict().items()}
    optimizer = torch.optim.Adam(prompt_learning_mode(offsets, unet), lr=1e-2)
    with CrossAttentionControl(unet, differentiable=True, offsets=offsets) as ctl:
        out = unet(x, 10, encoder_hidden_states=emb).sample
        score = sum(lse_pool(ctl.store.maps_for(n).flatten(2, 3)).mean() for n in ctl.store.layer_names)
        (out.pow(2).mean() - score).backward()
    optimizer.step()

    assert all(torch.equal(v, frozen[k]) for k, v in unet.state_dict().items())
    assert all(p.grad is None for p in unet.parameters())
    assert all(p.abs().sum() > 0 for p in offsets.parameters())
    with torch.no_grad(), CrossAttentionControl(unet, record=False, offsets=offsets):
        moved = unet(x, 10, encoder_hidden_states=emb).sample
    assert not torch.allclose(moved, plain, atol=1e-4)

    path = tmp_path / "offsets.safetensors"
    offsets.save(path)
    loaded = AttentionOffsets.from_unet(unet)
    loaded.load(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), offsets.parameters()))

    with pytest.raises(InvalidInputError, match="unexpected"):
        AttentionOffsets.from_unet(unet, layers="mid_block").load(path)
    bad = {k: v.detach() for k, v in offsets.tensors().items()}
    key = next(iter(bad))
    bad[key] = torch.zeros(3, 3)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(InvalidInputError, match="shapes"):
        loaded.load(tmp_path / "bad.safetensors")
    with pytest.raises(InvalidInputError, match="Cannot read"):
        loaded.load(tmp_path / "missing.safetensors")


def test_offsets_must_fit_the_unet(unet2d, unet3d):
    # the 2D UNet has cross-attention in down_blocks.1 and up_blocks.0, the 3D one does not
    with pytest.raises(InvalidInputError, match="down_blocks.1.attentions.0.transformer_blocks.0.attn2: not"):
        CrossAttentionControl(unet3d, offsets=AttentionOffsets.from_unet(unet2d))
    shapes = {"mid_block.attentions.0.transformer_blocks.0.attn2": ((64, 16), (64, 32))}
    with pytest.raises(InvalidInputError, match="offsets \\[64, 16\\]"):
        CrossAttentionControl(unet2d, offsets=AttentionOffsets(shapes))


# -- restore ----------------------------------------------------------------------------------


def test_processors_and_hook_restored_after_exception(unet2d):
    before = unet2d.attn_processors
    hooks = dict(unet2d._forward_pre_hooks)
    ctl = CrossAttentionControl(unet2d, offsets=AttentionOffsets.from_unet(unet2d, layers="mid_block"))
    with pytest.raises(RuntimeError, match="boom"), ctl:
        inside = unet2d.attn_processors
        assert all(isinstance(inside[n + ".processor"], CrossAttentionProcessor) for n in ctl.layers)
        assert all(inside[k] is v for k, v in before.items() if "attn1" in k)
        assert len(unet2d._forward_pre_hooks) == len(hooks) + 1
        unet2d(latent(1, 4, 16, 16), 10, encoder_hidden_states=text(1))
        raise RuntimeError("boom")
    after = unet2d.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert dict(unet2d._forward_pre_hooks) == hooks
    assert ctl.store.num_steps == 1  # still readable after the block


# -- token mapping ---------------------------------------------------------------------------


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer that keeps whole words, except "triangle" -> "tri" + "angle</w>"."""
    # (piece, ends a word); merges build each piece letter by letter, and no merge joins "tri" + "angle</w>"
    pieces = [("tri", False), ("angle", True)]
    pieces += [(w, True) for w in ("a", "red", "left", "of", "the", "blue", "square", "circle")]
    merges: list[tuple[str, str]] = []
    for piece, ends_word in pieces:
        symbols = [*piece[:-1], piece[-1] + ("</w>" if ends_word else "")]
        merged = symbols[0]
        for symbol in symbols[1:]:
            merges.append((merged, symbol))
            merged += symbol
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*letters, *(c + "</w>" for c in letters), *(a + b for a, b in merges)]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges)


class NoOffsetsTokenizer:
    """Wraps a tokenizer and hides its offset mapping, as a Python (slow) tokenizer would."""

    is_fast = False

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.model_max_length = tokenizer.model_max_length

    def __call__(self, text, **kwargs):
        return self._tokenizer(text, **kwargs)

    def decode(self, ids):
        return self._tokenizer.decode(ids)


@pytest.mark.parametrize("wrap", [False, True], ids=["offsets", "decoding"])
def test_token_indices(wrap):
    tokenizer = tiny_clip_tokenizer()
    prompt = "A red triangle left of the blue square"
    ids = tokenizer(prompt).input_ids
    assert tokenizer.convert_ids_to_tokens(ids[3:5]) == ["tri", "angle</w>"]
    assert len(ids) == 11  # BOS + 9 tokens + EOS
    tok = NoOffsetsTokenizer(tokenizer) if wrap else tokenizer

    assert token_indices(tok, prompt, "a") == [1]  # after BOS
    assert token_indices(tok, prompt, "Red") == [2]
    assert token_indices(tok, prompt, "triangle") == [3, 4]
    assert token_indices(tok, prompt, "blue square") == [8, 9]
    assert token_indices(tok, prompt, "red  triangle") == [2, 3, 4]
    assert token_indices(tok, "a red circle left of the red square", "red", occurrence=1) == [7]
    for missing in ("green", "tri", "square blue", "red", ""):
        with pytest.raises(InvalidInputError):
            token_indices(tok, prompt if missing != "red" else "a blue circle", missing)


# -- pooling and heatmaps --------------------------------------------------------------------


def test_lse_pool_matches_eq_5_4_and_tends_to_row_max():
    attention = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])  # [n=2, m=3]
    for lam in (1.0, 4.0):
        rows = [math.log(sum(math.exp(lam * a) for a in row)) / lam for row in attention.tolist()]
        assert lse_pool(attention, lam).item() == pytest.approx(sum(rows) / 2, abs=1e-6)
    row_max_mean = (0.7 + 0.5) / 2
    gaps = [lse_pool(attention, lam).item() - row_max_mean for lam in (1.0, 10.0, 100.0, 1000.0)]
    assert all(g > 0 for g in gaps) and gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3
    assert lse_pool(torch.rand(2, 3, 5, 4)).shape == (2, 3)
    with pytest.raises(InvalidInputError):
        lse_pool(attention, lam=0.0)


def test_latent_grid_rounds_up_odd_sizes():
    assert latent_grid(15 * 13, 15, 13) == (15, 13)
    assert latent_grid(8 * 7, 15, 13) == (8, 7)
    assert latent_grid(4 * 4, 15, 13) == (4, 4)
    assert latent_grid(7 * 6, 15, 13) == (7, 6)  # average pooling rounds down
    with pytest.raises(WorldStudioError):
        latent_grid(50, 15, 13)


def test_aggregate_maps_heatmaps(unet2d, unet3d):
    with torch.no_grad(), CrossAttentionControl(unet2d) as ctl:
        for _ in range(2):
            unet2d(latent(2, 4, 15, 13), 10, encoder_hidden_states=text(2))
    every_token = list(range(TOKENS))
    heat = aggregate_maps(ctl.store, every_token, batch_index=1)
    torch.testing.assert_close(heat, torch.ones(15, 13), atol=1e-5, rtol=0)  # probabilities sum to 1
    assert aggregate_maps(ctl.store, [2, 3], layers="mid_block", steps=[-1], size=30).shape == (30, 26)
    assert aggregate_maps(ctl.store, [2], size=(8, 8)).shape == (8, 8)
    with pytest.raises(InvalidInputError):
        aggregate_maps(ctl.store, [TOKENS])

    with torch.no_grad(), CrossAttentionControl(unet3d) as ctl:
        unet3d(latent(1, 4, 3, 16, 16), 10, encoder_hidden_states=text(1))
    assert aggregate_maps(ctl.store, [1]).shape == (3, 16, 16)


# -- pre-softmax recording (values="logits", what the Discffusion score pools) ----------------


def test_logits_mode_gives_back_probabilities_and_leaves_output_unchanged(unet2d):
    x, emb = latent(2, 4, 16, 16), text(2)
    with torch.no_grad():
        plain = unet2d(x, 10, encoder_hidden_states=emb).sample
        with CrossAttentionControl(unet2d) as probs_ctl:
            unet2d(x, 10, encoder_hidden_states=emb)
        with CrossAttentionControl(unet2d, values="logits") as logits_ctl:
            recorded = unet2d(x, 10, encoder_hidden_states=emb).sample
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert logits_ctl.store.values == "logits" and probs_ctl.store.values == "probs"
    for name in probs_ctl.store.layer_names:
        logits = logits_ctl.store.maps_for(name)
        probs = probs_ctl.store.maps_for(name)
        assert logits.shape == probs.shape and logits.dtype == torch.float32
        assert not torch.allclose(logits.sum(-1), torch.ones(logits.shape[:-1]), atol=1e-2)
        torch.testing.assert_close(logits.softmax(-1), probs, atol=1e-5, rtol=1e-5)
        # LSE of the logits is the log-normaliser Z that softmax discards: s_ij - log p_ij
        lse = torch.logsumexp(logits, dim=-1)
        torch.testing.assert_close(lse, logits[..., 0] - probs[..., 0].log(), atol=1e-4, rtol=1e-4)
    # heatmaps read a logits store through its softmax
    torch.testing.assert_close(
        aggregate_maps(logits_ctl.store, [1, 2]), aggregate_maps(probs_ctl.store, [1, 2]), atol=1e-5, rtol=1e-5
    )


def test_logits_are_differentiable_with_offsets(unet2d):
    offsets = AttentionOffsets.from_unet(unet2d, layers="mid_block")
    params = prompt_learning_mode(offsets, unet2d)
    with CrossAttentionControl(unet2d, values="logits", differentiable=True, offsets=offsets, layers="mid_block") as ctl:
        unet2d(latent(1, 4, 16, 16), 10, encoder_hidden_states=text(1))
    lse_pool(ctl.store.maps_for(ctl.layers[0])).sum().backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0
    unet2d.requires_grad_(True)


def test_store_rejects_unknown_values():
    with pytest.raises(InvalidInputError, match="values"):
        CrossAttentionControl(make_unet2d(), values="scores")
