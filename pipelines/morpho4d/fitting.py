"""Fitting a Scene4D to frames by differentiable rasterization, thesis eq. 11.8-11.12.

Inputs (:class:`FitFrames`): T frames from one fixed camera (the thesis' generated scenes keep the
camera fixed), or views of a static scene from one camera each (``cameras``), with RGB, depth (camera z),
per-pixel target features ``F^s`` (eq. 11.12; any 2D encoder's output) and, optionally, validity masks and
instance ids (e.g. from a segmenter).

1. Initialisation (:func:`init_from_rgbd`): every pixel is unprojected with Open3D
   (``PointCloud.create_from_depth_image``; its pixel (u, v) is our pixel centre (u + 0.5, v + 0.5),
   so the principal point is shifted by half a pixel). With instance ids, each instance's motion basis
   is the translation of its 3D centroid over the frames; points of several frames are moved back to
   frame 0 along their instance's basis, merged and averaged on a voxel grid sized to the requested
   number of Gaussians. Without instance ids the scene is static (B = 0) and uses frame 0.
   With ``tracks`` (pieces of instances followed over frames, e.g. a generated object drawn as two
   blobs, or one that appears at frame 3), each track gets its own basis, its points come from the
   frames above plus the frame where it is largest, and its Gaussians start hidden
   (``visibility_logits = HIDDEN``) in the frames where it is not seen.
2. Optimisation (:func:`fit_scene`): Adam on all Gaussian parameters, the motion coefficients and
   bases, the visibility offsets (if any), per-Gaussian latent features f_j in R^D and a small MLP decoder D^s (eq. 11.11);
   with ``latent_dim`` below the targets' size Ds the latents start on the targets' top principal directions. Each step
   renders chosen frames once with values ``[colour | latent feature | camera z]`` (eq. 11.8 and 11.9
   are the same rasterization) and minimises

       L = w_rgb * L1(I_hat, I) + w_feat * MSE(D^s(F_hat), F^s) + w_depth * L1(depth_hat, depth) / mean depth

   over valid pixels (eq. 11.10; L_feat with S = 1 feature space). As in the thesis (following
   Feature 3DGS), the decoder trained on rendered 2D feature maps is then applied to each Gaussian's
   latent: the fitted scene's ``features`` are ``D^s(f_j)``, in the query space.
   With ``FitConfig.train = "features"`` only the latents and the decoder are optimised: a given scene
   (e.g. an uploaded PLY, :mod:`.distil`) keeps its means, colours, opacities and scales and learns features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ..errors import InvalidInputError
from ..utils import seed_everything
from .rendering import rasterize
from .scene import SH_C0, Camera, Scene4D, check_gaussian_count, logit, rgb_to_sh


# FitConfig.train: optimise every parameter, or only the features (latents and decoder).
TRAIN_MODES = ("all", "features")
# Visibility offset of a track's Gaussians in frames where the track is not seen: opacity 0.9 -> 4e-4.
HIDDEN = -10.0


@dataclass
class FitFrames:
    """Targets for fitting, all from one camera; see the module docstring."""

    rgb: np.ndarray  # float32 [T, H, W, 3] in [0, 1]
    depth: np.ndarray  # float32 [T, H, W], camera z; <= 0 = unknown
    camera: Camera
    features: np.ndarray | None = None  # float32 [T, H, W, Ds]
    masks: np.ndarray | None = None  # bool [T, H, W]: pixels the losses use (default: all)
    instance_ids: np.ndarray | None = None  # int [T, H, W]: 0 = background/static, k > 0 = instance k
    # int [T, H, W]: 0 = static, k > 0 = motion track k, each inside one instance (default: the instances).
    tracks: np.ndarray | None = None
    names: tuple[str, ...] = ()  # names of instance ids, if known
    feature_space: str = ""
    # One camera per frame (views of a static scene), or None: every frame is seen by ``camera``.
    cameras: tuple[Camera, ...] | None = None

    def __post_init__(self) -> None:
        self.rgb = np.asarray(self.rgb, dtype=np.float32)
        self.depth = np.asarray(self.depth, dtype=np.float32)
        if self.rgb.ndim != 4 or self.rgb.shape[-1] != 3:
            raise InvalidInputError(f"rgb must be [T, H, W, 3], got {self.rgb.shape}.")
        shape = self.rgb.shape[:3]
        if self.depth.shape != shape:
            raise InvalidInputError(f"depth must be {shape}, got {self.depth.shape}.")
        if (self.camera.height, self.camera.width) != shape[1:]:
            raise InvalidInputError(f"The camera is {self.camera.width}x{self.camera.height}; the frames are {shape[2]}x{shape[1]}.")
        if self.cameras is not None:
            self.cameras = tuple(self.cameras)
            if len(self.cameras) != shape[0] or any((c.height, c.width) != shape[1:] for c in self.cameras):
                raise InvalidInputError(f"cameras must be {shape[0]} cameras of {shape[2]}x{shape[1]} pixels.")
        if self.features is not None:
            self.features = np.asarray(self.features, dtype=np.float32)
            if self.features.shape[:3] != shape or self.features.ndim != 4:
                raise InvalidInputError(f"features must be {shape} + (Ds,), got {self.features.shape}.")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.shape != shape:
                raise InvalidInputError(f"masks must be {shape}, got {self.masks.shape}.")
        for name in ("instance_ids", "tracks"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.int32)
                if value.shape != shape or value.min() < 0:
                    raise InvalidInputError(f"{name} must be non-negative ints of shape {shape}.")
                setattr(self, name, value)
        if self.tracks is not None:
            if self.instance_ids is None:
                raise InvalidInputError("tracks need instance_ids (each track lies inside one instance).")
            pairs = np.unique(np.stack([self.tracks.ravel(), self.instance_ids.ravel()], 1), axis=0)
            if len(np.unique(pairs[:, 0])) != len(pairs) or np.any((pairs[:, 0] > 0) != (pairs[:, 1] > 0)):
                raise InvalidInputError("Each track must lie inside one instance, and static pixels in none.")
        for name in ("rgb", "depth", "features"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value).all():
                raise InvalidInputError(f"{name} has NaN or infinite values.")

    @property
    def n_frames(self) -> int:
        return int(self.rgb.shape[0])

    def camera_at(self, t: int) -> Camera:
        """The camera that sees frame ``t``."""
        return self.camera if self.cameras is None else self.cameras[t]

    def resized(self, side: int) -> FitFrames:
        """The targets at ``side`` x ``side`` pixels seen by the same camera (intrinsics scaled): colours
        area-averaged; depth, features, masks, instances and tracks nearest (a rim pixel keeps one object's depth,
        feature and id: area-averaged detector features mixed the ball's and the background's at its rim, and a
        fifth of the ball's Gaussians then fell below the selection threshold)."""
        if side == self.camera.width == self.camera.height:
            return self
        def scaled(frames, interpolation):
            if frames is None:
                return None
            flat = frames.astype(np.float32).reshape(*frames.shape[:3], -1)
            out = np.stack([np.concatenate([  # OpenCV resizes at most 4 channels at once
                cv2.resize(x[..., c : c + 4], (side, side), interpolation=interpolation).reshape(side, side, -1)
                for c in range(0, flat.shape[-1], 4)], axis=-1) for x in flat])
            return out.reshape(len(frames), side, side, *frames.shape[3:]).astype(frames.dtype)

        area, nearest = cv2.INTER_AREA, cv2.INTER_NEAREST
        return FitFrames(rgb=scaled(self.rgb, area), depth=scaled(self.depth, nearest), camera=self.camera.resized(side, side),
                         features=scaled(self.features, nearest), masks=scaled(self.masks, nearest),
                         instance_ids=scaled(self.instance_ids, nearest), tracks=scaled(self.tracks, nearest),
                         names=self.names, feature_space=self.feature_space,
                         cameras=None if self.cameras is None else tuple(c.resized(side, side) for c in self.cameras))

    @classmethod
    def from_truth(cls, truth) -> FitFrames:
        """From :class:`~pipelines.morpho4d.shapes4d.TruthFrames`."""
        return cls(rgb=truth.rgb, depth=truth.depth, camera=truth.camera, features=truth.features,
                   instance_ids=truth.instance_ids, names=truth.names)


@dataclass
class FitConfig:
    """Settings of :func:`fit_scene`."""

    # Optimisation steps, and frames rendered per step.
    steps: int = 200
    frames_per_step: int = 2
    # Loss weights (module docstring).
    rgb_weight: float = 1.0
    feature_weight: float = 1.0
    depth_weight: float = 0.2
    # Adam learning rates per parameter group (means and motion in world units).
    lr_means: float = 2e-4
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 2e-2
    lr_colour: float = 1e-2
    lr_features: float = 1e-3
    lr_motion: float = 2e-4
    lr_visibility: float = 5e-2
    lr_decoder: float = 1e-3
    # What is optimised: "all" parameters, or "features" only (latents and decoder; the scene's geometry,
    # colours, opacities and motion stay as given, e.g. an uploaded PLY's).
    train: str = "all"
    # Hidden width of the feature decoder MLP.
    decoder_hidden: int = 32
    # Per-Gaussian latent feature size D when it is below the targets' Ds (None: D = Ds). The latents start
    # as the targets' projection on their top-D principal directions and D^s (eq. 11.11) maps them back;
    # rasterization cost grows with the channels (64-d CLIP features: 68 channels a render, 20 at D = 16).
    latent_dim: int | None = None
    # Gaussians to initialise (about), and the frames whose points are merged.
    init_gaussians: int = 3000
    init_frames: int = 3
    seed: int = 0
    # Early stop: after each ``converge_window`` steps, stop when the mean loss of the last window is not at
    # least ``converge_tol`` (relative) below the window's before (each step sees random frames, so single
    # losses are noisy). 0 = always run ``steps``.
    converge_window: int = 0
    converge_tol: float = 0.03


class FeatureDecoder(torch.nn.Module):
    """D^s of eq. 11.11: latent [.., D] -> editing features [.., Ds]; starts as identity (or a linear map)."""

    def __init__(self, dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.skip = torch.nn.Identity() if dim == out_dim else torch.nn.Linear(dim, out_dim, bias=False)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_dim))
        torch.nn.init.zeros_(self.mlp[2].weight)
        torch.nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.mlp(x)


