"""Morpho4D tab: type a sentence to build a 4D scene and type edits (the language front end, thesis
11.3.2-11.3.3), then render it at any time and camera, edit it by object query, undo/redo, export PLY /
npz / video.

Every user's scene lives in a ``gr.State`` (a :class:`ViewerSession`), and their command history in
another (a :class:`~pipelines.morpho4d.language.CommandSession`), never in a module global. Only the
models (the depth model, the frame source) are shared, loaded once.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from pipelines.errors import InvalidInputError
from pipelines.morpho4d import (
    OPERATIONS,
    EditSession,
    Scene4D,
    build_shapes_scene,
    export_video,
    load_scene,
    orbit_camera,
    read_ply,
    render,
    save_scene,
    to_uint8,
    write_ply,
)
from pipelines.morpho4d.commands import GrammarParser, LLMCommandParser
from pipelines.morpho4d.generation import MojitoSource, ShapesWorldStandIn
from pipelines.morpho4d.language import CommandSession
from pipelines.morpho4d.rendering import gsplat_status
from pipelines.morpho4d.scene import SceneLimits
from pipelines.shapesworld import sample_video

from .context import StudioContext
from .errors import shows_errors

TITLE = "Morpho4D"
VIEW_SIZE = 256
# Gaussian centres drawn in the 3D scatter (a fixed sample of larger scenes).
MAX_PLOT_POINTS = 3000
# ShapesWorld seeds offered as examples (64x64 videos of 8 frames, 6000 Gaussians).
EXAMPLE_SEEDS = (3, 0, 1, 2, 5, 8)
EXAMPLE_FRAMES, EXAMPLE_SIZE, EXAMPLE_GAUSSIANS = 8, 64, 6000
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "examples" / "morpho4d"
OPERATION_LABELS = {"recolour": "recolour (assign)", "multiply": "recolour (multiply)", "delete": "delete",
                    "extract": "extract"}

INTRO = """\
## Morpho4D: language-driven 4D scenes
**Type a sentence** such as `a red ball bounces quickly from right to left while a blue box stays still`
to build a scene, then type edits: `make the ball blue`, `delete the box`, `extract the ball`,
`now make it go left to right`, `undo`. Each command becomes a plan (thesis eq. 11.5, shown as JSON);
a scene is generated along a trajectory whose box spacing follows the speed words, given depth and a
feature per pixel, and fitted as moving 3D Gaussians (eq. 11.8-11.12); edits select Gaussians by feature
similarity (eq. 11.13-11.14).
"""
VIEWER_INTRO = """\
**Viewer.** Or load an example (a ShapesWorld video turned into moving 3D Gaussians with a feature each) or open a
`.npz` scene / 3DGS `.ply`. Scrub **time**, orbit with **azimuth / elevation / distance**, press
**Play** for a time sweep, **Show splats** for an interactive 3D viewer of the current time step. Edit by naming an object (e.g. `red square`, or `circle` for every circle):
each Gaussian's feature is compared with the query's (thesis eq. 11.13-11.14), a threshold search picks
the selection, and the operation applies to every frame. Edits are a list: undo and redo are exact.
"""


@dataclass
class ViewerSession:
    """One user's scene: the non-destructive editor and where it came from."""

    editor: EditSession
    label: str
    # Horizontal field of view (degrees) of the scene's home camera; orbit views use it.
    fov: float
    # Distance from the home camera to the scene's centre (distance slider 1.0).
    home_distance: float
    # Home camera's azimuth/elevation about the centre (sliders at 0 reproduce the home view).
    home_azimuth: float
    home_elevation: float

    @property
    def scene(self) -> Scene4D:
        return self.editor.scene


@functools.lru_cache(maxsize=1)
def frame_source():
    """Mojito's generator when the tiny pack has its text-to-video model, else the labelled stand-in
    (loaded once per process; a model, not user data)."""
    try:
        return MojitoSource.from_preset("tiny")
    except Exception:  # noqa: BLE001 (any failure to load means: no generator here)
        return ShapesWorldStandIn()


@functools.lru_cache(maxsize=1)
def command_parser():
    """The grammar parser, or with WORLDSTUDIO_MORPHO4D_PARSER=llm the hub preset's local LLM (its output
    schema-checked, the grammar's plan used when it is invalid)."""
    if os.environ.get("WORLDSTUDIO_MORPHO4D_PARSER", "grammar") == "llm":
        return LLMCommandParser.from_preset("hub")
    return GrammarParser()


