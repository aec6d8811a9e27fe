"""Winoground-style evaluation of any matcher on groups of 2 images x 2 captions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..shapesworld.benchmark import Group, compositional_groups, load_winoground, winoground_scores
from .results import MatchResult
from .uploads import read_upload

BENCHMARKS = ("shapesworld-comp",)
# swap types the issue reports: the benchmark's kinds folded into colour / shape / relation
SWAP_TYPES = {"colour": ("colour", "colour_single"), "shape": ("shape", "shape_single"), "relation": ("relation",)}

ScoreFn = Callable[[np.ndarray, list[str]], "MatchResult | dict[str, MatchResult]"]


@dataclass
class GroupOutcome:
    """One group under one method: ``sim[i][j]`` = score of caption i with image j."""

    kind: str
    sim: np.ndarray
    unet_evaluations: int
    seconds: float


@dataclass
class Summary:
    """Text/image/group accuracy overall, per kind and per swap type; cost per decision."""

    method: str
    groups: int
    overall: dict[str, float]
    per_kind: dict[str, dict[str, float]]
    per_swap: dict[str, dict[str, float]]
    # a decision = one image ranked against the group's two captions
    unet_evaluations_per_decision: float
    seconds_per_decision: float
    extra: dict = field(default_factory=dict)


def shapesworld_groups(n: int, seed: int = 0, size: int = 64) -> list[Group]:
    """The ShapesWorld compositional split, held out of the tiny pack's training (:mod:`~pipelines.shapesworld.splits`)."""
    return compositional_groups(n, seed=seed, size=size)


def load_benchmark(name_or_path: str, n: int = 200, seed: int = 0) -> list[Group]:
    """``"shapesworld-comp"`` (generated, fixed seed) or a folder, ``.zip``, ``examples.jsonl`` or ``.csv`` in
    Winoground's format."""
    if name_or_path == "shapesworld-comp":
        return shapesworld_groups(n, seed)
    path = Path(name_or_path)
    return (load_winoground(path) if path.is_dir() else read_upload(path))[:n]


def collect(groups: Sequence[Group], score_fn: ScoreFn, desc: str = "groups",
            on_group: Callable[[int, int], None] | None = None) -> dict[str, list[GroupOutcome]]:
    """Score every group's two images against its two captions; ``score_fn`` may return several variants.
    ``on_group(done, total)`` is called after each group (a progress bar; it may raise to stop the run)."""
    outcomes: dict[str, list[GroupOutcome]] = {}
    for done, group in enumerate(tqdm(groups, desc=desc, leave=False), start=1):
        per_image = [score_fn(group.images[j], list(group.captions)) for j in (0, 1)]
        variants = per_image[0].keys() if isinstance(per_image[0], dict) else [None]
        for variant in variants:
            results = [r[variant] if variant is not None else r for r in per_image]
            sim = np.stack([results[0].scores, results[1].scores], axis=1)  # [caption, image]
            outcomes.setdefault(variant or results[0].method, []).append(GroupOutcome(
                group.kind, sim, sum(r.unet_evaluations for r in results), sum(r.seconds for r in results),
            ))
        if on_group is not None:
            on_group(done, len(groups))
    return outcomes


def _accuracy(outcomes: Sequence[GroupOutcome]) -> dict[str, float]:
    if not outcomes:
        return {}
    scores = [winoground_scores(o.sim) for o in outcomes]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("text", "image", "group")} | {"n": len(outcomes)}


def summarise(method: str, outcomes: Sequence[GroupOutcome]) -> Summary:
    """Accuracy (Winoground text, image, group) overall, per kind and per swap type."""
    if not outcomes:
        raise InvalidInputError("No outcomes to summarise.")
    kinds = sorted({o.kind for o in outcomes})
    per_kind = {k: _accuracy([o for o in outcomes if o.kind == k]) for k in kinds}
    per_swap = {
        swap: _accuracy([o for o in outcomes if o.kind in members])
        for swap, members in SWAP_TYPES.items()
        if any(o.kind in members for o in outcomes)
    }
    decisions = 2 * len(outcomes)
    return Summary(
        method=method, groups=len(outcomes), overall=_accuracy(outcomes), per_kind=per_kind, per_swap=per_swap,
        unet_evaluations_per_decision=sum(o.unet_evaluations for o in outcomes) / decisions,
        seconds_per_decision=sum(o.seconds for o in outcomes) / decisions,
    )


def format_table(summaries: Sequence[Summary]) -> str:
    """A plain-text table: one row per method, text/image/group overall and text accuracy per swap type."""
    header = (f"{'method':<28} {'text':>6} {'image':>6} {'group':>6} {'colour':>7} {'shape':>6} {'relat.':>6}"
              f" {'UNet/dec':>9} {'s/dec':>7}")
    lines = [header, "-" * len(header)]
    for s in summaries:
        swap = {k: s.per_swap.get(k, {}).get("text", float("nan")) for k in SWAP_TYPES}
        lines.append(
            f"{s.method:<28} {s.overall['text']:>6.3f} {s.overall['image']:>6.3f} {s.overall['group']:>6.3f}"
            f" {swap['colour']:>7.3f} {swap['shape']:>6.3f} {swap['relation']:>6.3f}"
            f" {s.unet_evaluations_per_decision:>9.1f} {s.seconds_per_decision:>7.3f}"
        )
    lines.append("(text/image/group: Winoground scores; colour/shape/relation: text score per swap type)")
    return "\n".join(lines)
