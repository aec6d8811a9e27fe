"""FlexEControl: the shared Kronecker x low-rank adapter (eq. 9.2), the copied encoder, the losses (eq. 9.3-9.6),
condition layers and multi-condition generation, on tiny components built here."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.errors import InvalidInputError
from pipelines.flexecontrol import (
    Condition,
    EncoderConfig,
    FlexEControlPipeline,
    KroneckerLowRankLayer,
    build_copied_encoder,
    condition_mask,
    cross_attention_loss,
    from_drawing,
    from_upload,
    kron_lowrank_parameter_count,
    kron_sum,
    load_copied_encoder,
    masked_diffusion_loss,
    prepare_conditions,
    segment_attention,
    total_loss,
)
from pipelines.flexecontrol.adapter import PHMAdaptedLayer
from pipelines.flexecontrol.conditions import class_palette, depth_from_model
from pipelines.flexecontrol.encoder import ALWAYS_TRAINED, adapted_layer_names
from pipelines.flexecontrol.metrics import edge_ssim, segmentation_miou, ssim
from pipelines.shapesworld import sample_scene
from pipelines.shapesworld.conditions import canny, condition_maps, segmentation
from dummies import dummy_sd_components

TYPES = ("canny", "sketch", "segmentation", "depth")


def randomize_(module: nn.Module, seed: int, scale: float = 0.2) -> None:
    """Fill every trainable tensor with noise, as training would (zero convolutions and v start at 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def components():
    return dummy_sd_components(seed=0)


def encoder_for(components, **kwargs):
    torch.manual_seed(1)
    return build_copied_encoder(components["unet"], 2, EncoderConfig(**kwargs))


# -- adapter (eq. 9.2) -------------------------------------------------------------------------


def test_kron_sum_is_the_sum_of_kronecker_products():
    hub, blocks = torch.randn(3, 3, 3), torch.randn(3, 2, 4)
    expected = sum(torch.kron(hub[i], blocks[i]) for i in range(3))
    torch.testing.assert_close(kron_sum(hub, blocks), expected)


@pytest.mark.parametrize("base", [nn.Linear(8, 12), nn.Conv2d(4, 8, 3, padding=1)])
def test_layer_is_the_frozen_layer_at_initialisation(base):
    layer = KroneckerLowRankLayer(base, n=4, rank=2, condition_types=TYPES)
    x = torch.randn(2, 8) if isinstance(base, nn.Linear) else torch.randn(2, 4, 5, 5)
    for kind in TYPES:
        layer.active = kind
        assert torch.count_nonzero(layer.delta_weight()) == 0
        torch.testing.assert_close(layer(x), base(x), rtol=0, atol=0)
    assert not any(p.requires_grad for p in base.parameters())


def test_layer_parameter_count_matches_the_formula():
    layer = KroneckerLowRankLayer(nn.Linear(32, 48), n=4, rank=3, condition_types=TYPES)
    trainable = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert trainable == kron_lowrank_parameter_count(48, 32, 4, 3, 4) == 4**3 + 4 * 3 * (48 + 32)


def test_hub_is_one_tensor_shared_by_every_condition_type():
    layer = KroneckerLowRankLayer(nn.Linear(8, 8), n=2, rank=2, condition_types=TYPES)
    randomize_(layer, 0)
    hubs = [name for name, _ in layer.named_parameters() if "hub" in name]
    assert hubs == ["hub"]  # one H per layer, not one per type
    gradients = []
    for kind in TYPES:
        (grad,) = torch.autograd.grad(layer.delta_weight(kind).square().sum(), layer.hub)
        gradients.append(grad)
        assert grad.abs().sum() > 0  # every type's update goes through the same H tensor
    # ...while each type has its own fast weights: the four updates differ.
    deltas = [layer.delta_weight(kind) for kind in TYPES]
    assert all(not torch.allclose(deltas[0], d) for d in deltas[1:])
    assert set(layer.u) == set(layer.v) == set(TYPES) and len({id(p) for p in layer.u.values()}) == 4


def test_chunked_batch_uses_each_chunks_type():
    layer = KroneckerLowRankLayer(nn.Linear(8, 8), n=2, rank=2, condition_types=TYPES)
    randomize_(layer, 1)
    x = torch.randn(4, 8)
    layer.active = ["canny", "depth"]
    both = layer(x)
    layer.active = "canny"
    first = layer(x[:2])
    layer.active = "depth"
    second = layer(x[2:])
    torch.testing.assert_close(both, torch.cat([first, second]))


def test_phm_layer_starts_at_zero_and_shares_factors():
    shared = nn.Parameter(torch.randn(2, 2, 2))
    a, b = PHMAdaptedLayer(nn.Linear(4, 6), shared), PHMAdaptedLayer(nn.Linear(8, 4), shared)
    assert torch.count_nonzero(a.delta_weight()) == 0 and a.shared[0] is b.shared[0]
    assert a.blocks.numel() == 6 * 4 // 2


# -- copied encoder ----------------------------------------------------------------------------


def test_encoder_is_identity_at_initialisation(components):
    encoder = encoder_for(components)
    randomize_(encoder.controlnet.controlnet_down_blocks, 2)  # zero convs alone would hide any difference
    randomize_(encoder.controlnet.controlnet_mid_block, 3)
    randomize_(encoder.controlnet.controlnet_cond_embedding, 4)
    plain = copy.deepcopy(encoder)
    for name in plain.adapted_layers:
        parent, _, child = name.rpartition(".")
        setattr(plain.controlnet.get_submodule(parent), child, plain.controlnet.get_submodule(name).base)
    sample, emb, cond = torch.randn(1, 4, 16, 16), torch.randn(1, 16, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ((down, mid),) = encoder(sample, torch.tensor([10]), emb, [("canny", cond)])
        ((plain_down, plain_mid),) = plain(sample, torch.tensor([10]), emb, [("depth", cond)])
    assert mid.abs().sum() > 0
    torch.testing.assert_close(mid, plain_mid)
    for a, b in zip(down, plain_down):
        torch.testing.assert_close(a, b)


def test_encoder_parameter_count_matches_the_formula(components):
    encoder = encoder_for(components, kron_terms=4, rank=2)
    net = encoder.controlnet
    assert encoder.adapted_layers and all(".attn2.to_" in n for n in encoder.adapted_layers)
    adapter = sum(kron_lowrank_parameter_count(*net.get_submodule(n).base.weight.shape, 4, 2, len(TYPES))
                  for n in encoder.adapted_layers)
    always = sum(p.numel() for prefix in ALWAYS_TRAINED for p in getattr(net, prefix).parameters())
    assert encoder.num_trainable() == adapter + always
    full = encoder_for(components, method="full")
    assert full.num_trainable() == sum(p.numel() for p in full.controlnet.parameters())
    assert encoder.num_trainable() < 0.5 * full.num_trainable()


def test_all_targets_flag_adapts_convolutions_too(components):
    encoder = encoder_for(components, targets="all")
    kinds = {type(encoder.controlnet.get_submodule(n).base) for n in encoder.adapted_layers}
    assert kinds == {nn.Linear, nn.Conv2d}
    assert len(encoder.adapted_layers) > len(adapted_layer_names(encoder_for(components).controlnet, "cross-attention", 4))


@pytest.mark.parametrize("method", ["lora", "phm", "full"])
def test_baselines_train_the_same_always_trained_parts(components, method):
    encoder = encoder_for(components, method=method)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert any(n.startswith("controlnet.controlnet_cond_embedding") for n in trainable)
    if method == "lora":
        assert any("lora_" in n for n in trainable)


def test_save_and_load_round_trip(components, tmp_path):
    encoder = encoder_for(components)
    randomize_(encoder, 5)
    encoder.save(tmp_path)
    loaded = load_copied_encoder(tmp_path, components["unet"], 2)
    for name, tensor in encoder.trainable_state_dict().items():
        torch.testing.assert_close(loaded.trainable_state_dict()[name], tensor)


def test_unknown_type_in_the_encoder_is_refused(components):
    encoder = encoder_for(components)
    with pytest.raises(InvalidInputError, match="pose"):
        encoder(torch.randn(1, 4, 16, 16), 1, torch.randn(1, 16, 32), [("pose", torch.rand(1, 3, 32, 32))])


# -- losses (eq. 9.3-9.6), by hand -----------------------------------------------------------


def test_masked_diffusion_loss_by_hand():
    prediction = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    noise = torch.tensor([[[[0.0, 0.0], [1.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    # masked errors: 1, 0, 0, 3 -> squares 1, 0, 0, 9 -> mean over 4 entries
    assert masked_diffusion_loss(prediction, noise, mask).item() == pytest.approx(10 / 4)


def test_cross_attention_loss_by_hand():
    # Layer 1: 2 heads on a 2x2 grid, 3 tokens; layer 2: 1 head.
    layer1 = torch.zeros(1, 2, 2, 2, 3)
    layer1[0, 0, :, :, 1] = torch.tensor([[0.8, 0.2], [0.0, 0.4]])
    layer1[0, 1, :, :, 1] = torch.tensor([[0.6, 0.2], [0.2, 0.0]])
    layer1[0, :, :, :, 2] = 0.1
    layer2 = torch.zeros(1, 1, 2, 2, 3)
    layer2[0, 0, :, :, 1] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    tokens = torch.tensor([[[0.0, 1.0, 1.0]]])  # segment 0 = tokens 1 and 2
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # eq. 9.3: head means of layer 1, token 1: [[0.7, 0.2], [0.1, 0.2]]; + token 2: 0.1 -> [[0.8, 0.3], [0.2, 0.3]]
    # layer 2: [[1, 0], [0, 0]]; average of the two layers: [[0.9, 0.15], [0.1, 0.15]]
    expected_a = torch.tensor([[0.9, 0.15], [0.1, 0.15]])
    torch.testing.assert_close(segment_attention([layer1, layer2], tokens, (2, 2))[0, 0], expected_a)
    # eq. 9.4: mean of (A - M)^2 = (0.01 + 0.0225 + 0.01 + 0.0225) / 4
    loss = cross_attention_loss([layer1, layer2], tokens, mask)
    assert loss.item() == pytest.approx(0.065 / 4, abs=1e-6)
    # A segment marked invalid does not count.
    two_segments = torch.cat([tokens, tokens], dim=1)
    masks = torch.cat([mask, torch.ones_like(mask)], dim=1)
    valid = torch.tensor([[True, False]])
    assert cross_attention_loss([layer1, layer2], two_segments, masks, valid).item() == pytest.approx(loss.item())


def test_condition_mask_and_total_loss():
    a = torch.zeros(1, 3, 4, 4)
    a[0, 0, 0, 0] = 1.0
    b = torch.zeros(1, 3, 4, 4)
    b[0, 2, 3, 3] = 0.5
    mask = condition_mask([a, b], (2, 2))
    assert mask[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    total = total_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), 0.01, 0.01)
    assert total.item() == pytest.approx(1.05)
    assert total_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), 0.0, 0.01).item() == pytest.approx(1.03)


# -- condition layers and bad input --------------------------------------------------------------


@pytest.fixture(scope="module")
def scene():
    return sample_scene(3, split="test")


def test_upload_extractors_match_shapesworld(scene):
    assert np.array_equal(from_upload(scene.image, "edge", 64), canny(scene))
    seg = from_upload(scene.image, "segmentation", 64)
    assert (seg == segmentation(scene)).all(axis=-1).mean() > 0.95
    assert from_upload(scene.image, "sketch", 64).any()
    assert from_upload(scene.image, "depth", 64).shape == (64, 64)


def test_drawings_become_maps():
    canvas = np.zeros((256, 256, 3), np.uint8)
    canvas[100:110, 20:200] = 255  # a white stroke
    lines = from_drawing(canvas, "canny", 64)
    assert lines.shape == (64, 64) and set(np.unique(lines)) == {0, 255} and lines[26, 10:45].all()
    canvas[150:200, 150:200] = (10, 240, 250)  # roughly the circle colour (cyan)
    seg = from_drawing(canvas, "segmentation", 64)
    assert tuple(seg[43, 43]) == (0, 255, 255)
    grey = np.full((256, 256, 3), 128, np.uint8)
    assert from_drawing(grey, "depth", 64).mean() == pytest.approx(128, abs=1)


def test_depth_from_a_transformers_model_structurally():
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(0)
    config = DPTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, backbone_out_indices=[0, 1, 2, 3],
                       num_attention_heads=4, intermediate_size=37, neck_hidden_sizes=[16, 16, 32, 32],
                       fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1)
    model = DPTForDepthEstimation(config).eval()
    depth = depth_from_model(model, np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8), 64)
    assert depth.shape == (64, 64) and depth.dtype == np.uint8 and depth.min() == 0 and depth.max() == 255


def test_the_class_palette_is_fixed_distinct_and_never_black():
    palette = class_palette(150)
    assert palette.shape == (150, 3) and palette.dtype == np.uint8
    assert len(np.unique(palette, axis=0)) == 150 and palette.any(axis=1).all()  # black stays "no segment"
    # PASCAL VOC's entries 1-3 (red, green, olive) for classes 0-2, and a shorter palette is a prefix of it.
    assert palette[:3].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert np.array_equal(class_palette(20), palette[:20])
    with pytest.raises(InvalidInputError):
        class_palette(0)


def test_bad_input_gets_clear_messages(scene):
    maps = condition_maps(scene)
    good = Condition("canny", maps["canny"])
    conditions, notes = prepare_conditions([], 64)
    assert conditions == [] and "text alone" in notes[0]
    with pytest.raises(InvalidInputError, match="5 conditions"):
        prepare_conditions([good] * 5, 64)
    with pytest.raises(InvalidInputError, match="Condition 2 \\(sketch\\) is empty"):
        prepare_conditions([good, Condition("sketch", np.zeros((64, 64), np.uint8))], 64)
    with pytest.raises(InvalidInputError, match="Unknown condition type 'pose'"):
        prepare_conditions([Condition("pose", maps["canny"])], 64)
    with pytest.raises(InvalidInputError, match="weight 2.5 is outside"):
        prepare_conditions([Condition("canny", maps["canny"], weight=2.5)], 64)
    with pytest.raises(InvalidInputError, match="weight -0.1 is outside"):
        prepare_conditions([Condition("canny", maps["canny"], weight=-0.1)], 64)
    with pytest.raises(InvalidInputError, match="start 0.8 and end 0.5"):
        prepare_conditions([Condition("canny", maps["canny"], start=0.8, end=0.5)], 64)
    big = np.kron(maps["segmentation"], np.ones((2, 2, 1), np.uint8))  # 128x128
    conditions, notes = prepare_conditions([good, Condition("seg", big)], 64)
    assert conditions[1].type == "segmentation" and conditions[1].image.shape == (64, 64, 3)
    assert notes == ["Condition 2 (segmentation) was 128x128; it was resized to 64x64."]
    assert (conditions[1].image == maps["segmentation"]).all(axis=-1).mean() > 0.97


def test_metrics_on_truth(scene):
    maps = condition_maps(scene)
    assert ssim(maps["canny"], maps["canny"]) == pytest.approx(1.0)
    assert edge_ssim(maps["canny"], scene.image) == pytest.approx(1.0)
    assert segmentation_miou(maps["segmentation"], scene.image) > 0.9
    assert segmentation_miou(maps["segmentation"], np.full_like(scene.image, 128)) < 0.5


# -- multi-condition generation --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(components):
    encoder = encoder_for(components)
    randomize_(encoder, 6, scale=0.5)
    c = components
    return FlexEControlPipeline(c["vae"], c["text_encoder"], c["tokenizer"], c["unet"], c["scheduler"], encoder)


def _generate(pipe, conditions):
    out = pipe("a red circle left of a blue square", conditions, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), progress=False)
    return out.images[0].astype(np.int32), out


def test_two_conditions_each_change_the_image(pipeline):
    scene_a, scene_b = sample_scene(1, size=32, split="test"), sample_scene(2, size=32, split="test")
    edges_a, edges_b = canny(scene_a), canny(scene_b)
    seg_a, seg_b = segmentation(scene_a), segmentation(scene_b)
    both, out = _generate(pipeline, [Condition("canny", edges_a), Condition("segmentation", seg_a, 0.8)])
    assert out.images.shape == (1, 32, 32, 3) and out.notes == []
    again, _ = _generate(pipeline, [Condition("canny", edges_a), Condition("segmentation", seg_a, 0.8)])
    assert np.array_equal(both, again)
    first_changed, _ = _generate(pipeline, [Condition("canny", edges_b), Condition("segmentation", seg_a, 0.8)])
    second_changed, _ = _generate(pipeline, [Condition("canny", edges_a), Condition("segmentation", seg_b, 0.8)])
    assert np.abs(first_changed - both).mean() > 1.0
    assert np.abs(second_changed - both).mean() > 1.0
    # Two maps of one type (homogeneous) work too, and a condition outside its steps does nothing.
    homogeneous, _ = _generate(pipeline, [Condition("canny", edges_a), Condition("canny", edges_b)])
    assert np.abs(homogeneous - both).mean() > 1.0
    text_only, out = _generate(pipeline, [])
    assert "text alone" in out.notes[0]
    silent, _ = _generate(pipeline, [Condition("canny", edges_a, start=0.0, end=0.01)])
    # Only step 0 of 2 is steered, so the image moves from the text-only one but less than with the full span.
    full_span, _ = _generate(pipeline, [Condition("canny", edges_a)])
    assert 0 < np.abs(silent - text_only).mean() < np.abs(full_span - text_only).mean() + 1e-9


def test_precomputed_embeddings_give_the_same_residuals(components):
    encoder = encoder_for(components)
    randomize_(encoder, 7)
    sample, emb, cond = torch.randn(2, 4, 16, 16), torch.randn(2, 16, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ((down, mid),) = encoder(sample, torch.tensor(5), emb, [("sketch", cond)])
        embedded = encoder.embed(cond)
        with encoder.embedded_inputs():
            ((down_e, mid_e),) = encoder(sample, torch.tensor(5), emb, [("sketch", embedded)])
    torch.testing.assert_close(mid_e, mid)
    assert all(torch.allclose(a, b) for a, b in zip(down, down_e))
    assert not isinstance(encoder.controlnet.controlnet_cond_embedding, nn.Identity)  # put back


def test_gradient_checkpointing_leaves_the_gradients_unchanged():
    """Checkpointing (copy and frozen UNet, with L_ca's recorder and two condition types in one batch)
    trades time for memory; every trainable tensor's gradient stays the same."""
    from accelerate import Accelerator
    from diffusers import StableDiffusionPipeline

    from pipelines.flexecontrol.data import build_control_scenes
    from pipelines.flexecontrol.train import FlexTrainConfig, FlexTrainer, prepare_base
    from pipelines.training import TrainSchedule

    pipe = StableDiffusionPipeline(**dummy_sd_components(seed=0))
    scenes = build_control_scenes(4, 32, pipe.tokenizer, pipe.tokenizer.model_max_length)
    base = prepare_base(pipe, scenes, "cpu")
    grads, kinds = [], []
    for checkpointing in (False, True):
        config = FlexTrainConfig(schedule=TrainSchedule(1, 4, 1e-3), pair_probability=1.0,
                                 gradient_checkpointing=checkpointing)
        trainer = FlexTrainer(config, base, scenes, Accelerator(cpu=True))
        randomize_(trainer.encoder, seed=3)
        trainer.optimizer.step = lambda *args, **kwargs: None  # keep the gradients to compare them
        trainer.optimizer.zero_grad = lambda *args, **kwargs: None
        trainer.step(np.arange(4))
        assert trainer.last_terms["ca"] > 0
        assert base.unet.is_gradient_checkpointing == trainer.encoder.controlnet.is_gradient_checkpointing == checkpointing
        # types absent from the batch get no gradient
        grads.append({n: p.grad.clone() for n, p in trainer.encoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert sum(bool(g.abs().sum() > 0) for g in grads[0].values()) > 10
    for name, gradient in grads[0].items():
        torch.testing.assert_close(grads[1][name], gradient, rtol=1e-4, atol=1e-7, msg=name)
