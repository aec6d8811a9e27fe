"""Rendering a Scene4D at any camera and time: gsplat on CUDA, the project's tile rasterizer on a CPU.

One entry point, :func:`render` (scene, camera, t, mode), and one tensor-level function,
:func:`rasterize`, that fitting calls with differentiable tensors. Three backends share the projection
(:func:`project`, gsplat's EWA projection written in torch) and gsplat's compositing conventions:

* pixel centres at ``(j + 0.5, i + 0.5)``; a 2D blur ``eps2d = 0.3`` added to each projected covariance;
  Gaussians at depth <= ``near_plane`` (0.01) are skipped;
* per pixel, Gaussians in increasing camera depth; ``alpha = min(0.999, opacity * exp(-sigma))`` with
  ``sigma = 0.5 * d^T conic d``; pairs with ``alpha < 1/255`` are skipped; a pixel stops *before* the
  Gaussian that would take its transmittance to ``<= 1e-4`` (gsplat's exclusive early stop);
* the result is ``sum_i values_i * alpha_i * T_i`` and ``alpha = 1 - T_final`` (no background; RGB mode
  composites the scene's background colour afterwards).

Backends:

* ``"gsplat"``: ``gsplat.rasterization`` on CUDA tensors, imported lazily. Without CUDA it refuses
  at once (:class:`RendererUnavailableError`); a failed import or JIT build is remembered and not
  retried on every call.
* ``"cpu"``: :func:`rasterize_tiles`, vectorised torch, differentiable (autograd). Screen tiles
  (8x8 pixels). A Gaussian is listed in a tile when the tile meets its 3.33-sigma box (gsplat's test),
  narrowed to the box where ``opacity * exp(-sigma) >= 1/255`` and then to tiles where some pixel
  centre reaches that alpha (a closed-form ellipse-rectangle test); all three lose nothing, since
  gsplat skips smaller alphas. Lists are built per footprint size by broadcasting and ordered by one
  sort of (tile, depth) keys. Each tile's list is composited front to back in chunks of 32 Gaussians:
  log-alpha is a quadratic form in the tile's pixel coordinates, so one batched matrix product
  ``[tiles, 32, 6] @ [6, 64]`` evaluates a chunk; a cumulative product gives transmittance and a
  batched product accumulates the values (and, as an extra channel of ones, the alpha map, equal to
  ``1 - T_final`` up to rounding). Tiles whose pixels have all stopped leave the loop (early
  termination); tiles are processed in batches small enough to stay in cache. No Python loop runs
  over Gaussians or pixels. That is the differentiable path (fitting); when no gradient is needed
  (the viewer, exports) the same lists go to :func:`~.tile_kernel.composite_tiles`, a numba loop per
  pixel with its own early stop, tiles in parallel.
* ``"reference"``: :func:`rasterize_reference`, float64, a loop over depth-sorted Gaussians that
  updates every pixel; slow and obviously correct, the truth in tests.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import numpy as np
import torch

from ..errors import InvalidInputError, WorldStudioError
from .scene import SH_C0, Camera, Scene4D
from .tile_kernel import composite_tiles

Mode = Literal["rgb", "features", "depth", "alpha"]
Backend = Literal["auto", "cpu", "gsplat", "reference"]
MODES: tuple[str, ...] = ("rgb", "features", "depth", "alpha")
BACKENDS: tuple[str, ...] = ("auto", "cpu", "gsplat", "reference")

# gsplat's conventions (rasterization() defaults and its CUDA kernels).
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
EPS2D = 0.3
RADIUS_SIGMAS = 3.33
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_STOP = 1e-4
# The CPU rasterizer's screen tile side in pixels and the Gaussians composited per tile per step.
TILE_SIZE = 8
CHUNK = 32
# Tiles per batch: TILE_BATCH_ELEMENTS / (CHUNK * TILE_SIZE^2) keeps a batch's tensors in cache.
TILE_BATCH_ELEMENTS = 1 << 17
# log(alpha) is clamped to [LOG_ALPHA_FLOOR, log(ALPHA_MAX)] before exp: below the floor alpha is
# under 1/255 and skipped anyway, and exp of very negative numbers (denormals) is 10x slower.
LOG_ALPHA_FLOOR = -10.0
LOG_ALPHA_MAX = math.log(ALPHA_MAX)
# alpha > ALPHA_KEEP keeps exactly the alphas >= 1/255 in float32 (gsplat skips alpha < 1/255).
ALPHA_KEEP = float(np.nextafter(np.float32(ALPHA_MIN), np.float32(0)))


class RendererUnavailableError(WorldStudioError, RuntimeError):
    """The requested rendering backend cannot run on this machine (e.g. gsplat without CUDA)."""


# ----------------------------------------------------------------------------- projection


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of (w, x, y, z) quaternions, normalised first: ``[N, 4] -> [N, 3, 3]`` (gsplat's)."""
    quats = torch.nn.functional.normalize(quats, p=2, dim=-1)
    w, x, y, z = quats.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def project(
    means: torch.Tensor,  # [N, 3] world
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    viewmat: torch.Tensor,  # [4, 4] world-to-camera
    K: torch.Tensor,  # [3, 3]
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> dict[str, torch.Tensor]:
    """EWA projection of 3D Gaussians, the same arithmetic as gsplat's ``_fully_fused_projection``.

    Returns ``means2d [N, 2]``, ``conics [N, 3]`` (upper triangle of the inverse 2D covariance: a, b, c
    with ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy``), ``depths [N]`` (camera z), ``radii [N, 2]``
    (int32; 0 where the Gaussian is culled: behind the near plane, beyond the far plane or off-screen).
    """
    rotation = quat_to_rotmat(quats)
    M = rotation * scales[:, None, :]
    covars = M @ M.transpose(1, 2)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ R.T + t
    covars_c = R @ covars @ R.T
    tx, ty, tz = means_c.unbind(-1)
    in_depth = (tz > near_plane) & (tz < far_plane)
    tz_safe = torch.where(in_depth, tz, torch.ones_like(tz))  # keeps gradients finite for culled ones
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    txc = tz_safe * torch.minimum(torch.maximum(tx / tz_safe, -lim_x_neg), lim_x_pos)
    tyc = tz_safe * torch.minimum(torch.maximum(ty / tz_safe, -lim_y_neg), lim_y_pos)
    zeros = torch.zeros_like(tz)
    J = torch.stack(
        [fx / tz_safe, zeros, -fx * txc / tz_safe**2, zeros, fy / tz_safe, -fy * tyc / tz_safe**2], dim=-1
    ).reshape(-1, 2, 3)
    cov2d = J @ covars_c @ J.transpose(1, 2)
    means2d = torch.stack([fx * tx / tz_safe + cx, fy * ty / tz_safe + cy], dim=-1)
    c00, c01, c10, c11 = cov2d[:, 0, 0] + eps2d, cov2d[:, 0, 1], cov2d[:, 1, 0], cov2d[:, 1, 1] + eps2d
    det = c00 * c11 - c01 * c10
    valid = (det > 0) & in_depth
    det = det.clamp(min=1e-10)
    conics = torch.stack([c11 / det, -(c01 + c10) / 2.0 / det, c00 / det], dim=-1)
    radius = torch.stack(
        [torch.ceil(RADIUS_SIGMAS * torch.sqrt(c00.detach().clamp(min=0))),
         torch.ceil(RADIUS_SIGMAS * torch.sqrt(c11.detach().clamp(min=0)))], dim=-1
    )
    m2 = means2d.detach()
    inside = (
        (m2[:, 0] + radius[:, 0] > 0) & (m2[:, 0] - radius[:, 0] < width)
        & (m2[:, 1] + radius[:, 1] > 0) & (m2[:, 1] - radius[:, 1] < height)
    )
    radius = torch.where((valid & inside)[:, None], radius, torch.zeros_like(radius))
    return {"means2d": means2d, "conics": conics, "depths": tz, "radii": radius.to(torch.int32)}


# ----------------------------------------------------------------------------- CPU tile rasterizer


def _tile_entries(means2d, conics, opacities, radii, depths, width, height, tile):
    """(tile, Gaussian) pairs in (tile, depth) order: ``(gaussian ids, tile ids, tiles_x, tiles_y)``.

    A pair is listed when the tile meets the Gaussian's box: gsplat's 3.33-sigma box, narrowed to the
    box of the ellipse where ``opacity * exp(-sigma) >= 1/255`` (opacity-aware), and then only when
    some pixel centre of the tile can reach that alpha (:func:`_reaches_tile`). All three are lossless.
    """
    tiles_x, tiles_y = math.ceil(width / tile), math.ceil(height / tile)
    m2, con, opa = means2d.detach(), conics.detach(), opacities.detach()
    a, b, c = con.unbind(-1)
    reach_sigma = 2.0 * torch.log((255.0 * opa).clamp(min=1e-30))  # 2 * max sigma with alpha >= 1/255
    det = (a * c - b * b).clamp(min=1e-30)
    extent = torch.sqrt(reach_sigma.clamp(min=0)[:, None] * torch.stack([c, a], dim=-1) / det[:, None]) + 1e-3
    extent = torch.minimum(extent, radii.to(m2.dtype))
    ids = ((radii > 0).all(dim=1) & (reach_sigma >= 0)).nonzero().squeeze(1)
    ids = ids[torch.argsort(depths.detach()[ids], stable=True)]  # depth rank -> Gaussian id
    n_ids = ids.numel()
    m, r = m2[ids], extent[ids]
    x0 = torch.floor((m[:, 0] - r[:, 0]) / tile).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[:, 0] + r[:, 0]) / tile).clamp(0, tiles_x).long()
    y0 = torch.floor((m[:, 1] - r[:, 1]) / tile).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[:, 1] + r[:, 1]) / tile).clamp(0, tiles_y).long()
    nx, ny = x1 - x0, y1 - y0
    # Entries per footprint size (nx, ny): a [Gaussians, nx * ny] grid by broadcasting, no per-entry
    # gathers. Keys (tile id, depth rank) are unique, so one sort orders them by tile, then depth.
    params = torch.stack([m[:, 0], m[:, 1], a[ids], b[ids], c[ids], opa[ids]], dim=1)
    sizes = nx * (tiles_y + 2) + ny
    keys = []
    for size in torch.unique(sizes[(nx > 0) & (ny > 0)]).tolist():
        bx, by = divmod(int(size), tiles_y + 2)
        rank = (sizes == size).nonzero()  # [n_b, 1]
        dx = torch.arange(bx).repeat(by)
        dy = torch.arange(by).repeat_interleave(bx)
        tx = x0[rank] + dx  # [n_b, bx * by]
        ty = y0[rank] + dy
        key = (ty * tiles_x + tx) * n_ids + rank
        if bx * by > 1:  # a single-tile Gaussian reaches its tile by construction of its box
            key = key[_reaches_tile(params[rank.squeeze(1)][:, :, None].unbind(1), tx, ty, tile)]
        keys.append(key.reshape(-1))
    if not keys:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, tiles_x, tiles_y
    keys = torch.sort(torch.cat(keys)).values
    tile_id = torch.div(keys, n_ids, rounding_mode="floor")
    return ids.index_select(0, keys - tile_id * n_ids), tile_id, tiles_x, tiles_y


