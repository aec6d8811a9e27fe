"""GEN: a plan -> a fitted, editable Scene4D (thesis 11.3.2, scene generating module and "Scene Reconstruction").

1. **Trajectory** (:mod:`.motion`): per object, boxes per frame with speed-dependent spacing.
2. **Frames** from a :class:`FrameSource`:

   * :class:`MojitoSource`: Mojito's guided text-to-video generation (issue 6,
     :class:`~pipelines.mojito.pipeline.MojitoPipeline`) along the trajectories, with the Motion
     Intensity Modulator's level from the speed word; it also returns the generator's own
     cross-attention maps of each object phrase at the last denoising step.
   * :class:`ShapesWorldStandIn`: **not a generator**. ShapesWorld's renderer draws the plan's objects
     along the same boxes on a ShapesWorld background. It stands in while no text-to-video model is
     available (the tiny pack's ``shapes-t2v`` is missing), and every scene it makes says so
     (``meta["source"]``, ``meta["generated"] = False``).

   :func:`default_source` picks Mojito when the preset's text-to-video model loads, else the stand-in.
   **Check and repair** (:mod:`.frame_check`): the detector counts the objects of each frame against the
   plan; when an object is right in fewer than ``GenConfig.min_right_fraction`` of the frames, a generator
   makes the video again with another seed (at most ``GenConfig.regenerations`` times; the video with the most right
   frames is kept), and the frames still wrong are repaired along the trajectory's boxes (duplicates,
   fragments and unplanned objects erased, a missing or misshapen object drawn again). The scene says
   which frames were repaired and which seed made them (``meta["frame_check"]``).
3. **Depth** per frame (:class:`~.depth.DepthEstimator`, the tiny pack's GLPN offline), with each
   object's silhouette inflated toward the camera (:func:`~.depth.relief_depth`, ``GenConfig.relief``).
4. **Instances**: ShapesWorld's detector on each frame; each detection is matched to the plan's object
   of its colour (:func:`instance_masks`), and its mask gives that object's instance id. On the
   stand-in's frames, a frame where the detector misses an object takes its shape drawn in its
   trajectory box instead; generated frames do not (they do not follow the boxes exactly).
   **Tracks** (:func:`object_tracks`): each instance's connected pieces followed over frames. The tiny
   text-to-video model draws an object in pieces that appear, split and vanish (a blue square as one
   blob, then two, then a third); one centroid path per instance fitted them as one smeared blob and a
   recolour missed a third of the object. The fitting code gives each track its own motion basis and
   hides it in the frames where it is not seen (``Scene4D.visibility_logits``).
5. **Per-pixel features** F^s (eq. 11.12) in the query space of :mod:`.queries`, so that "the ball"
   compares with each Gaussian:

   * ``"detector"`` (what ``"auto"`` picks when the detector finds the plan's objects, also on Mojito's
     frames; where it finds none, as on a real text-to-video model's, ``"auto"`` picks ``"clip"``):
     ``F(u) = e_k`` inside object k's detector mask, ``e_background`` elsewhere. Another teacher, as the issue allows, and why: on Mojito's frames the
     attention maps (16x16 and 8x8 latents) spread each object's phrase over its neighbourhood, so the
     Gaussians around a recoloured ball were selected too and the edit bled into the background (the
     browser test measured a mean change of 3.0 away from the ball, bar 1.0); the detector's masks are
     also what the benchmark checks edits against.
   * ``"clip"`` (learned features, eq. 11.12): the preset's CLIP image encoder's window embeddings per
     pixel (:mod:`.clip_features`), queries by its text encoder; the detector teaches nothing (its
     instance masks still give each object its motion basis and track).
   * ``"attention"`` (on request, sources with maps): the generator's cross-attention map of each
     object's phrase, upsampled and normalised per frame to [0, 1], projected into the embedding
     space: ``F(u) = sum_k A_k(u) e_k + (1 - sum_k A_k(u)) e_background``, ``e`` the phrases'
     embeddings.
6. **Fitting** (:func:`~.fitting.fit_scene`, eq. 11.8-11.12) of a Scene4D to RGB, depth and features
   from the home camera of :mod:`.shapes4d`: first on frames of ``GenConfig.fit_size`` pixels, then a few
   steps at full size that start from that fit.
   Object Gaussians that never match their object's mask afterwards are pruned
   (:func:`~.fitting.prune_unmatched`).

A photo takes a shorter road (:func:`scene_from_photo`): its centre square is one frame, with depth and the
"clip" teacher's features (step 5) and no detector, fitted as in step 6 (:func:`fit_at_two_sizes`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import cv2
import numpy as np

from ..errors import InvalidInputError
from ..shapesworld.render import composite, render_background, shape_coverage, to_uint8
from ..shapesworld.scene import sample_background
from ..shapesworld.vocab import COLOURS, DIRECTIONS, SPEEDS
from ..utils import MIN_IMAGE_SIDE, to_rgb_array
from .depth import relief_depth
from .fitting import FitConfig, FitFrames, FitResult, fit_scene, prune_unmatched
from .frame_check import FrameCheck, box_centres, check_frames, owner, repair_frames
from .motion import object_name, plan_trajectories
from .plan import GenObject, Plan
from .queries import BACKGROUND, FILLER_WORDS, QueryEncoder, default_encoder
from .scene import Scene4D
from .shapes4d import home_camera

# Latent size of the Gaussians' features under the CLIP teacher (64-d targets; FitConfig.latent_dim).
CLIP_LATENT_DIM = 16
# Feature teachers of GenConfig.teacher (module docstring, step 5).
TEACHERS = ("auto", "attention", "detector", "clip")
STAND_IN_LABEL = "ShapesWorld renderer (stand-in, NOT generated: no text-to-video model is available)"
# Intensity level (Mojito's MIM, 1-10) per speed word: the middle of ShapesWorld's bins.
SPEED_INTENSITY = {"slowly": 2, "steadily": 5, "quickly": 9}
Progress = Callable[[str, float], None]
# Most object names a lifted photo takes (each is one more query alternative in every selection).
MAX_PHOTO_OBJECTS = 8


class UndrawableObjectError(InvalidInputError):
    """A GEN plan names an object the offline world cannot draw."""


@dataclass
class SourceVideo:
    """Frames for reconstruction and where they came from."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    label: str
    # True only for frames made by a generative model.
    generated: bool
    prompt: str
    # object name -> float32 [T, h, w] cross-attention maps (generators only).
    attention: dict[str, np.ndarray] | None = None


