"""The Diffusion Classifier (thesis eq. 5.9) with uniform and hierarchical (section 5.5) sampling.

A caption's score is minus its weighted denoising error
``E_{t,eps}[w_t ||eps - eps_theta(z_t, c)||^2]`` (``w_t = 1``), estimated on a
fixed grid of timesteps with one seeded ``epsilon`` per (timestep, sample),
shared by every caption (common random numbers, so differences between
captions are not noise differences).

* ``uniform``: every caption at every timestep and sample (Li et al. 2023).
* ``hierarchical``: timesteps are visited coarse-to-fine; after each one the
  beam keeps the best ``ceil(|beam| / b)`` captions (BeamFactor ``b``; with C
  captions the first beam is C/b) once ``warmup`` timesteps have been seen; a
  pruned caption is never evaluated again; the search stops early when one
  caption has led for ``patience`` timesteps in a row (the thesis' ``t_s``) or
  one caption is left, else when every timestep has been visited.
  With ``confidence`` z set, a caption leaves the beam only once its error is
  significantly above the leader's: the mean of their paired per-timestep
  differences (same noise, same timestep) over z standard errors; the streak
  stop is then off, so close calls see every timestep and clear ones stop early.

:func:`sample` runs either strategy over any source of errors (the UNet here;
a table of errors computed once in ``bench/match_retrieval.py``, which replays
the sampler under many settings without new UNet passes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..errors import InvalidInputError
from .backbone import DiffusionBackbone, coarse_to_fine, stratified_timesteps
from .results import MatchResult
from .inputs import check_captions, check_image

Sampling = Literal["uniform", "hierarchical"]


@dataclass(frozen=True)
class ClassifierConfig:
    """Settings of the Diffusion Classifier."""

    sampling: Sampling = "uniform"
    # timesteps on a stratified grid over [0, T) and noise samples N per timestep (the Diffusion
    # Classifier's own Winoground protocol visits all 1000; 32 keeps a CPU decision near a second)
    num_timesteps: int = 32
    samples_per_timestep: int = 1
    seed: int = 0
    # hierarchical: BeamFactor b (beam shrinks to ceil(|beam| / b)), timesteps seen before pruning,
    # and how many timesteps in a row one caption must lead to stop early
    beam_factor: float = 2.0
    warmup: int = 4
    patience: int = 4
    # hierarchical: prune only when significantly worse than the leader (z of a paired test); None: by rank alone.
    # 1.5 with a warm-up of 4: text 0.93 at 15.1 evaluations a decision, as DC-uniform's 0.93 at 64 (4.25x fewer);
    # by rank alone 0.86 at 8 (100 tuning groups, seed 3000, docs/notes/discffusion.md)
    confidence: float | None = 1.5
    # UNet rows per batch
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.sampling not in ("uniform", "hierarchical"):
            raise InvalidInputError(f"sampling must be 'uniform' or 'hierarchical', got {self.sampling!r}.")
        if self.num_timesteps < 1 or self.samples_per_timestep < 1:
            raise InvalidInputError("num_timesteps and samples_per_timestep must be positive.")
        if self.beam_factor <= 1:
            raise InvalidInputError(f"beam_factor must be > 1, got {self.beam_factor}.")
        if self.warmup < 1 or self.patience < 1:
            raise InvalidInputError("warmup and patience must be positive.")
        if self.confidence is not None and not self.confidence > 0:
            raise InvalidInputError(f"confidence must be a positive z, got {self.confidence}.")


@dataclass
class ClassifierTrace:
    """What the sampler did: per caption, how many UNet rows and at which timestep it was pruned."""

    evaluations: list[int]
    # index into the visited timesteps after which the caption left the beam, or None
    pruned_after: list[int | None]
    # the beam after each visited timestep
    beams: list[list[int]] = field(default_factory=list)
    # (caption, visit number) of every evaluation, in order (visit v is timestep coarse_to_fine(T)[v])
    calls: list[tuple[int, int]] = field(default_factory=list)
    # the mean squared error each call gave (same order as ``calls``)
    errors: list[float] = field(default_factory=list)


# (caption, timestep index) jobs -> one mean squared error per job
ErrorSource = Callable[[Sequence[tuple[int, int]]], Sequence[float]]


@dataclass
class SamplerOutcome:
    """Scores (``-mean error``, rank-consistent with the pruning), mean errors and the trace of one decision."""

    scores: np.ndarray
    mean_error: np.ndarray
    trace: ClassifierTrace


def sample(errors: ErrorSource, count: int, config: ClassifierConfig) -> SamplerOutcome:
    """Eq. 5.9's estimate for ``count`` captions with ``config.sampling`` (module docstring).

    ``errors(jobs)`` returns one error per (caption, timestep index) job; the timestep indices are
    positions in ``stratified_timesteps(config.num_timesteps)``, visited in :func:`coarse_to_fine` order.
    """
    if count < 1:
        raise InvalidInputError("The sampler needs at least one caption.")
    order = coarse_to_fine(config.num_timesteps)
    totals = np.zeros(count)
    seen = np.zeros(count, dtype=int)
    by_visit = np.full((count, len(order)), np.nan)  # each caption's error at each visited timestep
    trace = ClassifierTrace(evaluations=[0] * count, pruned_after=[None] * count)

    def run(jobs: list[tuple[int, int]], visits: list[int]) -> None:
        for (c, _), visit, error in zip(jobs, visits, errors(jobs)):
            totals[c] += error
            seen[c] += 1
            by_visit[c, visit] = error
            trace.calls.append((c, visit))
            trace.errors.append(float(error))

    if config.sampling == "uniform":
        # timestep-major, so a batch holds many captions at one timestep
        run([(c, k) for k in order for c in range(count)], [v for v in range(len(order)) for _ in range(count)])
        trace.beams.append(list(range(count)))
    else:
        beam = list(range(count))
        leader, streak = None, 0
        for step, k in enumerate(order):
            run([(c, k) for c in beam], [step] * len(beam))
            means = {c: totals[c] / seen[c] for c in beam}
            best = min(beam, key=means.__getitem__)
            streak = streak + 1 if best == leader else 1
            leader = best
            if step + 1 >= config.warmup and len(beam) > 1:
                keep = max(1, math.ceil(len(beam) / config.beam_factor))
                ranked = sorted(beam, key=means.__getitem__)
                survivors = ranked[:keep] + [c for c in ranked[keep:] if config.confidence is not None
                                             and not significantly_worse(by_visit[c, : step + 1],
                                                                         by_visit[best, : step + 1], config.confidence)]
                for c in beam:
                    if c not in survivors:
                        trace.pruned_after[c] = step
                beam = sorted(survivors)
            trace.beams.append(list(beam))
            streak_stop = config.confidence is None and step + 1 >= config.warmup and streak >= config.patience
            if len(beam) == 1 or streak_stop:
                break
    for c, _ in trace.calls:
        trace.evaluations[c] += config.samples_per_timestep
    mean_error = totals / np.maximum(seen, 1)
    return SamplerOutcome(rank_consistent_scores(-mean_error, trace.pruned_after), mean_error, trace)


def significantly_worse(errors: np.ndarray, leader: np.ndarray, z: float) -> bool:
    """Whether a caption's per-timestep ``errors`` are above the ``leader``'s by more than ``z`` standard errors
    of their paired differences (the same noise at the same timestep: common random numbers)."""
    differences = errors - leader
    if len(differences) < 2:
        return False
    spread = differences.std(ddof=1) / math.sqrt(len(differences))
    return bool(differences.mean() > z * spread)


class DiffusionClassifier:
    """Rank captions by how well each one helps the UNet denoise the image (eq. 5.9)."""

    def __init__(self, backbone: DiffusionBackbone, config: ClassifierConfig | None = None) -> None:
        self.backbone = backbone
        self.config = config or ClassifierConfig()
        self.last_trace: ClassifierTrace | None = None

    def _errors(self, latent: torch.Tensor, text: torch.Tensor, jobs: Sequence[tuple[int, int]]) -> list[float]:
        """Mean squared error ``||eps - eps_theta||^2 / dim`` of each (caption, timestep index) job."""
        timesteps = stratified_timesteps(self.config.num_timesteps, self.backbone.num_train_timesteps)
        results: list[float] = []
        samples = self.config.samples_per_timestep
        rows = [(c, k, s) for c, k in jobs for s in range(samples)]
        errors: list[float] = []
        for start in range(0, len(rows), self.config.batch_size):
            chunk = rows[start : start + self.config.batch_size]
            by_step: dict[int, list[int]] = {}
            for position, (_, k, _) in enumerate(chunk):
                by_step.setdefault(timesteps[k], []).append(position)
            chunk_errors = [0.0] * len(chunk)
            for timestep, positions in by_step.items():
                noises = torch.cat([self._noise(latent, chunk[p][1], chunk[p][2]) for p in positions])
                z_t = self.backbone.add_noise(latent, noises, timestep)
                prediction = self.backbone.predict_noise(z_t, timestep, text[[chunk[p][0] for p in positions]])
                squared = (prediction.float() - noises.float()).pow(2).flatten(1).mean(dim=1)
                for p, value in zip(positions, squared.tolist()):
                    chunk_errors[p] = value
            errors.extend(chunk_errors)
        for j in range(len(jobs)):
            results.append(float(np.mean(errors[j * samples : (j + 1) * samples])))
        return results

    def _noise(self, latent: torch.Tensor, timestep_index: int, sample: int) -> torch.Tensor:
        return self.backbone.noise(latent.shape, self.config.seed, timestep_index * 1009 + sample)

    @torch.no_grad()
    def score(self, image, captions: str | Sequence[str]) -> MatchResult:
        """Scores ``-mean error`` per caption (pruned captions keep their error when pruned; higher = better)."""
        started = time.perf_counter()
        array = check_image(image)
        captions = check_captions(captions, self.backbone.tokenizer)
        before = self.backbone.unet_evaluations
        latent = self.backbone.encode_image(array)
        text = self.backbone.encode_text(captions)
        outcome = sample(lambda jobs: self._errors(latent, text, jobs), len(captions), self.config)
        self.last_trace = outcome.trace
        return MatchResult(
            captions=captions, scores=outcome.scores, method=f"dc-{self.config.sampling}",
            unet_evaluations=self.backbone.unet_evaluations - before, seconds=time.perf_counter() - started,
            terms={"mean_squared_error": outcome.mean_error},
        )


def rank_consistent_scores(scores: np.ndarray, pruned_after: Sequence[int | None]) -> np.ndarray:
    """``scores`` (minus mean error), lowered where needed so survivors outrank pruned captions and
    earlier-pruned ones rank lower; unchanged where the order already holds (e.g. two captions, one
    pruned after the warm-up), so scores stay comparable across images (Winoground's image score)."""
    out = np.asarray(scores, dtype=np.float64).copy()
    tiers = sorted({p for p in pruned_after if p is not None}, reverse=True)  # latest pruned first
    floor = min((out[c] for c, p in enumerate(pruned_after) if p is None), default=np.inf)
    for tier in tiers:
        members = [c for c, p in enumerate(pruned_after) if p == tier]
        above = sorted((c for c in members if out[c] >= floor), key=lambda c: -out[c])
        for rank, c in enumerate(above, start=1):
            out[c] = floor - 1e-6 * rank
        floor = min(floor, min(out[c] for c in members))
    return out
