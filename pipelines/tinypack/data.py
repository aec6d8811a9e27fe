"""ShapesWorld training scenes as arrays, generated once per run."""

from __future__ import annotations

from multiprocessing import get_context

import numpy as np
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..shapesworld import sample_scene
from ..training import SceneArrays

# Objects per scene at most (ShapesWorld's scenes have 1-3).
MAX_OBJECTS = 3


def object_counts(num_scenes: int, weights: tuple[float, float, float] | None, seed: int) -> list[int | None]:
    """Objects in each training scene drawn with relative ``weights`` for 1, 2, 3 (None: the sampler's own choice)."""
    if weights is None:
        return [None] * num_scenes
    p = np.asarray(weights, dtype=float)
    if p.shape != (MAX_OBJECTS,) or (p < 0).any() or p.sum() <= 0:
        raise InvalidInputError(f"object_count_weights needs {MAX_OBJECTS} non-negative weights, got {weights}.")
    rng = np.random.default_rng([seed, 7])
    return [int(n) for n in rng.choice(np.arange(1, MAX_OBJECTS + 1), size=num_scenes, p=p / p.sum())]


def _scene(args: tuple[int, int, int | None, int]) -> tuple[np.ndarray, str, np.ndarray, list[str]]:
    seed, size, n_objects, mask_side = args
    scene = sample_scene(seed, size=size, n_objects=n_objects, split="train")
    masks = np.zeros((MAX_OBJECTS, mask_side, mask_side), dtype=np.uint8)
    cell = size // mask_side
    for j, obj in enumerate(scene.objects[:MAX_OBJECTS]):
        coverage = obj.mask.reshape(mask_side, cell, mask_side, cell).mean(axis=(1, 3))
        masks[j] = np.round(coverage * 255).astype(np.uint8)
    return scene.image, scene.caption, masks, [obj.spec.words for obj in scene.objects[:MAX_OBJECTS]]


def build_scene_arrays(num_scenes: int, size: int, object_count_weights: tuple[float, float, float] | None = None,
                       seed: int = 0, mask_side: int | None = None, workers: int = 2) -> SceneArrays:
    """Render ``num_scenes`` training scenes (seed i for scene i) with a progress bar.

    ``mask_side``: also keep each object's mask pooled to ``mask_side`` x ``mask_side`` (the latent grid).
    """
    counts = object_counts(num_scenes, object_count_weights, seed)
    side = mask_side or 1
    if size % side:
        raise InvalidInputError(f"mask_side {side} must divide the image size {size}.")
    jobs = [(i, size, counts[i], side) for i in range(num_scenes)]
    images = np.empty((num_scenes, size, size, 3), dtype=np.uint8)
    masks = np.empty((num_scenes, MAX_OBJECTS, side, side), dtype=np.uint8)
    captions: list[str] = []
    words: list[list[str]] = []
    if workers > 1 and num_scenes >= 1000:
        with get_context("fork").Pool(workers) as pool:
            results = pool.imap(_scene, jobs, chunksize=256)
            rows = tqdm(results, total=num_scenes, desc="ShapesWorld scenes")
            for i, (image, caption, object_masks, object_words) in enumerate(rows):
                images[i], masks[i] = image, object_masks
                captions.append(caption)
                words.append(object_words)
    else:
        for i, job in enumerate(tqdm(jobs, desc="ShapesWorld scenes")):
            images[i], caption, masks[i], object_words = _scene(job)
            captions.append(caption)
            words.append(object_words)
    if mask_side is None:
        return SceneArrays(images, captions)
    return SceneArrays(images, captions, masks, words)