class FrameSource(Protocol):
    """Makes the frames of a plan along its trajectories."""

    label: str

    def __call__(self, plan: Plan, boxes: dict[str, np.ndarray], n_frames: int, size: int, seed: int,
                 progress: Progress | None = None) -> SourceVideo:
        ...


def plan_prompt(plan: Plan) -> str:
    """The caption a generator is given: the ShapesWorld grammar for drawable objects
    ("a red circle moves from left to right quickly while a blue square stays still")."""
    parts = []
    for i, obj in enumerate(plan.objects):
        name = object_name(obj)
        noun = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
        if obj.path == "still":
            parts.append(f"while {noun} stays still")
        else:
            verb = "bounces" if obj.path == "arc" else "moves"
            parts.append(f"{noun} {verb} {obj.direction} {obj.speed}")
    prompt = " ".join(parts)
    return prompt + (" " + " ".join(plan.scene_words) if plan.scene_words else "")


def check_drawable(objects: tuple[GenObject, ...]) -> None:
    """Raise :class:`UndrawableObjectError` unless every object has a ShapesWorld colour and shape."""
    for obj in objects:
        if obj.shape is None or obj.colour not in COLOURS:
            what = f"the colour {obj.colour!r}" if obj.shape is not None else f"{obj.phrase!r}"
            raise UndrawableObjectError(
                f"The offline world cannot draw {what}: it has circles (ball, disc), squares (box, block) and "
                f"triangles (pyramid) in {', '.join(COLOURS)}. Try 'a red ball bounces from right to left', or "
                "use the hub preset's video model on a GPU."
            )


class ShapesWorldStandIn:
    """The stand-in frame source (module docstring, step 2): ShapesWorld's renderer along the boxes."""

    label = STAND_IN_LABEL

    def __call__(self, plan, boxes, n_frames, size, seed, progress=None) -> SourceVideo:
        check_drawable(plan.objects)
        rng = np.random.default_rng([int(seed), 12])
        background = sample_background(rng, [obj.colour for obj in plan.objects])
        base = render_background(background, size)
        frames = []
        for t in range(n_frames):
            canvas = base.copy()
            for obj in reversed(plan.objects):  # the mover last, on top
                box = tuple(float(v) * size for v in boxes[object_name(obj)][t])
                composite(canvas, shape_coverage(obj.shape, box, size), COLOURS[obj.colour])
            frames.append(to_uint8(canvas))
        if progress:
            progress("frames (stand-in renderer)", 1.0)
        return SourceVideo(np.stack(frames), self.label, False, plan_prompt(plan))


