"""Training of the tiny pack through accelerate: autoencoder, text-to-image, CLIP.

Each stage returns its trained module(s) and a loss history. The same code runs
on a CPU (the default here), on a GPU and on several processes (``accelerate
launch``); batches are drawn by index with a generator seeded per process.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import CLIPModel

from ..attention import CrossAttentionControl
from ..attention.supervision import cross_attention_loss, phrase_token_sets, segment_features
from ..errors import InvalidInputError, ModelNotFoundError
from ..training import (
    SceneArrays,
    StageLog,
    build_train_scheduler,
    encode_latents,
    autocast,
    make_optimizer,
    min_snr_weights,
    tokenize,
    train_loop,
    training_target,
)
from .config import TinyPackConfig, build_clip, build_text_encoder, build_unet, build_vae
from .data import MAX_OBJECTS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _AutoencoderWithKL(nn.Module):
    """Forward returns the reconstruction and the KL term, so DDP sees one forward."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(pixels).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl().mean()


def colourful_pixel_weights(pixels: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, H, W]: ``weight`` where chroma (max - min channel) exceeds 0.3, else 1.

    Objects are small and saturated, backgrounds large and grey; without this the
    autoencoder spends its capacity on the background and shifts small objects' colours.
    """
    channels = (pixels + 1.0) / 2.0
    chroma = channels.amax(dim=1, keepdim=True) - channels.amin(dim=1, keepdim=True)
    return 1.0 + (weight - 1.0) * (chroma > 0.3).float()


def train_vae(config: TinyPackConfig, scenes: SceneArrays, accelerator: Accelerator) -> tuple[AutoencoderKL, StageLog]:
    """Autoencoder: object-weighted MSE + L1 reconstruction + a small KL term.

    Sets ``scaling_factor`` to 1/std of the latents, as Stable Diffusion does.
    """
    torch.manual_seed(config.seed)
    model = _AutoencoderWithKL(build_vae(config.sizes))
    optimizer, lr_schedule = make_optimizer(model.parameters(), config.vae)
    model, optimizer = accelerator.prepare(model, optimizer)
    log = StageLog("autoencoder")

    def step(indices: np.ndarray) -> float:
        pixels = scenes.pixel_batch(indices).to(accelerator.device)
        with autocast(accelerator, config.bf16):
            reconstruction, kl = model(pixels)
        reconstruction, kl = reconstruction.float(), kl.float()
        error = (reconstruction - pixels).square() + 0.5 * (reconstruction - pixels).abs()  # [B, 3, H, W]
        weights = colourful_pixel_weights(pixels, config.vae_object_weight)  # [B, 1, H, W]
        loss = (error * weights).mean() / weights.mean() + config.vae_kl_weight * kl
        accelerator.backward(loss)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    train_loop(accelerator, config.vae, config.seed, len(scenes.images), log, step)
    vae = accelerator.unwrap_model(model).vae.eval()
    with torch.no_grad():
        sample = scenes.pixel_batch(np.arange(min(1024, len(scenes.images)))).to(accelerator.device)
        std = vae.encode(sample).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    return vae, log


# A text feature one unit along a place direction reads as a quarter of the image away from its centre.
GROUNDING_SCALE = 0.25


def place_directions(width: int, count: int = 2) -> torch.Tensor:
    """``count`` fixed orthonormal directions of a ``width``-wide text feature space, [width, count], times
    :data:`GROUNDING_SCALE`: a token's feature read on them is a place (:func:`grounding_loss`).

    The first two are always the same (x, y), so a video model grounded on more directions
    (``pipelines.mojito.train``: its motion as two more) reads places as the image model it starts from.
    """
    first, _ = torch.linalg.qr(torch.randn(width, 2, generator=torch.Generator().manual_seed(0)))
    if count > 2:
        extra = torch.randn(width, count - 2, generator=torch.Generator().manual_seed(1))
        basis, triangle = torch.linalg.qr(torch.cat([first, extra], dim=1))
        first = basis * torch.sign(torch.diagonal(triangle))  # QR keeps orthonormal leading columns up to sign
    return first[:, :count] * GROUNDING_SCALE


class _Denoiser(nn.Module):
    """The UNet conditioned on the text encoder, trained jointly.

    With ``grounding``, forward also returns every token's text feature read as a place in the image: its
    projection on two fixed orthonormal directions, times :data:`GROUNDING_SCALE` (for :func:`grounding_loss`).
    The directions are fixed so that the features themselves must move: a trainable head would read a place from
    a change too small for the UNet's attention to notice (measured: context cosine 0.98 with a trainable head,
    0.77 with a fixed one, docs/notes/tiny_pack.md).
    """

    def __init__(self, unet: UNet2DConditionModel, text_encoder: nn.Module, grounding: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.grounding = grounding
        self.register_buffer("place_directions", place_directions(text_encoder.config.hidden_size), persistent=False)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, input_ids: torch.Tensor):
        text = self.text_encoder(input_ids)[0]
        prediction = self.unet(noisy, timesteps, encoder_hidden_states=text).sample
        if not self.grounding:
            return prediction
        return prediction, text @ self.place_directions.to(text.dtype)


def object_centres(masks: torch.Tensor) -> torch.Tensor:
    """Centroid (x, y) of each mask [B, J, h, w] in [-0.5, 0.5] (0: the image centre); [B, J, 2]. Empty masks give 0."""
    h, w = masks.shape[-2:]
    ys = (torch.arange(h, dtype=masks.dtype) + 0.5) / h - 0.5
    xs = (torch.arange(w, dtype=masks.dtype) + 0.5) / w - 0.5
    mass = masks.sum(dim=(2, 3)).clamp(min=1e-6)
    return torch.stack([(masks.sum(dim=2) * xs).sum(-1) / mass, (masks.sum(dim=3) * ys).sum(-1) / mass], dim=-1)


def grounding_loss(places: torch.Tensor, token_sets: torch.Tensor, centres: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Text grounding: each object's words, read as a place, should say where the object is.

    ``places`` [B, tokens, 2] (every token's feature read as a place, :class:`_Denoiser`), ``token_sets`` [B, J, tokens] (the
    object's words, eq. 9.3's ``T_j``), ``centres`` [B, J, 2] (:func:`object_centres` of the truth masks),
    ``valid`` [B, J]. The object's place is the mean over its words; squared error averaged over valid objects.
    In "a red circle left of a blue square" only the relation tells where each object goes, so the text encoder
    must carry the relation into the object words' features, the keys and values the UNet attends to.
    """
    predicted = segment_features(places, token_sets)
    per_object = (predicted - centres).square().sum(-1)
    weights = valid.to(per_object.dtype)
    return (per_object * weights).sum() / weights.sum().clamp(min=1.0)


