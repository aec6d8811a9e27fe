"""The tiny-pack training script runs end to end (two steps per stage) and its output loads."""

import json

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPModel, CLIPProcessor

from pipelines.tinypack.__main__ import main
from pipelines.training import min_snr_weights


def test_two_step_training_writes_loadable_safetensors(tmp_path):
    report = main(["--smoke", "--out", str(tmp_path)])
    assert set(report["stages"]) == {"autoencoder", "text-to-image", "clip"}
    assert all(np.isfinite(stage["final_loss"]) for stage in report["stages"].values())
    assert json.loads((tmp_path / "training_report.json").read_text())["smoke"] is True
    assert (tmp_path / "loss_curves.png").stat().st_size > 0
    weights = {p.suffix for p in tmp_path.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt")}
    assert weights == {".safetensors"}

    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "shapes-sd", local_files_only=True, safety_checker=None)
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float32}  # stored as float16, loaded as float32
    image = pipe("a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)
    clip = CLIPModel.from_pretrained(tmp_path / "shapes-clip", local_files_only=True)
    processor = CLIPProcessor.from_pretrained(tmp_path / "shapes-clip", local_files_only=True)
    inputs = processor(text=["a red circle", "a blue square"], images=[image[0]], return_tensors="pt", padding=True)
    assert clip(**inputs).logits_per_image.shape == (1, 2)


def test_min_snr_weights_cap_high_snr_steps():
    alphas_cumprod = torch.tensor([0.99, 0.5, 0.01])
    weights = min_snr_weights(alphas_cumprod, torch.tensor([0, 1, 2]), gamma=5.0)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    torch.testing.assert_close(weights, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert weights[0] < 1 and weights[2] == 1
    assert torch.all(min_snr_weights(alphas_cumprod, torch.tensor([0, 1]), gamma=None) == 1)