# eta of eq. 10.7 for GEN's frames. A plan's boxes cross most of the frame in 8 frames ("quickly": 0.76 of the
# width), further per frame than the Mojito tab's paths; with shapes-t2v v2 and Mojito's eta 0.1 the object stayed
# near the middle in 3 of the GEN bench's 22 prompts (docs/notes/morpho4d_issue23.md, section 11).
GEN_STRENGTH = 0.4


class MojitoSource:
    """Mojito's guided generation (module docstring, step 2) with a :class:`MojitoPipeline`."""

    def __init__(self, pipe, num_inference_steps: int = 20, guidance_scale: float = 7.5, guidance=None) -> None:
        from ..attention.guidance import GuidanceConfig

        self.pipe = pipe
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        # Directional Motion Control (eq. 10.5-10.7 = 11.7): Mojito's defaults but a stronger step (GEN_STRENGTH),
        # guided steps capped by the steps.
        guidance = guidance or GuidanceConfig(strength=GEN_STRENGTH)
        self.guidance = replace(guidance, steps=min(guidance.steps, self.num_inference_steps))
        self.label = f"Mojito guided text-to-video ({type(pipe.unet).__name__}, {num_inference_steps} steps)"

    @classmethod
    def from_preset(cls, preset: str = "tiny", **kwargs) -> MojitoSource:
        from ..models import ModelManager

        return cls.from_manager(ModelManager(preset), **kwargs)

    @classmethod
    def from_manager(cls, manager, **kwargs) -> MojitoSource:
        """Over the Mojito pipeline a shared model manager holds (the Mojito tab's; loaded once)."""
        from ..mojito.runner import MojitoRunner

        return cls(MojitoRunner(manager).pipe, **kwargs)

    def __call__(self, plan, boxes, n_frames, size, seed, progress=None) -> SourceVideo:
        import torch

        prompt = plan_prompt(plan)
        mover = plan.objects[0]
        callback = (lambda step, total: progress("generating frames (Mojito)", step / total)) if progress else None
        out = self.pipe(prompt, {name: b for name, b in boxes.items()}, SPEED_INTENSITY[mover.speed],
                        num_frames=n_frames, num_inference_steps=self.num_inference_steps,
                        guidance_scale=self.guidance_scale, guidance=self.guidance, height=size, width=size,
                        generator=torch.Generator().manual_seed(int(seed)), return_attention=True, callback=callback)
        return SourceVideo(out.frames, self.label, True, prompt, out.attention)


class GivenVideo:
    """A video made elsewhere (a Mojito video to lift to 4D) as a frame source: returns it as it is."""

    def __init__(self, video: SourceVideo) -> None:
        self.video = video

    def __call__(self, plan, boxes, n_frames, size, seed, progress=None) -> SourceVideo:
        if self.video.frames.shape[:3] != (n_frames, size, size):
            raise InvalidInputError(f"The video is {self.video.frames.shape[:3]}; the fit expects "
                                    f"{(n_frames, size, size)} (frames, height, width).")
        return self.video


