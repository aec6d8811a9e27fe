"""Learned features for a given static scene (an uploaded 3DGS PLY): render views, embed their pixels with
CLIP, distil them into the Gaussians (thesis eq. 11.9-11.12), so that text queries select (eq. 11.13-11.14).

A plain 3DGS PLY (:func:`~.export.read_ply`) has colours and geometry but no features. :func:`distil_features`
gives it the "clip" teacher's features of a generated scene (:mod:`.generation`, step 5), learnt the same way:

1. **Views** (:func:`feature_views`): from the home camera's direction, one view at the distance where the
   Gaussians' robust extent (2nd-98th percentile across the home view) fills the frame (it finds the names, step
   5), and the same direction and four small orbits about the scene's centre at 0.8 of that distance
   (``DistilConfig.views``), at ``size`` pixels. The PLY's own home camera frames the scene loosely enough to orbit
   it; there the example PLY's square covered 42 pixels of a 64-pixel view and CLIP's windows read all of them as
   background. The tiny CLIP's probability of "orange square" against "background" on the square's pixels had
   median 0.78 where the scene fills the view and 0.98 at 0.8 of that distance.
2. **Targets** F^s (eq. 11.12): the views rendered (RGB over the scene's background) and embedded per pixel by
   the preset's CLIP (:class:`~.clip_features.ClipFeatureEncoder`); only pixels the Gaussians cover (alpha >=
   ``min_alpha``) are targets. The "background" query is the image embedding of the home view's median
   covered colour, as a generated scene's is of its first frame's median colour.
3. **Start** (:func:`backprojected_features`): each Gaussian's feature is the blending-weighted mean of the
   targets it draws over all views (the adjoint of eq. 11.9, :func:`~.rendering.blend_weights`), with the
   "background" query counted as a further 0.3 pixels (a prior): a Gaussian no view sees starts there, so no
   object query takes it, and one seen only through the 2% an object in front lets pass (the plane under the
   example PLY's square) stays near it instead of taking the object's feature. On the example PLY over the six default views, the plane
   Gaussians under the square draw 0.04-0.05 pixels in all, every visible Gaussian at least 2.1 (square: 7.5):
   the prior is 0.3 pixels (0.1 and 0.3 gave the same selections; 1.0 lowered the square's recall to 0.835).
4. **Distillation** (:func:`~.fitting.fit_scene` with ``train="features"``, eq. 11.10-11.11): latents of
   :data:`~.generation.CLIP_LATENT_DIM` on the targets' principal directions and the MLP decoder D^s are fitted to
   the views' feature maps; means, colours, opacities and scales stay bit for bit. The scene's ``features``
   are D^s(f_j) in CLIP's 64-d space and its ``feature_space`` names the encoder, as a generated scene's.
5. **Names**: edits match a query against the scene's object names (:mod:`.editing`, step 1). Given
   ``objects`` are used as they are (a photo's names, :func:`~.generation.check_object_names`); without them
   the names are found (:func:`found_names`): every ShapesWorld object name ("orange square", ...) whose text
   embedding is the nearest, among all of them and "background", to at least ``min_name_share`` of the
   covered target pixels of the home view. Only the home view names: the orbits' oblique reads of a shape are
   less sure (the tiny CLIP read the example PLY's square as a circle on 125 of 127 orange pixels of the view
   turned 25 degrees right, and as a square on 107-133 pixels of each other view).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from ..errors import InvalidInputError
from ..shapesworld.vocab import COLOURS, SHAPES
from .fitting import FitConfig, FitFrames, fit_scene
from .generation import CLIP_LATENT_DIM, Progress, check_object_names
from .queries import BACKGROUND
from .rendering import blend_weights, render, to_uint8
from .scene import Camera, Scene4D, orbit_camera


def _distil_fit() -> FitConfig:
    # Features only, from the views' feature maps (colour and depth terms off: nothing else is learnt).
    return FitConfig(steps=40, frames_per_step=1, rgb_weight=0.0, depth_weight=0.0, train="features",
                     latent_dim=CLIP_LATENT_DIM, lr_features=1e-2, lr_decoder=1e-2)


@dataclass
class DistilConfig:
    """Settings of :func:`distil_features` (module docstring)."""

    # Side of the square views in pixels (CLIP's windows scale with it; 64 is what the tiny CLIP saw).
    size: int = 64
    # Views (feature_views): (azimuth, elevation) offsets from the home direction in degrees and the distance as a
    # multiple of the one that fits the scene in the frame. The first view finds the names (step 5).
    views: tuple[tuple[float, float, float], ...] = (
        (0.0, 0.0, 1.0), (0.0, 0.0, 0.8), (-20.0, 0.0, 0.8), (20.0, 0.0, 0.8), (0.0, -15.0, 0.8), (0.0, 15.0, 0.8))
    # Pixels the Gaussians cover at least this much (rendered alpha) are targets.
    min_alpha: float = 0.5
    # A ShapesWorld name is found when it is the nearest name of at least this share of the covered pixels.
    min_name_share: float = 0.005
    # CLIP's windows (pixels of a 64-px view), colour gate and in-place windows for the targets. Chosen on the
    # example PLY before generated scenes moved to zoomed 24 px / 100 windows (clip_features): on its splat views
    # 24 / 100 read a second name, "orange triangle", off the square's rim; zoomed 16 / 60 windows select all 121
    # square Gaussians (recall 1.0 against 0.909) but also 7 plane Gaussians hidden behind the square, which a
    # delete would then cut out of the plane.
    window: int = 16
    colour_gate: float = 60.0
    zoom: bool = False
    # The distillation (step 4).
    fit: FitConfig = field(default_factory=_distil_fit)


def feature_views(scene: Scene4D, size: int, views: Sequence[tuple[float, float, float]]) -> list[Camera]:
    """Cameras at ``size`` pixels with the home camera's field of view, looking at the scene's centre: for each
    ``(azimuth, elevation, distance)`` of ``views``, the home direction turned by those degrees, at that multiple
    of the distance where the Gaussians' robust extent (2nd-98th percentile of their offsets from the centre
    across the home view) fills the frame."""
    home, centre = scene.camera, scene.centre()
    fov = math.degrees(2 * math.atan(home.width / 2 / float(home.K[0, 0])))
    offset = home.position - centre
    azimuth = math.degrees(math.atan2(offset[0], offset[2]))
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, offset[1] / (float(np.linalg.norm(offset)) or 1.0)))))
    across = home.to_camera(scene.means.astype(np.float64)) - home.to_camera(centre[None])
    half = max(float(np.percentile(np.abs(across[:, :2]), 98)), 1e-3)
    towards = max(float(np.percentile(-across[:, 2], 98)), 0.0)  # how far Gaussians stand out toward the camera
    fill = half / math.tan(math.radians(fov) / 2) + towards
    return [orbit_camera(centre, azimuth + a, max(-89.0, min(89.0, elevation + e)), fill * d, size, size, fov)
            for a, e, d in views]


def backprojected_features(scene: Scene4D, cameras: Sequence[Camera], targets: np.ndarray, masks: np.ndarray,
                           unseen: np.ndarray, prior: float = 0.3) -> np.ndarray:
    """float32 ``[N, Ds]``: each Gaussian's blending-weighted mean of the ``targets`` ``[V, H, W, Ds]`` it draws
    over the views' ``masks`` and of ``unseen`` ``[Ds]`` with the weight of ``prior`` pixels (module docstring,
    step 3): a Gaussian no view sees starts at ``unseen``, one seen only faintly (through an object in front of
    it) close to it."""
    total = np.zeros((scene.n_gaussians, targets.shape[-1] + 1), np.float64)
    for camera, target, mask in zip(cameras, targets, masks):
        values = np.concatenate([target, np.ones(target.shape[:2] + (1,), np.float32)], axis=-1) * mask[..., None]
        total += blend_weights(scene, camera, 0.0, values).double().numpy()
    out = (total[:, :-1] + prior * np.asarray(unseen, np.float64)) / (total[:, -1:] + prior)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)).astype(np.float32)


def found_names(encoder, targets: np.ndarray, masks: np.ndarray, min_share: float) -> tuple[str, ...]:
    """The ShapesWorld object names found in the views (module docstring, step 5), most pixels first."""
    candidates = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
    table = np.concatenate([encoder.background_vector()[None], encoder.encode_texts(candidates)])
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    nearest = (targets[masks] @ table.T).argmax(axis=1)
    counts = np.bincount(nearest, minlength=len(table))[1:]
    order = np.argsort(-counts, kind="stable")
    return tuple(candidates[i] for i in order if counts[i] >= max(min_share * len(nearest), 1))


def distil_features(scene: Scene4D, manager=None, *, objects: Sequence[str] | None = None,
                    config: DistilConfig | None = None, progress: Progress | None = None) -> Scene4D:
    """A copy of the static ``scene`` with features distilled from the preset's CLIP (``manager``'s, default the
    tiny pack's) and object names to query by (module docstring, steps 1-5). ``progress(stage, fraction)``
    reports each stage. Raises :class:`InvalidInputError` for a moving or empty scene."""
    # 1. Check inputs.
    config = config or DistilConfig()
    if scene.n_gaussians == 0:
        raise InvalidInputError("The scene has no Gaussians to give features to.")
    if scene.n_bases or scene.n_frames != 1:
        raise InvalidInputError(f"Features are distilled into a static scene (one frame); this one has "
                                f"{scene.n_frames} frames.")
    if config.size < 16:
        raise InvalidInputError(f"The views need at least 16 pixels a side, got {config.size}.")
    names = None if objects is None else check_object_names(objects)
    report = progress or (lambda stage, fraction: None)
    from .clip_features import STRIDE, ClipFeatureEncoder, clip_encoder
    from .queries import register_encoder

    # 2. Views, rendered.
    report("rendering views", 0.0)
    cameras = feature_views(scene, config.size, config.views)
    frames = np.stack([to_uint8(render(scene, camera, backend="cpu")) for camera in cameras])
    masks = np.stack([render(scene, camera, mode="alpha", backend="cpu").numpy() >= config.min_alpha
                      for camera in cameras])
    if not masks.any():
        raise InvalidInputError("The scene's Gaussians cover no pixel of its views.")

    # 3. Targets (eq. 11.12), one view at a time.
    encoder = clip_encoder(manager, background=np.median(frames[0][masks[0]].reshape(-1, 3), axis=0) / 255.0)
    encoder = register_encoder(ClipFeatureEncoder(encoder.clip, encoder.model_name, encoder.background,
                                                  config.window, STRIDE, config.colour_gate, config.zoom))
    targets = []
    for v, frame in enumerate(frames):
        report(f"CLIP features of view {v + 1} of {len(frames)}", 0.05 + 0.45 * v / len(frames))
        targets.append(encoder.pixel_features(frame[None])[0])
    targets = np.stack(targets)
    names = names or found_names(encoder, targets[:1], masks[:1], config.min_name_share)

    # 4. Start and distillation (eq. 11.10-11.11), geometry and colours frozen.
    report("distilling into the Gaussians", 0.5)
    features = backprojected_features(scene, cameras, targets, masks, encoder.background_vector())
    start = replace(scene, features=features,
                    object_ids=np.full(scene.n_gaussians, -1, np.int32), object_names=(BACKGROUND, *names),
                    feature_space=encoder.space)
    views = FitFrames(rgb=frames.astype(np.float32) / 255.0, depth=np.zeros(frames.shape[:3], np.float32),
                      camera=cameras[0], cameras=tuple(cameras), features=targets, masks=masks,
                      feature_space=encoder.space)
    steps = max(config.fit.steps, 1)
    fit = fit_scene(views, config.fit, init=start,
                    callback=lambda step, loss: report("distilling into the Gaussians", 0.5 + 0.5 * (step + 1) / steps))
    out = fit.scene
    out.meta = {**scene.meta, "teacher": "clip", "features": (
        f"distilled from {len(cameras)} rendered views by {encoder.model_name} (CLIP windows, eq. 11.12), "
        f"feature loss {fit.initial_loss:.3g} -> {fit.final_loss:.3g}; names: {', '.join(names) or 'none found'}")}
    report("done", 1.0)
    return out
