"""The pieces of a text-to-image diffusion model that the matchers share.

Image -> VAE latent (eq. 5.3's ``z``), captions -> text embeddings, a seeded
noise bank (one ``epsilon`` per timestep, shared by every caption and image of
the same size: common random numbers), ``z_t`` at a timestep (eq. 5.1/5.3),
and a counter of UNet evaluations (one per batch row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from .inputs import check_image


@dataclass
class DiffusionBackbone:
    """UNet, VAE, text encoder, tokenizer and noise schedule of a latent diffusion model.

    Build it from any ``StableDiffusionPipeline`` with :meth:`from_pipeline`
    (the tiny pack or SD-2.1-base: no code branches on the model's size).
    """

    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: object
    # alphas_cumprod of the training schedule, [T]
    alphas_cumprod: torch.Tensor
    # pixel size the VAE is fed (the model's training resolution)
    resolution: int
    # UNet rows evaluated so far (a batch of B rows counts B)
    unet_evaluations: int = field(default=0)

    @classmethod
    def from_pipeline(cls, pipe) -> DiffusionBackbone:
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.eval().requires_grad_(False)
        resolution = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        return cls(
            unet=pipe.unet, vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
            alphas_cumprod=pipe.scheduler.alphas_cumprod.clone().float(), resolution=resolution,
        )

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def pixels(self, image) -> torch.Tensor:
        """``image`` resized to the model's resolution, ``[1, 3, R, R]`` in [-1, 1]."""
        array = check_image(image)
        tensor = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # [1, 3, H, W]
        if tensor.shape[-2:] != (self.resolution, self.resolution):
            tensor = F.interpolate(tensor, size=(self.resolution, self.resolution), mode="bilinear",
                                   antialias=True, align_corners=False)
        return tensor.to(self.device, self.dtype)

    @torch.no_grad()
    def encode_image(self, image) -> torch.Tensor:
        """The latent ``z = E(x)`` (posterior mean, times the VAE's scaling factor), ``[1, C, h, w]``."""
        posterior = self.vae.encode(self.pixels(image)).latent_dist
        return posterior.mode() * self.vae.config.scaling_factor

    def token_ids(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids padded to the tokenizer's maximum length, as the tiny pack was trained, ``[N, L]``."""
        return self.tokenizer(
            list(captions), padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids.to(self.device)

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``tau(y)`` for ``captions`` (no attention mask, as in training), ``[N, L, c]``."""
        with torch.no_grad():
            return self.text_encoder(self.token_ids(captions))[0].to(self.dtype)

    def timesteps_for(self, noise_levels: Sequence[float]) -> list[int]:
        """Timestep of each noise level in (0, 1]: ``t = round(level * T) - 1`` (0.4 -> 399 of 1000)."""
        if not noise_levels:
            raise InvalidInputError("At least one noise level is needed.")
        steps = []
        for level in noise_levels:
            if not (isinstance(level, (int, float)) and 0.0 < float(level) <= 1.0):
                raise InvalidInputError(f"Noise levels are fractions in (0, 1], got {level!r}.")
            steps.append(max(0, round(float(level) * self.num_train_timesteps) - 1))
        return steps

    def noise(self, shape: Sequence[int], seed: int, index: int) -> torch.Tensor:
        """The bank's ``epsilon`` number ``index`` for seed ``seed`` (CPU generator, so any device agrees)."""
        generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))
        return torch.randn(tuple(shape), generator=generator).to(self.device, self.dtype)

    def add_noise(self, latent: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
        """``z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps`` (thesis eq. 5.3)."""
        abar = self.alphas_cumprod[int(timestep)].to(latent.device)
        return abar.sqrt().to(latent.dtype) * latent + (1 - abar).sqrt().to(latent.dtype) * noise

    def predict_noise(self, z_t: torch.Tensor, timestep: int, text: torch.Tensor) -> torch.Tensor:
        """``eps_theta(z_t, c, t)`` for a batch of rows; counts the rows as UNet evaluations."""
        self.unet_evaluations += int(z_t.shape[0])
        t = torch.full((z_t.shape[0],), int(timestep), device=z_t.device, dtype=torch.long)
        return self.unet(z_t, t, encoder_hidden_states=text).sample


def stratified_timesteps(count: int, num_train_timesteps: int = 1000) -> list[int]:
    """``count`` timesteps at the centres of equal strata of ``[0, T)`` (eq. 5.9's ``E_t``)."""
    if count < 1:
        raise InvalidInputError(f"The number of timesteps must be positive, got {count}.")
    return [int((k + 0.5) * num_train_timesteps / count) for k in range(count)]


def coarse_to_fine(count: int) -> list[int]:
    """Indices ``0..count-1`` ordered so every prefix spreads over the range (middle, quarters, ...)."""
    order: list[int] = []
    denominators = 1
    while len(order) < count:
        denominators *= 2
        for k in range(1, denominators, 2):
            index = int(k * count / denominators)
            if index not in order:
                order.append(index)
    order.extend(i for i in range(count) if i not in order)
    return order[:count]


def as_numpy(scores: torch.Tensor) -> np.ndarray:
    return scores.detach().float().cpu().numpy()