def plan_from_boxes(boxes: dict[str, np.ndarray], intensity: int) -> Plan:
    """A GEN plan for a video made along ``boxes`` (phrase -> ``[T, 4]`` fractions): each phrase a ShapesWorld
    object ("red circle"), moving the way its box centre went (the closest of DIRECTIONS; still when it moved
    less than a twentieth of the frame) at the speed word of ``intensity`` (1-10), sized by its box."""
    from ..mojito.evaluate import phrase_object
    from .motion import SIZE_SIDES

    objects = []
    for phrase, track in boxes.items():
        colour, shape = phrase_object(phrase)
        if colour is None or shape is None or phrase != f"{colour} {shape}":
            raise UndrawableObjectError(f"Lifting to 4D needs each object named as a ShapesWorld colour and shape "
                                        f"('red circle'), got {phrase!r}.")
        track = np.asarray(track, dtype=np.float64)
        centres = (track[:, :2] + track[:, 2:]) / 2
        shift = centres[-1] - centres[0]
        side = float(np.mean(track[:, 2:] - track[:, :2]))
        size = min(SIZE_SIDES, key=lambda name: abs(SIZE_SIDES[name] - side))
        if np.hypot(*shift) < 0.05:
            objects.append(GenObject(phrase, colour, shape, None, None, "still", size))
            continue
        direction = max(DIRECTIONS, key=lambda name: float(np.dot(shift, DIRECTIONS[name])))
        speed = next(word for word, levels in SPEEDS.items() if int(intensity) in levels)
        objects.append(GenObject(phrase, colour, shape, direction, speed, "straight", size))
    if not objects:
        raise InvalidInputError("The video has no trajectory to lift.")
    objects.sort(key=lambda obj: obj.path == "still")  # the moving object first, as the grammar's plans
    return Plan("GEN", tuple(objects))


def default_source(preset: str = "tiny") -> FrameSource:
    """Mojito when the preset's text-to-video model is there, else the labelled stand-in."""
    from ..errors import ModelNotFoundError

    try:
        return MojitoSource.from_preset(preset)
    except (ModelNotFoundError, OSError, ImportError):
        return ShapesWorldStandIn()


@dataclass
class GenConfig:
    """Settings of :func:`generate_scene`."""

    # Frames and frame side (pixels) of the video.
    n_frames: int = 8
    size: int = 64
    # Feature teacher: "auto" ("detector" where the detector finds the plan's objects in the frames; on Mojito's
    # frames attention maps made edits bleed into the background, docs/notes/morpho4d_language.md; "clip", the
    # preset's CLIP, where it finds none of them: a real text-to-video model's objects are no ShapesWorld
    # shapes), "attention", "detector", "clip" (learned, eq. 11.12).
    teacher: str = "auto"
    # The "clip" teacher's windows zoomed to CLIP's input (clip_features): on the stand-in's frames of 8 GEN
    # prompts the query pixels' recall went from 0.798 in place to 0.960 at precision 0.995.
    clip_zoom: bool = True
    # Fitting (eq. 11.8-11.12): ``fit.steps`` on frames of ``fit_size`` pixels, then ``refine_steps`` at full size
    # starting from that fit (a warm start). Measured under load on the stand-in's frames of two prompts (docs/notes/
    # morpho4d_issue23.md): 240 steps at 64 px with 4000 Gaussians took 64-73 s of fitting; 60 steps at 32 px and
    # 30 at 64 px with 1200 Gaussians 13-14 s, with the same truth recall (1.0) and pixel edit recall (~1.0;
    # 0.83-0.93 without the 64 px steps). Fewer Gaussians at 64 px made rim Gaussians half object, half background:
    # a recolour bled into the background (browser test); the 64 px steps keep the rims within the bar.
    # With learned (CLIP) features, 30 + 60 steps and 30x / 10x the features' and decoder's learning rates raised
    # the truth recall of the stand-in's 22 prompts from about 0.6 to 0.88 at the same precision (0.98): the
    # distilled features had stayed near their initial values, and the 32 px frames blur the rims.
    fit: FitConfig = field(default_factory=lambda: FitConfig(steps=30, frames_per_step=2, init_gaussians=1200,
                                                             init_frames=3, depth_weight=0.2, converge_window=16,
                                                             lr_features=3e-2, lr_decoder=1e-2))
    seed: int = 0
    # Frame check (module docstring, step 2): when an object is right in fewer than this fraction of the frames, a
    # generator's video is made again with another seed, at most ``regenerations`` times. The default asks for
    # one right frame per object, which the repair copies the object's look from: a second video costs as much
    # as the first (13 s of a 20 s GEN), and most videos that have one right frame are repaired well.
    min_right_fraction: float = 0.125
    regenerations: int = 1
    # Side (pixels) of the frames the fit sees first (None: ``size``), and the steps at full size that follow from
    # that fit (0: none). The scene keeps the camera of ``size``.
    fit_size: int | None = 32
    refine_steps: int = 60
    # Silhouette relief of objects (:func:`~.depth.relief_depth`; 0 = flat layers, 1 = a disc becomes a hemisphere).
    relief: float = 1.0


