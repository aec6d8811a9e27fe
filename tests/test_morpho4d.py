"""Morpho4D pipeline: renderer (vs the reference and gsplat), scenes, fitting, editing, export."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.errors import InvalidInputError
from pipelines.morpho4d import (
    PLY_PROPERTIES,
    Camera,
    EditSession,
    FitConfig,
    FitFrames,
    NoMatchError,
    RendererUnavailableError,
    Scene4D,
    SceneLimits,
    SceneTooLargeError,
    UnknownQueryError,
    build_shapes_scene,
    fit_scene,
    frames_from_scene,
    gaussian_probabilities,
    init_from_rgbd,
    load_scene,
    look_at,
    match_query,
    parse_colour,
    rasterize,
    read_ply,
    render,
    save_scene,
    scene_loss,
    select,
    sweep_frames,
    to_uint8,
    truth_frames,
    write_ply,
    write_ply_sequence,
)
from pipelines.morpho4d import rendering as render_module
from pipelines.morpho4d.editing import apply_edits
from pipelines.morpho4d.fitting import unproject_frame
from pipelines.morpho4d.scene import intrinsics, sigmoid
from pipelines.shapesworld import sample_video
from pipelines.video_io import encode_video

ARRAYS = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "features", "object_ids", "motion_bases",
          "motion_coeffs", "visibility_logits")


def random_gaussians(n: int, seed: int, channels: int = 3):
    """A hard random scene: sizes over two orders of magnitude, some nearly opaque (early stops), some
    behind the camera or off-screen, anisotropic and rotated."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([3.0, 3.0, 2.0])
    means[: n // 20, 2] = 3.5  # behind the camera at z = 3
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.randn(n, 3, generator=g) * 0.6 - 2.8)
    opacities = torch.rand(n, generator=g) * 0.95 + 0.04
    opacities[n // 20 : n // 5] = 0.999  # opaque: pixels stop early
    values = torch.rand(n, channels, generator=g) * 2 - 0.5
    return means, quats, scales, opacities, values


def camera_tensors(width: int, height: int, eye=(0.3, -0.2, 3.0)):
    viewmat = torch.from_numpy(look_at(eye, [0, 0, 0]))
    return viewmat, torch.from_numpy(intrinsics(50.0, width, height))


def assert_same_scene(a: Scene4D, b: Scene4D) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    assert np.array_equal(a.camera.viewmat, b.camera.viewmat) and np.array_equal(a.camera.K, b.camera.K)
    assert (a.object_names, a.feature_space, a.background, a.meta) == (b.object_names, b.feature_space, b.background, b.meta)


@pytest.fixture(scope="module")
def shapes_scene() -> Scene4D:
    return build_shapes_scene(seed=3, size=64, n_frames=8, n_gaussians=4000)


# ----------------------------------------------------------------------------- renderer


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpu_renderer_matches_reference_on_random_scenes(seed):
    width, height = 45, 37  # not multiples of the tile size
    means, quats, scales, opacities, values = random_gaussians(250, seed, channels=7)
    viewmat, K = camera_tensors(width, height)
    fast, fast_alpha = rasterize(means, quats, scales, opacities, values, viewmat, K, width, height, backend="cpu")
    slow, slow_alpha = rasterize(means, quats, scales, opacities, values, viewmat, K, width, height, backend="reference")
    assert fast.shape == (height, width, 7) and fast_alpha.shape == (height, width)
    assert slow_alpha.max() > 0.99 and slow_alpha.min() < 0.5  # the scene has opaque and empty pixels
    assert (fast.double() - slow).abs().max().item() < 1e-4
    assert (fast_alpha.double() - slow_alpha).abs().max().item() < 1e-4
    with torch.enable_grad():  # the differentiable path gives the same images
        grad_image, grad_alpha = rasterize(means, quats, scales, opacities, values.requires_grad_(True), viewmat, K,
                                           width, height, backend="cpu")
    assert (grad_image.detach().double() - slow).abs().max().item() < 1e-4
    assert (grad_alpha.detach().double() - slow_alpha).abs().max().item() < 1e-4


def test_compiled_viewer_path_equals_the_differentiable_path_and_is_safe_across_threads():
    """The no-grad renders (numba kernel, per-pixel stop) and the autograd path composite the same lists."""
    from concurrent.futures import ThreadPoolExecutor

    width, height = 70, 53
    means, quats, scales, opacities, values = random_gaussians(3000, 7, channels=4)
    viewmat, K = camera_tensors(width, height, eye=(0.1, 0.2, 2.5))
    viewer, viewer_alpha = rasterize(means, quats, scales, opacities, values, viewmat, K, width, height, backend="cpu")
    with torch.enable_grad():
        graph, graph_alpha = rasterize(means, quats, scales, opacities, values.requires_grad_(True), viewmat, K,
                                       width, height, backend="cpu")
    assert (viewer - graph.detach()).abs().max().item() < 1e-5
    assert (viewer_alpha - graph_alpha.detach()).abs().max().item() < 1e-5
    values = values.detach()
    with ThreadPoolExecutor(4) as pool:  # the studio renders for several users from several threads
        images = list(pool.map(lambda _: rasterize(means, quats, scales, opacities, values, viewmat, K, width, height,
                                                   backend="cpu")[0], range(8)))
    assert all(torch.equal(image, viewer) for image in images)


def test_projection_follows_gsplat_conventions():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    width, height = 64, 48
    means, quats, scales, _, _ = random_gaussians(300, 4)
    viewmat, K = camera_tensors(width, height)
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmat[None], K[None], width, height)
    ours = render_module.project(means, quats, scales, viewmat, K, width, height)
    visible = radii[0].all(-1) > 0
    assert torch.equal(ours["radii"] > 0, radii[0] > 0)
    torch.testing.assert_close(ours["means2d"][visible], means2d[0][visible], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours["conics"][visible], conics[0][visible], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours["depths"], depths[0])