@functools.lru_cache(maxsize=1)
def depth_model():
    from pipelines.morpho4d.depth import DepthEstimator

    return DepthEstimator.from_preset("tiny")


def source_notice() -> str:
    source = frame_source()
    if isinstance(source, ShapesWorldStandIn):
        return ("**Frames:** no text-to-video model is installed, so scenes are built from ShapesWorld's own "
                "renderer drawing the plan along its trajectory, a **stand-in, not generated video**; features "
                "come from the detector's masks. With Mojito's model (`shapes-t2v`) the frames are generated.")
    return (f"**Frames:** {source.label} (generated); features: ShapesWorld's detector masks of the generated "
            "frames (the generator's coarse cross-attention maps made edits bleed into the background).")


def example_labels() -> dict[str, int]:
    """Dropdown label -> ShapesWorld seed (captions are computed once, when the tab is built)."""
    return {f"#{seed}: {sample_video(seed, EXAMPLE_SIZE, EXAMPLE_FRAMES).caption}": seed for seed in EXAMPLE_SEEDS}


def new_session(scene: Scene4D, label: str) -> ViewerSession:
    camera = scene.camera
    fov = math.degrees(2 * math.atan(camera.width / 2 / float(camera.K[0, 0])))
    offset = camera.position - scene.centre()
    distance = float(np.linalg.norm(offset)) or 1.0
    azimuth = math.degrees(math.atan2(offset[0], offset[2]))
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, offset[1] / distance))))
    return ViewerSession(EditSession(scene), label, fov, distance, azimuth, elevation)


def view_camera(session: ViewerSession, azimuth: float, elevation: float, distance: float):
    """The orbit camera of the sliders (relative to the home view)."""
    return orbit_camera(
        session.scene.centre() if session.scene.n_gaussians else np.zeros(3),
        session.home_azimuth + float(azimuth),
        max(-89.0, min(89.0, session.home_elevation + float(elevation))),
        session.home_distance * float(distance),
        VIEW_SIZE, VIEW_SIZE, session.fov,
    )


def _require(session: ViewerSession | None) -> ViewerSession:
    if session is None:
        raise InvalidInputError("Load an example or open a scene first.")
    return session


def _scratch(suffix: str) -> Path:
    """A fresh file path in a private temporary folder (Gradio serves it from its cache)."""
    return Path(tempfile.mkdtemp(prefix="morpho4d-")) / f"scene{suffix}"


def render_view(session: ViewerSession, t: float, azimuth: float, elevation: float, distance: float) -> np.ndarray:
    camera = view_camera(session, azimuth, elevation, distance)
    return to_uint8(render(session.scene, camera, t))


def centres_plot(session: ViewerSession, t: float, highlight: np.ndarray | None = None) -> go.Figure:
    """A 3D scatter of the centres of the Gaussians seen at time ``t`` (opacity >= 1/255) in their
    colours; ``highlight`` (bool) marked."""
    scene = session.scene
    means, colours = scene.means_at(t), scene.colours
    seen = scene.opacities_at(t) >= 1.0 / 255.0
    index = np.nonzero(seen)[0]
    if len(index) > MAX_PLOT_POINTS:
        index = np.sort(np.random.default_rng(0).choice(index, MAX_PLOT_POINTS, replace=False))
    highlight = np.zeros(scene.n_gaussians, bool) if highlight is None else highlight
    figure = go.Figure()
    rest, chosen = index[~highlight[index]], np.nonzero(highlight & seen)[0][:MAX_PLOT_POINTS]
    rgb = (np.clip(colours, 0, 1) * 255).astype(int)
    figure.add_trace(go.Scatter3d(
        x=means[rest, 0], y=means[rest, 2], z=means[rest, 1], mode="markers", name="Gaussians",
        marker={"size": 2, "color": [f"rgb({r},{g},{b})" for r, g, b in rgb[rest]], "opacity": 0.6},
    ))
    if len(chosen):
        figure.add_trace(go.Scatter3d(
            x=means[chosen, 0], y=means[chosen, 2], z=means[chosen, 1], mode="markers", name="selected",
            marker={"size": 4, "color": "#ffd400", "line": {"color": "#000000", "width": 1}},
        ))
    figure.update_layout(
        height=360, margin={"l": 0, "r": 0, "t": 30, "b": 0}, legend={"orientation": "h"},
        title=f"Gaussian centres at t = {float(t):g} ({int(seen.sum()):,} seen of {scene.n_gaussians:,})",
        scene={"xaxis_title": "x", "yaxis_title": "z", "zaxis_title": "y (up)", "aspectmode": "data"},
    )
    return figure


