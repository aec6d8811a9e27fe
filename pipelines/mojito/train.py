"""Training of the tiny text-to-video model with the Motion Intensity Modulator (thesis 10.3.3-10.3.4).

``python -m pipelines.mojito.train`` (``make tiny-t2v``) inflates the tiny
pack's text-to-image UNet into a UNet3D (:func:`.model.inflate_unet`),
encodes ShapesWorld videos frame by frame with the pack's frozen autoencoder
once, and trains the UNet3D, the bidirectional text encoder and the Motion
Intensity Encoder jointly on eq. 10.8, ||eps - eps_theta(z_t, t, c_T, c_M)||^2,
with the tiny pack's training loop (accelerate, min-SNR weighting, EMA,
caption dropout). Intensities are dropped to "none" for a share of the
samples, so the same model also generates without MIM (the ablation of
Table 10.4). The result is a ``TextToVideoSDPipeline`` folder plus a
``motion_encoder`` subfolder (:class:`.pipeline.MojitoPipeline` loads both).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DistributedDataParallelKwargs
from diffusers import StableDiffusionPipeline
from diffusers.optimization import get_constant_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..attention import CrossAttentionControl
from ..attention.supervision import cross_attention_loss, phrase_token_sets
from ..errors import InvalidInputError, WorldStudioError
from ..models.presets import TINY_PACK_DIR
from ..shapesworld import sample_video
from ..shapesworld.video import VIDEO_STARTS
from ..shapesworld.vocab import SPEEDS
from ..tinypack.data import MAX_OBJECTS
from ..tinypack.train import grounding_loss, object_centres, place_directions
from ..tinypack.report import write_report
from ..training import (
    SceneArrays,
    autocast,
    fast_bf16,
    StageLog,
    TrainSchedule,
    build_train_scheduler,
    encode_latents,
    min_snr_weights,
    tokenize,
    train_loop,
)
from ..utils import seed_everything, set_torch_threads
from .model import add_frame_positions, inflate_unet, spatial_head_counts
from .modulator import MotionIntensityEncoder
from .pack import MOTION_ENCODER_FOLDER, save_pack
from .pipeline import MAX_FRAMES, MojitoPipeline
from .frame_text import add_frame_text, frame_text_query_dims
from .frame_clock import add_frame_clock
from .temporal_text import add_temporal_text, temporal_text_dims
from .time_intensity import add_time_intensity, time_embedding_dim


# Loss-log names in training_report.json: a resumed run into the same pack adds its stage beside the first.
FIRST_STAGE, RESUMED_STAGE = "text-to-video", "text-to-video (resumed)"


@dataclass
class VideoTrainConfig:
    """Everything ``make tiny-t2v`` needs.

    The defaults are the first pack's first stage (300 steps). The shipped pack (issue 19's run F,
    ``make tiny-t2v``) is one run from shapes-sd v2 with ``--steps 1500 --video-start leaving_side
    --speed-word-dropout 0.5 --mim-tokens --text-grounding 1.0 --high-noise-share 0.3
    --high-noise-from 600`` (2.4-2.9 s a step at two threads when alone, about 65 min).
    """

    # Frames per training video and distinct ShapesWorld videos (seeds 0..n-1).
    n_frames: int = 16
    num_videos: int = 2000
    schedule: TrainSchedule = field(default_factory=lambda: TrainSchedule(steps=300, batch_size=4, learning_rate=4e-4))
    # Samples whose caption (and intensity) become empty, for classifier-free guidance.
    caption_dropout: float = 0.1
    # Further samples whose intensity becomes "none": the model also learns to generate without MIM.
    intensity_dropout: float = 0.2
    snr_gamma: float | None = 5.0
    # Lowest x_0-space loss weight (min_snr_weights' floor): high-noise samples, where only the caption and the MIM
    # can say where the object is in each frame, count at least this much (0: min-SNR alone).
    snr_floor: float = 0.0
    # Weight lambda of the objects' latent cells in the denoising loss (:func:`object_weighted_error`): a cell's
    # squared error counts 1 + lambda * (the truth objects' coverage of it). ShapesWorld's objects cover about 1% of
    # a frame, so without it where they are in each frame (direction, speed) is about 1% of the loss (0: off).
    object_loss_weight: float = 0.0
    # Length the MIM's level rows start at (MotionIntensityEncoder.start_levels_at; 0: keep them). The text tokens'
    # length (7.6 for shapes-sd v2's encoder) puts c_M on the caption's scale from the first step.
    mim_start_norm: float = 0.0
    ema_decay: float = 0.999
    # Linear warm-up, then a constant learning rate: the run up to step N is the same whatever
    # the total, so a checkpoint at step N is exactly what ``--steps N`` produces.
    warmup_steps: int = 100
    # Save the EMA weights this often (steps).
    checkpoint_every: int = 100
    # Frames the temporal layers get sinusoidal positions for (0: none, as the first shipped pack).
    frame_positions: int = MAX_FRAMES
    # Text-aware temporal attention (.temporal_text): each temporal block also attends to the caption.
    temporal_text: bool = False
    # Frame-aware text (.frame_text): mixer layers for per-frame contexts and query positions (0: none).
    frame_text_layers: int = 0
    # The MIM's "tokens" combination (c_M appended as context tokens, .modulator) instead of "add".
    mim_tokens: bool = False
    # c_M also added to the UNet's time embedding (.time_intensity, the thesis' "global conditional input";
    # needs mim_tokens).
    mim_time: bool = False
    # The temporal layers' frame positions run on a clock set by the level (.frame_clock; needs mim_tokens and
    # frame_positions): the object's place becomes one function of clock time for every level.
    frame_clock: bool = False
    # Samples whose caption loses its speed word ("quickly") but keeps its intensity: the MIM alone must
    # then carry how fast the object moves (eq. 10.8).
    speed_word_dropout: float = 0.0
    # Weight of eq. 9.4's L_ca per frame (each object's words toward its mask in that frame), on samples noised
    # to a timestep in [supervision_min_timestep, supervision_max_timestep]; 0 turns it off.
    attention_supervision: float = 0.0
    supervision_min_timestep: int = 0
    supervision_max_timestep: int = 400
    # Weight of the motion grounding term (:func:`motion_targets`: each object's words' features say where it is
    # and which way it moves); 0 turns it off.
    text_grounding: float = 0.0
    # bfloat16 autocast in the forward pass (float32 weights and optimiser; pipelines.training.autocast).
    bf16: bool = False
    # Share of samples whose timestep is drawn from [high_noise_from, 1000) instead of [0, 1000): where the noisy
    # latent hides the object, so only the caption and the MIM can say where it is in each frame (0: uniform).
    high_noise_share: float = 0.0
    high_noise_from: int = 600
    # Where the training videos' paths start (shapesworld.sample_video's ``start``): "anywhere", or
    # "leaving_side", so that a direction word also says where the object is in each frame.
    video_start: str = "anywhere"
    seed: int = 0

    @classmethod
    def smoke(cls) -> "VideoTrainConfig":
        """Two steps on a handful of 4-frame videos: proves the script runs."""
        return cls(n_frames=4, num_videos=8, schedule=TrainSchedule(2, 2, 1e-4), warmup_steps=1, checkpoint_every=1)


@dataclass
class VideoArrays:
    """Training videos: frames uint8 [N, T, H, W, 3], captions and measured intensities 1..10.

    With truth (``mask_side``): ``object_masks`` uint8 [N, T, MAX_OBJECTS, h, w], each object's coverage per
    frame pooled to the latent grid (255 = covered), and ``object_words`` ("red circle") per video.
    """

    frames: np.ndarray
    captions: list[str]
    intensities: np.ndarray
    object_masks: np.ndarray | None = None
    object_words: list[list[str]] | None = None


def without_speed_word(caption: str) -> str:
    """``caption`` with its speed word removed: "a red circle moves quickly upward" -> "a red circle moves upward"."""
    return " ".join(word for word in caption.split(" ") if word not in SPEEDS)


def build_video_arrays(num_videos: int, size: int, n_frames: int, mask_side: int | None = None,
                       start: str = "anywhere") -> VideoArrays:
    """Render ShapesWorld videos ``0..num_videos-1`` (one or two objects, every direction, verb and speed; paths
    placed as ``start`` says, :func:`~pipelines.shapesworld.sample_video`)."""
    frames = np.empty((num_videos, n_frames, size, size, 3), dtype=np.uint8)
    captions, intensities = [], np.empty(num_videos, dtype=np.int64)
    side = mask_side or 1
    masks = np.zeros((num_videos, n_frames, MAX_OBJECTS, side, side), dtype=np.uint8)
    words: list[list[str]] = []
    cell = size // side
    for seed in tqdm(range(num_videos), desc="ShapesWorld videos"):
        video = sample_video(seed, size=size, n_frames=n_frames, start=start)
        frames[seed], intensities[seed] = video.frames, video.intensity
        captions.append(video.caption)
        objects = video.objects[:MAX_OBJECTS]
        words.append([obj.spec.words for obj in objects])
        for j, obj in enumerate(objects):
            coverage = obj.masks.reshape(n_frames, side, cell, side, cell).mean(axis=(2, 4))
            masks[seed, :, j] = np.round(coverage * 255).astype(np.uint8)
    if mask_side is None:
        return VideoArrays(frames, captions, intensities)
    return VideoArrays(frames, captions, intensities, masks, words)


class VideoDenoiser(nn.Module):
    """UNet3D conditioned on c_L = c_T + c_M (eq. 10.8); all three parts train jointly.

    With ``grounding``, forward also returns every token's text feature (c_T) read on four fixed directions
    (:func:`~pipelines.tinypack.train.place_directions`): a place (x, y), as the image model reads it, and a
    motion (dx, dy), for :func:`motion_targets`.
    """

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, motion_encoder: MotionIntensityEncoder,
                 grounding: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.motion_encoder = motion_encoder
        self.grounding = grounding
        self.register_buffer("directions", place_directions(text_encoder.config.hidden_size, 4), persistent=False)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, input_ids: torch.Tensor, rows: torch.Tensor):
        text = self.text_encoder(input_ids)[0]
        prediction = self.unet(noisy, timesteps, encoder_hidden_states=self.motion_encoder(text, rows)).sample
        if not self.grounding:
            return prediction
        return prediction, text @ self.directions.to(text.dtype)


# Length of a moving object's motion target (places span [-0.5, 0.5]); a still object's is 0.
MOTION_SCALE = 0.5
# Displacements shorter than this (image widths) count as still.
STILL_BELOW = 0.02


def motion_targets(masks: torch.Tensor) -> torch.Tensor:
    """What each object's words should say in motion grounding: ``masks`` [B, T, J, h, w] in [0, 1] -> [B, J, 4].

    (x, y): the object's centroid averaged over the frames (the image model's place, :func:`object_centres`);
    (dx, dy): the direction from its first-frame to its last-frame centroid, :data:`MOTION_SCALE` long, or 0
    for an object that moves less than :data:`STILL_BELOW`. The length says nothing about speed: a caption
    without its speed word must still say which way, and the MIM carries how fast.
    """
    centres = object_centres(masks.flatten(0, 1)).unflatten(0, masks.shape[:2])  # [B, T, J, 2]
    displacement = centres[:, -1] - centres[:, 0]
    length = displacement.norm(dim=-1, keepdim=True)
    direction = torch.where(length > STILL_BELOW, displacement / length.clamp(min=1e-6) * MOTION_SCALE, 0.0)
    return torch.cat([centres.mean(dim=1), direction], dim=-1)


def train_text_to_video(config: VideoTrainConfig, base, videos: VideoArrays, accelerator: Accelerator,
                        checkpoint_dir: Path | None = None,
                        start: VideoDenoiser | None = None) -> tuple[VideoDenoiser, StageLog]:
    """Train on cached per-frame latents; returns the EMA model and the loss log.

    ``start`` continues from an earlier model (a shipped pack, :func:`load_denoiser`) instead of
    inflating ``base``'s UNet; the optimiser and the warm-up start afresh.
    """
    torch.manual_seed(config.seed + 11)
    n, frames = len(videos.captions), config.n_frames
    flat = SceneArrays(videos.frames.reshape(n * frames, *videos.frames.shape[2:]), [])
    means, stds = encode_latents(base.vae, flat, accelerator.device, accelerator=accelerator)
    shape = (n, frames, *means.shape[1:])
    means, stds = means.reshape(shape), stds.reshape(shape)
    scaling = base.vae.config.scaling_factor
    max_tokens = base.tokenizer.model_max_length
    input_ids = tokenize(base.tokenizer, videos.captions, max_tokens)
    plain_ids = tokenize(base.tokenizer, [without_speed_word(c) for c in videos.captions], max_tokens)
    empty_ids = tokenize(base.tokenizer, [""], max_tokens)[0]
    levels = torch.from_numpy(videos.intensities)
    noise_scheduler = build_train_scheduler()
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(accelerator.device)

    supervise, ground = config.attention_supervision > 0, config.text_grounding > 0
    if supervise or ground or config.object_loss_weight > 0:
        if videos.object_masks is None or videos.object_words is None:
            raise InvalidInputError("Attention supervision, motion grounding and object weighting need the videos' "
                                    "object masks (build_video_arrays(mask_side=...)).")
        token_sets, token_valid = zip(*(phrase_token_sets(base.tokenizer, c, w, max_tokens, MAX_OBJECTS)
                                        for c, w in zip(videos.captions, videos.object_words)))
        token_sets, token_valid = torch.stack(token_sets), torch.stack(token_valid)
        object_masks = torch.from_numpy(videos.object_masks)
        targets = motion_targets(object_masks.float() / 255.0)

    resumed = start is not None
    model = (start or new_denoiser(base, config.frame_positions)).train()
    model.grounding = ground
    if config.frame_positions and not model.motion_encoder.config.frame_positions:
        # A pack trained without frame positions (the first shipped one) gets them now.
        model.motion_encoder.register_to_config(frame_positions=config.frame_positions)
        add_frame_positions(model.unet, config.frame_positions)
    wants_tokens = config.mim_tokens and model.motion_encoder.config.combine != "tokens"
    wants_frame_text = config.frame_text_layers and model.motion_encoder.frame_text is None
    wants_time = config.mim_time and model.motion_encoder.to_time is None
    wants_clock = config.frame_clock and not model.motion_encoder.config.get("frame_clock", False)
    if wants_tokens or wants_frame_text or wants_time or wants_clock or (config.temporal_text
                                                          and not len(model.motion_encoder.temporal_text)):
        upgrade_motion_conditioning(model, config.temporal_text, config.mim_tokens, config.frame_text_layers,
                                    config.mim_time, config.frame_clock)
    if config.mim_start_norm > 0:
        model.motion_encoder.start_levels_at(config.mim_start_norm)
    ema = EMAModel(model.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=0.75)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.schedule.learning_rate, weight_decay=1e-4)
    lr_schedule = get_constant_schedule_with_warmup(optimizer, config.warmup_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(config.seed + 12 + accelerator.process_index)
    log = StageLog(RESUMED_STAGE if resumed else FIRST_STAGE)
    done = [0]

    def step(indices: np.ndarray) -> float:
        index = torch.from_numpy(indices)
        latents = (means[index] + stds[index] * torch.randn(means[index].shape, generator=generator)) * scaling
        latents = latents.permute(0, 2, 1, 3, 4)  # [B, C, T, h, w] as the UNet3D reads videos
        ids, rows = input_ids[index].clone(), levels[index].clone()
        draw = torch.rand(len(ids), generator=generator)
        no_caption = draw < config.caption_dropout
        ids[no_caption] = empty_ids
        rows[draw < config.caption_dropout + config.intensity_dropout] = 0
        if config.speed_word_dropout:  # a separate draw, so the runs without it keep their random stream
            plain = (torch.rand(len(ids), generator=generator) < config.speed_word_dropout) & ~no_caption
            ids[plain] = plain_ids[index][plain]
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = draw_timesteps(len(ids), noise_scheduler.config.num_train_timesteps, config.high_noise_share,
                                   config.high_noise_from, generator)
        latents, noise, ids, rows, timesteps = (t.to(accelerator.device) for t in (latents, noise, ids, rows, timesteps))
        control = (CrossAttentionControl(accelerator.unwrap_model(model).unet, differentiable=True, keep_steps="last")
                   if supervise else nullcontext())
        with control:  # backward inside: the recorded maps keep their graph
            with autocast(accelerator, config.bf16):
                prediction = model(noise_scheduler.add_noise(latents, noise, timesteps), timesteps, ids, rows)
            if ground:
                prediction, places = prediction
            coverage = object_masks[index].to(accelerator.device) if config.object_loss_weight > 0 else None
            per_sample = object_weighted_error(prediction.float(), noise.float(), coverage, config.object_loss_weight)
            loss = (per_sample * min_snr_weights(alphas_cumprod, timesteps, config.snr_gamma,
                                                  floor=config.snr_floor)).mean()
            if supervise:
                loss = loss + config.attention_supervision * per_frame_attention_loss(
                    control, token_sets[index], token_valid[index], object_masks[index], no_caption,
                    (timesteps >= config.supervision_min_timestep) & (timesteps <= config.supervision_max_timestep),
                    accelerator.device)
            if ground:
                valid = token_valid[index].to(accelerator.device) & (~no_caption).to(accelerator.device)[:, None]
                loss = loss + config.text_grounding * grounding_loss(
                    places.float(), token_sets[index].to(accelerator.device), targets[index].to(accelerator.device), valid)
            accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).parameters())
        done[0] += 1
        if checkpoint_dir is not None and accelerator.is_main_process and done[0] % config.checkpoint_every == 0:
            save_checkpoint(accelerator.unwrap_model(model), ema, checkpoint_dir / f"step-{done[0]:05d}.safetensors")
        return loss.item()

    train_loop(accelerator, config.schedule, config.seed + 13, n, log, step)
    denoiser = accelerator.unwrap_model(model)
    ema.copy_to(denoiser.parameters())
    return denoiser.eval(), log


def object_weighted_error(prediction: torch.Tensor, target: torch.Tensor, coverage: torch.Tensor | None,
                          weight: float) -> torch.Tensor:
    """Per-sample mean squared error [B] of videos [B, C, T, h, w], each latent cell's error counted
    ``1 + weight * c``, c being the truth objects' coverage of the cell (``coverage`` uint8 [B, T, J, h, w] at the
    latent's side, 0-255 per object, summed over objects and capped at 1); plain MSE when ``coverage`` is None."""
    error = (prediction - target) ** 2
    if coverage is None:
        return error.mean(dim=(1, 2, 3, 4))
    cells = (coverage.float() / 255.0).sum(dim=2).clamp(max=1.0)[:, None]  # [B, 1, T, h, w]
    return (error * (1.0 + weight * cells)).mean(dim=(1, 2, 3, 4))


