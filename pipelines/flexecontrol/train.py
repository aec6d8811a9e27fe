"""Training the copied encoder through accelerate: L_ldm + lambda_ca L_ca + lambda_mask L_mask, thesis eq. 9.6.

The base model (UNet, autoencoder, text encoder) is frozen; latents and text
embeddings are computed once (``tinypack.train.encode_latents``) and the
loop, optimiser and schedule are the tiny pack's (``tinypack.train._loop``,
``_optimizer``). Every method of :mod:`.encoder` trains with this same code
and data, so the baselines compare like with like.

A step draws one *composition* for the whole batch: one map of a random type
(probability ``1 - pair_probability``), or two maps of random types (the same
type allowed) that split the scene by object. Each map runs through the
copied encoder with its type's fast weights and the residuals are summed
(:func:`.pipeline.fuse_residuals`).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..attention import CrossAttentionControl
from ..shapesworld.conditions import CONDITION_TYPES
from ..tinypack.config import build_train_scheduler
from ..tinypack.data import tokenize
from ..tinypack.train import StageLog, TrainSchedule, _loop, _optimizer, encode_latents
from .data import ControlScenes, build_control_scenes
from .encoder import CopiedEncoder, EncoderConfig, build_copied_encoder
from .losses import condition_mask, cross_attention_loss, masked_diffusion_loss, total_loss
from .pipeline import fuse_residuals

# L_ca is put on the UNet's up-block cross-attention: the only maps the control residuals can change.
CA_LAYERS = "up_blocks"


@dataclass
class FlexTrainConfig:
    """One FlexEControl (or baseline) training run."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    schedule: TrainSchedule = field(default_factory=lambda: TrainSchedule(steps=600, batch_size=16, learning_rate=1e-3))
    # lambda_ca and lambda_mask of eq. 9.6 (the thesis sets both to 0.01).
    lambda_ca: float = 0.01
    lambda_mask: float = 0.01
    # Probability that a step uses two conditions split by object (else one full map).
    pair_probability: float = 0.5
    num_scenes: int = 2000
    # Recompute activations in the backward pass (diffusers' per-block checkpointing in the copy and the
    # frozen UNet): less memory, more time. Off for the shipped weights.
    gradient_checkpointing: bool = False
    seed: int = 0


@dataclass
class FrozenBase:
    """The frozen base model's parts that training needs."""

    unet: torch.nn.Module
    vae_scale_factor: int
    latent_means: torch.Tensor  # [N, 4, h, w]
    latent_stds: torch.Tensor
    scaling_factor: float
    text_embeddings: torch.Tensor  # [N, tokens, width]


def prepare_base(pipe, scenes: ControlScenes, device) -> FrozenBase:
    """Freeze a ``StableDiffusionPipeline``'s parts and cache latents and caption embeddings of ``scenes``."""
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    means, stds = encode_latents(pipe.vae, scenes, device)
    ids = tokenize(pipe.tokenizer, scenes.captions, pipe.tokenizer.model_max_length)
    with torch.no_grad():
        embeddings = torch.cat([pipe.text_encoder(ids[i : i + 256].to(device))[0].cpu() for i in range(0, len(ids), 256)])
    return FrozenBase(pipe.unet, pipe.vae_scale_factor, means, stds, pipe.vae.config.scaling_factor, embeddings)


def draw_composition(generator: torch.Generator, pair_probability: float) -> list[tuple[str, str]]:
    """``[(type, part)]`` with part ``"all"``, or ``"chosen"`` and ``"rest"`` for a split pair."""
    def kind() -> str:
        return CONDITION_TYPES[int(torch.randint(len(CONDITION_TYPES), (1,), generator=generator))]

    if float(torch.rand(1, generator=generator)) < pair_probability:
        return [(kind(), "chosen"), (kind(), "rest")]
    return [(kind(), "all")]


def composition_maps(scenes: ControlScenes, index: np.ndarray, composition, generator) -> list[tuple[str, torch.Tensor]]:
    """The condition maps ``[(type, [B, 3, H, W])]`` of ``composition`` for scenes ``index``."""
    parts = {"all": None}
    if any(part != "all" for _, part in composition):
        parts["chosen"], parts["rest"] = scenes.split_masks(index, generator)
    out = []
    for kind, part in composition:
        maps = scenes.map_batch(kind, index)
        out.append((kind, maps if parts[part] is None else maps * parts[part]))
    return out


