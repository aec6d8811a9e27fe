"""ShapesWorld training scenes as arrays, generated once per run."""

from __future__ import annotations

from multiprocessing import get_context

import numpy as np
from tqdm.auto import tqdm

from ..shapesworld import sample_scene
from ..training import SceneArrays


def _scene(args: tuple[int, int]) -> tuple[np.ndarray, str]:
    seed, size = args
    scene = sample_scene(seed, size=size, split="train")
    return scene.image, scene.caption


def build_scene_arrays(num_scenes: int, size: int, workers: int = 2) -> SceneArrays:
    """Render ``num_scenes`` training scenes (seed i for scene i) with a progress bar."""
    jobs = [(seed, size) for seed in range(num_scenes)]
    images = np.empty((num_scenes, size, size, 3), dtype=np.uint8)
    captions: list[str] = []
    if workers > 1 and num_scenes >= 1000:
        with get_context("fork").Pool(workers) as pool:
            results = pool.imap(_scene, jobs, chunksize=256)
            for i, (image, caption) in enumerate(tqdm(results, total=num_scenes, desc="ShapesWorld scenes")):
                images[i] = image
                captions.append(caption)
    else:
        for i, job in enumerate(tqdm(jobs, desc="ShapesWorld scenes")):
            images[i], caption = _scene(job)
            captions.append(caption)
    return SceneArrays(images, captions)