def test_gradients_reach_means_colours_and_features_and_match_the_reference():
    width, height = 32, 28
    means, quats, scales, opacities, values = random_gaussians(120, 5, channels=3 + 4)
    viewmat, K = camera_tensors(width, height)
    weights = torch.randn(height, width, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = {}
    for backend in ("cpu", "reference"):
        leaves = [x.clone().requires_grad_(True) for x in (means, scales, opacities, values)]
        image, alpha = rasterize(leaves[0], quats, leaves[1], leaves[2], leaves[3], viewmat, K, width, height,
                                 backend=backend)
        ((image.double() * weights).sum() + alpha.double().sum()).backward()
        grads[backend] = [leaf.grad for leaf in leaves]
    for name, fast, slow in zip(("means", "scales", "opacities", "colours+features"), grads["cpu"], grads["reference"]):
        assert fast.abs().sum() > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(fast.double(), slow.double(), rtol=1e-3, atol=1e-3 * slow.abs().max().item())
    assert grads["cpu"][3][:, :3].abs().sum() > 0 and grads["cpu"][3][:, 3:].abs().sum() > 0  # colours, features


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat needs CUDA; none on this machine")
def test_gsplat_matches_cpu_renderer():  # pragma: no cover - runs where CUDA exists
    width, height = 64, 48
    means, quats, scales, opacities, values = random_gaussians(400, 6, channels=5)
    viewmat, K = camera_tensors(width, height)
    cpu, cpu_alpha = rasterize(means, quats, scales, opacities, values, viewmat, K, width, height, backend="cpu")
    cuda = [x.cuda() for x in (means, quats, scales, opacities, values, viewmat, K)]
    gpu, gpu_alpha = rasterize(*cuda, width, height, backend="gsplat")
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-4
    assert (gpu_alpha.cpu() - cpu_alpha).abs().max().item() < 1e-4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_gsplat_without_cuda_fails_fast_with_a_clear_message(shapes_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    for _ in range(3):
        start = time.perf_counter()
        with pytest.raises(RendererUnavailableError, match="CUDA"):
            render(shapes_scene, t=0, backend="gsplat")
        assert time.perf_counter() - start < 0.5  # no JIT build attempt
    assert not (tmp_path / "ext").exists()
    with pytest.raises(RendererUnavailableError, match="CUDA"):
        rasterize(*random_gaussians(10, 0), *camera_tensors(8, 8), 8, 8, backend="gsplat")


def test_render_modes_time_and_camera_convention(shapes_scene):
    scene = shapes_scene
    rgb = render(scene, t=0)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == torch.float32
    assert render(scene, t=0, mode="features").shape == (64, 64, scene.feature_dim)
    alpha = render(scene, t=0, mode="alpha")
    depth = render(scene, t=0, mode="depth")
    assert alpha.min() > 0.99  # the plane fills the home view
    background = scene.object_ids[scene.object_ids >= 0] == 0
    assert background.any()
    corner = depth[:4, :4]  # no object in the corners at the home camera: the plane at z = 0, camera at 3
    assert torch.allclose(corner, torch.full_like(corner, 3.0), atol=0.02)
    with pytest.raises(InvalidInputError, match="outside the scene"):
        render(scene, t=scene.n_frames - 0.5)
    with pytest.raises(InvalidInputError, match="outside the scene"):
        render(scene, t=-1)
    with pytest.raises(InvalidInputError, match="Unknown render mode"):
        render(scene, t=0, mode="normals")


def test_home_view_reproduces_the_shapesworld_video():
    video = sample_video(7, 64, 8)
    scene = build_shapes_scene(video, n_gaussians=6000)
    for t in (0, 4, 7):
        frame = to_uint8(render(scene, t=t)).astype(np.float32)
        assert np.abs(frame - video.frames[t]).mean() < 3.0, t  # grey levels out of 255
        moving = video.objects[0].masks[t]
        colour = np.median(frame[moving], axis=0)
        assert np.abs(colour - np.median(video.frames[t][moving], axis=0)).max() < 12


def test_renderer_meets_a_speed_floor():
    """A regression guard, far below the benchmark (bench/morpho4d_render.py measures properly)."""
    scene = build_shapes_scene(seed=1, n_gaussians=20_000)
    camera = scene.camera.resized(256, 256)
    render(scene, camera, 0)
    start = time.perf_counter()
    render(scene, camera, 3)
    assert time.perf_counter() - start < 1.0


# ----------------------------------------------------------------------------- scene files


def test_scene_save_load_is_bit_exact(shapes_scene, tmp_path):
    path = save_scene(shapes_scene, tmp_path / "scene.npz")
    loaded = load_scene(path)
    assert_same_scene(shapes_scene, loaded)
    assert_same_scene(load_scene(path.read_bytes()), shapes_scene)
    save_scene(loaded, tmp_path / "again.npz")
    assert_same_scene(load_scene(tmp_path / "again.npz"), shapes_scene)


def _blinking_pair() -> Scene4D:
    """Two red Gaussians side by side; the right one is hidden at frame 0 and seen at frame 1."""
    camera = Camera(look_at([0, 0, 3], [0, 0, 0]), intrinsics(40.0, 32, 32), 32, 32)
    scene = Scene4D.from_activated([[-0.3, 0, 0], [0.3, 0, 0]], 0.08, [1.0, 0.0, 0.0], [0.9, 0.9], camera=camera,
                                   n_frames=2, background=(0.0, 0.0, 0.0))
    scene.visibility_logits = np.array([[0.0, 0.0], [-10.0, 0.0]], np.float32)
    scene.validate()
    return scene


def test_visibility_hides_a_gaussian_per_frame_and_blends_between_frames(tmp_path):
    scene = _blinking_pair()
    right = [render(scene, t=t, mode="alpha").numpy()[16, 19:23].max() for t in (0.0, 0.5, 1.0)]
    left = [render(scene, t=t, mode="alpha").numpy()[16, 9:13].max() for t in (0.0, 1.0)]
    assert right[0] < 0.01 and right[2] > 0.8 and 0.05 < right[1] < right[2]  # logit offset -5 at t = 0.5
    assert abs(left[0] - left[1]) < 1e-6
    assert np.allclose(scene.opacities_at(0.5), sigmoid(scene.opacity_logits + np.array([0.0, -5.0])), atol=1e-6)
    assert_same_scene(load_scene(save_scene(scene, tmp_path / "blink.npz")), scene)
    assert np.allclose(read_ply(write_ply(scene, tmp_path / "f0.ply", t=0.0)).opacities, scene.opacities_at(0.0))
    with pytest.raises(InvalidInputError, match="visibility_logits must be"):
        replace(scene, visibility_logits=np.zeros((2, 3), np.float32))


def test_scene_files_from_before_visibility_load_as_always_visible(shapes_scene, tmp_path):
    path = save_scene(shapes_scene, tmp_path / "scene.npz")
    with zipfile.ZipFile(path) as archive:
        arrays = {name[:-4]: np.load(io.BytesIO(archive.read(name))) for name in archive.namelist()}
    del arrays["visibility_logits"]
    loaded = load_scene(_npz_bytes(**arrays))
    assert loaded.visibility_logits.shape == (shapes_scene.n_gaussians, 0)
    assert np.array_equal(loaded.opacities_at(3.0), shapes_scene.opacities)


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_hostile_or_malformed_scene_files_are_refused(shapes_scene, tmp_path):
    with pytest.raises(InvalidInputError, match="not an .npz"):
        load_scene(b"hello")
    with pytest.raises(InvalidInputError, match="Python objects"):
        load_scene(_npz_bytes(means=np.array([{"a": 1}], dtype=object)))
    with pytest.raises(InvalidInputError, match="missing arrays"):
        load_scene(_npz_bytes(means=np.zeros((2, 3), np.float32)))
    # A header that claims a huge array (a tiny file that would expand to terabytes).
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 3)})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("means.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:])
    with pytest.raises(SceneTooLargeError, match="expand"):
        load_scene(archive.getvalue())
    path = save_scene(shapes_scene, tmp_path / "scene.npz")
    with pytest.raises(SceneTooLargeError, match="limit is 100"):
        load_scene(path, SceneLimits(max_gaussians=100))
    with pytest.raises(SceneTooLargeError, match="MiB"):
        load_scene(path, SceneLimits(max_file_bytes=1000))


def test_scene_limits_and_validation(monkeypatch):
    monkeypatch.setenv("WORLDSTUDIO_MORPHO4D_MAX_GAUSSIANS", "1000")
    with pytest.raises(SceneTooLargeError, match="configured limit is 1,000"):
        build_shapes_scene(seed=0, n_gaussians=5000)
    monkeypatch.delenv("WORLDSTUDIO_MORPHO4D_MAX_GAUSSIANS")
    scene = build_shapes_scene(seed=0, n_gaussians=500)
    with pytest.raises(InvalidInputError, match="NaN"):
        replace(scene, means=np.full_like(scene.means, np.nan))
    with pytest.raises(InvalidInputError, match="shape"):
        replace(scene, features=scene.features[:, :3].copy()[:-1])
    with pytest.raises(InvalidInputError, match="zero quaternion"):
        replace(scene, quats=np.zeros_like(scene.quats))


# ----------------------------------------------------------------------------- PLY


def test_ply_export_round_trips_exactly(shapes_scene, tmp_path):
    from plyfile import PlyData

    static = shapes_scene
    path = write_ply(static, tmp_path / "t0.ply", t=0)
    vertex = PlyData.read(str(path))["vertex"]
    assert tuple(p.name for p in vertex.properties) == PLY_PROPERTIES
    assert all(vertex.data.dtype[name] == np.dtype("<f4") for name in PLY_PROPERTIES)
    flip = np.array([1, -1, -1], np.float32)  # PLY files use COLMAP/OpenCV axes (y down)
    assert np.array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), static.means_at(0) * flip)
    back = read_ply(path)
    for name in ("quats", "log_scales", "opacity_logits", "sh_dc"):
        assert np.array_equal(getattr(back, name), getattr(static, name)), name
    assert np.array_equal(back.means, static.means_at(0))
    again = write_ply(back, tmp_path / "again.ply")
    assert again.read_bytes().split(b"end_header\n", 1)[1] == path.read_bytes().split(b"end_header\n", 1)[1]
    turned = replace(static, quats=np.random.default_rng(0).normal(size=static.quats.shape).astype(np.float32))
    assert np.array_equal(read_ply(write_ply(turned, tmp_path / "turned.ply")).quats, turned.quats)
    # The turn is a rotation: rendering the file's Gaussians from the turned camera gives the same image.
    cam = turned.camera
    turned_cam = Camera(cam.viewmat @ np.diag([1, -1, -1, 1]).astype(np.float32), cam.K, cam.width, cam.height)
    from pipelines.morpho4d.export import to_ply_axes
    means, quats = to_ply_axes(turned.means, turned.quats)
    in_file = replace(turned, means=means, quats=quats)
    assert (render(in_file, turned_cam) - render(turned, cam)).abs().max() < 1e-4

    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(path))
    assert np.allclose(np.asarray(cloud.points), static.means_at(0) * flip, atol=1e-6)