def draw_timesteps(count: int, num_train_timesteps: int, high_noise_share: float, high_noise_from: int,
                   generator: torch.Generator) -> torch.Tensor:
    """Training timesteps [count]: uniform over ``[0, num_train_timesteps)``; with ``high_noise_share`` > 0, that
    share of them (in expectation) uniform over ``[high_noise_from, num_train_timesteps)`` instead. With a share of
    0 the random stream is the uniform draw alone, as before the option existed."""
    timesteps = torch.randint(0, num_train_timesteps, (count,), generator=generator)
    if high_noise_share <= 0:
        return timesteps
    if not 0 <= high_noise_from < num_train_timesteps or high_noise_share > 1:
        raise InvalidInputError(f"High-noise share must be in [0, 1] and its first timestep in [0, {num_train_timesteps}), "
                                f"got {high_noise_share!r} and {high_noise_from!r}.")
    high = torch.rand(count, generator=generator) < high_noise_share
    return torch.where(high, torch.randint(high_noise_from, num_train_timesteps, (count,), generator=generator), timesteps)


def per_frame_attention_loss(control: CrossAttentionControl, token_sets: torch.Tensor, valid: torch.Tensor,
                             masks: torch.Tensor, no_caption: torch.Tensor, in_window: torch.Tensor, device) -> torch.Tensor:
    """Eq. 9.4 on every frame: the recorded video maps ``[B, T, heads, h, w, tokens]`` become ``B*T`` images,
    each video's token sets repeat per frame and each frame has its own masks ``[B, T, J, h, w]``.
    Videos without a caption or noised outside the supervised timesteps (``in_window`` False) count for
    nothing (0 when none is left)."""
    frames = masks.shape[1]
    keep = (~no_caption).to(device) & in_window.to(device)
    per_frame_valid = (valid.to(device) & keep[:, None]).repeat_interleave(frames, dim=0)  # [B*T, J]
    if not per_frame_valid.any():
        return torch.zeros((), device=device)
    maps = [control.store.maps_for(name).flatten(0, 1).float() for name in control.layers]
    # The MIM's "tokens" reading attends to c_M after the caption's tokens: no object word is there.
    token_sets = F.pad(token_sets, (0, maps[0].shape[-1] - token_sets.shape[-1]))
    return cross_attention_loss(maps, token_sets.to(device).repeat_interleave(frames, dim=0),
                                masks.to(device).flatten(0, 1).float() / 255.0, per_frame_valid)