def _reaches_tile(gaussian, tx, ty, tile):
    """Whether a Gaussian can reach ``alpha >= 1/255`` at some pixel centre of a tile (bool, broadcast).

    ``gaussian`` is (mx, my, a, b, c, opacity), each ``[n, 1]``; ``tx, ty`` tile indices ``[n, k]``.
    ``sigma`` is a convex quadratic, so its minimum over the rectangle spanned by the tile's pixel
    centres is 0 when the mean is inside, and otherwise lies on an edge, where it is a 1D quadratic
    minimised in closed form. A small margin keeps the test conservative.
    """
    mx, my, a, b, c, opacity = gaussian
    lo_x, lo_y = (tx * tile).to(mx.dtype) + 0.5, (ty * tile).to(mx.dtype) + 0.5
    hi_x, hi_y = lo_x + (tile - 1), lo_y + (tile - 1)
    sigma = lambda dx, dy: 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy  # noqa: E731
    best = None
    for edge in (lo_x, hi_x):  # vertical edges: x fixed, best y in closed form
        dx = edge - mx
        dy = torch.minimum(torch.maximum(-b * dx / c, lo_y - my), hi_y - my)
        value = sigma(dx, dy)
        best = value if best is None else torch.minimum(best, value)
    for edge in (lo_y, hi_y):
        dy = edge - my
        dx = torch.minimum(torch.maximum(-b * dy / a, lo_x - mx), hi_x - mx)
        best = torch.minimum(best, sigma(dx, dy))
    inside = (mx >= lo_x) & (mx <= hi_x) & (my >= lo_y) & (my <= hi_y)
    return inside | (best <= torch.log(255.0 * opacity.clamp(min=1e-30)) + 1e-3)


