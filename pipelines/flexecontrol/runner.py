"""FlexEControl's runner: a prompt and condition maps in, an image, its numbers and its recipe out.

:class:`FlexEControlRunner` builds the pipeline once per model manager (the preset's ``control-base``
model with the preset's FlexEControl weights: shared Kronecker x low-rank adapters, thesis eq. 9.2), reads
each condition (a drawing, an upload run through the extractor, or a map), checks them once, generates,
and measures controllability (SSIM between condition edges and output edges, mIoU between a segmentation
condition and the detector's segmentation of the output, thesis table 9.2; and whether each drawn object
is where it was drawn). The studio, ``python -m pipelines.flexecontrol rerun`` and
``bench/flexecontrol.py`` call it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch

from ..errors import InvalidInputError
from ..vocabulary import check_text, notes_for
from ..models import ModelManager
from ..models.presets import get_preset, method_weights
from ..recipes import Recipe, decode_image, digest, encode_image, model_hashes
from ..shapesworld.detector import detect
from ..utils import to_rgb_array
from ..zerogpu import gpu
from .conditions import Condition, SemanticSegmenter, canonical_type, from_drawing, from_upload, prepare_conditions
from .metrics import drawn_objects, edge_ssim, placement_of_drawn, segmentation_miou
from .pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, FlexEControlPipeline


@dataclass
class ConditionInput:
    """One condition: its type, a picture and how it becomes a map, and how strongly and when it acts."""

    # canny, sketch, segmentation or depth (or an alias such as "edge").
    type: str
    # uint8 [H, W] or [H, W, 3]: a drawing on black, a picture to extract from, or the map itself.
    image: np.ndarray | None
    # "draw": a drawing on a black canvas; "upload": a photo or render run through the extractor;
    # "map": already a condition map (what a recipe stores).
    source: Literal["draw", "upload", "map"] = "draw"
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass
class FlexEControlRequest:
    """Everything that decides the image (the recipe)."""

    prompt: str
    conditions: list[ConditionInput] = field(default_factory=list)
    seed: int = 0
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    # Tie each object phrase of the prompt to the drawn object of its shape (regional attention).
    bind_objects: bool = True


@dataclass
class FlexEControlReport:
    image: np.ndarray  # uint8 [H, W, 3]
    # The condition maps as used (at the image size).
    conditions: list[Condition]
    # What people should know (resized uploads, no condition...).
    notes: list[str]
    # Per condition: objects drawn, which were found where drawn, and its measure (see controllability).
    rows: list[dict]
    seconds: float
    recipe: Recipe


def controllability(conditions: list[Condition], image: np.ndarray) -> list[dict]:
    """Per condition: the objects it shows and which of them the output has where they were drawn (with the
    drawn shape), and SSIM of its edges against the output's edges, or mIoU of its segmentation."""
    detections = detect(image)
    rows = []
    for number, condition in enumerate(conditions, start=1):
        objects = drawn_objects(condition.type, condition.image)
        found = placement_of_drawn(objects, image, detections)
        row = {"condition": number, "type": condition.type, "objects": objects, "found": found}
        if condition.type in ("canny", "sketch"):
            row.update(metric="SSIM (edges)", value=edge_ssim(condition.image, image))
        elif condition.type == "segmentation":
            row.update(metric="mIoU (segmentation)", value=segmentation_miou(condition.image, image))
        rows.append(row)
    return rows


def read_conditions(inputs: list[ConditionInput], size: int, depth_model=None,
                    segmenter: SemanticSegmenter | None = None) -> tuple[list[Condition], list[str]]:
    """Condition maps at ``size x size`` from drawings, uploads or maps, checked once; and notes for people.
    Uploads' depth and segmentation come from ``depth_model`` and ``segmenter`` when given (:func:`from_upload`)."""
    conditions, notes = [], []
    for number, given in enumerate(inputs, start=1):
        label = f"Condition {number} ({given.type})"
        if given.image is None:
            what = "upload an image, or switch the layer to 'draw'" if given.source == "upload" else \
                "its canvas is empty; draw on it or switch the layer to 'upload'"
            raise InvalidInputError(f"{label}: {what}.")
        if given.source == "upload":
            image = to_rgb_array(given.image)
            if image.shape[:2] != (size, size):
                notes.append(f"{label}: the {image.shape[1]}x{image.shape[0]} upload was resized to {size}x{size}.")
            array = from_upload(image, given.type, size, depth_model, segmenter)
        elif given.source == "draw":
            array = from_drawing(given.image, given.type, size)
        elif given.source == "map":
            array = np.asarray(given.image, dtype=np.uint8)
        else:
            raise InvalidInputError(f"{label}: source must be 'draw', 'upload' or 'map', got {given.source!r}.")
        conditions.append(Condition(given.type, array, given.weight, given.start, given.end))
    prepared, more = prepare_conditions(conditions, size)
    return prepared, notes + more