def splat_file(session: ViewerSession, t: float) -> str:
    return str(write_ply(session.scene, _scratch(".ply"), t))


def status_markdown(session: ViewerSession, seconds: float | None = None) -> str:
    scene = session.scene
    names = ", ".join(scene.object_names) if scene.object_names else "no named objects (not editable by query)"
    lines = [
        f"**{session.label}**",
        f"{scene.n_gaussians:,} Gaussians, {scene.n_frames} frame(s), features D = {scene.feature_dim}; objects: {names}.",
        f"Renderer: {gsplat_status()}" + (f", last view {seconds * 1000:.0f} ms." if seconds is not None else "."),
    ]
    return "  \n".join(lines)


def history_markdown(session: ViewerSession) -> str:
    lines = session.editor.history()
    return "**Edits**  \n" + ("  \n".join(f"{i + 1}. {line}" for i, line in enumerate(lines)) if lines else "none yet")


def _show(session: ViewerSession, t, azimuth, elevation, distance, highlight=None):
    """Everything that follows the scene and the view: view, plot, status, edit history."""
    start = time.perf_counter()
    view = render_view(session, t, azimuth, elevation, distance)
    seconds = time.perf_counter() - start
    return (session, view, centres_plot(session, t, highlight), status_markdown(session, seconds),
            history_markdown(session))


def _changed(outputs):
    """_show's outputs plus an emptied splat viewer: the scene changed, its old splats are stale."""
    return (*outputs, None)


def _loaded(session: ViewerSession):
    """Outputs after a new scene: the _show outputs with the sliders reset (time range fitted)."""
    time_slider = gr.update(minimum=0, maximum=max(session.scene.n_frames - 1, 1), value=0,
                            interactive=session.scene.n_frames > 1)
    return (*_changed(_show(session, 0.0, 0.0, 0.0, 1.0)), time_slider, gr.update(value=0), gr.update(value=0),
            gr.update(value=1.0))


def load_example(label: str, examples: dict[str, int]):
    if label not in examples:
        raise InvalidInputError(f"Unknown example {label!r}.")
    scene = build_shapes_scene(seed=examples[label], size=EXAMPLE_SIZE, n_frames=EXAMPLE_FRAMES,
                               n_gaussians=EXAMPLE_GAUSSIANS)
    return _loaded(new_session(scene, f"Example {label}"))


def open_file(path):
    if not path:
        raise InvalidInputError("No file was given.")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        scene = load_scene(path, SceneLimits())
    elif suffix == ".ply":
        scene = read_ply(path, SceneLimits())
    else:
        raise InvalidInputError(f"Open a Morpho4D scene (.npz) or a 3DGS splat (.ply), not {suffix or 'a file without suffix'}.")
    return _loaded(new_session(scene, f"File {path.name}"))


def refresh(session, t, azimuth, elevation, distance):
    session = _require(session)
    t = session.scene.check_time(t)
    return _show(session, t, azimuth, elevation, distance, session.editor.last_selection())


def preview(session, query, t, azimuth, elevation, distance):
    session = _require(session)
    selection = session.editor.preview(query)
    outputs = _show(session, t, azimuth, elevation, distance, selection.mask)
    note = (f"Preview: {int(selection.mask.sum()):,} Gaussians match {query!r} "
            f"(threshold {selection.threshold:.2f}, {selection.seconds * 1000:.0f} ms); nothing changed.")
    return (*outputs[:-1], outputs[-1] + "  \n" + note)


def apply_edit(session, query, operation, colour, view_state):
    session = _require(session)
    t, azimuth, elevation, distance = view_state
    session.editor.apply(operation, query, colour)
    return _changed(_show(session, session.scene.check_time(min(float(t), session.scene.n_frames - 1)), azimuth,
                          elevation, distance, session.editor.last_selection()))


def undo_redo(session, t, azimuth, elevation, distance, *, action: str):
    session = _require(session)
    session.editor.undo() if action == "undo" else session.editor.redo()
    return _changed(_show(session, t, azimuth, elevation, distance, session.editor.last_selection()))


def show_splats(session, t):
    session = _require(session)
    return splat_file(session, session.scene.check_time(t))


def play(session, azimuth, elevation, distance):
    session = _require(session)
    camera = view_camera(session, azimuth, elevation, distance)
    return str(export_video(session.scene, _scratch(".mp4"), "time", fps=8, camera=camera))