@dataclass
class GenResult:
    """A generated scene and everything that made it."""

    scene: Scene4D
    plan: Plan
    video: SourceVideo
    # object name -> boxes [T, 4] (fractions).
    boxes: dict[str, np.ndarray]
    depth: np.ndarray  # [T, H, W]
    instance_ids: np.ndarray  # int32 [T, H, W]
    teacher: str
    fit: FitResult
    # The detector's check of the video before repair, the frames repaired, and the object Gaussians pruned.
    frame_check: FrameCheck | None = None
    repaired: list[int] = field(default_factory=list)
    pruned: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def instance_masks(frames: np.ndarray, objects: tuple[GenObject, ...], boxes: dict[str, np.ndarray],
                   box_fallback: bool = True) -> np.ndarray:
    """int32 ``[T, H, W]``: k + 1 where the detector finds object k, 0 elsewhere (module docstring, step 4).

    Every detection of an object's colour is that object's (with several objects of one colour, the
    nearest one's, a matching shape first): a generator draws an object in pieces (a red ball as two
    red blobs), and a piece left out is a piece of the object taught "background". Where the detector
    finds none of an object, ``box_fallback`` draws its shape in its trajectory box: right for frames
    drawn along the boxes (the stand-in), wrong for generated ones, which do not follow the boxes
    exactly (the box then labels background pixels as the object and an edit bleeds into them)."""
    from ..shapesworld.detector import detect

    T, H, W = frames.shape[:3]
    ids = np.zeros((T, H, W), np.int32)
    centres = box_centres(boxes, objects, (H, W))
    for t in range(T):
        found = [False] * len(objects)
        for d in detect(frames[t]):
            k = owner(d, objects, centres[:, t], shape_first=True)
            if k is None:
                continue
            found[k] = True
            ids[t][d.mask & (ids[t] == 0)] = k + 1
        for k, obj in enumerate(objects):
            if box_fallback and not found[k]:  # not found: its trajectory box's shape
                box = tuple(boxes[object_name(obj)][t] * np.array([W, H, W, H]))
                ids[t][(shape_coverage(obj.shape, box, (H, W)) >= 0.5) & (ids[t] == 0)] = k + 1
    return ids


def object_tracks(ids: np.ndarray, max_step: float = 0.25, min_pixels: int = 4) -> np.ndarray:
    """int32 ``[T, H, W]``: the pieces of each instance of ``ids`` followed over frames (module docstring, step 4).

    Per frame, each instance's connected pieces are matched one to one, nearest first, to that
    instance's tracks of the previous frames (by centroid; at most ``max_step`` of the frame's longer
    side from where the track was last seen); a piece left unmatched starts a new track. A piece under
    ``min_pixels`` joins its nearest track instead (specks are not objects). Track ids count from 1;
    0 stays 0 (static)."""
    T, H, W = ids.shape
    tracks = np.zeros_like(ids, dtype=np.int32)
    last: dict[int, tuple[int, np.ndarray]] = {}  # track -> (instance, last centroid)
    reach = max_step * max(H, W)
    for t in range(T):
        for instance in (int(k) for k in np.unique(ids[t]) if k > 0):
            count, labels, stats, centroids = cv2.connectedComponentsWithStats((ids[t] == instance).astype(np.uint8), connectivity=8)
            pieces = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
            gap = lambda i, k: float(np.hypot(*(centroids[i] - last[k][1])))  # noqa: E731
            own = [k for k, (owner, _) in last.items() if owner == instance]
            pairs = sorted((gap(i, k), i, k) for i in pieces for k in own)
            assigned: dict[int, int] = {}
            for distance, i, k in pairs:
                if i not in assigned and k not in assigned.values() and distance <= reach and stats[i, cv2.CC_STAT_AREA] >= min_pixels:
                    assigned[i] = k
            for i in pieces:  # largest first, so a speck finds the tracks its frame's pieces moved
                small = stats[i, cv2.CC_STAT_AREA] < min_pixels
                near = [k for k, (owner, _) in last.items() if owner == instance]
                if i not in assigned and small and near:
                    assigned[i] = min(near, key=lambda k: gap(i, k))
                elif i not in assigned:
                    assigned[i] = len(last) + 1
                if not small or assigned[i] not in last:
                    last[assigned[i]] = (instance, centroids[i])
                tracks[t][labels == i] = assigned[i]
    return tracks


