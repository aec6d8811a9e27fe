"""Cycle-consistency reward for controllable generation, in the spirit of ControlNet++ (Li et al., ECCV 2024).

ControlNet++ reads the condition back from the generated image with a
discriminative model and penalises the difference: for a lightly noised
training image ``x_t`` (``t <= max_timestep``) one denoising step gives
``x0_hat = (x_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t)``; the autoencoder
decodes it, the reward model segments the pixels, and the loss is the
per-pixel cross-entropy against the segmentation the condition asked for.
The gradient flows through the decoder and the frozen UNet into the copied
encoder.

The reward model here is a small ``SegformerForSemanticSegmentation``
(transformers) trained on ShapesWorld truth, classes as
:data:`~pipelines.shapesworld.conditions.SEGMENTATION_PALETTE` (background,
circle, square, triangle), so one reward model serves every condition type:
each map is drawn from (or extracted from) the scene whose truth segmentation
is the target. On the hub preset a real Segformer checkpoint takes its place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import ModelNotFoundError
from ..shapesworld import sample_scene
from ..shapesworld.conditions import SEGMENTATION_PALETTE, segmentation
from .metrics import palette_classes

NUM_CLASSES = len(SEGMENTATION_PALETTE)
SEGMENTER_CONFIG = dict(
    num_channels=3, num_encoder_blocks=3, depths=[1, 1, 1], sr_ratios=[4, 2, 1], hidden_sizes=[32, 64, 128],
    patch_sizes=[3, 3, 3], strides=[2, 2, 2], num_attention_heads=[1, 2, 4], mlp_ratios=[2, 2, 2],
    decoder_hidden_size=64, num_labels=NUM_CLASSES,
)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def build_segmenter():
    """A ~0.33 M-parameter Segformer for 64x64 ShapesWorld images (logits at half resolution)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    return SegformerForSemanticSegmentation(SegformerConfig(**SEGMENTER_CONFIG))


def segment_logits(segmenter, pixels: torch.Tensor) -> torch.Tensor:
    """Class logits ``[B, classes, H, W]`` of images ``[B, 3, H, W]`` in [-1, 1], upsampled to the input size."""
    logits = segmenter(pixel_values=pixels).logits
    return F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)


def class_targets(segmentation_maps: torch.Tensor) -> torch.Tensor:
    """Palette segmentation maps uint8 ``[B, 3, H, W]`` -> class indices long ``[B, H, W]``."""
    return torch.from_numpy(np.stack([palette_classes(m.permute(1, 2, 0).numpy()) for m in segmentation_maps])).long()


def predicted_clean_latents(noisy: torch.Tensor, noise_prediction: torch.Tensor, timesteps: torch.Tensor,
                            alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """One-step estimate ``x0_hat`` from an epsilon prediction (DDPM, eq. 15 of Ho et al.)."""
    abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1).to(noisy.dtype)
    return (noisy - (1.0 - abar).sqrt() * noise_prediction) / abar.sqrt()


def cycle_consistency_loss(segmenter, vae, noisy: torch.Tensor, noise_prediction: torch.Tensor,
                           timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, targets: torch.Tensor,
                           max_timestep: int) -> torch.Tensor | None:
    """Cross-entropy between the segmentation read back from one-step denoised images and ``targets``.

    Only samples with ``t <= max_timestep`` count (ControlNet++: at larger
    noise the one-step estimate is too blurry to judge); ``None`` when there
    are none. Latents are in the UNet's scale (divided by the VAE's
    ``scaling_factor`` before decoding).
    """
    keep = timesteps <= max_timestep
    if not bool(keep.any()):
        return None
    x0 = predicted_clean_latents(noisy[keep], noise_prediction[keep], timesteps[keep], alphas_cumprod)
    pixels = vae.decode(x0 / vae.config.scaling_factor).sample.clamp(-1.0, 1.0)
    return F.cross_entropy(segment_logits(segmenter, pixels), targets[keep.to(targets.device)].to(pixels.device))


def save_segmenter(segmenter, folder: str | Path, report: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(SEGMENTER_CONFIG, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in segmenter.state_dict().items()}, str(folder / WEIGHTS_NAME))
    if report is not None:
        (folder / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")


def load_segmenter(folder: str | Path):
    """The reward segmenter saved by :func:`save_segmenter` (safetensors), frozen, in eval mode."""
    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        raise ModelNotFoundError(f"No reward segmenter in {folder}; train it with "
                                 f"`python -m pipelines.flexecontrol.reward --out {folder}` (or `make tiny-reward`).")
    segmenter = build_segmenter()
    segmenter.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    return segmenter.requires_grad_(False).eval()


def train_segmenter(num_scenes: int = 4000, steps: int = 1500, batch_size: int = 32, lr: float = 2e-3,
                    seed: int = 0, size: int = 64):
    """Train the reward segmenter on ShapesWorld renders and their truth segmentation.

    Images are lightly blurred or noised at random, since the reward reads
    one-step denoised decodes, which are softer than renders. Returns the
    model and its pixel accuracy on 256 test-split scenes.
    """
    torch.manual_seed(seed)
    scenes = [sample_scene(s, size=size, split="train") for s in tqdm(range(num_scenes), desc="segmenter scenes")]
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    targets = class_targets(torch.from_numpy(np.stack([segmentation(s) for s in scenes])).permute(0, 3, 1, 2))
    segmenter = build_segmenter()
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="reward segmenter"):
        index = torch.randint(num_scenes, (batch_size,), generator=generator)
        pixels = images[index]
        blur = torch.rand(batch_size, generator=generator) < 0.5
        if blur.any():
            pixels[blur] = F.avg_pool2d(pixels[blur], 3, stride=1, padding=1, count_include_pad=False)
        pixels = pixels + 0.1 * torch.rand(batch_size, 1, 1, 1, generator=generator) * torch.randn(
            pixels.shape, generator=generator)
        loss = F.cross_entropy(segment_logits(segmenter, pixels), targets[index])
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    segmenter.eval()
    test = [sample_scene(s, size=size, split="test") for s in range(256)]
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([s.image for s in test])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        predicted = segment_logits(segmenter, pixels).argmax(1)
    truth = class_targets(torch.from_numpy(np.stack([segmentation(s) for s in test])).permute(0, 3, 1, 2))
    objects = truth > 0
    accuracy = {"pixel_accuracy": float((predicted == truth).float().mean()),
                "object_pixel_accuracy": float((predicted == truth)[objects].float().mean())}
    return segmenter.requires_grad_(False), accuracy


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ..utils import set_torch_threads

    parser = argparse.ArgumentParser(description="Train the cycle-consistency reward segmenter on ShapesWorld.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--scenes", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_torch_threads()
    segmenter, accuracy = train_segmenter(args.scenes, args.steps, seed=args.seed)
    save_segmenter(segmenter, args.out, {"steps": args.steps, "scenes": args.scenes, "seed": args.seed, **accuracy})
    print(json.dumps(accuracy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
