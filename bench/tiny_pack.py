"""Tiny pack quality and speed, judged by the ShapesWorld detector (issue: tiny pack).

Prints JSON lines: single-object colour and shape accuracy, two-object
both-present rate and relation accuracy (left/right/above/below), the same two
rows with relation layout guidance (``pipelines.attention.layout``: each object's
cross-attention guided into a box on its side, same captions and seeds), tiny-CLIP
zero-shot top-1 on held-out single-object scenes, seconds per 64x64 image at
25 steps for the pack and for a random-weight model of equal size, and the time
of a layout-guided relation caption over an unguided one; ``word_attention_in_mask``: the share of each object's
words' cross-attention inside its mask on held-out two-object scenes (chance: the mask's share of the image);
``relation_context_similarity`` / ``relation_attention_shift``: whether the relation word reaches the object
words' text features and moves their attention at high noise (``evaluate.relation_steering``).
Run: ``.venv/bin/python bench/tiny_pack.py [--n 200] [--parts ...]`` on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from transformers import CLIPModel, CLIPProcessor  # noqa: E402

from bench.common import emit, machine, timer  # noqa: E402
from pipelines.models import TINY_PACK_DIR  # noqa: E402
from pipelines.attention.layout import DEFAULT_IMAGE_GUIDANCE  # noqa: E402
from pipelines.shapesworld import RELATIONS, sample_scene  # noqa: E402
from pipelines.shapesworld.vocab import article  # noqa: E402
from pipelines.tinypack.evaluate import (  # noqa: E402
    UNSEEN_SEEDS,
    generate_images,
    judge,
    primary_detection_scores,
    relation_steering,
    single_object_captions,
    word_attention_in_mask,
)

BENCH = "tiny_pack"


def two_object_captions(n: int, rng: np.random.Generator) -> list[str]:
    """Random 'a <colour> <shape> <relation> a <colour> <shape>' captions, two different colours."""
    from pipelines.shapesworld import COLOURS, SHAPES

    colours, captions = list(COLOURS), []
    for _ in range(n):
        a, b = rng.choice(len(colours), size=2, replace=False)
        shape_a, shape_b = rng.choice(SHAPES), rng.choice(SHAPES)
        relation = RELATIONS[rng.integers(len(RELATIONS))]
        captions.append(
            f"{article(colours[a])} {colours[a]} {shape_a} {relation} {article(colours[b])} {colours[b]} {shape_b}"
        )
    return captions


def seconds_per_image(pipe, repeats: int = 5, caption: str = "a red circle", **kwargs) -> float:
    generate_images(pipe, [caption], [0], progress=False, **kwargs)  # warm-up
    with timer() as elapsed:
        for seed in range(repeats):
            generate_images(pipe, [caption], [seed], progress=False, **kwargs)
    return elapsed() / repeats


def relation_rows(samples, suffix: str = "") -> None:
    """Both-present rate and relation accuracy (overall and per relation) of judged two-object samples."""
    present = [s for s in samples if s.verdict.both_present]
    emit(BENCH, f"two_object_both_present{suffix}", round(len(present) / len(samples), 4), n=len(samples))
    for relation in RELATIONS:
        rows = [s for s in present if s.verdict.spec.relation == relation]
        emit(BENCH, f"relation_accuracy_by_relation{suffix}",
             round(np.mean([s.verdict.relation_ok for s in rows]), 4) if rows else None, relation=relation, n=len(rows))
    emit(BENCH, f"relation_accuracy{suffix}",
         round(float(np.mean([s.verdict.relation_ok for s in present])), 4) if present else 0.0,
         n=len(present), bar=0.60, note="among samples where both objects are present")
    emit(BENCH, f"relation_accuracy_all_samples{suffix}",
         round(sum(bool(s.verdict.relation_ok) for s in samples) / len(samples), 4), n=len(samples))


def random_twin(pipe: StableDiffusionPipeline) -> StableDiffusionPipeline:
    """A pipeline with the same configs and fresh random weights."""
    torch.manual_seed(0)
    return StableDiffusionPipeline(
        vae=type(pipe.vae).from_config(pipe.vae.config), unet=type(pipe.unet).from_config(pipe.unet.config),
        text_encoder=type(pipe.text_encoder)(pipe.text_encoder.config), tokenizer=pipe.tokenizer,
        scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, image_encoder=None,
        requires_safety_checker=False,
    )


@torch.no_grad()
def clip_zero_shot(clip_dir: Path, n: int, seed: int) -> float:
    """Top-1 of the tiny CLIP over all single-object captions, on one-object scenes it never saw.

    Training used seeds below ``UNSEEN_SEEDS``; these scenes use seeds from it on.
    """
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir, local_files_only=True)
    candidates = single_object_captions()
    scenes = [sample_scene(UNSEEN_SEEDS + seed + i, n_objects=1) for i in range(n)]
    inputs = processor(text=candidates, images=[s.image for s in scenes], return_tensors="pt", padding=True)
    scores = model(**inputs).logits_per_image  # [images, captions]
    predicted = [candidates[i] for i in scores.argmax(dim=1).tolist()]
    truth = [s.caption for s in scenes]
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200, help="samples per row")
    parser.add_argument("--pack", type=Path, default=TINY_PACK_DIR)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--parts", default="single,relation,layout,attention,steering,clip,speed",
                        help="comma-separated subset of single, relation, layout, attention, steering, clip, speed")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    emit(BENCH, "machine", machine())
    pipe = StableDiffusionPipeline.from_pretrained(args.pack / "shapes-sd", local_files_only=True, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(args.seed)

    singles = single_object_captions()
    seeds = [args.seed + i for i in range(args.n)]
    if "single" in parts:
        captions = [singles[i % len(singles)] for i in range(args.n)]
        colour, shape = primary_detection_scores(generate_images(pipe, captions, seeds), captions)
        emit(BENCH, "single_object_colour_accuracy", round(colour, 4), n=args.n, bar=0.90)
        emit(BENCH, "single_object_shape_accuracy", round(shape, 4), n=args.n, bar=0.75)

    captions = two_object_captions(args.n, rng)
    if "relation" in parts:
        relation_rows(judge(generate_images(pipe, captions, seeds), captions, seeds))
    if "layout" in parts:
        emit(BENCH, "layout_guidance", None, strength=DEFAULT_IMAGE_GUIDANCE.strength, steps=DEFAULT_IMAGE_GUIDANCE.steps,
             layers=list(DEFAULT_IMAGE_GUIDANCE.layers))
        guided = generate_images(pipe, captions, seeds, layout=DEFAULT_IMAGE_GUIDANCE)
        relation_rows(judge(guided, captions, seeds), suffix="_layout_guided")

    if "attention" in parts:
        scenes = [sample_scene(UNSEEN_SEEDS + args.seed + i, n_objects=2) for i in range(args.n)]
        timesteps = (200, 500, 800)
        result = word_attention_in_mask(pipe, scenes, timesteps, seed=args.seed)
        emit(BENCH, "word_attention_in_mask", round(result["mass"], 4), chance=round(result["chance"], 4),
             objects=result["objects"], timesteps=list(timesteps),
             what="share of each object's words' cross-attention mass inside its mask, two-object held-out scenes")

    if "steering" in parts:
        steering = relation_steering(pipe, n=max(4, args.n // 6), seed=args.seed)
        emit(BENCH, "relation_context_similarity", round(steering["context_similarity"], 4), pairs=steering["pairs"],
             what="cosine between an object word's text feature in 'A rel B' and 'A opposite B' (1: the relation "
                  "does not reach the object words)")
        emit(BENCH, "relation_attention_shift", round(steering["attention_shift"], 4),
             right_way=round(steering["attention_shift_right"], 3), pairs=steering["pairs"], timestep=900,
             what="subject words' attention centroid moved along the axis from 'A left of B' to 'A right of B' "
                  "(above to below), image widths; 0: the relation does not steer attention")

    if "clip" in parts:
        emit(BENCH, "clip_zero_shot_top1", round(clip_zero_shot(args.pack / "shapes-clip", args.n, args.seed), 4),
             n=args.n, bar=0.80, candidates=len(singles))

    if "speed" in parts:
        trained = seconds_per_image(pipe)
        random = seconds_per_image(random_twin(pipe))
        emit(BENCH, "seconds_per_image_64px_25_steps", round(trained, 4), bar=1.0, guidance=3.0)
        emit(BENCH, "seconds_per_image_random_twin", round(random, 4), ratio=round(trained / random, 3))
        relation = captions[0]
        plain = seconds_per_image(pipe, caption=relation)
        laid_out = seconds_per_image(pipe, caption=relation, layout=DEFAULT_IMAGE_GUIDANCE)
        emit(BENCH, "seconds_per_image_layout_guided", round(laid_out, 4), unguided=round(plain, 4),
             ratio=round(laid_out / plain, 3), caption=relation)


if __name__ == "__main__":
    main()
