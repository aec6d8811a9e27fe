"""Export and import: 3DGS PLY per time step (one file, or every frame in one zip), and videos of a time
sweep or an orbit.

PLY: binary little-endian, one ``vertex`` element with exactly the float32 properties of the 3D
Gaussian Splatting format that viewers need (SuperSplat, gsplat.js in ``gr.Model3D``, plyfile,
Open3D): ``x y z f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3``,
where ``opacity`` is the logit, ``scale_*`` the log standard deviations and ``rot_*`` the (w, x, y, z)
quaternion: Scene4D's own parameters, so the values round-trip bit for bit. Degree-0 colour only (no
``f_rest_*``), no normals, no features (they would be extra fields).

Axes: 3DGS files and viewers use COLMAP/OpenCV world axes (y down, z away from the viewer), while a
Scene4D's world has y up (scene.py). A PLY therefore holds the world turned 180 degrees about x:
``(x, y, z) -> (x, -y, -z)`` and ``q -> (0, 1, 0, 0) * q``, i.e. ``(w, x, y, z) -> (-x, w, -z, y)``.
Both are sign flips and swaps, exact in float32, and :func:`read_ply` applies the inverse, so a round
trip is still bit-exact; viewers then show the scene upright and from the front.

Reading a PLY (:func:`read_ply`) treats the file as hostile: its size, header (format, elements,
property types) and declared vertex count are checked against :class:`SceneLimits` before plyfile
reads any data, and the values must be finite. A plain 3DGS PLY becomes a static Scene4D (one
frame, no features: viewable and exportable, not editable by query, until
:meth:`~.runner.Morpho4DRunner.load_ply` distils features into it from rendered views, :mod:`.distil`).
"""

from __future__ import annotations

import math
import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..video_io import encode_video
from .rendering import render, to_uint8
from .scene import Camera, Scene4D, SceneLimits, SceneTooLargeError, check_gaussian_count, intrinsics, look_at, orbit_camera

PLY_PROPERTIES: tuple[str, ...] = (
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)
MAX_HEADER_BYTES = 64 * 1024
_PLY_TYPES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
              "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}
# Largest coordinate or log-scale magnitude accepted from a file.
MAX_ABS_VALUE = 1e6


