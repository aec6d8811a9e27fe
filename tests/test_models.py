"""Presets, device choice and loading: clear errors, safetensors round trip."""

import numpy as np
import pytest
import torch
from dummies import dummy_sd_pipeline, dummy_tokenizer

from pipelines.errors import InvalidInputError, ModelNotFoundError, UnknownPresetError
from pipelines.models import PRESETS, ModelManager, ModelSource, choose_placement, get_preset, get_source, load_source
from pipelines.models.presets import ROLES


def test_cpu_machine_places_on_cpu_in_float32(monkeypatch):
    monkeypatch.delenv("WORLDSTUDIO_DEVICE", raising=False)
    monkeypatch.delenv("WORLDSTUDIO_DTYPE", raising=False)
    placement = choose_placement()
    assert placement.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert placement.dtype == (torch.float16 if torch.cuda.is_available() else torch.float32)
    assert choose_placement("cpu", "bf16").dtype == torch.bfloat16


def test_placement_rejects_bad_values(monkeypatch):
    with pytest.raises(InvalidInputError, match="Unknown dtype 'int3'"):
        choose_placement("cpu", "int3")
    with pytest.raises(InvalidInputError, match="Unknown device"):
        choose_placement("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA GPU"):
            choose_placement("cuda")


def test_unknown_preset_and_role_name_what_exists():
    with pytest.raises(UnknownPresetError, match="known presets: hub, tiny"):
        get_preset("huge")
    with pytest.raises(UnknownPresetError, match="has no 'teleporter' model; it has: "):
        get_source("tiny", "teleporter")


def test_every_preset_names_known_roles_and_hub_ids():
    for preset in PRESETS.values():
        assert set(preset.sources) <= set(ROLES)
        for source in preset.sources.values():
            if source.local:
                assert source.location.startswith("assets/models/tiny/")
            else:
                assert source.location.count("/") == 1
    assert {"text-to-image", "control-base", "text-to-video", "clip"} <= set(PRESETS["hub"].sources)


def test_source_rejects_classes_outside_the_whitelist():
    with pytest.raises(ValueError, match="not a loadable class"):
        ModelSource("x/y", "transformers", "AutoModelForCausalLMWithRemoteCode", local=False)


def test_missing_local_folder_says_how_to_get_it():
    source = ModelSource("assets/models/tiny/does-not-exist", "diffusers", "StableDiffusionPipeline", local=True)
    with pytest.raises(ModelNotFoundError) as caught:
        load_source(source, choose_placement("cpu"), preset="tiny", role="text-to-image")
    message = str(caught.value)
    assert "'tiny'" in message and "text-to-image" in message and "make tiny-models" in message


def test_hub_model_absent_offline_names_preset_and_download_command(monkeypatch, tmp_path):
    from conftest import use_hub_cache

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    use_hub_cache(monkeypatch, tmp_path / "hub")  # an empty cache, whatever other tests patched in before
    manager = ModelManager("hub", choose_placement("cpu"))
    with pytest.raises(ModelNotFoundError) as caught:
        manager.get("clip")
    message = str(caught.value)
    assert "'hub'" in message and "openai/clip-vit-base-patch32" in message and "hf download" in message
    assert manager.loaded() == []


def test_pipeline_saved_as_safetensors_loads_through_a_local_source(tmp_path):
    pipe = dummy_sd_pipeline(seed=0)
    pipe.save_pretrained(tmp_path / "sd", safe_serialization=True)
    weight_files = {p.suffix for p in (tmp_path / "sd").rglob("*") if p.suffix in (".bin", ".safetensors")}
    assert weight_files == {".safetensors"}
    source = ModelSource(str(tmp_path / "sd"), "diffusers", "StableDiffusionPipeline", local=True)
    loaded = load_source(source, choose_placement("cpu"))
    kwargs = dict(num_inference_steps=2, output_type="np", height=32, width=32)
    expected = pipe("a red circle", generator=torch.Generator().manual_seed(3), **kwargs).images
    got = loaded("a red circle", generator=torch.Generator().manual_seed(3), **kwargs).images
    assert got.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_closed_vocabulary_tokenizer_keeps_words_whole_and_spells_unknown_ones(tmp_path):
    tokenizer = dummy_tokenizer()
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("A red circle, left of blue.").input_ids)
    assert tokens[1:5] == ["a</w>", "red</w>", "circle</w>", ",</w>"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("zebra").input_ids)[1:-1] == ["z", "e", "b", "r", "a</w>"]
    tokenizer.save_pretrained(tmp_path)
    from transformers import CLIPTokenizer

    assert CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)("red square").input_ids == tokenizer(
        "red square"
    ).input_ids


def test_unknown_words_are_named_in_a_warning():
    from pipelines.errors import UnknownWordsWarning
    from pipelines.models.tokenizers import unknown_words, warn_unknown_words

    tokenizer = dummy_tokenizer()
    assert unknown_words(tokenizer, "A red zebra, left of a Blue yak.") == ["zebra", "yak"]
    with pytest.warns(UnknownWordsWarning, match="'zebra'"):
        assert warn_unknown_words(tokenizer, ["a red zebra"]) == ["zebra"]
    assert warn_unknown_words(tokenizer, ["a red circle"]) == []
