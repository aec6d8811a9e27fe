"""Per-frame depth for Morpho4D's scene generation (thesis 11.3.2, "Scene Reconstruction").

The offline depth model of the tiny pack (``assets/models/tiny/shapes-depth``, the ``depth`` role of
the ``tiny`` preset) is a small GLPN (``GLPNForDepthEstimation``, built from a config, ~145k
parameters) trained on ShapesWorld videos against their truth depth in the geometry of
:mod:`.shapes4d`: the home camera at distance 3 from the background plane, objects lifted 0.15 in
front of it, so depth is camera z (3.0 on the background, 2.85 on objects). Frames are RGB in [0, 1],
64x64; training adds blur and pixel noise so that generated frames (softer, noisier) read the same.
``make tiny-depth`` (``python -m pipelines.morpho4d.depth``) trains it in a few minutes on one CPU
thread and writes safetensors weights with a ``training_report.json``.

:class:`DepthEstimator` runs any ``AutoModelForDepthEstimation`` (the tiny one, or the hub preset's
DPT; their outputs are resized to the frame). The hub's relative depth is rescaled to the home
geometry's range by :func:`to_home_depth` so that the same reconstruction code unprojects both.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InvalidInputError
from ..utils import seed_everything
from .shapes4d import CAMERA_DISTANCE, OBJECT_LIFT, truth_frames

FRAME_SIZE = 64
# GLPN's sigmoid head predicts depth in (0, MAX_DEPTH).
MAX_DEPTH = 4
# Loss weight of object pixels relative to background ones (objects cover ~3% of a frame).
OBJECT_WEIGHT = 10.0


def depth_config():
    """The tiny GLPN: four stages (strides 4, 2, 2, 2), widths 16-64, one block each."""
    from transformers import GLPNConfig

    return GLPNConfig(
        num_channels=3, num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[4, 2, 1, 1],
        hidden_sizes=[16, 32, 48, 64], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
        num_attention_heads=[1, 1, 2, 2], mlp_ratios=[2, 2, 2, 2], decoder_hidden_size=16,
        max_depth=MAX_DEPTH, head_in_index=-1,
    )


def training_frames(n_videos: int, first_seed: int, n_frames: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """ShapesWorld frames float32 ``[N, 64, 64, 3]`` and their truth depth ``[N, 64, 64]``."""
    from ..shapesworld import sample_video

    rgb, depth = [], []
    for seed in range(first_seed, first_seed + n_videos):
        truth = truth_frames(sample_video(seed, FRAME_SIZE, n_frames))
        rgb.append(truth.rgb)
        depth.append(truth.depth)
    return np.concatenate(rgb), np.concatenate(depth)


def _augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random blur (0-1 px) and pixel noise (std 0-0.04), per image."""
    out = rgb.copy()
    for i in range(len(out)):
        sigma = rng.uniform(0.0, 1.0)
        if sigma > 0.3:
            out[i] = cv2.GaussianBlur(out[i], (0, 0), sigma)
        out[i] += rng.normal(0.0, rng.uniform(0.0, 0.04), out[i].shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def _pixels(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))).float()