def test_ply_sequence_follows_the_motion(shapes_scene, tmp_path):
    paths = write_ply_sequence(shapes_scene, tmp_path, "shapes")
    assert [p.name for p in paths] == [f"shapes_t{t:03d}.ply" for t in range(shapes_scene.n_frames)]
    first, last = read_ply(paths[0]).means, read_ply(paths[-1]).means
    moving = shapes_scene.motion_coeffs[:, 0] > 0
    assert np.array_equal(first[~moving], last[~moving])
    assert np.allclose(last[moving] - first[moving], shapes_scene.motion_bases[0, -1], atol=1e-6)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_hostile_or_malformed_ply_uploads_get_clear_messages(shapes_scene, tmp_path):
    good = write_ply(shapes_scene, tmp_path / "good.ply").read_bytes()
    head, body = good.split(b"end_header\n", 1)
    cases = {
        "garbage": (b"\x00\x01garbage" * 10, "does not start with 'ply'"),
        "no_end": (b"ply\nformat ascii 1.0\n" + b"comment x\n" * 10000, "end_header"),
        "huge_count": (head.replace(f"vertex {shapes_scene.n_gaussians}".encode(), b"vertex 999999999999")
                       + b"end_header\n", "configured limit"),
        "truncated": (head + b"end_header\n" + body[:1000], "truncated"),
        "missing": (head.replace(b"property float opacity\n", b"") + b"end_header\n" + body, "lacks opacity"),
        "list": (head.replace(b"end_header", b"") + b"property list uchar int faces\nend_header\n" + body,
                 "Unsupported PLY property"),
        "faces": (head + b"element face 1\nproperty list uchar int vertex_indices\nend_header\n" + body,
                  "'face' element"),
        "format": (head.replace(b"binary_little_endian", b"binary_middle_endian") + b"end_header\n" + body,
                   "Unsupported PLY format"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(InvalidInputError, match=message):
            read_ply(_write(tmp_path / f"{name}.ply", data))
    nan_body = bytearray(body)
    nan_body[0:4] = np.array([np.nan], "<f4").tobytes()
    with pytest.raises(InvalidInputError, match="NaN"):
        read_ply(_write(tmp_path / "nan.ply", head + b"end_header\n" + bytes(nan_body)))
    with pytest.raises(SceneTooLargeError):
        read_ply(tmp_path / "good.ply", SceneLimits(max_gaussians=10))
    scene = read_ply(tmp_path / "good.ply")
    assert scene.n_frames == 1 and scene.feature_space == ""
    with pytest.raises(InvalidInputError, match="cannot be edited by a text query"):
        EditSession(scene).apply("delete", "red square")


# ----------------------------------------------------------------------------- editing


def test_probabilities_follow_eq_11_13_and_11_14():
    features = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]], np.float32)
    query, alternatives = np.array([1.0, 0.0, 0.0]), np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    p = gaussian_probabilities(features, query, alternatives, temperature=1.0)
    s = np.array([[1, 0, 0], [0, 1, 0], [2**-0.5, 2**-0.5, 0]])  # cosines with (query, alt 1, alt 2)
    expected = np.exp(s[:, 0]) / np.exp(s).sum(axis=1)
    np.testing.assert_allclose(p, expected, rtol=1e-6)
    sharp = gaussian_probabilities(features, query, alternatives, temperature=0.1)
    assert sharp[0] > 0.99 and sharp[1] < 0.01
    # A query that names several objects has their softmax mass (the matched names' side of eq. 11.13).
    both = gaussian_probabilities(features, np.stack([query, alternatives[0]]), alternatives[1:], temperature=1.0)
    np.testing.assert_allclose(both, np.exp(s[:, :2]).sum(axis=1) / np.exp(s).sum(axis=1), rtol=1e-6)