@dataclass
class FitResult:
    """A fitted scene and its loss history."""

    scene: Scene4D
    # Loss of each step (on that step's frames).
    losses: list[float] = field(default_factory=list)
    # Total loss over all frames before and after fitting (same definition).
    initial_loss: float = math.nan
    final_loss: float = math.nan


def unproject_frame(depth: np.ndarray, camera: Camera) -> np.ndarray:
    """World points of every pixel of a depth map with Open3D: float32 ``[H, W, 3]`` (NaN where depth <= 0)."""
    import open3d as o3d

    K = camera.K.astype(np.float64)
    intrinsic = o3d.camera.PinholeCameraIntrinsic(
        camera.width, camera.height, K[0, 0], K[1, 1], K[0, 2] - 0.5, K[1, 2] - 0.5
    )
    image = o3d.geometry.Image(np.ascontiguousarray(np.where(depth > 0, depth, 0).astype(np.float32)))
    cloud = o3d.geometry.PointCloud.create_from_depth_image(
        image, intrinsic, camera.viewmat.astype(np.float64), depth_scale=1.0, depth_trunc=1e9,
        stride=1, project_valid_depth_only=False,
    )
    points = np.asarray(cloud.points, dtype=np.float32).reshape(camera.height, camera.width, 3)
    points[depth <= 0] = np.nan
    return points


