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


@torch.no_grad()
def relation_steering(pipe, n: int = 16, timestep: int = 900, seed: int = 0) -> dict[str, float]:
    """Does the relation word reach the object words and move their attention? Two diagnostics over ``n`` caption
    pairs "A <rel> B" / "A <opposite> B" (both axes), at ``timestep`` from the same noise:

    * ``context_similarity``: mean cosine between an object word's text feature in the two captions (1.0: the
      relation never reaches the object words, so no attention can tell the captions apart);
    * ``attention_shift``: how far the subject's words' attention centroid (eq. 9.3's map, 16x16) moves along the
      relation's axis from "A left of B" to "A right of B" (or above to below), in image widths; positive is the
      right way (0 for a model that ignores the relation; boxes on opposite halves would give about 0.5);
      ``attention_shift_right``: the share of pairs moving the right way (chance 0.5).
    """
    from ..attention import CrossAttentionControl
    from ..attention.supervision import phrase_token_sets, segment_attention, segment_features
    from ..shapesworld.vocab import article

    rng = np.random.default_rng(seed)
    colours, tokenizer = list(COLOURS), pipe.tokenizer
    max_tokens = tokenizer.model_max_length
    side = pipe.unet.config.sample_size
    grid = torch.linspace(0.0, 1.0, side)
    similarities, shifts = [], []
    for k in range(n):
        a, b = rng.choice(len(colours), size=2, replace=False)
        words = [f"{colours[a]} {rng.choice(SHAPES)}", f"{colours[b]} {rng.choice(SHAPES)}"]
        for first, second, axis in (("left of", "right of", 1), ("above", "below", 0)):
            captions = [f"{article(words[0])} {words[0]} {relation} {article(words[1])} {words[1]}"
                        for relation in (first, second)]
            ids = tokenizer(captions, padding="max_length", max_length=max_tokens, truncation=True,
                            return_tensors="pt").input_ids
            text = pipe.text_encoder(ids)[0]
            sets = torch.stack([phrase_token_sets(tokenizer, c, words, max_tokens, 2)[0] for c in captions])
            features = segment_features(text, sets)  # [2, J, C]
            similarities.append(float(torch.nn.functional.cosine_similarity(features[0], features[1], dim=-1).mean()))
            noise = torch.randn((1, pipe.unet.config.in_channels, side, side),
                                generator=torch.Generator().manual_seed(seed + k)).repeat(2, 1, 1, 1)
            with CrossAttentionControl(pipe.unet, keep_steps="last") as control:
                pipe.unet(noise, torch.tensor([timestep] * 2), encoder_hidden_states=text)
            maps = [control.store.maps_for(name).float() for name in control.layers]
            attention = segment_attention(maps, sets, (side, side))[:, 0]  # subject, [2, side, side]
            profile = attention.sum(dim=2 - axis)  # mass along the axis, [2, side]
            centroid = (profile * grid).sum(-1) / profile.sum(-1)
            shifts.append(float(centroid[1] - centroid[0]))
    shifts_array = np.array(shifts)
    return {"context_similarity": float(np.mean(similarities)), "attention_shift": float(shifts_array.mean()),
            "attention_shift_right": float((shifts_array > 0).mean()), "pairs": len(shifts)}
