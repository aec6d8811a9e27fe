"""Scene4D: dynamic 3D Gaussians with a feature vector each, their motion, and the camera convention.

Parameterisation (the 3D Gaussian Splatting one, so a PLY round-trips bit-exactly):

* ``means`` float32 ``[N, 3]``: centres at frame 0 (the canonical frame), world units.
* ``quats`` float32 ``[N, 4]``: rotations as quaternions ``(w, x, y, z)``, normalised when used.
* ``log_scales`` float32 ``[N, 3]``: natural log of the standard deviations along the rotated axes.
* ``opacity_logits`` float32 ``[N]``: opacity = sigmoid(logit).
* ``sh_dc`` float32 ``[N, 3]``: degree-0 spherical-harmonic colour; RGB = max(0, 0.5 + C0 * sh_dc)
  with C0 = 0.28209479 (the 3DGS and gsplat convention; no view dependence).
* ``features`` float32 ``[N, D]``: the semantic feature f_j of each Gaussian (thesis 11.3.2), in the
  space named by ``feature_space`` (see :mod:`.queries`); edits compare it with query features.
* ``object_ids`` int32 ``[N]``: index into ``object_names`` or -1 (unknown). Optional truth/provenance;
  editing never reads it (it selects by features), the benchmarks score against it.

Motion (MoSca-style motion bases, simplified to translations): ``motion_bases`` float32 ``[B, T, 3]``
holds B translation trajectories over T frames, ``motion_coeffs`` float32 ``[N, B]`` blends them per
Gaussian, so the centre of Gaussian j at frame t is ``means[j] + motion_coeffs[j] @ motion_bases[:, t]``.
A rigid object is one basis with coefficient 1 on its Gaussians; a static scene has B = 0. Between
integer frames the bases are interpolated linearly, so any time in ``[0, T-1]`` renders. MoSca's
scaffold nodes carry full SE(3) motion with skinning weights; rotations and scales are constant here.

Visibility (not in MoSca; for generated videos, whose objects appear and vanish between frames):
``visibility_logits`` float32 ``[N, V]`` with V = 0 (always visible) or V = T, added to the opacity
logit per frame, so Gaussian j's opacity at frame t is ``sigmoid(opacity_logits[j] + visibility_logits[j, t])``
(the offsets interpolated linearly between frames like the bases). A persistent Gaussian cannot
otherwise fit a piece of an object that a tiny text-to-video model draws in some frames only.

Cameras (:class:`Camera`) follow gsplat and OpenCV/COLMAP: ``viewmat`` is world-to-camera, the camera
looks along +z with +x right and +y down; ``K`` is in pixels and pixel (row i, column j) has its centre
at ``(j + 0.5, i + 0.5)``. The world has +y up (orbits turn about it).

Save and load use ``.npz`` (no pickles) and are bit-exact; loading checks every array header against
:class:`SceneLimits` before reading its data, so a hostile file cannot make the process allocate more.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError

# Degree-0 spherical harmonic basis constant: RGB = 0.5 + SH_C0 * sh_dc.
SH_C0 = 0.28209479177387814
# Opacities written from activated values are kept this far from 0 and 1 so that their logit is finite.
OPACITY_EPS = 1e-6
FORMAT_VERSION = 1
WORLD_UP = np.array([0.0, 1.0, 0.0])


class SceneTooLargeError(InvalidInputError):
    """A scene (or a file that claims to hold one) exceeds the configured :class:`SceneLimits`."""


@dataclass(frozen=True)
class SceneLimits:
    """The largest scene WorldStudio accepts, from a file, an upload or a builder."""

    # Gaussians; WORLDSTUDIO_MORPHO4D_MAX_GAUSSIANS overrides the default.
    max_gaussians: int = field(default_factory=lambda: int(os.environ.get("WORLDSTUDIO_MORPHO4D_MAX_GAUSSIANS", 200_000)))
    # Frames of motion.
    max_frames: int = 256
    # Feature dimension D.
    max_feature_dim: int = 128
    # Motion bases B.
    max_bases: int = 64
    # Bytes of a file to read (npz or PLY).
    max_file_bytes: int = 256 * 2**20


def check_gaussian_count(n: int, limits: SceneLimits | None = None) -> int:
    """Return ``n`` if it is within the configured limit, else raise :class:`SceneTooLargeError`."""
    limits = limits or SceneLimits()
    if n > limits.max_gaussians:
        raise SceneTooLargeError(
            f"The scene has {n:,} Gaussians; the configured limit is {limits.max_gaussians:,} "
            "(WORLDSTUDIO_MORPHO4D_MAX_GAUSSIANS)."
        )
    return n


def rgb_to_sh(rgb) -> np.ndarray:
    """Degree-0 SH coefficients of RGB colours in [0, 1] (inverse of :func:`sh_to_rgb` where RGB >= 0)."""
    return ((np.asarray(rgb, dtype=np.float32) - np.float32(0.5)) / np.float32(SH_C0)).astype(np.float32)


def sh_to_rgb(sh_dc) -> np.ndarray:
    """RGB of degree-0 SH coefficients: ``max(0, 0.5 + C0 * sh_dc)`` (gsplat's clamp)."""
    return np.maximum(np.float32(0.5) + np.float32(SH_C0) * np.asarray(sh_dc, dtype=np.float32), 0).astype(np.float32)


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), OPACITY_EPS, 1.0 - OPACITY_EPS)
    return np.log(p / (1.0 - p)).astype(np.float32)