def _voxel_average(points, attributes, groups, n_target):
    """Average points and attributes per (group, voxel); the voxel size is searched to give about
    ``n_target`` cells. Returns (points, attributes, group of each cell)."""
    extent = float(np.nanmax(points, axis=0).max() - np.nanmin(points, axis=0).min()) or 1.0
    low, high = extent * 1e-4, extent
    for _ in range(30):
        voxel = math.sqrt(low * high)
        keys = np.concatenate([groups[:, None], np.floor(points / voxel).astype(np.int64)], axis=1)
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
        count = int(inverse.max()) + 1
        if abs(count - n_target) <= 0.05 * n_target:
            break
        low, high = (voxel, high) if count > n_target else (low, voxel)
    inverse = inverse.reshape(-1)
    weights = np.bincount(inverse).astype(np.float64)[:, None]
    mean = lambda values: (np.stack([np.bincount(inverse, values[:, i]) for i in range(values.shape[1])], 1) / weights)  # noqa: E731
    cell_group = np.zeros(count, dtype=np.int64)
    cell_group[inverse] = groups
    return mean(points).astype(np.float32), mean(attributes).astype(np.float32), cell_group, voxel


def init_from_rgbd(frames: FitFrames, n_gaussians: int = 3000, n_init_frames: int = 3) -> Scene4D:
    """A first Scene4D from RGB-D points unprojected with Open3D (module docstring, step 1)."""
    check_gaussian_count(n_gaussians)
    T = frames.n_frames
    ids = frames.instance_ids if frames.instance_ids is not None else np.zeros(frames.rgb.shape[:3], np.int32)
    tracks = frames.tracks if frames.tracks is not None else ids
    valid = (frames.depth > 0) & (frames.masks if frames.masks is not None else True)
    clouds = [unproject_frame(frames.depth[t], frames.camera) for t in range(T)]

    # Motion bases: each track k > 0's centroid path (carried over frames where it is not seen).
    track_ids = [int(k) for k in np.unique(tracks) if k > 0]
    instance_of = {k: int(ids[tracks == k][0]) for k in track_ids}
    seen = np.zeros((len(track_ids), T), bool)
    bases = np.zeros((len(track_ids), T, 3), np.float32)
    for b, k in enumerate(track_ids):
        path, last = [], None
        for t in range(T):
            where = (tracks[t] == k) & valid[t]
            seen[b, t] = where.any()
            last = clouds[t][where].mean(axis=0) if seen[b, t] else last
            path.append(last)
        first = next(p for p in path if p is not None)
        path = [first if p is None else p for p in path]
        bases[b] = np.asarray(path) - path[0]
    moving = [b for b in range(len(track_ids)) if np.abs(bases[b]).max() > 1e-6]
    basis_of = {track_ids[b]: j for j, b in enumerate(moving)}
    bases = bases[moving]

    # Points of a few frames (and of each track's largest frame), moved back to frame 0 along their basis.
    chosen = sorted(set(np.linspace(0, T - 1, max(1, min(n_init_frames, T))).round().astype(int).tolist()))
    if frames.instance_ids is None:
        chosen = [0]
    largest = {k: int(np.argmax((tracks == k).sum(axis=(1, 2)))) for k in track_ids} if frames.tracks is not None else {}
    feats = frames.features if frames.features is not None else np.zeros(frames.rgb.shape[:3] + (1,), np.float32)
    points, attributes, groups = [], [], []
    for t in sorted(set(chosen) | set(largest.values())):
        wanted = np.isin(tracks[t], [k for k, f in largest.items() if f == t]) | (t in chosen)
        where = valid[t] & np.isfinite(clouds[t]).all(axis=-1) & wanted
        p, k = clouds[t][where], tracks[t][where]
        for track, b in basis_of.items():
            p[k == track] -= bases[b, t]
        points.append(p)
        attributes.append(np.concatenate([frames.rgb[t][where], feats[t][where]], axis=1))
        groups.append(k)
    points, attributes, groups = np.concatenate(points), np.concatenate(attributes), np.concatenate(groups)
    if len(points) == 0:
        raise InvalidInputError("No pixel has a valid depth: there is nothing to unproject.")
    means, attributes, cell_track, voxel = _voxel_average(points, attributes, groups.astype(np.int64), n_gaussians)
    n = len(means)
    coeffs = np.zeros((n, len(moving)), np.float32)
    for track, b in basis_of.items():
        coeffs[cell_track == track, b] = 1.0
    cell_group = np.array([instance_of.get(int(k), 0) for k in cell_track], np.int64)
    visibility = np.zeros((n, T if frames.tracks is not None else 0), np.float32)
    for b, k in enumerate(track_ids if frames.tracks is not None else ()):
        visibility[np.ix_(cell_track == k, ~seen[b])] = HIDDEN
    instances = sorted(set(instance_of.values()))
    names = frames.names if frames.names else tuple(["background", *(f"instance {k}" for k in instances)])
    return Scene4D(
        means=means,
        quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
        log_scales=np.full((n, 3), math.log(0.6 * voxel), np.float32),
        opacity_logits=np.full(n, logit(0.9), np.float32),
        sh_dc=rgb_to_sh(np.clip(attributes[:, :3], 0, 1)),
        features=attributes[:, 3:],
        object_ids=np.where(cell_group < len(names), cell_group, -1).astype(np.int32),
        motion_bases=bases,
        motion_coeffs=coeffs,
        camera=frames.camera,
        object_names=names,
        feature_space=frames.feature_space if frames.features is not None else "",
        background=tuple(float(c) for c in np.median(frames.rgb.reshape(-1, 3), axis=0)),
        meta={"source": "fit", "init_voxel": float(voxel)},
        visibility_logits=visibility,
    )


