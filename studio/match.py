"""Match tab: which caption fits an image, why (per-word cross-attention heatmaps), and where methods
disagree: Discffusion (thesis ch. 5) beside CLIP, ComCLIP (ch. 4) and the Diffusion Classifier (eq. 5.9).

Every user's image, features and prompt-learned offsets live in a ``gr.State`` (a
:class:`MatchSession`); the models are shared through the studio's ModelManager.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipelines.attention import AttentionOffsets
from pipelines.errors import InvalidInputError
from pipelines.matching import (
    METHODS,
    DiscffusionFeatures,
    DiscffusionScorer,
    Matchers,
    MatchResult,
    PromptLearningConfig,
    check_captions,
    check_image,
    collect,
    summarise,
    train_offsets,
)
from pipelines.matching.benchmark import SWAP_TYPES, shapesworld_groups
from pipelines.matching.overlay import overlay, swapped_captions
from pipelines.mojito.guidance import GuidanceConfig
from pipelines.mojito.layout import DEFAULT_IMAGE_GUIDANCE, relation_layout
from pipelines.shapesworld import sample_scene
from pipelines.tinypack.evaluate import generate_images

from .context import StudioContext
from .errors import shows_errors

TITLE = "Match"
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "examples" / "match"
HEATMAP_SIZE = 160
# methods offered as checkboxes (head weighting is a toggle on Discffusion)
UI_METHODS = ("discffusion", "clip", "comclip", "dc-uniform", "dc-hierarchical")
DEFAULT_METHODS = ["discffusion", "clip"]
ALL_LAYERS, ALL_LEVELS = "all layers (mean)", "all levels (mean)"
# seeds of the few-shot training groups and of the held-out groups that measure them (disjoint sets)
FEW_SHOT_SEED, HELD_OUT_SEED = 1000, 2000

INTRO = """\
## Match: which caption fits the image, and why
Give an image (upload, an example, a ShapesWorld sample or **generate from prompt**), write captions one
per line, tick methods and press **Score**. Each method ranks the captions (table and bars; higher is a
better match). **Discffusion** reads the diffusion UNet's cross-attention: the image is noised at a few
levels, the UNet runs once per caption, and the LogSumExp of the pre-softmax attention scores over the
caption's tokens, averaged over pixels, heads, layers and noise levels (thesis eq. 5.4), plus the
denoising-error contrast of the thesis' code, is the score. The heatmaps
show where each caption word sends attention (pick a layer and a noise level). **Diffusion Classifier**
ranks by how well each caption helps denoise the image (eq. 5.9); *hierarchical* prunes captions early
(section 5.5). **CLIP** compares global embeddings; **ComCLIP** adds subimages of the detected objects
(eq. 4.4-4.5).
"""

FINDING = """\
**What the tiny pack measured** (`bench/results/matching.jsonl`; 200 held-out ShapesWorld groups, Winoground
text score, chance = 0.25): the attention score alone (eq. 5.4) is **at or below chance zero-shot** in every
reading tried: pre-softmax logits 0.09, post-softmax probabilities 0.075, lambda 10 0.07, with head
weighting 0.10. It behaves like caption prior + image prior. The discriminative signal is the
denoising-error term that the thesis' code adds: Discffusion as the code computes it reaches 0.43 (colour
0.50, shape 0.53, relation 0.10). Prompt learning on that combined score (200 few-shot groups, 100 steps)
raises it to 0.47 text, 0.43 image: single-object colour swaps 0.75 to 0.85 and shape swaps 0.73 to 0.95,
but two-object swaps stay near chance (0.30 colour, 0.23 shape), so colour and shape overall are 0.58 and
0.59, short of 0.8. The tiny CLIP wins colour (0.95) and shape (0.90) swaps; every method is near or below
chance on relations. The Diffusion Classifier (32 timesteps per caption) reaches 0.50 text; with
hierarchical sampling 0.52 at 5.3x fewer UNet evaluations, and Discffusion needs 0.094 of uniform DC's
evaluations per decision. Details: `docs/notes/discffusion.md`.
"""


@dataclass
class MatchSession:
    """One user's image, last scoring and prompt-learned offsets."""

    image: np.ndarray | None = None
    captions: list[str] = field(default_factory=list)
    features: DiscffusionFeatures | None = None
    results: dict[str, MatchResult] = field(default_factory=dict)
    offsets: AttentionOffsets | None = None
    offsets_file: str | None = None


