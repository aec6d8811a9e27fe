"""Match's runner: requests in, reports out (what the studio, the CLI and the bench call).

:class:`MatchRunner` gets its models from the shared :class:`~pipelines.models.ModelManager` (one
:class:`~.methods.Matchers` per manager) and offers four actions:

* :meth:`MatchRunner.run` - rank captions for an image with each asked method (Discffusion: LSE pooling
  of cross-attention, thesis eq. 5.4, optionally with head attribution, eq. 5.7; CLIP, ComCLIP eq. 4.4-4.5; the Diffusion
  Classifier eq. 5.9);
* :meth:`MatchRunner.generate` - an image from a prompt with the text-to-image model (relation captions laid
  out by cross-attention box guidance, eq. 10.5/10.7), with its recipe;
* :meth:`MatchRunner.learn` - prompt learning (eq. 5.5-5.6) on few-shot ShapesWorld groups, accuracy before
  and after on held-out ones;
* :meth:`MatchRunner.evaluate` - Winoground text/image/group accuracy per group and overall, on held-out
  ShapesWorld groups or a person's own Winoground-format upload (:mod:`.uploads`).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..attention import AttentionOffsets
from ..errors import InvalidInputError
from ..models import ModelManager
from ..recipes import Recipe, digest, model_hashes
from ..shapesworld.benchmark import Group, winoground_scores
from ..zerogpu import gpu
from .benchmark import SWAP_TYPES, GroupOutcome, Summary, collect, shapesworld_groups, summarise
from .discffusion import HEAD_WEIGHTINGS, DiscffusionFeatures, DiscffusionScorer, HeadWeighting
from .inputs import check_captions, check_image
from .methods import Matchers
from .overlay import swapped_captions
from .prompt_learning import PromptLearningConfig, train_offsets
from .results import MatchResult
from .uploads import MAX_GROUPS, read_upload

# Methods a request may name (head weighting, eq. 5.7, is a setting of Discffusion).
RUN_METHODS = ("discffusion", "clip", "comclip", "dc-uniform", "dc-hierarchical")
# Seeds of the few-shot training groups and of the held-out groups that measure them (disjoint sets).
FEW_SHOT_SEED, HELD_OUT_SEED = 1000, 2000
# Suffix of Discffusion's label per head weighting.
HEAD_LABELS: dict[str, str] = {"none": "", "attribution": " + head attribution (eq. 5.7)",
                               "scalar": " + scalar head weights (eq. 5.7)"}


@dataclass
class MatchRequest:
    """Rank ``captions`` for ``image``."""

    # uint8 [H, W, 3] (anything :func:`~.inputs.check_image` reads).
    image: object
    # Captions, a list or one per line of a string.
    captions: list[str] | str
    # Names from RUN_METHODS, in any order (reports keep RUN_METHODS' order).
    methods: list[str] = field(default_factory=lambda: ["discffusion", "clip"])
    # Dynamic attention-head weighting (eq. 5.7) for Discffusion: "none", "attribution" (as written) or "scalar".
    head_weighting: HeadWeighting = "none"
    # Prompt-learned key/value offsets (eq. 5.5-5.6) for Discffusion, or None for zero-shot.
    offsets: AttentionOffsets | None = None


@dataclass
class MatchReport:
    """What scoring found: per method the ranking, and Discffusion's maps for heatmaps."""

    image: np.ndarray
    captions: list[str]
    # Method label -> result (labels name the head weighting and "(prompt-learned)" where they apply).
    results: dict[str, MatchResult]
    # Discffusion's features with their attention maps (None when Discffusion was not asked).
    features: DiscffusionFeatures | None
    seconds: float

    def winners(self) -> dict[str, str]:
        """Method label -> the caption it ranks first."""
        return {m: r.captions[r.ranking()[0]] for m, r in self.results.items()}


