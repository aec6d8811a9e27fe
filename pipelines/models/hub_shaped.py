"""Hub-shaped checkpoints: tiny random models laid out in a Hugging Face cache as the hub preset's are.

For every source of a preset that names a hub id (``hub``: SD 2.1-base, SD 1.5, ZeroScope, CLIP ViT-B/32,
DPT-hybrid, OWL-ViT, SegFormer-B0 on ADE20K, Qwen2.5-0.5B-Instruct) this writes a model of the same classes, with the same
sub-folders, file names and config keys as the real repository, but a few thousand parameters and random
weights (safetensors only), into ``CACHE/models--ORG--NAME/`` exactly as ``huggingface_hub`` stores a download:
content-addressed ``blobs/``, ``snapshots/<commit>/`` of relative symbolic links and ``refs/main``. With
``HF_HUB_CACHE=CACHE`` and ``HF_HUB_OFFLINE=1`` the unchanged loading code (``from_pretrained(repo_id)``)
then runs every tab under ``--preset hub`` on a CPU, with no download: what the tests marked ``hub`` do.

Sizes are tiny, not real: an SD image is 64x64 (``sample_size`` 8 latents times the real VAE's factor 8),
towers have two layers of width 32. What is kept from each real checkpoint: the classes, the scheduler and
its settings, activation functions, ``use_linear_projection``, per-block head lists, the tokenizers' file
formats, special tokens and lengths, the processors' settings. The CLIP tokenizer is a real-format BPE
(``vocab.json`` over the 256 byte symbols and their ``</w>`` forms, ``merges.txt``) that knows more than
:data:`~pipelines.vocabulary.CLOSED_VOCABULARY_MAX_WORDS` whole words, so the studio treats it as the open
vocabulary it stands for.

``python -m pipelines.models.hub_shaped --cache DIR`` writes the cache; ``HF_HUB_CACHE=DIR
HF_HUB_OFFLINE=1 python app.py --preset hub`` then serves the studio over it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..errors import InvalidInputError
from .presets import get_preset
from .tokenizers import byte_pair_merges

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Words the tests and examples type (ShapesWorld, Morpho4D commands, photos), each one whole token.
REAL_WORDS = (
    "a an the of and to in on at with is are photo picture image video scene object thing "
    "red green blue yellow purple orange black white grey gray pink brown colour color "
    "circle square triangle ball box cube disk disc star shape shapes "
    "left right above below top bottom middle centre center from into onto over under "
    "moves move moving rolls roll rolling slides slide sliding bounces bounce bouncing falls jumps flies "
    "runs walks upward downward upwards downwards slowly quickly fast slow gently "
    "make turn paint colour recolour delete remove erase extract keep show only it its them "
    "cat dog horse bird car person man woman astronaut rider coffee cup mug table chair tree flower "
    "sky sea beach street city room house road grass field mountain water dark light bright small big large"
).split()
# Syllables whose two-syllable words pad the vocabulary past the closed-vocabulary bound (a real CLIP
# tokenizer knows ~30k whole words; these stand for them).
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"
FILLER_WORDS = 2100


def vocabulary_words() -> list[str]:
    """The whole words of the hub-shaped CLIP tokenizer: :data:`REAL_WORDS` and two-syllable fillers."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    fillers = [a + b for a in syllables for b in syllables][:FILLER_WORDS]
    return list(dict.fromkeys(REAL_WORDS + fillers))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's map of the 256 bytes to printable symbols (the alphabet of a byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            symbols.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, symbols)))


