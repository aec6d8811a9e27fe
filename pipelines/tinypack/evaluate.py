"""Generate from the tiny text-to-image model and judge every sample with the ShapesWorld detector.

Shared by ``bench/tiny_pack.py`` and the About tab's sample grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.tokenizers import warn_unknown_words
from ..attention.guidance import GuidanceConfig
from ..attention.layout import LayoutGuidance
from ..shapesworld import COLOURS, SHAPES, Verdict, caption_verdict, detect, sample_scene
from ..shapesworld.layout import relation_layout

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 3.0
# Training uses scene seeds 0..num_scenes-1; seeds from here on are unseen.
UNSEEN_SEEDS = 10_000_000


@dataclass
class JudgedSample:
    """One generated image, the caption it was asked for and the detector's verdict."""

    image: np.ndarray  # uint8 [H, W, 3]
    caption: str
    seed: int
    verdict: Verdict

    @property
    def label(self) -> str:
        """A one-line verdict for people: what was right and what was not."""
        v = self.verdict
        parts = [("colour", v.colour_ok), ("shape", v.shape_ok)]
        if len(v.spec.objects) > 1:
            parts.append(("all objects", v.both_present))
        if v.relation_ok is not None:
            parts.append(("relation", v.relation_ok))
        marks = " ".join(f"{'✓' if good else '✗'} {name}" for name, good in parts)
        return f"{self.caption} — {marks}"


@torch.no_grad()
def generate_images(
    pipe,
    captions: list[str],
    seeds: list[int],
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    batch_size: int = 8,
    progress: bool = True,
    layout: GuidanceConfig | None = None,
) -> list[np.ndarray]:
    """Images for ``captions[i]`` with seed ``seeds[i]`` (one generator per image, so batching changes nothing).

    ``layout``: guide the two objects of relation captions into boxes on their sides
    (:mod:`pipelines.attention.layout`, eq. 10.5/10.7 on one frame); other captions are not guided.
    Words the tokenizer does not know raise an :class:`~pipelines.errors.UnknownWordsWarning`.
    """
    warn_unknown_words(pipe.tokenizer, captions)
    images: list[np.ndarray] = []
    starts = range(0, len(captions), batch_size)
    for start in tqdm(starts, desc="generating", disable=not progress):
        chunk = slice(start, start + batch_size)
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[chunk]]
        guided = {}
        if layout is not None:
            prompts = captions[chunk]
            guided = dict(callback_on_step_end=LayoutGuidance([relation_layout(c) for c in prompts], prompts,
                                                              pipe.tokenizer, layout),
                          callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
        output = pipe(
            captions[chunk], num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            generator=generators, output_type="np", **guided,
        )
        images.extend((np.clip(output.images, 0, 1) * 255).round().astype(np.uint8))
    return images


def judge(images: list[np.ndarray], captions: list[str], seeds: list[int]) -> list[JudgedSample]:
    return [JudgedSample(image, caption, seed, caption_verdict(image, caption))
            for image, caption, seed in zip(images, captions, seeds)]


def fresh_samples(pipe, n: int, seed: int, **kwargs) -> list[JudgedSample]:
    """``n`` samples for captions of scenes the pack never saw (seeds past training's), judged; for the About grid."""
    captions = [sample_scene(UNSEEN_SEEDS + seed + i).caption for i in range(n)]
    seeds = [seed + i for i in range(n)]
    return judge(generate_images(pipe, captions, seeds, progress=False, **kwargs), captions, seeds)


def single_object_captions() -> list[str]:
    """Every single-object caption: 'a red circle', 'an orange square', ..."""
    from ..shapesworld.vocab import article

    return [f"{article(colour)} {colour} {shape}" for colour in COLOURS for shape in SHAPES]


def primary_detection_scores(images: list[np.ndarray], captions: list[str]) -> tuple[float, float]:
    """Colour and shape accuracy of the largest detected object against a one-object caption."""
    colour_right = shape_right = 0
    for image, caption in zip(images, captions):
        colour, shape = caption.split()[-2:]
        detections = detect(image)
        if detections:
            main = max(detections, key=lambda d: d.area)
            colour_right += main.colour == colour
            shape_right += main.shape == shape
    return colour_right / len(images), shape_right / len(images)


@torch.no_grad()
def word_attention_in_mask(pipe, scenes: list, timesteps: tuple[int, ...] = (200, 500), seed: int = 0) -> dict[str, float]:
    """Do the words point at things? For each object of each scene, the share of its words' cross-attention mass
    (eq. 9.3's unified map: colour and shape tokens, heads and layers averaged, on the 16x16 grid) that falls
    inside its mask, with the scene's own image noised to each of ``timesteps``; and the chance level, the
    mask's share of the grid. Returns ``{"mass": .., "chance": .., "objects": n}`` (means over objects and steps).
    """
    from ..attention import CrossAttentionControl
    from ..attention.supervision import phrase_token_sets, segment_attention
    from .data import MAX_OBJECTS

    generator = torch.Generator().manual_seed(seed)
    max_tokens = pipe.tokenizer.model_max_length
    masses, chances = [], []
    for scene in scenes:
        pixels = torch.from_numpy(scene.image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer(scene.caption, padding="max_length", max_length=max_tokens, truncation=True,
                             return_tensors="pt").input_ids
        embeddings = pipe.text_encoder(ids)[0]
        words = [obj.spec.words for obj in scene.objects[:MAX_OBJECTS]]
        sets, valid = phrase_token_sets(pipe.tokenizer, scene.caption, words, max_tokens, MAX_OBJECTS)
        side = latents.shape[-1]
        masks = torch.stack([torch.from_numpy(obj.mask).float() for obj in scene.objects[:MAX_OBJECTS]])
        masks = torch.nn.functional.adaptive_avg_pool2d(masks[None], side)[0]  # [J, side, side]
        for t in timesteps:
            noise = torch.randn(latents.shape, generator=generator)
            noisy = pipe.scheduler.add_noise(latents, noise, torch.tensor([t]))
            with CrossAttentionControl(pipe.unet, keep_steps="last") as control:
                pipe.unet(noisy, torch.tensor([t]), encoder_hidden_states=embeddings)
            maps = [control.store.maps_for(name) for name in control.layers]
            attention = segment_attention(maps, sets[None], (side, side))[0]  # [J, side, side]
            for j in range(len(words)):
                if valid[j]:
                    total = attention[j].sum().clamp(min=1e-12)
                    masses.append(float((attention[j] * masks[j]).sum() / total))
                    chances.append(float(masks[j].mean()))
    return {"mass": float(np.mean(masses)), "chance": float(np.mean(chances)), "objects": len(masses) // len(timesteps)}
