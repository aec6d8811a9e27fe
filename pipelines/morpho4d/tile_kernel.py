"""The viewer's compositing kernel: per-tile, per-pixel front-to-back alpha blending compiled with numba.

:func:`~pipelines.morpho4d.rendering.rasterize_tiles` composites in torch when gradients are needed
(fitting). Without them (the viewer, exports, edits' renders) it hands the same per-tile lists to
:func:`composite_tiles`: one compiled loop per pixel over its tile's depth-sorted Gaussians, with
gsplat's rules exactly (the module docstring of ``rendering``): ``alpha = min(0.999, o exp(-sigma))``,
pairs with ``alpha < 1/255`` skipped, a pixel stops *before* the Gaussian that would take its
transmittance to ``<= 1e-4``. Each pixel stops on its own (the torch path can only stop a whole chunk
of a tile), and tiles run in parallel on ``torch.get_num_threads()`` threads. The arithmetic is float64
per pixel, as in the reference renderer.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
import torch

# numba's "workqueue" threading layer: its workers sleep between launches. The OpenMP layer's workers
# spin after each launch, and beside torch (and a second process) on 2 cores that spinning made a GEN of
# Morpho4D 10x slower (the thread-oversubscription trap of FACTS.md). Workqueue is not safe for launches
# from several threads at once and the studio serves users from several threads, so launches are taken
# one at a time (a launch takes milliseconds).
numba.config.THREADING_LAYER = "workqueue"
_LAUNCH = threading.Lock()


@numba.njit(parallel=True, fastmath=False, cache=True)
def _composite(offsets, gauss_ids, params, values, tiles_x, tile, width, height, alpha_max, alpha_min, t_stop,
               out, alpha):  # pragma: no cover
    """``params [N, 7]`` = (mx, my, a, b, c, opacity, reach); ``offsets [tiles + 1]`` into ``gauss_ids``
    (each tile's Gaussians in depth order); writes ``out [H, W, C]`` and ``alpha [H, W]``. ``reach`` is a
    sigma beyond which ``o exp(-sigma) < alpha_min`` for certain, so most far pairs skip the exponential."""
    n_tiles = offsets.shape[0] - 1
    channels = values.shape[1]
    for tile_index in numba.prange(n_tiles):
        first, last = offsets[tile_index], offsets[tile_index + 1]
        if first == last:
            continue
        x0 = (tile_index % tiles_x) * tile
        y0 = (tile_index // tiles_x) * tile
        # the tile's Gaussians gathered once (in float64), then read by each of its pixels
        count = last - first
        local = np.empty((count, 7), dtype=np.float64)
        colours = np.empty((count, channels), dtype=np.float64)
        for i in range(count):
            g = gauss_ids[first + i]
            for k in range(7):
                local[i, k] = params[g, k]
            for k in range(channels):
                colours[i, k] = values[g, k]
        acc = np.zeros(channels, dtype=np.float64)
        for py in range(y0, min(y0 + tile, height)):
            for px in range(x0, min(x0 + tile, width)):
                cx, cy = px + 0.5, py + 0.5
                transmittance = 1.0
                acc[:] = 0.0
                for i in range(count):
                    dx = local[i, 0] - cx
                    dy = local[i, 1] - cy
                    sigma = 0.5 * (local[i, 2] * dx * dx + local[i, 4] * dy * dy) + local[i, 3] * dx * dy
                    if sigma < 0.0 or sigma > local[i, 6]:
                        continue
                    a = min(alpha_max, local[i, 5] * math.exp(-sigma))
                    if a < alpha_min:
                        continue
                    following = transmittance * (1.0 - a)
                    if following <= t_stop:
                        break
                    weight = a * transmittance
                    for k in range(channels):
                        acc[k] += weight * colours[i, k]
                    transmittance = following
                for k in range(channels):
                    out[py, px, k] = acc[k]
                alpha[py, px] = 1.0 - transmittance


def composite_tiles(gauss_ids: torch.Tensor, tile_id: torch.Tensor, means2d, conics, opacities, values,
                    tiles_x: int, tiles_y: int, tile: int, width: int, height: int, *, alpha_max: float,
                    alpha_min: float, t_stop: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``([H, W, C] values, [H, W] alpha)`` from (tile, depth)-ordered entries (``_tile_entries``); no autograd.
    ``alpha_max``, ``alpha_min``, ``t_stop``: the compositing rules (the renderer passes gsplat's)."""
    n_tiles = tiles_x * tiles_y
    counts = torch.bincount(tile_id, minlength=n_tiles)
    offsets = np.zeros(n_tiles + 1, dtype=np.int64)
    np.cumsum(counts.numpy(), out=offsets[1:])
    opacity = opacities.detach().to(torch.float64)
    reach = torch.log((opacity / alpha_min).clamp(min=1e-30)) + 1e-3  # alpha >= alpha_min needs sigma <= this
    params = torch.cat([means2d.detach(), conics.detach(), opacity[:, None], reach[:, None]], dim=1)
    params = params.to(torch.float32).contiguous().numpy()
    vals = values.detach().to(torch.float32).contiguous().numpy()
    out = np.zeros((height, width, vals.shape[1]), dtype=np.float32)
    alpha = np.zeros((height, width), dtype=np.float32)
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    with _LAUNCH:
        numba.set_num_threads(threads)
        _composite(offsets, gauss_ids.numpy().astype(np.int64, copy=False), params, vals, tiles_x, tile, width,
                   height, float(alpha_max), float(alpha_min), float(t_stop), out, alpha)
    return torch.from_numpy(out).to(values.dtype), torch.from_numpy(alpha).to(values.dtype)
