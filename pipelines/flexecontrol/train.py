"""Training the copied encoder through accelerate: L_ldm + lambda_ca L_ca + lambda_mask L_mask, thesis eq. 9.6.

The base model (UNet, autoencoder, text encoder) is frozen; latents and text
embeddings are computed once (``pipelines.training.encode_latents``) and the
loop, optimiser and schedule are the ones every pack shares (``pipelines.training.train_loop``,
``make_optimizer``). Every method of :mod:`.encoder` trains with this same code
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
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..attention import CrossAttentionControl
from ..attention.supervision import cross_attention_loss
from ..shapesworld.conditions import CONDITION_TYPES
from ..training import StageLog, TrainSchedule, build_train_scheduler, encode_latents, make_optimizer, tokenize, train_loop
from .data import ControlScenes, build_control_scenes, folder_control_scenes
from ..errors import InvalidInputError, ModelNotFoundError
from .encoder import CopiedEncoder, EncoderConfig, build_copied_encoder
from .losses import condition_mask, masked_diffusion_loss, total_loss
from .pipeline import fuse_residuals
from .reward import class_targets, cycle_consistency_loss, load_segmenter

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
    # Probability that a scene's condition map is drawn by hand (wobbly outlines, scribbles, brushes;
    # :mod:`.strokes`) instead of extracted from the render, so the model obeys what people draw.
    drawn_probability: float = 0.0
    # Learning rate of the condition embedding and the zero convolutions, as a multiple of the schedule's.
    embedding_lr_multiplier: float = 1.0
    # Cycle-consistency reward (:mod:`.reward`, ControlNet++): its weight (0 = off), the largest timestep
    # it judges, and the folder of the reward segmenter.
    cycle_weight: float = 0.0
    cycle_max_timestep: int = 200
    reward_model: str = ""
    num_scenes: int = 2000
    # A plain folder of pictures, captions and optional maps to train on (data.folder_control_scenes) instead
    # of ShapesWorld scenes; it has no object masks or words, so L_ca, split pairs and hand-drawn maps are off.
    data: str = ""
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
    vae: torch.nn.Module | None = None  # decodes one-step estimates for the cycle-consistency reward


def prepare_base(pipe, scenes: ControlScenes, device) -> FrozenBase:
    """Freeze a ``StableDiffusionPipeline``'s parts and cache latents and caption embeddings of ``scenes``."""
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    means, stds = encode_latents(pipe.vae, scenes, device)
    ids = tokenize(pipe.tokenizer, scenes.captions, pipe.tokenizer.model_max_length)
    with torch.no_grad():
        embeddings = torch.cat([pipe.text_encoder(ids[i : i + 256].to(device))[0].cpu() for i in range(0, len(ids), 256)])
    return FrozenBase(pipe.unet, pipe.vae_scale_factor, means, stds, pipe.vae.config.scaling_factor, embeddings,
                      pipe.vae)


def draw_composition(generator: torch.Generator, pair_probability: float,
                     types: Sequence[str] = CONDITION_TYPES) -> list[tuple[str, str]]:
    """``[(type, part)]`` of ``types`` with part ``"all"``, or ``"chosen"`` and ``"rest"`` for a split pair."""
    def kind() -> str:
        return types[int(torch.randint(len(types), (1,), generator=generator))]

    if float(torch.rand(1, generator=generator)) < pair_probability:
        return [(kind(), "chosen"), (kind(), "rest")]
    return [(kind(), "all")]


def composition_maps(scenes: ControlScenes, index: np.ndarray, composition, generator,
                     drawn_probability: float = 0.0) -> list[tuple[str, torch.Tensor, list]]:
    """The condition maps ``[(type, [B, 3, H, W], objects)]`` of ``composition`` for scenes ``index``;
    ``objects[b]`` lists the indices of scene ``b``'s objects in the map (None: all of them).

    A split pair cuts each clean map by object (dilated masks; "rest" never
    covers "chosen"). With probability ``drawn_probability`` per scene and map,
    the map is instead drawn by hand (:mod:`.strokes`) from that part's objects.
    """
    split = any(part != "all" for _, part in composition)
    objects = {"all": [None] * len(index)}
    masks = {"all": None}
    if split:
        pairs = scenes.split_objects(index, generator)
        objects["chosen"], objects["rest"] = [c for c, _ in pairs], [r for _, r in pairs]
        masks["chosen"] = scenes.part_masks(index, objects["chosen"])
        masks["rest"] = scenes.part_masks(index, objects["rest"]) * (1.0 - masks["chosen"])
    rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
    out = []
    for kind, part in composition:
        maps = scenes.map_batch(kind, index)
        if masks[part] is not None:
            maps = maps * masks[part]
        drawn = [b for b in range(len(index)) if drawn_probability and rng.random() < drawn_probability]
        if drawn:
            maps[drawn] = scenes.drawn_batch(kind, index[drawn], [objects[part][b] for b in drawn], rng)
        out.append((kind, maps, objects[part]))
    return out


