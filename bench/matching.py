"""Match bench (issue 4): Winoground text/image/group accuracy on the held-out ShapesWorld compositional
split for Discffusion (several readings), Discffusion with head weighting (eq. 5.7 as written: attribution
maps; and the scalar per-head reading), CLIP, ComCLIP, DC-uniform and
DC-hierarchical; UNet evaluations and seconds per decision; prompt learning on a disjoint few-shot set;
the studio path (one image, five captions, heatmaps).

Bars (issue 4): Discffusion after prompt learning >= 0.8 on colour and shape swaps; DC-hierarchical >= 2x
fewer UNet evaluations than DC-uniform at <= 1 point accuracy loss; Discffusion <= 1/10 the UNet
evaluations of DC-uniform per decision; prompt learning raises Discffusion's held-out accuracy; the
studio path <= 2 s on the CPU; the bench < 20 min on 2 cores.

Small ensembles keep the bench inside 20 minutes: Discffusion uses 2 noise levels (t = 199, 399) and one
seeded noise per level; the Diffusion Classifier uses 32 stratified timesteps with one seeded noise each
(its own Winoground protocol visits all 1000 timesteps per caption; the bench ran 16 before 2026-12-02). All Discffusion readings (pre- or
post-softmax, lambda, prompt tokens only, layer subsets, with or without the denoising term, head
weighting, both readings) are computed from the same UNet passes. Prompt learning trains on the score the bench reports
(attention term + denoising term; training on the attention term alone lowered the combined score). A decision = one image ranked against the group's two
captions. Run: ``WORLDSTUDIO_THREADS=1 .venv/bin/python bench/matching.py > bench/results/matching.jsonl``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import emit, machine  # noqa: E402
from pipelines.matching import (  # noqa: E402
    HEAD_WEIGHTINGS,
    ClassifierConfig,
    DiscffusionConfig,
    DiscffusionScorer,
    Matchers,
    PromptLearningConfig,
    Reading,
    collect,
    summarise,
    train_offsets,
)
from pipelines.matching.benchmark import shapesworld_groups  # noqa: E402
from pipelines.models import ModelManager  # noqa: E402
from pipelines.utils import set_torch_threads  # noqa: E402

BENCH = "matching"
TUNED_REPORTED = ("discffusion (prompt-learned)", "discffusion-hw (prompt-learned)",
                  "discffusion-hw-scalar (prompt-learned)",
                  "discffusion attention only (logits, lambda 1) (prompt-learned)",
                  "discffusion denoising term only (prompt-learned)")
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = Reading("logits", 1.0, "all")
READINGS = {
    "logits, lambda 1": DEFAULT,
    "probs, lambda 1": Reading("probs", 1.0, "all"),
    "logits, lambda 10": Reading("logits", 10.0, "all"),
    "logits, lambda 1, prompt tokens": Reading("logits", 1.0, "prompt"),
}


def report(summary, **fields) -> dict:
    return emit(
        BENCH, "accuracy", summary.overall["text"], method=summary.method, groups=summary.groups,
        overall=summary.overall, per_swap=summary.per_swap, per_kind=summary.per_kind,
        unet_evaluations_per_decision=summary.unet_evaluations_per_decision,
        seconds_per_decision=round(summary.seconds_per_decision, 4), **fields,
    )


def discffusion_variants(scorer: DiscffusionScorer, layer_scorers: dict[str, DiscffusionScorer],
                         readings: dict[str, Reading], suffix: str = ""):
    """A score function returning every Discffusion variant from one set of UNet passes per image."""
    levels = len(scorer.config.noise_levels)

    def score(image, captions):
        features = scorer.features(image, captions, readings=list(readings.values()), head_weightings=HEAD_WEIGHTINGS)
        seconds = features.seconds
        out = {}

        def add(name, result, evaluations):
            result.unet_evaluations, result.seconds = evaluations, seconds
            out[name + suffix] = result

        with_uncond, without = levels * (len(captions) + 1), levels * len(captions)
        base = replace(scorer.config, head_weighting="none")
        add("discffusion", scorer.combine(features, base), with_uncond)
        add("discffusion-hw", scorer.combine(features, replace(base, head_weighting="attribution")), with_uncond)
        add("discffusion-hw-scalar", scorer.combine(features, replace(base, head_weighting="scalar")), with_uncond)
        add("discffusion denoising term only",
            scorer.combine(features, replace(base, attention_weight=0.0)), with_uncond)
        for label, reading in readings.items():
            attention_only = replace(base, reading=reading, denoising_weight=0.0)
            add(f"discffusion attention only ({label})", scorer.combine(features, attention_only), without)
        add("discffusion attention only (logits, lambda 1, head attribution)",
            scorer.combine(features, replace(base, denoising_weight=0.0, head_weighting="attribution")), without)
        add("discffusion attention only (logits, lambda 1, scalar head weights)",
            scorer.combine(features, replace(base, denoising_weight=0.0, head_weighting="scalar")), without)
        first_level = replace(features, levels=features.levels[:1])
        add("discffusion (one noise level)", scorer.combine(first_level, base), len(captions) + 1)
        add("discffusion attention only (logits, lambda 1, one noise level)",
            scorer.combine(first_level, replace(base, denoising_weight=0.0)), len(captions))
        for label, other in layer_scorers.items():
            add(f"discffusion (layers: {label})", other.combine(features, replace(base, layers=other.config.layers)),
                with_uncond)
        return out

    return score


def studio_latency(manager: ModelManager, repeats: int) -> dict:
    """Seconds of the Match tab's scoring path (``MatchRunner.run`` and the first caption's heatmaps): one
    example image, five captions."""
    import json

    from PIL import Image

    from pipelines.matching.runner import MatchRequest, MatchRunner

    folder = Path(__file__).resolve().parent.parent / "assets" / "examples" / "match"
    example = json.loads((folder / "examples.json").read_text())["examples"][0]
    with Image.open(folder / example["image"]) as opened:
        image = np.asarray(opened.convert("RGB"))
    runner = MatchRunner(manager)

    def score(methods):
        report = runner.run(MatchRequest(image, example["captions"], methods))
        return runner.heatmaps(report, report.captions[0], size=160)

    score(["discffusion"])  # warm-up (first call loads nothing new)
    timings = {}
    for methods in (["discffusion"], ["discffusion", "clip"]):
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            heatmaps = score(methods)
            seconds.append(time.perf_counter() - start)
        assert len(heatmaps) >= 4  # heatmaps were made
        timings["+".join(methods)] = statistics.median(seconds)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--few-shot", type=int, default=200, help="few-shot groups (seed 1000, disjoint)")
    parser.add_argument("--pl-steps", type=int, default=100)
    parser.add_argument("--pl-lr", type=float, default=1e-3)
    parser.add_argument("--pl-denoising-weight", type=float, default=1.0,
                        help="weight of the denoising term in the training score (0: the attention term alone)")
    parser.add_argument("--dc-timesteps", type=int, default=32)
    parser.add_argument("--dc-warmup", type=int, default=ClassifierConfig().warmup)
    parser.add_argument("--dc-confidence", type=float, default=ClassifierConfig().confidence,
                        help="z of the hierarchical sampler's pruning test (0: prune by rank alone)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_torch_threads(args.threads)
    started = time.perf_counter()
    emit(BENCH, "machine", None, **machine(), groups=args.groups)

    manager = ModelManager("tiny")
    matchers = Matchers(manager, classifier=ClassifierConfig(num_timesteps=args.dc_timesteps, warmup=args.dc_warmup,
                                                             confidence=args.dc_confidence or None,
                                                             patience=4))
    groups = shapesworld_groups(args.groups, seed=args.seed)
    few_shot = shapesworld_groups(args.few_shot, seed=1000)
    held_out = {g.images[k].tobytes() for g in groups for k in (0, 1)}
    overlap = sum(g.images[k].tobytes() in held_out for g in few_shot for k in (0, 1))
    emit(BENCH, "few_shot_overlap_images", overlap, few_shot_groups=len(few_shot), eval_groups=len(groups))
    config = DiscffusionConfig(denoising_weight=1.0)
    scorer = DiscffusionScorer(matchers.backbone, config)
    layer_scorers = {"last-per-stage": DiscffusionScorer(matchers.backbone, replace(config, layers="last-per-stage")),
                     "16x16 only": DiscffusionScorer(matchers.backbone, replace(
                         config, layers=["down_blocks.0", "up_blocks.2"]))}
    emit(BENCH, "discffusion_config", None, noise_levels=list(config.noise_levels),
         timesteps=matchers.backbone.timesteps_for(config.noise_levels), layers=scorer.layers,
         layer_sets={k: v.layers for k, v in layer_scorers.items()})

    summaries = {}
    # 1. Discffusion, zero-shot: every reading from one set of UNet passes
    variants = discffusion_variants(scorer, layer_scorers, READINGS)
    for method, outcomes in collect(groups, variants, desc="discffusion").items():
        summaries[method] = summarise(method, outcomes)
        report(summaries[method], setting="zero-shot")

    # 2. CLIP, ComCLIP, Diffusion Classifier
    for method in ("clip", "comclip", "dc-uniform", "dc-hierarchical"):
        outcomes = next(iter(collect(groups, matchers.scorer(method), desc=method).values()))
        summaries[method] = summarise(method, outcomes)
        report(summaries[method], setting="zero-shot")

    # 3. Prompt learning on the disjoint few-shot set, then the same held-out groups
    train_start = time.perf_counter()
    # the training objective: Discffusion's score with the denoising term weighted by --pl-denoising-weight
    trainer = DiscffusionScorer(matchers.backbone, replace(config, denoising_weight=args.pl_denoising_weight))
    offsets, log = train_offsets(trainer, few_shot, PromptLearningConfig(steps=args.pl_steps, learning_rate=args.pl_lr))
    scorer.offsets = offsets
    train_seconds = time.perf_counter() - train_start
    RESULTS.mkdir(exist_ok=True)
    offsets.save(RESULTS / "matching_offsets.safetensors")
    emit(BENCH, "prompt_learning", float(np.mean(log.losses[-20:])), steps=args.pl_steps, lr=args.pl_lr,
         denoising_weight=args.pl_denoising_weight, margin=PromptLearningConfig().margin,
         few_shot_groups=len(few_shot), seconds=round(train_seconds, 1),
         loss_first_20=float(np.mean(log.losses[:20])), layers=len(offsets.layer_names),
         parameters=sum(p.numel() for p in offsets.parameters()))
    tuned = {}
    variants = discffusion_variants(scorer, {}, {"logits, lambda 1": DEFAULT}, " (prompt-learned)")
    for method, outcomes in collect(groups, variants, desc="discffusion prompt-learned").items():
        if method in TUNED_REPORTED:
            tuned[method] = summarise(method, outcomes)
            report(tuned[method], setting="prompt-learned")
    scorer.offsets = None

    # 4. The studio path
    timings = studio_latency(manager, args.repeats)
    for methods, seconds in timings.items():
        emit(BENCH, "studio_score_seconds", round(seconds, 3), methods=methods, captions=5, heatmaps=True,
             bar_seconds=2.0, met=seconds <= 2.0)

    # 5. The bars
    def text(name, swap=None):
        s = summaries.get(name) or tuned[name]
        return s.overall["text"] if swap is None else s.per_swap[swap]["text"]

    uniform, hierarchical = summaries["dc-uniform"], summaries["dc-hierarchical"]
    ratio = uniform.unet_evaluations_per_decision / hierarchical.unet_evaluations_per_decision
    loss_points = 100 * (uniform.overall["text"] - hierarchical.overall["text"])
    emit(BENCH, "bar_dc_hierarchical", ratio, fewer_evaluations_x=round(ratio, 2), accuracy_loss_points=loss_points,
         warmup=matchers.classifier_config.warmup, confidence=matchers.classifier_config.confidence,
         met=ratio >= 2 and loss_points <= 1)
    for name in ("discffusion", "discffusion attention only (logits, lambda 1)", "discffusion (one noise level)",
                 "discffusion attention only (logits, lambda 1, one noise level)"):
        fraction = summaries[name].unet_evaluations_per_decision / uniform.unet_evaluations_per_decision
        emit(BENCH, "bar_discffusion_evaluations", fraction, method=name, met=fraction <= 0.1)
    for name in ("discffusion (prompt-learned)", "discffusion-hw (prompt-learned)",
                 "discffusion-hw-scalar (prompt-learned)"):
        zero = name.replace(" (prompt-learned)", "")
        emit(BENCH, "bar_prompt_learning", text(name), method=name,
             colour=text(name, "colour"), shape=text(name, "shape"), relation=text(name, "relation"),
             zero_shot=text(zero), raises=text(name) > text(zero),
             met_08_colour_shape=text(name, "colour") >= 0.8 and text(name, "shape") >= 0.8)
    total = time.perf_counter() - started
    emit(BENCH, "total_seconds", round(total, 1), bar_seconds=1200, met=total < 1200)


if __name__ == "__main__":
    main()