def test_queries_match_object_names(shapes_scene):
    assert shapes_scene.object_names == ("background", "red square", "blue triangle")
    assert match_query(shapes_scene, "the red square").matched == ("red square",)
    assert match_query(shapes_scene, "triangles").matched == ("blue triangle",)
    assert match_query(shapes_scene, "triangles").alternatives == ("background", "red square")
    with pytest.raises(NoMatchError, match="background, red square and blue triangle"):
        match_query(shapes_scene, "green circle")
    with pytest.raises(UnknownQueryError, match="Unknown word 'ball'"):
        match_query(shapes_scene, "the ball")


@pytest.mark.parametrize("seed", [0, 1, 2, 4])
def test_selection_finds_each_object_with_noisy_features(seed):
    scene = build_shapes_scene(seed=seed, n_gaussians=3000, feature_noise=0.1)
    for index, name in enumerate(scene.object_names[1:], start=1):
        selection = select(scene, name)
        truth = scene.object_ids == index
        hits = (selection.mask & truth).sum()
        assert hits / selection.mask.sum() >= 0.95 and hits / truth.sum() >= 0.95, name
        assert 0.85 <= selection.threshold <= 0.95 and len(selection.scores) == 6


def test_deleting_an_object_leaves_every_other_gaussian_unchanged(shapes_scene):
    session = EditSession(shapes_scene)
    edit = session.apply("delete", "red square")
    target = shapes_scene.object_ids == 1
    assert np.array_equal(edit.mask, target)
    kept = shapes_scene.subset(~target)
    assert_same_scene(session.scene, kept)
    assert 1 not in session.scene.object_ids