def example_items() -> dict[str, tuple[Path, list[str]]]:
    """Example label -> (image path, captions) from ``assets/examples/match/examples.json``."""
    index = ASSETS / "examples.json"
    if not index.is_file():
        return {}
    items = json.loads(index.read_text(encoding="utf-8"))["examples"]
    return {f"{item['kind']}: {item['captions'][0]}": (ASSETS / item["image"], item["captions"]) for item in items}


def load_example(label: str, examples: dict[str, tuple[Path, list[str]]]):
    if label not in examples:
        raise InvalidInputError(f"Unknown example {label!r}.")
    path, captions = examples[label]
    from PIL import Image

    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB")), "\n".join(captions)


def shapesworld_sample(seed) -> tuple[np.ndarray, str]:
    """A held-out two-object ShapesWorld scene and its caption followed by its minimal swaps."""
    scene = sample_scene(int(seed), size=128, split="test")
    return scene.image, "\n".join([scene.caption, *swapped_captions(scene.caption)])


def relation_guidance(prompt: str) -> GuidanceConfig | None:
    """Layout guidance for a ShapesWorld caption with a spatial relation (the model alone places objects at
    chance); None for any other prompt."""
    try:
        return DEFAULT_IMAGE_GUIDANCE if relation_layout(prompt) else None
    except InvalidInputError:  # outside the ShapesWorld grammar, or two objects with the same words
        return None


def generate(matchers: Matchers, prompt: str, seed) -> tuple[np.ndarray, str]:
    """An image from the text-to-image model for ``prompt``; the captions become the prompt and its swaps.
    A relation caption's objects are guided to their sides (:mod:`pipelines.mojito.layout`)."""
    if not prompt or not prompt.strip():
        raise InvalidInputError("Write a prompt to generate an image from.")
    prompt = check_captions([prompt], matchers.backbone.tokenizer)[0]
    image = generate_images(matchers.text_to_image(), [prompt], [int(seed)], progress=False,
                            layout=relation_guidance(prompt))[0]
    try:
        captions = [prompt, *swapped_captions(prompt)]
    except InvalidInputError:  # not in the ShapesWorld grammar: no automatic swaps
        captions = [prompt]
    return image, "\n".join(captions)


def _scorer(matchers: Matchers, session: MatchSession, head_weighting: bool) -> DiscffusionScorer:
    config = replace(matchers.discffusion_config, head_weighting=bool(head_weighting))
    return DiscffusionScorer(matchers.backbone, config, offsets=session.offsets)


def ranked_table(results: dict[str, MatchResult]) -> list[list]:
    rows = []
    for method, result in results.items():
        for rank, index in enumerate(result.ranking(), start=1):
            rows.append([method, rank, result.captions[index], round(float(result.scores[index]), 4),
                         result.unet_evaluations, round(result.seconds, 3)])
    return rows


def bar_chart(results: dict[str, MatchResult]) -> go.Figure:
    """One horizontal bar chart per method; the best caption's bar is highlighted."""
    figure = make_subplots(rows=1, cols=max(1, len(results)), subplot_titles=list(results), shared_yaxes=True)
    for column, result in enumerate(results.values(), start=1):
        best = result.ranking()[0]
        colours = ["#d62728" if i == best else "#1f77b4" for i in range(len(result.captions))]
        figure.add_trace(go.Bar(x=result.scores, y=result.captions, orientation="h", marker_color=colours,
                                showlegend=False, hovertemplate="%{y}: %{x:.4f}<extra></extra>"),
                         row=1, col=column)
        low, high = float(result.scores.min()), float(result.scores.max())
        pad = max(1e-6, (high - low) * 0.25)
        figure.update_xaxes(range=[low - pad, high + pad], row=1, col=column)
    figure.update_yaxes(autorange="reversed")
    captions = len(next(iter(results.values())).captions)
    figure.update_layout(height=120 + 40 * captions, margin=dict(l=10, r=10, t=40, b=10))
    return figure


