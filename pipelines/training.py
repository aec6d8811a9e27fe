"""Training pieces every pack shares: noise schedule, stage schedule and log, loop, optimizer, tokenisation,
cached latents and Min-SNR weights.

The tiny pack (:mod:`pipelines.tinypack`), Mojito's text-to-video model (:mod:`pipelines.mojito.train`) and
FlexEControl's adapters (:mod:`pipelines.flexecontrol.train`) all train through these, and none of them
imports another's internals. The loop runs under accelerate (one CPU process, a GPU or several processes);
batches are drawn by index with a generator seeded per process.
"""

from __future__ import annotations

import functools

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm.auto import tqdm

from .errors import InvalidInputError

# Shared noise schedule (Stable Diffusion's), epsilon prediction as the thesis' methods assume.
NOISE_SCHEDULE = dict(
    num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
    prediction_type="epsilon", clip_sample=False,
)


@dataclass
class TrainSchedule:
    """Steps, batch and learning rate of one training stage."""

    steps: int
    batch_size: int
    learning_rate: float


def build_train_scheduler(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> DDPMScheduler:
    """The training noise schedule; ``zero_terminal_snr`` rescales the betas so that t = 999 is pure noise
    (Lin et al. 2023: Stable Diffusion's schedule leaves 0.07 of the image there, so a model can copy the
    layout from that leak instead of choosing it from the caption; needs ``prediction_type="v_prediction"``)."""
    return DDPMScheduler(**noise_schedule(prediction_type, zero_terminal_snr))


def build_inference_scheduler(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> DDIMScheduler:
    """DDIM over the same schedule; with a zero terminal SNR it starts sampling at t = 999 ("trailing" spacing)."""
    spacing = dict(timestep_spacing="trailing") if zero_terminal_snr else dict(steps_offset=1)
    return DDIMScheduler(**noise_schedule(prediction_type, zero_terminal_snr), set_alpha_to_one=False, **spacing)


def noise_schedule(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> dict:
    """NOISE_SCHEDULE with the model's prediction type (``epsilon`` or ``v_prediction``) and terminal SNR."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise InvalidInputError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}.")
    if zero_terminal_snr and prediction_type != "v_prediction":
        raise InvalidInputError("A zero terminal SNR needs v-prediction: epsilon is not learnable from pure noise.")
    return {**NOISE_SCHEDULE, "prediction_type": prediction_type, "rescale_betas_zero_snr": zero_terminal_snr}


def training_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output: the noise, or the velocity ``sqrt(a) eps - sqrt(1 - a) x_0`` (v-prediction)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def tokenize(tokenizer, captions: list[str], max_tokens: int) -> torch.Tensor:
    """Token ids [N, max_tokens], padded with the tokenizer's pad token."""
    return tokenizer(captions, padding="max_length", max_length=max_tokens, truncation=True,
                     return_tensors="pt").input_ids


@dataclass
class SceneArrays:
    """``images`` uint8 [N, H, W, 3] and their captions, seeds ``0..N-1`` of the train split.

    With truth: ``object_masks`` uint8 [N, objects, h, w], each object's pixel coverage area-pooled to the
    latent grid (255 = covered), and ``object_words`` (each object's caption words, "red circle"), for the
    cross-attention supervision of eq. 9.4.
    """

    images: np.ndarray
    captions: list[str]
    object_masks: np.ndarray | None = None
    object_words: list[list[str]] | None = None

    def pixel_batch(self, index: np.ndarray) -> torch.Tensor:
        """Images ``index`` as float [B, 3, H, W] in [-1, 1]."""
        batch = torch.from_numpy(self.images[index]).permute(0, 3, 1, 2).float()
        return batch / 127.5 - 1.0


@dataclass
class StageLog:
    """Loss every ``every`` steps and the stage's wall time."""

    name: str
    losses: list[float] = field(default_factory=list)
    every: int = 10
    seconds: float = 0.0


def train_loop(accelerator: Accelerator, schedule: TrainSchedule, seed: int, num_items: int, log: StageLog, step_fn):
    """Run ``step_fn(indices) -> loss`` for ``schedule.steps`` steps with a progress bar."""
    generator = np.random.default_rng(seed + 1000 * accelerator.process_index)
    start, running = time.perf_counter(), []
    bar = tqdm(range(schedule.steps), desc=log.name, disable=not accelerator.is_local_main_process)
    for step in bar:
        indices = generator.integers(0, num_items, size=schedule.batch_size)
        loss = step_fn(indices)
        running.append(loss)
        if (step + 1) % log.every == 0 or step + 1 == schedule.steps:
            log.losses.append(float(np.mean(running)))
            bar.set_postfix(loss=f"{log.losses[-1]:.4f}")
            running = []
    log.seconds = time.perf_counter() - start


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX-512 BF16
    or AMX. Elsewhere (e.g. an AVX2-only CPU) bfloat16 is emulated, and a 512x512 matmul is about 50x slower
    than in float32 (measured on an AMD EPYC with AVX2, docs/notes/tiny_pack.md). Asked once per device kind
    (autocast asks at every training step)."""
    return _native_bf16(torch.device(device).type)


@functools.cache
def _native_bf16(kind: str) -> bool:
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def autocast(accelerator: Accelerator, enabled: bool):
    """bfloat16 autocast on the accelerator's device when ``enabled`` and the device runs bfloat16 natively
    (:func:`fast_bf16`; otherwise float32). Weights, optimiser and losses stay float32.

    accelerate's ``mixed_precision="bf16"`` does not autocast on a CPU, so stages enter this around their forward
    passes; on a CPU with AVX-512 BF16 the tiny UNet's training step runs about 1.4x faster (docs/notes/tiny_pack.md).
    """
    return torch.autocast(accelerator.device.type, dtype=torch.bfloat16,
                          enabled=enabled and fast_bf16(accelerator.device))


def make_optimizer(parameters, schedule: TrainSchedule):
    """AdamW (weight decay 1e-4) with linear warm-up over a tenth of the steps (at most 100), then cosine decay."""
    optimizer = torch.optim.AdamW(parameters, lr=schedule.learning_rate, weight_decay=1e-4)
    warmup = min(100, max(1, schedule.steps // 10))
    return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup, schedule.steps)


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, scenes: SceneArrays, device, batch_size: int = 256,
                   accelerator: Accelerator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every scene, cached so the UNet stage never runs the encoder.

    With an ``accelerator`` of several processes each encodes a contiguous share and the shares are gathered,
    so every process ends with all latents at a fraction of the time.
    """
    count = len(scenes.images)
    processes = accelerator.num_processes if accelerator is not None else 1
    share = -(-count // processes)
    rank = accelerator.process_index if accelerator is not None else 0
    mine = np.arange(rank * share, min((rank + 1) * share, count))
    means, stds = [], []
    for start in tqdm(range(0, len(mine), batch_size), desc="encoding latents"):
        index = mine[start:start + batch_size]
        posterior = vae.encode(scenes.pixel_batch(index).to(device)).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    mean, std = torch.cat(means), torch.cat(stds)
    if processes > 1:
        pad = share - len(mine)  # the last share may be short; gather needs equal shapes
        mean = accelerator.gather(torch.cat([mean, mean[:1].expand(pad, *mean.shape[1:])]))[:count]
        std = accelerator.gather(torch.cat([std, std[:1].expand(pad, *std.shape[1:])]))[:count]
    return mean.cpu(), std.cpu()


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float | None,
                    prediction_type: str = "epsilon", floor: float = 0.0) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): ``min(SNR, gamma) / SNR`` for epsilon prediction and
    ``min(SNR, gamma) / (SNR + 1)`` for v-prediction, both an x_0-space weight of ``min(SNR, gamma)``
    (1 everywhere when gamma is None).

    ``floor`` > 0 also keeps the x_0-space weight at least ``floor``: ``clamp(SNR, floor, gamma)``. Without it a
    high-noise sample's error in the clean image it implies counts with weight SNR (0.014 at t = 900 on SD's
    schedule), so what only the condition can say there (where a video's object is in each frame) barely
    reaches the gradient."""
    if gamma is None:
        return torch.ones_like(timesteps, dtype=torch.float32)
    alpha_bar = alphas_cumprod[timesteps]
    snr = alpha_bar / (1.0 - alpha_bar)
    return torch.clamp(snr, min=floor, max=gamma) / (snr + 1.0 if prediction_type == "v_prediction" else snr)
