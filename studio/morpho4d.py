"""Morpho4D tab: type a sentence to build a 4D scene and type edits (the language front end, thesis
11.3.2-11.3.3), then render it at any time and camera, edit it by object query, undo/redo, export PLY /
npz / video.

Every user's scene lives in one ``gr.State`` (a :class:`ViewerSession`: the view and the one
:class:`~pipelines.morpho4d.language.CommandSession` that owns the scene, its editor and the only undo
history; buttons and typed commands both go through it), never in a module global. The models (the depth
model, Mojito's video model for the frames) come from the studio's ModelManager through
:class:`~pipelines.morpho4d.runner.Morpho4DRunner`, loaded once and shared with the Mojito tab.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from pipelines.errors import InvalidInputError
from pipelines.morpho4d import OPERATIONS, Scene4D, load_scene, orbit_camera, read_ply, render, to_uint8
from pipelines.morpho4d.language import CommandSession
from pipelines.morpho4d.rendering import gsplat_status
from pipelines.morpho4d.runner import Morpho4DRequest, Morpho4DRunner, camera_json, write_scene_file
from pipelines.morpho4d.scene import SceneLimits
from pipelines.recipes import NoRecipeError, read_recipe
from pipelines.shapesworld import sample_video

from . import components
from .context import StudioContext
from .errors import shows_errors
from .outputs import recipe_markdown, scratch_path
from .sessions import CHEAP, HEAVY, SCENES, require_within_bound, session_state, stoppable, wire_stop

TITLE = "Morpho4D"
# Frames of a Mojito video (a scene sent to Mojito has its boxes spread over them).
MOJITO_FRAMES = 16
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
## Morpho4D: build a moving 3D scene from a sentence, then edit it in words
Type what happens (or click an example below), then change it: "make the ball blue", "delete the box", "undo".
Turn the scene with the sliders and scrub through time.
"""

HOW_IT_WORKS = """\
**Type a sentence** such as `a red ball bounces quickly from right to left while a blue box stays still`
to build a scene, then type edits: `make the ball blue`, `delete the box`, `extract the ball`,
`now make it go left to right`, `undo`. Each command becomes a plan (thesis eq. 11.5, shown as JSON);
a scene is generated along a trajectory whose box spacing follows the speed words; a detector checks that
each frame holds the planned objects (duplicates and fragments are removed, a missing object is drawn again
along its path); each frame gets depth (objects rounded toward the camera) and a feature per pixel, and the
scene is fitted as moving 3D Gaussians (eq. 11.8-11.12); edits select Gaussians by feature similarity
(eq. 11.13-11.14).

**Measured** (22 typed scenes, this 2-core CPU, nothing else running; `bench/results/morpho4d_gen_issue23.jsonl`):
a scene takes 12.9 s on average (at most 17.7 s), the detected object count is right in 96% of 176 fitted frames,
and every path goes the commanded way. With features learned from the tiny CLIP alone (no detector; frames from
ShapesWorld's renderer, whose truth is known), a typed name selects its object's Gaussians at precision 0.96 and
recall 0.93 (104 queries, `bench/results/morpho4d_truth_generated_clip.jsonl`).
"""
VIEWER_INTRO = """\
**Viewer.** Or load an example (a ShapesWorld video turned into moving 3D Gaussians with a feature each), open a
`.npz` scene / 3DGS `.ply` (a PLY's Gaussians get features distilled from the preset's CLIP on a few rendered
views, named by the objects that CLIP recognises in them, so it is edited in words too), or **lift a photo**: its
centre square becomes static Gaussians placed by the preset's depth model, each with a feature distilled from the
preset's CLIP (no ShapesWorld detector); name what it shows
(`woman, flag`) and edit by those names. With the tiny pack's CLIP only ShapesWorld words are understood. Scrub **time**, orbit with **azimuth / elevation / distance**, press
**Play** for a time sweep, **Show splats** for an interactive 3D viewer of the current time step (it follows
the time slider once shown); **Export every frame** downloads one 3DGS PLY per frame in a zip. Edit by naming an object (e.g. `red square`, or `circle` for every circle):
each Gaussian's feature is compared with the query's (thesis eq. 11.13-11.14), a threshold search picks
the selection, and the operation applies to every frame. Edits are a list: undo and redo are exact.
"""


