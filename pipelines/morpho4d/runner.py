"""Morpho4D's runner: sessions over the shared models, and a scene's recipe replayed.

:class:`Morpho4DRunner` makes each user's :class:`~.language.CommandSession` (the one session object:
scene, editor and one history) with models from the shared :class:`~pipelines.models.ModelManager`: the
frame source is Mojito's pipeline that the Mojito tab uses (loaded once, from the preset), the depth model
is the preset's, the command parser the grammar (or the preset's local LLM). GEN fits dynamic Gaussians
(thesis eq. 11.8-11.12) to the frames; :meth:`Morpho4DRunner.lift_photo` fits a static scene to a photo with
features from the preset's CLIP; edits select by feature similarity (eq. 11.13-11.14).

A :class:`Morpho4DRequest` is a scene's recipe: where it started (an example, a lifted Mojito video or
photo, or nothing when its first command generates it), every step that succeeded (typed commands and button edits, undo and redo
included), the frame source and the generation settings. :meth:`Morpho4DRunner.run` replays it; the NPZ and
PLY files the studio writes carry it, and ``python -m pipelines.morpho4d rerun FILE`` remakes them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

from ..errors import InvalidInputError, ModelNotFoundError
from ..models import ModelManager
from ..recipes import Recipe, digest, model_hashes
from .commands import GrammarParser, LLMCommandParser
from .fitting import FitConfig
from .generation import GenConfig, MojitoSource, ShapesWorldStandIn
from .language import CommandRecord, CommandSession
from .scene import Scene4D

FRAME_SOURCES = ("auto", "mojito", "stand-in")


@dataclass
class Morpho4DRequest:
    """A scene's recipe (module docstring)."""

    # Steps in order: {"command": text} or {"edit": {"operation": ..., "query": ..., "colour": ...}}.
    actions: list[dict] = field(default_factory=list)
    # Where the scene started: None (the first command generates it), {"example": {seed, size, n_frames,
    # n_gaussians}} (a ShapesWorld example scene), {"mojito": MojitoRequest as JSON} (a Mojito video lifted
    # to 4D along its trajectory) or {"photo": {"image": base64 PNG of the fitted frame, "objects": names}}.
    origin: dict | None = None
    # Frames of GEN: "mojito" (generated), "stand-in" (ShapesWorld's renderer) or "auto" (Mojito when the
    # preset has a text-to-video model).
    frames: str = "auto"
    # GenConfig as plain JSON (None: the defaults).
    config: dict | None = None


@dataclass
class Morpho4DReport:
    session: CommandSession
    # The scene after the last step (None when no step made one).
    scene: Scene4D | None
    records: list[CommandRecord]
    seconds: float


def config_from_json(data: dict | None) -> GenConfig:
    if data is None:
        return GenConfig()
    try:
        return GenConfig(**{**data, "fit": FitConfig(**data["fit"])})
    except (KeyError, TypeError) as error:
        raise InvalidInputError(f"A Morpho4D generation config is malformed ({error}).") from None


def example_scene(seed: int, size: int, n_frames: int, n_gaussians: int) -> Scene4D:
    """A ShapesWorld video turned into moving 3D Gaussians (the examples of the viewer)."""
    from .shapes4d import build_shapes_scene

    return build_shapes_scene(seed=int(seed), size=int(size), n_frames=int(n_frames), n_gaussians=int(n_gaussians))