def object_word_tokens(tokenizer, scenes: SceneArrays, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``T_j`` of eq. 9.3 for every scene: token indicators [N, MAX_OBJECTS, max_tokens] and validity [N, MAX_OBJECTS]."""
    rows = [phrase_token_sets(tokenizer, caption, words, max_tokens, MAX_OBJECTS)
            for caption, words in zip(tqdm(scenes.captions, desc="object words"), scenes.object_words)]
    return torch.stack([sets for sets, _ in rows]), torch.stack([valid for _, valid in rows])


def save_training_state(folder: Path, step: int, model: nn.Module, ema: EMAModel, optimizer, lr_schedule) -> None:
    """A resumable checkpoint: raw and EMA weights (safetensors), optimiser and schedule state, the step."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in model.named_parameters()]
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    save_file({n: p.detach().contiguous() for n, p in zip(names, ema.shadow_params)}, str(folder / "ema.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict()}, folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps({"step": step, "ema_step": ema.optimization_step}))


def load_training_state(folder: Path, model: nn.Module, ema: EMAModel, optimizer, lr_schedule) -> int:
    """Restore what :func:`save_training_state` wrote into fresh objects of the same config; return the step."""
    required = ("model.safetensors", "ema.safetensors", "optimizer.pt", "state.json")
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise ModelNotFoundError(f"{folder} is not a text-to-image checkpoint (missing {', '.join(missing)}).")
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except RuntimeError as error:
        raise ModelNotFoundError(f"{folder} was trained with another config; it cannot be resumed here.") from error
    shadow = load_file(str(folder / "ema.safetensors"))
    ema.shadow_params = [shadow[name].clone() for name, _ in model.named_parameters()]
    states = torch.load(folder / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    lr_schedule.load_state_dict(states["lr_schedule"])
    state = json.loads((folder / "state.json").read_text())
    ema.optimization_step = state["ema_step"]
    return int(state["step"])


def load_ema_weights(folder: Path, model: nn.Module) -> None:
    """Copy the EMA weights of a :func:`save_training_state` checkpoint into ``model`` (same config)."""
    path = folder / "ema.safetensors"
    if not path.exists():
        raise ModelNotFoundError(f"{folder} is not a text-to-image checkpoint (missing ema.safetensors).")
    shadow = load_file(str(path))
    parameters = dict(model.named_parameters())
    if set(shadow) != set(parameters) or any(shadow[n].shape != p.shape for n, p in parameters.items()):
        raise ModelNotFoundError(f"{folder} was trained with another config; it cannot start this training.")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(shadow[name])


def train_text_to_image(
    config: TinyPackConfig, scenes: SceneArrays, vae: AutoencoderKL, tokenizer, accelerator: Accelerator,
    checkpoint_dir: Path | None = None, checkpoint_every: int = 300, resume: Path | None = None,
    init: Path | None = None,
) -> tuple[UNet2DConditionModel, nn.Module, StageLog]:
    """UNet + bidirectional text encoder on cached latents: epsilon (or velocity) MSE, caption dropout, EMA.

    With ``config.attention_supervision`` > 0 the loss adds eq. 9.4's ``L_ca`` (each object's words' cross-attention,
    all layers, toward its mask) for samples with a kept caption and ``config.supervision_min_timestep <= t <=
    config.supervision_max_timestep``; ``scenes`` must then carry ``object_masks`` and ``object_words``.

    ``checkpoint_dir``: every ``checkpoint_every`` steps write ``step-NNNNN`` (:func:`save_training_state`);
    ``resume``: continue from such a folder to the schedule's end (deterministic, though the batches after the
    resume point differ from an uninterrupted run's); ``init``: start from such a folder's EMA weights with a fresh
    optimiser and schedule (a fine-tune).
    """
    torch.manual_seed(config.seed + 1)
    sizes = config.sizes
    means, stds = encode_latents(vae, scenes, accelerator.device, accelerator=accelerator)
    scaling = vae.config.scaling_factor
    input_ids = tokenize(tokenizer, scenes.captions, sizes.max_tokens)
    empty_ids = tokenize(tokenizer, [""], sizes.max_tokens)[0]
    noise_scheduler = build_train_scheduler(config.prediction_type, config.zero_terminal_snr)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(accelerator.device)

    supervise, ground = config.attention_supervision > 0, config.text_grounding > 0
    if supervise or ground:
        if scenes.object_masks is None or scenes.object_words is None:
            raise InvalidInputError("Attention supervision and text grounding need the scenes' object masks and words "
                                    "(build_scene_arrays(mask_side=...)).")
        token_sets, token_valid = object_word_tokens(tokenizer, scenes, sizes.max_tokens)
        object_masks = torch.from_numpy(scenes.object_masks)
        centres = object_centres(object_masks.float() / 255.0)

    model = _Denoiser(build_unet(sizes), build_text_encoder(sizes, len(tokenizer), tokenizer.pad_token_id), ground)
    if init is not None:
        load_ema_weights(Path(init), model)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=0.75)
    optimizer, lr_schedule = make_optimizer(model.parameters(), config.text_to_image)
    model, optimizer = accelerator.prepare(model, optimizer)
    start = 0
    if resume is not None:
        start = load_training_state(Path(resume), accelerator.unwrap_model(model), ema, optimizer, lr_schedule)
    generator = torch.Generator().manual_seed(config.seed + 2 + accelerator.process_index + 7919 * start)
    log = StageLog("text-to-image")
    done = [start]

    def step(indices: np.ndarray) -> float:
        index = torch.from_numpy(indices)
        latents = (means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)) * scaling
        ids = input_ids[index].clone()
        dropped = torch.rand(len(ids), generator=generator) < config.caption_dropout
        ids[dropped] = empty_ids
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(ids),), generator=generator)
        latents, noise, ids, timesteps = (t.to(accelerator.device) for t in (latents, noise, ids, timesteps))
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        control = (CrossAttentionControl(accelerator.unwrap_model(model).unet, differentiable=True, keep_steps="last")
                   if supervise else nullcontext())
        with control:  # backward inside: the recorded maps keep their graph
            with autocast(accelerator, config.bf16):
                prediction = model(noisy, timesteps, ids)
            if ground:
                prediction, places = prediction
            target = training_target(noise_scheduler, latents, noise, timesteps)
            per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
            weights = min_snr_weights(alphas_cumprod, timesteps, config.snr_gamma, config.prediction_type)
            loss = (per_sample * weights).mean()
            if supervise:
                kept = ((~dropped).to(timesteps.device) & (timesteps >= config.supervision_min_timestep)
                        & (timesteps <= config.supervision_max_timestep))
                valid = token_valid[index].to(accelerator.device) & kept[:, None]
                if valid.any():
                    maps = [control.store.maps_for(name).float() for name in control.layers]
                    l_ca = cross_attention_loss(maps, token_sets[index].to(accelerator.device),
                                                object_masks[index].to(accelerator.device).float() / 255.0, valid)
                    loss = loss + config.attention_supervision * l_ca
            if ground:
                valid = token_valid[index].to(accelerator.device) & (~dropped).to(accelerator.device)[:, None]
                loss = loss + config.text_grounding * grounding_loss(
                    places.float(), token_sets[index].to(accelerator.device), centres[index].to(accelerator.device), valid)
            accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).parameters())
        done[0] += 1
        if checkpoint_dir is not None and done[0] % checkpoint_every == 0 and accelerator.is_main_process:
            save_training_state(Path(checkpoint_dir) / f"step-{done[0]:05d}", done[0], accelerator.unwrap_model(model), ema,
                                optimizer, lr_schedule)
        return loss.item()

    remaining = replace(config.text_to_image, steps=config.text_to_image.steps - start)
    if remaining.steps < 1:
        raise InvalidInputError(f"{resume} is already at step {start} of {config.text_to_image.steps}.")
    train_loop(accelerator, remaining, config.seed + 3 + 7919 * start, len(scenes.images), log, step)
    denoiser = accelerator.unwrap_model(model)
    ema.copy_to(denoiser.parameters())
    return denoiser.unet.eval(), denoiser.text_encoder.eval(), log