def sigmoid(x) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))).astype(np.float32)


@dataclass
class Camera:
    """A pinhole camera in gsplat's convention (module docstring): world-to-camera ``viewmat``, pixel ``K``."""

    # float32 [4, 4] world-to-camera (x right, y down, z forward).
    viewmat: np.ndarray
    # float32 [3, 3] intrinsics in pixels.
    K: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        self.viewmat = np.asarray(self.viewmat, dtype=np.float32)
        self.K = np.asarray(self.K, dtype=np.float32)
        if self.viewmat.shape != (4, 4) or self.K.shape != (3, 3):
            raise InvalidInputError(f"A camera needs a 4x4 viewmat and 3x3 K, got {self.viewmat.shape}, {self.K.shape}.")
        if not (np.isfinite(self.viewmat).all() and np.isfinite(self.K).all()):
            raise InvalidInputError("A camera's matrices must be finite.")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 4096:
                raise InvalidInputError(f"Camera {name} must be an integer in [1, 4096], got {value!r}.")
            setattr(self, name, int(value))
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise InvalidInputError("A camera's focal lengths must be positive.")

    @property
    def position(self) -> np.ndarray:
        """The camera centre in world coordinates."""
        rotation, translation = self.viewmat[:3, :3].astype(np.float64), self.viewmat[:3, 3].astype(np.float64)
        return -rotation.T @ translation

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points ``[N, 3]`` in this camera's coordinates (z is the depth along the view)."""
        return points @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]

    def resized(self, width: int, height: int) -> Camera:
        """The same camera with its image scaled to ``width`` x ``height`` (intrinsics scaled with it)."""
        K = self.K.astype(np.float64).copy()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return Camera(self.viewmat.copy(), K, width, height)

    def to_dict(self) -> dict:
        return {"viewmat": self.viewmat.tolist(), "K": self.K.tolist(), "width": self.width, "height": self.height}