class Morpho4DRunner:
    """Morpho4D over one model manager (module docstring).

    ``frames`` and ``config`` are the defaults of new sessions; ``parser`` is "grammar" or "llm".
    """

    method = "morpho4d"

    def __init__(self, manager: ModelManager, *, frames: str = "auto", config: GenConfig | None = None,
                 parser: str = "grammar") -> None:
        if frames not in FRAME_SOURCES:
            raise InvalidInputError(f"frames must be one of {FRAME_SOURCES}, got {frames!r}.")
        if parser not in ("grammar", "llm"):
            raise InvalidInputError(f"parser must be 'grammar' or 'llm', got {parser!r}.")
        self.manager = manager
        self.frames = frames
        self.config = config or GenConfig()
        self.parser_name = parser

    # ----- models
    def resolved_frames(self, frames: str | None = None) -> str:
        """"mojito" or "stand-in": "auto" is Mojito when the preset's text-to-video model is there."""
        frames = frames or self.frames
        if frames == "auto":
            return "mojito" if self.manager.is_available("text-to-video") else "stand-in"
        return frames

    def frame_source(self, frames: str | None = None):
        """Mojito's pipeline (the one the Mojito tab uses) or ShapesWorld's labelled stand-in."""
        if self.resolved_frames(frames) == "stand-in":
            return ShapesWorldStandIn()
        try:
            return MojitoSource.from_manager(self.manager)
        except (ModelNotFoundError, OSError) as error:
            raise ModelNotFoundError(f"Morpho4D's frames need the preset's text-to-video model: {error}") from None

    def depth_model(self):
        from .depth import DepthEstimator

        return DepthEstimator.from_manager(self.manager)

    def parser(self):
        if self.parser_name == "llm":
            return self.manager.derived("morpho4d-llm-parser", lambda: LLMCommandParser.from_manager(self.manager))
        return GrammarParser()

    # ----- sessions
    def new_session(self, frames: str | None = None, config: GenConfig | None = None) -> CommandSession:
        """An empty session; models load when its first GEN runs."""
        frames = self.resolved_frames(frames)
        session = CommandSession(self.parser(), _LazySource(self, frames), _LazyDepth(self),
                                 config or self.config, manager=self.manager)
        session.frames = frames
        return session

    def load_example(self, seed: int, size: int, n_frames: int, n_gaussians: int,
                     session: CommandSession | None = None) -> CommandSession:
        """``session`` (default: a new one) on a ShapesWorld example scene, its history started afresh."""
        session = session or self.new_session()
        spec = {"seed": int(seed), "size": int(size), "n_frames": int(n_frames), "n_gaussians": int(n_gaussians)}
        session.load(example_scene(**spec), {"example": spec})
        return session

    def lift(self, mojito_request: dict, session: CommandSession | None = None, progress=None) -> CommandSession:
        """"Lift to 4D": remake the Mojito video of ``mojito_request`` (its recipe; bit-identical on the same
        CPU and threads) and fit dynamic Gaussians to it along its trajectory (eq. 11.8-11.12) in ``session``
        (default: a new one), whose history starts afresh with the video as its origin."""
        from ..mojito.runner import MojitoRequest, MojitoRunner
        from .generation import GivenVideo, SourceVideo, generate_scene, plan_from_boxes

        session = session or self.new_session()
        request = MojitoRequest.from_json(mojito_request)
        request.with_unguided = False
        # The plan first (its objects must be ShapesWorld ones), then the video.
        trajectories, _ = MojitoRunner.check(request)
        plan = plan_from_boxes({t.phrase: t.boxes(int(request.n_frames)) for t in trajectories}, int(request.intensity))
        started = time.perf_counter()
        if progress is not None:
            progress("remaking the Mojito video", 0.0)
        video = MojitoRunner(self.manager).run(request)
        frames = video.frames
        config = replace(session.config, n_frames=len(frames), size=frames.shape[1])
        source = GivenVideo(SourceVideo(frames, f"Mojito video ({request.prompt!r}, seed {request.seed})", True,
                                        request.prompt))
        gen = generate_scene(plan, source, self.depth_model(), config=config, progress=progress,
                             boxes=video.boxes, manager=self.manager)
        session.load(gen.scene, {"mojito": request.to_json()}, gen)
        scene = gen.scene
        session.history.append(CommandRecord(
            f"[lift to 4D: {request.prompt}]", plan.to_dict(), "trajectory", f"Fitted the Mojito video: "
            f"{scene.n_gaussians:,} Gaussians over {scene.n_frames} frames; objects: {', '.join(scene.object_names[1:])}.",
            True, time.perf_counter() - started))
        return session

    def lift_photo(self, image, objects, session: CommandSession | None = None, progress=None) -> CommandSession:
        """"Lift a photo": fit a static scene of Gaussians to ``image`` with the preset's depth model and learned
        features from the preset's CLIP (:func:`~.generation.scene_from_photo`), its objects named ``objects``
        ("woman", ...), in ``session`` (default: a new one), whose history starts afresh with the photo's fitted
        frame as its origin. Edits then select by feature similarity (eq. 11.13-11.14); motion edits need a
        generated scene."""
        from ..recipes import encode_image
        from .generation import check_object_names, scene_from_photo, square_frame

        session = session or self.new_session()
        names = check_object_names(objects)
        started = time.perf_counter()
        frame = square_frame(image, int(session.config.size))
        scene = scene_from_photo(image, names, self.depth_model(), self.manager, config=session.config,
                                 progress=progress)
        session.load(scene, {"photo": {"image": encode_image(frame), "objects": list(names)}})
        session.history.append(CommandRecord(
            "[lift a photo]", None, "photo", f"Fitted the photo: {scene.n_gaussians:,} Gaussians; objects: "
            f"{', '.join(names)}; features: the preset's CLIP ({scene.feature_space}); no detector.",
            True, time.perf_counter() - started))
        return session

    def load_ply(self, scene: Scene4D, name: str, session: CommandSession | None = None,
                 progress=None) -> CommandSession:
        """A static ``scene`` read from an uploaded 3DGS PLY ``name`` (:func:`~.export.read_ply`, which checks the
        file as hostile input) in ``session`` (default: a new one), its history started afresh, with features
        distilled from the preset's CLIP on rendered views (:func:`~.distil.distil_features`, eq. 11.9-11.12) so
        that typed and button edits select by text (eq. 11.13-11.14). Where the preset's CLIP cannot be loaded
        the scene opens without features, viewable and exportable, and the history (the chat) and
        ``scene.meta["features"]`` say why it cannot be edited by text. A PLY carries no recipe: the session
        cannot be replayed."""
        from .distil import distil_features

        session = session or self.new_session()
        started = time.perf_counter()
        try:
            if not self.manager.is_available("clip"):
                raise ModelNotFoundError(f"the preset {self.manager.preset!r} has no CLIP model installed")
            scene = distil_features(scene, self.manager, progress=progress)
            names = scene.object_names[1:]
            outcome = (f"Opened {name}: {scene.n_gaussians:,} Gaussians; features {scene.meta['features']}. "
                       + (f"Edit by these names, e.g. 'make the {names[0]} blue'." if names else
                          "The CLIP model recognised no object in it, so text queries have nothing to select."))
        except (ModelNotFoundError, OSError) as error:
            scene = replace(scene, meta={**scene.meta, "features": (
                f"none ({error}): without the preset's CLIP this PLY can be viewed and exported but not edited "
                "by text")})
            outcome = f"Opened {name}: {scene.n_gaussians:,} Gaussians; features {scene.meta['features']}."
        session.load(scene, {"file": name})
        session.history.append(CommandRecord(f"[open {name}]", None, "file", outcome, True,
                                             time.perf_counter() - started))
        return session

    def request_of(self, session: CommandSession) -> Morpho4DRequest:
        """The recipe of the session's scene; :class:`InvalidInputError` for a scene opened from a file
        that carried no recipe (nothing says how it was made)."""
        if session.origin is not None and "file" in session.origin:
            raise InvalidInputError(f"This scene was opened from {session.origin['file']}, which carried no "
                                    "recipe; its edits can be saved but not replayed.")
        return Morpho4DRequest([dict(a) for a in session.actions], session.origin,
                               session.frames, asdict(session.config))

    def recipe(self, session: CommandSession, output_sha256: str, **extra) -> Recipe | None:
        """The recipe for a file written from the session (None when the scene cannot be replayed)."""
        try:
            request = asdict(self.request_of(session)) | extra
        except InvalidInputError:
            return None
        lifted = request["origin"] is not None and "mojito" in request["origin"]
        photo = request["origin"] is not None and "photo" in request["origin"]
        roles = ["depth"] + (["clip"] if photo else []) + \
            (["text-to-video"] if request["frames"] == "mojito" or lifted else [])
        return Recipe(self.method, request, self.manager.preset, model_hashes(self.manager, roles),
                      output_sha256=output_sha256)

    def run(self, request: Morpho4DRequest) -> Morpho4DReport:
        """Replay a recipe: the origin, then each step; raises the first step's typed error."""
        started = time.perf_counter()
        if request.frames not in FRAME_SOURCES:
            raise InvalidInputError(f"frames must be one of {FRAME_SOURCES}, got {request.frames!r}.")
        config = config_from_json(request.config)
        session = self.new_session(request.frames, config)
        if request.origin is not None:
            if "example" in request.origin:
                self.load_example(**request.origin["example"], session=session)
            elif "mojito" in request.origin:
                self.lift(request.origin["mojito"], session)
            elif "photo" in request.origin:
                from ..recipes import decode_image

                try:
                    image, objects = request.origin["photo"]["image"], request.origin["photo"]["objects"]
                except (KeyError, TypeError):
                    raise InvalidInputError("A photo origin needs its fitted frame ('image') and 'objects'.") from None
                self.lift_photo(decode_image(image), objects, session)
            else:
                raise InvalidInputError(f"Cannot rebuild a scene from origin {request.origin!r}.")
        for action in request.actions:
            if "command" in action:
                session.run(action["command"])
            elif "edit" in action:
                edit = action["edit"]
                session.apply_edit(edit["operation"], edit["query"], edit.get("colour"))
            else:
                raise InvalidInputError(f"Unknown step {action!r} in a Morpho4D recipe.")
        return Morpho4DReport(session, session.scene, list(session.history), time.perf_counter() - started)


