"""FlexEControlPipeline: text + 1-4 condition maps -> an image, through one shared copied encoder.

Fusion of several conditions (thesis 9.2; Fig. 9.1): every condition map runs
through the *same* copied encoder with its own type's fast weights ``u, v``
and the shared ``H`` (eq. 9.2); the active maps are stacked along the batch
and go through the encoder in one pass, each chunk with its type's weights
(repeated types, e.g. two canny maps, use the same weights). At denoising step
``i`` of ``N`` a condition is active when ``start <= i / N < end``; the
residuals of the active conditions are summed, each multiplied by its weight,
and added to the frozen UNet's skip connections and middle block
(:func:`fuse_residuals`). With no
condition the pipeline generates from the text alone and says so.
Classifier-free guidance applies the control to both halves of the batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..attention import token_indices
from ..attention.regions import DEFAULT_STRENGTH, Region, RegionalAttention
from ..errors import InvalidInputError
from ..models.tokenizers import warn_unknown_words
from ..shapesworld.vocab import COLOURS, SHAPES
from .conditions import MAX_CONDITIONS, Condition, map_tensor, prepare_conditions
from .encoder import CopiedEncoder, load_copied_encoder
from .metrics import drawn_objects

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 5.0

Residuals = tuple[tuple[torch.Tensor, ...], torch.Tensor]


def fuse_residuals(residuals: Sequence[Residuals], weights: Sequence[float]) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    """Weighted sum of several conditions' ``(down residuals, mid residual)``; ``(None, None)`` when there are none."""
    if not residuals:
        return None, None
    down = [sum(w * r[0][level] for w, r in zip(weights, residuals)) for level in range(len(residuals[0][0]))]
    mid = sum(w * r[1] for w, r in zip(weights, residuals))
    return down, mid


_OBJECT_PHRASE = re.compile(r"\b(?:(" + "|".join(COLOURS) + r")\s+)?(" + "|".join(SHAPES) + r")\b", re.IGNORECASE)


def object_regions(prompt: str, conditions: Sequence[tuple[str, np.ndarray]], tokenizer) -> list[Region]:
    """Tie each object phrase of the prompt ("red circle") to the drawn object of that shape.

    The drawn objects come from the condition maps alone
    (:func:`.metrics.drawn_objects`: strokes and segments with the shape the
    detector gives them). A phrase is bound when its shape is drawn exactly as
    many times as the prompt names it and that is once; anything ambiguous
    (two circles, an unnamed shape) stays unbound, so the model decides.
    """
    drawn = [obj for kind, image in conditions if kind in ("canny", "sketch", "segmentation")
             for obj in drawn_objects(kind, image)]
    phrases = [(m.group(0), m.group(2).lower()) for m in _OBJECT_PHRASE.finditer(prompt)]
    regions, seen = [], {}
    for text, shape in phrases:
        occurrence = seen.get(text.lower(), 0)
        seen[text.lower()] = occurrence + 1
        same_shape = [obj for obj in drawn if obj.shape == shape]
        if len(same_shape) != 1 or sum(s == shape for _, s in phrases) != 1:
            continue
        try:
            tokens = token_indices(tokenizer, prompt, text, occurrence=occurrence)
        except InvalidInputError:
            continue
        regions.append(Region(tokens, torch.from_numpy(same_shape[0].mask.astype(np.float32))))
    return regions


@dataclass
class ConditionBatch:
    """One condition slot for a batch of images: a type, maps ``[B, 3, H, W]`` in [0, 1], weight and active span."""

    type: str
    maps: torch.Tensor
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def active(self, step: int, num_steps: int) -> bool:
        return self.start <= step / num_steps < self.end


@dataclass
class FlexEControlOutput:
    """Generated images and what the pipeline did with the conditions."""

    # uint8 [B, H, W, 3]
    images: np.ndarray
    # The conditions as used (checked, resized to the image size).
    conditions: list[Condition] = field(default_factory=list)
    # Messages for people: text-only fallback, resized maps.
    notes: list[str] = field(default_factory=list)