def write_clip_tokenizer(folder: Path, *, pad_token: str = EOS, model_max_length: int = 77) -> int:
    """A CLIP BPE tokenizer in the hub's files (vocab.json, merges.txt, special_tokens_map.json,
    tokenizer_config.json); returns its vocabulary size. Ids follow CLIP's order: byte symbols, byte symbols
    + ``</w>``, merges, then the start and end tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(bytes_to_unicode().values())
    merges = byte_pair_merges(vocabulary_words())
    symbols = alphabet + [s + "</w>" for s in alphabet] + [a + b for a, b in merges] + [BOS, EOS]
    vocab = {symbol: index for index, symbol in enumerate(dict.fromkeys(symbols))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length,
              "do_lower_case": True, "errors": "replace", "add_prefix_space": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)


def _text_config(vocab_size: int, hidden_act: str, projection_dim: int = 16, max_positions: int = 77) -> dict:
    """A two-layer CLIP text tower of width 32 with the real checkpoint's activation and special ids."""
    return dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=max_positions, hidden_act=hidden_act,
                projection_dim=projection_dim, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                pad_token_id=1)


def _vision_config(image_size: int, patch_size: int, hidden_act: str = "quick_gelu") -> dict:
    return dict(image_size=image_size, patch_size=patch_size, hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, projection_dim=16, hidden_act=hidden_act)


def _clip_image_processor(size: int = 224):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


# Scheduler settings of the real checkpoints (their scheduler_config.json; PNDM keeps but ignores clip_sample).
_SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                     clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
# A tiny VAE with the real one's four blocks (so the real latent factor 8) and scaling factor.
_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1, norm_num_groups=4, sample_size=64, scaling_factor=0.18215)
# A UNet's real block layout at tiny widths: cross-attention at the first three resolutions.
_UNET_BLOCKS = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=8,
                    in_channels=4, out_channels=4)


def _stable_diffusion(folder: Path, *, v2: bool) -> None:
    """SD 2.1-base (``v2``: OpenCLIP-H text tower, gelu, linear projections, per-block heads, pad '!') or
    SD 1.5 (CLIP-L text tower, quick_gelu, a safety checker) as a tiny StableDiffusionPipeline folder."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = write_clip_tokenizer(folder / "tokenizer", pad_token="!" if v2 else EOS)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config(vocab_size, "gelu" if v2 else "quick_gelu")))
    unet = UNet2DConditionModel(
        **_UNET_BLOCKS, cross_attention_dim=32, use_linear_projection=v2,
        attention_head_dim=(1, 2, 2, 2) if v2 else 2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    safety_checker = None if v2 else StableDiffusionSafetyChecker(CLIPConfig(
        text_config=_text_config(vocab_size, "quick_gelu"), vision_config=_vision_config(224, 32),
        projection_dim=16))
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**_VAE), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler.from_config({**_SD_SCHEDULER, "skip_prk_steps": True}), safety_checker=safety_checker,
        feature_extractor=_clip_image_processor(), image_encoder=None, requires_safety_checker=not v2)
    pipe.save_pretrained(folder, safe_serialization=True)


def _zeroscope(folder: Path) -> None:
    """ZeroScope v2 576w: a TextToVideoSDPipeline with a UNet3DConditionModel and a DDIM scheduler."""
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = write_clip_tokenizer(folder / "tokenizer", pad_token="!")
    unet = UNet3DConditionModel(
        **_UNET_BLOCKS, cross_attention_dim=32, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
    )
    pipe = TextToVideoSDPipeline(
        vae=AutoencoderKL(**_VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config(vocab_size, "gelu"))),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"), unet=unet,
        scheduler=DDIMScheduler.from_config(_SD_SCHEDULER))
    pipe.save_pretrained(folder, safe_serialization=True)


def _clip(folder: Path) -> None:
    """CLIP ViT-B/32: CLIPModel with its processor (image processor and tokenizer) at the repository root."""
    from transformers import CLIPConfig, CLIPModel

    vocab_size = write_clip_tokenizer(folder)
    config = CLIPConfig(text_config=_text_config(vocab_size, "quick_gelu"), vision_config=_vision_config(224, 32),
                        projection_dim=16)
    CLIPModel(config).save_pretrained(folder, safe_serialization=True)
    _clip_image_processor().save_pretrained(folder)


def _owlvit(folder: Path) -> None:
    """OWL-ViT base/32: OwlViTForObjectDetection at 768 pixels, its processor and a 16-token tokenizer."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor

    vocab_size = write_clip_tokenizer(folder, pad_token="!", model_max_length=16)
    # Its class head compares image embeddings of the text width with projected queries: as in the real
    # checkpoint (512 and 512), the projection is as wide as the text tower.
    text = _text_config(vocab_size, "quick_gelu", projection_dim=32, max_positions=16)
    config = OwlViTConfig(text_config=text, vision_config=_vision_config(768, 32), projection_dim=32)
    OwlViTForObjectDetection(config).save_pretrained(folder, safe_serialization=True)
    OwlViTImageProcessor(size={"height": 768, "width": 768}, crop_size={"height": 768, "width": 768}).save_pretrained(folder)
    config_file = folder / "preprocessor_config.json"
    data = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**data, "processor_class": "OwlViTProcessor"}, indent=2))


