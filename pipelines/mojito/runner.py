"""Mojito's runner: a prompt, keyframed boxes and an intensity in; a video, its measurements and recipe out.

:class:`MojitoRunner` builds one :class:`~.pipeline.MojitoPipeline` per model manager (the preset's
``text-to-video`` model, with the Motion Intensity Modulator when the pack has one), checks the request once
(phrases of the prompt, keyframes, intensity, guidance settings), generates with Directional Motion Control
(thesis eq. 10.5-10.7) and the MIM (eq. 10.8), and measures the result: per object mIoU, AP50, CD and the
plausible share against its boxes (the ShapesWorld detector, or the preset's OWL-ViT for other phrases), and
the Farneback intensity against the one asked. The studio, Morpho4D's frame source and
``python -m pipelines.mojito rerun`` call it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from ..errors import InvalidInputError
from ..vocabulary import check_text, notes_for
from ..models import ModelManager
from ..recipes import Recipe, digest, model_hashes
from ..zerogpu import gpu
from .evaluate import (
    TrackMetrics,
    detected_centres,
    motion_alignment,
    owlvit_detections,
    owlvit_from_manager,
    phrase_object,
    shapes_detections,
    track_metrics,
)
from ..attention.guidance import GuidanceConfig
from .pipeline import DEFAULT_STEPS, MojitoPipeline, mojito_from_manager
from .trajectory import Trajectory, check_phrase

N_FRAMES = 16


# Limits of a request's numbers (beyond them the video is noise: eta 1e9 diverges at the first step).
MAX_STRENGTH, MAX_SMOOTHNESS, MAX_STEPS = 10.0, 100.0, 200


@dataclass
class TrajectoryInput:
    """One object's path: a phrase of the prompt and keyframes ``[frame, x0, y0, x1, y1]`` (box fractions)."""

    phrase: str
    keyframes: list[list[float]]


@dataclass
class MojitoRequest:
    """Everything that decides the video (the recipe)."""

    prompt: str
    trajectories: list[TrajectoryInput] = field(default_factory=list)
    # Motion intensity 1-10 (eq. 10.8).
    intensity: int = 8
    # Directional Motion Control: eta (eq. 10.7), guided steps K, smoothness lambda (eq. 10.6).
    strength: float = GuidanceConfig().strength
    guided_steps: int = 10
    smoothness: float = 1.0
    steps: int = DEFAULT_STEPS
    seed: int = 0
    interpolation: str = "linear"
    n_frames: int = N_FRAMES
    # Also make the unguided video with the same seed (for comparison; it gets its own recipe).
    with_unguided: bool = False
    # False: no Directional Motion Control (the trajectories are ignored); the recipe of that comparison video.
    guided: bool = True

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> MojitoRequest:
        try:
            return cls(**{**data, "trajectories": [TrajectoryInput(**t) for t in data.get("trajectories", [])]})
        except TypeError as error:
            raise InvalidInputError(f"A Mojito request is malformed ({error}).") from None


@dataclass
class ObjectReport:
    phrase: str
    metrics: TrackMetrics
    # Detected centres [T, 2] and boxes [T, 4] as fractions (NaN where nothing was found).
    centres: np.ndarray
    boxes: np.ndarray


@dataclass
class MojitoReport:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    # Phrase -> target boxes [T, 4] (fractions), as guided.
    boxes: dict[str, np.ndarray]
    objects: list[ObjectReport]
    # Intensity given to the MIM (None: the model has none).
    intensity: int | None
    # Farneback intensity in level units and |measured - asked| / 10.
    measured: float
    alignment: float
    guidance: GuidanceConfig
    seconds: float
    unguided: np.ndarray | None
    unguided_seconds: float | None
    recipe: Recipe
    # The unguided video's own recipe (the request with guided=False), when it was made.
    unguided_recipe: Recipe | None = None
    # Sentences for people (words of the prompt the model does not know).
    notes: list[str] = field(default_factory=list)


