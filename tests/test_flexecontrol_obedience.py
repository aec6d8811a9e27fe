"""FlexEControl training that makes the model obey drawings: hand-drawn maps, object placement, the higher
embedding learning rate, checkpoints and resuming, and the cycle-consistency reward (ControlNet++)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.flexecontrol.conditions import SEGMENTATION_PALETTE
from pipelines.flexecontrol.metrics import object_placement, palette_classes
from pipelines.flexecontrol.reward import (
    build_segmenter,
    cycle_consistency_loss,
    predicted_clean_latents,
    save_segmenter,
)
from pipelines.flexecontrol.strokes import CANVAS, draw_objects, drawn_map, nearness_grey
from pipelines.shapesworld import sample_scene
from pipelines.shapesworld.conditions import canny
from pipelines.shapesworld.metrics import box_iou
from pipelines.shapesworld.scene import Placement, render_scene
from dummies import dummy_sd_components


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


@pytest.fixture(scope="module")
def scenes():
    return [sample_scene(seed, size=64, split="test") for seed in range(12)]


# -- maps drawn by hand ------------------------------------------------------------------------


def test_drawn_outlines_follow_each_object_but_are_not_the_clean_map(scenes):
    """Each object's hand-drawn outline lies on the object (box IoU >= 0.5 in at least 90% of draws), is
    thicker than Canny's one-pixel line, and a seed gives the same drawing."""
    hits, total = 0, 0
    for k, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            stroke = drawn_map(scene, "canny", np.random.default_rng(k), objects=[j]) > 0
            hits += box_iou(_box_of(stroke), obj.box) >= 0.5
            total += 1
        drawn = drawn_map(scene, "sketch", np.random.default_rng(k))
        assert np.array_equal(drawn, drawn_map(scene, "sketch", np.random.default_rng(k)))
        assert (drawn > 0).sum() > 1.3 * (canny(scene) > 0).sum()
    assert hits >= 0.8 * total  # thick strokes grow a small object's box


def test_drawn_brushes_paint_the_shape_class_and_the_depth_grey(scenes):
    scene = scenes[0]
    for j, obj in enumerate(scene.objects):
        seg = drawn_map(scene, "segmentation", np.random.default_rng(j), objects=[j])
        classes = palette_classes(seg)
        painted = classes > 0
        assert painted.any()
        expected = list(SEGMENTATION_PALETTE).index(obj.shape)
        assert (classes[painted] == expected).mean() > 0.95
        # most of the object's own pixels are painted
        assert painted[obj.mask].mean() > 0.6
        depth = drawn_map(scene, "depth", np.random.default_rng(j), objects=[j])
        inside = depth[obj.mask & (depth > 0)]
        assert abs(float(np.median(inside)) - nearness_grey(obj)) <= 2
    canvas = draw_objects([], "canny", np.random.default_rng(0), 64)
    assert canvas.shape == (CANVAS, CANVAS, 3) and not canvas.any()


# -- object placement ------------------------------------------------------------------------


def test_placement_on_truth_moved_and_recoloured_objects():
    from dataclasses import replace

    scene = sample_scene(3, size=64, split="test", n_objects=2)
    truth = object_placement(scene.objects, scene.image)
    assert truth.placed == [True, True] and truth.right == [True, True]
    first, second = scene.placements
    other = next(c for c in ("red", "green", "blue", "yellow") if c not in (first.colour, second.colour))
    recoloured = render_scene([replace(first, colour=other), second], size=64, background=scene.background)
    verdict = object_placement(scene.objects, recoloured.image)
    assert verdict.placed == [True, True] and verdict.right == [False, True]
    # Moved by half the frame: nothing is where it was drawn.
    mirrored = (1.0 - first.center[0], 1.0 - first.center[1])
    if max(abs(mirrored[0] - first.center[0]), abs(mirrored[1] - first.center[1])) < first.side:
        mirrored = (first.side / 2 + 0.01, first.side / 2 + 0.01) if first.center[0] > 0.5 else (0.99 - first.side / 2,) * 2
    moved = render_scene([replace(first, center=mirrored)], size=64, background=scene.background)
    assert object_placement(scene.objects[:1], moved.image).placed == [False]
    empty = object_placement(scene.objects, np.full_like(scene.image, 128))
    assert empty.placed == [False, False] and empty.right == [False, False]


