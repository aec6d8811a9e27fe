"""The tiny-pack training script runs end to end (two steps per stage) and its output loads."""

import json
import os
import subprocess
import sys
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPModel, CLIPProcessor

from safetensors.torch import load_file, save_file

from pipelines.errors import InvalidInputError, ModelNotFoundError
from pipelines.models.tokenizers import closed_vocabulary_tokenizer
from pipelines.shapesworld import sample_scene, vocabulary
from pipelines.tinypack.__main__ import main
from pipelines.tinypack.config import ComponentSizes, build_unet, unet_heads
from pipelines.tinypack.data import build_scene_arrays, object_counts
from pipelines.tinypack.train import object_word_tokens
from pipelines.training import SceneArrays, min_snr_weights


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


def test_min_snr_weights_floor_lifts_only_high_noise_steps():
    alphas_cumprod = torch.tensor([0.99, 0.5, 0.01])  # SNR 99, 1, 1/99
    t = torch.tensor([0, 1, 2])
    floored = min_snr_weights(alphas_cumprod, t, gamma=5.0, floor=0.2)
    # x_0-space weight clamp(SNR, 0.2, 5), divided by SNR: 5/99, 1, 0.2 * 99
    torch.testing.assert_close(floored, torch.tensor([5 / 99, 1.0, 0.2 * 99]))
    assert torch.equal(min_snr_weights(alphas_cumprod, t, gamma=5.0, floor=0.0), min_snr_weights(alphas_cumprod, t, 5.0))


def test_object_mix_draws_two_object_scenes_at_their_weight():
    counts = object_counts(4000, (1.0, 2.0, 1.0), seed=0)
    assert {1, 2, 3} == set(counts)
    assert abs(counts.count(2) / 4000 - 0.5) < 0.03
    assert object_counts(3, None, seed=0) == [None, None, None]
    with pytest.raises(InvalidInputError):
        object_counts(3, (1.0, -1.0, 1.0), seed=0)


def test_scene_arrays_keep_each_objects_mask_on_the_latent_grid_and_its_words():
    scenes = build_scene_arrays(6, 64, (0.0, 1.0, 0.0), mask_side=16, workers=1)
    assert scenes.object_masks.shape == (6, 3, 16, 16)
    for i in range(6):
        scene = sample_scene(i, size=64, n_objects=2, split="train")
        assert scenes.captions[i] == scene.caption
        assert scenes.object_words[i] == [f"{o.colour} {o.shape}" for o in scene.objects]
        for j, obj in enumerate(scene.objects):  # a 4x4 block's coverage, in 1/255
            expected = obj.mask.reshape(16, 4, 16, 4).mean(axis=(1, 3)) * 255
            assert np.abs(scenes.object_masks[i, j].astype(float) - expected).max() <= 0.5
        assert scenes.object_masks[i, 2].max() == 0  # no third object


def test_object_word_tokens_mark_colour_and_shape_of_each_object():
    tokenizer = closed_vocabulary_tokenizer(vocabulary(), model_max_length=24)
    scenes = SceneArrays(np.zeros((1, 64, 64, 3), np.uint8), ["a red circle left of a red square"],
                         np.zeros((1, 3, 16, 16), np.uint8), [["red circle", "red square"]])
    sets, valid = object_word_tokens(tokenizer, scenes, 24)
    # tokens: BOS a red circle left of a red square EOS
    assert sets[0, 0].nonzero().flatten().tolist() == [2, 3]
    assert sets[0, 1].nonzero().flatten().tolist() == [7, 8]
    assert valid[0].tolist() == [True, True, False]


def test_supervised_pretraining_adds_the_attention_term_only_on_low_noise_samples(tmp_path):
    """Two steps with L_ca at a huge weight move the loss far above the plain run's; with every timestep above
    the cut-off the supervised run matches the plain one (same seeds; the recording processor computes attention
    without the fused kernel, so equal up to rounding)."""
    def run(weight: float, max_timestep: int) -> float:
        report = main(["--smoke", "--stages", "vae,t2i", "--out", str(tmp_path / f"{weight}-{max_timestep}"),
                       "--attention-supervision", str(weight), "--supervision-max-timestep", str(max_timestep)])
        return report["stages"]["text-to-image"]["final_loss"]

    plain = run(0.0, 1000)
    assert run(1000.0, 1000) > plain + 1.0
    assert run(1000.0, -1) == pytest.approx(plain, rel=1e-2)
    # a window above every timestep: the term is off again
    high = main(["--smoke", "--stages", "vae,t2i", "--out", str(tmp_path / "high"), "--attention-supervision", "1000",
                 "--supervision-min-timestep", "1000", "--supervision-max-timestep", "1000"])
    assert high["stages"]["text-to-image"]["final_loss"] == pytest.approx(plain, rel=1e-2)