def intrinsics(fov_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole ``K`` with a horizontal field of view of ``fov_deg`` and the principal point at the centre."""
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def look_at(eye, target, up=WORLD_UP) -> np.ndarray:
    """World-to-camera matrix of a camera at ``eye`` looking at ``target`` (OpenCV axes, world +y up)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    if np.linalg.norm(forward) < 1e-9:
        raise InvalidInputError("A camera cannot look at its own position.")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight up or down: pick any right vector
        right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    viewmat = np.eye(4)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ eye
    return viewmat.astype(np.float32)


def orbit_camera(
    target,
    azimuth_deg: float,
    elevation_deg: float,
    distance: float,
    width: int,
    height: int,
    fov_deg: float = 40.0,
) -> Camera:
    """A camera on a sphere around ``target``: azimuth 0 looks along -z (from +z), positive azimuth turns
    it to the right about +y, positive elevation raises it."""
    if not np.isfinite(distance) or distance <= 0:
        raise InvalidInputError(f"The camera distance must be positive, got {distance!r}.")
    if not -89.0 <= elevation_deg <= 89.0:
        raise InvalidInputError(f"The elevation must be in [-89, 89] degrees, got {elevation_deg!r}.")
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    offset = distance * np.array(
        [math.sin(azimuth) * math.cos(elevation), math.sin(elevation), math.cos(azimuth) * math.cos(elevation)]
    )
    target = np.asarray(target, dtype=np.float64)
    return Camera(look_at(target + offset, target), intrinsics(fov_deg, width, height), width, height)


# Arrays of a Scene4D, their dtype, and their trailing shape (None = the scene's N, "D", "B", "T").
_ARRAYS: dict[str, tuple[type, tuple]] = {
    "means": (np.float32, (3,)),
    "quats": (np.float32, (4,)),
    "log_scales": (np.float32, (3,)),
    "opacity_logits": (np.float32, ()),
    "sh_dc": (np.float32, (3,)),
    "features": (np.float32, ("D",)),
    "object_ids": (np.int32, ()),
    "motion_coeffs": (np.float32, ("B",)),
    "visibility_logits": (np.float32, ("V",)),
}

# Arrays a scene file may lack (written before they existed); they take their defaults.
_OPTIONAL = ("visibility_logits",)


@dataclass
class Scene4D:
    """Dynamic 3D Gaussians with features; see the module docstring for every field's meaning."""

    means: np.ndarray  # float32 [N, 3]
    quats: np.ndarray  # float32 [N, 4] (w, x, y, z)
    log_scales: np.ndarray  # float32 [N, 3]
    opacity_logits: np.ndarray  # float32 [N]
    sh_dc: np.ndarray  # float32 [N, 3]
    features: np.ndarray  # float32 [N, D]
    object_ids: np.ndarray  # int32 [N], -1 = unknown
    motion_bases: np.ndarray  # float32 [B, T, 3]
    motion_coeffs: np.ndarray  # float32 [N, B]
    # The camera the scene was made from (the "home" view).
    camera: Camera
    # Names of objects, indexed by object_ids (e.g. "background", "red circle").
    object_names: tuple[str, ...] = ()
    # Identifier of the query encoder whose space ``features`` live in (queries.py); "" = none.
    feature_space: str = ""
    # RGB in [0, 1] composited behind the Gaussians in "rgb" renders.
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # Free-form JSON-ready provenance (source, seed, caption, ...).
    meta: dict = field(default_factory=dict)
    # float32 [N, 0] (always visible) or [N, T]: per-frame opacity logit offsets (module docstring).
    visibility_logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.visibility_logits is None:
            self.visibility_logits = np.zeros((np.asarray(self.means).reshape(-1, 3).shape[0], 0), np.float32)
        self.validate()

    # ----- shape facts
    @property
    def n_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.motion_bases.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_bases(self) -> int:
        return int(self.motion_bases.shape[0])

    # ----- activated values
    @property
    def scales(self) -> np.ndarray:
        return np.exp(self.log_scales).astype(np.float32)

    @property
    def opacities(self) -> np.ndarray:
        return sigmoid(self.opacity_logits)

    @property
    def colours(self) -> np.ndarray:
        return sh_to_rgb(self.sh_dc)

    def check_time(self, t: float) -> float:
        """Return ``t`` as a float if it lies in ``[0, n_frames - 1]``, else raise."""
        try:
            value = float(t)
        except (TypeError, ValueError):
            raise InvalidInputError(f"Time must be a number of frames, got {t!r}.") from None
        if not math.isfinite(value) or not 0.0 <= value <= self.n_frames - 1:
            raise InvalidInputError(f"Time {t!r} is outside the scene: it has frames 0 to {self.n_frames - 1}.")
        return value

    def offsets_at(self, t: float) -> np.ndarray:
        """Per-Gaussian translation at time ``t`` (linear between frames): float32 ``[N, 3]``."""
        low, high, weight = self._frame_blend(t)
        if self.n_bases == 0:
            return np.zeros_like(self.means)
        basis = self.motion_bases[:, low] * (np.float32(1.0) - weight) + self.motion_bases[:, high] * weight
        return (self.motion_coeffs @ basis).astype(np.float32)

    def means_at(self, t: float) -> np.ndarray:
        """Centres at time ``t``: float32 ``[N, 3]``."""
        return self.means + self.offsets_at(t)

    def _frame_blend(self, t: float) -> tuple[int, int, np.float32]:
        """The frames either side of time ``t`` and the weight of the later one."""
        t = self.check_time(t)
        low = min(int(math.floor(t)), self.n_frames - 1)
        return low, min(low + 1, self.n_frames - 1), np.float32(t - low)

    def opacity_logits_at(self, t: float) -> np.ndarray:
        """Opacity logits at time ``t`` with the visibility offsets (module docstring): float32 ``[N]``."""
        if self.visibility_logits.shape[1] == 0:
            self.check_time(t)
            return self.opacity_logits
        low, high, weight = self._frame_blend(t)
        offset = self.visibility_logits[:, low] * (np.float32(1.0) - weight) + self.visibility_logits[:, high] * weight
        return (self.opacity_logits + offset).astype(np.float32)

    def opacities_at(self, t: float) -> np.ndarray:
        """Opacities at time ``t``: float32 ``[N]``."""
        return sigmoid(self.opacity_logits_at(t))

    def centre(self) -> np.ndarray:
        """A robust centre of the canonical Gaussians (median), for orbit cameras."""
        if self.n_gaussians == 0:
            return np.zeros(3)
        return np.median(self.means.astype(np.float64), axis=0)

    # ----- construction helpers
    @classmethod
    def from_activated(
        cls,
        means,
        scales,
        colours,
        opacities,
        features=None,
        *,
        quats=None,
        object_ids=None,
        motion_bases=None,
        motion_coeffs=None,
        camera: Camera,
        n_frames: int = 1,
        **kwargs,
    ) -> Scene4D:
        """A scene from linear scales, RGB colours in [0, 1] and opacities in (0, 1); missing parts default
        to identity rotations, zero features (D = 1), unknown ids and no motion."""
        means = np.asarray(means, dtype=np.float32).reshape(-1, 3)
        n = means.shape[0]
        scales = np.asarray(scales, dtype=np.float32)
        if scales.ndim == 1:
            scales = np.repeat(scales[:, None], 3, axis=1) if scales.shape[0] == n else np.broadcast_to(scales, (n, 3))
        if np.any(~np.isfinite(scales)) or np.any(scales <= 0):
            raise InvalidInputError("Gaussian scales must be positive and finite.")
        quats = np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)) if quats is None else quats
        features = np.zeros((n, 1), np.float32) if features is None else features
        object_ids = np.full(n, -1, np.int32) if object_ids is None else object_ids
        if motion_bases is None:
            motion_bases = np.zeros((0, n_frames, 3), np.float32)
            motion_coeffs = np.zeros((n, 0), np.float32)
        return cls(
            means=means,
            quats=np.asarray(quats, dtype=np.float32),
            log_scales=np.log(np.broadcast_to(scales, (n, 3))).astype(np.float32),
            opacity_logits=logit(opacities).reshape(n),
            sh_dc=rgb_to_sh(np.broadcast_to(np.asarray(colours, np.float32), (n, 3))),
            features=np.asarray(features, dtype=np.float32),
            object_ids=np.asarray(object_ids, dtype=np.int32),
            motion_bases=np.asarray(motion_bases, dtype=np.float32),
            motion_coeffs=np.asarray(motion_coeffs, dtype=np.float32),
            camera=camera,
            **kwargs,
        )

    def subset(self, keep: np.ndarray) -> Scene4D:
        """The scene with only the Gaussians where the bool mask ``keep`` [N] is true (others untouched)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.n_gaussians,):
            raise InvalidInputError(f"A Gaussian mask has shape ({self.n_gaussians},), got {keep.shape}.")
        return replace(
            self,
            **{name: getattr(self, name)[keep] for name in _ARRAYS},
            motion_bases=self.motion_bases.copy(),
            camera=Camera(self.camera.viewmat.copy(), self.camera.K.copy(), self.camera.width, self.camera.height),
            meta=json.loads(json.dumps(self.meta)),
        )

    def copy(self) -> Scene4D:
        return self.subset(np.ones(self.n_gaussians, dtype=bool))

    # ----- validation
    def validate(self, limits: SceneLimits | None = None) -> None:
        """Check shapes, dtypes, finiteness and limits; raise :class:`InvalidInputError` on the first problem."""
        limits = limits or SceneLimits()
        if not isinstance(self.camera, Camera):
            raise InvalidInputError("A scene needs a Camera.")
        for name, (dtype, _) in _ARRAYS.items():
            value = np.asarray(getattr(self, name))
            if value.dtype != dtype:
                if np.issubdtype(value.dtype, np.number) and not (
                    dtype == np.int32 and not np.issubdtype(value.dtype, np.integer)
                ):
                    value = value.astype(dtype)
                else:
                    raise InvalidInputError(f"Scene array {name!r} must be {np.dtype(dtype)}, got {value.dtype}.")
            setattr(self, name, np.ascontiguousarray(value))
        self.motion_bases = np.ascontiguousarray(np.asarray(self.motion_bases, dtype=np.float32))
        if self.means.ndim != 2 or self.means.shape[1] != 3:
            raise InvalidInputError(f"means must be [N, 3], got {self.means.shape}.")
        n = self.n_gaussians
        check_gaussian_count(n, limits)
        if self.motion_bases.ndim != 3 or self.motion_bases.shape[2] != 3:
            raise InvalidInputError(f"motion_bases must be [B, T, 3], got {self.motion_bases.shape}.")
        n_bases, n_frames = self.motion_bases.shape[:2]
        if not 1 <= n_frames <= limits.max_frames:
            raise InvalidInputError(f"A scene has 1 to {limits.max_frames} frames, got {n_frames}.")
        if n_bases > limits.max_bases:
            raise SceneTooLargeError(f"A scene has at most {limits.max_bases} motion bases, got {n_bases}.")
        if self.features.ndim != 2 or not 1 <= self.features.shape[1] <= limits.max_feature_dim:
            raise InvalidInputError(
                f"features must be [N, D] with 1 <= D <= {limits.max_feature_dim}, got {self.features.shape}."
            )
        visibility = np.asarray(self.visibility_logits)
        if visibility.ndim != 2 or visibility.shape[1] not in (0, n_frames):
            raise InvalidInputError(f"visibility_logits must be [N, 0] or [N, {n_frames}], got {visibility.shape}.")
        sizes = {"D": self.features.shape[1], "B": n_bases, "V": visibility.shape[1]}
        for name, (_, trailing) in _ARRAYS.items():
            expected = (n, *(sizes.get(axis, axis) for axis in trailing))
            if getattr(self, name).shape != expected:
                raise InvalidInputError(f"Scene array {name!r} must have shape {expected}, got {getattr(self, name).shape}.")
            if getattr(self, name).dtype.kind == "f" and not np.isfinite(getattr(self, name)).all():
                raise InvalidInputError(f"Scene array {name!r} has NaN or infinite values.")
        if not np.isfinite(self.motion_bases).all():
            raise InvalidInputError("Scene array 'motion_bases' has NaN or infinite values.")
        if n and np.any(np.linalg.norm(self.quats, axis=1) < 1e-12):
            raise InvalidInputError("Some Gaussians have a zero quaternion (no rotation can be read from it).")
        self.object_names = tuple(str(name) for name in self.object_names)
        if n and self.object_ids.min() < -1:
            raise InvalidInputError("object_ids are -1 (unknown) or an index into object_names.")
        if n and self.object_ids.max() >= len(self.object_names):
            raise InvalidInputError(
                f"object_ids go up to {int(self.object_ids.max())} but only {len(self.object_names)} names are given."
            )
        background = np.asarray(self.background, dtype=np.float64).reshape(-1)
        if background.shape != (3,) or not np.isfinite(background).all():
            raise InvalidInputError(f"The background is an RGB triple, got {self.background!r}.")
        self.background = tuple(float(c) for c in background)


def _npz_headers(archive: zipfile.ZipFile, limits: SceneLimits) -> dict[str, tuple[tuple, np.dtype]]:
    """Shape and dtype of every array in an npz, read from headers only; raise if they are unsafe."""
    headers, total = {}, 0
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise InvalidInputError(f"Not a scene file: unexpected member {info.filename!r}.")
        with archive.open(info) as handle:
            try:
                version = np.lib.format.read_magic(handle)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(handle)
            except (ValueError, SyntaxError, TypeError) as error:
                raise InvalidInputError(f"Not a scene file: {info.filename!r} is not a numpy array ({error}).") from None
        if dtype.hasobject:
            raise InvalidInputError(f"Not a scene file: {info.filename!r} holds Python objects (refused).")
        total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if total > 4 * limits.max_file_bytes:
            raise SceneTooLargeError(
                f"The scene file would expand to more than {4 * limits.max_file_bytes // 2**20} MiB in memory (refused)."
            )
        headers[info.filename[:-4]] = (tuple(shape), dtype)
    return headers


def scene_arrays(scene: Scene4D) -> dict[str, np.ndarray]:
    """Every array of a scene by its name in the ``.npz`` (the Gaussians, their motion and the camera)."""
    arrays = {name: getattr(scene, name) for name in _ARRAYS}
    arrays.update(motion_bases=scene.motion_bases, camera_viewmat=scene.camera.viewmat, camera_K=scene.camera.K)
    return arrays


def save_scene(scene: Scene4D, path) -> Path:
    """Write ``scene`` to ``path`` (``.npz``); :func:`load_scene` reads it back bit-exactly."""
    path = Path(path)
    scene.validate()
    header = {
        "format": "worldstudio.morpho4d.scene",
        "version": FORMAT_VERSION,
        "camera": {"width": scene.camera.width, "height": scene.camera.height},
        "object_names": list(scene.object_names),
        "feature_space": scene.feature_space,
        "background": list(scene.background),
        "meta": scene.meta,
    }
    arrays = scene_arrays(scene)
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_scene(source, limits: SceneLimits | None = None) -> Scene4D:
    """Read a scene written by :func:`save_scene` from a path or bytes; raise :class:`InvalidInputError` on
    anything malformed, and :class:`SceneTooLargeError` before reading data beyond ``limits``."""
    limits = limits or SceneLimits()
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"No scene file at {path}.")
        if path.stat().st_size > limits.max_file_bytes:
            raise SceneTooLargeError(
                f"The scene file is {path.stat().st_size / 2**20:.1f} MiB; the limit is {limits.max_file_bytes / 2**20:.0f} MiB."
            )
        data = path.read_bytes()
    if len(data) > limits.max_file_bytes:
        raise SceneTooLargeError(f"The scene file is larger than {limits.max_file_bytes / 2**20:.0f} MiB.")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidInputError("Not a scene file: it is not an .npz archive.") from None
    with archive:
        headers = _npz_headers(archive, limits)
        required = (set(_ARRAYS) - set(_OPTIONAL)) | {"motion_bases", "camera_viewmat", "camera_K", "header"}
        required |= set(_OPTIONAL) & set(headers)
        missing = sorted(required - set(headers))
        if missing:
            raise InvalidInputError(f"Not a scene file: missing arrays {missing}.")
        n = headers["means"][0][0] if headers["means"][0] else 0
        check_gaussian_count(int(n), limits)
        arrays = {}
        for name in required:
            with archive.open(name + ".npy") as handle:
                arrays[name] = np.lib.format.read_array(handle, allow_pickle=False)
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInputError("Not a scene file: its header is not JSON.") from None
    if not isinstance(header, dict) or header.get("format") != "worldstudio.morpho4d.scene":
        raise InvalidInputError("Not a WorldStudio Morpho4D scene file.")
    if header.get("version") != FORMAT_VERSION:
        raise InvalidInputError(f"Scene format version {header.get('version')!r} is not supported (expected {FORMAT_VERSION}).")
    try:
        camera = Camera(arrays.pop("camera_viewmat"), arrays.pop("camera_K"), header["camera"]["width"], header["camera"]["height"])
        names = header.get("object_names", [])
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InvalidInputError("Not a scene file: object_names must be a list of strings.")
        return Scene4D(
            **arrays,
            camera=camera,
            object_names=tuple(names),
            feature_space=str(header.get("feature_space", "")),
            background=tuple(header.get("background", (1.0, 1.0, 1.0))),
            meta=header.get("meta", {}) if isinstance(header.get("meta", {}), dict) else {},
        )
    except (KeyError, TypeError) as error:
        raise InvalidInputError(f"Not a scene file: {error}.") from None


def scene_fields() -> tuple[str, ...]:
    """Names of the Scene4D dataclass fields (for tests and tools)."""
    return tuple(f.name for f in fields(Scene4D))
