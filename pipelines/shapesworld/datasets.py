"""Torch datasets of ShapesWorld samples, rendered on the fly and the same for the same index.

Item ``i`` of a dataset with seed ``s`` is sampled with ``scene.derive_seed(s, i)``.
Images are float32 ``[3, H, W]`` in [-1, 1] (diffusers' convention); condition
maps are float32 ``[3, H, W]`` in [0, 1] (ControlNet's convention, one-channel
maps repeated). Every field has a fixed shape, so the default collate works.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InvalidInputError
from .captions import object_word_positions
from .conditions import CONDITION_TYPES, condition_maps
from .scene import SPLITS, check_size, derive_seed, sample_scene
from .video import check_frames, sample_video
from .vocab import MAX_OBJECTS


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)


def condition_to_tensor(condition: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W]`` or ``[H, W, 3]`` -> float32 ``[3, H, W]`` in [0, 1]."""
    array = np.repeat(condition[..., None], 3, axis=2) if condition.ndim == 2 else condition
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div(255.0)


class _Sampled(Dataset):
    """Length, seed and index checks shared by the datasets."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInputError(f"A dataset has a positive number of items, got {n!r}.")
        self.n, self.size, self.seed = int(n), check_size(size), int(seed)

    def __len__(self) -> int:
        return self.n

    def item_seed(self, index: int) -> tuple[int, int]:
        """(index in 0..n-1, the seed of that item); negative indices count from the end."""
        if not -self.n <= index < self.n:
            raise IndexError(f"Index {index} is out of range for {self.n} items.")
        index %= self.n
        return index, derive_seed(self.seed, index)


class ShapesImageDataset(_Sampled):
    """Still scenes: ``{"pixel_values": [3, H, W] in [-1, 1], "caption": str, "index": int}``."""

    def __init__(self, n: int, size: int = 64, seed: int = 0, split: str = "train") -> None:
        super().__init__(n, size, seed)
        if split not in SPLITS:
            raise InvalidInputError(f"Unknown split {split!r}; expected one of {SPLITS}.")
        self.split = split

    def __getitem__(self, index: int) -> dict:
        index, seed = self.item_seed(index)
        scene = sample_scene(seed, self.size, split=self.split)
        return {"pixel_values": image_to_tensor(scene.image), "caption": scene.caption, "index": index}


class ShapesVideoDataset(_Sampled):
    """Videos: ``pixel_values`` float32 ``[T, 3, H, W]`` in [-1, 1] (frames first), ``caption``,
    ``intensity`` (measured level 1..10), ``boxes`` float32 ``[T, 4]`` of the moving object in
    pixels, ``phrase`` (its noun phrase, e.g. "a red circle") and ``index``."""

    def __init__(self, n: int, size: int = 64, n_frames: int = 16, seed: int = 0) -> None:
        super().__init__(n, size, seed)
        self.n_frames = check_frames(n_frames)

    def __getitem__(self, index: int) -> dict:
        index, seed = self.item_seed(index)
        video = sample_video(seed, self.size, self.n_frames)
        frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        return {
            "pixel_values": frames,
            "caption": video.caption,
            "intensity": video.intensity,
            "boxes": torch.from_numpy(video.objects[0].boxes),
            "phrase": video.objects[0].spec.phrase,
            "index": index,
        }


class ShapesConditionDataset(_Sampled):
    """Scenes with condition maps and per-object supervision for a cross-attention loss.

    Items: ``pixel_values`` ``[3, H, W]`` in [-1, 1]; ``caption``; ``conditions``,
    a dict from each of ``types`` to float32 ``[3, H, W]`` in [0, 1];
    ``object_masks`` float32 ``[3, H, W]`` (one per caption object in caption
    order, zero-padded to three); ``object_words`` three strings like
    ``"red circle"`` ("" for padding); ``object_word_positions`` int64 ``[3, 2]``,
    the indices of each object's colour and shape word in the caption's words
    (``captions.caption_words``; -1 for padding); ``object_count``; ``index``.
    PyTorch's default collate turns ``object_words`` into three tuples of batch-size strings.
    """

    def __init__(
        self,
        n: int,
        size: int = 64,
        seed: int = 0,
        types: Sequence[str] = CONDITION_TYPES,
        split: str = "train",
    ) -> None:
        super().__init__(n, size, seed)
        unknown = [t for t in types if t not in CONDITION_TYPES]
        if unknown or not types:
            raise InvalidInputError(f"Unknown or no condition types {list(types)}; expected some of {CONDITION_TYPES}.")
        if split not in SPLITS:
            raise InvalidInputError(f"Unknown split {split!r}; expected one of {SPLITS}.")
        self.types, self.split = tuple(types), split

    def __getitem__(self, index: int) -> dict:
        index, seed = self.item_seed(index)
        scene = sample_scene(seed, self.size, split=self.split)
        masks = torch.zeros(MAX_OBJECTS, self.size, self.size)
        positions = torch.full((MAX_OBJECTS, 2), -1, dtype=torch.int64)
        words = [""] * MAX_OBJECTS
        for k, (obj, position) in enumerate(zip(scene.objects, object_word_positions(scene.caption))):
            masks[k] = torch.from_numpy(obj.mask.astype(np.float32))
            positions[k] = torch.tensor(position)
            words[k] = obj.spec.words
        return {
            "pixel_values": image_to_tensor(scene.image),
            "caption": scene.caption,
            "conditions": {name: condition_to_tensor(m) for name, m in condition_maps(scene, self.types).items()},
            "object_masks": masks,
            "object_words": tuple(words),
            "object_word_positions": positions,
            "object_count": len(scene.objects),
            "index": index,
        }