def test_init_fine_tunes_from_a_checkpoints_ema_weights(tmp_path):
    """--init copies a checkpoint's EMA weights into a fresh training: with a zero learning rate the saved UNet is
    those weights; a checkpoint of another config, or --init with --resume, is refused."""
    first = tmp_path / "first"
    main(["--smoke", "--stages", "vae,t2i", "--out", str(first), "--checkpoints", str(first / "ckpt"),
          "--checkpoint-every", "1"])
    checkpoint = first / "ckpt" / "step-00002"
    second = tmp_path / "second"
    shutil.copytree(first / "shapes-sd" / "vae", second / "shapes-sd" / "vae")
    main(["--smoke", "--stages", "t2i", "--out", str(second), "--init", str(checkpoint), "--t2i-lr", "0"])
    ema = load_file(str(checkpoint / "ema.safetensors"))
    unet = load_file(str(second / "shapes-sd" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert unet["conv_in.weight"].float() == pytest.approx(ema["unet.conv_in.weight"].half().float())
    other = tmp_path / "other"
    shutil.copytree(first / "shapes-sd" / "vae", other / "shapes-sd" / "vae")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    save_file({**ema, "unet.conv_in.weight": torch.zeros(1)}, str(foreign / "ema.safetensors"))
    with pytest.raises(ModelNotFoundError, match="another config"):
        main(["--smoke", "--stages", "t2i", "--out", str(other), "--init", str(foreign)])
    with pytest.raises(SystemExit):
        main(["--smoke", "--stages", "t2i", "--out", str(other), "--init", str(checkpoint), "--resume", str(checkpoint)])


def test_bf16_autocast_runs_the_forward_passes_in_bfloat16_and_keeps_float32_weights(tmp_path, monkeypatch):
    """With --bf16 (the default) the UNet's convolutions compute in bfloat16 (seen by a hook during training), the losses stay
    finite and close to the float32 run's, and the saved weights are float32 (the UNet's float16 copy aside)."""
    seen = set()
    original = build_unet

    def hooked_unet(sizes):
        unet = original(sizes)
        unet.conv_in.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
        return unet

    monkeypatch.setattr("pipelines.tinypack.train.build_unet", hooked_unet)
    monkeypatch.setattr("pipelines.training.fast_bf16", lambda device: True)  # also where bfloat16 is emulated
    reports = {flag: main(["--smoke", "--stages", "vae,t2i", "--out", str(tmp_path / flag), flag])
               for flag in ("--no-bf16", "--bf16")}
    assert seen == {torch.float32, torch.bfloat16}
    plain, mixed = (reports[f]["stages"]["text-to-image"]["final_loss"] for f in ("--no-bf16", "--bf16"))
    assert np.isfinite(mixed) and mixed == pytest.approx(plain, rel=0.1)
    vae_weights = load_file(str(tmp_path / "--bf16" / "shapes-sd" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in vae_weights.values()} == {torch.float32}


def test_autocast_switches_matmuls_to_bfloat16_only_when_enabled_and_native(monkeypatch):
    from accelerate import Accelerator
    from pipelines.training import autocast

    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    accelerator = Accelerator(cpu=True)
    for native in (True, False):
        monkeypatch.setattr("pipelines.training.fast_bf16", lambda device: native)
        with autocast(accelerator, True):
            assert layer(x).dtype == (torch.bfloat16 if native else torch.float32)
        with autocast(accelerator, False):
            assert layer(x).dtype == torch.float32


def test_velocity_target_and_zero_terminal_snr_schedule_match_hand_computation():
    from pipelines.training import build_train_scheduler, training_target

    scheduler = build_train_scheduler("v_prediction", zero_terminal_snr=True)
    assert float(scheduler.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-9)  # t = 999 is pure noise
    assert float(build_train_scheduler().alphas_cumprod[-1]) > 0.004  # Stable Diffusion's leak
    latents, noise, t = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2), torch.tensor([10, 999])
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(training_target(scheduler, latents, noise, t), a.sqrt() * noise - (1 - a).sqrt() * latents,
                          atol=1e-6)
    assert torch.allclose(training_target(scheduler, latents, noise, t)[1], -latents[1], atol=1e-6)
    assert training_target(build_train_scheduler(), latents, noise, t) is noise
    # Min-SNR for v: min(SNR, gamma) / (SNR + 1); at SNR 0 the weight is 0, so v-runs over zero SNR use gamma None.
    snr = a.flatten() / (1 - a.flatten())
    weights = min_snr_weights(scheduler.alphas_cumprod, t, 5.0, "v_prediction")
    assert torch.allclose(weights, torch.clamp(snr, max=5.0) / (snr + 1))
    with pytest.raises(InvalidInputError):
        build_train_scheduler("epsilon", zero_terminal_snr=True)


def test_v_prediction_pack_saves_a_trailing_zero_snr_scheduler_that_diffusers_samples_from(tmp_path):
    report = main(["--smoke", "--stages", "vae,t2i", "--out", str(tmp_path), "--v-prediction", "--snr-gamma", "0"])
    assert np.isfinite(report["stages"]["text-to-image"]["final_loss"])
    assert report["config"]["prediction_type"] == "v_prediction" and report["config"]["snr_gamma"] is None
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "shapes-sd", local_files_only=True, safety_checker=None)
    config = pipe.scheduler.config
    assert (config.prediction_type, config.rescale_betas_zero_snr, config.timestep_spacing) == (
        "v_prediction", True, "trailing")
    pipe.scheduler.set_timesteps(4)
    assert int(pipe.scheduler.timesteps[0]) == 999
    image = pipe("a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()


def test_wider_heads_build_fewer_heads_per_layer():
    sizes = ComponentSizes(head_width=48)
    assert unet_heads(sizes) == (1, 2, 2)
    heads = {name: module.heads for name, module in build_unet(sizes).named_modules() if name.endswith("attn2")}
    assert heads["down_blocks.0.attentions.0.transformer_blocks.0.attn2"] == 1
    assert heads["up_blocks.1.attentions.0.transformer_blocks.0.attn2"] == 2
    assert unet_heads(ComponentSizes(head_width=None)) == 16


def test_text_to_image_checkpoints_resume_to_the_same_weights(tmp_path):
    common = ["--smoke", "--t2i-steps", "4", "--out"]
    main(common + [str(tmp_path / "full"), "--stages", "vae,t2i", "--checkpoints", str(tmp_path / "ckpt"),
                   "--checkpoint-every", "2"])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-00002", "step-00004"]
    assert json.loads((tmp_path / "ckpt" / "step-00002" / "state.json").read_text())["step"] == 2
    resumed = []
    for name in ("a", "b"):
        out = tmp_path / name
        (out / "shapes-sd").mkdir(parents=True)
        shutil.copytree(tmp_path / "full" / "shapes-sd" / "vae", out / "shapes-sd" / "vae")
        report = main(common + [str(out), "--stages", "t2i", "--resume", str(tmp_path / "ckpt" / "step-00002")])
        assert len(report["stages"]["text-to-image"]["losses"]) == 1  # two steps, one log entry
        resumed.append(load_file(str(out / "shapes-sd" / "unet" / "diffusion_pytorch_model.safetensors")))
    assert all(torch.equal(resumed[0][k], resumed[1][k]) for k in resumed[0])
    with pytest.raises(InvalidInputError):
        main(common + [str(tmp_path / "a"), "--stages", "t2i", "--resume", str(tmp_path / "ckpt" / "step-00004")])
    with pytest.raises(ModelNotFoundError):
        main(common + [str(tmp_path / "a"), "--stages", "t2i", "--resume", str(tmp_path)])


_SHARDED_ENCODING = """
import sys, numpy as np, torch
from accelerate import Accelerator
from pipelines.tinypack.config import ComponentSizes, build_vae
from pipelines.tinypack.data import build_scene_arrays
from pipelines.training import encode_latents
torch.manual_seed(0)
vae = build_vae(ComponentSizes(image_size=32, vae_channels=(16, 16, 16))).eval()
scenes = build_scene_arrays(7, 32, workers=1)
accelerator = Accelerator(cpu=True)
mean, std = encode_latents(vae, scenes, "cpu", batch_size=2, accelerator=accelerator)
whole, _ = encode_latents(vae, scenes, "cpu", batch_size=2)
if accelerator.is_main_process:
    print("processes", accelerator.num_processes, "shape", tuple(mean.shape), "gap", float((mean - whole).abs().max()))
"""


def test_latents_are_encoded_in_shares_across_processes_and_gathered_whole(tmp_path):
    script = tmp_path / "encode.py"
    script.write_text(_SHARDED_ENCODING)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("processes")][0]
    assert line.startswith("processes 2 shape (7, ")  # 7 scenes over 2 processes: shares of 4 and 3
    assert float(line.split("gap")[1]) < 1e-5


def test_two_processes_train_one_model_together(tmp_path):
    """torchrun on the CPU: one data-parallel run (processes 2 in the report), not two copies racing."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1", "WORLDSTUDIO_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "pipelines.tinypack",
                             "--smoke", "--stages", "vae,t2i", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "training_report.json").read_text())
    assert report["processes"] == 2
    assert np.isfinite(report["stages"]["text-to-image"]["final_loss"])


def test_grounding_loss_and_object_centres_match_hand_computation():
    from pipelines.tinypack.train import grounding_loss, object_centres

    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, 1:3, 0] = 1.0  # left column, rows 1-2: centre x = 0.5/4 - 0.5, y = 2/4 - 0.5
    centres = object_centres(masks)
    assert centres[0, 0].tolist() == pytest.approx([-0.375, 0.0])
    assert centres[0, 1].tolist() == [0.0, 0.0]  # empty mask
    places = torch.tensor([[[9.0, 9.0], [-0.5, 0.5], [-0.25, -0.5], [1.0, 1.0]]])  # tokens 1-2 are object 0's words
    sets = torch.tensor([[[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]])
    valid = torch.tensor([[True, False]])
    # object 0's place = mean of tokens 1, 2 = (-0.375, 0.0): exactly its centre
    assert float(grounding_loss(places, sets, centres, valid)) == pytest.approx(0.0)
    valid = torch.tensor([[True, True]])  # object 1: place (1, 1), centre (0, 0) -> error 2, averaged over 2 objects
    assert float(grounding_loss(places, sets, centres, valid)) == pytest.approx(1.0)