@dataclass
class ViewerSession:
    """One user's scene session (the only history) and how the viewer looks at it."""

    session: CommandSession
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
        return self.session.scene

    @property
    def editor(self):
        return self.session.editor


def make_runner(context: StudioContext) -> Morpho4DRunner:
    """The tab's runner over the studio's models; WORLDSTUDIO_MORPHO4D_PARSER=llm parses with the preset's
    local LLM (its output schema-checked, the grammar's plan used when it is invalid)."""
    return Morpho4DRunner(context.manager, parser=os.environ.get("WORLDSTUDIO_MORPHO4D_PARSER", "grammar"))


def source_notice(runner: Morpho4DRunner) -> str:
    if runner.resolved_frames() == "stand-in":
        return ("**Frames:** no text-to-video model is installed, so scenes are built from ShapesWorld's own "
                "renderer drawing the plan along its trajectory, a **stand-in, not generated video**; features "
                "come from the detector's masks. With Mojito's model (`shapes-t2v`) the frames are generated.")
    return ("**Frames:** Mojito's guided text-to-video model (the Mojito tab's, preset "
            f"{runner.manager.preset!r}; generated); features: ShapesWorld's detector masks of the generated "
            "frames where it finds the command's objects (the generator's coarse cross-attention maps made edits "
            "bleed into the background), else the preset's CLIP features, as for a real video model's objects.")


def example_labels() -> dict[str, int]:
    """Dropdown label -> ShapesWorld seed (captions are computed once, when the tab is built)."""
    return {f"#{seed}: {sample_video(seed, EXAMPLE_SIZE, EXAMPLE_FRAMES).caption}": seed for seed in EXAMPLE_SEEDS}


def new_view(session: CommandSession, label: str) -> ViewerSession:
    """A viewer on ``session``'s scene, its sliders at the scene's home camera."""
    scene = session.scene
    camera = scene.camera
    fov = math.degrees(2 * math.atan(camera.width / 2 / float(camera.K[0, 0])))
    offset = camera.position - scene.centre()
    distance = float(np.linalg.norm(offset)) or 1.0
    azimuth = math.degrees(math.atan2(offset[0], offset[2]))
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, offset[1] / distance))))
    return ViewerSession(session, label, fov, distance, azimuth, elevation)


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
    if session is None or session.scene is None:
        raise InvalidInputError("Load an example or open a scene first.")
    return session


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
    rest, chosen = index[~highlight[index]], np.nonzero(highlight & seen)[0][:MAX_PLOT_POINTS]
    rgb = (np.clip(colours, 0, 1) * 255).astype(int)
    # Plain dicts, not validated: plotly's validation of 3000 colours took 0.3-0.4 s per scrub.
    traces = [{"type": "scatter3d", "x": means[rest, 0], "y": means[rest, 2], "z": means[rest, 1], "mode": "markers",
               "name": "Gaussians",
               "marker": {"size": 2, "color": [f"rgb({r},{g},{b})" for r, g, b in rgb[rest]], "opacity": 0.6}}]
    if len(chosen):
        traces.append({"type": "scatter3d", "x": means[chosen, 0], "y": means[chosen, 2], "z": means[chosen, 1],
                       "mode": "markers", "name": "selected",
                       "marker": {"size": 4, "color": "#ffd400", "line": {"color": "#000000", "width": 1}}})
    layout = {
        "height": 360, "margin": {"l": 0, "r": 0, "t": 30, "b": 0}, "legend": {"orientation": "h"},
        "title": {"text": f"Gaussian centres at t = {float(t):g} ({int(seen.sum()):,} seen of {scene.n_gaussians:,})"},
        "scene": {"xaxis": {"title": {"text": "x"}}, "yaxis": {"title": {"text": "z"}},
                  "zaxis": {"title": {"text": "y (up)"}}, "aspectmode": "data"},
    }
    figure = go.Figure(data=traces, layout=layout, _validate=False)
    return figure