# -- training options ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_training():
    from diffusers import StableDiffusionPipeline

    from pipelines.flexecontrol.data import build_control_scenes
    from pipelines.flexecontrol.train import prepare_base

    pipe = StableDiffusionPipeline(**dummy_sd_components(seed=0))
    scenes = build_control_scenes(6, 32, pipe.tokenizer, pipe.tokenizer.model_max_length)
    return pipe, scenes, prepare_base(pipe, scenes, "cpu")


def test_composition_maps_draw_by_hand_and_cut_by_object(small_training):
    from pipelines.flexecontrol.train import composition_maps

    _, scenes, _ = small_training
    index = np.arange(6)
    pair = [("canny", "chosen"), ("segmentation", "rest")]
    clean = composition_maps(scenes, index, pair, torch.Generator().manual_seed(0))
    drawn = composition_maps(scenes, index, pair, torch.Generator().manual_seed(0), drawn_probability=1.0)
    for (kind, c_maps, c_parts), (_, d_maps, d_parts) in zip(clean, drawn):
        assert c_parts == d_parts
        assert not torch.equal(c_maps, d_maps)
        for b, part in enumerate(c_parts):
            others = set(range(len(scenes.objects[b]))) - set(part)
            # the map covers its own objects, not the others'
            for j in part:
                assert d_maps[b, :, scenes.masks[b, j]].sum() > 0
            for j in others:
                assert c_maps[b, :, scenes.masks[b, j]].sum() == 0
    assert [p for p in clean[0][2]] and all(len(p) == 1 for p in clean[0][2])
    whole = composition_maps(scenes, index, [("depth", "all")], torch.Generator().manual_seed(0))
    assert torch.equal(whole[0][1], scenes.map_batch("depth", index)) and whole[0][2] == [None] * 6


def test_judge_scores_segmentation_against_the_truth_and_against_the_map_given():
    """The renders judged as if generated: extracted maps are the truth, so both mIoUs agree and placement is
    near 1; a drawn brush is a little off the truth, so the renders match it less than the truth; a canny
    setting has no segmentation map to judge against."""
    from transformers import CLIPTokenizer

    from pipelines.flexecontrol.data import build_control_scenes
    from pipelines.flexecontrol.evaluate import condition_slots, judge

    tokenizer = dummy_sd_components(seed=0)["tokenizer"]
    assert isinstance(tokenizer, CLIPTokenizer)
    scenes = build_control_scenes(8, 64, tokenizer, tokenizer.model_max_length, split="test")
    scores = {}
    for setting in ("single_segmentation", "single_canny"):
        for source in ("extracted", "drawn"):
            slots, parts = condition_slots(scenes, setting, source)
            scores[setting, source] = judge(scenes, scenes.images, slots, parts, setting, source)
    extracted, drawn = scores["single_segmentation", "extracted"], scores["single_segmentation", "drawn"]
    assert extracted.placed >= 0.9 and extracted.miou_segmentation >= 0.9
    assert extracted.miou_condition == pytest.approx(extracted.miou_segmentation)
    assert drawn.miou_segmentation == pytest.approx(extracted.miou_segmentation)
    assert drawn.miou_condition < drawn.miou_segmentation - 0.05
    assert scores["single_canny", "extracted"].miou_condition is None