def clip_pixels(scenes: SceneArrays, indices: np.ndarray) -> torch.Tensor:
    """Images normalised as ``CLIPImageProcessor`` does with CLIP's mean and std."""
    pixels = (scenes.pixel_batch(indices) + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def train_clip(config: TinyPackConfig, scenes: SceneArrays, tokenizer, accelerator: Accelerator) -> tuple[CLIPModel, StageLog]:
    """Contrastive CLIP; captions repeated in a batch are all positives (soft targets)."""
    torch.manual_seed(config.seed + 4)
    sizes = config.sizes
    input_ids = tokenize(tokenizer, scenes.captions, sizes.max_tokens)
    caption_ids = torch.from_numpy(np.unique(np.array(scenes.captions), return_inverse=True)[1])
    model = build_clip(sizes, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    optimizer, lr_schedule = make_optimizer(model.parameters(), config.clip)
    model, optimizer = accelerator.prepare(model, optimizer)
    log = StageLog("clip")

    def step(indices: np.ndarray) -> float:
        index = torch.from_numpy(indices)
        same = (caption_ids[index][:, None] == caption_ids[index][None, :]).float().to(accelerator.device)
        targets = same / same.sum(dim=1, keepdim=True)
        output = model(input_ids=input_ids[index].to(accelerator.device),
                       pixel_values=clip_pixels(scenes, indices).to(accelerator.device))
        loss = 0.5 * (
            F.cross_entropy(output.logits_per_image, targets) + F.cross_entropy(output.logits_per_text, targets)
        )
        accelerator.backward(loss)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    train_loop(accelerator, config.clip, config.seed + 5, len(scenes.images), log, step)
    return accelerator.unwrap_model(model).eval(), log
