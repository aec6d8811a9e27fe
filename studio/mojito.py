"""Mojito tab (thesis ch. 10): sketch where an object goes and how fast, get a video that follows it.

Click keyframes on the first-frame canvas (or pick a preset, or type them in the table) for each object
phrase of the prompt, set the motion intensity, Generate. Directional Motion Control (eq. 10.5-10.7)
steers the phrase's cross-attention into the boxes; the Motion Intensity Modulator (eq. 10.8) sets the
speed. The detector then measures whether the object followed the path (mIoU, AP50, CD) and the
Farneback flow whether it moved at the asked intensity.

Each user's objects and keyframes live in a ``gr.State`` (:class:`MojitoSession`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from gradio_image_annotation import image_annotator
from PIL import Image, ImageDraw

from pipelines.errors import InvalidInputError
from pipelines.mojito import PRESETS, GuidanceConfig, Trajectory, check_phrase, preset_trajectory
from pipelines.mojito.export import OBJECT_COLOURS, overlay_boxes, upscale
from pipelines.mojito.pipeline import DEFAULT_STEPS
from pipelines.mojito.runner import MAX_SMOOTHNESS, MAX_STRENGTH, N_FRAMES, MojitoReport, MojitoRequest, MojitoRunner, TrajectoryInput, write_frames
from pipelines.mojito.trajectory import phrase_words
from pipelines.shapesworld import COLOURS, SHAPES
from pipelines.utils import to_rgb_array

from . import components
from .context import StudioContext
from .errors import shows_errors
from .outputs import recipe_markdown, scratch_path
from .sessions import CHEAP, HEAVY, session_state, stoppable, wire_stop

TITLE = "Mojito"
CANVAS = 256
# Videos are shown this many times larger than generated (the tiny pack makes 64x64 frames).
VIEW_SCALE = 4
FPS = 8
DEFAULT_PROMPT = "a red circle moves from left to right quickly"
TABLE_HEADERS = ["frame", "x0", "y0", "x1", "y1"]

INTRO = """\
## Mojito: draw where an object goes and how fast
Write what moves, click on the first frame where the object should be over time (or apply a preset), and press
**Generate** for a short video that follows your path. Press **Load the example** for a red circle crossing the frame.
"""

LEGEND = """\
**Canvas:** the first frame of the prompt's objects; each object's boxes are drawn in its own colour (1st object red,
2nd blue, 3rd green, 4th orange), the number in a box is its frame (0-15) and the line is the path between them.
**Video:** the coloured box is where the object should be in that frame; the thin white box is where the detector
found it.
"""

HOW_IT_WORKS = """\
Pick an **object phrase** from the prompt, then **click keyframes** on the canvas (first click = first
frame, last click = last frame, the rest spread evenly; edit the *frame* column to retime them), or
apply a **preset**. Boxes are fractions of the frame (0-1). Choose another phrase to add a second
object. The **intensity** (1-10) is meant to set how fast things move (Motion Intensity Modulator, eq. 10.8);
**Directional Motion Control** (eq. 10.5-10.7) pulls the phrase's cross-attention into the boxes during
the first denoising steps. Metrics compare the detected object with the boxes; "plausible" is the share
of frames where it keeps its shape, colour and size (a big step can paint a bar that fills the box).

