"""Match retrieval bench (issue 24): one image against 8, 16 and 32 captions, recall@1 and UNet evaluations
per decision for DC-uniform, DC-hierarchical (thesis section 5.5), Discffusion (eq. 5.4, with and without
the head weighting of eq. 5.7) and CLIP.

Each image is the first image of a held-out ShapesWorld compositional group (the split of
``bench/matching.py``, kinds cycling colour / shape / relation / colour_single / shape_single). Its 32
captions are its own caption, its minimal swaps (colour, shape, relation: 2-3) and distractors drawn from
the captions of other held-out groups (seed 3000); the 8- and 16-caption sets are the first 8 and 16 of
the same list, so every set holds the caption and its swaps. Captions are shuffled (seeded) before scoring.
A decision = one image ranked against C captions; recall@1 = the image's own caption ranked first.

The Diffusion Classifier runs once per image on all 32 captions with uniform sampling on a stratified grid
of ``--timesteps`` timesteps (one seeded noise each, shared by every caption: common random numbers). The
hierarchical sampler (:func:`pipelines.matching.classifier.sample`) is then replayed on that table of errors
for every caption count and for a sweep of warm-up, BeamFactor b and patience: with common random numbers
an error depends only on (caption, timestep), so the replay makes the same decisions as new UNet passes
would (the ``replay_check`` row runs the real sampler on the first image to show it) and its UNet
evaluations are the table cells it reads. Discffusion (2 noise levels, 7 layers, denoising term) and CLIP
score each caption independently, so the 32-caption scores give the 8- and 16-caption ones; Discffusion's
cost at C captions is 2 x (C + 1) UNet rows.

Done-when (issue 24): with 16 and 32 captions DC-hierarchical needs >= 3x fewer UNet evaluations than
DC-uniform at no more than 2 points lower recall@1. Run:
``WORLDSTUDIO_THREADS=1 .venv/bin/python bench/match_retrieval.py > bench/results/match_retrieval.jsonl``.
"""

from __future__ import annotations

import argparse
import itertools
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
    DiffusionClassifier,
    DiscffusionConfig,
    DiscffusionScorer,
    Matchers,
    coarse_to_fine,
)
from pipelines.matching.benchmark import shapesworld_groups  # noqa: E402
from pipelines.matching.classifier import sample  # noqa: E402
from pipelines.matching.methods import DISCFFUSION_WEIGHTINGS  # noqa: E402
from pipelines.matching.overlay import swapped_captions  # noqa: E402
from pipelines.models import ModelManager  # noqa: E402
from pipelines.utils import set_torch_threads  # noqa: E402

BENCH = "match_retrieval"
DISTRACTOR_SEED = 3000
# the sweep of the hierarchical sampler's settings (section 5.5: warm-up, BeamFactor b, patience t_s)
SWEEP = {"warmup": (1, 2, 3, 4, 6), "beam_factor": (2.0, 4.0, 8.0), "patience": (2, 3, 4, 6)}