@dataclass
class ImageRequest:
    """An image from the text-to-image model: the recipe of a generated PNG."""

    prompt: str
    seed: int = 0


@dataclass
class ImageReport:
    image: np.ndarray
    # The prompt and its minimal swaps (colour, shape, relation) when it is a ShapesWorld caption.
    captions: list[str]
    # Whether the relation's objects were guided into boxes on their sides.
    laid_out: bool
    recipe: Recipe


@dataclass
class LearnRequest:
    """Prompt learning on few-shot groups (seed 1000), measured on held-out groups (seed 2000)."""

    shots: int = 40
    steps: int = 60
    held_out: int = 20
    head_weighting: HeadWeighting = "none"

    def check(self) -> None:
        if not (1 <= self.shots <= 200 and 1 <= self.steps <= 2000 and 5 <= self.held_out <= 200):
            raise InvalidInputError("Few-shot groups must be 1-200, steps 1-2000 and held-out groups 5-200.")


@dataclass
class LearnReport:
    offsets: AttentionOffsets
    losses: list[float]
    # Swap type ("overall", "colour", ...) -> text accuracy before and after.
    before: dict[str, float]
    after: dict[str, float]


@dataclass
class BatchRequest:
    """Winoground text/image/group accuracy of each method on a benchmark: held-out ShapesWorld groups, or an
    upload."""

    # How many held-out ShapesWorld groups (seed 2000) to generate, 5-200; unused when ``upload`` is given.
    groups: int = 20
    # A Winoground-format upload: one .zip, or an examples.jsonl / .csv with its image files (:mod:`.uploads`).
    upload: list[str] | None = None
    # Names from RUN_METHODS.
    methods: list[str] = field(default_factory=lambda: ["discffusion", "clip"])
    # Discffusion's head weighting (eq. 5.7) and prompt-learned offsets (eq. 5.5-5.6), as in MatchRequest.
    head_weighting: HeadWeighting = "none"
    offsets: AttentionOffsets | None = None


@dataclass
class BatchReport:
    """Per group and method the 2x2 scores and Winoground's three verdicts; per method the accuracies."""

    groups: list[Group]
    # Method label -> summary (accuracy overall and per swap type; cost per decision).
    summaries: dict[str, Summary]
    # Method label -> one outcome per group, in the groups' order (``sim[i][j]``: caption i with image j).
    outcomes: dict[str, list[GroupOutcome]]
    recipe: Recipe
    seconds: float

    def table(self) -> list[list]:
        """Rows [method, text, image, group, per-swap text..., UNet evals / decision, s / decision]."""
        return [[label, *(round(s.overall[k], 3) for k in ("text", "image", "group")),
                 *(round(s.per_swap.get(swap, {}).get("text", float("nan")), 3) for swap in SWAP_TYPES),
                 round(s.unet_evaluations_per_decision, 1), round(s.seconds_per_decision, 3)]
                for label, s in self.summaries.items()]

    def group_rows(self) -> list[dict]:
        """One row per group and method: its id (its row number for generated groups), captions, the four scores
        ``c{caption}_i{image}`` and Winoground's three verdicts (``text``, ``image``, ``group``)."""
        rows = []
        for label, outcomes in self.outcomes.items():
            for number, (group, outcome) in enumerate(zip(self.groups, outcomes), start=1):
                sim = outcome.sim
                rows.append({"id": group.name or str(number), "kind": group.kind, "caption_0": group.captions[0],
                             "caption_1": group.captions[1], "method": label,
                             "c0_i0": float(sim[0, 0]), "c1_i0": float(sim[1, 0]),
                             "c0_i1": float(sim[0, 1]), "c1_i1": float(sim[1, 1]), **winoground_scores(sim)})
        return rows

    def command(self, offsets_file: str = "offsets.safetensors") -> str:
        return eval_command(self.recipe.request, offsets_file)