*Tiny pack, measured (`bench/results/mojito.jsonl`, 51 seeded cases):* with guidance the object follows the
boxes (mIoU 6.3x the unguided video's, plausible 0.81). Without guidance the tiny model moves objects the
caption's way in 12 of 17 straight cases. The intensity slider does not yet change the measured speed: the
alignment error is 0.40 with it and 0.40 without (12 cases), and a sweep of levels 1-10 gives the same flow
(Spearman 0.11 over 4 captions). Use the keyframes to set how far the object goes.
"""


@dataclass
class MojitoSession:
    """One user's objects: phrase -> keyframe rows [frame, x0, y0, x1, y1] (fractions), in insertion order."""

    objects: dict[str, list[list[float]]] = field(default_factory=dict)
    # The first frame drawn under the keyframes (an image sent from another tab), uint8 [H, W, 3] or None.
    background: np.ndarray | None = None
    # The prompt whose objects are drawn as the first frame when no picture was sent.
    prompt: str = ""
    # The box editor's last few values as sent (:func:`box_editor_keys`): its change event echoes them back.
    sent_boxes: list[tuple] = field(default_factory=list)

    def trajectories(self) -> list[TrajectoryInput]:
        """The objects as the runner's plain keyframe lists (it checks them)."""
        return [TrajectoryInput(phrase, [list(map(float, row)) for row in rows]) for phrase, rows in self.objects.items()]


def phrase_choices(prompt: str) -> list[str]:
    """Object phrases offered for a prompt: "colour shape" pairs first, then single words and word pairs."""
    words = phrase_words(prompt or "")
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:])]
    objects = [p for p in pairs if p.split()[0] in COLOURS and p.split()[1] in SHAPES]
    rest = [w for w in words if len(w) > 2] + [p for p in pairs if p not in objects]
    return list(dict.fromkeys(objects + rest))


def prompt_changed(session, prompt: str):
    """New phrase choices, and the canvas's frame redrawn with the prompt's objects."""
    session = _session(session)
    session.prompt = prompt or ""
    choices = phrase_choices(prompt)
    return gr.update(choices=choices, value=choices[0] if choices else None), session, render_canvas(session)


def load_example(session):
    """The ready example: the default prompt, its red circle crossing left to right (a preset), intensity 8."""
    session = MojitoSession(prompt=DEFAULT_PROMPT, background=None)
    trajectory = preset_trajectory("left to right", "red circle", N_FRAMES, side=0.3)
    session.objects["red circle"] = [[int(r[0]), *(round(v, 4) for v in r[1:])] for r in trajectory.rows()]
    return (session, DEFAULT_PROMPT, gr.update(choices=phrase_choices(DEFAULT_PROMPT), value="red circle"),
            render_canvas(session), session.objects["red circle"], 8)


def _session(session: MojitoSession | None) -> MojitoSession:
    return session if session is not None else MojitoSession()


def _check_phrase(prompt: str, phrase: str | None) -> str:
    if not phrase:
        raise InvalidInputError("Pick an object phrase from the prompt first.")
    return check_phrase(prompt, phrase)


def spread_frames(count: int, n_frames: int = N_FRAMES) -> list[int]:
    """Frames for ``count`` clicked keyframes: first at 0, last at the end, the rest evenly between (distinct:
    at most one keyframe per frame)."""
    if count > n_frames:
        raise InvalidInputError(f"An object has at most {n_frames} keyframes, one per frame; clear it or edit the "
                                "table to start again.")
    if count == 1:
        return [0]
    return [int(round(i * (n_frames - 1) / (count - 1))) for i in range(count)]


def first_frame(session: MojitoSession) -> np.ndarray:
    """A ShapesWorld render of the prompt's objects, each where its first keyframe puts it (objects without
    keyframes spread across the frame); a plain frame when the prompt names no ShapesWorld object."""
    from pipelines.mojito.evaluate import phrase_object
    from pipelines.shapesworld.scene import Placement, render_scene

    phrases = list(dict.fromkeys([*session.objects, *phrase_choices(session.prompt)]))
    objects = [(p, *phrase_object(p)) for p in phrases if len(p.split()) == 2]
    objects = [(p, c, s) for p, c, s in objects if c and s][:3]
    placements = []
    for k, (phrase, colour, shape) in enumerate(objects):
        rows = session.objects.get(phrase) or []
        if rows:
            x0, y0, x1, y1 = rows[0][1:]
            centre, side = ((x0 + x1) / 2, (y0 + y1) / 2), max(0.05, min(x1 - x0, y1 - y0, 1.0))
        else:
            centre, side = ((k + 1) / (len(objects) + 1), 0.5), 0.25
        placements.append(Placement(shape, colour, centre, side))
    while placements:
        try:
            return render_scene(placements, size=CANVAS, seed=0).image
        except InvalidInputError:  # objects' first keyframes overlap: draw the earlier ones only
            placements = placements[:-1]
    return np.full((CANVAS, CANVAS, 3), 236, np.uint8)


