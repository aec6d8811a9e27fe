"""pipelines.matching on tiny random components (tests/dummies.py): pooling, determinism, heatmaps,
prompt learning, the hierarchical sampler, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dummies import dummy_sd_pipeline

from pipelines.attention import lse_pool
from pipelines.errors import InvalidInputError
from pipelines.matching import (
    ClassifierConfig,
    DiffusionBackbone,
    DiffusionClassifier,
    DiscffusionConfig,
    DiscffusionScorer,
    PromptLearningConfig,
    Reading,
    check_captions,
    check_image,
    coarse_to_fine,
    counterfactual,
    head_weights,
    pool_heads,
    select_layers,
    train_offsets,
    triplet_loss,
)
from pipelines.matching.methods import parse_methods
from pipelines.shapesworld.benchmark import Group

CAPTIONS = ["a red circle", "a blue square", "a green triangle left of a red square"]


@pytest.fixture(scope="module")
def backbone() -> DiffusionBackbone:
    return DiffusionBackbone.from_pipeline(dummy_sd_pipeline())


def image(height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# -- eq. 5.4 on hand-made matrices ----------------------------------------------------------------


def test_lse_matches_eq_5_4_by_hand_and_tends_to_the_row_max():
    a = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])  # n=2 pixels, m=3 tokens
    by_hand = (math.log(math.e + math.e**2 + 1) + math.log(math.e**0.5 + math.e**-1 + math.e**3)) / 2
    assert float(lse_pool(a, 1.0)) == pytest.approx(by_hand, rel=1e-6)
    lam = 2.0
    by_hand = sum(math.log(sum(math.exp(lam * v) for v in row)) / lam for row in a.tolist()) / 2
    assert float(lse_pool(a, lam)) == pytest.approx(by_hand, rel=1e-6)
    # the matcher's per-head pooling is the same formula on [R, heads, h, w, m]
    maps = a.reshape(1, 1, 1, 2, 3)
    assert float(pool_heads(maps, Reading("logits", lam))[0, 0]) == pytest.approx(by_hand, rel=1e-6)
    row_max_mean = (2.0 + 3.0) / 2
    gaps = [float(lse_pool(a, lam)) - row_max_mean for lam in (1.0, 10.0, 100.0, 1000.0)]
    assert all(g >= 0 for g in gaps) and gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-3
    # post-softmax rows sum to one: LSE over probabilities barely moves (why the code pools logits)
    probs = pool_heads(torch.randn(1, 1, 4, 4, 24) * 3, Reading("probs", 1.0))
    assert math.log(24) <= float(probs) <= math.log(23 + math.e)


def test_prompt_tokens_reading_ignores_padding():
    maps = torch.zeros(1, 1, 1, 1, 5)
    maps[..., 4] = 50.0  # a huge logit on a padding position
    mask = torch.tensor([[True, True, True, False, False]])
    assert float(pool_heads(maps, Reading("logits", 1.0))) > 49
    assert float(pool_heads(maps, Reading("logits", 1.0, "prompt"), mask)) == pytest.approx(math.log(3))


def test_head_weights_sum_to_one_and_follow_attribution():
    maps = torch.zeros(1, 2, 2, 2, 3)
    maps[:, 0] = 4.0  # head 0 attends strongly (large logits), head 1 is flat at 0
    weights = head_weights(maps, Reading("logits", 1.0))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(1))
    assert weights[0, 0] > 0.99


# -- the scorer on dummy components ----------------------------------------------------------------


def test_scores_are_deterministic_by_seed_and_independent_of_the_batch(backbone):
    config = DiscffusionConfig(noise_levels=(0.3, 0.7), denoising_weight=1.0, seed=3)
    scorer = DiscffusionScorer(backbone, config)
    first = scorer.score(image(), CAPTIONS)
    again = scorer.score(image(), CAPTIONS)
    np.testing.assert_array_equal(first.scores, again.scores)
    other = DiscffusionScorer(backbone, DiscffusionConfig(noise_levels=(0.3, 0.7), denoising_weight=1.0, seed=4))
    assert not np.allclose(other.score(image(), CAPTIONS).scores, first.scores)
    alone = scorer.score(image(), CAPTIONS[1:2])
    assert alone.scores[0] == pytest.approx(first.scores[1], abs=1e-5)
    assert first.unet_evaluations == 2 * (len(CAPTIONS) + 1)  # levels x (captions + the empty caption)
    assert set(first.terms) == {"attention", "denoising"}


def test_layer_selection_follows_the_unet(backbone):
    layers = select_layers(backbone.unet, "all")
    assert layers and select_layers(backbone.unet, "last-per-stage")
    assert set(select_layers(backbone.unet, "last-per-stage")) <= set(layers)
    with pytest.raises(InvalidInputError, match="selects none"):
        select_layers(backbone.unet, "up_blocks.9")


@pytest.mark.parametrize("height, width", [(32, 48), (40, 20)])
def test_heatmaps_have_the_image_aspect(backbone, height, width):
    scorer = DiscffusionScorer(backbone, DiscffusionConfig(noise_levels=(0.5,)))
    features = scorer.features(image(height, width), CAPTIONS, keep_maps=True)
    maps = scorer.heatmaps(features, 2, size=96)
    assert list(maps) == ["a", "green", "triangle", "left", "of", "red", "square"]
    for heat in maps.values():
        assert heat.shape == (round(height * 96 / max(height, width)), round(width * 96 / max(height, width)))
        assert heat.min() >= 0 and heat.max() <= 1
    one = scorer.heatmaps(features, 0, layer=features.layers[0], level=0)
    assert set(one) == {"a", "red", "circle"}


def test_prompt_learning_changes_only_the_offsets(backbone):
    frozen = {
        name: {k: v.clone() for k, v in module.state_dict().items()}
        for name, module in (("unet", backbone.unet), ("vae", backbone.vae), ("text", backbone.text_encoder))
    }
    scorer = DiscffusionScorer(backbone, DiscffusionConfig(noise_levels=(0.5,), denoising_weight=1.0))
    group = Group((image(seed=1), image(seed=2)), ("a red circle", "a blue square"), "colour_single")
    before = scorer.score(group.images[0], list(group.captions)).scores
    offsets, log = train_offsets(scorer, [group], PromptLearningConfig(steps=3, learning_rate=1e-2), progress=False)
    assert len(log.losses) == 3
    assert any(p.abs().sum() > 0 for p in offsets.parameters())
    for name, module in (("unet", backbone.unet), ("vae", backbone.vae), ("text", backbone.text_encoder)):
        for key, value in module.state_dict().items():
            torch.testing.assert_close(value, frozen[name][key], rtol=0, atol=0, msg=f"{name}.{key} changed")
    after = scorer.score(group.images[0], list(group.captions)).scores
    assert not np.allclose(before, after)
    scorer.offsets = None
    np.testing.assert_allclose(scorer.score(group.images[0], list(group.captions)).scores, before, atol=1e-6)


def test_offsets_round_trip_through_safetensors(backbone, tmp_path):
    from pipelines.attention import AttentionOffsets

    scorer = DiscffusionScorer(backbone, DiscffusionConfig(noise_levels=(0.5,)))
    offsets = AttentionOffsets.from_unet(backbone.unet, layers=scorer.layers)
    with torch.no_grad():
        for p in offsets.parameters():
            p.normal_(0, 0.05)
    offsets.save(tmp_path / "offsets.safetensors")
    loaded = AttentionOffsets.from_unet(backbone.unet, layers=scorer.layers)
    loaded.load(tmp_path / "offsets.safetensors")
    scorer.offsets = offsets
    first = scorer.score(image(), CAPTIONS).scores
    scorer.offsets = loaded
    np.testing.assert_array_equal(scorer.score(image(), CAPTIONS).scores, first)


def test_triplet_loss_is_zero_beyond_the_margin():
    good = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(triplet_loss(good, 0.2)) == 0.0
    bad = torch.tensor([[0.0, 0.1], [0.1, 0.0]])
    assert float(triplet_loss(bad, 0.2, text_negatives=False)) == pytest.approx(2 * 0.3)


# -- Diffusion Classifier -------------------------------------------------------------------------


def test_hierarchical_sampler_never_evaluates_a_pruned_caption_again(backbone):
    captions = ["a red circle", "a blue circle", "a green circle", "a red square", "a blue square",
                "a green triangle"]
    config = dict(num_timesteps=8, seed=1, beam_factor=2.0, warmup=1, patience=8)
    uniform = DiffusionClassifier(backbone, ClassifierConfig(sampling="uniform", **config))
    hierarchical = DiffusionClassifier(backbone, ClassifierConfig(sampling="hierarchical", **config))
    full = uniform.score(image(), captions)
    beam = hierarchical.score(image(), captions)
    trace = hierarchical.last_trace
    assert full.unet_evaluations == len(captions) * 8
    assert beam.unet_evaluations == sum(trace.evaluations) < full.unet_evaluations
    pruned = [c for c, after in enumerate(trace.pruned_after) if after is not None]
    assert len(pruned) == len(captions) - 1  # 6 -> 3 -> 2 -> 1
    for caption in pruned:
        visits = [step for c, step in trace.calls if c == caption]
        assert max(visits) <= trace.pruned_after[caption]
        assert trace.evaluations[caption] == len(visits)
    assert [len(b) for b in trace.beams] == [3, 2, 1]
    # survivors rank above pruned captions; the winner is the one left in the beam
    assert beam.ranking()[0] == trace.beams[-1][0]
    # the first visit is shared: the same noise and timestep gave the same error to every caption
    assert coarse_to_fine(8)[0] == 4


def test_dc_is_deterministic_and_counts_evaluations(backbone):
    classifier = DiffusionClassifier(backbone, ClassifierConfig(num_timesteps=3, samples_per_timestep=2))
    first = classifier.score(image(), CAPTIONS[:2])
    np.testing.assert_array_equal(first.scores, classifier.score(image(), CAPTIONS[:2]).scores)
    assert first.unet_evaluations == 2 * 3 * 2


# -- bad input -------------------------------------------------------------------------------------


def test_bad_images_get_typed_errors_and_odd_modes_are_converted(backbone):
    from PIL import Image

    with pytest.raises(InvalidInputError, match="No image"):
        check_image(None)
    with pytest.raises(InvalidInputError, match="at least 8 pixels"):
        check_image(np.zeros((1, 1, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="largest side"):
        check_image(np.zeros((5000, 8, 3), dtype=np.uint8))
    rgb = image()
    rgba = np.concatenate([rgb, np.full((32, 32, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(check_image(Image.fromarray(rgba, "RGBA")), rgb)
    gray = check_image(Image.fromarray(rgb[..., 0], "L"))
    assert gray.shape == (32, 32, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    scorer = DiscffusionScorer(backbone, DiscffusionConfig(noise_levels=(0.5,)))
    with pytest.raises(InvalidInputError, match="No image"):
        scorer.score(None, CAPTIONS)


def test_bad_captions_get_typed_errors(backbone):
    with pytest.raises(InvalidInputError, match="No captions"):
        check_captions("  \n \n")
    with pytest.raises(InvalidInputError, match="No captions"):
        check_captions([])
    with pytest.raises(InvalidInputError, match="at most 32"):
        check_captions(["a red circle"] * 33)
    with pytest.raises(InvalidInputError, match="names nothing this model can draw"):
        check_captions(["xylophone zebra"], backbone.tokenizer)
    assert check_captions("a red circle\n\n a purple blob circle ", backbone.tokenizer) == ["a red circle",
                                                                                              "a purple blob circle"]
    with pytest.raises(InvalidInputError, match="'a purple blob' names nothing .* knows the objects circle"):
        check_captions("a red circle\na purple blob", backbone.tokenizer)  # no known noun (vocabulary policy)
    with pytest.raises(InvalidInputError, match="Unknown or no methods"):
        parse_methods("clip,bogus")


def test_counterfactual_keeps_only_the_boxes():
    picture = np.full((20, 20, 3), 200, np.uint8)
    picture[2:6, 2:6] = (255, 0, 0)
    picture[12:16, 12:16] = (0, 0, 255)
    only_red = counterfactual(picture, [(2, 2, 6, 6)], pad=0)
    assert (only_red[2:6, 2:6] == (255, 0, 0)).all() and (only_red[12:16, 12:16] == 200).all()


def test_hierarchical_scores_keep_survivors_on_top_without_distorting_consistent_scores():
    from pipelines.matching.classifier import rank_consistent_scores

    # caption 2 was pruned later than 1 and 3 but had a better mean over its fewer visits
    scores = rank_consistent_scores(np.array([-1.0, -2.0, -0.5, -3.0]), [None, 0, 1, 0])
    assert list(np.argsort(-scores)) == [0, 2, 1, 3]
    np.testing.assert_array_equal(scores[[0, 1, 3]], [-1.0, -2.0, -3.0])
    np.testing.assert_array_equal(rank_consistent_scores(np.array([-1.0, -2.0]), [None, 0]), [-1.0, -2.0])