class _Parameters(torch.nn.Module):
    """The trainable state of a Scene4D (raw 3DGS parameters, latent features, motion, decoder)."""

    def __init__(self, scene: Scene4D, feature_dim: int | None, hidden: int, basis: np.ndarray | None = None) -> None:
        super().__init__()
        p = lambda array: torch.nn.Parameter(torch.from_numpy(np.array(array, dtype=np.float32)))  # noqa: E731
        self.means, self.quats, self.log_scales = p(scene.means), p(scene.quats), p(scene.log_scales)
        latent = scene.features if basis is None else scene.features @ basis  # [N, D] (D < Ds with a basis)
        self.opacity_logits, self.sh_dc, self.latent = p(scene.opacity_logits), p(scene.sh_dc), p(latent)
        self.motion_coeffs, self.motion_bases = p(scene.motion_coeffs), p(scene.motion_bases)
        self.visibility = p(scene.visibility_logits)
        out_dim = feature_dim or scene.feature_dim
        self.decoder = FeatureDecoder(latent.shape[1], out_dim, hidden)
        if basis is not None:  # D^s starts as the projection's inverse: latent @ basis.T
            with torch.no_grad():
                self.decoder.skip.weight.copy_(torch.from_numpy(np.ascontiguousarray(basis, dtype=np.float32)))

    def render(self, t: int, camera: Camera, background: torch.Tensor):
        """Rendered RGB [H, W, 3], decoded features [H, W, Ds], depth [H, W], alpha [H, W] at frame t."""
        means = self.means + (self.motion_coeffs @ self.motion_bases[:, t] if self.motion_bases.shape[0] else 0.0)
        viewmat = torch.from_numpy(camera.viewmat).to(means.device)
        K = torch.from_numpy(camera.K).to(means.device)
        depth = (means @ viewmat[:3, :3].T + viewmat[:3, 3])[:, 2:3]
        colours = torch.clamp_min(0.5 + SH_C0 * self.sh_dc, 0.0)
        values = torch.cat([colours, self.latent, depth], dim=1)
        logits = self.opacity_logits + (self.visibility[:, t] if self.visibility.shape[1] else 0.0)
        image, alpha = rasterize(means, self.quats, torch.exp(self.log_scales), torch.sigmoid(logits),
                                 values, viewmat, K, camera.width, camera.height)
        rgb = image[..., :3] + (1.0 - alpha)[..., None] * background
        features = self.decoder(image[..., 3:-1])
        return rgb, features, image[..., -1] / alpha.clamp(min=1e-6), alpha

    def to_scene(self, template: Scene4D) -> Scene4D:
        with torch.no_grad():
            array = lambda x: x.detach().cpu().numpy().astype(np.float32).copy()  # noqa: E731
            return Scene4D(
                means=array(self.means), quats=array(self.quats), log_scales=array(self.log_scales),
                opacity_logits=array(self.opacity_logits), sh_dc=array(self.sh_dc),
                features=array(self.decoder(self.latent)), object_ids=template.object_ids.copy(),
                motion_bases=array(self.motion_bases), motion_coeffs=array(self.motion_coeffs),
                camera=template.camera, object_names=template.object_names, feature_space=template.feature_space,
                background=template.background, meta={**template.meta, "source": "fit"},
                visibility_logits=array(self.visibility),
            )


