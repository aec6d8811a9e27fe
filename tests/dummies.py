"""Tiny random diffusers/transformers components built in code, diffusers-style
(`get_dummy_components`): no files, no downloads, seconds on a CPU."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from pipelines.models.tokenizers import closed_vocabulary_tokenizer

WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "left", "of", "right")


def dummy_tokenizer(words=WORDS) -> CLIPTokenizer:
    """A closed-vocabulary CLIPTokenizer (each word one token), built with no files."""
    return closed_vocabulary_tokenizer(words, model_max_length=16)


def dummy_sd_components(seed: int = 0) -> dict:
    """Components of a 32x32 StableDiffusionPipeline with random weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
    )
    tokenizer = dummy_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)


def dummy_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(**dummy_sd_components(seed))