def _local_quadratic(params, origins):
    """log(alpha) of each Gaussian as a quadratic form in its tile's local pixel coordinates (u, v):
    ``log o - sigma = coef . (u^2, uv, v^2, u, v, 1)``. ``params [A, K, 6]`` (mx, my, a, b, c, log o),
    ``origins [A, 2]`` tile origins in pixels; returns ``[A, K, 6]``. Local coordinates keep the
    float32 cancellation small (|u|, |v| < tile size, means within the Gaussian's reach of the tile)."""
    mx = params[..., 0] - origins[:, None, 0]
    my = params[..., 1] - origins[:, None, 1]
    a, b, c, log_opacity = params[..., 2], params[..., 3], params[..., 4], params[..., 5]
    return torch.stack(
        [-0.5 * a, -b, -0.5 * c, a * mx + b * my, c * my + b * mx,
         log_opacity - (0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my)], dim=-1
    )


def _composite_chunk(coef, basis, vals, t_before):
    """One chunk of K Gaussians over A tiles of P pixels, front to back (differentiable).

    ``coef [A, K, 6]`` log-alpha quadratic forms, ``basis [6, P]``, ``vals [A, K, C+1]`` (last channel
    ones), ``t_before [A, P]`` transmittance before the chunk (0 where a pixel has stopped). Returns the
    weighted values ``[A, P, C+1]`` and the transmittance after the chunk (0 where a pixel stopped).
    The weight of a pair is ``alpha * T_before = T_before - T_after`` (telescoping), kept while the
    transmittance after it stays above ``T_STOP`` (gsplat's exclusive stop).
    """
    log_alpha = (coef @ basis).clamp(LOG_ALPHA_FLOOR, LOG_ALPHA_MAX)  # [A, K, P]
    alpha = torch.nn.functional.threshold(torch.exp(log_alpha), ALPHA_KEEP, 0.0)
    t_incl = t_before[:, None, :] * torch.cumprod(1.0 - alpha, dim=1)
    weights = -torch.diff(t_incl, dim=1, prepend=t_before[:, None, :])
    weights = torch.where(t_incl > T_STOP, weights, 0.0)
    t_last = t_incl[:, -1]
    return weights.transpose(1, 2) @ vals, torch.where(t_last > T_STOP, t_last, 0.0)