class _LazySource:
    """The frame source, built on the first GEN (so a session that only edits loads no video model)."""

    def __init__(self, runner: Morpho4DRunner, frames: str) -> None:
        self.runner, self.frames = runner, frames

    def __call__(self, *args, **kwargs):
        return self.runner.frame_source(self.frames)(*args, **kwargs)


class _LazyDepth:
    """The depth model, loaded on the first GEN."""

    def __init__(self, runner: Morpho4DRunner) -> None:
        self.runner = runner

    def __call__(self, frames):
        return self.runner.depth_model()(frames)


def scene_digest(scene: Scene4D, t: float | None = None) -> str:
    """Digest of a scene's arrays (NPZ) or of its 3DGS columns at time ``t`` (PLY)."""
    from .export import ply_arrays
    from .scene import scene_arrays

    arrays = ply_arrays(scene, t) if t is not None else scene_arrays(scene)
    return digest(*(arrays[name] for name in sorted(arrays)))


def camera_json(camera) -> dict:
    return {"viewmat": camera.viewmat.tolist(), "K": camera.K.tolist(), "width": camera.width, "height": camera.height}


def write_scene_file(runner: Morpho4DRunner, session: CommandSession, path, t: float = 0.0,
                     video: dict | None = None):
    """The session's scene as NPZ, as PLY at time ``t``, as every frame's PLY in a ZIP, or as a video (MP4/WebM) of the sweep ``video``
    ({kind: "time"|"orbit", fps, t, steps, size, camera: camera_json or None}), carrying its recipe when the
    scene has one. Returns (path, recipe or None)."""
    from pathlib import Path

    from ..recipes import attach
    from ..video_io import encode_video
    from .export import PLY_PROPERTIES, ply_arrays, sweep_frames, write_ply, write_ply_zip
    from .scene import Camera, save_scene

    path = Path(path)
    scene = session.scene
    suffix = path.suffix.lower()
    if suffix == ".ply":
        written, extra = write_ply(scene, path, t), {"t": float(t)}
        output = scene_digest(scene, float(t))
    elif suffix == ".zip":
        written, extra = write_ply_zip(scene, path, path.stem), {}
        output = digest(*(ply_arrays(scene, float(f))[name] for f in range(scene.n_frames) for name in PLY_PROPERTIES))
    elif suffix == ".npz":
        written, extra = save_scene(scene, path), {}
        output = scene_digest(scene)
    elif suffix in (".mp4", ".webm"):
        if video is None:
            raise InvalidInputError("Writing a video needs its sweep (kind, fps, time, steps, size, camera).")
        spec = dict(video)
        camera = Camera(**spec["camera"]) if spec.get("camera") else None
        sweep = {"t": spec.get("t", 0.0), "steps": spec.get("steps"), "size": spec.get("size", 256)}
        frames = sweep_frames(scene, spec["kind"], camera, **sweep)
        written = encode_video(frames, path, fps=spec.get("fps", 8.0), codec="vp9" if suffix == ".webm" else "h264")
        extra, output = {"video": spec}, digest(frames)
    else:
        raise InvalidInputError(f"Morpho4D writes .npz, .ply, .zip, .mp4 or .webm, not {suffix or 'a file without suffix'}.")
    recipe = runner.recipe(session, output, **extra)
    if recipe is not None:
        attach(written, recipe)
    return written, recipe


def rerun(recipe: Recipe, out, manager: ModelManager | None = None) -> str:
    """Replay a scene's recipe and write the same kind of output; returns the new output's digest."""
    request = dict(recipe.request)
    t, video = request.pop("t", 0.0), request.pop("video", None)
    runner = Morpho4DRunner(manager or ModelManager(recipe.preset))
    report = runner.run(Morpho4DRequest(**request))
    if report.scene is None:
        raise InvalidInputError("The recipe's steps made no scene.")
    _, made = write_scene_file(runner, report.session, out, t, video)
    return made.output_sha256