def new_denoiser(base, frame_positions: int, temporal_text: bool = False, mim_tokens: bool = False,
                 frame_text_layers: int = 0, mim_time: bool = False, frame_clock: bool = False) -> VideoDenoiser:
    """``base``'s UNet inflated to 3D (with ``frame_positions`` if > 0), its text encoder and a fresh MIM
    (with text-aware temporal attention if ``temporal_text``, combined as tokens if ``mim_tokens``, with
    frame-aware text of ``frame_text_layers`` mixer layers if > 0, added to the time embedding if ``mim_time``,
    running the frame positions on the level's clock if ``frame_clock``)."""
    unet = inflate_unet(base.unet)
    if frame_positions:
        add_frame_positions(unet, frame_positions)
    motion_encoder = MotionIntensityEncoder(embedding_dim=base.text_encoder.config.hidden_size,
                                            frame_positions=frame_positions, spatial_heads=spatial_head_counts(base.unet))
    model = VideoDenoiser(unet, base.text_encoder, motion_encoder)
    if temporal_text or mim_tokens or frame_text_layers or mim_time or frame_clock:
        upgrade_motion_conditioning(model, temporal_text, mim_tokens, frame_text_layers, mim_time, frame_clock)
    return model


def upgrade_motion_conditioning(model: VideoDenoiser, temporal_text: bool, mim_tokens: bool,
                                frame_text_layers: int = 0, mim_time: bool = False, frame_clock: bool = False) -> None:
    """Give ``model`` text-aware temporal attention (zero values: the model is unchanged), the MIM's
    ``"tokens"`` combination (a fresh, zero embedding: the old rows were trained to be added),
    frame-aware text (zero outputs: the model is unchanged), c_M in the time embedding (a zero map: the
    model is unchanged) and/or the level's frame clock (.frame_clock), by replacing its motion encoder with one
    whose config says so; what it already had is kept."""
    old = model.motion_encoder.config
    combine = "tokens" if mim_tokens else old.combine
    dims = temporal_text_dims(model.unet) if temporal_text else tuple(old.temporal_text_dims)
    layers = old.get("frame_text_layers", 0) or frame_text_layers
    query_dims = frame_text_query_dims(model.unet) if layers else ()
    time_dim = old.get("time_embedding_dim", 0) or (time_embedding_dim(model.unet) if mim_time else 0)
    encoder = MotionIntensityEncoder(embedding_dim=old.embedding_dim, words=tuple(old.words),
                                     frame_positions=old.frame_positions, temporal_text_dims=dims,
                                     combine=combine, copies=old.copies, frame_text_layers=layers,
                                     frame_text_query_dims=query_dims, spatial_heads=tuple(old.get("spatial_heads", ())),
                                     time_embedding_dim=time_dim,
                                     frame_clock=bool(old.get("frame_clock", False) or frame_clock))
    device = model.motion_encoder.embedding.weight.device
    if combine == old.combine:
        encoder.embedding.load_state_dict(model.motion_encoder.embedding.state_dict())
    if len(model.motion_encoder.temporal_text) == len(dims):
        encoder.temporal_text.load_state_dict(model.motion_encoder.temporal_text.state_dict())
    if model.motion_encoder.frame_text is not None:
        encoder.frame_text.load_state_dict(model.motion_encoder.frame_text.state_dict())
    if model.motion_encoder.to_time is not None:
        encoder.to_time.load_state_dict(model.motion_encoder.to_time.state_dict())
    model.motion_encoder = encoder.to(device)
    if dims:
        add_temporal_text(model.unet, encoder.temporal_text)
    if layers:
        add_frame_text(model.unet, encoder.frame_text)
    if time_dim:
        add_time_intensity(model.unet, encoder.to_time)
    if encoder.config.frame_clock:
        add_frame_clock(model.unet, encoder.embedding)