def rasterize_tiles(
    means2d: torch.Tensor,  # [N, 2]
    conics: torch.Tensor,  # [N, 3]
    depths: torch.Tensor,  # [N]
    radii: torch.Tensor,  # [N, 2] int
    opacities: torch.Tensor,  # [N]
    values: torch.Tensor,  # [N, C]
    width: int,
    height: int,
    tile: int = TILE_SIZE,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite projected Gaussians front to back on the CPU: ``([H, W, C] values, [H, W] alpha)``.

    Differentiable with respect to ``means2d``, ``conics``, ``opacities`` and ``values`` (see the
    module docstring for the algorithm and conventions).
    """
    dtype = values.dtype
    channels = values.shape[1]
    pixels = tile * tile
    gauss_ids, tile_id, tiles_x, tiles_y = _tile_entries(means2d, conics, opacities, radii, depths, width, height, tile)
    n_tiles = tiles_x * tiles_y
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (means2d, conics, opacities, values))
    if not grad and means2d.device.type == "cpu":  # the viewer's path: per-pixel compiled loop, same lists
        return composite_tiles(gauss_ids, tile_id, means2d, conics, opacities, values, tiles_x, tiles_y, tile,
                               width, height, alpha_max=ALPHA_MAX, alpha_min=ALPHA_MIN, t_stop=T_STOP)
    out = torch.zeros(n_tiles, pixels, channels + 1, dtype=dtype)
    transmittance = torch.ones(n_tiles, pixels, dtype=dtype)
    if gauss_ids.numel() > 0:
        # 1. Per-Gaussian parameters (row N is padding: alpha exactly 0) and values (+ a ones channel
        #    that accumulates the alpha map as the sum of weights).
        n = means2d.shape[0]
        log_opacity = torch.log(opacities.clamp(min=1e-30))
        params = torch.cat([means2d, conics, log_opacity[:, None]], dim=1)  # [N, 6]: mx, my, a, b, c, log o
        params = torch.cat([params, torch.tensor([[0, 0, 0, 0, 0, LOG_ALPHA_FLOOR]], dtype=dtype)])
        vals = torch.cat([values, torch.ones(n, 1, dtype=dtype)], dim=1)
        vals = torch.cat([vals, torch.zeros(1, channels + 1, dtype=dtype)])
        centres = torch.arange(tile, dtype=dtype) + 0.5
        v, u = torch.meshgrid(centres, centres, indexing="ij")
        u, v = u.reshape(-1), v.reshape(-1)
        basis = torch.stack([u * u, u * v, v * v, u, v, torch.ones_like(u)])  # [6, P]
        origins = torch.stack([torch.arange(n_tiles) % tiles_x, torch.div(torch.arange(n_tiles), tiles_x,
                              rounding_mode="floor")], dim=1).to(dtype) * tile  # [tiles, 2] pixel origin

        # 2. Per-tile lists of Gaussian ids, padded into a table [tiles, longest list rounded up to chunks].
        counts = torch.bincount(tile_id, minlength=n_tiles)
        busy = (counts > 0).nonzero().squeeze(1)
        busy = busy[torch.argsort(counts[busy], descending=True, stable=True)]
        n_chunks = math.ceil(int(counts.max()) / chunk)
        rank = torch.arange(tile_id.numel()) - (torch.cumsum(counts, 0) - counts).index_select(0, tile_id)
        slot = torch.full((n_tiles, n_chunks * chunk), n, dtype=torch.long)
        slot[tile_id, rank] = gauss_ids
        batch = max(1, TILE_BATCH_ELEMENTS // (chunk * pixels))

        # 3. Chunks of each tile's list, front to back, for batches of tiles still compositing.
        #    ``transmittance`` is 0 for pixels that have stopped, so nothing reaches them again.
        for first in range(0, busy.numel(), batch):
            active = busy[first : first + batch]
            for step in range(n_chunks):
                if step > 0:
                    active = active[(counts[active] > step * chunk) & (transmittance[active] > 0).any(dim=1)]
                if active.numel() == 0:
                    break
                ids = slot[active, step * chunk : (step + 1) * chunk]  # [A, K]
                flat = ids.reshape(-1)
                coef = _local_quadratic(params.index_select(0, flat).view(*ids.shape, 6), origins[active])
                contribution, t_after = _composite_chunk(
                    coef, basis, vals.index_select(0, flat).view(*ids.shape, channels + 1), transmittance[active]
                )
                out = out.index_add(0, active, contribution)
                transmittance = transmittance.index_copy(0, active, t_after)
    alpha_tiles = out[..., channels]
    out = out[..., :channels]
    image = out.reshape(tiles_y, tiles_x, tile, tile, channels).permute(0, 2, 1, 3, 4)
    image = image.reshape(tiles_y * tile, tiles_x * tile, channels)[:height, :width]
    alpha_map = alpha_tiles.reshape(tiles_y, tiles_x, tile, tile).permute(0, 2, 1, 3)
    alpha_map = alpha_map.reshape(tiles_y * tile, tiles_x * tile)[:height, :width]
    return image, alpha_map


# ----------------------------------------------------------------------------- reference


def rasterize_reference(means2d, conics, depths, radii, opacities, values, width, height):
    """Slow, obviously correct compositing in float64: every valid Gaussian in depth order, every pixel.

    No tiles, no culling beyond validity (radius 0): for each Gaussian, alpha at every pixel centre,
    skip where ``alpha < 1/255``, stop pixels exactly as gsplat does. Differentiable.
    """
    f64 = torch.float64
    means2d, conics, opacities, values = (x.to(f64) for x in (means2d, conics, opacities, values))
    ys, xs = torch.meshgrid(torch.arange(height, dtype=f64) + 0.5, torch.arange(width, dtype=f64) + 0.5, indexing="ij")
    out = torch.zeros(height, width, values.shape[1], dtype=f64)
    transmittance = torch.ones(height, width, dtype=f64)
    done = torch.zeros(height, width, dtype=torch.bool)
    valid = (radii > 0).all(dim=1).nonzero().squeeze(1)
    for g in valid[torch.argsort(depths.detach()[valid], stable=True)].tolist():
        dx, dy = xs - means2d[g, 0], ys - means2d[g, 1]
        a, b, c = conics[g]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opacities[g] * torch.exp(-sigma), max=ALPHA_MAX)
        contributes = (alpha >= ALPHA_MIN) & ~done
        next_t = transmittance * (1.0 - alpha)
        stops = contributes & (next_t <= T_STOP)
        done = done | stops
        contributes = contributes & ~stops
        out = out + torch.where(contributes, alpha * transmittance, 0.0)[..., None] * values[g]
        transmittance = torch.where(contributes, next_t, transmittance)
    return out, 1.0 - transmittance


# ----------------------------------------------------------------------------- gsplat

_GSPLAT: dict[str, object] = {}


def _gsplat_rasterization():
    """gsplat's ``rasterization``, imported once; a failure is remembered and raised again at once."""
    if "error" in _GSPLAT:
        raise RendererUnavailableError(str(_GSPLAT["error"]))
    if "fn" not in _GSPLAT:
        if not torch.cuda.is_available():
            _GSPLAT["error"] = "gsplat needs CUDA and this machine has none; use backend='cpu'."
            raise RendererUnavailableError(str(_GSPLAT["error"]))
        try:
            from gsplat import rasterization
        except Exception as error:  # ImportError, or a JIT build failure from its CUDA extension
            _GSPLAT["error"] = f"gsplat could not be loaded ({type(error).__name__}: {error}); use backend='cpu'."
            raise RendererUnavailableError(str(_GSPLAT["error"])) from error
        _GSPLAT["fn"] = rasterization
    return _GSPLAT["fn"]


def _rasterize_gsplat(means, quats, scales, opacities, values, viewmat, K, width, height):
    rasterization = _gsplat_rasterization()
    try:
        colours, alphas, _ = rasterization(
            means, quats, scales, opacities, values, viewmat[None], K[None], width, height,
            near_plane=NEAR_PLANE, far_plane=FAR_PLANE, eps2d=EPS2D, packed=False, render_mode="RGB",
        )
    except (ImportError, RuntimeError) as error:  # the CUDA extension failed to build or load
        _GSPLAT["error"] = f"gsplat failed ({type(error).__name__}: {error}); use backend='cpu'."
        raise RendererUnavailableError(str(_GSPLAT["error"])) from error
    return colours[0], alphas[0, ..., 0]


# ----------------------------------------------------------------------------- entry points


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that ``"auto"`` means here: gsplat for CUDA tensors, the tile rasterizer otherwise."""
    if backend not in BACKENDS:
        raise InvalidInputError(f"Unknown rendering backend {backend!r}; expected one of {BACKENDS}.")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "cpu"
    if backend == "gsplat" and device.type != "cuda":
        raise RendererUnavailableError("gsplat renders CUDA tensors only; this render is on the CPU (use backend='cpu').")
    return backend


def rasterize(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4]
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    values: torch.Tensor,  # [N, C]
    viewmat: torch.Tensor,  # [4, 4]
    K: torch.Tensor,  # [3, 3]
    width: int,
    height: int,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterize Gaussians with any channels: ``([H, W, C], [H, W] alpha)``; differentiable (cpu, gsplat,
    reference). Thesis eq. 11.8 (values = colours) and 11.9 (values = features) are both this call."""
    chosen = resolve_backend(backend, means.device)
    if chosen == "gsplat":
        return _rasterize_gsplat(means, quats, scales, opacities, values, viewmat, K, width, height)
    projected = project(means, quats, scales, viewmat, K, width, height)
    args = (projected["means2d"], projected["conics"], projected["depths"], projected["radii"], opacities, values)
    if chosen == "reference":
        return rasterize_reference(*args, width, height)
    return rasterize_tiles(*args, width, height)


def scene_tensors(scene: Scene4D, t: float, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The scene's Gaussians at time ``t`` as activated torch tensors on ``device``."""
    t = scene.check_time(t)
    as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array)).to(device)  # noqa: E731
    return {
        "means": as_tensor(scene.means_at(t)),
        "quats": as_tensor(scene.quats),
        "scales": as_tensor(scene.scales),
        "opacities": as_tensor(scene.opacities_at(t)),
        "colours": torch.clamp_min(0.5 + SH_C0 * as_tensor(scene.sh_dc), 0.0),
        "features": as_tensor(scene.features),
    }


