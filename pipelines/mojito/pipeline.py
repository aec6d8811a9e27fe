"""``MojitoPipeline``: text-to-video with Directional Motion Control and the Motion Intensity Modulator.

A subclass of diffusers' ``TextToVideoSDPipeline`` with one optional extra
component, ``motion_encoder`` (:class:`.modulator.MotionIntensityEncoder`).
Any UNet3D text-to-video checkpoint works for directional control (thesis
10.4.4: the DMC module is model-agnostic); intensity control needs a model
trained with the modulator (the tiny pack's ``shapes-t2v``).

    pipe = MojitoPipeline.from_pretrained("assets/models/tiny/shapes-t2v")
    out = pipe("a red circle moves from left to right quickly",
               trajectories={"red circle": boxes},   # [T, 4] fractions, or Trajectory objects
               intensity=8, num_frames=16, generator=torch.Generator().manual_seed(0))
    out.frames  # uint8 [T, H, W, 3]
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import TextToVideoSDPipeline
from diffusers.utils import BaseOutput

from ..attention import CrossAttentionControl, average_resized, token_indices
from ..errors import InvalidInputError
from ..attention.guidance import GuidanceConfig, GuidanceDivergedError, GuidanceTarget, guide_latents, phrase_maps
from .model import add_frame_positions, set_spatial_heads
from .frame_clock import add_frame_clock
from .modulator import MotionIntensityEncoder, check_intensity
from .frame_text import add_frame_text
from .temporal_text import add_temporal_text
from .time_intensity import add_time_intensity
from .pack import MOTION_ENCODER_FOLDER
from .trajectory import check_trajectories

MAX_FRAMES = 64
MAX_STEPS = 200
# Denoising steps by default (the tab's and the bench's studio timing).
DEFAULT_STEPS = 15


@dataclass
class MojitoPipelineOutput(BaseOutput):
    """A generated video and what guided it."""

    # uint8 [T, H, W, 3]
    frames: np.ndarray
    # phrase -> target boxes [T, 4], fractions of the frame
    boxes: dict[str, np.ndarray]
    # Intensity level the Motion Intensity Modulator was given (None: no MIM).
    intensity: int | None
    # Whether Directional Motion Control changed the latent.
    guided: bool
    # Per guided step: phrase -> mean E_i (eq. 10.5) over frames and layers, before that step's update.
    energies: list[dict[str, float]] = field(default_factory=list)
    # phrase -> float32 [T, h, w] cross-attention maps of the last denoising step (if asked for).
    attention: dict[str, np.ndarray] | None = None
    seconds: float = 0.0


class MojitoPipeline(TextToVideoSDPipeline):
    """TextToVideoSD plus trajectories (eq. 10.5-10.7) and motion intensity (eq. 10.8)."""

    _optional_components = ["motion_encoder"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler,
                 motion_encoder: MotionIntensityEncoder | None = None) -> None:
        super().__init__(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_motion_encoder(motion_encoder)

    def register_motion_encoder(self, motion_encoder: MotionIntensityEncoder | None) -> None:
        """Attach the MIM; a pack whose encoder records ``frame_positions`` also gets them in its UNet,
        one whose encoder records ``spatial_heads`` gets its image UNet's head split (.model.set_spatial_heads),
        one whose encoder holds caption key/values (``temporal_text_dims``) gets text-aware temporal attention,
        one with a frame-text mixer (``frame_text_layers``) gets per-frame contexts (.frame_text), and one with
        a time map (``time_embedding_dim``) adds c_M to the time embedding (.time_intensity), and one with
        ``frame_clock`` runs its frame positions on the level's clock (.frame_clock)."""
        self.register_modules(motion_encoder=motion_encoder)
        config = getattr(motion_encoder, "config", None)
        positions = getattr(config, "frame_positions", 0)
        if positions:
            add_frame_positions(self.unet, positions)
        if getattr(config, "spatial_heads", ()):
            set_spatial_heads(self.unet, tuple(config.spatial_heads))
        if motion_encoder is not None and len(motion_encoder.temporal_text):
            add_temporal_text(self.unet, motion_encoder.temporal_text)
        if getattr(motion_encoder, "frame_text", None) is not None:
            add_frame_text(self.unet, motion_encoder.frame_text)
        if getattr(motion_encoder, "to_time", None) is not None:
            add_time_intensity(self.unet, motion_encoder.to_time)
        if getattr(config, "frame_clock", False):
            add_frame_clock(self.unet, motion_encoder.embedding)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "MojitoPipeline":
        """Load the pipeline; a local folder's ``motion_encoder`` subfolder (if any) becomes the MIM."""
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        folder = Path(str(pretrained_model_name_or_path)) / MOTION_ENCODER_FOLDER
        if getattr(pipe, "motion_encoder", None) is None and folder.is_dir():
            pipe.register_motion_encoder(MotionIntensityEncoder.from_pretrained(folder, use_safetensors=True))
        return pipe

    @classmethod
    def from_base(cls, base: TextToVideoSDPipeline, motion_encoder: MotionIntensityEncoder | None = None):
        """Wrap an already loaded ``TextToVideoSDPipeline`` (e.g. from the ModelManager)."""
        return cls(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
                   scheduler=base.scheduler, motion_encoder=motion_encoder)

    # -- checks ---------------------------------------------------------------------------

    def check_mojito_inputs(self, prompt, num_frames, num_inference_steps, intensity, guidance: GuidanceConfig,
                            guidance_scale, guided: bool, intensity_guidance_scale=None) -> None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError(f"The prompt must be a non-empty string, got {prompt!r}.")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or not 2 <= num_frames <= MAX_FRAMES:
            raise InvalidInputError(f"num_frames must be an integer in 2..{MAX_FRAMES}, got {num_frames!r}.")
        if (isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int)
                or not 1 <= num_inference_steps <= MAX_STEPS):
            raise InvalidInputError(f"num_inference_steps must be an integer in 1..{MAX_STEPS}, got {num_inference_steps!r}.")
        if intensity is not None:
            check_intensity(intensity)
        if guided and guidance.steps > num_inference_steps:
            raise InvalidInputError(
                f"Guidance steps ({guidance.steps}) cannot exceed the denoising steps ({num_inference_steps})."
            )
        for name, scale in (("guidance_scale", guidance_scale), ("intensity_guidance_scale", intensity_guidance_scale)):
            if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)
                                      or not np.isfinite(scale) or scale < 0):
                raise InvalidInputError(f"{name} must be a finite number >= 0, got {scale!r}.")

    # -- pieces ---------------------------------------------------------------------------

    def condition(self, prompt: str, intensity: int | None, cfg: bool, split_intensity: bool = False) -> torch.Tensor:
        """c_L = c_T + c_M (eq. 10.8) for the prompt; with CFG, [uncond ("" and no intensity), cond]; with
        ``split_intensity`` (CFG and a motion encoder), [uncond, the prompt without intensity, cond]."""
        text, uncond = self.encode_prompt(prompt, self._execution_device, 1, cfg, negative_prompt=None)
        if self.motion_encoder is None:
            return torch.cat([uncond, text]) if cfg else text
        cond = self.motion_encoder(text, self.motion_encoder.index([intensity]))
        if not cfg:
            return cond
        none = self.motion_encoder.index([None])
        rows = [self.motion_encoder(uncond, none)] + ([self.motion_encoder(text, none)] if split_intensity else [])
        return torch.cat([*rows, cond])

    def _record_maps(self, targets, layers, latent_input, t, embeds) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """The CFG UNet call, recording the phrases' maps (the batch's last row, the full condition c_L) in ``layers``."""
        with CrossAttentionControl(self.unet, layers=list(layers), keep_steps="last", to_cpu=True) as control:
            noise = self.unet(latent_input, t, encoder_hidden_states=embeds).sample
        maps = {}
        for target in targets:
            per_layer = [phrase_maps(control.store.maps_for(layer)[-1], target.tokens) for layer in control.layers]
            size = max(m.shape[-1] for m in per_layer)
            maps[target.phrase] = average_resized(per_layer, (size, size)).numpy()
        return noise, maps

    # -- generation -----------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        trajectories=None,
        intensity: int | None = None,
        *,
        num_frames: int = 16,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = 7.5,
        intensity_guidance_scale: float | None = None,
        guidance: GuidanceConfig | None = None,
        use_motion_encoder: bool = True,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        return_attention: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> MojitoPipelineOutput:
        """Generate one video.

        Args:
            prompt: the caption.
            trajectories: ``{phrase: boxes [num_frames, 4] or Trajectory}`` or a list of
                :class:`~.trajectory.Trajectory`; each phrase must be words of the prompt.
                None: no directional control.
            intensity: motion intensity 1-10 for the MIM (ignored by a model without one).
            intensity_guidance_scale: classifier-free guidance on the intensity alone, as InstructPix2Pix
                guides on its image: eps = eps(none) + s (eps(c_T, none) - eps(none)) + s_M (eps(c_L) -
                eps(c_T, none)), one more UNet pass per step. None (default) or equal to ``guidance_scale``:
                ordinary CFG, where the intensity's difference is scaled by ``guidance_scale`` too.
            guidance: DMC settings (eta, K, lambda, layers); default :class:`GuidanceConfig`.
            use_motion_encoder: False generates without MIM (the intensity row "none").
            return_attention: also return the phrases' maps at the last step.
            callback: called as ``callback(step, total)`` after each denoising step.
        """
        started = time.perf_counter()
        guidance = guidance or GuidanceConfig()
        self.check_mojito_inputs(prompt, num_frames, num_inference_steps, intensity, guidance, guidance_scale,
                                 trajectories is not None, intensity_guidance_scale)
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        boxes = check_trajectories(prompt, trajectories, num_frames) if trajectories is not None else {}
        targets = [GuidanceTarget(phrase, token_indices(self.tokenizer, prompt, phrase), b) for phrase, b in boxes.items()]
        guided = bool(targets) and guidance.active
        mim_level = intensity if (use_motion_encoder and self.motion_encoder is not None) else None
        self.unet.requires_grad_(False)

        cfg = guidance_scale > 1.0
        split = (cfg and mim_level is not None and intensity_guidance_scale is not None
                 and intensity_guidance_scale != guidance_scale)
        embeds = self.condition(prompt, mim_level, cfg, split)
        cond = embeds[-1:]
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.prepare_latents(1, self.unet.config.in_channels, num_frames, height, width, embeds.dtype,
                                       device, generator, latents)
        extra = self.prepare_extra_step_kwargs(generator, 0.0)
        energies, attention = [], None
        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if guided and i < guidance.steps:
                    for _ in range(guidance.inner_steps):
                        latents, (per_phrase,) = guide_latents(self.unet, self.scheduler, latents, t, cond,
                                                               [targets], guidance)
                    energies.append(per_phrase)
                latent_input = torch.cat([latents] * len(embeds)) if cfg else latents
                latent_input = self.scheduler.scale_model_input(latent_input, t)
                if return_attention and targets and i == len(timesteps) - 1:
                    noise, attention = self._record_maps(targets, guidance.layers, latent_input, t, embeds)
                else:
                    noise = self.unet(latent_input, t, encoder_hidden_states=embeds).sample
                if split:
                    uncond, text, cond_noise = noise.chunk(3)
                    noise = uncond + guidance_scale * (text - uncond) + intensity_guidance_scale * (cond_noise - text)
                elif cfg:
                    uncond, text = noise.chunk(2)
                    noise = uncond + guidance_scale * (text - uncond)
                b, c, f, h, w = latents.shape
                flat = latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
                noise = noise.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
                flat = self.scheduler.step(noise, t, flat, **extra).prev_sample
                latents = flat.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
                if not torch.isfinite(latents).all():
                    raise GuidanceDivergedError(
                        f"The latent became NaN/inf at denoising step {i + 1}"
                        + (f"; guidance strength {guidance.strength} is too large." if guided else ".")
                    )
                bar.update()
                if callback is not None:
                    callback(i + 1, len(timesteps))

        video = self.decode_latents(latents)  # [1, 3, T, H, W] in [-1, 1]
        if not torch.isfinite(video).all():
            raise GuidanceDivergedError("The decoded video has NaN/inf values; lower the guidance strength.")
        frames = ((video[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        return MojitoPipelineOutput(
            frames=frames, boxes=boxes, intensity=mim_level, guided=guided, energies=energies, attention=attention,
            seconds=time.perf_counter() - started,
        )


def mojito_from_manager(manager) -> MojitoPipeline:
    """The preset's ``text-to-video`` model as a :class:`MojitoPipeline` (with the MIM when the pack has one)."""
    from ..models.presets import get_source

    base = manager.get("text-to-video")
    source = get_source(manager.preset, "text-to-video")
    motion_encoder = None
    folder = source.path / MOTION_ENCODER_FOLDER if source.local else None
    if folder is not None and folder.is_dir():
        motion_encoder = MotionIntensityEncoder.from_pretrained(folder, use_safetensors=True).to(base.device)
    return MojitoPipeline.from_base(base, motion_encoder)