def eval_command(request: dict, offsets_file: str = "offsets.safetensors") -> str:
    """The command line that evaluates a batch recipe's benchmark again: the upload's zip or examples table (its
    pictures beside it), or the same ShapesWorld groups; prompt-learned offsets from ``offsets_file``."""
    weighting = {"none": "discffusion", "attribution": "discffusion-hw", "scalar": "discffusion-hw-scalar"}
    methods = ",".join(weighting[request["head_weighting"]] if m == "discffusion" else m for m in request["methods"])
    upload = request["upload"] or []
    table = next((name for name in upload if name.lower().endswith((".zip", ".jsonl", ".csv"))), None)
    source = f"--benchmark {table}" if table else f"--benchmark shapesworld-comp --seed {HELD_OUT_SEED}"
    offsets = f" --offsets {offsets_file}" if request["offsets_sha256"] else ""
    return f"python -m pipelines.matching{offsets} eval {source} --groups {request['groups']} --methods {methods}"


def discffusion_label(head_weighting: HeadWeighting, offsets: AttentionOffsets | None) -> str:
    """Discffusion's name in reports: its head weighting and whether it is prompt-learned."""
    return "discffusion" + HEAD_LABELS[head_weighting] + (" (prompt-learned)" if offsets is not None else "")


def captions_for(prompt: str) -> list[str]:
    """The captions to score an image of ``prompt`` with: the prompt and its minimal swaps (colour, shape,
    relation) when it is a ShapesWorld caption, else the prompt alone."""
    try:
        return [prompt, *swapped_captions(prompt)]
    except InvalidInputError:  # not in the ShapesWorld grammar: no automatic swaps
        return [prompt]


def relation_guidance(prompt: str):
    """Layout guidance for a ShapesWorld caption with a spatial relation (the model alone places objects at
    chance); None for any other prompt."""
    from ..attention.layout import DEFAULT_IMAGE_GUIDANCE
    from ..shapesworld.layout import relation_layout

    try:
        return DEFAULT_IMAGE_GUIDANCE if relation_layout(prompt) else None
    except InvalidInputError:  # outside the ShapesWorld grammar, or two objects with the same words
        return None