def pixel_features(ids: np.ndarray, names: tuple[str, ...], encoder: QueryEncoder,
                   attention: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, str]:
    """Per-pixel features ``[T, H, W, D]`` and the teacher used (module docstring, step 5)."""
    table = np.stack([encoder.encode(name) for name in names])  # [K + 1, D], row 0 = background
    if attention is None:
        return table[ids], "detector"
    T, H, W = ids.shape
    weights = np.zeros((T, H, W, len(names)), np.float32)
    for k, name in enumerate(names[1:], start=1):
        maps = np.asarray(attention[name], np.float32)
        maps = np.stack([cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR) for m in maps])
        maps -= maps.min(axis=(1, 2), keepdims=True)
        weights[..., k] = maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-8)
    total = weights[..., 1:].sum(axis=-1)
    weights[..., 1:] /= np.maximum(total, 1.0)[..., None]
    weights[..., 0] = 1.0 - weights[..., 1:].sum(axis=-1)
    features = weights @ table
    return features / np.linalg.norm(features, axis=-1, keepdims=True).clip(1e-8), "attention"


def fit_at_two_sizes(full: FitFrames, config: GenConfig, clip: bool,
                     report: Progress | None = None) -> tuple[FitResult, FitFrames]:
    """Step 6 of the module docstring: fit ``full`` (eq. 11.8-11.12) first at ``config.fit_size`` pixels, then
    ``config.refine_steps`` at full size from that fit. CLIP targets (``clip``) are learnt through latents of
    :data:`CLIP_LATENT_DIM` unless ``config.fit.latent_dim`` says otherwise. Returns the fit and the frames of
    its last steps."""
    frames = full.resized(config.fit_size or config.size)
    steps = max(config.fit.steps + config.refine_steps, 1)

    def on_step(step, loss):
        if report is not None:
            report("fitting the 4D scene", 0.4 + 0.6 * (step + 1) / steps)
        return False

    fit_config = config.fit
    if clip and fit_config.latent_dim is None:
        fit_config = replace(fit_config, latent_dim=CLIP_LATENT_DIM)
    fit = fit_scene(frames, fit_config, callback=on_step)
    if config.refine_steps and frames is not full:  # warm start at full size from the small frames' fit
        done = len(fit.losses)
        fine = fit_scene(full, replace(fit_config, steps=config.refine_steps, converge_window=0), init=fit.scene,
                         callback=lambda step, loss: on_step(done + step, loss))
        fit = replace(fine, losses=fit.losses + fine.losses, initial_loss=fit.initial_loss)
        frames = full
    return fit, frames


def square_frame(image, size: int) -> np.ndarray:
    """uint8 ``[size, size, 3]``: the centre square of an RGB ``image`` (a photo, any aspect), resized to ``size``
    (area-averaged when shrinking). Raises :class:`InvalidInputError` for what is no image or one under
    :data:`~pipelines.utils.MIN_IMAGE_SIDE` pixels a side."""
    rgb = to_rgb_array(image)
    height, width = rgb.shape[:2]
    side = min(height, width)
    if side < MIN_IMAGE_SIDE:
        raise InvalidInputError(f"The photo is {width}x{height} pixels; it needs at least {MIN_IMAGE_SIDE} a side.")
    top, left = (height - side) // 2, (width - side) // 2
    crop = np.ascontiguousarray(rgb[top : top + side, left : left + side])
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return crop if side == size else cv2.resize(crop, (size, size), interpolation=interpolation)


def check_object_names(objects) -> tuple[str, ...]:
    """The names a photo's objects are edited by ("woman", "red car"): lower-case words without fillers ("the"),
    at least one name, at most :data:`MAX_PHOTO_OBJECTS`, none "background" (the scene's own rest). Raises
    :class:`InvalidInputError`."""
    if isinstance(objects, str) or not objects:
        raise InvalidInputError("Name what the photo shows (a list such as ['woman', 'flag']): edits select "
                                "Gaussians by these names.")
    names = []
    for given in objects:
        words = [word for word in re.findall(r"[a-z]+", str(given).lower()) if word not in FILLER_WORDS]
        if not words or words == [BACKGROUND]:
            raise InvalidInputError(f"{given!r} is no object name (use words, e.g. 'woman'; the background is "
                                    "always there).")
        names.append(" ".join(words))
    if len(set(names)) > MAX_PHOTO_OBJECTS:
        raise InvalidInputError(f"At most {MAX_PHOTO_OBJECTS} object names, got {len(set(names))}.")
    return tuple(dict.fromkeys(names))