def _frame_loss(params: _Parameters, frames: FitFrames, t: int, config: FitConfig, background) -> torch.Tensor:
    """The loss of one frame (module docstring)."""
    rgb, features, depth, _ = params.render(t, frames.camera_at(t), background)
    valid = torch.from_numpy(frames.masks[t] if frames.masks is not None else np.ones(rgb.shape[:2], bool))
    weight = valid.float() / valid.float().sum().clamp(min=1.0)
    loss = config.rgb_weight * ((rgb - torch.from_numpy(frames.rgb[t])).abs().mean(-1) * weight).sum()
    if frames.features is not None and config.feature_weight > 0:
        target = torch.from_numpy(frames.features[t])
        loss = loss + config.feature_weight * (((features - target) ** 2).mean(-1) * weight).sum()
    if config.depth_weight > 0:
        target = torch.from_numpy(frames.depth[t])
        known = (target > 0).float() * weight
        scale = float(frames.depth[frames.depth > 0].mean()) if (frames.depth > 0).any() else 1.0
        loss = loss + config.depth_weight * ((depth - target).abs() * known).sum() / scale
    return loss


def scene_loss(params_or_scene, frames: FitFrames, config: FitConfig | None = None) -> float:
    """The fitting loss summed over all frames (mean per frame) for a Scene4D or trainable state.
    A Scene4D's features are compared with the targets directly (its decoder is the identity)."""
    config = config or FitConfig()
    params = params_or_scene
    if isinstance(params_or_scene, Scene4D):
        params = _Parameters(params_or_scene, None, config.decoder_hidden)
    background = torch.tensor(_background_of(params_or_scene, frames), dtype=torch.float32)
    with torch.no_grad():
        return float(np.mean([_frame_loss(params, frames, t, config, background).item() for t in range(frames.n_frames)]))