def _dpt_hybrid(folder: Path) -> None:
    """DPT-hybrid MiDaS: DPTForDepthEstimation over a BiT backbone (``is_hybrid``) and its processor."""
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    backbone = BitConfig(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[16, 32, 64],
                         embedding_size=8, num_groups=4, out_features=["stage1", "stage2", "stage3"],
                         embedding_dynamic_padding=True)
    config = DPTConfig(is_hybrid=True, image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4,
                       num_attention_heads=2, intermediate_size=64, neck_hidden_sizes=[16, 32, 32, 32],
                       fusion_hidden_size=16, backbone_out_indices=[0, 1, 2, 3],
                       backbone_featmap_shape=[1, 64, 4, 4], readout_type="project", backbone_config=backbone)
    DPTForDepthEstimation(config).save_pretrained(folder, safe_serialization=True)
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False, ensure_multiple_of=1,
                      image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)


# ADE20K's 150 classes in the order of SegFormer's ADE checkpoints' ``id2label`` (ADE's label k + 1, as
# ``do_reduce_labels`` maps them; 0 "other" is dropped).
ADE20K_LABELS = tuple(label.strip() for label in """wall, building, sky, floor, tree, ceiling, road, bed, windowpane,
grass, cabinet, sidewalk, person, earth, door, table, mountain, plant, curtain, chair, car, water, painting, sofa, shelf,
house, sea, mirror, rug, field, armchair, seat, fence, desk, rock, wardrobe, lamp, bathtub, railing, cushion, base, box,
column, signboard, chest of drawers, counter, sand, sink, skyscraper, fireplace, refrigerator, grandstand, path, stairs,
runway, case, pool table, pillow, screen door, stairway, river, bridge, bookcase, blind, coffee table, toilet, flower,
book, hill, bench, countertop, stove, palm, kitchen island, computer, swivel chair, boat, bar, arcade machine, hovel,
bus, towel, light, truck, tower, chandelier, awning, streetlight, booth, television receiver, airplane, dirt track,
apparel, pole, land, bannister, escalator, ottoman, bottle, buffet, poster, stage, van, ship, fountain, conveyer belt,
canopy, washer, plaything, swimming pool, stool, barrel, basket, waterfall, tent, bag, minibike, cradle, oven, ball,
food, step, tank, trade name, microwave, pot, animal, bicycle, lake, dishwasher, screen, blanket, sculpture, hood,
sconce, vase, traffic light, tray, ashcan, fan, pier, crt screen, plate, monitor, bulletin board, shower, radiator,
glass, clock, flag""".split(","))