def status_markdown(session: ViewerSession, seconds: float | None = None) -> str:
    scene = session.scene
    names = ", ".join(scene.object_names) if scene.object_names else "no named objects (not editable by query)"
    lines = [
        f"**{session.label}**",
        f"{scene.n_gaussians:,} Gaussians, {scene.n_frames} frame(s), features D = {scene.feature_dim}; objects: {names}.",
        *([f"Features: {scene.meta['features']}."] if scene.meta.get("features") else []),
        f"Renderer: {gsplat_status()}" + (f", last view {seconds * 1000:.0f} ms." if seconds is not None else "."),
    ]
    return "  \n".join(lines)


def history_markdown(session: ViewerSession) -> str:
    """The scene's edits (from buttons and commands alike); undone ones are marked."""
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
    """_show's outputs plus an emptied splat viewer and time sweep: the scene changed, the old ones are stale."""
    return (*outputs, None, None)


def _loaded(session: ViewerSession):
    """Outputs after a new scene: the _show outputs with the sliders reset (time range fitted)."""
    time_slider = gr.update(minimum=0, maximum=max(session.scene.n_frames - 1, 1), value=0,
                            interactive=session.scene.n_frames > 1)
    return (*_changed(_show(session, 0.0, 0.0, 0.0, 1.0)), time_slider, gr.update(value=0), gr.update(value=0),
            gr.update(value=1.0))


def load_example(runner: Morpho4DRunner, label: str, view: ViewerSession | None = None, *, examples: dict[str, int]):
    """A ShapesWorld example scene in this user's session (its history starts afresh)."""
    if label not in examples:
        raise InvalidInputError(f"Unknown example {label!r}.")
    session = runner.load_example(examples[label], EXAMPLE_SIZE, EXAMPLE_FRAMES, EXAMPLE_GAUSSIANS,
                                  view.session if view is not None else None)
    return _loaded(new_view(session, f"Example {label}"))


def open_file(runner: Morpho4DRunner, path, view: ViewerSession | None = None, progress=None):
    """A scene from a ``.npz`` or a 3DGS ``.ply``. An NPZ that carries a Morpho4D recipe continues it, so
    what is written next carries the whole recipe; anything else cannot be replayed. A PLY gets features
    distilled from the preset's CLIP (:meth:`Morpho4DRunner.load_ply`); the status says what it can be edited by."""
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
    require_within_bound(scene, f"The scene in {path.name}")
    session = view.session if view is not None else runner.new_session()
    if suffix == ".ply":
        report = (lambda stage, fraction: progress(fraction, desc=stage)) if progress is not None else None
        runner.load_ply(scene, path.name, session, report)
    else:
        session.load(scene, {"file": path.name})
    if suffix == ".npz":
        try:
            recipe = read_recipe(path)
        except NoRecipeError:
            recipe = None
        if recipe is not None and recipe.method == "morpho4d":
            request = Morpho4DRequest(**{k: v for k, v in recipe.request.items() if k not in ("t", "video")})
            session.origin, session.actions = request.origin, [dict(a) for a in request.actions]
            session.frames = request.frames
    return _loaded(new_view(session, f"File {path.name}"))


def refresh(session, t, azimuth, elevation, distance):
    session = _require(session)
    t = session.scene.check_time(t)
    return _show(session, t, azimuth, elevation, distance, session.editor.last_selection())


def preview(session, query, t, azimuth, elevation, distance):
    session = _require(session)
    selection = session.session.preview(query)
    outputs = _show(session, t, azimuth, elevation, distance, selection.mask)
    note = (f"Preview: {int(selection.mask.sum()):,} Gaussians match {query!r} "
            f"(threshold {selection.threshold:.2f}, {selection.seconds * 1000:.0f} ms); nothing changed.")
    return (*outputs[:-1], outputs[-1] + "  \n" + note)


def _after_step(session: ViewerSession, t, azimuth, elevation, distance):
    """Outputs after a step that changed the scene: _show's, the chat and an emptied splat viewer."""
    t = session.scene.check_time(min(float(t), session.scene.n_frames - 1))
    return (*_show(session, t, azimuth, elevation, distance, session.editor.last_selection()),
            chat_messages(session.session), None, None)