def test_embedding_learning_rate_and_checkpoints_resume(small_training, tmp_path):
    from accelerate import Accelerator

    from pipelines.flexecontrol.encoder import ALWAYS_TRAINED, load_copied_encoder
    from pipelines.flexecontrol.train import FlexTrainConfig, FlexTrainer
    from pipelines.training import TrainSchedule

    pipe, scenes, base = small_training
    config = FlexTrainConfig(schedule=TrainSchedule(2, 2, 1e-3), embedding_lr_multiplier=5.0, drawn_probability=0.5)
    trainer = FlexTrainer(config, base, scenes, Accelerator(cpu=True))
    first = {id(p) for prefix in ALWAYS_TRAINED for p in getattr(trainer.encoder.controlnet, prefix).parameters()}
    groups = trainer.optimizer.optimizer.param_groups if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer.param_groups
    assert groups[0]["initial_lr"] == pytest.approx(5e-3) and groups[1]["initial_lr"] == pytest.approx(1e-3)
    assert {id(p) for p in groups[0]["params"]} == first
    trainer.run(checkpoint_dir=tmp_path, checkpoint_every=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00001", "step-00002"]
    loaded = load_copied_encoder(tmp_path / "step-00002", pipe.unet, 2)
    state = trainer.encoder.trainable_state_dict()
    assert all(torch.equal(v, loaded.trainable_state_dict()[k]) for k, v in state.items())
    resumed = FlexTrainer(config, base, scenes, Accelerator(cpu=True))
    resumed.load_trained(tmp_path / "step-00002")
    assert all(torch.equal(v, resumed.encoder.trainable_state_dict()[k]) for k, v in state.items())


# -- cycle-consistency reward --------------------------------------------------------------------


def test_one_step_estimate_recovers_the_clean_latent_by_hand():
    alphas = torch.tensor([0.9, 0.5, 0.1])
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([0, 1, 2])
    noisy = alphas.sqrt().view(-1, 1, 1, 1) * x0 + (1 - alphas).sqrt().view(-1, 1, 1, 1) * eps
    torch.testing.assert_close(predicted_clean_latents(noisy, eps, t, alphas), x0, rtol=1e-5, atol=1e-5)


def test_cycle_reward_judges_low_noise_samples_and_reaches_the_encoder(small_training, tmp_path):
    from accelerate import Accelerator

    from pipelines.flexecontrol.train import FlexTrainConfig, FlexTrainer
    from pipelines.training import TrainSchedule

    pipe, scenes, base = small_training
    torch.manual_seed(0)
    save_segmenter(build_segmenter(), tmp_path / "seg")
    latents, targets = torch.randn(2, 4, 16, 16), torch.zeros(2, 32, 32, dtype=torch.long)
    alphas = torch.linspace(0.99, 0.01, 1000)
    assert cycle_consistency_loss(build_segmenter(), pipe.vae, latents, latents, torch.tensor([500, 900]), alphas,
                                  targets, 200) is None
    config = FlexTrainConfig(schedule=TrainSchedule(1, 4, 1e-3), cycle_weight=1.0, cycle_max_timestep=999,
                             reward_model=str(tmp_path / "seg"), lambda_ca=0.0)
    trainer = FlexTrainer(config, base, scenes, Accelerator(cpu=True))
    for p in trainer.encoder.controlnet.controlnet_down_blocks.parameters():  # open the zero convolutions
        torch.nn.init.normal_(p, std=0.1)
    trainer.optimizer.step = lambda *args, **kwargs: None
    trainer.optimizer.zero_grad = lambda *args, **kwargs: None
    trainer.step(np.arange(4))
    assert trainer.last_terms["cycle"] > 0
    embedding = trainer.encoder.controlnet.controlnet_cond_embedding
    assert sum(float(p.grad.abs().sum()) for p in embedding.parameters() if p.grad is not None) > 0
    assert not any(p.grad is not None for p in trainer.segmenter.parameters())


# -- words tied to drawn objects, control on the text half -----------------------------------------


def test_region_bias_by_hand():
    from pipelines.attention.regions import Region, region_bias

    mask = torch.zeros(4, 4)
    mask[:2, :2] = 1.0  # top-left quarter
    bias = region_bias([[Region([1, 2], mask)], []], side=2, tokens=4, strength=3.0)
    assert bias.shape == (2, 4, 4)
    # at 2x2 the quarter is pixel 0: +3 there, -3 at the other pixels, for tokens 1 and 2 only
    expected = torch.zeros(4, 4)
    expected[:, 1:3] = -3.0
    expected[0, 1:3] = 3.0
    torch.testing.assert_close(bias[0], expected)
    assert not bias[1].any()


def test_region_bias_moves_a_words_attention_into_its_region():
    """At one cross-attention layer, the biased tokens' attention mass inside the region rises (from its
    share without the bias) and the other tokens' maps renormalise only."""
    from diffusers.models.attention_processor import Attention

    from pipelines.attention import AttentionStore
    from pipelines.attention.regions import Region, RegionBiasProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8)
    hidden, context = torch.randn(1, 16, 16), torch.randn(1, 5, 8)  # a 4x4 grid, 5 tokens
    mask = torch.zeros(4, 4)
    mask[:, :2] = 1.0  # the left half
    inside = mask.flatten().bool()

    def probs(regions):
        store = AttentionStore()
        store.begin_step(0, (1, 4, 4, 4))
        processor = RegionBiasProcessor("layer", regions, strength=3.0)
        processor.store = store
        attn.set_processor(processor)
        attn(hidden, encoder_hidden_states=context)
        return store.maps_for("layer")[0].mean(0).reshape(16, 5)  # [pixels, tokens], heads averaged

    plain, biased = probs([[]]), probs([[Region([2], mask)]])
    share = lambda p: float(p[inside, 2].sum() / p[:, 2].sum())  # noqa: E731
    assert share(biased) > share(plain) + 0.2 and share(biased) > 0.9
    torch.testing.assert_close(plain.sum(-1), torch.ones(16))
    torch.testing.assert_close(biased.sum(-1), torch.ones(16))