def heatmap_gallery(matchers: Matchers, session: MatchSession, caption: str | None, layer: str | None,
                    level: str | None) -> list[tuple[np.ndarray, str]]:
    """One overlay per word of ``caption``: the word's attention mass at ``layer`` and ``level``."""
    if session.features is None or session.image is None:
        return []
    features = session.features
    if caption not in features.captions:
        caption = features.captions[0]
    levels = [f"{lvl}" for lvl in matchers.discffusion_config.noise_levels]
    level_index = levels.index(level) if level in levels else None
    layer_name = layer if layer in features.layers else None
    scorer = DiscffusionScorer(matchers.backbone, matchers.discffusion_config)
    maps = scorer.heatmaps(features, features.captions.index(caption), layer=layer_name, level=level_index,
                           size=HEATMAP_SIZE)
    return [(overlay(session.image, heat), f"{word} (peak {heat.max():.2f})") for word, heat in maps.items()]


def score(matchers: Matchers, session: MatchSession | None, image, captions_text, methods, head_weighting):
    """Rank the captions with every ticked method; Discffusion also gives per-word heatmaps."""
    started = time.perf_counter()
    session = session or MatchSession()
    array = check_image(image)
    captions = check_captions(captions_text or "", matchers.backbone.tokenizer)
    methods = [m for m in UI_METHODS if m in (methods or [])]
    if not methods:
        raise InvalidInputError("Tick at least one method.")
    session.image, session.captions, session.results, session.features = array, captions, {}, None
    for method in methods:
        if method == "discffusion":
            scorer = _scorer(matchers, session, head_weighting)
            session.features = scorer.features(array, captions, keep_maps=True)
            result = scorer.combine(session.features)
            result.method = "discffusion" + (" + head weighting" if head_weighting else "")
            if session.offsets is not None:
                result.method += " (prompt-learned)"
        else:
            result = matchers.scorer(method)(array, captions)
        session.results[result.method] = result
    layers = [ALL_LAYERS, *(session.features.layers if session.features else [])]
    levels = [ALL_LEVELS, *(f"{lvl}" for lvl in matchers.discffusion_config.noise_levels)]
    gallery = heatmap_gallery(matchers, session, captions[0], None, None)
    winner = {m: r.captions[r.ranking()[0]] for m, r in session.results.items()}
    status = f"Scored {len(captions)} captions in {time.perf_counter() - started:.2f} s. " + "; ".join(
        f"**{m}** picks *{c}*" for m, c in winner.items())
    return (
        session, ranked_table(session.results), bar_chart(session.results),
        gr.update(choices=captions, value=captions[0]), gr.update(choices=layers, value=ALL_LAYERS),
        gr.update(choices=levels, value=ALL_LEVELS), gallery, status,
    )


def refresh_heatmaps(matchers: Matchers, session: MatchSession | None, caption, layer, level):
    if session is None or session.features is None:
        raise InvalidInputError("Score with Discffusion first: the heatmaps come from its attention maps.")
    return heatmap_gallery(matchers, session, caption, layer, level)


def _accuracy(matchers: Matchers, session: MatchSession, groups, head_weighting: bool) -> dict[str, float]:
    scorer = _scorer(matchers, session, head_weighting)
    outcomes = collect(groups, scorer.score, desc="held-out groups")
    summary = summarise("discffusion", next(iter(outcomes.values())))
    return {"overall": summary.overall["text"], **{k: v["text"] for k, v in summary.per_swap.items()}}