class MojitoRunner:
    """Mojito over one model manager (module docstring)."""

    method = "mojito"

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    @property
    def pipe(self) -> MojitoPipeline:
        """The preset's text-to-video model as a MojitoPipeline, built once per manager (Morpho4D shares it)."""
        return self.manager.derived("mojito-pipeline", lambda: mojito_from_manager(self.manager))

    @staticmethod
    def check(request: MojitoRequest) -> tuple[list[Trajectory], GuidanceConfig]:
        """All checks of a request, before any model loads; returns its trajectories and guidance."""
        if not isinstance(request.prompt, str) or not request.prompt.strip():
            raise InvalidInputError("Write a prompt first.")
        trajectories = []
        for given in request.trajectories:
            if given.keyframes:
                check_phrase(request.prompt, given.phrase)
                trajectory = Trajectory.from_rows(given.phrase, given.keyframes, request.interpolation)
                trajectory.check_frames(int(request.n_frames))
                trajectories.append(trajectory)
        if not trajectories and request.guided:
            raise InvalidInputError("Add keyframes first: click the canvas at least twice, or apply a preset.")
        intensity = request.intensity
        if intensity is None or not float(intensity).is_integer() or not 1 <= intensity <= 10:
            raise InvalidInputError(f"Intensity must be an integer from 1 to 10, got {intensity!r}.")
        if request.strength is None or not np.isfinite(request.strength) or not 0 <= request.strength <= MAX_STRENGTH:
            raise InvalidInputError(f"Guidance strength must be a number from 0 to {MAX_STRENGTH:g}, got "
                                    f"{request.strength!r}.")
        if request.smoothness is None or not np.isfinite(request.smoothness) or not 0 <= request.smoothness <= MAX_SMOOTHNESS:
            raise InvalidInputError(f"Temporal smoothness must be a number from 0 to {MAX_SMOOTHNESS:g}, got "
                                    f"{request.smoothness!r}.")
        if not 0 <= int(request.guided_steps) <= MAX_STEPS:
            raise InvalidInputError(f"Guided steps must be from 0 to {MAX_STEPS}, got {request.guided_steps!r}.")
        if not 1 <= int(request.steps) <= MAX_STEPS:
            raise InvalidInputError(f"Denoising steps must be from 1 to {MAX_STEPS}, got {request.steps!r}.")
        guidance = GuidanceConfig(strength=float(request.strength), steps=int(request.guided_steps),
                                  smoothness=float(request.smoothness))
        return trajectories, guidance

    def detections(self, frames: np.ndarray, phrase: str):
        """The ShapesWorld detector for ShapesWorld phrases; the preset's OWL-ViT otherwise."""
        if phrase_object(phrase) != (None, None):
            return shapes_detections(frames, phrase)
        return owlvit_detections(frames, phrase, *owlvit_from_manager(self.manager))

    @gpu("mojito")
    def run(self, request: MojitoRequest, progress=None) -> MojitoReport:
        # 1. Check inputs (once, before any model loads).
        trajectories, guidance = self.check(request)
        intensity, steps, seed = int(request.intensity), int(request.steps), int(request.seed or 0)
        pipe = self.pipe
        vocabulary = check_text(request.prompt, pipe.tokenizer)  # the studio-wide policy: no known noun, refused
        # 2. Generate the guided video (and the unguided one when asked).
        share = 0.5 if request.with_unguided else 1.0  # of the progress bar per video

        def reporter(start: float, desc: str):
            """``progress`` after every denoising step (it may raise to stop the run), or None."""
            if progress is None:
                return None
            progress(start, desc=desc)
            return lambda step, total: progress(start + share * step / total, desc=desc)

        started = time.perf_counter()
        out = pipe(request.prompt, trajectories=trajectories if request.guided else None, intensity=intensity,
                   num_frames=int(request.n_frames), num_inference_steps=steps, guidance=guidance,
                   generator=torch.Generator().manual_seed(seed), callback=reporter(0.0, "guided video"))
        seconds = time.perf_counter() - started
        unguided, unguided_seconds = None, None
        if request.with_unguided:
            started = time.perf_counter()
            unguided = pipe(request.prompt, intensity=intensity, num_frames=int(request.n_frames),
                            num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                            callback=reporter(0.5, "unguided video")).frames
            unguided_seconds = time.perf_counter() - started
        # 3. Evaluate: each object against its boxes, the motion against the intensity.
        side = out.frames.shape[2]
        objects = []
        for phrase, boxes in out.boxes.items():
            found = self.detections(out.frames, phrase)
            detected = np.array([np.array(d.box) / side if d.box is not None else [np.nan] * 4 for d in found])
            objects.append(ObjectReport(phrase, track_metrics(found, boxes, side), detected_centres(found, side),
                                        detected))
        measured, alignment = motion_alignment(out.frames, intensity)
        models = model_hashes(self.manager, ["text-to-video"])
        recipe = Recipe(self.method, request.to_json(), self.manager.preset, models, output_sha256=digest(out.frames))
        unguided_recipe = None if unguided is None else Recipe(
            self.method, replace(request, with_unguided=False, guided=False).to_json(), self.manager.preset, models,
            output_sha256=digest(unguided))
        return MojitoReport(out.frames, out.boxes, objects, out.intensity, measured, alignment, guidance, seconds,
                            unguided, unguided_seconds, recipe, unguided_recipe, notes_for([vocabulary]))


def write_frames(frames: np.ndarray, path, recipe: Recipe, fps: float = 8.0):
    """``frames`` as MP4/WebM or GIF (by suffix) carrying ``recipe`` (container comment / GIF comment)."""
    from pathlib import Path

    from ..recipes import attach
    from .export import write_gif, write_video

    path = Path(path)
    written = write_gif(frames, path, fps=fps) if path.suffix.lower() == ".gif" else write_video(frames, path, fps=fps)
    return attach(written, recipe)


def rerun(recipe: Recipe, out, manager: ModelManager | None = None) -> str:
    """Remake a Mojito video from its recipe (the generated frames, at their size); returns their digest."""
    request = MojitoRequest.from_json(recipe.request)
    request.with_unguided = False
    report = MojitoRunner(manager or ModelManager(recipe.preset)).run(request)
    write_frames(report.frames, out, report.recipe)
    return report.recipe.output_sha256