def apply_edit(session, query, operation, colour, view_state):
    """An edit from the buttons: one step of the session's history (typed "undo" takes it back too)."""
    session = _require(session)
    session.session.apply_edit(operation, query, colour)
    return _after_step(session, *view_state)


def undo_redo(session, t, azimuth, elevation, distance, *, action: str):
    """Undo or redo the last step, typed or pressed."""
    session = _require(session)
    session.session.undo() if action == "undo" else session.session.redo()
    return _after_step(session, t, azimuth, elevation, distance)


def show_splats(runner: Morpho4DRunner, session, t):
    session = _require(session)
    return str(write_scene_file(runner, session.session, scratch_path("morpho4d-", ".ply"),
                                session.scene.check_time(t))[0])


def follow_splats(runner: Morpho4DRunner, session, t, shown):
    """The splat viewer at the time slider's new time, when it shows splats (left empty when it does not)."""
    return show_splats(runner, session, t) if shown else gr.update()


def play(runner: Morpho4DRunner, session, azimuth, elevation, distance):
    session = _require(session)
    camera = view_camera(session, azimuth, elevation, distance)
    video = {"kind": "time", "fps": 8.0, "camera": camera_json(camera)}
    return str(write_scene_file(runner, session.session, scratch_path("morpho4d-", ".mp4"), video=video)[0])


def export_file(runner: Morpho4DRunner, session, t, *, kind: str):
    """The scene as PLY (this time), every frame's PLY in a ZIP, NPZ or an orbit video, each carrying the scene's
    recipe when it has one; returns the file and the recipe for people."""
    session = _require(session)
    t = session.scene.check_time(t)
    suffix = {"ply": ".ply", "zip": ".zip", "npz": ".npz"}.get(kind, ".mp4")
    video = {"kind": "orbit", "fps": 12.0, "t": t, "steps": 36, "size": VIEW_SIZE} if suffix == ".mp4" else None
    path, recipe = write_scene_file(runner, session.session, scratch_path("morpho4d-", suffix), t, video)
    shown = recipe_markdown(recipe, path) if recipe is not None else (
        "**No recipe**: this scene was opened from a file that carried none, so it cannot be replayed.")
    return str(path), shown


def plan_summary(plan: dict) -> str:
    """A plan (thesis eq. 11.5) in one line for people, e.g. "build: red ball (arc from right to left, quickly)"."""
    if plan.get("mode") == "GEN":
        objects = []
        for obj in plan.get("objects", []):
            motion = "stays still" if obj.get("still") or not obj.get("direction") else ", ".join(
                str(obj[k]) for k in ("path", "direction", "speed") if obj.get(k))
            objects.append(f"{obj.get('phrase') or obj.get('shape', 'object')} ({motion})")
        return "build: " + "; ".join(objects)
    targets = ", ".join(plan.get("targets") or [])
    parameters = ", ".join(f"{k} {v}" for k, v in (plan.get("parameters") or {}).items())
    return " ".join(part for part in (f"{plan.get('operation', 'edit')}", targets,
                                      f"({parameters})" if parameters else "") if part)


def chat_messages(language: CommandSession) -> list[dict]:
    """The command history as chat messages: each command, then what was done and the plan in one line (its
    JSON one click away)."""
    messages = []
    for record in language.history:
        messages.append({"role": "user", "content": record.command})
        parts = [("Done: " if record.ok else "Not done: ") + record.outcome]
        if record.note:
            parts.append(f"_{record.note}_")
        if record.plan is not None:
            parts.append(f"<details><summary>Plan: {plan_summary(record.plan)}</summary>\n\n"
                         f"```json\n{json.dumps(record.plan, indent=1)}\n```\n\n({record.backend} parser)</details>")
        messages.append({"role": "assistant", "content": "\n\n".join(parts)})
    return messages