def train(matchers: Matchers, session: MatchSession | None, shots, steps, held_out, head_weighting,
          progress=gr.Progress(track_tqdm=True)):
    """Prompt learning (eq. 5.5-5.6) on few-shot ShapesWorld groups; text accuracy before/after on held-out ones."""
    session = session or MatchSession()
    shots, steps, held_out = int(shots), int(steps), int(held_out)
    if not (1 <= shots <= 200 and 1 <= steps <= 2000 and 5 <= held_out <= 200):
        raise InvalidInputError("Few-shot groups must be 1-200, steps 1-2000 and held-out groups 5-200.")
    few_shot = shapesworld_groups(shots, seed=FEW_SHOT_SEED)
    evaluation = shapesworld_groups(held_out, seed=HELD_OUT_SEED)
    progress(0, desc="accuracy before")
    before = _accuracy(matchers, replace(session, offsets=None), evaluation, head_weighting)
    scorer = _scorer(matchers, replace(session, offsets=None), head_weighting)
    offsets, log = train_offsets(scorer, few_shot, PromptLearningConfig(steps=steps))
    session.offsets = offsets
    after = _accuracy(matchers, session, evaluation, head_weighting)
    path = Path(tempfile.mkdtemp(prefix="match-offsets-")) / "discffusion_offsets.safetensors"
    offsets.save(path)
    session.offsets_file = str(path)
    rows = "\n".join(f"| {k} | {before[k]:.2f} | {after[k]:.2f} |" for k in before)
    text = (f"Trained offsets on {len(offsets.layer_names)} layers with {shots} few-shot groups, {steps} steps "
            f"(final loss {np.mean(log.losses[-10:]):.3f}). Text accuracy on {held_out} held-out groups:\n\n"
            f"| swap | before | after |\n|---|---|---|\n{rows}\n\nScoring now uses these offsets.")
    figure = go.Figure(go.Scatter(y=log.losses, mode="lines", name="triplet loss"))
    figure.update_layout(title="Triplet loss (eq. 5.6)", height=260, margin=dict(l=10, r=10, t=40, b=10))
    return session, text, figure, str(path)


def reset_offsets(session: MatchSession | None):
    session = session or MatchSession()
    session.offsets, session.offsets_file = None, None
    return session, "Offsets cleared: Discffusion is zero-shot again.", None


def batch_eval(matchers: Matchers, session: MatchSession | None, groups, methods, head_weighting,
               progress=gr.Progress(track_tqdm=True)):
    """Winoground text/image/group accuracy on held-out ShapesWorld groups for each ticked method."""
    session = session or MatchSession()
    count = int(groups)
    if not 5 <= count <= 200:
        raise InvalidInputError(f"Batch evaluation runs 5 to 200 groups, got {count}.")
    methods = [m for m in UI_METHODS if m in (methods or [])]
    if not methods:
        raise InvalidInputError("Tick at least one method.")
    benchmark = shapesworld_groups(count, seed=HELD_OUT_SEED)
    rows = []
    for method in methods:
        function = _scorer(matchers, session, head_weighting).score if method == "discffusion" \
            else matchers.scorer(method)
        summary = summarise(method, next(iter(collect(benchmark, function, desc=method).values())))
        rows.append([method, *(round(summary.overall[k], 3) for k in ("text", "image", "group")),
                     *(round(summary.per_swap.get(s, {}).get("text", float("nan")), 3) for s in SWAP_TYPES),
                     round(summary.unet_evaluations_per_decision, 1), round(summary.seconds_per_decision, 3)])
    return rows