def _background_of(scene_or_params, frames: FitFrames):
    if isinstance(scene_or_params, Scene4D):
        return scene_or_params.background
    return getattr(scene_or_params, "background_rgb", np.median(frames.rgb.reshape(-1, 3), axis=0))


def _converged(losses: list[float], window: int, tol: float) -> bool:
    """True at the end of a window whose mean loss is less than ``tol`` below the previous window's (FitConfig)."""
    if window <= 0 or len(losses) < 2 * window or len(losses) % window:
        return False
    last, before = np.mean(losses[-window:]), np.mean(losses[-2 * window : -window])
    return bool(last > (1.0 - tol) * before)


def fit_scene(
    frames: FitFrames,
    config: FitConfig | None = None,
    init: Scene4D | None = None,
    callback=None,
) -> FitResult:
    """Fit a Scene4D to ``frames`` (module docstring). ``callback(step, loss)`` is called after each step
    and may return True to stop early (a Stop button)."""
    config = config or FitConfig()
    if config.steps < 0 or config.frames_per_step < 1:
        raise InvalidInputError("steps must be >= 0 and frames_per_step >= 1.")
    if config.train not in TRAIN_MODES:
        raise InvalidInputError(f"train must be one of {TRAIN_MODES}, got {config.train!r}.")
    if frames.cameras is not None and (init is None or init.n_bases):
        raise InvalidInputError("Frames seen by several cameras are views of a static scene: give that scene (init).")
    generator = seed_everything(config.seed)
    init = init or init_from_rgbd(frames, config.init_gaussians, config.init_frames)
    out_dim = frames.features.shape[-1] if frames.features is not None else None
    basis = None
    if config.latent_dim is not None and out_dim is not None and config.latent_dim < min(out_dim, init.feature_dim):
        if config.latent_dim < 1:
            raise InvalidInputError(f"latent_dim must be at least 1, got {config.latent_dim}.")
        sample = frames.features.reshape(-1, out_dim)
        sample = sample[np.random.default_rng(config.seed).choice(len(sample), min(len(sample), 20000), replace=False)]
        basis = np.linalg.svd(sample.astype(np.float64), full_matrices=False)[2][: config.latent_dim].T  # [Ds, D]
    params = _Parameters(init, out_dim, config.decoder_hidden, basis)
    params.background_rgb = init.background
    background = torch.tensor(init.background, dtype=torch.float32)
    groups = [
        {"params": [params.latent], "lr": config.lr_features},
        {"params": list(params.decoder.parameters()), "lr": config.lr_decoder},
    ]
    geometry = [
        {"params": [params.means], "lr": config.lr_means},
        {"params": [params.log_scales], "lr": config.lr_scales},
        {"params": [params.quats], "lr": config.lr_quats},
        {"params": [params.opacity_logits], "lr": config.lr_opacity},
        {"params": [params.sh_dc], "lr": config.lr_colour / SH_C0},
        {"params": [params.motion_coeffs, params.motion_bases], "lr": config.lr_motion},
        {"params": [params.visibility], "lr": config.lr_visibility},
    ]
    if config.train == "all":
        groups += geometry
    else:  # features only: no gradient flows into the rest (the rasterizer then skips its geometry backward)
        for group in geometry:
            for parameter in group["params"]:
                parameter.requires_grad_(False)
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    result = FitResult(scene=init, initial_loss=scene_loss(params, frames, config))
    order: list[int] = []  # frames in epochs (each frame once per shuffled pass), so loss windows compare alike
    for step in range(config.steps):
        while len(order) < config.frames_per_step:
            order += torch.randperm(frames.n_frames, generator=generator).tolist()
        chosen, order = order[: config.frames_per_step], order[config.frames_per_step :]
        optimizer.zero_grad(set_to_none=True)
        loss = sum(_frame_loss(params, frames, t, config, background) for t in chosen) / len(chosen)
        loss.backward()
        optimizer.step()
        result.losses.append(float(loss.detach()))
        if callback is not None and callback(step, result.losses[-1]):
            break
        if _converged(result.losses, config.converge_window, config.converge_tol):
            break
    result.final_loss = scene_loss(params, frames, config)
    result.scene = params.to_scene(init)
    return result


