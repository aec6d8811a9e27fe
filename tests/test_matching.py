"""pipelines.matching on tiny random components (tests/dummies.py): pooling, determinism, heatmaps,
prompt learning, the hierarchical sampler, bad input."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from dummies import dummy_sd_pipeline

from pipelines.attention import CrossAttentionControl, lse_pool
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
    head_attribution,
    head_weights,
    pool_attributions,
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


def attribution_by_hand(a: np.ndarray, lam: float) -> np.ndarray:
    """Eq. 5.7 for one head's [n, m] map with f = eq. 5.4: df/dA_ij = exp(lam A_ij) / sum_j exp(lam A_ij) / n."""
    n = a.shape[0]
    rows = np.exp(lam * a)
    return a * rows / rows.sum(axis=1, keepdims=True) / n


def lse_by_hand(a: np.ndarray, lam: float) -> float:
    return float(np.mean([math.log(sum(math.exp(lam * v) for v in row)) / lam for row in a]))


def test_head_attribution_is_eq_5_7_on_a_hand_made_map():
    a = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])  # one head: n=2 pixels, m=3 tokens
    e = math.e
    first = [1.0 * e / (e + e**2 + 1) / 2, 2.0 * e**2 / (e + e**2 + 1) / 2, 0.0]
    second_sum = e**0.5 + e**-1 + e**3
    second = [0.5 * e**0.5 / second_sum / 2, -1.0 * e**-1 / second_sum / 2, 3.0 * e**3 / second_sum / 2]
    maps = torch.stack([a, 2 * a]).reshape(1, 2, 1, 2, 3)  # two heads; the sum over k cancels f's 1/H
    attribution = head_attribution(maps, Reading("logits", 1.0))
    torch.testing.assert_close(attribution[0, 0, 0], torch.tensor([first, second]))
    torch.testing.assert_close(attribution[0, 1, 0],
                               torch.from_numpy(attribution_by_hand(2 * a.double().numpy(), 1.0)).float())
    # the closed form is autograd's gradient of f(A) = mean over heads of eq. 5.4, summed over the H heads
    probe = maps.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(lse_pool(probe.flatten(2, 3), 1.0).mean(dim=1).sum(), probe)
    torch.testing.assert_close(attribution, maps * 2 * grad)
    pooled = pool_attributions(maps, Reading("logits", 1.0))
    assert float(pooled[0, 0]) == pytest.approx(lse_by_hand(np.array([first, second]), 1.0), rel=1e-6)
    # masked tokens are left out of the gradient and of the pooling
    mask = torch.tensor([[True, True, False]])
    masked = head_attribution(maps, Reading("logits", 1.0, "prompt"), mask)
    assert torch.isinf(masked[..., 2]).all()
    torch.testing.assert_close(masked[0, 0, 0, :, :2],
                               torch.from_numpy(attribution_by_hand(a[:, :2].double().numpy(), 1.0)).float())


def test_eq_5_7_attribution_on_a_tiny_unet_matches_the_hand_computation(backbone):
    """The scorer's "attribution" term (eq. 5.7, pooled by eq. 5.4, mean over heads and layers) from the
    dummy UNet's own recorded maps, recomputed by hand in float64."""
    lam = 2.0
    config = DiscffusionConfig(noise_levels=(0.5,), reading=Reading("logits", lam), denoising_weight=0.0,
                               head_weighting="attribution")
    scorer = DiscffusionScorer(backbone, config)
    captions = CAPTIONS[:2]
    latent = backbone.encode_image(image())
    text = backbone.encode_text(captions)
    timestep = backbone.timesteps_for(config.noise_levels)[0]
    noise = backbone.noise(latent.shape, config.seed, 0)
    z_t = backbone.add_noise(latent, noise, timestep).expand(len(captions), -1, -1, -1)
    with torch.no_grad(), CrossAttentionControl(backbone.unet, layers=scorer.layers, values="logits",
                                                keep_steps="last") as control:
        backbone.predict_noise(z_t, timestep, text)
    by_hand = np.zeros(len(captions))
    for name in scorer.layers:
        maps = control.store.maps_for(name).double().numpy()  # [R, heads, h, w, m]
        rows, heads = maps.shape[:2]
        for r in range(rows):
            by_hand[r] += np.mean([lse_by_hand(attribution_by_hand(maps[r, h].reshape(-1, maps.shape[-1]), lam), lam)
                                   for h in range(heads)]) / len(scorer.layers)
    result = scorer.score(image(), captions)
    np.testing.assert_allclose(result.scores, by_hand, rtol=1e-5)
    np.testing.assert_allclose(result.terms["attention"], by_hand, rtol=1e-5)
    # eq. 5.7 as written differs from the plain head mean and from the scalar reading
    plain = DiscffusionScorer(backbone, replace(config, head_weighting="none")).score(image(), captions)
    assert np.abs(plain.scores - result.scores).max() > 1e-3


def test_scalar_head_weights_sum_to_one_and_follow_attribution():
    maps = torch.zeros(1, 2, 2, 2, 3)
    maps[:, 0] = 4.0  # head 0 attends strongly (large logits), head 1 is flat at 0: no attribution
    weights = head_weights(maps, Reading("logits", 1.0))
    torch.testing.assert_close(weights, torch.tensor([[1.0, 0.0]]))
    maps[:, 1] = 1.0  # attribution sums: head 0 = 4 (|A * 1/(m n)| summed over n m entries), head 1 = 1
    torch.testing.assert_close(head_weights(maps, Reading("logits", 1.0)), torch.tensor([[0.8, 0.2]]))