def scene_from_photo(image, objects, depth_model, manager, *, config: GenConfig | None = None,
                     progress: Progress | None = None) -> Scene4D:
    """A static Scene4D (one frame) lifted from a photo, with learned CLIP features (thesis 11.3.2, "Scene
    Reconstruction", for a picture instead of a generated video):

    1. the photo's centre square at ``config.size`` pixels (:func:`square_frame`);
    2. depth by ``depth_model`` (the preset's, :class:`~.depth.DepthEstimator`), in the home geometry;
    3. per-pixel features F^s (eq. 11.12) from the preset's CLIP (``manager``'s; :mod:`.clip_features`), the
       "background" query being the word's text embedding (``bgtext``); the detector plays no part;
    4. Gaussians unprojected from the RGB-D pixels and fitted to colour, depth and features
       (:func:`fit_at_two_sizes`), static (no instances: nothing moves in a photo).

    ``objects`` name what the photo shows (:func:`check_object_names`); they become the scene's object names,
    which edits' queries are matched against, while which Gaussians a query selects comes from the features
    (eq. 11.13-11.14). ``meta["source"]`` says where the scene came from."""
    # 1. Check inputs and take the frame.
    config = config or GenConfig()
    names = (BACKGROUND, *check_object_names(objects))
    report = progress or (lambda stage, fraction: None)
    rgb = to_rgb_array(image)
    height, width = rgb.shape[:2]
    frame = square_frame(rgb, int(config.size))[None]  # [1, S, S, 3]
    # 2. Depth.
    report("depth", 0.1)
    camera = home_camera(config.size)
    depth = depth_model(frame)
    # 3. Features from the preset's CLIP.
    report("features", 0.2)
    from .clip_features import clip_encoder

    encoder = clip_encoder(manager, background=None)
    features = encoder.pixel_features(frame)
    # 4. Fit.
    full = FitFrames(rgb=frame.astype(np.float32) / 255.0, depth=depth, camera=camera, features=features,
                     names=names, feature_space=encoder.space)
    fit, _ = fit_at_two_sizes(full, config, True, report)
    scene = fit.scene
    scene.camera = camera
    scene.meta.update({"source": f"photo ({width}x{height}, centre square at {config.size}x{config.size}); "
                                 f"features: {encoder.model_name} (CLIP windows, eq. 11.12)",
                       "generated": False, "teacher": "clip", "seed": int(config.fit.seed)})
    report("done", 1.0)
    return scene


