"""FlexEControl trains on a plain folder of pictures (what a user brings to train at SD 1.5 scale): captions
beside pictures, maps given or extracted, refused when incomplete."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dummies import dummy_tokenizer
from pipelines.errors import InvalidInputError
from pipelines.flexecontrol.__main__ import main
from pipelines.flexecontrol.conditions import map_at_size
from pipelines.flexecontrol.data import folder_control_scenes


def write_picture(path, colour, box):
    image = np.full((60, 80, 3), 30, np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = colour
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return image


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for k, (colour, box) in enumerate([((220, 30, 30), (10, 10, 40, 40)), ((30, 30, 220), (30, 5, 70, 50)),
                                       ((30, 200, 30), (5, 20, 60, 55))]):
        write_picture(folder / f"p{k}.png", colour, box)
        (folder / f"p{k}.txt").write_text(f"a photo of thing {k}\n")
        depth = np.zeros((60, 80), np.uint8)
        depth[box[1]:box[3], box[0]:box[2]] = 200
        cv2.imwrite(str(folder / f"p{k}.depth.png"), depth)
    edges = np.zeros((60, 80), np.uint8)
    edges[30, 10:70] = 255
    cv2.imwrite(str(folder / "p0.canny.png"), edges)  # one picture brings its own canny map
    return folder


def test_a_folder_becomes_scenes_with_given_and_extracted_maps(folder):
    scenes = folder_control_scenes(folder, 64, dummy_tokenizer(), 16)
    assert scenes.images.shape == (3, 64, 64, 3) and scenes.captions[1] == "a photo of thing 1"
    assert list(scenes.maps) == ["canny", "sketch", "depth"]  # no segmentation for every picture: left out
    given = map_at_size(cv2.imread(str(folder / "p0.canny.png"), cv2.IMREAD_GRAYSCALE), "canny", 64)
    assert np.array_equal(scenes.maps["canny"][0, 0].numpy(), given)
    assert scenes.maps["canny"][1].sum() > 0 and scenes.maps["depth"][2].max() > 150  # extracted / given
    assert not scenes.valid.any() and scenes.objects == [[], [], []] and scenes.token_sets.shape == (3, 3, 16)


def test_an_incomplete_folder_is_refused_with_what_is_missing(folder, tmp_path):
    (folder / "p2.txt").unlink()
    with pytest.raises(InvalidInputError, match="without a caption file.*p2.png"):
        folder_control_scenes(folder, 64, dummy_tokenizer(), 16)
    (folder / "p2.txt").write_text("a photo")
    (folder / "p1.depth.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match="p1.depth.png is not a picture"):
        folder_control_scenes(folder, 64, dummy_tokenizer(), 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="has no pictures"):
        folder_control_scenes(tmp_path / "empty", 64, dummy_tokenizer(), 16)


def test_training_on_a_folder_runs_without_the_shapesworld_only_terms(folder, tmp_path, capsys):
    out = tmp_path / "weights"
    assert main(["--data", str(folder), "--out", str(out), "--steps", "2", "--batch-size", "2"]) == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["config"]["data"] == str(folder) and report["total_steps"] == 2
    assert report["config"]["lambda_ca"] == 0.0 and report["config"]["pair_probability"] == 0.0
    assert np.isfinite(report["losses"]).all() and (out / "encoder_trainable.safetensors").is_file()
    assert main(["--data", str(folder), "--out", str(out), "--steps", "1", "--drawn-probability", "0.5"]) == 2
    assert "--drawn-probability 0" in capsys.readouterr().err