class FlexTrainer:
    """One training run of a copied encoder; ``step(indices)`` is one optimiser step (used by the bench too)."""

    def __init__(self, config: FlexTrainConfig, base: FrozenBase, scenes: ControlScenes, accelerator: Accelerator) -> None:
        torch.manual_seed(config.seed)
        self.config, self.base, self.scenes, self.accelerator = config, base, scenes, accelerator
        self.encoder: CopiedEncoder = build_copied_encoder(base.unet, base.vae_scale_factor, config.encoder)
        optimizer, self.lr_schedule = make_optimizer(self.encoder.parameter_groups(
            config.schedule.learning_rate * config.embedding_lr_multiplier), config.schedule)
        self.model, self.optimizer = accelerator.prepare(self.encoder, optimizer)
        self.unet = base.unet.to(accelerator.device)
        for model in (self.unet, self.encoder.controlnet):
            if config.gradient_checkpointing:
                model.enable_gradient_checkpointing()
            else:
                model.disable_gradient_checkpointing()
        self.noise_scheduler = build_train_scheduler()
        self.segmenter = None
        if config.cycle_weight:
            if base.vae is None or not config.reward_model:
                raise InvalidInputError("The cycle-consistency reward needs the base's autoencoder and a reward_model folder.")
            self.segmenter = load_segmenter(config.reward_model).to(accelerator.device)
            base.vae.to(accelerator.device)
        self.generator = torch.Generator().manual_seed(config.seed + 7 + accelerator.process_index)
        self.last_terms: dict[str, float] = {}

    def step(self, indices: np.ndarray) -> float:
        cfg, base, g, device = self.config, self.base, self.generator, self.accelerator.device
        index = torch.from_numpy(indices)
        latents = (base.latent_means[index] + base.latent_stds[index] * torch.randn(base.latent_means[index].shape, generator=g))
        latents = latents * base.scaling_factor
        noise = torch.randn(latents.shape, generator=g)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(indices),), generator=g)
        conditions = composition_maps(self.scenes, indices, draw_composition(g, cfg.pair_probability, list(self.scenes.maps)), g,
                                      cfg.drawn_probability)
        latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        embeddings = base.text_embeddings[index].to(device)

        control = CrossAttentionControl(self.unet, differentiable=True, layers=CA_LAYERS, keep_steps="last") if cfg.lambda_ca else None
        kinds = [kind for kind, _, _ in conditions]
        # The backward pass runs inside the recorder and with the condition types still active: with
        # checkpointing it re-runs recorded layers and adapted ones.
        with control if control is not None else nullcontext(), self.encoder.condition_types(kinds):
            residuals = self.model(noisy, timesteps, embeddings, [(kind, cond.to(device)) for kind, cond, _ in conditions])
            down, mid = fuse_residuals(residuals, [1.0] * len(residuals))
            prediction = self.unet(noisy, timesteps, encoder_hidden_states=embeddings,
                                   down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
            maps = [control.store.maps_for(name) for name in control.layers] if control is not None else []
            ldm = F.mse_loss(prediction.float(), noise.float())
            l_mask = masked_diffusion_loss(prediction, noise, condition_mask([c for _, c, _ in conditions], latents.shape[-2:]).to(device))
            l_ca = None
            if maps:
                l_ca = cross_attention_loss(maps, self.scenes.token_sets[index].to(device),
                                            self.scenes.masks[index].to(device).float(), self.scenes.valid[index].to(device))
            loss = total_loss(ldm, l_ca, l_mask, cfg.lambda_ca, cfg.lambda_mask)
            l_cycle = None
            if self.segmenter is not None:
                l_cycle = cycle_consistency_loss(
                    self.segmenter, base.vae, noisy, prediction, timesteps, self.noise_scheduler.alphas_cumprod.to(device),
                    class_targets(self.scenes.maps["segmentation"][index]), cfg.cycle_max_timestep)
                if l_cycle is not None:
                    loss = loss + cfg.cycle_weight * l_cycle
            self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.encoder.trainable_parameters(), 1.0)
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_terms = {"ldm": ldm.item(), "mask": l_mask.item(), "ca": float(l_ca.detach()) if l_ca is not None else 0.0,
                           "cycle": float(l_cycle.detach()) if l_cycle is not None else 0.0}
        return loss.item()

    def run(self, name: str = "flexecontrol", checkpoint_dir: Path | None = None, checkpoint_every: int = 500) -> StageLog:
        """Train for the schedule's steps; every ``checkpoint_every`` steps save the encoder to
        ``checkpoint_dir/step-NNNNN`` (a folder that loads like the final weights, and ``--resume`` continues)."""
        log, done = StageLog(name), [0]

        def step(indices: np.ndarray) -> float:
            loss = self.step(indices)
            done[0] += 1
            if checkpoint_dir is not None and done[0] % checkpoint_every == 0 and self.accelerator.is_main_process:
                self.accelerator.unwrap_model(self.model).save(Path(checkpoint_dir) / f"step-{done[0]:05d}")
            return loss

        train_loop(self.accelerator, self.config.schedule, self.config.seed + 3, len(self.scenes.images), log, step)
        return log

    def load_trained(self, folder: str | Path) -> None:
        """Start from the trained tensors of a saved encoder (``--resume``); same method and config required."""
        from safetensors.torch import load_file

        from .encoder import WEIGHTS_NAME

        state = load_file(str(Path(folder) / WEIGHTS_NAME))
        expected = set(self.encoder.trainable_state_dict())
        if set(state) != expected:
            raise ModelNotFoundError(f"{folder} was trained with another method or config; it cannot be resumed here.")
        self.encoder.load_state_dict(state, strict=False)

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


