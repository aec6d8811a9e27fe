"""`python -m pipelines.shapesworld`: writes samples and the benchmark; bad arguments exit 2 in one line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.shapesworld import ShapesImageDataset, load_winoground
from pipelines.shapesworld.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.shapesworld", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_sample_images_and_benchmark(tmp_path):
    out = tmp_path / "images"
    result = run("sample", "--n", "3", "--out", str(out), "--size", "32", "--seed", "4", "--split", "test")
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["kind"] == "image" and len(index["samples"]) == 3
    dataset = ShapesImageDataset(3, size=32, seed=4, split="test")
    for entry in index["samples"]:
        truth = json.loads((out / entry["truth"]).read_text())
        image = np.asarray(Image.open(out / entry["file"]))
        assert image.shape == (32, 32, 3)
        assert truth["caption"] == entry["caption"] == dataset[entry["index"]]["caption"]
        assert {"shape", "colour", "box", "depth"} <= set(truth["objects"][0])

    bench = tmp_path / "bench"
    result = run("benchmark", "--n", "5", "--out", str(bench))
    assert result.returncode == 0, result.stderr
    assert len(load_winoground(bench)) == 5


def test_sample_videos(tmp_path):
    result = run("sample", "--n", "2", "--out", str(tmp_path), "--video", "--frames", "5", "--size", "32")
    assert result.returncode == 0, result.stderr
    truth = json.loads((tmp_path / "00001.json").read_text())
    assert 1 <= truth["intensity"] <= 10 and len(truth["objects"][0]["boxes"]) == 5
    with Image.open(tmp_path / "00001.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (32, 32)


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--n", "0"], "--n"),
        (["sample", "--n", "2", "--size", "0"], "size"),
        (["sample", "--n", "2", "--split", "validation"], "--split"),
        (["sample", "--n", "two"], "--n"),
        (["sample", "--n", "2", "--video", "--frames", "1"], "n_frames"),
        (["benchmark", "--n", "-3"], "--n"),
        (["teleport"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and message in stderr
    assert not (tmp_path / "out").exists()


def test_unwritable_output_exits_2_in_a_real_process(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run("sample", "--n", "1", "--out", str(blocker / "inside"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot write") and result.stderr.count("\n") == 1
