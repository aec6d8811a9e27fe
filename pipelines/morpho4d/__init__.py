"""Morpho4D (thesis ch. 11): dynamic 3D Gaussian scenes with features, rendered on a CPU or GPU,
edited by feature similarity, exported as PLY and video. No gradio here.

Modules: ``scene`` (Scene4D, Camera, npz save/load, limits), ``rendering`` (one ``render`` entry point;
gsplat on CUDA, the project's tile rasterizer on a CPU, a slow reference), ``fitting`` (eq. 11.8-11.12
from RGB-D + features, Open3D initialisation), ``queries`` (text -> query feature), ``editing``
(eq. 11.13-11.14, threshold search, recolour / delete / extract, undo/redo), ``export`` (3DGS PLY,
video sweeps), ``shapes4d`` (ShapesWorld videos as 4D scenes). ``python -m pipelines.morpho4d`` is the
command line.

Language (thesis 11.3.2-11.3.3): ``plan`` (the plan of eq. 11.5 and its JSON schema), ``commands`` (the
command parameterizer: a grammar parser and an optional local LLM back end), ``motion`` (words to
per-frame boxes with speed-dependent spacing), ``depth`` (the tiny depth model), ``generation`` (GEN:
frames from Mojito or a labelled stand-in -> depth -> features -> fitted Scene4D), ``language``
(:class:`CommandSession`: commands applied to a scene, motion edits that regenerate and replay).
"""

from .editing import (
    DEFAULT_THRESHOLDS,
    OPERATIONS,
    Edit,
    EditSession,
    NoMatchError,
    QueryMatch,
    Selection,
    apply_edits,
    gaussian_probabilities,
    match_query,
    parse_colour,
    select,
)
from .commands import (
    CommandError,
    CommandTooLongError,
    EmptyCommandError,
    GrammarParser,
    InstructionSmugglingError,
    LLMCommandParser,
    NonEnglishCommandError,
    ParseResult,
    UnparsedCommandError,
    parse_command,
)
from .export import PLY_PROPERTIES, export_video, read_ply, sweep_frames, write_ply, write_ply_sequence, write_ply_zip
from .fitting import FitConfig, FitFrames, FitResult, fit_scene, frames_from_scene, init_from_rgbd, scene_loss
from .generation import (
    STAND_IN_LABEL,
    GenConfig,
    GenResult,
    MojitoSource,
    ShapesWorldStandIn,
    UndrawableObjectError,
    default_source,
    generate_scene,
)
from .language import CommandRecord, CommandSession, NoSceneError, UnknownTargetError
from .motion import plan_trajectories
from .plan import PLAN_SCHEMA, GenObject, Plan, PlanError
from .queries import QueryEncoder, UnknownQueryError, WordQueryEncoder, default_encoder, encoder_for, register_encoder
from .rendering import MODES, RendererUnavailableError, rasterize, render, to_uint8
from .scene import (
    Camera,
    Scene4D,
    SceneLimits,
    SceneTooLargeError,
    load_scene,
    look_at,
    orbit_camera,
    save_scene,
)
from .shapes4d import build_shapes_scene, home_camera, truth_frames

__all__ = [
    "STAND_IN_LABEL",
    "CommandRecord",
    "CommandSession",
    "GenConfig",
    "GenResult",
    "MojitoSource",
    "NoSceneError",
    "ShapesWorldStandIn",
    "UndrawableObjectError",
    "UnknownTargetError",
    "default_source",
    "generate_scene",
    "plan_trajectories",
    "PLAN_SCHEMA",
    "CommandError",
    "CommandTooLongError",
    "EmptyCommandError",
    "GenObject",
    "GrammarParser",
    "InstructionSmugglingError",
    "LLMCommandParser",
    "NonEnglishCommandError",
    "ParseResult",
    "Plan",
    "PlanError",
    "UnparsedCommandError",
    "parse_command",
    "DEFAULT_THRESHOLDS",
    "MODES",
    "OPERATIONS",
    "PLY_PROPERTIES",
    "Camera",
    "Edit",
    "EditSession",
    "FitConfig",
    "FitFrames",
    "FitResult",
    "NoMatchError",
    "QueryEncoder",
    "QueryMatch",
    "RendererUnavailableError",
    "Scene4D",
    "SceneLimits",
    "SceneTooLargeError",
    "Selection",
    "UnknownQueryError",
    "WordQueryEncoder",
    "apply_edits",
    "build_shapes_scene",
    "default_encoder",
    "encoder_for",
    "export_video",
    "fit_scene",
    "frames_from_scene",
    "gaussian_probabilities",
    "home_camera",
    "init_from_rgbd",
    "load_scene",
    "look_at",
    "match_query",
    "orbit_camera",
    "parse_colour",
    "rasterize",
    "read_ply",
    "register_encoder",
    "render",
    "save_scene",
    "scene_loss",
    "select",
    "sweep_frames",
    "to_uint8",
    "truth_frames",
    "write_ply",
    "write_ply_sequence",
    "write_ply_zip",
]