def test_undo_restores_the_scene_bit_exactly_and_redo_replays(shapes_scene, tmp_path):
    session = EditSession(shapes_scene)
    session.apply("recolour", "red square", "green")
    session.apply("multiply", "triangle", "0.5")
    after_two = session.scene
    session.apply("extract", "blue triangle")
    session.apply("delete", "triangle")
    assert session.scene.n_gaussians == 0
    for _ in range(4):
        session.undo()
    assert_same_scene(session.scene, shapes_scene)
    assert save_scene(session.scene, tmp_path / "a.npz").read_bytes() == save_scene(shapes_scene, tmp_path / "b.npz").read_bytes()
    session.redo()
    session.redo()
    assert_same_scene(session.scene, after_two)
    with pytest.raises(InvalidInputError, match="Nothing to undo"):
        EditSession(shapes_scene).undo()
    session.apply("delete", "red square")  # a new edit drops the redo steps
    assert not session.can_redo and len(session.edits) == 3


def test_recolour_applies_to_every_frame(shapes_scene):
    session = EditSession(shapes_scene)
    session.apply("recolour", "red square", "#00ff00")
    video = sample_video(3, 64, 8)
    for t in (0, 7):
        frame = to_uint8(render(session.scene, t=t))
        inside = frame[video.objects[0].masks[t]]
        assert np.median(inside[:, 1]) > 200 and np.median(inside[:, 0]) < 40, t
    multiplied = apply_edits(shapes_scene, [replace(session.edits[0], operation="multiply", colour=(0.5, 1.0, 1.0))])[0]
    red = shapes_scene.object_ids == 1
    np.testing.assert_allclose(multiplied.colours[red, 0], shapes_scene.colours[red, 0] * 0.5, rtol=1e-5)