class MatchRunner:
    """Match over one model manager (module docstring)."""

    method = "matching"

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self.matchers: Matchers = manager.derived("matchers", lambda: Matchers(manager))

    def scorer(self, head_weighting: HeadWeighting, offsets: AttentionOffsets | None = None) -> DiscffusionScorer:
        """Discffusion with ``head_weighting`` (one of HEAD_WEIGHTINGS, eq. 5.7) and optional offsets."""
        if head_weighting not in HEAD_WEIGHTINGS:
            raise InvalidInputError(f"head_weighting must be one of {HEAD_WEIGHTINGS}, got {head_weighting!r}.")
        config = replace(self.matchers.discffusion_config, head_weighting=head_weighting)
        return DiscffusionScorer(self.matchers.backbone, config, offsets=offsets)

    @staticmethod
    def check_methods(methods) -> list[str]:
        unknown = [m for m in (methods or []) if m not in RUN_METHODS]
        if unknown:
            raise InvalidInputError(f"Unknown methods {unknown}; choose from {list(RUN_METHODS)}.")
        chosen = [m for m in RUN_METHODS if m in (methods or [])]
        if not chosen:
            raise InvalidInputError("Tick at least one method.")
        return chosen

    @gpu("match")
    def run(self, request: MatchRequest, progress=None) -> MatchReport:
        """Rank the captions with every asked method; Discffusion also keeps its maps for heatmaps.
        ``progress(fraction, desc=...)`` is called before each method (it may raise to stop the run)."""
        # 1. Check inputs (once).
        started = time.perf_counter()
        image = check_image(request.image)
        captions = check_captions(request.captions or "", self.matchers.backbone.tokenizer)
        methods = self.check_methods(request.methods)
        # 2. Score.
        results, features = {}, None
        for number, method in enumerate(methods):
            if progress is not None:
                progress(number / len(methods), desc=method)
            if method == "discffusion":
                scorer = self.scorer(request.head_weighting, request.offsets)
                features = scorer.features(image, captions, keep_maps=True)
                result = scorer.combine(features)
                result.method = discffusion_label(request.head_weighting, request.offsets)
            else:
                result = self.matchers.scorer(method)(image, captions)
            results[result.method] = result
        return MatchReport(image, captions, results, features, time.perf_counter() - started)

    def heatmaps(self, report: MatchReport, caption: str | None = None, layer: str | None = None,
                 level: int | None = None, size: int = 160) -> dict[str, np.ndarray]:
        """Word -> attention map of ``caption`` at ``layer`` and noise ``level`` (index; None = mean)."""
        features = report.features
        if features is None:
            raise InvalidInputError("Score with Discffusion first: the heatmaps come from its attention maps.")
        index = features.captions.index(caption) if caption in features.captions else 0
        scorer = DiscffusionScorer(self.matchers.backbone, self.matchers.discffusion_config)
        return scorer.heatmaps(features, index, layer=layer if layer in features.layers else None, level=level,
                               size=size)

    @gpu("match")
    def generate(self, request: ImageRequest) -> ImageReport:
        """An image for ``request.prompt``; its captions are the prompt and its swaps."""
        from ..tinypack.evaluate import generate_images

        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise InvalidInputError("Write a prompt to generate an image from.")
        prompt = check_captions([request.prompt], self.matchers.backbone.tokenizer)[0]
        layout = relation_guidance(prompt)
        image = generate_images(self.matchers.text_to_image(), [prompt], [int(request.seed)], progress=False,
                                layout=layout)[0]
        captions = captions_for(prompt)
        recipe = Recipe(self.method, {"kind": "image", **asdict(replace(request, prompt=prompt, seed=int(request.seed)))},
                        self.manager.preset, model_hashes(self.manager, ["text-to-image"]),
                        output_sha256=digest(image))
        return ImageReport(image, captions, layout is not None, recipe)

    def _accuracy(self, groups, head_weighting: HeadWeighting, offsets, on_group=None) -> dict[str, float]:
        outcomes = collect(groups, self.scorer(head_weighting, offsets).score, desc="held-out groups",
                           on_group=on_group)
        summary = summarise("discffusion", next(iter(outcomes.values())))
        return {"overall": summary.overall["text"], **{k: v["text"] for k, v in summary.per_swap.items()}}

    @gpu("match-batch")
    def learn(self, request: LearnRequest, progress=None) -> LearnReport:
        """Prompt learning (eq. 5.5-5.6); text accuracy before and after on held-out groups.
        ``progress(fraction, desc=...)`` is called after every group and training step (it may raise to stop)."""
        request.check()
        few_shot = shapesworld_groups(request.shots, seed=FEW_SHOT_SEED)
        evaluation = shapesworld_groups(request.held_out, seed=HELD_OUT_SEED)
        # The bar: a quarter for each accuracy, half for training.
        report = progress or (lambda fraction, desc=None: None)
        before = self._accuracy(evaluation, request.head_weighting, None,
                                lambda done, total: report(0.25 * done / total, desc="accuracy before"))
        offsets, log = train_offsets(self.scorer(request.head_weighting), few_shot,
                                     PromptLearningConfig(steps=request.steps),
                                     on_step=lambda step, loss: report(0.25 + 0.5 * (step + 1) / request.steps,
                                                                       desc="prompt learning"))
        after = self._accuracy(evaluation, request.head_weighting, offsets,
                               lambda done, total: report(0.75 + 0.25 * done / total, desc="accuracy after"))
        return LearnReport(offsets, list(log.losses), before, after)

    def load_offsets(self, path) -> AttentionOffsets:
        """Prompt-learned offsets saved earlier (``AttentionOffsets.save``) for Discffusion's layers; a file for
        another model or other layers is refused naming the mismatch. The shared matchers are left alone."""
        offsets = AttentionOffsets.from_unet(self.matchers.backbone.unet, layers=self.scorer("none").layers)
        offsets.load(path)
        return offsets

    @gpu("match-batch")
    def evaluate(self, request: BatchRequest, progress=None) -> BatchReport:
        """Winoground accuracy of each method on the request's groups; ``progress(fraction, desc=...)`` is called
        after every group (it may raise to stop the run)."""
        # 1. Check inputs (once): the methods, the benchmark, every caption (the studio-wide vocabulary policy).
        started = time.perf_counter()
        methods = self.check_methods(request.methods)
        if request.upload:
            groups, upload = read_upload(request.upload), [Path(p).name for p in request.upload]
            hasher = hashlib.sha256()
            for path in request.upload:
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        hasher.update(block)
            upload_digest = hasher.hexdigest()
        else:
            count = int(request.groups)
            if not 5 <= count <= MAX_GROUPS:
                raise InvalidInputError(f"Batch evaluation runs 5 to {MAX_GROUPS} groups, got {count}.")
            groups, upload, upload_digest = shapesworld_groups(count, seed=HELD_OUT_SEED), None, None
        for number, group in enumerate(groups, start=1):
            try:
                check_captions(list(group.captions), self.matchers.backbone.tokenizer)
            except InvalidInputError as error:
                raise InvalidInputError(f"Group {group.name or number}: {error}") from None
        # 2. Score every group with every method.
        summaries, outcomes = {}, {}
        for number, method in enumerate(methods):
            if method == "discffusion":
                label, function = (discffusion_label(request.head_weighting, request.offsets),
                                   self.scorer(request.head_weighting, request.offsets).score)
            else:
                label, function = method, self.matchers.scorer(method)

            def advance(done: int, total: int, number=number, label=label) -> None:
                if progress is not None:
                    progress((number * total + done) / (len(methods) * total), desc=f"{label}: group {done} of {total}")

            outcomes[label] = next(iter(collect(groups, function, desc=label, on_group=advance).values()))
            summaries[label] = summarise(label, outcomes[label])
        # 3. Report, with the recipe.
        offsets_digest = digest(*(t.detach().cpu().numpy() for t in request.offsets.tensors().values())) \
            if request.offsets is not None else None
        recipe = Recipe(self.method, {"kind": "batch", "groups": len(groups), "upload": upload,
                                      "upload_sha256": upload_digest, "methods": methods,
                                      "head_weighting": request.head_weighting, "offsets_sha256": offsets_digest},
                        self.manager.preset, model_hashes(self.manager, self.roles(methods)),
                        output_sha256=digest(*(o.sim for runs in outcomes.values() for o in runs)))
        return BatchReport(groups, summaries, outcomes, recipe, time.perf_counter() - started)

    @staticmethod
    def roles(methods: list[str]) -> list[str]:
        """The model roles ``methods`` read: the text-to-image model's UNet and/or CLIP."""
        return [role for role, used in (("text-to-image", any(m not in ("clip", "comclip") for m in methods)),
                                         ("clip", any(m in ("clip", "comclip") for m in methods))) if used]


def rerun(recipe: Recipe, out, manager: ModelManager | None = None) -> str:
    """Remake a generated PNG from its recipe; returns the new image's digest."""
    from ..recipes import write_png

    request = dict(recipe.request)
    if request.get("kind") == "batch":
        raise InvalidInputError(f"A batch evaluation is repeated with its command: {eval_command(request)}")
    if request.pop("kind", None) != "image":
        raise InvalidInputError("Only generated images of the Match tab carry a Match recipe.")
    runner = MatchRunner(manager or ModelManager(recipe.preset))
    report = runner.generate(ImageRequest(**request))
    write_png(report.image, out, report.recipe)
    return report.recipe.output_sha256