def canvas_background(session: MojitoSession) -> Image.Image:
    """The canvas' frame at ``CANVAS`` pixels: the picture sent here, or a ShapesWorld render of the prompt's objects."""
    background = session.background if session.background is not None else first_frame(session)
    return Image.fromarray(background).convert("RGB").resize((CANVAS, CANVAS), Image.NEAREST)


def render_canvas(session: MojitoSession, interpolation: str = "linear") -> np.ndarray:
    """The first-frame canvas: a frame (the picture sent here, or a ShapesWorld render of the prompt's objects)
    under each object's keyframe boxes and its interpolated centre path, in its colour."""
    image = canvas_background(session)
    draw = ImageDraw.Draw(image)
    for k, (phrase, rows) in enumerate(session.objects.items()):
        colour = OBJECT_COLOURS[k % len(OBJECT_COLOURS)]
        for row in rows:
            x0, y0, x1, y1 = (v * CANVAS for v in row[1:])
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue  # an empty box: Generate explains it
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
            draw.text((x0 + 3, y0 + 2), str(int(row[0])), fill=colour)
        if len(rows) >= 2:
            try:
                centres = Trajectory.from_rows(phrase, rows, interpolation).centres(max(N_FRAMES, int(rows[-1][0]) + 1))
                draw.line([tuple(c * CANVAS) for c in centres], fill=colour, width=2)
            except InvalidInputError:
                pass  # the table shows the problem when Generate checks it
        if rows:
            draw.text((4, 4 + 12 * k), phrase, fill=colour)
    return np.asarray(image)


def _box_at(x: float, y: float, side: float) -> list[float]:
    """A box of ``side`` centred at (x, y), moved inside the frame."""
    half = side / 2
    cx, cy = min(max(x, half), 1 - half), min(max(y, half), 1 - half)
    return [round(cx - half, 4), round(cy - half, 4), round(cx + half, 4), round(cy + half, 4)]


def add_click(session, prompt, phrase, box_size, interpolation, evt: gr.SelectData):
    session = _session(session)
    phrase = _check_phrase(prompt, phrase)
    session.prompt = prompt or ""
    x, y = evt.index
    rows = session.objects.get(phrase, [])
    if len(rows) >= N_FRAMES:
        raise InvalidInputError(f"{phrase!r} already has a keyframe on each of its {N_FRAMES} frames; clear the "
                                "object or edit the table.")
    session.objects[phrase] = rows
    boxes = [row[1:] for row in rows] + [_box_at(x / CANVAS, y / CANVAS, float(box_size))]
    session.objects[phrase] = [[f, *b] for f, b in zip(spread_frames(len(boxes)), boxes)]
    return session, render_canvas(session, interpolation), session.objects[phrase]


def table_edited(session, prompt, phrase, table, interpolation):
    session = _session(session)
    session.prompt = prompt or ""
    if not phrase:
        return session, render_canvas(session, interpolation)
    phrase = _check_phrase(prompt, phrase)
    rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
    clean = []
    for row in rows:
        if all(v in (None, "") or (isinstance(v, float) and np.isnan(v)) for v in row):
            continue
        try:
            clean.append([float(v) for v in row])
        except (TypeError, ValueError):
            raise InvalidInputError("Each keyframe row must be five numbers: frame, x0, y0, x1, y1.") from None
    check_rows(clean)
    session.objects[phrase] = clean
    return session, render_canvas(session, interpolation)


