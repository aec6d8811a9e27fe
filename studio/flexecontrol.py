"""FlexEControl tab: draw or upload up to four condition maps, type a prompt, get an image that obeys them all.

Each layer has a type, a black canvas (or an upload run through the
extractor), a weight and a start/end span. The extracted maps are previewed;
the output can show the conditions overlaid, and under it stand the
controllability numbers (SSIM between condition edges and output edges, mIoU
between a segmentation condition and the detector's segmentation of the
output; thesis table 9.2). Results live in ``gr.State``; only the models are
shared.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import cv2
import gradio as gr
import numpy as np

from pipelines.errors import InvalidInputError, ModelNotFoundError
from pipelines.flexecontrol import MAX_CONDITIONS, WEIGHT_RANGE, Condition
from pipelines.flexecontrol.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS
from pipelines.flexecontrol.runner import ConditionInput, FlexEControlRequest, FlexEControlRunner
from pipelines.models.presets import REPO_ROOT, method_weights
from pipelines.recipes import write_png
from pipelines.shapesworld.conditions import CONDITION_TYPES, SEGMENTATION_PALETTE
from pipelines.utils import to_rgb_array

from . import components
from .context import StudioContext
from .errors import shows_errors
from .outputs import recipe_markdown, scratch_path
from .sessions import CHEAP, HEAVY, session_state, stoppable, wire_stop

TITLE = "FlexEControl"
CANVAS = 256
VIEW = 256
NONE = "none"
LAYER_TYPES = (NONE, *CONDITION_TYPES)
# Brush colours: white lines (edges, sketch), greys (depth: near = bright), the segmentation palette.
BRUSH_COLOURS = ["#ffffff", "#c0c0c0", "#808080", "#404040",
                 *(f"#{r:02x}{g:02x}{b:02x}" for name, (r, g, b) in SEGMENTATION_PALETTE.items() if name != "background")]
# Uploads smaller than this on a side are refused (a 1x1 picture has nothing to extract).
MIN_UPLOAD_SIDE = 8
OVERLAY_COLOUR = np.array([255, 40, 40], np.float32)

INTRO = """\
## FlexEControl: draw where things go
Draw outlines of shapes (or paint regions) on a black canvas, say what the picture shows, and press **Generate**: the
objects appear where you drew them. Press **Load the example** for a circle drawn on the left, a square on the right
and "a red circle left of a blue square", or click a ready example (one per kind of map). Tick **Overlay** after generating to see each drawn object checked: a green
box where the picture has it, a red box where it does not.
"""

HOW_IT_WORKS = """\
Each condition layer is a map of one type: **canny** or **sketch** (white lines on black), **segmentation** (cyan,
magenta and white paint circle, square and triangle regions), **depth** (grey, bright is near). Draw it, or upload a
picture to extract it from. Each layer has a **weight** and the span of denoising steps (**start**/**end**) where it
acts. All layers run through one copy of the image model's encoder whose Kronecker x low-rank updates are shared across
condition types (thesis eq. 9.2); their outputs are summed into the frozen model. Two choices of this studio on top of
the thesis' method: under classifier-free guidance the layers steer only the text half (so guidance amplifies them, as
ControlNet's guess mode does), and **tie each object word to its drawing** adds a bias to the image model's
cross-attention so that "red circle" is read where the circle was drawn (DenseDiffusion-style regional attention; the
drawn shapes are read from the maps, nothing else).

An uploaded picture's **segmentation** comes from the preset's semantic segmenter when it has one (the hub preset:
SegFormer-B0 on ADE20K's 150 classes, each class drawn in its own fixed colour), else from ShapesWorld's colour
detector (the tiny pack: circles, squares and triangles in flat colours; in a photo it finds little or nothing, so
paint the regions instead). Canny, sketch and depth (the preset's depth model) work on any picture.
FlexEControl weights trained on ShapesWorld know only its cyan, magenta and white segments; for the segmenter's
colours, train with maps it made (`NAME.segmentation.png` in a folder dataset).
"""


def weights_notice(preset: str) -> str:
    """What the tab cannot do with ``preset``: no FlexEControl weights for its base model (with the command that
    trains them), or "" when they are there."""
    try:
        method_weights(preset, "flexecontrol")
    except ModelNotFoundError as error:
        return f"**Generation is not available with preset {preset!r}.** {error}"
    return ""


@dataclass
class LayerInput:
    """What one condition layer's widgets hold."""

    type: str
    source: str  # "draw" or "upload"
    drawing: dict | np.ndarray | None
    upload: np.ndarray | None
    weight: float
    start: float
    end: float


def _black_on_transparent(image) -> np.ndarray:
    """A drawing's pixels with transparent ones black (to_rgb_array composites alpha on white)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 4:
        return (array[..., :3].astype(np.float32) * (array[..., 3:] / 255.0)).astype(np.uint8)
    return to_rgb_array(array)


def condition_inputs(layers: list[LayerInput]) -> list[ConditionInput]:
    """The runner's conditions from the layers' widgets (layers of type 'none' are skipped)."""
    inputs = []
    for layer in layers:
        if layer.type == NONE:
            continue
        if layer.source == "upload":
            inputs.append(ConditionInput(layer.type, layer.upload, "upload", layer.weight, layer.start, layer.end))
        else:
            drawing = layer.drawing.get("composite") if isinstance(layer.drawing, dict) else layer.drawing
            image = None if drawing is None else _black_on_transparent(drawing)
            inputs.append(ConditionInput(layer.type, image, "draw", layer.weight, layer.start, layer.end))
    return inputs


def overlay(image: np.ndarray, conditions: list[Condition]) -> np.ndarray:
    """The output with segments blended in and condition edges drawn in red on top."""
    out = image.astype(np.float32)
    for condition in sorted(conditions, key=lambda c: c.type != "segmentation"):
        if condition.type == "segmentation":
            painted = condition.image.any(axis=-1, keepdims=True)
            out = np.where(painted, 0.55 * out + 0.45 * condition.image, out)
        elif condition.type in ("canny", "sketch"):
            out[condition.image > 0] = OVERLAY_COLOUR
    return out.clip(0, 255).astype(np.uint8)


BENCH_RESULTS = REPO_ROOT / "bench" / "results" / "flexecontrol.jsonl"
# The bench's controllability measures, as the tab names them.
METRIC_NAMES = {"ssim_canny": "SSIM of edges", "miou_segmentation": "segmentation mIoU",
                "miou_condition": "segmentation mIoU against the drawing"}


@functools.lru_cache(maxsize=1)
def bench_reference() -> dict[str, dict[str, float]]:
    """What the bench measured for hand-drawn maps on held-out scenes (``bench/results/flexecontrol.jsonl``):
    per condition type, the no-condition floor, FlexEControl, and for segmentation the detector's ceiling. The
    tab scores a segmentation drawing by mIoU against the drawing itself, so the bench's mIoU against the map given
    (``miou_condition``) is the one to compare with, where the file has it."""
    if not BENCH_RESULTS.is_file():
        return {}
    rows = [json.loads(line) for line in BENCH_RESULTS.read_text().splitlines() if line.strip()]
    scores = {(r["model"], r["setting"]): r["value"] for r in rows
              if r.get("name") == "controllability" and r.get("source") == "drawn" and "placed" in r.get("value", {})}
    ceiling = next((r["value"] for r in rows if r.get("name") == "detector_ceiling"), None)
    scenes = next((r["scenes"] for r in rows if r.get("name") == "detector_ceiling"), None)
    reference = {}
    for kind, setting, metric in (("canny", "single_canny", "ssim_canny"), ("sketch", "single_canny", "ssim_canny"),
                                  ("segmentation", "single_segmentation", "miou_segmentation")):
        flex, none = scores.get(("flexecontrol", setting)), scores.get(("no_condition", setting))
        if not (flex and none):
            continue
        if metric == "miou_segmentation" and flex.get("miou_condition") is not None:
            metric = "miou_condition"
        reference[kind] = {"floor": none[metric], "model": flex[metric], "placed": flex["placed"],
                           "placed_floor": none["placed"], "right": flex["right"], "scenes": scenes,
                           "metric": METRIC_NAMES[metric], "ceiling": ceiling if kind == "segmentation" else None}
    return reference


def numbers_markdown(rows: list[dict], seconds: float) -> str:
    """The controllability table for people: objects where drawn, the measure, and what it means (the bench's
    no-condition floor, its FlexEControl score and, for segmentation, the detector's ceiling)."""
    lines = [f"Generated in {seconds:.2f} s."]
    if not rows:
        return "\n".join(lines + ["No condition, so nothing to check the image against."])
    reference = bench_reference()
    lines += ["", "| condition | type | objects where you drew them | measure | value | what is good (bench) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        objects = r["objects"]
        found = sum(f is not None for f in r["found"])
        shapes = ", ".join(f"{o.shape or 'object'} {'yes' if f is not None else 'no'}" for o, f in zip(objects, r["found"]))
        placed = f"{found} of {len(objects)} ({shapes})" if objects else "-"
        ref = reference.get(r["type"])
        good = "-"
        if ref and "metric" in r:
            good = (f"no condition {ref['floor']:.2f}, FlexEControl {ref['model']:.2f}"
                    + (f", perfect image {ref['ceiling']:.2f}" if ref["ceiling"] else "")
                    + f"; objects placed {ref['placed']:.0%} vs {ref['placed_floor']:.0%} with no condition"
                    + f" ({ref['scenes']} held-out scenes)")
        value = f"{r['value']:.3f}" if "value" in r else "-"
        lines.append(f"| {r['condition']} | {r['type']} | {placed} | {r.get('metric', '-')} | {value} | {good} |")
    return "\n".join(lines)


EXAMPLE_PROMPT = "a red circle left of a blue square"


def example_canvas() -> dict:
    """The example drawing: a circle outlined on the left and a square on the right, by hand (:mod:`strokes`)."""
    from pipelines.flexecontrol.strokes import draw_objects
    from pipelines.shapesworld.scene import Placement, render_scene

    scene = render_scene([Placement("circle", "red", (0.28, 0.5), 0.3), Placement("square", "blue", (0.72, 0.5), 0.26)])
    drawing = draw_objects(scene.objects, "canny", np.random.default_rng(5), scene.size)
    return {"background": drawing, "layers": [], "composite": drawing}


EXAMPLES_DIR = REPO_ROOT / "assets" / "examples" / "flexecontrol"
# The ready examples: (held-out ShapesWorld scene seed, condition type). Each is the scene's objects drawn by hand
# from its truth (:func:`example_drawing`), shipped as ``<type>_<seed>.png``, with the scene's caption.
EXAMPLE_SCENES = ((2, "canny"), (5, "sketch"), (11, "segmentation"), (6, "depth"))


def example_drawing(seed: int, kind: str) -> tuple[np.ndarray, str]:
    """A held-out ShapesWorld scene's objects drawn as a ``kind`` map on the canvas, and the scene's caption (how
    the shipped example drawings were made)."""
    from pipelines.flexecontrol.strokes import draw_objects
    from pipelines.shapesworld import sample_scene

    scene = sample_scene(seed, split="test")
    return draw_objects(scene.objects, kind, np.random.default_rng(seed), scene.size), scene.caption


def example_rows() -> list[list[str]]:
    """``gr.Examples`` rows [prompt, condition type, source, drawing] for the shipped example drawings."""
    from pipelines.shapesworld import sample_scene

    return [[sample_scene(seed, split="test").caption, kind, "draw", str(EXAMPLES_DIR / f"{kind}_{seed}.png")]
            for seed, kind in EXAMPLE_SCENES if (EXAMPLES_DIR / f"{kind}_{seed}.png").is_file()]


def measured_markdown() -> str:
    """What the bench measured, from ``bench/results/flexecontrol.jsonl`` (nothing when it has not run)."""
    reference = bench_reference()
    if not reference:
        return ""
    lines = ["", "**Measured** (`bench/results/flexecontrol.jsonl`, hand-drawn maps of held-out scenes, one image each):"]
    for kind in ("canny", "segmentation"):
        ref = reference.get(kind)
        if ref:
            lines.append(f"- one {kind} map: objects where drawn {ref['placed']:.0%} (no condition {ref['placed_floor']:.0%}),"
                         f" with the right shape and colour {ref['right']:.0%}; {ref['metric']} {ref['model']:.2f} vs "
                         f"{ref['floor']:.2f} with no condition" + (f" and {ref['ceiling']:.2f} for a perfect image"
                                                                     if ref["ceiling"] else "")
                         + f" ({ref['scenes']} scenes).")
    return "\n".join(lines)


def placement_boxes(view: np.ndarray, rows: list[dict], scale: float) -> np.ndarray:
    """``view`` with each drawn object's box: green where the output has it, red where it does not."""
    out = view.copy()
    for r in rows:
        for obj, found in zip(r["objects"], r["found"]):
            x0, y0, x1, y1 = (int(round(v * scale)) for v in obj.box)
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (40, 200, 40) if found is not None else (230, 40, 40), 2)
    return out


def _view(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (VIEW, VIEW), interpolation=cv2.INTER_NEAREST)


def shown_image(image: np.ndarray, conditions: list[Condition], rows: list[dict], overlay_on: bool) -> np.ndarray:
    """The output at the view size; with the overlay on, the conditions drawn in and each drawn object's box
    (green: the output has it there; red: it does not)."""
    if not overlay_on:
        return _view(image)
    return placement_boxes(_view(overlay(image, conditions)), rows, VIEW / image.shape[1])


def previews(conditions: list[Condition]) -> list[tuple[np.ndarray, str]]:
    return [(_view(to_rgb_array(c.image)), f"{n}: {c.type} (weight {c.weight:g}, steps {c.start:g}-{c.end:g})")
            for n, c in enumerate(conditions, start=1)]


def generate_image(runner: FlexEControlRunner, prompt: str, layers: list[LayerInput], seed, steps, guidance, bind,
                   progress=None):
    """Generate (``progress(fraction, desc=...)`` after every step); the image is written as a PNG carrying its
    recipe. Returns (report, PNG path)."""
    on_step = (lambda step, total: progress((step + 1) / total, desc="generating")) if progress is not None else None
    report = runner.run(FlexEControlRequest(prompt, condition_inputs(layers), int(seed or 0), int(steps),
                                            float(guidance), bool(bind)), on_step=on_step)
    path = write_png(report.image, scratch_path("flexecontrol-", ".png"), report.recipe)
    return report, path


def api_generate(runner: FlexEControlRunner, prompt: str, images: list | None, conditions: list | None, seed, steps,
                 guidance, bind) -> tuple[str, dict]:
    """The API's generate: conditions as images (file paths) plus one entry each saying its ``type`` and
    optionally ``source`` ("upload": extract the map, the default; "draw": white strokes on black; "map"),
    ``weight``, ``start``, ``end``. Returns the PNG (carrying its recipe) and the numbers as plain JSON."""
    from PIL import Image

    images, conditions = list(images or []), list(conditions or [])
    if len(images) != len(conditions):
        raise InvalidInputError(f"{len(images)} condition images for {len(conditions)} condition entries; give "
                                "one entry (type, weight...) per image.")
    inputs = []
    for path, entry in zip(images, conditions):
        if not isinstance(entry, dict) or "type" not in entry:
            raise InvalidInputError(f"A condition entry is an object with a 'type', got {entry!r}.")
        try:
            with Image.open(path) as opened:
                array = np.asarray(opened.convert("L" if entry.get("source") == "map" and opened.mode == "L" else "RGB"))
        except (OSError, ValueError, Image.DecompressionBombError):
            raise InvalidInputError(f"Condition image {len(inputs) + 1} is not an image this studio can read; give a "
                                    "PNG, JPEG, WebP, BMP or GIF picture.") from None
        if min(array.shape[:2]) < MIN_UPLOAD_SIDE:
            raise InvalidInputError(f"Condition image {len(inputs) + 1} is {array.shape[1]}x{array.shape[0]} pixels; "
                                    f"give one at least {MIN_UPLOAD_SIDE} pixels on each side.")
        try:
            weight, start, end = (float(entry.get(k, d)) for k, d in (("weight", 1.0), ("start", 0.0), ("end", 1.0)))
        except (TypeError, ValueError):
            raise InvalidInputError(f"Condition {len(inputs) + 1}: weight, start and end must be numbers.") from None
        inputs.append(ConditionInput(entry["type"], array, entry.get("source", "upload"), weight, start, end))
    report = runner.run(FlexEControlRequest(prompt, inputs, int(seed or 0), int(steps), float(guidance), bool(bind)))
    path = write_png(report.image, scratch_path("flexecontrol-", ".png"), report.recipe)
    rows = [{"condition": r["condition"], "type": r["type"], "objects": len(r["objects"]),
             "found_where_drawn": sum(f is not None for f in r["found"]), "metric": r.get("metric"),
             "value": None if "value" not in r else round(float(r["value"]), 4)} for r in report.rows]
    return str(path), {"conditions": rows, "notes": report.notes, "seconds": round(report.seconds, 3),
                       "recipe": report.recipe.request | {"conditions": len(report.conditions)},
                       "command": report.recipe.command_line(path.name)}


def create_tab(context: StudioContext) -> dict:
    """Build the FlexEControl tab inside the current ``gr.Blocks``; returns the components other tabs send to
    or read from."""
    runner = FlexEControlRunner(context.manager)
    black = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    with gr.Tab(TITLE, id="flexecontrol"):
        gr.Markdown(INTRO)
        gr.Markdown(weights_notice(context.preset), elem_id="flexecontrol-weights")
        with gr.Accordion("How it works", open=False):
            gr.Markdown(HOW_IT_WORKS + measured_markdown())
        result = session_state()  # (image, conditions, rows) of this user's last generation
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox("a red circle left of a blue square", label="Prompt", elem_id="flexecontrol-prompt")
                widgets = []
                with gr.Tabs():
                    for k in range(1, MAX_CONDITIONS + 1):
                        with gr.Tab(f"Condition {k}"):
                            with gr.Row():
                                kind = gr.Dropdown(list(LAYER_TYPES), value="canny" if k == 1 else NONE, label="Type",
                                                   elem_id=f"flexecontrol-type-{k}")
                                source = gr.Radio(["draw", "upload"], value="draw", label="Source")
                            with gr.Row():
                                drawing = components.ImageEditor(
                                    value={"background": black, "layers": [], "composite": black},
                                    type="numpy", image_mode="RGBA", sources=(), transforms=(), layers=False,
                                    canvas_size=(CANVAS, CANVAS), fixed_canvas=True, height=320,
                                    brush=gr.Brush(default_size=8, colors=BRUSH_COLOURS, default_color="#ffffff",
                                                   color_mode="defaults"),
                                    label="Canvas (draw on black)", elem_id=f"flexecontrol-canvas-{k}",
                                )
                                upload = components.Image(type="numpy", label=f"Upload for condition {k} (run through the extractor)",
                                                          min_side=MIN_UPLOAD_SIDE,
                                                  sources=("upload", "clipboard"), height=320)
                            with gr.Row():
                                weight = components.Slider(*WEIGHT_RANGE, value=1.0, step=0.05, label=f"Weight of condition {k}")
                                start = components.Slider(0, 1, value=0.0, step=0.05, label=f"Start of condition {k} (fraction of steps)")
                                end = components.Slider(0, 1, value=1.0, step=0.05, label=f"End of condition {k} (fraction of steps)")
                            # An upload is read at once: a corrupt or tiny picture is answered when given.
                            upload.upload(lambda picture: None, inputs=upload, outputs=None, api_name=False,
                                          show_progress="hidden", **CHEAP)
                            widgets.append((kind, source, drawing, upload, weight, start, end))
                with gr.Row():
                    seed = components.Number(0, precision=0, label="Seed", minimum=0, maximum=2**31 - 1, elem_id="flexecontrol-seed")
                    steps = components.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Steps")
                    guidance = components.Slider(1.0, 10.0, value=DEFAULT_GUIDANCE, step=0.5, label="Guidance")
                bind = gr.Checkbox(True, label="Tie each object word to its drawing (\"red circle\" is painted where "
                                         "you drew the circle)", elem_id="flexecontrol-bind")
                with gr.Row():
                    example = gr.Button("Load the example")
                    extract = gr.Button("Extract maps")
                    generate = gr.Button("Generate", variant="primary")
                    stop = gr.Button("Stop", variant="stop", elem_id="flexecontrol-stop")
                gr.Examples(example_rows(), inputs=[prompt, *widgets[0][:3]], elem_id="flexecontrol-examples",
                            label="Ready examples: a held-out scene drawn as each kind of map (click one, then "
                                  "Generate)")
            with gr.Column(scale=2):
                maps = gr.Gallery(label="Extracted condition maps", columns=4, height="auto", object_fit="contain",
                                  preview=False, elem_id="flexecontrol-previews")
                output = gr.Image(label="Output", type="numpy", interactive=False, height=VIEW,
                                  elem_id="flexecontrol-output")
                show_overlay = gr.Checkbox(False, label="Overlay the conditions and check each drawn object "
                                                  "(green box: it is there; red: it is not)")
                numbers = gr.Markdown(elem_id="flexecontrol-numbers")
                notes = gr.Markdown(elem_id="flexecontrol-notes")
                download = gr.File(label="Image as generated (PNG carrying its recipe)", interactive=False,
                                   elem_id="flexecontrol-file")
                recipe = gr.Markdown(elem_id="flexecontrol-recipe")
                with gr.Row():
                    to_match = gr.Button("Send to Match", size="sm", elem_id="flexecontrol-to-match")
                    to_mojito = gr.Button("Send to Mojito", size="sm", elem_id="flexecontrol-to-mojito")

        layer_components = {c for layer in widgets for c in layer}

        def layers_from(values: dict) -> list[LayerInput]:
            """The layers' widgets by name (inputs given as a set arrive as a component -> value dict)."""
            return [LayerInput(*(values[c] for c in layer)) for layer in widgets]

        @shows_errors
        def on_extract(values):
            conditions, found = runner.conditions(condition_inputs(layers_from(values)))
            return previews(conditions), "\n".join(f"- {n}" for n in found)

        @shows_errors
        def on_generate(values, progress=gr.Progress()):
            report, path = generate_image(runner, values[prompt], layers_from(values), values[seed], values[steps],
                                          values[guidance], values[bind], progress)
            for note in report.notes:
                gr.Warning(note)
            return (shown_image(report.image, report.conditions, report.rows, values[show_overlay]),
                    numbers_markdown(report.rows, report.seconds), "\n".join(f"- {n}" for n in report.notes),
                    previews(report.conditions), (report.image, report.conditions, report.rows), str(path),
                    recipe_markdown(report.recipe, path))

        @shows_errors
        def on_overlay(overlay_on, state):
            if state is None:
                return gr.update()
            return shown_image(*state, overlay_on)

        extract.click(on_extract, inputs=layer_components, outputs=[maps, notes], api_name=False, **HEAVY)
        example.click(lambda: (EXAMPLE_PROMPT, "canny", "draw", example_canvas()),
                      outputs=[prompt, widgets[0][0], widgets[0][1], widgets[0][2]], api_name=False, **CHEAP)
        generating = generate.click(stoppable(on_generate, "flexecontrol-generate"),
                                    inputs={prompt, seed, steps, guidance, show_overlay, bind, *layer_components},
                                    outputs=[output, numbers, notes, maps, result, download, recipe], api_name=False,
                                    **HEAVY)
        wire_stop(stop, "flexecontrol-generate", [generating])
        show_overlay.change(on_overlay, inputs=[show_overlay, result], outputs=output, api_name=False,
                            show_progress="hidden", **CHEAP)

        # The stable API (plain values: condition images plus their types), for gradio_client and scripts.
        with gr.Column(visible=False):
            api_images = components.File(file_count="multiple", type="filepath", label="Condition images")
            api_conditions = gr.JSON(label="Condition entries")
            api_file = gr.File(label="Generated PNG")
            api_report = gr.JSON(label="Numbers")
            api_button = gr.Button("API generate")
        api_button.click(shows_errors(functools.partial(api_generate, runner)),
                         inputs=[prompt, api_images, api_conditions, seed, steps, guidance, bind],
                         outputs=[api_file, api_report], api_name="flexecontrol_generate", **HEAVY)
    kind, source, _, upload = widgets[0][:4]
    return {"prompt": prompt, "kind": kind, "source": source, "upload": upload, "result": result,
            "to_match": to_match, "to_mojito": to_mojito}