def test_bad_edit_input_is_explained_and_changes_nothing(shapes_scene):
    session = EditSession(shapes_scene)
    with pytest.raises(NoMatchError, match="It has: background, red square and blue triangle. The scene is unchanged"):
        session.apply("delete", "green circle")
    with pytest.raises(InvalidInputError, match="Unknown colour 'blurple'"):
        session.apply("recolour", "red square", "blurple")
    with pytest.raises(InvalidInputError, match="Unknown operation"):
        session.apply("explode", "red square")
    assert session.cursor == 0 and session.edits == []
    assert_same_scene(session.scene, shapes_scene)
    assert parse_colour("rgba(255, 0, 0, 1)") == (1.0, 0.0, 0.0)
    assert parse_colour("#0f0") == (0.0, 1.0, 0.0)
    assert parse_colour("2", allow_factor=True) == (2.0, 2.0, 2.0)


# ----------------------------------------------------------------------------- fitting


def test_init_unprojects_rgbd_with_open3d_in_our_pixel_convention():
    video = sample_video(2, 32, 4)
    truth = truth_frames(video)
    points = unproject_frame(truth.depth[0], truth.camera)
    camera = truth.camera
    pixel = np.array([[5, 9]])  # (row, column)
    z = truth.depth[0][5, 9]
    x_cam = (9 + 0.5 - camera.K[0, 2]) / camera.K[0, 0] * z
    y_cam = (5 + 0.5 - camera.K[1, 2]) / camera.K[1, 1] * z
    world = np.linalg.inv(camera.viewmat.astype(np.float64)) @ np.array([x_cam, y_cam, z, 1.0])
    assert np.allclose(points[pixel[0, 0], pixel[0, 1]], world[:3], atol=1e-5)
    scene = init_from_rgbd(FitFrames.from_truth(truth), n_gaussians=800)
    assert abs(scene.n_gaussians - 800) <= 0.1 * 800
    assert scene.n_bases == 1  # only the moving object gets a basis
    boxes = video.objects[0].boxes
    shift_px = ((boxes[-1, :2] + boxes[-1, 2:]) - (boxes[0, :2] + boxes[0, 2:])) / 2
    shift = scene.motion_bases[0, -1, :2] / (2.0 / 32 * (3.0 - 0.15) / 3.0)  # world units per pixel at the object
    assert np.allclose(shift, [shift_px[0], -shift_px[1]], atol=0.6)