def export_file(session, t, *, kind: str):
    session = _require(session)
    if kind == "ply":
        return str(write_ply(session.scene, _scratch(".ply"), session.scene.check_time(t)))
    if kind == "npz":
        return str(save_scene(session.scene, _scratch(".npz")))
    return str(export_video(session.scene, _scratch(".mp4"), "orbit", fps=12, t=session.scene.check_time(t),
                            steps=36, size=VIEW_SIZE))


def chat_messages(language: CommandSession) -> list[dict]:
    """The command history as chat messages: each command, then its plan (JSON) and what was done."""
    messages = []
    for record in language.history:
        messages.append({"role": "user", "content": record.command})
        parts = [("Done: " if record.ok else "Not done: ") + record.outcome]
        if record.note:
            parts.append(f"_{record.note}_")
        if record.plan is not None:
            parts.append(f"Plan ({record.backend} parser):\n```json\n{json.dumps(record.plan, indent=1)}\n```")
        messages.append({"role": "assistant", "content": "\n\n".join(parts)})
    return messages


def run_command(session, language, command, t, azimuth, elevation, distance, progress=None):
    """Parse and carry out one command; the chat shows the plan and the outcome (or the error message)."""
    language = language or CommandSession(command_parser(), frame_source(), depth_model())
    if session is not None and language.editor is not session.editor:
        language.adopt(session.editor)
    before = language.editor
    report = (lambda stage, fraction: progress(fraction, desc=stage)) if progress is not None else None
    language.try_run(command, report)
    chat = chat_messages(language)
    if language.editor is None:  # nothing to show yet (e.g. an edit before any scene)
        return (session, language, chat, "", *([gr.update()] * 5), *([gr.update()] * 4))
    if session is None or language.gen is not None and (language.editor.base is not session.editor.base):
        label = f"Scene from: {language.gen.plan.describe()}" if language.gen else "Scene"
        session = new_session(language.editor.base, label)
        session.editor = language.editor
        outputs = _loaded(session)
        return (outputs[0], language, chat, "", *outputs[1:])
    session.editor = language.editor
    t = session.scene.check_time(min(float(t), session.scene.n_frames - 1))
    shown = _show(session, t, azimuth, elevation, distance, session.editor.last_selection())
    splats = None if language.editor is not before or language.history[-1].ok else gr.update()
    return (shown[0], language, chat, "", *shown[1:], splats, *([gr.update()] * 4))