def check_rows(rows: list[list[float]], n_frames: int = N_FRAMES) -> None:
    """Keyframe rows a person typed: each five numbers, frames whole and distinct in 0..n_frames-1, boxes inside
    the frame (0-1) with x0 < x1 and y0 < y1."""
    seen: dict[int, int] = {}
    for number, row in enumerate(rows, start=1):
        if len(row) != 5 or not all(np.isfinite(v) for v in row):
            raise InvalidInputError(f"Keyframe row {number} must be five numbers: frame, x0, y0, x1, y1.")
        frame, x0, y0, x1, y1 = row
        if not float(frame).is_integer() or not 0 <= frame < n_frames:
            raise InvalidInputError(f"Keyframe row {number}: the frame must be a whole number from 0 to "
                                    f"{n_frames - 1}, not {frame:g}.")
        if int(frame) in seen:
            raise InvalidInputError(f"Keyframe rows {seen[int(frame)]} and {number} are both at frame {int(frame)}; "
                                    "give each keyframe its own frame.")
        seen[int(frame)] = number
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise InvalidInputError(f"Keyframe row {number}: the box must lie inside the frame (0-1) with x0 < x1 "
                                    f"and y0 < y1, not ({x0:g}, {y0:g}, {x1:g}, {y1:g}).")


FRAME_LABELS = [f"frame {i}" for i in range(N_FRAMES)]


def box_editor_keys(boxes: list[dict]) -> tuple:
    """What identifies a set of editor boxes: labels and pixel corners."""
    return tuple(sorted((str(b.get("label") or ""), *(round(float(b[k])) for k in ("xmin", "ymin", "xmax", "ymax")))
                        for b in boxes))


def redraw_box_editor(session, phrase):
    """The box editor redrawn after the keyframes changed elsewhere, remembered so that its echo (the editor's
    change event fires on updates from the server too, possibly after later clicks) is not read as a drag."""
    session = _session(session)
    value = box_editor_value(session, phrase)
    session.sent_boxes = [*session.sent_boxes[-7:], box_editor_keys(value["boxes"])]
    return session, value


def box_editor_value(session, phrase) -> dict:
    """The draggable box editor's value: the first frame (no drawn boxes) under ``phrase``'s keyframe boxes in
    pixels, each labelled with its frame."""
    session = _session(session)
    image = np.asarray(canvas_background(session))
    boxes = [{"xmin": round(x0 * CANVAS), "ymin": round(y0 * CANVAS), "xmax": round(x1 * CANVAS),
              "ymax": round(y1 * CANVAS), "label": f"frame {int(frame)}"}
             for frame, x0, y0, x1, y1 in session.objects.get(phrase or "", [])]
    return {"image": image, "boxes": boxes}


def boxes_moved(session, prompt, phrase, value, interpolation):
    """Keyframes from the box editor after a person dragged, resized, drew or deleted boxes: each box's label
    says its frame ("frame 3"), its corners are the keyframe's box. Checked as typed rows are."""
    session = _session(session)
    boxes = (value or {}).get("boxes") or []
    if not phrase or (not boxes and phrase not in session.objects) or box_editor_keys(boxes) in session.sent_boxes:
        return session, gr.skip(), gr.skip()  # nothing moved, or the echo of a redraw: the canvas and table stay
    phrase = _check_phrase(prompt, phrase)
    session.prompt = prompt or ""
    # A box the editor gives back where it was drawn keeps its exact keyframe (pixels lose the fractions' digits).
    before = {(int(row[0]), *(round(v * CANVAS) for v in row[1:])): row for row in session.objects.get(phrase, [])}
    rows = []
    for number, box in enumerate(boxes, start=1):
        label = str(box.get("label") or "")
        if label not in FRAME_LABELS:
            raise InvalidInputError(f"Box {number} has no frame: pick one of 'frame 0' ... 'frame {N_FRAMES - 1}' "
                                    "as its label.")
        pixels = [min(max(round(float(box[k])), 0), CANVAS) for k in ("xmin", "ymin", "xmax", "ymax")]
        frame = FRAME_LABELS.index(label)
        rows.append(before.get((frame, *pixels), [frame, *(round(v / CANVAS, 4) for v in pixels)]))
    rows.sort(key=lambda row: row[0])
    check_rows(rows)
    if rows:
        session.objects[phrase] = rows
    else:
        session.objects.pop(phrase, None)
    return session, render_canvas(session, interpolation), rows


