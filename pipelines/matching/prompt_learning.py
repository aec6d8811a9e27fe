"""Attention-based prompt learning for Discffusion (thesis eq. 5.5-5.6), through accelerate.

Offsets ``p_k``, ``p_v`` on the selected cross-attention layers' ``W_k``,
``W_v`` (:class:`~pipelines.attention.AttentionOffsets`, eq. 5.5) are the only
trainable parameters (:func:`~pipelines.attention.prompt_learning_mode`). Each
step takes one few-shot group (2 images x 2 captions), scores the four pairs
at one of the scorer's noise levels with fresh noise, and minimises the
margin triplet loss (eq. 5.6) with the other image as the negative for each
caption, and also the other caption as the negative for each image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..attention import AttentionOffsets, prompt_learning_mode
from ..errors import InvalidInputError
from ..shapesworld.benchmark import Group
from .discffusion import DiscffusionScorer


@dataclass(frozen=True)
class PromptLearningConfig:
    """Optimisation settings (AdamW on the offsets only)."""

    steps: int = 200
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    # M of eq. 5.6 (the thesis' 0.2; the Discffusion code uses 0.1)
    margin: float = 0.2
    # also use the other caption as a negative for each image (text score), not only the other image
    text_negatives: bool = True
    seed: int = 0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.learning_rate <= 0 or self.margin < 0:
            raise InvalidInputError("steps and learning_rate must be positive and margin non-negative.")


@dataclass
class TrainingLog:
    losses: list[float] = field(default_factory=list)


def pair_scores(
    scorer: DiscffusionScorer, group: Group, timestep: int, noises: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Differentiable Discffusion scores ``s[i][j]`` (caption i, image j) at one timestep, ``[2, 2]``."""
    config = scorer.config
    backbone = scorer.backbone
    uncond = config.needs_uncond
    captions = list(group.captions)
    text = backbone.encode_text(([""] if uncond else []) + captions)
    mask = scorer._token_mask(captions, uncond)
    columns = []
    for j in (0, 1):
        latent = backbone.encode_image(group.images[j])
        level = scorer.run_level(latent, text, timestep, noises[j], [config.reading], mask, differentiable=True)
        first = 1 if uncond else 0
        score = config.attention_weight * scorer.attention_term(level, config.reading, config.head_weighting)[first:]
        if config.denoising_weight:
            score = score + config.denoising_weight * (level.errors[0] - level.errors[first:])
        columns.append(score)
    return torch.stack(columns, dim=1)


def triplet_loss(sim: torch.Tensor, margin: float, text_negatives: bool = True) -> torch.Tensor:
    """Eq. 5.6 on one group: ``max(0, f(x_neg, y) - f(x_pos, y) + M)`` per caption y (and per image)."""
    loss = torch.relu(sim[0, 1] - sim[0, 0] + margin) + torch.relu(sim[1, 0] - sim[1, 1] + margin)
    if text_negatives:
        loss = loss + torch.relu(sim[1, 0] - sim[0, 0] + margin) + torch.relu(sim[0, 1] - sim[1, 1] + margin)
    return loss


def train_offsets(
    scorer: DiscffusionScorer,
    groups: Sequence[Group],
    config: PromptLearningConfig | None = None,
    *,
    offsets: AttentionOffsets | None = None,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> tuple[AttentionOffsets, TrainingLog]:
    """Train offsets on the scorer's layers with the few-shot ``groups``; the scorer uses them afterwards.

    Only the offsets change (UNet, VAE and text encoder are frozen).
    ``on_step(step, loss)`` is called after every step (a UI progress bar).
    """
    config = config or PromptLearningConfig()
    if not groups:
        raise InvalidInputError("Prompt learning needs at least one few-shot group.")
    backbone = scorer.backbone
    offsets = offsets or AttentionOffsets.from_unet(backbone.unet, layers=scorer.layers)
    params = prompt_learning_mode(offsets, backbone.unet, backbone.vae, backbone.text_encoder)
    accelerator = Accelerator(cpu=backbone.device.type == "cpu")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    offsets, optimizer = accelerator.prepare(offsets, optimizer)
    scorer.offsets = accelerator.unwrap_model(offsets)
    rng = np.random.default_rng(config.seed)
    timesteps = backbone.timesteps_for(scorer.config.noise_levels)
    generator = torch.Generator().manual_seed(config.seed)
    latent_shape = backbone.encode_image(groups[0].images[0]).shape
    log = TrainingLog()
    for step in tqdm(range(config.steps), desc="prompt learning", disable=not progress):
        group = groups[int(rng.integers(len(groups)))]
        timestep = timesteps[int(rng.integers(len(timesteps)))]
        noise = torch.randn(latent_shape, generator=generator).to(backbone.device, backbone.dtype)
        sim = pair_scores(scorer, group, timestep, [noise, noise])
        loss = triplet_loss(sim, config.margin, config.text_negatives)
        optimizer.zero_grad()
        accelerator.backward(loss)
        if config.grad_clip:
            accelerator.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        log.losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, log.losses[-1])
    offsets = accelerator.unwrap_model(offsets)
    offsets.requires_grad_(False)
    scorer.offsets = offsets
    return offsets, log
