"""Match tab: which caption fits an image, why (per-word cross-attention heatmaps), and where methods
disagree: Discffusion (thesis ch. 5) beside CLIP, ComCLIP (ch. 4) and the Diffusion Classifier (eq. 5.9).

Every user's image, features and prompt-learned offsets live in a ``gr.State`` (a
:class:`MatchSession`); the models are shared through the studio's ModelManager.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipelines.attention import AttentionOffsets
from pipelines.errors import InvalidInputError
from pipelines.matching import METHODS, MatchResult
from pipelines.matching.inputs import MIN_SIDE
from pipelines.matching.overlay import overlay, swapped_captions
from pipelines.matching.runner import (
    BatchRequest,
    ImageRequest,
    LearnRequest,
    MatchReport,
    MatchRequest,
    MatchRunner,
)
from pipelines.matching.uploads import UPLOAD_SUFFIXES, read_upload
from pipelines.recipes import write_table
from pipelines.shapesworld import sample_scene
from pipelines.vocabulary import check_text, notes_for

from . import components
from .context import StudioContext
from .outputs import recipe_markdown, scratch_path
from .sessions import CHEAP, HEAVY, check_session_size, session_state, stoppable, wire_stop
from .errors import shows_errors

TITLE = "Match"
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "examples" / "match"
HEATMAP_SIZE = 160
MAX_SEED = 2**31 - 1
# methods offered as checkboxes (head attribution, eq. 5.7 as written, is a toggle on Discffusion)
UI_METHODS = ("discffusion", "clip", "comclip", "dc-uniform", "dc-hierarchical")
DEFAULT_METHODS = ["discffusion", "clip"]
ALL_LAYERS, ALL_LEVELS = "all layers (mean)", "all levels (mean)"

INTRO = """\
## Match: which caption fits the picture?
Give a picture and a few captions, press **Score**: each method picks the caption it thinks fits, and the heatmaps
show where each word looks. Start with an example below; its true caption is marked, so you can see who is right.
"""

HOW_IT_WORKS = """\
Each method ranks the captions (table and bars; higher is a better match). **Discffusion** reads the diffusion UNet's cross-attention: the image is noised at a few
levels, the UNet runs once per caption, and the LogSumExp of the pre-softmax attention scores over the
caption's tokens, averaged over pixels, heads, layers and noise levels (thesis eq. 5.4), plus the
denoising-error contrast of the thesis' code, is the score; the head-attribution box replaces each
head's map by A_h * df/dA_h before the pooling (eq. 5.7). The heatmaps
show where each caption word sends attention (pick a layer and a noise level). **Diffusion Classifier**
ranks by how well each caption helps denoise the image (eq. 5.9); *hierarchical* keeps the best C/b of C
captions after a 4-timestep warm-up (b = 2) and shrinks the beam by b after every further timestep (section
5.5), but drops a caption only once it is clearly worse than the leader (its per-timestep errors above the leader's
by 1.5 standard errors), so close calls look at more timesteps. **CLIP** compares global embeddings; **ComCLIP** adds subimages of the detected objects
(eq. 4.4-4.5). ComCLIP's objects come from the preset's open-vocabulary detector (OWL-ViT in the hub preset, one box
per subject or object phrase), else from ShapesWorld's colour detector, which finds none in a photo: ComCLIP then
scores as CLIP.
"""

FINDING = """\
**What the tiny pack measured** (`bench/results/matching.jsonl`: 200 held-out ShapesWorld groups, Winoground
text score, chance = 0.25; tiny pack v2, whose words were trained to point at things). **Discffusion** as the
thesis' code computes it (attention LSE + denoising-error term, noise levels 0.5 and 0.7) reaches **0.900**
text (two-object colour swaps 0.825, shape swaps 0.975, relations 0.775; n = 40 each), above CLIP (0.760) and
ComCLIP (0.745), which stay at 0.100 on relations. Its attention score alone (eq. 5.4) is 0.600, well above
chance, and best on colour swaps (0.950). Prompt learning (200 few-shot groups, 100 steps) raises it to 0.965.
The Diffusion Classifier with 32 timesteps per caption reaches 0.985 with 10.7x the UNet evaluations (64 per
decision against Discffusion's 6); given Discffusion's budget (3 timesteps) it reaches 0.830; its hierarchical
sampler 0.970 at 16.3 evaluations. Pack v1's words
pointed at nothing: there Discffusion scored 0.430 and its attention score alone 0.090, below chance.
Details and every reading: `docs/notes/discffusion.md`.
"""


@dataclass
class MatchSession:
    """One user's last scoring (image, captions, results, maps) and prompt-learned offsets."""

    report: MatchReport | None = None
    offsets: AttentionOffsets | None = None
    offsets_file: str | None = None


def example_items() -> dict[str, tuple[Path, list[str]]]:
    """Example label -> (image path, captions) from ``assets/examples/match/examples.json``."""
    index = ASSETS / "examples.json"
    if not index.is_file():
        return {}
    items = json.loads(index.read_text(encoding="utf-8"))["examples"]
    return {f"{item['kind']}: {item['captions'][0]}": (ASSETS / item["image"], item["captions"]) for item in items}


# The winner's bar and the others' (neutral: a pick is not good or bad until compared with the truth).
WINNER_COLOUR, OTHER_COLOUR, TRUE_OUTLINE = "#3b4b5c", "#b8c2cc", "#1a9641"


def layer_label(name: str, sample_size: int | None, down_blocks: int | None) -> str:
    """A cross-attention layer for people: its resolution and place, e.g. "16x16, down 1" (the raw name is
    ``down_blocks.0.attentions.0.transformer_blocks.0.attn2``)."""
    import re

    found = re.match(r"(down|up)_blocks\.(\d+)\.attentions\.(\d+)", name)
    if found:
        kind, block, attention = found[1], int(found[2]), int(found[3])
        level = block if kind == "down" else (down_blocks or 1) - 1 - block
        where = f"{kind} {block + 1}" + (f", part {attention + 1}" if attention else "")
    elif name.startswith("mid_block"):
        level, where = (down_blocks or 1) - 1, "middle"
    else:
        return name
    if sample_size and down_blocks:
        side = max(1, int(sample_size) // 2 ** max(0, level))
        return f"{side}x{side}, {where}"
    return where


def layer_choices(runner: MatchRunner, layers: list[str]) -> list[tuple[str, str]]:
    """(readable label, layer name) pairs for the heatmap layer dropdown."""
    try:
        config = runner.matchers.backbone.unet.config
        sample_size, down = int(config.sample_size), len(config.down_block_types)
    except (AttributeError, TypeError, ValueError):
        sample_size, down = None, None
    return [(layer_label(name, sample_size, down), name) for name in layers]


def truth_marks(report: MatchReport, truth: str | None) -> str:
    """Each method's pick marked right or wrong against the true caption (when it is known)."""
    truth = (truth or "").strip()
    known = truth in report.captions
    lines = []
    for method, pick in report.winners().items():
        mark = ("✅ right" if pick == truth else "❌ wrong") if known else "(truth unknown)"
        lines.append(f"- **{method}** picks *{pick}* {mark}")
    head = f"True caption: **{truth}**" if known else (
        "The true caption is not known for this picture (type it in *True caption* to mark the picks)."
        if not truth else f"The true caption *{truth}* is not among the captions, so nothing is marked.")
    return head + "\n" + "\n".join(lines)


def colour_scale(width: int = 320, height: int = 14) -> np.ndarray:
    """The heatmaps' colour ramp, left (no attention) to right (the map's peak)."""
    from pipelines.matching.overlay import colormap

    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    return colormap(ramp)


def load_example(label: str, examples: dict[str, tuple[Path, list[str]]]):
    """An example's picture, its captions and its true caption (the first)."""
    if label not in examples:
        raise InvalidInputError(f"Unknown example {label!r}.")
    path, captions = examples[label]
    from PIL import Image

    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB")), "\n".join(captions), captions[0]


def shapesworld_sample(seed) -> tuple[np.ndarray, str, str]:
    """A held-out two-object ShapesWorld scene, its caption followed by its minimal swaps, and the caption."""
    scene = sample_scene(int(seed), size=128, split="test")
    return scene.image, "\n".join([scene.caption, *swapped_captions(scene.caption)]), scene.caption


def generate(runner: MatchRunner, prompt: str, seed) -> tuple[str, str, str, str]:
    """An image from the text-to-image model for ``prompt`` (a PNG carrying its recipe), the captions (the
    prompt and its swaps) and the recipe for people. A relation caption's objects are guided to their sides."""
    report = runner.generate(ImageRequest(prompt, int(seed or 0)))
    path = scratch_path("match-", ".png")
    from pipelines.recipes import write_png

    write_png(report.image, path, report.recipe)
    notes = unknown_word_notes(runner, [prompt])
    return (str(path), "\n".join(report.captions), "".join(f"> {n}\n\n" for n in notes)
            + recipe_markdown(report.recipe, path), report.captions[0])


def unknown_word_notes(runner: MatchRunner, texts: list[str]) -> list[str]:
    """Words of ``texts`` the model does not know, named for people (the studio-wide vocabulary policy)."""
    tokenizer = runner.matchers.backbone.tokenizer
    return notes_for(check_text(text, tokenizer, what="The caption", closed=False) for text in texts)


def ranked_table(results: dict[str, MatchResult], truth: str | None = None) -> list[list]:
    rows = []
    for method, result in results.items():
        for rank, index in enumerate(result.ranking(), start=1):
            caption = result.captions[index]
            rows.append([method, rank, caption, "✔ true" if caption == truth else "",
                         round(float(result.scores[index]), 4), result.unet_evaluations, round(result.seconds, 3)])
    return rows


def bar_chart(results: dict[str, MatchResult], truth: str | None = None) -> go.Figure:
    """One horizontal bar chart per method; the method's pick is dark, the others light (neutral colours), and
    the true caption (when known) is outlined in green and labelled."""
    figure = make_subplots(rows=1, cols=max(1, len(results)), subplot_titles=list(results), shared_yaxes=True)
    for column, result in enumerate(results.values(), start=1):
        best = result.ranking()[0]
        colours = [WINNER_COLOUR if i == best else OTHER_COLOUR for i in range(len(result.captions))]
        outline = [TRUE_OUTLINE if c == truth else "rgba(0,0,0,0)" for c in result.captions]
        labels = [f"✔ {c} (true)" if c == truth else c for c in result.captions]
        figure.add_trace(go.Bar(x=result.scores, y=labels, orientation="h", marker_color=colours,
                                marker_line_color=outline, marker_line_width=3,
                                showlegend=False, hovertemplate="%{y}: %{x:.4f}<extra></extra>"),
                         row=1, col=column)
        low, high = float(result.scores.min()), float(result.scores.max())
        pad = max(1e-6, (high - low) * 0.25)
        figure.update_xaxes(range=[low - pad, high + pad], row=1, col=column)
    figure.update_yaxes(autorange="reversed")
    captions = len(next(iter(results.values())).captions)
    figure.update_layout(height=120 + 40 * captions, margin=dict(l=10, r=10, t=40, b=10))
    return figure


def heatmap_gallery(runner: MatchRunner, session: MatchSession, caption: str | None, layer: str | None,
                    level: str | None) -> list[tuple[np.ndarray, str]]:
    """One overlay per word of ``caption``: the word's attention mass at ``layer`` and ``level``."""
    if session.report is None or session.report.features is None:
        return []
    levels = [f"{lvl}" for lvl in runner.matchers.discffusion_config.noise_levels]
    maps = runner.heatmaps(session.report, caption, layer, levels.index(level) if level in levels else None,
                           size=HEATMAP_SIZE)
    return [(overlay(session.report.image, heat), f"{word} (peak {heat.max():.2f})") for word, heat in maps.items()]


def weighting(checked) -> str:
    """The head-attribution checkbox as Discffusion's head weighting: eq. 5.7 as written, or none."""
    return "attribution" if checked else "none"


def score(runner: MatchRunner, session: MatchSession | None, image, captions_text, methods, head_weighting,
          truth: str | None = None, progress=None):
    """Rank the captions with every ticked method; Discffusion also gives per-word heatmaps. With the true
    caption known, each method's pick is marked right or wrong. ``progress`` is called before each method (no bar
    for a run of a second or two; the Stop button's check)."""
    session = session or MatchSession()
    report = runner.run(MatchRequest(image, captions_text or "", list(methods or []), weighting(head_weighting),
                                     session.offsets), progress)
    session.report = report
    session = check_session_size(session, "your Match session") or MatchSession()
    captions = report.captions
    layers = [ALL_LAYERS, *layer_choices(runner, report.features.layers if report.features else [])]
    levels = [ALL_LEVELS, *(f"{lvl}" for lvl in runner.matchers.discffusion_config.noise_levels)]
    gallery = heatmap_gallery(runner, session, captions[0], None, None)
    status = f"Scored {len(captions)} captions in {report.seconds:.2f} s.\n\n" + truth_marks(report, truth)
    notes = unknown_word_notes(runner, captions)
    if notes:
        status += "\n\n" + "\n".join(f"> {note}" for note in notes)
    return (
        session, ranked_table(report.results, truth), bar_chart(report.results, truth),
        gr.update(choices=captions, value=captions[0]), gr.update(choices=layers, value=ALL_LAYERS),
        gr.update(choices=levels, value=ALL_LEVELS), gallery, status,
    )


def refresh_heatmaps(runner: MatchRunner, session: MatchSession | None, caption, layer, level):
    if session is None or session.report is None or session.report.features is None:
        raise InvalidInputError("Score with Discffusion first: the heatmaps come from its attention maps.")
    return heatmap_gallery(runner, session, caption, layer, level)


def train(runner: MatchRunner, session: MatchSession | None, shots, steps, held_out, head_weighting,
          progress=gr.Progress()):
    """Prompt learning (eq. 5.5-5.6) on few-shot ShapesWorld groups; text accuracy before/after on held-out ones."""
    session = session or MatchSession()
    report = runner.learn(LearnRequest(int(shots), int(steps), int(held_out), weighting(head_weighting)), progress)
    session.offsets = report.offsets
    path = scratch_path("match-offsets-", ".safetensors")
    report.offsets.save(path)
    session.offsets_file = str(path)
    before, after = report.before, report.after
    rows = "\n".join(f"| {k} | {before[k]:.2f} | {after[k]:.2f} |" for k in before)
    text = (f"Trained offsets on {len(report.offsets.layer_names)} layers with {int(shots)} few-shot groups, "
            f"{int(steps)} steps (final loss {np.mean(report.losses[-10:]):.3f}). Text accuracy on {int(held_out)} "
            f"held-out groups:\n\n| swap | before | after |\n|---|---|---|\n{rows}\n\nScoring now uses these offsets.")
    figure = go.Figure(go.Scatter(y=report.losses, mode="lines", name="triplet loss"))
    figure.update_layout(title="Triplet loss (eq. 5.6)", height=260, margin=dict(l=10, r=10, t=40, b=10))
    return session, text, figure, str(path)


def reset_offsets(session: MatchSession | None):
    session = session or MatchSession()
    session.offsets, session.offsets_file = None, None
    return session, "Offsets cleared: Discffusion is zero-shot again.", None


BATCH_INTRO = """\
Measure the methods on many pictures at once: on held-out ShapesWorld groups, or on your own set in Winoground's
format. Each group is two pictures and two captions; a method is right when each picture prefers its own caption.
"""

BATCH_HOW = """\
**Your own set**: upload one `.zip` holding `examples.jsonl` (or a `.csv`) and the pictures, or the `examples.jsonl`
/ `.csv` together with its pictures. Every row names two captions and two pictures:
`{"id": 1, "caption_0": "a red circle", "caption_1": "a blue circle", "image_0": "ex_1_0", "image_1": "ex_1_1"}`
(the CSV has the same columns); a picture is found by its file name with or without `.png`/`.jpg`, beside the table
or in an `images/` folder. At most 200 groups and 2000 files (512 MB unpacked); pictures from 8 to 4096 pixels a
side, read at 512 at most. With no upload, *groups* held-out ShapesWorld groups are generated (the same each time).

**Scores** (Winoground, Thrush et al. 2022), with s(caption, picture) a method's score: *text* - both pictures
rank their own caption first (chance 0.25); *image* - both captions rank their own picture first (chance 0.25);
*group* - both (chance 1/6). Prompt-learned offsets (trained or loaded above) apply to Discffusion. The downloads
hold every group's four scores and verdicts, and the recipe (methods, models, the upload's SHA-256).
"""
# Winoground's chance levels: text and image 1/4, group 1/6.
CHANCE = {"text": 0.25, "image": 0.25, "group": 1 / 6}


def accuracy_chart(report) -> go.Figure:
    """Text, image and group accuracy per method (grouped bars), chance marked."""
    figure = go.Figure()
    for label, summary in report.summaries.items():
        values = [summary.overall[k] for k in CHANCE]
        figure.add_trace(go.Bar(x=list(CHANCE), y=values, name=label, text=[f"{v:.2f}" for v in values],
                                textposition="outside", hovertemplate=f"{label}<br>%{{x}}: %{{y:.3f}}<extra></extra>"))
    figure.add_trace(go.Scatter(x=list(CHANCE), y=list(CHANCE.values()), mode="markers", name="chance",
                                marker=dict(symbol="line-ew-open", size=40, color="#555"),
                                hovertemplate="chance %{x}: %{y:.3f}<extra></extra>"))
    figure.update_layout(barmode="group", yaxis=dict(range=[0, 1.1], title="accuracy"), height=320,
                         title=f"Winoground accuracy on {len(report.groups)} groups",
                         margin=dict(l=10, r=10, t=40, b=10))
    return figure


def upload_paths(upload) -> list[str]:
    """The files of the batch upload component (one path, several, or none)."""
    return [upload] if isinstance(upload, str) else [str(f) for f in upload or []]


def batch_eval(runner: MatchRunner, session: MatchSession | None, groups, upload, methods, head_weighting,
               progress=gr.Progress()):
    """Winoground text/image/group accuracy of each ticked method, on held-out ShapesWorld groups or on the
    uploaded set; per-group verdicts and the results as CSV and JSON (with the recipe)."""
    session = session or MatchSession()
    report = runner.evaluate(BatchRequest(int(groups or 20), upload_paths(upload) or None, list(methods or []),
                                          weighting(head_weighting), session.offsets), progress)
    rows = report.group_rows()
    tick = {True: "✔", False: "✘"}
    shown = [[r["id"], r["kind"], r["caption_0"], r["caption_1"], r["method"], tick[r["text"]], tick[r["image"]],
              tick[r["group"]], *(round(r[k], 4) for k in ("c0_i0", "c1_i0", "c0_i1", "c1_i1"))] for r in rows]
    folder = scratch_path("match-batch-", ".csv").parent
    summary = {label: {"groups": s.groups, **s.overall, "per_swap": s.per_swap} for label, s in report.summaries.items()}
    downloads = [str(write_table(rows, folder / "results.csv", report.recipe)),
                 str(write_table(rows, folder / "results.json", report.recipe, accuracy=summary))]
    upload = report.recipe.request["upload"]
    source = f"your upload ({', '.join(upload)})" if upload else "held-out ShapesWorld groups"
    command = report.command(Path(session.offsets_file or "offsets.safetensors").name)
    status = (f"Evaluated {len(report.groups)} groups from {source} in {report.seconds:.1f} s.\n\n"
              + "\n".join(f"- **{label}**: text {s.overall['text']:.2f}, image {s.overall['image']:.2f}, "
                           f"group {s.overall['group']:.2f}" for label, s in report.summaries.items())
              + f"\n\nRepeat it from a terminal:\n```bash\n{command}\n```")
    return report.table(), accuracy_chart(report), shown, downloads, status


def check_upload(upload) -> str:
    """An uploaded set read at once (its rows and pictures checked), so a mistake is answered before any run."""
    files = upload_paths(upload)
    if not files:
        return ""
    groups = read_upload(files)
    kinds = sorted({g.kind for g in groups if g.kind})
    return (f"Read {len(groups)} groups from {', '.join(Path(f).name for f in files[:3])}"
            + (f" ({len(files)} files)" if len(files) > 3 else "")
            + (f", kinds: {', '.join(kinds)}" if kinds else "") + ". Press **Run benchmark** to evaluate them.")


def load_offsets(runner: MatchRunner, session: MatchSession | None, path):
    """Prompt-learned offsets saved earlier (the few-shot panel's download) for this person's Discffusion."""
    if not path:
        raise InvalidInputError("Choose a .safetensors file of offsets saved by this panel.")
    session = session or MatchSession()
    session.offsets, session.offsets_file = runner.load_offsets(path), str(path)
    return (session, f"Loaded offsets for {len(session.offsets.layer_names)} layers from {Path(path).name}: "
                     "Discffusion now scores with them.", str(path))


def create_tab(context: StudioContext) -> dict:
    """Build the Match tab inside the current ``gr.Blocks`` (models load on first use); returns the components
    other tabs send to or read from."""
    runner = MatchRunner(context.manager)
    examples = example_items()

    def handler(function, *bound, **bound_keywords):
        """``function`` with leading ``bound`` arguments, errors shown to the user."""
        wrapped = functools.partial(function, *bound, **bound_keywords)
        wrapped.__name__ = function.__name__
        return shows_errors(wrapped)

    with gr.Tab(TITLE, id="match"):
        gr.Markdown(INTRO)
        with gr.Accordion("How it works", open=False, elem_id="match-how"):
            gr.Markdown(HOW_IT_WORKS + "\n\n" + FINDING)
        state = session_state()
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                image = components.Image(label="Image", type="numpy", image_mode="RGB", height=260, elem_id="match-image",
                                         min_side=MIN_SIDE)
                with gr.Row():
                    example = gr.Dropdown(list(examples), value=next(iter(examples), None), label="Example",
                                          scale=3)
                    load = gr.Button("Load example", scale=1)
                with gr.Row():
                    sample_seed = components.Number(value=0, precision=0, label="ShapesWorld seed", minimum=0, maximum=MAX_SEED,
                                                    scale=1)
                    sample = gr.Button("ShapesWorld sample", scale=1)
                with gr.Row():
                    prompt = gr.Textbox(label="Generate from prompt", placeholder="a red circle left of a blue square",
                                        info="relations (left of, right of, above, below) are laid out by "
                                             "cross-attention box guidance", scale=3)
                    make = gr.Button("Generate", scale=1)
                recipe = gr.Markdown("", elem_id="match-recipe")
                with gr.Row():
                    to_flex = gr.Button("Send to FlexEControl", size="sm", elem_id="match-to-flexecontrol")
                    to_mojito = gr.Button("Send to Mojito", size="sm", elem_id="match-to-mojito")
            with gr.Column(scale=1, min_width=300):
                captions = gr.Textbox(label="Captions (one per line, at most 32)", lines=6, elem_id="match-captions")
                truth = gr.Textbox(label="True caption (known for examples, ShapesWorld samples and generated "
                                         "pictures; type it for your own)", max_lines=1, elem_id="match-truth")
                methods = gr.CheckboxGroup([(METHODS[m], m) for m in UI_METHODS], value=DEFAULT_METHODS,
                                           label="Methods")
                head_weighting = gr.Checkbox(
                    False, label="Head attribution maps (eq. 5.7: A_h * df/dA_h, pooled by eq. 5.4) for Discffusion")
                with gr.Row():
                    go_button = gr.Button("Score", variant="primary", scale=3)
                    stop_button = gr.Button("Stop", variant="stop", scale=1, elem_id="match-stop")
                status = gr.Markdown("", elem_id="match-status")
        if examples:
            gr.Examples([[str(path), "\n".join(texts), texts[0]] for path, texts in examples.values()],
                        inputs=[image, captions, truth], label="Examples (click one, then Score)",
                        elem_id="match-examples")
        plot = gr.Plot(label="Scores per method", elem_id="match-plot")
        table = gr.Dataframe(headers=["method", "rank", "caption", "truth", "score", "UNet evals", "seconds"],
                             label="Ranking", interactive=False, elem_id="match-table")
        gr.Markdown("### Discffusion heatmaps: where each word of a caption sends attention")
        with gr.Row():
            heat_caption = gr.Dropdown([], label="Caption")
            heat_layer = gr.Dropdown([ALL_LAYERS], value=ALL_LAYERS, label="Layer")
            heat_level = gr.Dropdown([ALL_LEVELS], value=ALL_LEVELS, label="Noise level")
        gallery = gr.Gallery(label="Per-word attention (stretched to each map's peak)", columns=8, height="auto",
                             object_fit="contain", elem_id="match-heatmaps")
        with gr.Row(equal_height=True):
            gr.Markdown("**Colour scale:** dark blue = no attention, yellow = the word's strongest attention.")
            gr.Image(colour_scale(), show_label=False, interactive=False, height=24, container=False,
                     elem_id="match-colour-scale")
        with gr.Accordion("Few-shot prompt learning (eq. 5.5-5.6)", open=False):
            gr.Markdown("Trains key/value offsets on ShapesWorld groups (seed 1000) with the triplet loss and "
                        "measures text accuracy on disjoint held-out groups (seed 2000) before and after.")
            with gr.Row():
                shots = components.Number(value=40, precision=0, label="few-shot groups", minimum=1, maximum=200)
                steps = components.Number(value=60, precision=0, label="training steps", minimum=1, maximum=2000)
                held_out = components.Number(value=20, precision=0, label="held-out groups", minimum=5, maximum=200)
            with gr.Row():
                train_button = gr.Button("Train offsets", variant="primary")
                train_stop = gr.Button("Stop", variant="stop")
                clear_button = gr.Button("Clear offsets")
            offsets_upload = components.File(label="Load offsets saved earlier (.safetensors)",
                                             file_types=[".safetensors"], elem_id="match-offsets-upload")
            train_report = gr.Markdown("", elem_id="match-train-report")
            loss_plot = gr.Plot(label="Training loss")
            offsets_file = gr.File(label="Offsets (.safetensors)", interactive=False)
        with gr.Accordion("Batch evaluation: ShapesWorld groups or your own set", open=False,
                          elem_id="match-batch"):
            gr.Markdown(BATCH_INTRO)
            with gr.Accordion("How it works", open=False):
                gr.Markdown(BATCH_HOW)
            with gr.Row():
                eval_upload = components.File(label="Your set (optional): a .zip, or examples.jsonl / .csv with its "
                                                    "pictures", file_count="multiple", file_types=list(UPLOAD_SUFFIXES),
                                              elem_id="match-batch-upload")
                with gr.Column():
                    eval_groups = components.Number(value=20, precision=0, label="ShapesWorld groups (5-200)",
                                                    minimum=5, maximum=200)
                    eval_methods = gr.CheckboxGroup([(METHODS[m], m) for m in UI_METHODS], value=DEFAULT_METHODS,
                                                    label="Methods")
            with gr.Row():
                eval_button = gr.Button("Run benchmark")
                eval_stop = gr.Button("Stop", variant="stop")
            eval_status = gr.Markdown("", elem_id="match-batch-status")
            eval_plot = gr.Plot(label="Accuracy per method", elem_id="match-batch-plot")
            eval_table = gr.Dataframe(
                headers=["method", "text", "image", "group", "colour (text)", "shape (text)", "relation (text)",
                         "UNet evals / decision", "s / decision"],
                label="Winoground accuracy", interactive=False, elem_id="match-eval-table")
            eval_groups_table = gr.Dataframe(
                headers=["group", "kind", "caption 0", "caption 1", "method", "text", "image", "group",
                         "s(c0, i0)", "s(c1, i0)", "s(c0, i1)", "s(c1, i1)"],
                label="Per group (✔ right, ✘ wrong)", interactive=False, max_height=360,
                elem_id="match-batch-groups")
            eval_files = gr.File(label="Results (CSV and JSON, with the recipe)", file_count="multiple",
                                 interactive=False, elem_id="match-batch-files")

        # An upload is read at once (a corrupt or tiny picture is answered when given, not at Score).
        # Its true caption is unknown until typed.
        image.upload(lambda picture: "", inputs=image, outputs=truth, api_name=False, show_progress="hidden", **CHEAP)
        load.click(handler(load_example, examples=examples), inputs=example, outputs=[image, captions, truth],
                   api_name="match_load_example", **CHEAP)
        sample.click(handler(shapesworld_sample), inputs=sample_seed, outputs=[image, captions, truth], api_name=False,
                     **CHEAP)
        make.click(handler(generate, runner), inputs=[prompt, sample_seed], outputs=[image, captions, recipe, truth],
                   api_name="match_generate", **HEAVY)
        score_outputs = [state, table, plot, heat_caption, heat_layer, heat_level, gallery, status]
        scoring = go_button.click(stoppable(handler(score, runner), "match-score"),
                                  inputs=[state, image, captions, methods, head_weighting, truth],
                                  outputs=score_outputs,
                                  api_name="match_score", **HEAVY)
        wire_stop(stop_button, "match-score", [scoring])
        for control in (heat_caption, heat_layer, heat_level):
            control.input(handler(refresh_heatmaps, runner),
                          inputs=[state, heat_caption, heat_layer, heat_level], outputs=gallery, api_name=False,
                          show_progress="hidden", **CHEAP)
        # The same as a named endpoint (what the load bench calls as its cheap event).
        heat_button = gr.Button("Show heatmaps", visible=False)
        heat_button.click(handler(refresh_heatmaps, runner), inputs=[state, heat_caption, heat_layer, heat_level],
                          outputs=gallery, api_name="match_heatmaps", **CHEAP)
        training = train_button.click(stoppable(handler(train, runner), "match-train"),
                                      inputs=[state, shots, steps, held_out, head_weighting],
                                      outputs=[state, train_report, loss_plot, offsets_file], api_name=False, **HEAVY)
        wire_stop(train_stop, "match-train", [training])
        offsets_upload.upload(handler(load_offsets, runner), inputs=[state, offsets_upload],
                              outputs=[state, train_report, offsets_file], api_name=False)
        clear_button.click(handler(reset_offsets), inputs=state, outputs=[state, train_report, offsets_file],
                           api_name=False)
        eval_upload.upload(handler(check_upload), inputs=eval_upload, outputs=eval_status, api_name=False,
                           concurrency_id="uploads", concurrency_limit=2)
        evaluating = eval_button.click(stoppable(handler(batch_eval, runner), "match-batch"),
                                       inputs=[state, eval_groups, eval_upload, eval_methods, head_weighting],
                                       outputs=[eval_table, eval_plot, eval_groups_table, eval_files, eval_status],
                                       api_name="match_batch", **HEAVY)
        wire_stop(eval_stop, "match-batch", [evaluating])
    return {"image": image, "captions": captions, "truth": truth, "to_flexecontrol": to_flex, "to_mojito": to_mojito}