def train_depth_model(out: Path, steps: int = 1200, batch: int = 16, n_videos: int = 300, seed: int = 0,
                      progress: bool = True) -> dict:
    """Train the tiny GLPN (module docstring) and save it to ``out``; returns the report."""
    from tqdm.auto import tqdm
    from transformers import GLPNForDepthEstimation

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    rgb, depth = training_frames(n_videos, first_seed=10_000)
    test_rgb, test_depth = training_frames(20, first_seed=90_000)
    model = GLPNForDepthEstimation(depth_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    losses = []
    for _ in tqdm(range(steps), desc="tiny depth", disable=not progress):
        index = rng.integers(0, len(rgb), batch)
        prediction = model(pixel_values=_pixels(_augment(rgb[index], rng))).predicted_depth
        # L1 in units of the object lift; object pixels (a few percent of each frame) weigh OBJECT_WEIGHT times more.
        target = torch.from_numpy(depth[index])
        weight = 1.0 + (OBJECT_WEIGHT - 1.0) * (target < CAMERA_DISTANCE - OBJECT_LIFT / 2).float()
        loss = ((prediction - target).abs() * weight).sum() / weight.sum() / OBJECT_LIFT
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss))
    model.eval()
    estimator = DepthEstimator(model)
    predicted = estimator(test_rgb)
    objects = test_depth < CAMERA_DISTANCE - OBJECT_LIFT / 2
    report = {
        "steps": steps, "batch": batch, "train_videos": n_videos, "seconds": round(time.perf_counter() - start, 1),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "final_train_loss": round(float(np.mean(losses[-50:])), 4),
        "test_mean_abs_error": round(float(np.abs(predicted - test_depth).mean()), 4),
        "test_object_pixel_accuracy": round(float(((predicted < CAMERA_DISTANCE - OBJECT_LIFT / 2) == objects).mean()), 4),
        "test_object_recall": round(float((predicted[objects] < CAMERA_DISTANCE - OBJECT_LIFT / 2).mean()), 4),
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def to_home_depth(depth: np.ndarray, inverse: bool = False) -> np.ndarray:
    """A relative depth map rescaled so that its 5th-95th percentiles span the home geometry's range
    (objects at 3 - 0.15, background at 3); ``inverse`` for disparity-like outputs (DPT / MiDaS: larger
    is nearer). Maps already in that range are returned unchanged."""
    depth = -depth if inverse else depth
    low, high = np.percentile(depth, [5, 95])
    if not inverse and CAMERA_DISTANCE - 2 * OBJECT_LIFT <= low and high <= CAMERA_DISTANCE + OBJECT_LIFT:
        return depth.astype(np.float32)
    scale = OBJECT_LIFT / max(high - low, 1e-6)
    return (CAMERA_DISTANCE - OBJECT_LIFT + (depth - low) * scale).astype(np.float32)


def relief_depth(depth: np.ndarray, instance_ids: np.ndarray, focal: float, relief: float = 1.0) -> np.ndarray:
    """Depth with each object's silhouette inflated toward the camera, so that an orbit shows a body, not a card.

    A depth model of flat ShapesWorld layers gives each object one depth. Inside object k's mask at frame t,
    with d the distance to the mask's edge and R its largest value (the inradius, pixels), the surface is
    lifted by ``relief * R * z / focal * sqrt(1 - (1 - d / R)^2)`` world units (z the pixel's depth): a disc
    becomes a hemisphere (``relief = 1``), a square a cushion, a triangle a ridge; the rim stays where the
    depth model put it. ``instance_ids`` int ``[T, H, W]`` (0 = background), ``focal`` in pixels."""
    out = np.array(depth, dtype=np.float32, copy=True)
    for t in range(out.shape[0]):
        for k in (int(k) for k in np.unique(instance_ids[t]) if k > 0):
            mask = (instance_ids[t] == k).astype(np.uint8)
            distance = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
            inradius = float(distance.max())
            if inradius <= 0:
                continue
            lift = relief * inradius / focal * np.sqrt(np.clip(1.0 - (1.0 - distance / inradius) ** 2, 0.0, 1.0))
            out[t] = np.where(mask > 0, out[t] * (1.0 - lift), out[t])  # lift is per unit of depth
    return out


class DepthEstimator:
    """Depth of frames with an ``AutoModelForDepthEstimation``: ``estimator(rgb [T, H, W, 3] in [0, 1]
    or uint8) -> float32 [T, H, W]`` camera z in the home geometry."""

    def __init__(self, model, batch: int = 16) -> None:
        self.model = model.eval()
        self.batch = batch
        # DPT-style models (the hub preset) predict relative inverse depth from 384-pixel inputs normalised to
        # [-1, 1]; GLPN (the tiny one) metric depth from 64-pixel inputs in [0, 1].
        dpt = getattr(model.config, "model_type", "") == "dpt"
        self.inverse = dpt
        self.input_size = int(getattr(model.config, "image_size", 384)) if dpt else FRAME_SIZE
        self.normalise = dpt

    @classmethod
    def from_preset(cls, preset: str = "tiny") -> DepthEstimator:
        from ..models import ModelManager

        return cls.from_manager(ModelManager(preset))

    @classmethod
    def from_manager(cls, manager) -> DepthEstimator:
        """The depth model of a shared model manager, wrapped once per manager."""
        return manager.derived("depth-estimator", lambda: cls(manager.get("depth")))

    def __call__(self, frames) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InvalidInputError(f"Frames must be [T, H, W, 3], got {frames.shape}.")
        rgb = frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)
        height, width = rgb.shape[1:3]
        out = []
        parameter = next(self.model.parameters())
        with torch.no_grad():
            for i in range(0, len(rgb), self.batch):
                side = self.input_size
                chunk = np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA if f.shape[0] > side
                                             else cv2.INTER_LINEAR) if f.shape[:2] != (side, side) else f
                                  for f in rgb[i : i + self.batch]])
                pixels = _pixels(chunk * 2.0 - 1.0 if self.normalise else chunk).to(parameter.device, parameter.dtype)
                depth = self.model(pixel_values=pixels).predicted_depth.float().cpu().numpy()
                out += [cv2.resize(d, (width, height), interpolation=cv2.INTER_LINEAR) for d in depth]
        return to_home_depth(np.stack(out), self.inverse)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train the tiny pack's depth model (Morpho4D).")
    parser.add_argument("--out", type=Path, default=Path("assets/models/tiny/shapes-depth"))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from ..utils import set_torch_threads

    set_torch_threads()
    print(json.dumps(train_depth_model(args.out, steps=args.steps, seed=args.seed)))


if __name__ == "__main__":
    main()