def check_scene_words(runner: Morpho4DRunner, command) -> None:
    """The studio-wide vocabulary policy (:mod:`pipelines.vocabulary`) for a sentence that builds a scene: when
    the frames come from a closed vocabulary (the tiny pack's video model, or ShapesWorld's stand-in renderer),
    a scene whose objects name no noun the world can draw is refused, listing the nouns it knows; on an open
    vocabulary (a hub preset) nothing is refused. Edits and other commands pass through to the grammar."""
    from pipelines.morpho4d.commands import COLOUR_WORDS, NOUN_SHAPES, SIZE_WORDS, GrammarParser
    from pipelines.vocabulary import check_text, is_closed

    try:
        plan = GrammarParser().parse_plan(command)
    except InvalidInputError:
        return  # the session reports it in the chat
    if plan.mode != "GEN" or any(obj.shape for obj in plan.objects):
        return
    if runner.resolved_frames() != "stand-in":
        pipe = runner.manager.get("text-to-video")
        if not is_closed(pipe.tokenizer):
            return
    check_text(" ".join(obj.phrase for obj in plan.objects), what="The scene's objects",
               known={*NOUN_SHAPES, *COLOUR_WORDS, *SIZE_WORDS}, nouns=tuple(NOUN_SHAPES), closed=True)


def run_command(runner: Morpho4DRunner, view, command, t, azimuth, elevation, distance, progress=None):
    """Parse and carry out one command; the chat shows the plan and the outcome (or the error message)."""
    check_scene_words(runner, command)
    if view is None:
        view = ViewerSession(runner.new_session(), "No scene yet", 0.0, 1.0, 0.0, 0.0)
    session = view.session
    before = session.editor.base if session.editor is not None else None
    shown_before = session.scene
    report = (lambda stage, fraction: progress(fraction, desc=stage)) if progress is not None else None
    session.try_run(command, report)
    chat = chat_messages(session)
    if session.scene is None:  # nothing to show yet (e.g. an edit before any scene)
        return (view, chat, "", *([gr.update()] * 6), *([gr.update()] * 4))
    if session.editor.base is not before:  # a new scene: generated, regenerated, or one undone back
        label = f"Scene from: {session.gen.plan.describe()}" if session.gen is not None else view.label
        outputs = _loaded(new_view(session, label))
        return (outputs[0], chat, "", *outputs[1:])
    t = view.scene.check_time(min(float(t), view.scene.n_frames - 1))
    shown = _show(view, t, azimuth, elevation, distance, view.editor.last_selection())
    splats = None if session.scene is not shown_before else gr.update()  # stale after an edit: emptied
    return (shown[0], chat, "", *shown[1:], splats, splats, *([gr.update()] * 4))


def lift_video(runner: Morpho4DRunner, video_path, view, progress=None):
    """"Lift to 4D" from the Mojito tab: its video (remade from the recipe the MP4 carries) fitted as moving
    Gaussians along its trajectory, in this user's session."""
    if not video_path:
        raise InvalidInputError("Generate a video in the Mojito tab first.")
    recipe = read_recipe(video_path)
    if recipe.method != "mojito":
        raise InvalidInputError(f"Lift to 4D takes a Mojito video; this file was made by {recipe.method}.")
    session = view.session if view is not None else runner.new_session()
    report = (lambda stage, fraction: progress(fraction, desc=stage)) if progress is not None else None
    runner.lift(recipe.request, session, report)
    outputs = _loaded(new_view(session, f"Mojito video lifted to 4D: {recipe.request['prompt']}"))
    return (outputs[0], chat_messages(session), "", *outputs[1:])


def lift_photo(runner: Morpho4DRunner, image, objects_text, view=None, progress=None):
    """"Lift a photo": the picture fitted as a static scene of Gaussians with the preset's depth model and features
    from the preset's CLIP, in this user's session; ``objects_text`` names what it shows, comma-separated ("woman,
    flag"): the names edits' queries are matched against."""
    names = [name.strip() for name in str(objects_text or "").split(",") if name.strip()]
    session = view.session if view is not None else runner.new_session()
    report = (lambda stage, fraction: progress(fraction, desc=stage)) if progress is not None else None
    runner.lift_photo(image, names, session, report)
    outputs = _loaded(new_view(session, f"Photo lifted to 3D: {', '.join(session.scene.object_names[1:])}"))
    return (outputs[0], chat_messages(session), "", *outputs[1:])