class FlexEControlRunner:
    """FlexEControl over one model manager (module docstring)."""

    method = "flexecontrol"

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    @property
    def pipe(self) -> FlexEControlPipeline:
        """The pipeline over the preset's control-base model, built once per manager."""

        def build() -> FlexEControlPipeline:
            weights = method_weights(self.manager.preset, self.method)
            return FlexEControlPipeline.from_pretrained(self.manager.get("control-base"), weights)

        return self.manager.derived("flexecontrol-pipeline", build)

    @property
    def image_size(self) -> int:
        """Side of the images (and maps) of the preset's control-base model; needs no FlexEControl weights, so
        maps can be extracted before any are trained."""
        base = self.manager.get("control-base")
        return int(base.unet.config.sample_size) * int(base.vae_scale_factor)

    def depth_model(self):
        """The preset's depth estimator, or None (uploads are then read as grey-level depth)."""
        if not self.manager.is_available("depth"):
            return None
        return self.manager.get("depth")

    def segmenter(self) -> SemanticSegmenter | None:
        """The preset's semantic segmenter with its image processor (the hub preset's SegFormer), or None: the
        tiny pack has none, and uploads are then segmented by ShapesWorld's colour detector."""
        if "segmentation" not in get_preset(self.manager.preset).sources:
            return None

        def build() -> SemanticSegmenter:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(self.manager.source_location("segmentation"))
            return SemanticSegmenter(self.manager.get("segmentation"), processor)

        return self.manager.derived("semantic-segmenter", build)

    def conditions(self, inputs: list[ConditionInput]) -> tuple[list[Condition], list[str]]:
        """The maps the inputs become (what "Extract maps" shows)."""
        uploaded = {canonical_type(c.type) for c in inputs if c.source == "upload"}
        return read_conditions(inputs, self.image_size, self.depth_model() if "depth" in uploaded else None,
                               self.segmenter() if "segmentation" in uploaded else None)

    @gpu("flexecontrol")
    def run(self, request: FlexEControlRequest, progress: bool = True,
            on_step: Callable[[int, int], None] | None = None) -> FlexEControlReport:
        """Generate and evaluate; ``progress`` shows a console bar, ``on_step(step, total)`` is called after every
        denoising step (a progress bar; it may raise to stop the run)."""
        # 1. Check inputs and read the maps (once).
        if not isinstance(request.prompt, str):
            raise InvalidInputError(f"The prompt must be text, got {type(request.prompt).__name__}.")
        vocabulary = check_text(request.prompt, self.pipe.tokenizer)  # the studio-wide policy: no known noun, refused
        conditions, notes = self.conditions(list(request.conditions))
        notes = notes_for([vocabulary]) + notes
        # 2. Generate.
        start = time.perf_counter()
        out = self.pipe(request.prompt, conditions, num_inference_steps=int(request.steps),
                        guidance_scale=float(request.guidance), generator=torch.Generator().manual_seed(int(request.seed)),
                        progress=progress, callback_on_step_end=on_step, bind_objects=bool(request.bind_objects))
        seconds = time.perf_counter() - start
        image = out.images[0]
        # 3. Evaluate and write the recipe (the maps as used, so a rerun needs no drawing or extractor).
        recipe = Recipe(self.method, request_to_json(request, out.conditions), self.manager.preset,
                        model_hashes(self.manager, ["control-base"]), output_sha256=digest(image))
        return FlexEControlReport(image, out.conditions, notes + out.notes, controllability(out.conditions, image),
                                  seconds, recipe)


def request_to_json(request: FlexEControlRequest, used: list[Condition]) -> dict:
    """The request as plain JSON with each condition as the map it became (base64 PNG, source 'map')."""
    data = asdict(FlexEControlRequest(request.prompt, [], int(request.seed), int(request.steps),
                                      float(request.guidance), bool(request.bind_objects)))
    data["conditions"] = [{"type": c.type, "image": encode_image(c.image), "source": "map", "weight": c.weight,
                           "start": c.start, "end": c.end} for c in used]
    return data


def request_from_json(data: dict) -> FlexEControlRequest:
    try:
        conditions = [ConditionInput(**{**c, "image": decode_image(c["image"])}) for c in data["conditions"]]
        return FlexEControlRequest(**{**data, "conditions": conditions})
    except (KeyError, TypeError) as error:
        raise InvalidInputError(f"A FlexEControl recipe is malformed ({error}).") from None


def rerun(recipe: Recipe, out, manager: ModelManager | None = None) -> str:
    """Remake a FlexEControl PNG from its recipe; returns the new image's digest."""
    from ..recipes import write_png

    report = FlexEControlRunner(manager or ModelManager(recipe.preset)).run(request_from_json(recipe.request),
                                                                         progress=False)
    write_png(report.image, out, report.recipe)
    return report.recipe.output_sha256