def apply_preset(session, prompt, phrase, preset, box_size, interpolation):
    session = _session(session)
    phrase = _check_phrase(prompt, phrase)
    session.prompt = prompt or ""
    trajectory = preset_trajectory(preset, phrase, N_FRAMES, side=float(box_size))
    session.objects[phrase] = [[int(r[0]), *(round(v, 4) for v in r[1:])] for r in trajectory.rows()]
    return session, render_canvas(session, interpolation), session.objects[phrase]


def receive(prompt: str, background, objects: dict[str, list[list[float]]] | None = None):
    """What another tab sends ("send to Mojito"): its prompt, its image as the first-frame canvas and, from a
    4D scene, each object's keyframes. Returns the tab's new session, prompt, phrase choices, canvas and the
    first object's keyframes."""
    session = MojitoSession(dict(objects or {}), None if background is None else to_rgb_array(background), prompt)
    choices = phrase_choices(prompt)
    first = next(iter(session.objects), choices[0] if choices else None)
    return (session, prompt, gr.update(choices=choices, value=first), render_canvas(session),
            session.objects.get(first or "", []))


def select_object(session, phrase):
    session = _session(session)
    return session.objects.get(phrase or "", [])


def clear_object(session, phrase, interpolation):
    session = _session(session)
    session.objects.pop(phrase or "", None)
    return session, render_canvas(session, interpolation), []


def path_plot(targets: dict[str, np.ndarray], achieved: dict[str, np.ndarray]) -> go.Figure:
    """Target (solid) vs detected (dashed) centre paths per object, y pointing down as in the image."""
    figure = go.Figure()
    for k, (phrase, boxes) in enumerate(targets.items()):
        colour = "rgb({},{},{})".format(*OBJECT_COLOURS[k % len(OBJECT_COLOURS)])
        centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        figure.add_scatter(x=centres[:, 0], y=centres[:, 1], mode="lines+markers", name=f"{phrase}: target",
                           line=dict(color=colour))
        if phrase in achieved:
            found = achieved[phrase]
            figure.add_scatter(x=found[:, 0], y=found[:, 1], mode="lines+markers", name=f"{phrase}: generated",
                               line=dict(color=colour, dash="dash"), marker=dict(symbol="x"))
    figure.update_xaxes(range=[0, 1], title="x (fraction of width)")
    figure.update_yaxes(range=[1, 0], title="y (fraction of height)")
    figure.update_layout(height=360, margin=dict(l=40, r=10, t=30, b=40), title="Centre paths")
    return figure


def metrics_markdown(report: MojitoReport, steps: int) -> str:
    """The measurements for people: per object mIoU, AP50, CD, in box, plausible, detected; intensity; time."""
    lines = ["| object | mIoU | AP50 | CD | in box | plausible | detected |", "|---|---|---|---|---|---|---|"]
    for obj in report.objects:
        m = obj.metrics
        cd = "n/a" if not np.isfinite(m.cd) else f"{m.cd:.3f}"
        lines.append(f"| {obj.phrase} | {m.miou:.3f} | {m.ap50:.3f} | {cd} | {m.hit_rate:.2f} | {m.plausible:.2f} | "
                     f"{m.detected:.2f} |")
    mim = "on" if report.intensity is not None else "off (this model has no Motion Intensity Modulator)"
    asked = report.recipe.request["intensity"]
    lines.append("")
    lines.append(f"**Intensity**: asked {asked}, measured {report.measured:.1f} (Farneback), alignment error "
                 f"{report.alignment:.3f}; MIM {mim}.")
    timing = f"**Time**: guided {report.seconds:.1f} s"
    if report.unguided_seconds is not None:
        timing += f", unguided {report.unguided_seconds:.1f} s"
    notes = [f"> {note}" for note in report.notes]
    return "\n".join(lines + [timing + f" ({steps} steps, guidance in the first {report.guidance.steps}).", "", *notes])