def caption_sets(count: int, seed: int, largest: int) -> list[tuple[np.ndarray, list[str]]]:
    """``count`` (image, captions) pairs: own caption first, then its swaps, then distractors."""
    groups = shapesworld_groups(count, seed=seed)
    pool = list(dict.fromkeys(c for g in shapesworld_groups(400, seed=DISTRACTOR_SEED) for c in g.captions))
    rng = np.random.default_rng(seed)
    sets = []
    for group in groups:
        own = group.captions[0]
        fixed = [own, *swapped_captions(own)]
        others = [c for c in pool if c not in fixed]
        picked = rng.choice(len(others), size=largest - len(fixed), replace=False)
        sets.append((group.images[0], fixed + [others[i] for i in picked]))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--captions", default="8,16,32")
    parser.add_argument("--timesteps", type=int, default=16, help="the Diffusion Classifier's stratified grid")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_torch_threads(args.threads)
    started = time.perf_counter()
    counts = sorted(int(c) for c in args.captions.split(","))
    largest = counts[-1]
    emit(BENCH, "machine", None, **machine(), images=args.images)

    matchers = Matchers(ModelManager("tiny"))
    backbone = matchers.backbone
    hierarchical = replace(ClassifierConfig(), sampling="hierarchical", num_timesteps=args.timesteps)
    uniform = replace(hierarchical, sampling="uniform")
    emit(BENCH, "config", None, timesteps=args.timesteps, hierarchical={k: getattr(hierarchical, k) for k in
         ("warmup", "beam_factor", "patience")}, discffusion_noise_levels=list(DiscffusionConfig().noise_levels),
         captions=counts, distractor_seed=DISTRACTOR_SEED)
    discffusion = DiscffusionScorer(backbone, DiscffusionConfig())
    order = coarse_to_fine(args.timesteps)
    sweep = [dict(zip(SWEEP, values)) for values in itertools.product(*SWEEP.values())]
    hits: dict[tuple, list[bool]] = {}
    costs: dict[tuple, list[int]] = {}
    seconds: dict[str, float] = {"dc-uniform": 0.0, "discffusion": 0.0, "clip": 0.0}

    def record(key: tuple, hit: bool, evaluations: int) -> None:
        hits.setdefault(key, []).append(bool(hit))
        costs.setdefault(key, []).append(int(evaluations))

    for index, (image, captions) in enumerate(caption_sets(args.images, args.seed, largest)):
        # 1. Every caption at every timestep once: the table the samplers read
        classifier = DiffusionClassifier(backbone, uniform)
        result = classifier.score(image, captions)
        seconds["dc-uniform"] += result.seconds
        table = np.full((largest, args.timesteps), np.nan)
        for (c, visit), error in zip(classifier.last_trace.calls, classifier.last_trace.errors):
            table[c, order[visit]] = error
        # 2. Discffusion (every head weighting from the same passes) and CLIP on all captions
        features = discffusion.features(image, captions, head_weightings=HEAD_WEIGHTINGS)
        seconds["discffusion"] += features.seconds
        per_caption = {name: discffusion.combine(features, replace(discffusion.config, head_weighting=weighting)).scores
                       for name, weighting in DISCFFUSION_WEIGHTINGS.items()}
        clip = matchers.clip.score(image, captions)
        seconds["clip"] += clip.seconds
        per_caption["clip"] = clip.scores
        rng = np.random.default_rng([args.seed, index])
        for count in counts:
            shown = rng.permutation(count)  # shown[j] = the caption at position j
            own = int(np.flatnonzero(shown == 0)[0])

            def errors(jobs, shown=shown):
                return [table[shown[c], k] for c, k in jobs]

            for method, config in (("dc-uniform", uniform), ("dc-hierarchical", hierarchical)):
                outcome = sample(errors, count, config)
                record((count, method), int(np.argmax(outcome.scores)) == own, sum(outcome.trace.evaluations))
            for setting in sweep:
                outcome = sample(errors, count, replace(hierarchical, **setting))
                record((count, "sweep", *setting.values()), int(np.argmax(outcome.scores)) == own,
                       sum(outcome.trace.evaluations))
            for method, scores in per_caption.items():
                evaluations = 0 if method == "clip" else len(discffusion.config.noise_levels) * (count + 1)
                record((count, method), int(np.argmax(scores[shown])) == own, evaluations)
        if index == 0:
            # the replay decides as the sampler on new UNet passes does (8 captions, first image)
            count = counts[0]
            shown = np.random.default_rng([args.seed, index]).permutation(count)
            real = DiffusionClassifier(backbone, hierarchical)
            live = real.score(image, [captions[i] for i in shown])
            replay = sample(lambda jobs: [table[shown[c], k] for c, k in jobs], count, hierarchical)
            emit(BENCH, "replay_check", bool(live.ranking()[0] == int(np.argmax(replay.scores))
                                              and live.unet_evaluations == sum(replay.trace.evaluations)),
                 captions=count, live_evaluations=live.unet_evaluations,
                 replay_evaluations=sum(replay.trace.evaluations),
                 max_error_difference=float(np.max(np.abs(np.subtract(real.last_trace.errors, replay.trace.errors)))))

    n = args.images
    for count in counts:
        for method in ("dc-uniform", "dc-hierarchical", *DISCFFUSION_WEIGHTINGS, "clip"):
            emit(BENCH, "retrieval", float(np.mean(hits[count, method])), captions=count, method=method,
                 recall_at_1=float(np.mean(hits[count, method])),
                 unet_evaluations_per_decision=float(np.mean(costs[count, method])), n=n)
        base_recall, base_cost = np.mean(hits[count, "dc-uniform"]), np.mean(costs[count, "dc-uniform"])
        for setting in sweep:
            key = (count, "sweep", *setting.values())
            emit(BENCH, "retrieval_sweep", float(np.mean(hits[key])), captions=count, **setting,
                 recall_at_1=float(np.mean(hits[key])), unet_evaluations_per_decision=float(np.mean(costs[key])),
                 fewer_evaluations_x=round(float(base_cost / np.mean(costs[key])), 2),
                 recall_loss_points=round(float(100 * (base_recall - np.mean(hits[key]))), 1), n=n)
        ratio = base_cost / np.mean(costs[count, "dc-hierarchical"])
        loss = 100 * (base_recall - np.mean(hits[count, "dc-hierarchical"]))
        emit(BENCH, "bar_retrieval_hierarchical", float(ratio), captions=count, fewer_evaluations_x=round(float(ratio), 2),
             recall_loss_points=round(float(loss), 1), n=n, met=bool(ratio >= 3 and loss <= 2))
    emit(BENCH, "seconds_per_image", None, n=n, **{k: round(v / n, 3) for k, v in seconds.items()},
         note=f"dc-uniform: {largest} captions x {args.timesteps} timesteps; discffusion: {largest} captions")
    emit(BENCH, "total_seconds", round(time.perf_counter() - started, 1), bar_seconds=900,
         met=time.perf_counter() - started < 900)


if __name__ == "__main__":
    main()