class FlexTrainer:
    """One training run of a copied encoder; ``step(indices)`` is one optimiser step (used by the bench too)."""

    def __init__(self, config: FlexTrainConfig, base: FrozenBase, scenes: ControlScenes, accelerator: Accelerator) -> None:
        torch.manual_seed(config.seed)
        self.config, self.base, self.scenes, self.accelerator = config, base, scenes, accelerator
        self.encoder: CopiedEncoder = build_copied_encoder(base.unet, base.vae_scale_factor, config.encoder)
        optimizer, self.lr_schedule = _optimizer(self.encoder.trainable_parameters(), config.schedule)
        self.model, self.optimizer = accelerator.prepare(self.encoder, optimizer)
        self.unet = base.unet.to(accelerator.device)
        for model in (self.unet, self.encoder.controlnet):
            if config.gradient_checkpointing:
                model.enable_gradient_checkpointing()
            else:
                model.disable_gradient_checkpointing()
        self.noise_scheduler = build_train_scheduler()
        self.generator = torch.Generator().manual_seed(config.seed + 7 + accelerator.process_index)
        self.last_terms: dict[str, float] = {}

    def step(self, indices: np.ndarray) -> float:
        cfg, base, g, device = self.config, self.base, self.generator, self.accelerator.device
        index = torch.from_numpy(indices)
        latents = (base.latent_means[index] + base.latent_stds[index] * torch.randn(base.latent_means[index].shape, generator=g))
        latents = latents * base.scaling_factor
        noise = torch.randn(latents.shape, generator=g)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(indices),), generator=g)
        conditions = composition_maps(self.scenes, indices, draw_composition(g, cfg.pair_probability), g)
        latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        embeddings = base.text_embeddings[index].to(device)

        control = CrossAttentionControl(self.unet, differentiable=True, layers=CA_LAYERS, keep_steps="last") if cfg.lambda_ca else None
        kinds = [kind for kind, _ in conditions]
        # The backward pass runs inside the recorder and with the condition types still active: with
        # checkpointing it re-runs recorded layers and adapted ones.
        with control if control is not None else nullcontext(), self.encoder.condition_types(kinds):
            residuals = self.model(noisy, timesteps, embeddings, [(kind, cond.to(device)) for kind, cond in conditions])
            down, mid = fuse_residuals(residuals, [1.0] * len(residuals))
            prediction = self.unet(noisy, timesteps, encoder_hidden_states=embeddings,
                                   down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
            maps = [control.store.maps_for(name) for name in control.layers] if control is not None else []
            ldm = F.mse_loss(prediction.float(), noise.float())
            l_mask = masked_diffusion_loss(prediction, noise, condition_mask([c for _, c in conditions], latents.shape[-2:]).to(device))
            l_ca = None
            if maps:
                l_ca = cross_attention_loss(maps, self.scenes.token_sets[index].to(device),
                                            self.scenes.masks[index].to(device).float(), self.scenes.valid[index].to(device))
            loss = total_loss(ldm, l_ca, l_mask, cfg.lambda_ca, cfg.lambda_mask)
            self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.encoder.trainable_parameters(), 1.0)
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_terms = {"ldm": ldm.item(), "mask": l_mask.item(), "ca": float(l_ca) if l_ca is not None else 0.0}
        return loss.item()

    def run(self, name: str = "flexecontrol") -> StageLog:
        log = StageLog(name)
        _loop(self.accelerator, self.config.schedule, self.config.seed + 3, len(self.scenes.images), log, self.step)
        return log

    def trained_encoder(self) -> CopiedEncoder:
        return self.accelerator.unwrap_model(self.model).eval()


def load_base_pipeline(path: str | Path, device="cpu"):
    """The frozen base ``StableDiffusionPipeline`` (the preset's 'control-base' role)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        str(path), local_files_only=True, safety_checker=None, requires_safety_checker=False, dtype=torch.float32
    ).to(device)


def _repository_relative(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it (so saved configs name no machine's folders)."""
    from ..models.presets import REPO_ROOT

    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)


def train_flexecontrol(base_path: str | Path, out: str | Path, config: FlexTrainConfig) -> dict:
    """Train on ShapesWorld and save the encoder's trained tensors and a report to ``out``."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    pipe = load_base_pipeline(base_path, accelerator.device)
    scenes = build_control_scenes(config.num_scenes, pipe.vae.config.sample_size, pipe.tokenizer,
                                  pipe.tokenizer.model_max_length)
    base = prepare_base(pipe, scenes, accelerator.device)
    config.encoder.base = _repository_relative(base_path)
    trainer = FlexTrainer(config, base, scenes, accelerator)
    start = time.perf_counter()
    log = trainer.run()
    encoder = trainer.trained_encoder()
    report = {"config": asdict(config), "losses": log.losses, "every": log.every, "seconds": time.perf_counter() - start,
              "trainable_parameters": encoder.num_trainable(), "adapted_layers": encoder.adapted_layers}
    if accelerator.is_main_process:
        encoder.save(out)
        (Path(out) / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