def blend_weights(scene: Scene4D, camera: Camera, t: float, pixel_values) -> torch.Tensor:
    """float32 ``[N, C]``: for each Gaussian j, ``sum_pixels alpha_j T_j(pixel) * pixel_values[pixel]`` over
    ``pixel_values`` ``[H, W, C]`` seen by ``camera`` at time ``t``: the adjoint of eq. 11.8's blending (with a
    channel of ones, how much of the view Gaussian j draws). Read as the gradient of ``sum <rasterize(probe),
    pixel_values>`` with respect to a per-Gaussian probe of zeros: one backward pass (CPU rasterizer)."""
    tensors = scene_tensors(scene, t)
    pixel_values = torch.as_tensor(np.asarray(pixel_values), dtype=torch.float32)
    probe = torch.zeros(scene.n_gaussians, pixel_values.shape[-1], requires_grad=True)
    with torch.enable_grad():
        image, _ = rasterize(tensors["means"], tensors["quats"], tensors["scales"], tensors["opacities"], probe,
                             torch.from_numpy(camera.viewmat), torch.from_numpy(camera.K), camera.width,
                             camera.height, backend="cpu")
        (image * pixel_values.to(image.dtype)).sum().backward()
    return probe.grad


def render(
    scene: Scene4D,
    camera: Camera | None = None,
    t: float = 0.0,
    mode: Mode = "rgb",
    *,
    backend: Backend = "auto",
    device: torch.device | str | None = None,
    extra_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Render ``scene`` from ``camera`` (its home camera if None) at time ``t`` (frames, may be fractional).

    ``mode``: "rgb" -> ``[H, W, 3]`` composited over the scene's background; "features" -> ``[H, W, D]``
    (plus ``extra_values`` channels appended, if given: e.g. selection indicators); "depth" -> ``[H, W]``
    expected camera depth (0 where nothing is drawn); "alpha" -> ``[H, W]``. Float32 tensors on
    ``device``: by default CUDA (gsplat) where it exists and ``backend`` allows, else the CPU. Raises :class:`InvalidInputError` for an unknown mode or a time outside
    the scene, :class:`RendererUnavailableError` for a backend this machine lacks.
    """
    if mode not in MODES:
        raise InvalidInputError(f"Unknown render mode {mode!r}; expected one of {MODES}.")
    camera = camera or scene.camera
    device = torch.device(device or ("cuda" if backend in ("auto", "gsplat") and torch.cuda.is_available() else "cpu"))
    tensors = scene_tensors(scene, t, device)
    if mode == "rgb":
        values = tensors["colours"]
    elif mode == "features":
        values = tensors["features"] if extra_values is None else torch.cat([tensors["features"], extra_values.to(device)], 1)
    else:  # depth (filled in below) or alpha: one channel
        values = torch.zeros(scene.n_gaussians, 1, device=device)
    viewmat = torch.from_numpy(camera.viewmat).to(device)
    K = torch.from_numpy(camera.K).to(device)
    if mode == "depth":
        values = (tensors["means"] @ viewmat[:3, :3].T + viewmat[:3, 3])[:, 2:3]
    with torch.inference_mode():
        image, alpha = rasterize(
            tensors["means"], tensors["quats"], tensors["scales"], tensors["opacities"], values,
            viewmat, K, camera.width, camera.height, backend=backend,
        )
    image, alpha = image.float(), alpha.float()
    if mode == "rgb":
        background = torch.tensor(scene.background, dtype=image.dtype, device=image.device)
        return image + (1.0 - alpha)[..., None] * background
    if mode == "depth":
        return image[..., 0] / alpha.clamp(min=1e-10)
    if mode == "alpha":
        return alpha
    return image


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """An RGB render ``[H, W, 3]`` in [0, 1] as ``uint8``."""
    return (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def gsplat_status() -> str:
    """A line for the UI: which backend renders here."""
    if torch.cuda.is_available() and "error" not in _GSPLAT:
        return "gsplat (CUDA)"
    return "CPU tile rasterizer (torch)" + (f" [{os.cpu_count()} cores]" if os.cpu_count() else "")