def _segformer_ade(folder: Path) -> None:
    """SegFormer-B0 fine-tuned on ADE20K at 512: SegformerForSemanticSegmentation with the real config's keys,
    stage layout (strides, patch sizes, reduction ratios), activation and 150-class ``id2label``, and its
    image processor (512x512, ImageNet mean and std, labels reduced); stages 8-16 wide instead of 32-256."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    id2label = dict(enumerate(ADE20K_LABELS))
    config = SegformerConfig(num_channels=3, num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
                             hidden_sizes=[8, 16, 16, 16], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
                             num_attention_heads=[1, 1, 2, 2], mlp_ratios=[4, 4, 4, 4], hidden_act="gelu",
                             decoder_hidden_size=16, reshape_last_stage=True, semantic_loss_ignore_index=255,
                             id2label=id2label, label2id={label: i for i, label in id2label.items()})
    SegformerForSemanticSegmentation(config).save_pretrained(folder, safe_serialization=True)
    SegformerImageProcessor(size={"height": 512, "width": 512}, do_reduce_labels=True).save_pretrained(folder)


def _qwen(folder: Path) -> None:
    """Qwen2.5-0.5B-Instruct: Qwen2ForCausalLM (tied embeddings) with a byte-level BPE tokenizer, its chat
    special tokens and a generation config."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {symbol: index for index, symbol in enumerate(bytes_to_unicode().values())}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    # Byte-level BPE without merges: every byte one token (the real one has 151k tokens and their merges).
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", additional_special_tokens=specials[1:],
                               model_max_length=32768)
    tokenizer.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"])
    Qwen2ForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    GenerationConfig(bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                     pad_token_id=ids["<|endoftext|>"], do_sample=False).save_pretrained(folder)


# Hub id -> the writer of its tiny stand-in (one per checkpoint a preset may name).
WRITERS: dict[str, Callable[[Path], None]] = {
    "stabilityai/stable-diffusion-2-1-base": lambda folder: _stable_diffusion(folder, v2=True),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": lambda folder: _stable_diffusion(folder, v2=False),
    "cerspense/zeroscope_v2_576w": _zeroscope,
    "openai/clip-vit-base-patch32": _clip,
    "google/owlvit-base-patch32": _owlvit,
    "Intel/dpt-hybrid-midas": _dpt_hybrid,
    "nvidia/segformer-b0-finetuned-ade-512-512": _segformer_ade,
    "Qwen/Qwen2.5-0.5B-Instruct": _qwen,
}


def _blob_name(path: Path) -> str:
    """The hub's blob name: sha256 for LFS files (weights), the git blob sha1 for the rest."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_to_cache(folder: Path, cache: Path, repo_id: str) -> Path:
    """Store ``folder`` as ``repo_id``'s ``main`` in the cache ``cache`` (blobs, snapshot links, refs/main);
    returns the snapshot folder. The commit id is a digest of the files, so equal contents share it."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    names = {p.relative_to(folder).as_posix(): _blob_name(p) for p in files}
    commit = hashlib.sha1(json.dumps(names, sort_keys=True).encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for path in files:
        relative = path.relative_to(folder)
        blob = repo / "blobs" / names[relative.as_posix()]
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def write_hub_shaped_cache(cache: str | Path, preset: str = "hub", seed: int = 0) -> dict[str, Path]:
    """Write a tiny stand-in of every hub source of ``preset`` into the cache folder ``cache`` (what
    ``HF_HUB_CACHE`` names); returns hub id -> snapshot folder. Weights are seeded: the same ``seed`` writes
    the same files. Raises :class:`InvalidInputError` for a hub id with no writer."""
    cache = Path(cache)
    repo_ids = list(dict.fromkeys(s.location for s in get_preset(preset).sources.values() if not s.local))
    missing = [r for r in repo_ids if r not in WRITERS]
    if missing:
        raise InvalidInputError(f"No hub-shaped stand-in for {missing}; add a writer to WRITERS.")
    snapshots = {}
    with tempfile.TemporaryDirectory() as staging:
        for index, repo_id in enumerate(repo_ids):
            torch.manual_seed(seed + index)
            folder = Path(staging) / str(index)
            WRITERS[repo_id](folder)
            snapshots[repo_id] = commit_to_cache(folder, cache, repo_id)
    return snapshots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, type=Path, help="Hugging Face cache folder (HF_HUB_CACHE)")
    parser.add_argument("--preset", default="hub")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for repo_id, snapshot in write_hub_shaped_cache(args.cache, args.preset, args.seed).items():
        print(f"{repo_id}: {snapshot}")
    print(f"HF_HUB_CACHE={args.cache} HF_HUB_OFFLINE=1 python app.py --preset {args.preset}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