def create_tab(context: StudioContext) -> None:
    """Build the Match tab inside the current ``gr.Blocks`` (models load on first use)."""
    matchers = Matchers(context.manager)
    examples = example_items()

    def handler(function, *bound, **bound_keywords):
        """``function`` with leading ``bound`` arguments, errors shown to the user."""
        wrapped = functools.partial(function, *bound, **bound_keywords)
        wrapped.__name__ = function.__name__
        return shows_errors(wrapped)

    with gr.Tab(TITLE, id="match"):
        gr.Markdown(INTRO)
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(label="Image", type="numpy", image_mode="RGB", height=260, elem_id="match-image")
                with gr.Row():
                    example = gr.Dropdown(list(examples), value=next(iter(examples), None), label="Example",
                                          scale=3)
                    load = gr.Button("Load example", scale=1)
                with gr.Row():
                    sample_seed = gr.Number(value=0, precision=0, label="ShapesWorld seed", scale=1)
                    sample = gr.Button("ShapesWorld sample", scale=1)
                with gr.Row():
                    prompt = gr.Textbox(label="Generate from prompt", placeholder="a red circle left of a blue square",
                                        info="relations (left of, right of, above, below) are laid out by "
                                             "cross-attention box guidance", scale=3)
                    make = gr.Button("Generate", scale=1)
            with gr.Column(scale=1, min_width=300):
                captions = gr.Textbox(label="Captions (one per line, at most 32)", lines=6, elem_id="match-captions")
                methods = gr.CheckboxGroup([(METHODS[m], m) for m in UI_METHODS], value=DEFAULT_METHODS,
                                           label="Methods")
                head_weighting = gr.Checkbox(False, label="Dynamic attention-head weighting (eq. 5.7) for Discffusion")
                go_button = gr.Button("Score", variant="primary")
                status = gr.Markdown("", elem_id="match-status")
        plot = gr.Plot(label="Scores per method", elem_id="match-plot")
        table = gr.Dataframe(headers=["method", "rank", "caption", "score", "UNet evals", "seconds"],
                             label="Ranking", interactive=False, elem_id="match-table")
        gr.Markdown("### Discffusion heatmaps: where each word of a caption sends attention")
        with gr.Row():
            heat_caption = gr.Dropdown([], label="Caption")
            heat_layer = gr.Dropdown([ALL_LAYERS], value=ALL_LAYERS, label="Layer")
            heat_level = gr.Dropdown([ALL_LEVELS], value=ALL_LEVELS, label="Noise level")
        gallery = gr.Gallery(label="Per-word attention (stretched to each map's peak)", columns=6, height=240,
                             elem_id="match-heatmaps")
        with gr.Accordion("Few-shot prompt learning (eq. 5.5-5.6)", open=False):
            gr.Markdown("Trains key/value offsets on ShapesWorld groups (seed 1000) with the triplet loss and "
                        "measures text accuracy on disjoint held-out groups (seed 2000) before and after.")
            with gr.Row():
                shots = gr.Number(value=40, precision=0, label="few-shot groups")
                steps = gr.Number(value=60, precision=0, label="training steps")
                held_out = gr.Number(value=20, precision=0, label="held-out groups")
            with gr.Row():
                train_button = gr.Button("Train offsets", variant="primary")
                clear_button = gr.Button("Clear offsets")
            train_report = gr.Markdown("", elem_id="match-train-report")
            loss_plot = gr.Plot(label="Training loss")
            offsets_file = gr.File(label="Offsets (.safetensors)", interactive=False)
        with gr.Accordion("Batch evaluation (held-out ShapesWorld compositional split)", open=False):
            with gr.Row():
                eval_groups = gr.Number(value=20, precision=0, label="groups (5-200)")
                eval_methods = gr.CheckboxGroup([(METHODS[m], m) for m in UI_METHODS], value=DEFAULT_METHODS,
                                                label="Methods")
            eval_button = gr.Button("Run benchmark")
            eval_table = gr.Dataframe(
                headers=["method", "text", "image", "group", "colour (text)", "shape (text)", "relation (text)",
                         "UNet evals / decision", "s / decision"],
                label="Winoground accuracy", interactive=False, elem_id="match-eval-table")
        gr.Markdown(FINDING)

        load.click(handler(load_example, examples=examples), inputs=example, outputs=[image, captions],
                   api_name="match_load_example")
        sample.click(handler(shapesworld_sample), inputs=sample_seed, outputs=[image, captions], api_name=False)
        make.click(handler(generate, matchers), inputs=[prompt, sample_seed], outputs=[image, captions],
                   api_name=False)
        score_outputs = [state, table, plot, heat_caption, heat_layer, heat_level, gallery, status]
        go_button.click(handler(score, matchers),
                        inputs=[state, image, captions, methods, head_weighting], outputs=score_outputs,
                        api_name="match_score")
        for control in (heat_caption, heat_layer, heat_level):
            control.input(handler(refresh_heatmaps, matchers),
                          inputs=[state, heat_caption, heat_layer, heat_level], outputs=gallery, api_name=False)
        train_button.click(handler(train, matchers),
                           inputs=[state, shots, steps, held_out, head_weighting],
                           outputs=[state, train_report, loss_plot, offsets_file], api_name=False)
        clear_button.click(handler(reset_offsets), inputs=state, outputs=[state, train_report, offsets_file],
                           api_name=False)
        eval_button.click(handler(batch_eval, matchers),
                          inputs=[state, eval_groups, eval_methods, head_weighting], outputs=eval_table,
                          api_name=False)