class FlexEControlPipeline:
    """A frozen text-to-image model (tokenizer, text encoder, vae, unet, scheduler) steered by a copied encoder."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, encoder: CopiedEncoder) -> None:
        self.vae, self.text_encoder, self.tokenizer, self.unet = vae, text_encoder, tokenizer, unet
        self.scheduler, self.encoder = scheduler, encoder
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        for module in (vae, text_encoder, unet, encoder):
            module.requires_grad_(False).eval()

    @classmethod
    def from_pretrained(cls, base, encoder_folder: str | Path) -> "FlexEControlPipeline":
        """From a loaded ``StableDiffusionPipeline`` ``base`` and a folder saved by :meth:`CopiedEncoder.save`."""
        encoder = load_copied_encoder(encoder_folder, base.unet, base.vae_scale_factor).to(base.device, base.unet.dtype)
        return cls(base.vae, base.text_encoder, base.tokenizer, base.unet, base.scheduler, encoder)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def check_inputs(self, prompt: str, conditions: Sequence[Condition], num_inference_steps: int, guidance_scale: float):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError(f"The prompt must be non-empty text, got {prompt!r}.")
        if not 1 <= int(num_inference_steps) <= 1000:
            raise InvalidInputError(f"num_inference_steps must be in [1, 1000], got {num_inference_steps}.")
        if not 0.0 <= float(guidance_scale) <= 30.0:
            raise InvalidInputError(f"guidance_scale must be in [0, 30], got {guidance_scale}.")
        if len(conditions) > MAX_CONDITIONS:
            raise InvalidInputError(f"{len(conditions)} conditions were given; at most {MAX_CONDITIONS} are supported.")
        return prepare_conditions(conditions, self.image_size)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], negative: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings ``[B, tokens, width]`` of the prompts and of the negative (unconditional) prompt."""
        warn_unknown_words(self.tokenizer, list(prompts))
        def encode(texts):
            ids = self.tokenizer(list(texts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids.to(self.device)
            return self.text_encoder(ids)[0]
        return encode(prompts), encode([negative] * len(prompts))

    def __call__(
        self,
        prompt: str,
        conditions: Sequence[Condition] = (),
        negative_prompt: str = "",
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        generator: torch.Generator | None = None,
        progress: bool = True,
        callback_on_step_end: Callable[[int, int], None] | None = None,
        conditional_control: bool = True,
        bind_objects: bool = True,
    ) -> FlexEControlOutput:
        # 1. Check inputs; maps resized to the image size, notes for people
        prepared, notes = self.check_inputs(prompt, conditions, num_inference_steps, guidance_scale)
        # 2. Condition slots (batch of one image)
        slots = [ConditionBatch(c.type, map_tensor(c.image)[None], c.weight, c.start, c.end) for c in prepared]
        # 3-7. Encode the prompt, denoise, decode
        regions = [object_regions(prompt, [(c.type, c.image) for c in prepared], self.tokenizer)] if bind_objects else None
        images = self.generate([prompt], slots, [generator] if generator is not None else None, negative_prompt,
                               num_inference_steps, guidance_scale, progress, callback_on_step_end,
                               conditional_control, regions)
        return FlexEControlOutput(images=images, conditions=prepared, notes=notes)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        slots: Sequence[ConditionBatch],
        generators: Sequence[torch.Generator] | None = None,
        negative_prompt: str = "",
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        progress: bool = True,
        callback_on_step_end: Callable[[int, int], None] | None = None,
        conditional_control: bool = True,
        regions: Sequence[list[Region]] | None = None,
        region_strength: float = DEFAULT_STRENGTH,
    ) -> np.ndarray:
        """A batch of images, one per prompt; ``slots[k].maps[b]`` is image ``b``'s ``k``-th condition (checked maps).

        ``conditional_control``: with classifier-free guidance, the control
        acts on the text half only (diffusers ControlNet's ``guess_mode``
        without its scale ramp), so guidance amplifies it. ``regions[b]``:
        phrase-to-region ties for prompt ``b`` (:func:`object_regions`),
        applied by :class:`~pipelines.attention.regions.RegionalAttention`.
        """
        batch, device, dtype = len(prompts), self.device, self.unet.dtype
        for slot in slots:
            if slot.maps.shape[0] != batch:
                raise InvalidInputError(f"A condition slot has {slot.maps.shape[0]} maps for {batch} prompts.")
        # 3. Encode the prompt (unconditional half first, as diffusers does)
        text, uncond = self.encode_prompts(prompts, negative_prompt)
        guided = guidance_scale > 1.0
        embeddings = torch.cat([uncond, text]) if guided else text
        # 4. Timesteps and initial latents (one generator per image, so batching changes nothing)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        side = int(self.unet.config.sample_size)
        shape = (1, self.unet.config.in_channels, side, side)
        generators = generators or [None] * batch
        latents = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]).to(device, dtype)
        latents = latents * self.scheduler.init_noise_sigma
        # 5. Condition embeddings, computed once (the maps do not change between steps)
        maps = [self.encoder.embed(s.maps.to(device, dtype)) for s in slots]
        if guided and not conditional_control:
            maps = [torch.cat([m, m]) for m in maps]
        # 6. Denoising loop with the fused control residuals
        timesteps = self.scheduler.timesteps
        bound = regions is not None and any(regions)
        rows = ([[]] * batch + list(regions) if guided else list(regions)) if bound else None
        with self.encoder.embedded_inputs(), (RegionalAttention(self.unet, rows, region_strength) if bound
                                              else nullcontext()):
            latents = self._denoise(latents, timesteps, slots, maps, embeddings, guided, guidance_scale, progress,
                                    callback_on_step_end, conditional_control)
        # 7. Decode
        pixels = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        pixels = ((pixels.float().clamp(-1, 1) + 1.0) * 127.5).round().byte()
        return pixels.permute(0, 2, 3, 1).cpu().numpy()

    def _denoise(self, latents, timesteps, slots, maps, embeddings, guided, guidance_scale, progress,
                 callback_on_step_end, conditional_control) -> torch.Tensor:
        only_text_half = guided and conditional_control
        for i, t in enumerate(tqdm(timesteps, desc="FlexEControl", disable=not progress)):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            active = [(s, m) for s, m in zip(slots, maps) if s.active(i, len(timesteps))]
            control_input, control_text = (model_input.chunk(2)[1], embeddings.chunk(2)[1]) if only_text_half else (
                model_input, embeddings)
            residuals = self.encoder(control_input, t, control_text, [(s.type, m) for s, m in active]) if active else []
            down, mid = fuse_residuals(residuals, [s.weight for s, _ in active])
            if only_text_half and down is not None:
                # The unconditional half gets no control, so guidance pushes toward the conditions too.
                down = [torch.cat([torch.zeros_like(d), d]) for d in down]
                mid = torch.cat([torch.zeros_like(mid), mid])
            noise = self.unet(model_input, t, encoder_hidden_states=embeddings, down_block_additional_residuals=down,
                              mid_block_additional_residual=mid).sample
            if guided:
                noise_uncond, noise_text = noise.chunk(2)
                noise = noise_uncond + guidance_scale * (noise_text - noise_uncond)
            latents = self.scheduler.step(noise, t, latents).prev_sample
            if callback_on_step_end is not None:
                callback_on_step_end(i, len(timesteps))
        return latents