def save_checkpoint(model: VideoDenoiser, ema: EMAModel, path: Path) -> None:
    """The EMA weights of every part, as one safetensors file (the live weights are left as they were)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    ema.restore(model.parameters())


def losses_from_log(text: str, steps: int) -> tuple[list[float], float]:
    """The 10-step mean losses a run's progress bar showed up to ``steps``, and the seconds it took to get there."""
    losses, seconds = [], 0.0
    for count, elapsed, loss in re.findall(r"text-to-video[^:|]*:[^|]*\|[^|]*\| (\d+)/\d+ \[([\d:]+)<[^\]]*loss=([0-9.]+)\]", text):
        if int(count) > steps:
            break
        if not losses or float(loss) != losses[-1]:
            losses.append(float(loss))
        parts = [int(p) for p in elapsed.split(":")]
        seconds = float(sum(p * 60**i for i, p in enumerate(reversed(parts))))
    return losses, seconds


def steps_before(pack_dir: Path | None) -> int | None:
    """Training steps a pack had already had (its report's ``steps`` plus its own ``steps_before_resume``)."""
    report = pack_dir / "training_report.json" if pack_dir is not None else None
    if report is None or not report.is_file():
        return None
    data = json.loads(report.read_text())
    return int(data.get("steps", 0)) + int(data.get("steps_before_resume") or 0)