def train_flexecontrol(base_path: str | Path, out: str | Path, config: FlexTrainConfig,
                       resume: str | Path | None = None, checkpoint_dir: str | Path | None = None,
                       checkpoint_every: int = 500) -> dict:
    """Train on ShapesWorld (or ``config.data``'s folder) and save the encoder's trained tensors and a report
    to ``out``.

    ``resume``: start from a saved encoder (a checkpoint or earlier weights) and train ``config``'s steps more.
    """
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    pipe = load_base_pipeline(base_path, accelerator.device)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    if config.data:
        if config.drawn_probability or config.cycle_weight:
            raise InvalidInputError("A folder dataset has no objects to draw by hand or segment: train it with "
                                    "--drawn-probability 0 and --cycle-weight 0.")
        config = replace(config, lambda_ca=0.0, pair_probability=0.0)
        scenes = folder_control_scenes(config.data, size, pipe.tokenizer, pipe.tokenizer.model_max_length)
    else:
        scenes = build_control_scenes(config.num_scenes, size, pipe.tokenizer, pipe.tokenizer.model_max_length)
    base = prepare_base(pipe, scenes, accelerator.device)
    config.encoder.base = _repository_relative(base_path)
    trainer = FlexTrainer(config, base, scenes, accelerator)
    steps_before = 0
    if resume is not None:
        trainer.load_trained(resume)
        previous = Path(resume) / "training_report.json"
        steps_before = json.loads(previous.read_text()).get("total_steps", 0) if previous.is_file() else 0
        steps_before = steps_before or int("".join(ch for ch in Path(resume).name if ch.isdigit()) or 0)
    start = time.perf_counter()
    log = trainer.run(checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None, checkpoint_every=checkpoint_every)
    encoder = trainer.trained_encoder()
    report = {"config": asdict(config), "resumed_from": str(resume) if resume else None,
              "total_steps": steps_before + config.schedule.steps, "losses": log.losses, "every": log.every, "seconds": time.perf_counter() - start,
              "trainable_parameters": encoder.num_trainable(), "adapted_layers": encoder.adapted_layers}
    if accelerator.is_main_process:
        encoder.save(out)
        (Path(out) / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