def to_mojito(view) -> tuple[str, np.ndarray, dict[str, list[list[float]]]]:
    """What "Send to Mojito" gives: the scene's prompt, its first frame from the home camera and, for a
    generated scene, each object's per-frame boxes as keyframes over Mojito's 16 frames."""
    view = _require(view)
    scene, gen = view.scene, view.session.gen
    first = to_uint8(render(scene, scene.camera.resized(VIEW_SIZE, VIEW_SIZE), 0.0))
    if gen is None:
        return str(scene.meta.get("caption", "")), first, {}
    last = max(len(next(iter(gen.boxes.values()))) - 1, 1)
    objects = {name: [[round(t * (MOJITO_FRAMES - 1) / last), *map(float, box)] for t, box in enumerate(boxes)]
               for name, boxes in gen.boxes.items()}
    return gen.video.prompt, first, objects


def create_tab(context: StudioContext) -> dict:
    """Build the Morpho4D tab inside the current ``gr.Blocks`` (models load on first use, once); returns the
    components and handlers other tabs send to."""
    examples = example_labels()
    runner = make_runner(context)

    def handler(function, *bound, **bound_keywords):
        """``function`` with ``bound`` arguments, errors shown to the user (a named function for the log)."""
        wrapped = functools.partial(function, *bound, **bound_keywords)
        wrapped.__name__ = function.__name__
        return shows_errors(wrapped)

    with gr.Tab(TITLE, id="morpho4d"):
        gr.Markdown(INTRO)
        with gr.Accordion("How it works", open=False, elem_id="morpho4d-how"):
            gr.Markdown(HOW_IT_WORKS + "\n" + VIEWER_INTRO)
        state = session_state()
        gr.Markdown(source_notice(runner), elem_id="morpho4d-source")
        chat = gr.Chatbot(label="Commands and what was done (click a plan to see its JSON)", height=320,
                          elem_id="morpho4d-chat")
        with gr.Row():
            command = gr.Textbox(show_label=False, scale=5, elem_id="morpho4d-command", max_lines=2,
                                 placeholder="a red ball bounces quickly from right to left  |  make the ball blue")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="morpho4d-send")
            stop = gr.Button("Stop", variant="stop", scale=1, elem_id="morpho4d-stop")
        gr.Examples(["a red ball bounces quickly from right to left while a blue box stays still",
                     "a big green triangle slides upward slowly", "make the ball blue", "delete the box",
                     "extract the ball", "now make it go left to right", "undo"], inputs=command,
                    label="Commands to try")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                example = gr.Dropdown(list(examples), value=next(iter(examples)), label="Example scene")
                load = gr.Button("Load example", variant="primary")
                upload = components.File(label="Open a scene (.npz) or a 3DGS splat (.ply)", file_types=[".npz", ".ply"],
                                 type="filepath")
                if ASSETS.is_dir():
                    gr.Examples(sorted(str(p) for p in ASSETS.iterdir() if p.suffix in (".npz", ".ply")),
                                inputs=upload, label="Example files")
                with gr.Accordion("Lift a photo to 3D", open=False):
                    photo = gr.Image(label="Photo (its centre square is fitted)", type="numpy",
                                     elem_id="morpho4d-photo")
                    photo_objects = gr.Textbox(label="What it shows (comma-separated names to edit by)",
                                               placeholder="woman, flag", elem_id="morpho4d-photo-objects")
                    photo_button = gr.Button("Lift to 3D (preset's depth and CLIP features)")
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
            zip_button = gr.Button("Export every frame (PLY zip)", elem_id="morpho4d-ply-zip")
            npz_button = gr.Button("Export scene (.npz)")
            video_button = gr.Button("Export orbit video (.mp4)")
            mojito_button = gr.Button("Send to Mojito (prompt, first frame, trajectories)", elem_id="morpho4d-to-mojito")
            download = gr.File(label="Download", interactive=False, elem_id="morpho4d-download")
        recipe = gr.Markdown("", elem_id="morpho4d-recipe")

        shown = [state, view, plot, status, history]
        changed = shown + [splats, video]
        stepped = shown + [chat, splats, video]
        sliders = [time_slider, azimuth, elevation, distance]

        def command_handler(session, text, t, az, el, dist, progress=gr.Progress()):
            return run_command(runner, session, text, t, az, el, dist, progress)

        command_outputs = [state, chat, command, view, plot, status, history, splats, video, *sliders]
        command_run = stoppable(handler(command_handler), "morpho4d-command")
        sending = send.click(command_run, inputs=[state, command, *sliders], outputs=command_outputs,
                             api_name="morpho4d_command", show_progress_on=[chat], **HEAVY)
        submitting = command.submit(command_run, inputs=[state, command, *sliders],
                                    outputs=command_outputs, api_name=False, show_progress_on=[chat], **HEAVY)
        wire_stop(stop, "morpho4d-command", [sending, submitting])

        def photo_handler(image, objects_text, session, progress=gr.Progress()):
            return lift_photo(runner, image, objects_text, session, progress)

        photo_button.click(handler(photo_handler), inputs=[photo, photo_objects, state], outputs=command_outputs,
                           api_name="morpho4d_lift_photo", show_progress_on=[chat], **HEAVY)
        load.click(handler(load_example, runner, examples=examples), inputs=[example, state],
                   outputs=changed + sliders, api_name="morpho4d_load_example", **SCENES)

        def open_handler(path, session, progress=gr.Progress()):
            return open_file(runner, path, session, progress)

        upload.upload(handler(open_handler), inputs=[upload, state], outputs=changed + sliders,
                      api_name="morpho4d_open", **SCENES)
        splat_button.click(handler(show_splats, runner), inputs=[state, time_slider], outputs=splats, api_name=False,
                           **SCENES)
        time_slider.change(handler(follow_splats, runner), inputs=[state, time_slider, splats], outputs=splats,
                           trigger_mode="always_last", show_progress="hidden", api_name=False, **CHEAP)
        for slider in sliders:
            slider.change(handler(refresh), inputs=[state, *sliders], outputs=shown, trigger_mode="always_last",
                          show_progress="hidden", api_name=False, **CHEAP)
        # The same as a named endpoint (what the load bench calls as its cheap event).
        view_button = gr.Button("Render view", visible=False)
        view_button.click(handler(refresh), inputs=[state, *sliders], outputs=shown, api_name="morpho4d_view", **CHEAP)
        preview_button.click(handler(preview), inputs=[state, query, *sliders], outputs=shown, api_name=False, **CHEAP)

        def apply_handler(session, query_text, op, colour_text, t, az, el, dist):
            return apply_edit(session, query_text, op, colour_text, (t, az, el, dist))

        apply_button.click(handler(apply_handler), inputs=[state, query, operation, colour, *sliders],
                           outputs=stepped, api_name="morpho4d_edit", **SCENES)
        query.submit(handler(apply_handler), inputs=[state, query, operation, colour, *sliders],
                     outputs=stepped, api_name=False, **SCENES)
        undo_button.click(handler(undo_redo, action="undo"), inputs=[state, *sliders],
                          outputs=stepped, api_name="morpho4d_undo", **SCENES)
        redo_button.click(handler(undo_redo, action="redo"), inputs=[state, *sliders],
                          outputs=stepped, api_name="morpho4d_redo", **SCENES)
        play_button.click(handler(play, runner), inputs=[state, azimuth, elevation, distance], outputs=video,
                          api_name=False, **SCENES)
        for button, kind in ((ply_button, "ply"), (zip_button, "zip"), (npz_button, "npz"), (video_button, "video")):
            button.click(handler(export_file, runner, kind=kind), inputs=[state, time_slider],
                         outputs=[download, recipe], api_name=False, **SCENES)

    def lift_handler(video_path, session, progress=gr.Progress(track_tqdm=True)):
        return lift_video(runner, video_path, session, progress)

    return {"state": state, "chat": chat, "lift": handler(lift_handler), "lift_outputs": command_outputs,
            "to_mojito": mojito_button, "to_mojito_values": handler(to_mojito)}