def generate_scene(
    plan: Plan,
    source: FrameSource | None = None,
    depth_model=None,
    *,
    encoder: QueryEncoder | None = None,
    config: GenConfig | None = None,
    progress: Progress | None = None,
    boxes: dict[str, np.ndarray] | None = None,
    manager=None,
) -> GenResult:
    """Build a Scene4D for a GEN ``plan`` (module docstring, steps 1-6). ``source`` defaults to
    :class:`ShapesWorldStandIn`, ``depth_model`` to the tiny pack's :class:`~.depth.DepthEstimator`;
    ``progress(stage, fraction)`` reports each stage. ``boxes`` (object name -> ``[n_frames, 4]`` fractions)
    replace the plan's trajectories: the path a video was made along (a Mojito video lifted to 4D). ``manager``
    is the model manager whose preset's CLIP the "clip" teacher uses (default: the tiny pack's)."""
    # 1. Check inputs.
    if not isinstance(plan, Plan) or plan.mode != "GEN":
        raise InvalidInputError(f"generate_scene needs a GEN plan, got {getattr(plan, 'mode', plan)!r}.")
    config = config or GenConfig()
    if config.teacher not in TEACHERS:
        raise InvalidInputError(f"teacher must be one of {', '.join(TEACHERS)}, got {config.teacher!r}.")
    check_drawable(plan.objects)
    source = source or ShapesWorldStandIn()
    encoder = encoder or default_encoder()
    report = progress or (lambda stage, fraction: None)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 3)
        clock = now

    # 2. Trajectories (frame-wise boxes) and frames.
    report("trajectory", 0.0)
    if boxes is None:
        trajectories = plan_trajectories(plan.objects, config.n_frames, config.seed)
        boxes = {name: trajectory.boxes(config.n_frames) for name, trajectory in trajectories.items()}
    elif sorted(boxes) != sorted(object_name(obj) for obj in plan.objects) or \
            any(np.shape(b) != (config.n_frames, 4) for b in boxes.values()):
        raise InvalidInputError(f"boxes must give [{config.n_frames}, 4] per object of the plan "
                                f"({', '.join(object_name(obj) for obj in plan.objects)}), got {sorted(boxes)}.")
    lap("trajectory")
    report("frames", 0.05)
    seed = config.seed
    video = source(plan, boxes, config.n_frames, config.size, seed, progress)
    check = check_frames(video.frames, plan.objects, boxes)
    # ShapesWorld frames (the tiny pack's or the stand-in's) are checked and repaired with ShapesWorld shapes; a hub
    # model's video, in which the detector finds none of the plan's objects, is fitted as it was generated.
    shapesworld = manager is None or getattr(manager, "preset", "tiny") == "tiny" or bool(check.object_right.any())
    retries = config.regenerations if shapesworld and video.generated and not isinstance(source, GivenVideo) else 0
    for attempt in range(1, retries + 1):
        if check.object_right.mean(axis=0).min() >= config.min_right_fraction:
            break
        report(f"frames again (seed {config.seed + attempt}: {check.right_fraction:.0%} of frames right)", 0.05)
        again = source(plan, boxes, config.n_frames, config.size, config.seed + attempt, progress)
        again_check = check_frames(again.frames, plan.objects, boxes)
        if again_check.object_right.mean(axis=0).min() > check.object_right.mean(axis=0).min():
            video, check, seed = again, again_check, config.seed + attempt
    lap("frames")
    if shapesworld:
        frames_rgb, repaired = repair_frames(video.frames, check, plan.objects, boxes)
        video = replace(video, frames=frames_rgb)
    else:
        repaired = []
    lap("check")

    # 3. Depth, instances, features.
    report("depth", 0.3)
    if depth_model is None:
        from .depth import DepthEstimator

        depth_model = DepthEstimator.from_preset("tiny")
    names = (BACKGROUND, *(object_name(obj) for obj in plan.objects))
    ids = instance_masks(video.frames, plan.objects, boxes, box_fallback=not video.generated)
    camera = home_camera(config.size)
    depth = relief_depth(depth_model(video.frames), ids, float(camera.K[0, 0]), config.relief)
    lap("depth")
    report("features", 0.35)
    teacher = config.teacher
    if teacher == "auto":
        teacher = "detector" if (ids > 0).any() else "clip"
    if teacher == "attention" and not video.attention:
        raise InvalidInputError("The attention teacher needs a frame source that returns cross-attention maps.")
    if teacher == "clip":  # learned features (eq. 11.12); the detector teaches nothing
        from .clip_features import clip_encoder

        encoder = clip_encoder(manager, background=np.median(video.frames[0].reshape(-1, 3), axis=0) / 255.0,
                               zoom=config.clip_zoom)
        features = encoder.pixel_features(video.frames)
    else:
        features, teacher = pixel_features(ids, names, encoder, video.attention if teacher == "attention" else None)
    lap("features")

    # 4. Fit (eq. 11.8-11.12).
    full = FitFrames(rgb=video.frames.astype(np.float32) / 255.0, depth=depth, camera=camera,
                     features=features, instance_ids=ids, tracks=object_tracks(ids), names=names,
                     feature_space=encoder.space)
    fit, frames = fit_at_two_sizes(full, config, teacher == "clip", report)
    scene, pruned = prune_unmatched(fit.scene, frames)
    scene.camera = camera
    lap("fit")
    scene.meta.update({
        "source": video.label, "generated": bool(video.generated), "prompt": video.prompt, "teacher": teacher,
        "plan": json.dumps(plan.to_dict()), "seed": int(config.seed),
        "frame_check": json.dumps({**check.summary(), "frames_seed": int(seed), "repaired": repaired, "pruned": pruned}),
    })
    report("done", 1.0)
    return GenResult(scene, plan, video, boxes, depth, ids, teacher, fit, check, repaired, pruned, seconds)