def test_fitting_a_known_scene_lowers_its_loss_by_a_set_factor():
    truth = build_shapes_scene(seed=5, size=32, n_frames=4, n_gaussians=1200)
    frames = frames_from_scene(truth)
    assert scene_loss(truth, frames) < 1e-6  # the truth explains its own renders
    rng = np.random.default_rng(0)
    start = replace(
        truth,
        sh_dc=truth.sh_dc + rng.normal(0, 0.8, truth.sh_dc.shape).astype(np.float32),
        features=truth.features + rng.normal(0, 0.3, truth.features.shape).astype(np.float32),
        means=truth.means + rng.normal(0, 0.01, truth.means.shape).astype(np.float32),
    )
    result = fit_scene(frames, FitConfig(steps=60, lr_features=1e-2), init=start)
    assert result.final_loss < result.initial_loss / 5
    assert result.scene.n_gaussians == truth.n_gaussians and result.scene.feature_space == truth.feature_space
    assert select(result.scene, truth.object_names[1]).mask.sum() > 0


def test_a_low_dimensional_latent_is_decoded_back_to_the_feature_space():
    """FitConfig.latent_dim (eq. 11.11): Gaussians carry D = 4 latents, the decoder maps them to the
    targets' Ds = 16, and selection by name still finds each object (features span 3 names: rank 3)."""
    truth = build_shapes_scene(seed=5, size=32, n_frames=4, n_gaussians=1200)
    frames = frames_from_scene(truth)
    result = fit_scene(frames, FitConfig(steps=20, latent_dim=4))
    assert result.scene.feature_dim == truth.feature_dim == 16
    for index, name in enumerate(truth.object_names[1:], start=1):
        hits = select(result.scene, name).mask & (result.scene.object_ids == index)
        assert hits.sum() >= 0.9 * (result.scene.object_ids == index).sum(), name
    with pytest.raises(InvalidInputError, match="latent_dim"):
        fit_scene(frames, FitConfig(steps=1, latent_dim=0))