def to_ply_axes(means: np.ndarray, quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World (y up) to PLY axes (y down): a 180 degree turn about x, exact (module docstring)."""
    w, x, y, z = quats.T
    return means * np.array([1, -1, -1], np.float32), np.stack([-x, w, -z, y], axis=1)


def from_ply_axes(means: np.ndarray, quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_ply_axes` (the turn is its own inverse up to the quaternion's sign)."""
    w, x, y, z = quats.T
    return means * np.array([1, -1, -1], np.float32), np.stack([x, -w, z, -y], axis=1)


def ply_arrays(scene: Scene4D, t: float = 0.0) -> dict[str, np.ndarray]:
    """The PLY columns of ``scene`` at time ``t`` (float32 each, PLY axes)."""
    means, quats = to_ply_axes(scene.means_at(t), scene.quats)
    columns = {"x": means[:, 0], "y": means[:, 1], "z": means[:, 2]}
    columns.update({f"f_dc_{i}": scene.sh_dc[:, i] for i in range(3)})
    columns["opacity"] = scene.opacity_logits_at(t)
    columns.update({f"scale_{i}": scene.log_scales[:, i] for i in range(3)})
    columns.update({f"rot_{i}": quats[:, i] for i in range(4)})
    return {name: np.ascontiguousarray(columns[name], dtype=np.float32) for name in PLY_PROPERTIES}


def ply_bytes(scene: Scene4D, t: float = 0.0) -> bytes:
    """The scene at time ``t`` as the bytes of a 3DGS PLY (module docstring)."""
    columns = ply_arrays(scene, t)
    data = np.empty(scene.n_gaussians, dtype=[(name, "<f4") for name in PLY_PROPERTIES])
    for name, column in columns.items():
        data[name] = column
    header = "ply\nformat binary_little_endian 1.0\n"
    header += f"comment WorldStudio Morpho4D, time {float(t):g} of {scene.n_frames} frames\n"
    header += f"element vertex {scene.n_gaussians}\n"
    header += "".join(f"property float {name}\n" for name in PLY_PROPERTIES) + "end_header\n"
    return header.encode("ascii") + data.tobytes()


def write_ply(scene: Scene4D, path, t: float = 0.0) -> Path:
    """Write the scene at time ``t`` as a 3DGS PLY (module docstring); returns the path."""
    path = Path(path)
    path.write_bytes(ply_bytes(scene, t))
    return path


def write_ply_sequence(scene: Scene4D, folder, stem: str = "scene") -> list[Path]:
    """One PLY per frame, ``{stem}_t000.ply`` ...; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_ply(scene, folder / f"{stem}_t{t:03d}.ply", t) for t in range(scene.n_frames)]


def write_ply_zip(scene: Scene4D, path, stem: str = "scene") -> Path:
    """Every frame as a 3DGS PLY in one zip, named as :func:`write_ply_sequence` names them; returns the path.
    Stored, not deflated: float32 columns barely compress and a viewer-sized scene stays quick to write."""
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for t in range(scene.n_frames):
            archive.writestr(f"{stem}_t{t:03d}.ply", ply_bytes(scene, t))
    return path


def _parse_header(raw: bytes) -> tuple[str, int, list[tuple[str, str]], int]:
    """(format, vertex count, [(type, name)], header length) of a PLY, or InvalidInputError."""
    if not raw.startswith(b"ply\n") and not raw.startswith(b"ply\r\n"):
        raise InvalidInputError("Not a PLY file: it does not start with 'ply'.")
    end = raw.find(b"end_header\n")
    if end < 0:
        raise InvalidInputError(f"Not a usable PLY file: no 'end_header' within its first {MAX_HEADER_BYTES // 1024} KiB.")
    length = end + len(b"end_header\n")
    try:
        lines = raw[:end].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise InvalidInputError("Not a usable PLY file: its header is not ASCII text.") from None
    fmt, count, properties, element = None, None, [], None
    for line in lines:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            element = words[1]
            if element != "vertex":
                raise InvalidInputError(
                    f"This PLY has a {element!r} element; only plain 3DGS PLYs (one 'vertex' element) are read "
                    "(compressed SuperSplat PLYs are not)."
                )
            if not re.fullmatch(r"\d{1,12}", words[2]):
                raise InvalidInputError(f"The PLY's vertex count {words[2]!r} is not a number.")
            count = int(words[2])
        elif words[0] == "property" and element == "vertex":
            if len(words) != 3 or words[1] not in _PLY_TYPES:
                raise InvalidInputError(f"Unsupported PLY property {line.strip()!r} (lists are not 3DGS fields).")
            properties.append((words[1], words[2]))
        else:
            raise InvalidInputError(f"Unreadable PLY header line {line.strip()[:80]!r}.")
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise InvalidInputError(f"Unsupported PLY format {fmt!r}.")
    if count is None:
        raise InvalidInputError("This PLY has no vertex element.")
    names = [name for _, name in properties]
    if len(set(names)) != len(names):
        raise InvalidInputError("This PLY repeats a property name.")
    missing = [name for name in PLY_PROPERTIES if name not in names]
    if missing:
        raise InvalidInputError(f"This PLY is not a 3D Gaussian splat file: it lacks {', '.join(missing)}.")
    return fmt, count, properties, length


def read_ply(path, limits: SceneLimits | None = None) -> Scene4D:
    """A static Scene4D from a 3DGS PLY, checked as hostile input (module docstring)."""
    from plyfile import PlyData

    limits = limits or SceneLimits()
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"No PLY file at {path}.")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise SceneTooLargeError(f"The PLY is {size / 2**20:.1f} MiB; the limit is {limits.max_file_bytes / 2**20:.0f} MiB.")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_HEADER_BYTES)
    fmt, count, properties, header_length = _parse_header(raw)
    check_gaussian_count(count, limits)
    if fmt != "ascii":
        stride = sum(_PLY_TYPES[kind] for kind, _ in properties)
        if size < header_length + count * stride:
            raise InvalidInputError(
                f"The PLY is truncated: {count:,} vertices need {header_length + count * stride:,} bytes, it has {size:,}."
            )
    try:
        vertices = PlyData.read(str(path))["vertex"].data
    except Exception as error:  # plyfile raises several types for malformed bodies
        raise InvalidInputError(f"The PLY could not be read: {type(error).__name__}: {str(error)[:200]}") from None
    if len(vertices) != count:
        raise InvalidInputError(f"The PLY declares {count:,} vertices but holds {len(vertices):,}.")
    column = lambda name: np.asarray(vertices[name], dtype=np.float32)  # noqa: E731
    table = {name: column(name) for name in PLY_PROPERTIES}
    for name, values in table.items():
        if not np.isfinite(values).all():
            raise InvalidInputError(f"The PLY's {name!r} values include NaN or infinity.")
        if np.abs(values).max(initial=0) > MAX_ABS_VALUE:
            raise InvalidInputError(f"The PLY's {name!r} values are implausibly large (over {MAX_ABS_VALUE:g}).")
    stack = lambda names: np.stack([table[n] for n in names], axis=1)  # noqa: E731
    quats = stack(["rot_0", "rot_1", "rot_2", "rot_3"])
    if count and (np.linalg.norm(quats, axis=1) < 1e-12).any():
        raise InvalidInputError("The PLY has Gaussians with a zero rotation quaternion.")
    means, quats = from_ply_axes(stack(["x", "y", "z"]), quats)
    return Scene4D(
        means=means,
        quats=quats,
        log_scales=stack(["scale_0", "scale_1", "scale_2"]),
        opacity_logits=table["opacity"],
        sh_dc=stack(["f_dc_0", "f_dc_1", "f_dc_2"]),
        features=np.zeros((count, 1), np.float32),
        object_ids=np.full(count, -1, np.int32),
        motion_bases=np.zeros((0, 1, 3), np.float32),
        motion_coeffs=np.zeros((count, 0), np.float32),
        camera=framing_camera(means),
        meta={"source": "ply", "file": path.name},
    )


def framing_camera(means: np.ndarray, size: int = 256, fov_deg: float = 40.0) -> Camera:
    """A camera on +z looking at the robust centre of ``means`` from far enough to see most of them."""
    if len(means) == 0:
        return Camera(look_at([0, 0, 3], [0, 0, 0]), intrinsics(fov_deg, size, size), size, size)
    low, high = np.percentile(means, 2, axis=0), np.percentile(means, 98, axis=0)
    centre = (low + high) / 2
    radius = max(float(np.linalg.norm(high - low)) / 2, 1e-3)
    distance = radius / math.tan(math.radians(fov_deg) / 2) * 1.1 + radius
    return orbit_camera(centre, 0.0, 0.0, distance, size, size, fov_deg)


def sweep_frames(
    scene: Scene4D,
    kind: str = "time",
    camera: Camera | None = None,
    *,
    t: float = 0.0,
    steps: int | None = None,
    azimuth: float = 0.0,
    elevation: float = 10.0,
    distance: float | None = None,
    size: int = 256,
) -> np.ndarray:
    """Frames ``uint8 [F, H, W, 3]`` of a time sweep (t from 0 to T-1 seen by ``camera``, default the home
    camera at ``size``) or an orbit (a full turn of azimuth around the scene's centre at time ``t``)."""
    if kind not in ("time", "orbit"):
        raise InvalidInputError(f"A sweep is 'time' or 'orbit', got {kind!r}.")
    if kind == "time":
        steps = steps or max(2, 2 * scene.n_frames - 1)
        camera = camera or scene.camera.resized(size, round(size * scene.camera.height / scene.camera.width))
        times = np.linspace(0.0, scene.n_frames - 1, steps)
        return np.stack([to_uint8(render(scene, camera, float(time))) for time in times])
    steps = steps or 36
    scene.check_time(t)
    centre = scene.centre()
    distance = distance or float(np.linalg.norm(scene.camera.position - centre))
    angles = azimuth + np.linspace(0.0, 360.0, steps, endpoint=False)
    return np.stack([
        to_uint8(render(scene, orbit_camera(centre, float(a), elevation, distance, size, size), t)) for a in angles
    ])


def export_video(scene: Scene4D, path, kind: str = "time", fps: float = 8.0, codec: str = "h264", **sweep) -> Path:
    """Render a sweep (:func:`sweep_frames`) and encode it (H.264 MP4 or VP9 WebM); returns the path."""
    return encode_video(sweep_frames(scene, kind, **sweep), path, fps=fps, codec=codec)