def test_regional_attention_restores_the_processors(components_pipe):
    from pipelines.attention.regions import Region, RegionalAttention

    unet = components_pipe.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    sample, emb = torch.randn(1, 4, 16, 16), torch.randn(1, 16, 32)
    plain = unet(sample, 10, encoder_hidden_states=emb).sample
    with RegionalAttention(unet, [[Region([1, 2], torch.ones(8, 8).tril())]], strength=4.0):
        biased = unet(sample, 10, encoder_hidden_states=emb).sample
    assert (biased - plain).abs().mean() > 1e-4
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    torch.testing.assert_close(unet(sample, 10, encoder_hidden_states=emb).sample, plain)


@pytest.fixture(scope="module")
def components_pipe():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**dummy_sd_components(seed=0))


def test_object_regions_tie_phrases_to_drawn_shapes(components_pipe):
    """'a red circle left of a blue square' over a circle drawn left and a square drawn right: each phrase gets
    its own drawn object's region; two drawn circles for one named circle are left unbound."""
    from pipelines.flexecontrol.pipeline import object_regions
    from pipelines.shapesworld.conditions import sketch

    scene = render_scene([Placement("circle", "red", (0.25, 0.5), 0.3), Placement("square", "blue", (0.75, 0.5), 0.3)],
                         size=64)
    prompt = "a red circle left of a blue square"
    regions = object_regions(prompt, [("sketch", sketch(scene))], components_pipe.tokenizer)
    assert len(regions) == 2
    from pipelines.attention import token_indices

    assert regions[0].tokens == token_indices(components_pipe.tokenizer, prompt, "red circle")
    assert regions[1].tokens == token_indices(components_pipe.tokenizer, prompt, "blue square")
    left, right = (float(r.mask[:, :32].sum() / r.mask.sum()) for r in regions)
    assert left > 0.95 and right < 0.05
    two_circles = render_scene([Placement("circle", "red", (0.25, 0.5), 0.3), Placement("circle", "red", (0.75, 0.5), 0.3)],
                               size=64)
    assert object_regions("a red circle", [("sketch", sketch(two_circles))], components_pipe.tokenizer) == []


def test_conditional_control_leaves_the_unconditional_half_alone(components_pipe):
    """Control on the text half only changes the image (guidance now amplifies it), and without guidance it is
    the same as control on both halves."""
    from pipelines.flexecontrol import ConditionBatch, EncoderConfig, FlexEControlPipeline, build_copied_encoder

    c = components_pipe
    torch.manual_seed(1)
    encoder = build_copied_encoder(c.unet, 2, EncoderConfig())
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in encoder.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    pipe = FlexEControlPipeline(c.vae, c.text_encoder, c.tokenizer, c.unet, c.scheduler, encoder)
    slot = ConditionBatch("canny", torch.rand(1, 3, 32, 32, generator=g))

    def make(guidance, conditional):
        return pipe.generate(["a red circle"], [slot], [torch.Generator().manual_seed(0)], num_inference_steps=2,
                             guidance_scale=guidance, progress=False, conditional_control=conditional).astype(int)

    assert np.abs(make(3.0, True) - make(3.0, False)).mean() > 0.5
    assert np.array_equal(make(1.0, True), make(1.0, False))