def create_tab(context: StudioContext) -> None:  # noqa: ARG001 (models load lazily, once)
    """Build the Morpho4D tab inside the current ``gr.Blocks``."""
    examples = example_labels()

    def handler(function, **bound):
        """``function`` with ``bound`` keywords, errors shown to the user (a named function for the log)."""
        wrapped = functools.partial(function, **bound)
        wrapped.__name__ = function.__name__
        return shows_errors(wrapped)

    with gr.Tab(TITLE, id="morpho4d"):
        gr.Markdown(INTRO)
        state = gr.State(None)
        language = gr.State(None)
        gr.Markdown(source_notice(), elem_id="morpho4d-source")
        chat = gr.Chatbot(label="Commands: each one's plan (JSON) and what was done", height=320,
                          elem_id="morpho4d-chat")
        with gr.Row():
            command = gr.Textbox(show_label=False, scale=5, elem_id="morpho4d-command", max_lines=2,
                                 placeholder="a red ball bounces quickly from right to left  |  make the ball blue")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="morpho4d-send")
        gr.Examples(["a red ball bounces quickly from right to left while a blue box stays still",
                     "a big green triangle slides upward slowly", "make the ball blue", "delete the box",
                     "extract the ball", "now make it go left to right", "undo"], inputs=command,
                    label="Commands to try")
        gr.Markdown(VIEWER_INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                example = gr.Dropdown(list(examples), value=next(iter(examples)), label="Example scene")
                load = gr.Button("Load example", variant="primary")
                upload = gr.File(label="Open a scene (.npz) or a 3DGS splat (.ply)", file_types=[".npz", ".ply"],
                                 type="filepath")
                if ASSETS.is_dir():
                    gr.Examples(sorted(str(p) for p in ASSETS.iterdir() if p.suffix in (".npz", ".ply")),
                                inputs=upload, label="Example files")
                status = gr.Markdown("No scene loaded.")
            with gr.Column(scale=2):
                # PNG: a lossless view (WebP, the default, smears an edit's edges into the pixels around it).
                view = gr.Image(label="View", type="numpy", format="png", height=VIEW_SIZE + 40, interactive=False,
                                elem_id="morpho4d-view")
                time_slider = gr.Slider(0, EXAMPLE_FRAMES - 1, value=0, step=0.25, label="time (frame)",
                                        elem_id="morpho4d-time")
                with gr.Row():
                    azimuth = gr.Slider(-180, 180, value=0, step=5, label="azimuth (deg)")
                    elevation = gr.Slider(-80, 80, value=0, step=5, label="elevation (deg)")
                    distance = gr.Slider(0.3, 3.0, value=1.0, step=0.05, label="distance (x home)")
                play_button = gr.Button("Play (time sweep)")
                video = gr.Video(label="Time sweep", autoplay=True, loop=True, elem_id="morpho4d-video")
        with gr.Row():
            with gr.Column():
                splats = gr.Model3D(label="3D splat viewer (gsplat.js)", height=360, elem_id="morpho4d-splats")
                splat_button = gr.Button("Show splats (this time step)", size="sm")
            plot = gr.Plot(label="Gaussian centres (selected in yellow)")
        with gr.Row():
            query = gr.Textbox(label="Object query", placeholder="red square", scale=2, elem_id="morpho4d-query")
            operation = gr.Radio([(OPERATION_LABELS[o], o) for o in OPERATIONS], value="recolour", label="Operation",
                                 scale=3)
            colour = gr.Textbox(value="blue", label="Colour (name, #hex, or factor for multiply)", scale=1)
        with gr.Row():
            preview_button = gr.Button("Preview selection")
            apply_button = gr.Button("Apply edit", variant="primary")
            undo_button = gr.Button("Undo")
            redo_button = gr.Button("Redo")
        history = gr.Markdown("**Edits**  \nnone yet", elem_id="morpho4d-history")
        with gr.Row():
            ply_button = gr.Button("Export PLY (this time)")
            npz_button = gr.Button("Export scene (.npz)")
            video_button = gr.Button("Export orbit video (.mp4)")
            download = gr.File(label="Download", interactive=False, elem_id="morpho4d-download")

        shown = [state, view, plot, status, history]
        changed = shown + [splats]
        sliders = [time_slider, azimuth, elevation, distance]

        def command_handler(session, language_state, text, t, az, el, dist, progress=gr.Progress(track_tqdm=True)):
            return run_command(session, language_state, text, t, az, el, dist, progress)

        command_outputs = [state, language, chat, command, view, plot, status, history, splats, *sliders]
        send.click(handler(command_handler), inputs=[state, language, command, *sliders], outputs=command_outputs,
                   api_name="morpho4d_command")
        command.submit(handler(command_handler), inputs=[state, language, command, *sliders],
                       outputs=command_outputs, api_name=False)
        load.click(handler(load_example, examples=examples), inputs=example,
                   outputs=changed + sliders, api_name="morpho4d_load_example")
        upload.upload(handler(open_file), inputs=upload, outputs=changed + sliders, api_name="morpho4d_open")
        splat_button.click(handler(show_splats), inputs=[state, time_slider], outputs=splats, api_name=False)
        for slider in sliders:
            slider.change(handler(refresh), inputs=[state, *sliders], outputs=shown, trigger_mode="always_last",
                          show_progress="hidden", api_name=False)
        preview_button.click(handler(preview), inputs=[state, query, *sliders], outputs=shown, api_name=False)

        def apply_handler(session, query_text, op, colour_text, t, az, el, dist):
            return apply_edit(session, query_text, op, colour_text, (t, az, el, dist))

        apply_button.click(handler(apply_handler), inputs=[state, query, operation, colour, *sliders],
                           outputs=changed, api_name="morpho4d_edit")
        query.submit(handler(apply_handler), inputs=[state, query, operation, colour, *sliders],
                     outputs=changed, api_name=False)
        undo_button.click(handler(undo_redo, action="undo"), inputs=[state, *sliders],
                          outputs=changed, api_name=False)
        redo_button.click(handler(undo_redo, action="redo"), inputs=[state, *sliders],
                          outputs=changed, api_name=False)
        play_button.click(handler(play), inputs=[state, azimuth, elevation, distance], outputs=video, api_name=False)
        ply_button.click(handler(export_file, kind="ply"), inputs=[state, time_slider],
                         outputs=download, api_name=False)
        npz_button.click(handler(export_file, kind="npz"), inputs=[state, time_slider],
                         outputs=download, api_name=False)
        video_button.click(handler(export_file, kind="video"), inputs=[state, time_slider],
                           outputs=download, api_name=False)
