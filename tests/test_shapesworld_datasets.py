"""Torch datasets of ShapesWorld: documented shapes, dtypes, ranges and determinism."""

import pytest
import torch
from torch.utils.data import DataLoader

from pipelines.errors import InvalidInputError
from pipelines.shapesworld import (
    CONDITION_TYPES,
    ShapesConditionDataset,
    ShapesImageDataset,
    ShapesVideoDataset,
    is_heldout,
    parse_caption,
    sample_scene,
)
from pipelines.shapesworld.captions import caption_words
from pipelines.shapesworld.scene import derive_seed


def test_image_dataset_items():
    dataset = ShapesImageDataset(8, size=32, seed=3)
    item = dataset[5]
    assert item["pixel_values"].shape == (3, 32, 32) and item["pixel_values"].dtype == torch.float32
    assert item["pixel_values"].min() >= -1.0 and item["pixel_values"].max() <= 1.0
    assert item["index"] == 5 and item["caption"] == sample_scene(derive_seed(3, 5), 32).caption
    assert torch.equal(dataset[5]["pixel_values"], item["pixel_values"])
    assert dataset[-1]["index"] == 7
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and len(batch["caption"]) == 4
    with pytest.raises(IndexError):
        dataset[8]


def test_image_dataset_splits():
    test = ShapesImageDataset(20, split="test")
    for index in range(20):
        assert len(parse_caption(test[index]["caption"]).objects) >= 2
    train = ShapesImageDataset(50, split="train")
    assert not any(is_heldout(parse_caption(train[i]["caption"]).objects) for i in range(50))
    with pytest.raises(InvalidInputError):
        ShapesImageDataset(4, split="dev")
    with pytest.raises(InvalidInputError):
        ShapesImageDataset(0)


def test_video_dataset_items():
    dataset = ShapesVideoDataset(3, size=32, n_frames=6, seed=1)
    item = dataset[2]
    assert item["pixel_values"].shape == (6, 3, 32, 32) and item["pixel_values"].dtype == torch.float32
    assert item["boxes"].shape == (6, 4) and item["boxes"].dtype == torch.float32
    assert 1 <= item["intensity"] <= 10 and item["caption"].startswith(item["phrase"])
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["pixel_values"].shape == (3, 6, 3, 32, 32) and batch["intensity"].shape == (3,)
    with pytest.raises(InvalidInputError):
        ShapesVideoDataset(3, n_frames=0)


def test_condition_dataset_items():
    dataset = ShapesConditionDataset(6, size=64, seed=2)
    for index in range(6):
        item = dataset[index]
        assert item["pixel_values"].shape == (3, 64, 64)
        assert list(item["conditions"]) == list(CONDITION_TYPES)
        for condition in item["conditions"].values():
            assert condition.shape == (3, 64, 64) and condition.dtype == torch.float32
            assert condition.min() >= 0.0 and condition.max() <= 1.0
        count = item["object_count"]
        masks, words, positions = item["object_masks"], item["object_words"], item["object_word_positions"]
        assert masks.shape == (3, 64, 64) and positions.shape == (3, 2) and len(words) == 3
        assert all(masks[k].sum() > 0 for k in range(count)) and masks[count:].sum() == 0
        caption = caption_words(item["caption"])
        for k in range(count):
            assert " ".join(caption[int(p)] for p in positions[k]) == words[k]
        assert all(w == "" for w in words[count:]) and (positions[count:] == -1).all()
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["conditions"]["depth"].shape == (2, 3, 64, 64) and batch["object_masks"].shape == (2, 3, 64, 64)
    only = ShapesConditionDataset(2, types=("sketch",))[0]
    assert list(only["conditions"]) == ["sketch"]
    with pytest.raises(InvalidInputError):
        ShapesConditionDataset(2, types=("normals",))
