"""Every tab's main action under ``--preset hub``, on the CPU, offline, against the hub-shaped cache (tiny
random stand-ins of the real checkpoints, laid out as huggingface_hub stores downloads). Random weights make
no sensible picture: these tests check that each runner loads the hub preset's models through the unchanged
``from_pretrained`` path and runs to a report with values of the right shapes and ranges."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest

from pipelines.errors import InvalidInputError, ModelNotFoundError
from pipelines.models.hub_shaped import WRITERS
from pipelines.models.presets import get_preset

pytestmark = pytest.mark.hub

HUB_IDS = sorted({source.location for source in get_preset("hub").sources.values()})


def snapshot(cache, repo_id):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    return repo, repo / "snapshots" / (repo / "refs" / "main").read_text()


def test_the_cache_holds_every_hub_checkpoint_as_huggingface_hub_stores_a_download(hub_shaped_cache):
    from huggingface_hub import try_to_load_from_cache

    assert set(HUB_IDS) <= set(WRITERS)
    for repo_id in HUB_IDS:
        repo, folder = snapshot(hub_shaped_cache, repo_id)
        assert len(folder.name) == 40 and int(folder.name, 16) >= 0  # a commit id in refs/main
        files = [p for p in folder.rglob("*") if not p.is_dir()]
        assert files and all(p.is_symlink() for p in files)
        weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt")]
        assert weights and all(p.suffix == ".safetensors" for p in weights)
        for path in weights:  # LFS blobs are named by their sha256
            assert path.resolve().parent == repo / "blobs"
            assert path.resolve().name == hashlib.sha256(path.read_bytes()).hexdigest()
        first = "model_index.json" if (folder / "model_index.json").exists() else "config.json"
        assert try_to_load_from_cache(repo_id, first, cache_dir=hub_shaped_cache) == str(folder / first)


def test_stand_ins_keep_the_real_classes_and_settings(hub_shaped_cache):
    def config(repo_id, path):
        return json.loads((snapshot(hub_shaped_cache, repo_id)[1] / path).read_text())

    sd2, sd15 = "stabilityai/stable-diffusion-2-1-base", "stable-diffusion-v1-5/stable-diffusion-v1-5"
    index = config(sd2, "model_index.json")
    assert index["_class_name"] == "StableDiffusionPipeline" and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"] and index["scheduler"][1] == "PNDMScheduler"
    assert config(sd15, "model_index.json")["safety_checker"][1] == "StableDiffusionSafetyChecker"
    assert config(sd2, "unet/config.json")["use_linear_projection"] is True
    assert config(sd15, "unet/config.json")["use_linear_projection"] is False
    assert (config(sd2, "text_encoder/config.json")["hidden_act"], config(sd15, "text_encoder/config.json")["hidden_act"]) \
        == ("gelu", "quick_gelu")
    assert config(sd2, "scheduler/scheduler_config.json")["skip_prk_steps"] is True
    video = config("cerspense/zeroscope_v2_576w", "model_index.json")
    assert video["_class_name"] == "TextToVideoSDPipeline" and video["unet"][1] == "UNet3DConditionModel"
    assert config("Intel/dpt-hybrid-midas", "config.json")["is_hybrid"] is True
    assert config("Qwen/Qwen2.5-0.5B-Instruct", "config.json")["architectures"] == ["Qwen2ForCausalLM"]
    assert config("google/owlvit-base-patch32", "preprocessor_config.json")["processor_class"] == "OwlViTProcessor"
    segformer = config("nvidia/segformer-b0-finetuned-ade-512-512", "config.json")
    assert segformer["architectures"] == ["SegformerForSemanticSegmentation"] and len(segformer["id2label"]) == 150
    assert segformer["strides"] == [4, 2, 2, 2] and segformer["sr_ratios"] == [8, 4, 2, 1]
    processor = config("nvidia/segformer-b0-finetuned-ade-512-512", "preprocessor_config.json")
    assert processor["size"] == {"height": 512, "width": 512} and processor["do_reduce_labels"] is True


def test_the_clip_tokenizer_is_a_real_format_open_vocabulary_bpe(hub_shaped_cache):
    from transformers import CLIPTokenizer

    from pipelines.vocabulary import is_closed

    folder = snapshot(hub_shaped_cache, "stabilityai/stable-diffusion-2-1-base")[1] / "tokenizer"
    vocab = json.loads((folder / "vocab.json").read_text())
    merges = (folder / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(vocab) == 512 + len(merges) - 1 + 2  # bytes, bytes</w>, merges, 2
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token == "!" and tokenizer.model_max_length == 77
    ids = tokenizer("a red ball rolls quickly").input_ids
    assert ids[0] == vocab["<|startoftext|>"] and ids[-1] == vocab["<|endoftext|>"] and len(ids) == 7  # 5 words
    assert tokenizer("zyxq").input_ids[1:-1] == [vocab[c] for c in "zyx"] + [vocab["q</w>"]]  # spelt out by bytes
    assert not is_closed(tokenizer)  # like CLIP's ~49k words, not the tiny pack's closed vocabulary


def test_match_ranks_captions_and_generates_on_the_hub_preset(hub_models):
    from pipelines.matching.runner import ImageRequest, MatchRequest, MatchRunner

    runner = MatchRunner(hub_models)
    image = (np.random.default_rng(0).random((96, 80, 3)) * 255).astype(np.uint8)
    captions = ["a red circle left of a blue square", "a photo of a cat"]
    report = runner.run(MatchRequest(image, captions, methods=["discffusion", "clip", "comclip", "dc-uniform"]))
    assert sorted(report.results) == ["clip", "comclip", "dc-uniform", "discffusion"]
    for result in report.results.values():
        assert len(result.scores) == 2 and np.isfinite(result.scores).all()
    # ComCLIP's subimages come from OWL-ViT's boxes for the captions' phrases, so it differs from CLIP.
    assert not np.allclose(report.results["comclip"].scores, report.results["clip"].scores)
    boxes = runner.matchers.scorer("comclip").__self__.boxes_for(image, captions)
    # (one box per phrase, duplicates merged; random weights may give the same, even empty, box for each)
    assert 1 <= len(boxes) <= 3 and all(-1e-3 <= b[0] <= b[2] <= 80 and -1e-3 <= b[1] <= b[3] <= 96 for b in boxes)
    heatmaps = runner.heatmaps(report, captions[1], size=32)
    assert {"photo", "cat"} <= set(heatmaps)
    assert all(m.shape[0] == 32 > m.shape[1] for m in heatmaps.values())  # long side 32, the image is tall
    generated = runner.generate(ImageRequest("a photo of a cat", seed=3))
    assert generated.image.shape == (64, 64, 3) and generated.recipe.preset == "hub"  # sample_size 8 x VAE factor 8
    assert generated.captions == ["a photo of a cat"] and not generated.laid_out
    assert hub_models.loaded() == ["clip", "detector", "text-to-image"]
    unet = hub_models.get("text-to-image").unet
    assert unet.config.use_linear_projection and unet.config.cross_attention_dim == 32  # the SD 2.1 stand-in


def test_flexecontrol_on_the_hub_preset_names_its_training_command_then_runs_on_what_it_trains(
        hub_models, monkeypatch, tmp_path):
    from pipelines.flexecontrol.__main__ import main as train
    from pipelines.flexecontrol.runner import ConditionInput, FlexEControlRequest, FlexEControlRunner

    monkeypatch.delenv("WORLDSTUDIO_FLEXECONTROL_WEIGHTS", raising=False)
    with pytest.raises(ModelNotFoundError) as caught:
        FlexEControlRunner(hub_models).pipe
    message = str(caught.value)
    command = "python -m pipelines.flexecontrol --base stable-diffusion-v1-5/stable-diffusion-v1-5 --out"
    assert command in message and "WORLDSTUDIO_FLEXECONTROL_WEIGHTS=runs/flexecontrol-hub" in message
    assert "accelerate launch" in message
    # The command it names, at two steps, over the hub-shaped SD 1.5.
    out = tmp_path / "flexecontrol-hub"
    argv = command.split()[3:] + [str(out), "--steps", "2", "--batch-size", "2", "--scenes", "4"]
    assert train(argv) == 0
    monkeypatch.setenv("WORLDSTUDIO_FLEXECONTROL_WEIGHTS", str(out))
    runner = FlexEControlRunner(hub_models)
    drawing = np.zeros((64, 64, 3), np.uint8)
    drawing[20:44, 16:40] = 255
    report = runner.run(FlexEControlRequest("a photo of a cat", [ConditionInput("sketch", drawing)], steps=2),
                        progress=False)
    assert report.image.shape == (64, 64, 3) and report.recipe.preset == "hub"
    assert [c.type for c in report.conditions] == ["sketch"] and 0.0 <= report.rows[0]["value"] <= 1.0
    assert "control-base" in hub_models.loaded()


def test_mojito_makes_and_measures_a_video_on_the_hub_preset(hub_models):
    from pipelines.mojito.runner import MojitoRequest, MojitoRunner, TrajectoryInput

    request = MojitoRequest("a dog runs on the beach", [TrajectoryInput("dog", [[0, 0.1, 0.4, 0.3, 0.6],
                                                                                 [7, 0.7, 0.4, 0.9, 0.6]])],
                            n_frames=8, steps=2, guided_steps=1)
    report = MojitoRunner(hub_models).run(request)
    assert report.frames.shape == (8, 64, 64, 3) and report.recipe.preset == "hub"
    assert report.boxes["dog"].shape == (8, 4) and report.intensity is None  # ZeroScope has no MIM
    (dog,) = report.objects
    assert dog.boxes.shape == (8, 4) and 0.0 <= dog.metrics.miou <= 1.0 and np.isfinite(report.measured)
    assert {"text-to-video", "detector"} <= set(hub_models.loaded())  # "dog" is measured with OWL-ViT


def test_morpho4d_generates_with_the_hub_models_and_reads_commands_with_its_llm(hub_models):
    from pipelines.morpho4d.fitting import FitConfig
    from pipelines.morpho4d.generation import GenConfig
    from pipelines.morpho4d.runner import Morpho4DRunner

    config = GenConfig(n_frames=4, size=64, fit=FitConfig(steps=3, init_gaussians=300, init_frames=2))
    runner = Morpho4DRunner(hub_models, config=config)
    session = runner.new_session()
    assert session.frames == "mojito"
    record = session.run("a red ball rolls quickly from left to right")
    assert record.ok and record.plan["mode"] == "GEN", record.outcome
    scene = session.scene
    assert scene.n_frames == 4 and scene.n_gaussians > 0
    # The detector finds no ShapesWorld object in random frames: features come from the hub's CLIP.
    assert session.gen.teacher == "clip" and "hub-clip" in scene.feature_space
    assert {"text-to-video", "depth", "clip"} <= set(hub_models.loaded())
    assert hub_models.get("depth").config.is_hybrid  # DPT-hybrid, not the tiny GLPN
    parsed = Morpho4DRunner(hub_models, parser="llm").parser().parse("make the ball blue")
    assert parsed.plan.mode == "EDIT" and "language" in hub_models.loaded()


def test_the_studio_says_what_the_hub_preset_cannot_do_and_how_to_fix_it(monkeypatch):
    from studio.flexecontrol import weights_notice
    from studio.morpho4d import source_notice

    monkeypatch.delenv("WORLDSTUDIO_FLEXECONTROL_WEIGHTS", raising=False)
    notice = weights_notice("hub")
    assert notice.startswith("**Generation is not available with preset 'hub'.**")
    assert "--base stable-diffusion-v1-5/stable-diffusion-v1-5" in notice
    assert weights_notice("tiny") == ""  # the tiny pack ships its weights
    runner = SimpleNamespace(resolved_frames=lambda: "mojito", manager=SimpleNamespace(preset="hub"))
    assert "preset 'hub'" in source_notice(runner) and "preset's CLIP features" in source_notice(runner)


def test_preload_loads_every_model_of_the_preset_for_zero_gpu(hub_models, monkeypatch):
    from pipelines.zerogpu import on_zero_gpu

    assert hub_models.preload() == sorted(get_preset("hub").sources)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not on_zero_gpu()  # only on a Space
    monkeypatch.setenv("SPACE_ID", "user/worldstudio")
    assert on_zero_gpu()


def test_a_real_photo_goes_through_the_hub_models_not_the_shapesworld_fallbacks(hub_models):
    """A photo that ships with a dependency (matplotlib's sample data): ComCLIP's boxes come from OWL-ViT,
    FlexEControl's depth map from the preset's DPT and its segmentation from the preset's SegFormer (the tiny
    pack, which has no segmenter, keeps ShapesWorld's colour detector), with no FlexEControl weights needed to
    extract maps."""
    import cv2
    import matplotlib.cbook
    from PIL import Image

    from pipelines.flexecontrol.conditions import class_palette
    from pipelines.flexecontrol.runner import ConditionInput, FlexEControlRunner
    from pipelines.matching.runner import MatchRunner
    from pipelines.models import ModelManager
    from pipelines.shapesworld.conditions import segmentation_from_detections
    from pipelines.shapesworld.detector import detect

    photo = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    assert photo.shape == (600, 512, 3)
    comclip = MatchRunner(hub_models).matchers.scorer("comclip").__self__
    boxes = comclip.boxes_for(photo, ["a woman in a uniform", "a photo of a cat"])
    assert boxes and set(boxes) != {tuple(float(v) for v in d.box) for d in detect(photo)}
    runner = FlexEControlRunner(hub_models)
    maps = {}
    for kind in ("canny", "sketch", "depth", "segmentation"):
        (condition,), notes = runner.conditions([ConditionInput(kind, photo, "upload")])
        maps[kind] = condition.image
        assert condition.image.shape[:2] == (64, 64) and "512x600 upload was resized to 64x64" in notes[0]
    grey = cv2.cvtColor(cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    assert not np.array_equal(maps["depth"], grey) and "depth" in hub_models.loaded()  # DPT, not the grey fallback
    assert (maps["canny"] > 0).mean() > 0.05 and (maps["sketch"] > 0).mean() > 0.05
    # Segmentation: SegFormer's classes in the fixed palette, not the detector's (empty or ShapesWorld-coloured) map.
    small = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)
    fallback = segmentation_from_detections(detect(small), 64)
    assert "segmentation" in hub_models.loaded() and not np.array_equal(maps["segmentation"], fallback)
    segmenter = runner.segmenter()
    assert segmenter.model.config.num_labels == 150 and segmenter.model.config.id2label[12] == "person"
    classes = segmenter.classes(photo, 64)
    assert len(np.unique(classes)) > 1 and np.array_equal(maps["segmentation"], class_palette(150)[classes])
    assert FlexEControlRunner(ModelManager("tiny")).segmenter() is None


def test_morpho4d_lifts_a_real_photo_and_edits_it_by_its_learned_clip_features(hub_models, monkeypatch):
    """A photo (matplotlib's sample data) lifted to Gaussians with the preset's DPT depth and features distilled
    from the preset's CLIP (eq. 11.12), then recoloured by a text query (eq. 11.13-11.14) with the ShapesWorld
    detector switched off. Random stand-in weights carry no meaning, so this checks the mechanism: features
    that fit CLIP's per-pixel targets, a selection that is the thresholded query probability of those
    features, and an edit that changes the picture where, and only where, the selected Gaussians are drawn."""
    import matplotlib.cbook
    import torch
    from PIL import Image

    import pipelines.shapesworld.detector
    from pipelines.morpho4d.clip_features import clip_encoder
    from pipelines.morpho4d.editing import gaussian_probabilities, match_query
    from pipelines.morpho4d.fitting import FitConfig
    from pipelines.morpho4d.generation import GenConfig, square_frame
    from pipelines.morpho4d.rendering import render
    from pipelines.morpho4d.runner import Morpho4DRunner, scene_digest
    from pipelines.morpho4d.scene import sh_to_rgb

    def no_detector(*args, **kwargs):
        raise AssertionError("the ShapesWorld detector was called on a photo")

    monkeypatch.setattr(pipelines.shapesworld.detector, "detect", no_detector)
    photo = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    config = GenConfig(size=64, fit=FitConfig(steps=20, init_gaussians=600, converge_window=0), fit_size=32,
                       refine_steps=10)
    runner = Morpho4DRunner(hub_models, config=config)
    session = runner.lift_photo(photo, ["woman"])
    scene = session.scene
    assert scene.n_frames == 1 and 500 <= scene.n_gaussians <= 700 and scene.object_names == ("background", "woman")
    assert scene.feature_space == "clip-windows:hub-clip:w24s4:bgtext" and scene.meta["teacher"] == "clip"
    assert "hub-clip" in scene.meta["source"] and "CLIP" in session.history[-1].outcome
    assert {"depth", "clip"} <= set(hub_models.loaded()) and hub_models.get("depth").config.is_hybrid
    # The Gaussians' features render to CLIP's own per-pixel features of the photo (eq. 11.12).
    encoder = clip_encoder(hub_models, background=None)
    target = encoder.pixel_features(square_frame(photo, 64)[None])[0]
    rendered = render(scene, scene.camera, 0.0, "features").cpu().numpy()
    cosine = (rendered * target).sum(-1) / np.linalg.norm(rendered, axis=-1).clip(1e-8)
    assert cosine.mean() > 0.9
    # A typed text edit (the grammar reads any noun; threshold search over eq. 11.13's probabilities).
    assert session.run("make the woman green").ok
    edit = session.editor.edits[-1]
    assert edit.operation == "recolour" and edit.query == "woman"
    match = match_query(scene, "the woman", encoder)
    probabilities = gaussian_probabilities(scene.features, match.positives, match.alternative_vectors,
                                           encoder.temperature)
    assert edit.mask.any() and np.array_equal(edit.mask, probabilities >= edit.threshold)
    assert probabilities.std() > 1e-3  # features differ across the photo; the query's probability with them
    # At the median probability, some but not all Gaussians are selected, and the recolour changes the render
    # where they are drawn, by at most their share of each pixel (coverage) times their colour change.
    session.undo()
    median = float(np.median(probabilities))
    partial = session.editor.apply("recolour", "woman", "#00ff00", thresholds=(median,))
    assert 0.3 < partial.mask.mean() < 0.7
    before = render(scene, scene.camera, 0.0).cpu().numpy()
    after = render(session.scene, scene.camera, 0.0).cpu().numpy()
    coverage = render(scene, scene.camera, 0.0, "features",
                      extra_values=torch.from_numpy(partial.mask[:, None].astype(np.float32))).cpu().numpy()[..., -1]
    change = np.abs(after - before).max(-1)
    largest = np.abs(np.clip(sh_to_rgb(scene.sh_dc[partial.mask]), 0.0, None) - [0.0, 1.0, 0.0]).max()
    assert np.all(change <= coverage * largest + 1e-4)
    assert change.mean() > 0.1 and np.corrcoef(change.ravel(), coverage.ravel())[0, 1] > 0.5
    # The lift is a recipe: replayed, it makes the same scene.
    replayed = runner.run(runner.request_of(Morpho4DRunner(hub_models, config=config).lift_photo(photo, ["woman"])))
    assert scene_digest(replayed.scene) == scene_digest(scene)


def test_the_morpho4d_tab_lifts_a_photo_and_its_chat_says_the_features_are_clips(hub_models):
    from pipelines.morpho4d.fitting import FitConfig
    from pipelines.morpho4d.generation import GenConfig
    from pipelines.morpho4d.runner import Morpho4DRunner
    from studio import morpho4d as tab

    config = GenConfig(size=32, fit=FitConfig(steps=5, init_gaussians=200, converge_window=0), refine_steps=0)
    runner = Morpho4DRunner(hub_models, config=config)
    photo = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    outputs = tab.lift_photo(runner, photo, "woman, the flag")
    view, chat = outputs[0], outputs[1]
    assert view.scene.object_names == ("background", "woman", "flag") and view.scene.n_frames == 1
    assert "CLIP" in chat[-1]["content"] and outputs[3].shape == (256, 256, 3)  # the rendered view
    with pytest.raises(InvalidInputError, match="Name what the photo shows"):
        tab.lift_photo(runner, photo, " , ")