def generate_video(runner: MojitoRunner, request: MojitoRequest, draw_boxes: bool = True, progress=None):
    """Run ``request``; returns the report, the shown MP4 and GIF (upscaled, boxes drawn when asked), the
    unguided MP4 or None, and the video as generated (MP4 carrying the recipe)."""
    report = runner.run(request, progress)
    detected = {obj.phrase: obj.boxes for obj in report.objects}
    shown = overlay_boxes(report.frames, report.boxes, scale=VIEW_SCALE, detected=detected) if draw_boxes else \
        upscale(report.frames, VIEW_SCALE)
    video = write_frames(shown, scratch_path("mojito-", ".mp4"), report.recipe, fps=FPS)
    gif = write_frames(shown, scratch_path("mojito-", ".gif"), report.recipe, fps=FPS)
    raw = write_frames(report.frames, scratch_path("mojito-raw-", ".mp4"), report.recipe, fps=FPS)
    unguided = None
    if report.unguided is not None:
        unguided = write_frames(upscale(report.unguided, VIEW_SCALE), scratch_path("mojito-unguided-", ".mp4"),
                                report.unguided_recipe, fps=FPS)
    return report, str(video), str(gif), None if unguided is None else str(unguided), str(raw)


def generate(runner: MojitoRunner, session, settings: dict, draw_boxes: bool = True, progress=None):
    """Generate from this user's keyframes and the settings (prompt, intensity, strength, guided_steps,
    smoothness, steps, seed, interpolation, with_unguided: the request's fields by name)."""
    session = _session(session)
    request = MojitoRequest(trajectories=session.trajectories(), n_frames=N_FRAMES, **settings)
    report, video, gif, unguided, raw = generate_video(runner, request, bool(draw_boxes), progress)
    achieved = {obj.phrase: obj.centres for obj in report.objects}
    return (video, unguided, path_plot(report.boxes, achieved), metrics_markdown(report, request.steps), gif, raw,
            recipe_markdown(report.recipe, raw))


def api_generate(runner: MojitoRunner, prompt: str, trajectories: list | None, intensity, strength, guided_steps,
                 smoothness, steps, seed, interpolation) -> tuple[str, dict]:
    """The API's generate: the trajectory as plain values, ``[{"phrase": "red circle", "keyframes": [[frame, x0,
    y0, x1, y1], ...]}, ...]`` (box fractions, frames 0-15). Returns the video as generated (MP4 carrying its
    recipe) and the measurements as plain JSON."""
    given = []
    for entry in trajectories or []:
        if not isinstance(entry, dict) or not {"phrase", "keyframes"} <= set(entry):
            raise InvalidInputError(f"A trajectory is an object with 'phrase' and 'keyframes', got {entry!r}.")
        given.append(TrajectoryInput(str(entry["phrase"]), [list(row) for row in entry["keyframes"]]))
    request = MojitoRequest(prompt, given, intensity, strength, int(guided_steps), float(smoothness), int(steps),
                            int(seed or 0), interpolation)
    report = runner.run(request)
    path = write_frames(report.frames, scratch_path("mojito-raw-", ".mp4"), report.recipe, fps=FPS)
    objects = [{"phrase": o.phrase, **o.metrics.as_dict()} for o in report.objects]
    return str(path), {"objects": objects, "intensity": report.intensity, "measured_intensity": round(report.measured, 3),
                       "alignment": round(report.alignment, 4), "seconds": round(report.seconds, 3),
                       "recipe": report.recipe.request, "command": report.recipe.command_line(path.name)}