def prune_unmatched(scene: Scene4D, frames: FitFrames, margin: int = 2) -> tuple[Scene4D, int]:
    """The scene without the object Gaussians that never match their object, and how many went.

    A Gaussian of instance k > 0 (``scene.object_ids``) *matches* at frame t when it is shown there
    (visibility offset above ``HIDDEN / 2``) and the home camera projects its centre into instance k's
    mask of that frame grown by ``margin`` pixels. One that matches in no frame is a fragment: it draws the
    object's colour where the video never had it (a piece left behind on the path, a smear), and goes.
    Background Gaussians (id 0) stay."""
    if frames.instance_ids is None or scene.n_gaussians == 0:
        return scene, 0
    camera = frames.camera
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    matched = scene.object_ids <= 0
    for t in range(frames.n_frames):
        shown = scene.visibility_logits[:, t] > HIDDEN / 2 if scene.visibility_logits.shape[1] else np.ones(scene.n_gaussians, bool)
        camera_points = camera.to_camera(scene.means_at(float(t)))
        pixels = camera_points @ camera.K.T
        z = np.maximum(pixels[:, 2], 1e-6)
        u = np.clip(np.floor(pixels[:, 0] / z), 0, camera.width - 1).astype(int)
        v = np.clip(np.floor(pixels[:, 1] / z), 0, camera.height - 1).astype(int)
        for k in np.unique(scene.object_ids[scene.object_ids > 0]):
            grown = cv2.dilate((frames.instance_ids[t] == k).astype(np.uint8), kernel) > 0
            mine = (scene.object_ids == k) & shown
            matched[mine] |= grown[v[mine], u[mine]]
    return (scene, 0) if matched.all() else (scene.subset(matched), int((~matched).sum()))


def frames_from_scene(scene: Scene4D, camera: Camera | None = None) -> FitFrames:
    """Targets rendered from a known scene (RGB, depth, features at every frame): fitting them from a
    perturbed start must recover a low loss, since ``scene`` itself fits them exactly."""
    from .rendering import render

    camera = camera or scene.camera
    times = range(scene.n_frames)
    rgb = np.stack([render(scene, camera, t, "rgb", backend="cpu").numpy() for t in times])
    depth = np.stack([render(scene, camera, t, "depth", backend="cpu").numpy() for t in times])
    features = np.stack([render(scene, camera, t, "features", backend="cpu").numpy() for t in times])
    return FitFrames(rgb=rgb, depth=depth, camera=camera, features=features, names=scene.object_names,
                     feature_space=scene.feature_space)