# ----------------------------------------------------------------------------- video


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by `make system-deps`")
def test_sweeps_encode_as_browser_playable_video(shapes_scene, tmp_path):
    frames = sweep_frames(shapes_scene, "time", size=63)  # odd: padded to even for yuv420p
    assert frames.shape == (15, 63, 63, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[-1])  # the object moved
    orbit = sweep_frames(shapes_scene, "orbit", steps=4, size=32, t=2)
    assert orbit.shape == (4, 32, 32, 3) and not np.array_equal(orbit[0], orbit[1])
    for codec, name in (("h264", "h264"), ("vp9", "vp9")):
        path = encode_video(frames, tmp_path / "sweep", fps=8, codec=codec)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=codec_name,pix_fmt,width,height,nb_frames", "-of", "csv=p=0", str(path)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        assert probe.startswith(f"{name},64,64,yuv420p"), probe  # ffprobe prints codec, width, height, pix_fmt
    with pytest.raises(InvalidInputError, match="codec"):
        encode_video(frames, tmp_path / "x", codec="mp4v")


# ----------------------------------------------------------------------------- command line


def test_command_line_builds_renders_edits_and_exports(tmp_path, capsys):
    from PIL import Image

    from pipelines.morpho4d.__main__ import main

    scene = tmp_path / "scene.npz"
    assert main(["example", "--seed", "3", "--gaussians", "1500", "--out", str(scene)]) == 0
    assert main(["render", str(scene), "--t", "3", "--azimuth", "30", "--size", "48", "--out", str(tmp_path / "v.png")]) == 0
    assert Image.open(tmp_path / "v.png").size == (48, 48)
    edited = tmp_path / "edited.npz"
    assert main(["edit", str(scene), "--op", "delete", "--query", "red square", "--out", str(edited)]) == 0
    assert load_scene(edited).n_gaussians < load_scene(scene).n_gaussians
    assert main(["export", str(edited), "--ply-dir", str(tmp_path / "plys")]) == 0
    assert len(list((tmp_path / "plys").glob("edited_t*.ply"))) == 8
    capsys.readouterr()
    assert main(["edit", str(scene), "--op", "recolour", "--query", "red square", "--colour", "blurple",
                 "--out", str(edited)]) == 2
    assert "error: Unknown colour 'blurple'" in capsys.readouterr().err