def create_tab(context: StudioContext) -> dict:
    """Build the Mojito tab inside the current ``gr.Blocks`` (the model loads on first Generate); returns the
    components other tabs send to or read from."""

    def handler(function, *bound):
        if not bound:
            return shows_errors(function)
        wrapped = functools.partial(function, *bound)  # leading positional arguments (the model manager)
        wrapped.__name__ = function.__name__
        return shows_errors(wrapped)

    with gr.Tab(TITLE, id="mojito"):
        gr.Markdown(INTRO)
        with gr.Accordion("How it works", open=False, elem_id="mojito-how"):
            gr.Markdown(HOW_IT_WORKS)
        state = session_state()
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", elem_id="mojito-prompt")
                phrase = gr.Dropdown(phrase_choices(DEFAULT_PROMPT), value=phrase_choices(DEFAULT_PROMPT)[0],
                                     label="Object phrase (from the prompt)", allow_custom_value=True,
                                     elem_id="mojito-phrase")
                example_button = gr.Button("Load the example", elem_id="mojito-example")
                canvas = gr.Image(render_canvas(MojitoSession(prompt=DEFAULT_PROMPT)),
                                  label="First frame (click to add keyframes)", interactive=False, height=CANVAS + 40,
                                  elem_id="mojito-canvas", show_label=True)
                gr.Markdown(LEGEND, elem_id="mojito-legend")
                with gr.Accordion("Move or resize boxes", open=False, elem_id="mojito-boxes-panel"):
                    gr.Markdown("Drag a box to move it, pull a corner to resize it, or draw a new one and pick its "
                                "frame. Changes go to the canvas and the table.")
                    box_editor = image_annotator(box_editor_value(None, None), label_list=FRAME_LABELS,
                                                 label="Keyframe boxes of this object", elem_id="mojito-boxes",
                                                 sources=[], show_clear_button=False, show_download_button=False,
                                                 height=CANVAS + 60, image_type="numpy")
                box_size = components.Slider(0.1, 0.6, value=0.3, step=0.05, label="Box size (fraction of the frame)")
                with gr.Row():
                    preset = gr.Dropdown(list(PRESETS), value=PRESETS[0], label="Preset", scale=2)
                    preset_button = gr.Button("Apply preset", scale=1)
                    clear_button = gr.Button("Clear object", scale=1)
                table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["number"] * 5, column_count=(5, "fixed"),
                                     interactive=True, label="Keyframes of this object (frame 0-15, boxes 0-1)",
                                     elem_id="mojito-table")
            with gr.Column(scale=1, min_width=320):
                intensity = components.Slider(1, 10, value=8, step=1, label="Motion intensity (1-10)",
                                              info="The tiny model's speed does not follow it yet (measured in "
                                                   "How it works); the keyframes set how far things go.")
                with gr.Accordion("Advanced", open=False):
                    strength = components.Number(value=GuidanceConfig().strength, minimum=0, maximum=MAX_STRENGTH,
                                                  label="Guidance strength eta (eq. 10.7)")
                    guide_steps = components.Slider(0, 30, value=10, step=1, label="Guided steps K")
                    smoothness = components.Number(value=1.0, minimum=0, maximum=MAX_SMOOTHNESS,
                                                    label="Temporal smoothness lambda (eq. 10.6)")
                    steps = components.Slider(5, 50, value=DEFAULT_STEPS, step=1, label="Denoising steps")
                    seed = components.Number(value=0, precision=0, label="Seed", minimum=0, maximum=2**31 - 1)
                    interpolation = gr.Radio(["linear", "smooth"], value="linear", label="Interpolation")
                with gr.Row():
                    draw_boxes = gr.Checkbox(True, label="Draw the boxes on the video")
                    with_unguided = gr.Checkbox(False, label="Also make the unguided video")
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="mojito-generate", scale=3)
                    stop = gr.Button("Stop", variant="stop", elem_id="mojito-stop", scale=1)
                video = gr.Video(label="Guided video", elem_id="mojito-video", autoplay=True, loop=True)
                unguided = gr.Video(label="Unguided video (same seed)", elem_id="mojito-unguided", loop=True)
                gif = gr.File(label="Guided video as GIF", elem_id="mojito-gif")
                raw = gr.File(label="Video as generated (MP4 carrying its recipe)",
                              elem_id="mojito-raw")
                recipe = gr.Markdown("", elem_id="mojito-recipe")
                lift = gr.Button("Lift to 4D (Morpho4D: fit this video along its trajectory)", elem_id="mojito-lift")
        plot = gr.Plot(label="Target vs generated centre paths", elem_id="mojito-plot")
        metrics = gr.Markdown("", elem_id="mojito-metrics")

        redraw_boxes = dict(fn=handler(redraw_box_editor), inputs=[state, phrase], outputs=[state, box_editor],
                            show_progress="hidden", api_name=False, **CHEAP)
        prompt.change(handler(prompt_changed), [state, prompt], [phrase, state, canvas], show_progress="hidden",
                      **CHEAP).then(**redraw_boxes)
        example_button.click(handler(load_example), state, [state, prompt, phrase, canvas, table, intensity],
                             api_name=False, **CHEAP).then(**redraw_boxes)
        phrase.change(handler(select_object), [state, phrase], table, show_progress="hidden", **CHEAP
                      ).then(**redraw_boxes)
        canvas.select(handler(add_click), [state, prompt, phrase, box_size, interpolation], [state, canvas, table],
                      show_progress="hidden", **CHEAP).then(**redraw_boxes)
        table.input(handler(table_edited), [state, prompt, phrase, table, interpolation], [state, canvas],
                    show_progress="hidden", **CHEAP).then(**redraw_boxes)
        preset_button.click(handler(apply_preset), [state, prompt, phrase, preset, box_size, interpolation],
                            [state, canvas, table], api_name="mojito_preset", **CHEAP).then(**redraw_boxes)
        clear_button.click(handler(clear_object), [state, phrase, interpolation], [state, canvas, table], **CHEAP
                           ).then(**redraw_boxes)
        # A drag, resize, new or deleted box in the editor: the keyframes follow (the editor is not redrawn).
        box_editor.change(handler(boxes_moved), [state, prompt, phrase, box_editor, interpolation],
                          [state, canvas, table], show_progress="hidden", api_name=False, **CHEAP)
        runner = MojitoRunner(context.manager)
        # The request's fields by name (inputs given as a set arrive as a component -> value dict).
        fields = {"prompt": prompt, "intensity": intensity, "strength": strength, "guided_steps": guide_steps,
                  "smoothness": smoothness, "steps": steps, "seed": seed, "interpolation": interpolation,
                  "with_unguided": with_unguided}

        def on_generate(values, progress=gr.Progress()):
            settings = {name: values[component] for name, component in fields.items()}
            settings.update(steps=int(settings["steps"]), guided_steps=int(settings["guided_steps"]),
                            seed=int(settings["seed"] or 0), with_unguided=bool(settings["with_unguided"]))
            return generate(runner, values[state], settings, bool(values[draw_boxes]), progress)

        generating = run.click(stoppable(handler(on_generate), "mojito-generate"), {state, draw_boxes, *fields.values()},
                               [video, unguided, plot, metrics, gif, raw, recipe], api_name=False, **HEAVY)
        wire_stop(stop, "mojito-generate", [generating])

        # The stable API (plain values: the trajectory as keyframe lists), for gradio_client and scripts.
        with gr.Column(visible=False):
            api_trajectories = gr.JSON(label="Trajectories")
            api_file = gr.File(label="Video as generated")
            api_report = gr.JSON(label="Measurements")
            api_button = gr.Button("API generate")
        api_button.click(handler(api_generate, runner),
                         [prompt, api_trajectories, intensity, strength, guide_steps, smoothness, steps, seed,
                          interpolation], [api_file, api_report], api_name="mojito_generate", **HEAVY)
    return {"state": state, "prompt": prompt, "phrase": phrase, "canvas": canvas, "table": table, "raw": raw,
            "lift": lift}