def test_one_pass_gives_every_head_weighting_and_a_missing_one_is_a_typed_error(backbone):
    scorer = DiscffusionScorer(backbone, DiscffusionConfig(noise_levels=(0.5,)))
    features = scorer.features(image(), CAPTIONS, head_weightings=("none", "attribution", "scalar"))
    for weighting in ("attribution", "scalar"):
        alone = DiscffusionScorer(backbone, DiscffusionConfig(noise_levels=(0.5,), head_weighting=weighting))
        np.testing.assert_allclose(scorer.combine(features, alone.config).scores,
                                   alone.score(image(), CAPTIONS).scores, rtol=1e-5)
    plain = scorer.features(image(), CAPTIONS)
    with pytest.raises(InvalidInputError, match="without head weighting 'attribution'"):
        scorer.combine(plain, DiscffusionConfig(noise_levels=(0.5,), head_weighting="attribution"))
    with pytest.raises(InvalidInputError, match="head_weighting must be one of"):
        DiscffusionConfig(head_weighting=True)


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
    config = dict(num_timesteps=8, seed=1, beam_factor=2.0, warmup=1, patience=8, confidence=None)
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


def test_hierarchical_sampler_prunes_to_c_over_b_and_stops_when_the_leader_is_stable():
    from pipelines.matching.classifier import sample

    # caption 0 has the lowest error at every timestep; errors grow with the caption index
    table = np.arange(8)[:, None] + 0.1 * np.arange(8)[None, :]

    def errors(jobs):
        return [table[c, k] for c, k in jobs]

    uniform = sample(errors, 8, ClassifierConfig(sampling="uniform", num_timesteps=8))
    assert sum(uniform.trace.evaluations) == 64
    config = ClassifierConfig(sampling="hierarchical", num_timesteps=8, beam_factor=2.0, warmup=2, patience=3,
                              confidence=None)
    beam = sample(errors, 8, config)
    # visits: 8 captions, 8 captions (warm-up ends: beam 8 -> 4), 4 captions (leader stable 3 visits: stop)
    assert [len(b) for b in beam.trace.beams] == [8, 4, 2]
    assert sum(beam.trace.evaluations) == 8 + 8 + 4
    assert int(np.argmax(beam.scores)) == int(np.argmax(uniform.scores)) == 0
    # no early stop: the beam shrinks by b after every visit until one caption is left
    long = sample(errors, 8, replace(config, patience=8, beam_factor=4.0))
    assert [len(b) for b in long.trace.beams] == [8, 2, 1] and sum(long.trace.evaluations) == 8 + 8 + 2


def test_confidence_gate_prunes_a_close_caption_only_once_its_paired_difference_is_significant():
    from pipelines.matching.classifier import sample, significantly_worse

    # Hand computation: differences 1, 3 -> mean 2, standard error 1 (std 1.414 / sqrt 2): 2 > 1.5 * 1, not > 2.5 * 1.
    assert significantly_worse(np.array([2.0, 5.0]), np.array([1.0, 2.0]), 1.5)
    assert not significantly_worse(np.array([2.0, 5.0]), np.array([1.0, 2.0]), 2.5)
    assert not significantly_worse(np.array([2.0]), np.array([1.0]), 0.1)  # one pair says nothing
    # Caption 1 is worse by 0.1 +- 0.3 (noisy) and caption 2 by a steady 1.0: caption 2 leaves after the warm-up,
    # caption 1 stays until the end (16 visits), though by rank alone it would go at the warm-up too.
    rng = np.random.default_rng(0)
    table = np.stack([np.zeros(16), 0.1 + 0.3 * rng.standard_normal(16), np.ones(16)])

    def errors(jobs):
        return [table[c, k] for c, k in jobs]

    config = ClassifierConfig(sampling="hierarchical", num_timesteps=16, beam_factor=2.0, warmup=3, confidence=3.0)
    gated = sample(errors, 3, config)
    assert gated.trace.pruned_after[2] == 2 and gated.trace.pruned_after[1] is None
    assert len(gated.trace.beams) == 16 and int(np.argmax(gated.scores)) == 0
    by_rank = sample(errors, 3, replace(config, confidence=None))
    assert sum(by_rank.trace.evaluations) < sum(gated.trace.evaluations)
    with pytest.raises(InvalidInputError, match="positive z"):
        ClassifierConfig(confidence=0.0)


def test_replaying_the_uniform_errors_decides_as_the_live_hierarchical_sampler(backbone):
    """The retrieval bench replays the sampler on the uniform run's errors (common random numbers)."""
    from pipelines.matching.classifier import sample

    captions = ["a red circle", "a blue circle", "a green circle", "a red square", "a blue square",
                "a green triangle"]
    uniform = DiffusionClassifier(backbone, ClassifierConfig(sampling="uniform", num_timesteps=8, seed=2))
    uniform.score(image(), captions)
    order = coarse_to_fine(8)
    table = {(c, order[visit]): error for (c, visit), error in zip(uniform.last_trace.calls, uniform.last_trace.errors)}
    config = ClassifierConfig(sampling="hierarchical", num_timesteps=8, seed=2, warmup=2, patience=2, confidence=None)
    live = DiffusionClassifier(backbone, config)
    result = live.score(image(), captions)
    replay = sample(lambda jobs: [table[job] for job in jobs], len(captions), config)
    assert replay.trace.calls == live.last_trace.calls
    assert sum(replay.trace.evaluations) == result.unet_evaluations < 6 * 8
    np.testing.assert_allclose(replay.trace.errors, live.last_trace.errors, rtol=1e-5)
    assert result.ranking()[0] == int(np.argmax(replay.scores))


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
