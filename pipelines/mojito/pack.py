"""Writing the tiny text-to-video pack: a ``TextToVideoSDPipeline`` folder plus the MIM's ``motion_encoder``.

Every file stays under the pack's 10 MB: the UNet3D is stored in float16
(as the tiny pack stores its UNet) and sharded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import TextToVideoSDPipeline

from ..training import build_inference_scheduler

# diffusers shards a model's safetensors above this size.
MAX_SHARD = "8MB"
MOTION_ENCODER_FOLDER = "motion_encoder"


def save_half_precision_sharded(model, folder: Path) -> None:
    """``model`` as float16 safetensors in shards of at most :data:`MAX_SHARD` (loads back as float32)."""
    model.to(torch.float16).save_pretrained(folder, safe_serialization=True, max_shard_size=MAX_SHARD)
    model.to(torch.float32)


def save_pack(out: Path, base, unet, text_encoder, motion_encoder) -> None:
    """Write the pipeline (autoencoder and tokenizer of ``base``, the trained parts) to ``out``."""
    pipeline = TextToVideoSDPipeline(vae=base.vae, text_encoder=text_encoder, tokenizer=base.tokenizer, unet=unet,
                                     scheduler=build_inference_scheduler())
    pipeline.save_pretrained(out, safe_serialization=True)
    for stale in (out / "unet").glob("diffusion_pytorch_model*.safetensors*"):
        stale.unlink()
    save_half_precision_sharded(unet, out / "unet")
    motion_encoder.save_pretrained(out / MOTION_ENCODER_FOLDER, safe_serialization=True)