def load_denoiser(pack_dir: Path) -> VideoDenoiser:
    """The UNet3D, text encoder and MIM of a saved Mojito pack (``--resume``, checked to have its
    ``motion_encoder/``), in float32, ready to train on."""
    return denoiser_of(MojitoPipeline.from_pretrained(pack_dir, local_files_only=True, use_safetensors=True))


def denoiser_of(pipe: MojitoPipeline) -> VideoDenoiser:
    """The UNet3D, text encoder and MIM of a loaded Mojito pipeline as one float32 denoiser (shared, not copied)."""
    return VideoDenoiser(pipe.unet.float(), pipe.text_encoder.float(), pipe.motion_encoder.float())


def load_base(base_dir: Path) -> StableDiffusionPipeline:
    """The tiny text-to-image pack whose autoencoder, tokenizer, text encoder and UNet the video model starts from."""
    return StableDiffusionPipeline.from_pretrained(base_dir, local_files_only=True, safety_checker=None,
                                                   use_safetensors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.mojito.train", description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=TINY_PACK_DIR / "shapes-sd")
    parser.add_argument("--out", type=Path, default=TINY_PACK_DIR / "shapes-t2v")
    parser.add_argument("--checkpoints", type=Path, default=Path("runs/mojito"))
    parser.add_argument("--smoke", action="store_true", help="two steps on 8 short videos")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--num-videos", type=int, default=None)
    parser.add_argument("--frame-positions", type=int, default=None,
                        help=f"frames the temporal layers get sinusoidal positions for (default {MAX_FRAMES}; 0: none)")
    parser.add_argument("--temporal-text", action="store_true",
                        help="give the temporal blocks attention to the caption (pipelines.mojito.temporal_text)")
    parser.add_argument("--mim-tokens", action="store_true",
                        help="combine the MIM's c_M with the caption as extra tokens (pipelines.mojito.modulator)")
    parser.add_argument("--mim-time", action="store_true",
                        help="also add the MIM's c_M to the UNet's time embedding (pipelines.mojito.time_intensity; "
                             "needs --mim-tokens or a pack that has them)")
    parser.add_argument("--frame-clock", action="store_true",
                        help="run the temporal layers' frame positions at f x level / 5 (pipelines.mojito.frame_clock; "
                             "needs --mim-tokens and frame positions)")
    parser.add_argument("--frame-text", type=int, default=None, metavar="LAYERS",
                        help="per-frame caption contexts from a LAYERS-layer mixer, and query positions, for the "
                             "spatial cross-attention (pipelines.mojito.frame_text; 0: none)")
    parser.add_argument("--speed-word-dropout", type=float, default=None,
                        help="share of captions trained without their speed word (the MIM must carry speed)")
    parser.add_argument("--attention-supervision", type=float, default=None,
                        help="weight of eq. 9.4's L_ca on every frame (0: off)")
    parser.add_argument("--supervision-min-timestep", type=int, default=None)
    parser.add_argument("--supervision-max-timestep", type=int, default=None)
    parser.add_argument("--text-grounding", type=float, default=None,
                        help="weight of motion grounding (object words' features say where the object is and which "
                             "way it moves; 0: off)")
    parser.add_argument("--video-start", choices=VIDEO_STARTS, default=None,
                        help="where the training videos' paths start (default anywhere; leaving_side: near the side "
                             "the direction word leaves from)")
    parser.add_argument("--high-noise-share", type=float, default=None,
                        help="share of samples noised to a timestep >= --high-noise-from (default 0: uniform)")
    parser.add_argument("--high-noise-from", type=int, default=None)
    parser.add_argument("--object-loss-weight", type=float, default=None,
                        help="extra weight of the truth objects' latent cells in the denoising loss (default 0: off)")
    parser.add_argument("--mim-start-norm", type=float, default=None,
                        help="length the MIM's level rows start at (e.g. the text tokens' 7.6; default 0: keep them)")
    parser.add_argument("--snr-floor", type=float, default=None,
                        help="lowest x_0-space loss weight, so high-noise samples count (default 0: min-SNR alone)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in the forward pass (float32 weights)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="continue training from this Mojito pack (e.g. the shipped one) instead of inflating --base")
    parser.add_argument("--from-checkpoint", type=Path, default=None,
                        help="package a saved checkpoint into --out instead of training")
    parser.add_argument("--log", type=Path, default=None,
                        help="with --from-checkpoint: the run's log, whose losses go into the training report "
                             "(with --resume too: the checkpoint is of a resumed run)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.num_videos is not None and args.num_videos < 4:
        parser.error("--num-videos must be at least 4")
    for name in ("snr_floor", "object_loss_weight", "mim_start_norm"):
        if getattr(args, name) is not None and not getattr(args, name) >= 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.frame_positions is not None and not 0 <= args.frame_positions <= MAX_FRAMES:
        parser.error(f"--frame-positions must be in 0..{MAX_FRAMES}")
    if args.mim_time and not args.mim_tokens and args.resume is None:
        parser.error("--mim-time reads c_M as the last context token: it needs --mim-tokens")
    if args.frame_clock and ((not args.mim_tokens and args.resume is None) or args.frame_positions == 0):
        parser.error("--frame-clock reads c_M as the last context token and runs the frame positions: it needs "
                     "--mim-tokens and frame positions")
    if args.resume is not None and not (args.resume / MOTION_ENCODER_FOLDER).is_dir():
        parser.error(f"--resume {args.resume} is not a Mojito pack (no {MOTION_ENCODER_FOLDER}/ folder)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_torch_threads()
    config = VideoTrainConfig.smoke() if args.smoke else VideoTrainConfig()
    if args.steps:
        config.schedule.steps = args.steps
    if args.num_videos:
        config.num_videos = args.num_videos
    if args.frame_positions is not None:
        config.frame_positions = args.frame_positions
    config.temporal_text = args.temporal_text
    config.mim_tokens = args.mim_tokens
    config.mim_time = args.mim_time
    config.frame_clock = args.frame_clock
    config.bf16 = args.bf16
    if args.frame_text is not None:
        config.frame_text_layers = args.frame_text
    for name in ("speed_word_dropout", "attention_supervision", "supervision_min_timestep", "supervision_max_timestep",
                 "text_grounding", "video_start", "high_noise_share", "high_noise_from", "snr_floor",
                 "object_loss_weight", "mim_start_norm"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    seed_everything(config.seed)
    started = time.perf_counter()
    base = load_base(args.base)
    if args.from_checkpoint is not None:
        model = new_denoiser(base, config.frame_positions, config.temporal_text, config.mim_tokens,
                             config.frame_text_layers, config.mim_time, config.frame_clock)
        model.load_state_dict(load_file(str(args.from_checkpoint)))
        save_pack(args.out, base, model.unet, model.text_encoder, model.motion_encoder)
        steps = int(re.search(r"(\d+)", args.from_checkpoint.stem).group(1))
        log = StageLog(RESUMED_STAGE if args.resume is not None else FIRST_STAGE)
        if args.log is not None:
            log.losses, log.seconds = losses_from_log(args.log.read_text(errors="replace"), steps)
        return write_report([log], args.out, {
            "num_videos": config.num_videos, "n_frames": config.n_frames, "steps": steps,
            "batch_size": config.schedule.batch_size, "learning_rate": config.schedule.learning_rate,
            "checkpoint": args.from_checkpoint.name, "threads": torch.get_num_threads(),
            "frame_positions": config.frame_positions,
            "resumed_from": str(args.resume) if args.resume is not None else None,
            "steps_before_resume": steps_before(args.resume),
        })
    start = load_denoiser(args.resume) if args.resume is not None else None
    # find_unused_parameters: parameters that no loss reaches (the text encoder's pooler) must not stall the all-reduce.
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    size = base.unet.config.sample_size * 4
    videos = build_video_arrays(config.num_videos, size, config.n_frames,
                                mask_side=size // 4 if max(config.attention_supervision, config.text_grounding,
                                                           config.object_loss_weight) > 0 else None,
                                start=config.video_start)
    model, log = train_text_to_video(config, base, videos, accelerator, args.checkpoints, start)
    report = {}
    if accelerator.is_main_process:
        save_pack(args.out, base, model.unet, model.text_encoder, model.motion_encoder)
        report = write_report([log], args.out, {
            "num_videos": config.num_videos, "n_frames": config.n_frames, "steps": config.schedule.steps,
            "batch_size": config.schedule.batch_size, "smoke": args.smoke, "threads": torch.get_num_threads(),
            "device": str(accelerator.device), "total_seconds": round(time.perf_counter() - started, 1),
            "resumed_from": str(args.resume) if args.resume is not None else None,
            "steps_before_resume": steps_before(args.resume),
            "frame_positions": config.frame_positions, "temporal_text": config.temporal_text,
            "mim_tokens": config.mim_tokens, "mim_time": config.mim_time,
            "frame_clock": config.frame_clock,
            "frame_text_layers": config.frame_text_layers,
            "speed_word_dropout": config.speed_word_dropout,
            "bf16": config.bf16 and fast_bf16(accelerator.device),
            "attention_supervision": config.attention_supervision,
            "supervision_min_timestep": config.supervision_min_timestep,
            "supervision_max_timestep": config.supervision_max_timestep, "text_grounding": config.text_grounding,
            "video_start": config.video_start, "high_noise_share": config.high_noise_share,
            "high_noise_from": config.high_noise_from, "snr_floor": config.snr_floor,
            "object_loss_weight": config.object_loss_weight, "mim_start_norm": config.mim_start_norm,
        })
    return report


if __name__ == "__main__":
    try:
        main()
    except WorldStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
