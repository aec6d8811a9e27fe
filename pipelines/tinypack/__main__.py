"""Train the tiny pack from scratch: ``python -m pipelines.tinypack --out assets/models/tiny``.

Stages: ``vae`` (autoencoder), ``t2i`` (UNet + text encoder; needs the
autoencoder), ``clip``. Fixed seeds; runs on a CPU, a GPU or under
``accelerate launch``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPImageProcessor, CLIPProcessor

from ..errors import WorldStudioError
from ..models.tokenizers import closed_vocabulary_tokenizer
from ..shapesworld import vocabulary
from ..utils import seed_everything, set_torch_threads
from ..training import build_inference_scheduler
from .config import TinyPackConfig
from .data import build_scene_arrays
from .report import write_report
from .train import CLIP_MEAN, CLIP_STD, train_clip, train_text_to_image, train_vae

STAGES = ("vae", "t2i", "clip")


def save_half_precision(model, folder: Path) -> None:
    """Store ``model`` as float16 safetensors (diffusers loads them back as float32).

    Keeps the UNet under the pack's 10 MB per file; the rounding is far below
    the noise of sampling.
    """
    model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    model.to(torch.float32)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.tinypack", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("assets/models/tiny"))
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--smoke", action="store_true", help="two steps of each stage on 16 scenes")
    parser.add_argument("--num-scenes", type=int, default=None)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps")
    args = parser.parse_args(argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.num_scenes is not None and args.num_scenes < 16:
        parser.error("--num-scenes must be at least 16")
    if args.steps_scale <= 0:
        parser.error("--steps-scale must be positive")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_torch_threads()
    config = TinyPackConfig.smoke() if args.smoke else TinyPackConfig()
    if args.num_scenes:
        config.num_scenes = args.num_scenes
    for schedule in (config.vae, config.text_to_image, config.clip):
        schedule.steps = max(1, round(schedule.steps * args.steps_scale))
    seed_everything(config.seed)
    accelerator = Accelerator()
    started = time.perf_counter()
    tokenizer = closed_vocabulary_tokenizer(vocabulary(), model_max_length=config.sizes.max_tokens)
    scenes = build_scene_arrays(config.num_scenes, config.sizes.image_size)
    sd_dir, clip_dir = args.out / "shapes-sd", args.out / "shapes-clip"
    logs = []

    if "vae" in args.stages:
        vae, log = train_vae(config, scenes, accelerator)
        logs.append(log)
        if accelerator.is_main_process:  # saved now, so a later stage can start from it
            vae.save_pretrained(sd_dir / "vae", safe_serialization=True)
    else:
        vae = AutoencoderKL.from_pretrained(sd_dir / "vae", local_files_only=True, use_safetensors=True)
    if "t2i" in args.stages:
        unet, text_encoder, log = train_text_to_image(config, scenes, vae, tokenizer, accelerator)
        logs.append(log)
        if accelerator.is_main_process:
            pipeline = StableDiffusionPipeline(
                vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                scheduler=build_inference_scheduler(), safety_checker=None, feature_extractor=None,
                image_encoder=None, requires_safety_checker=False,
            )
            pipeline.save_pretrained(sd_dir, safe_serialization=True)
            save_half_precision(unet, sd_dir / "unet")
    if "clip" in args.stages:
        clip, log = train_clip(config, scenes, tokenizer, accelerator)
        logs.append(log)
        if accelerator.is_main_process:
            clip.save_pretrained(clip_dir, safe_serialization=True)
            size = config.sizes.image_size
            image_processor = CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
            )
            CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(clip_dir)
    report = {}
    if accelerator.is_main_process:
        report = write_report(logs, args.out, {
            "num_scenes": config.num_scenes, "smoke": args.smoke, "threads": torch.get_num_threads(),
            "device": str(accelerator.device), "processes": accelerator.num_processes,
            "total_seconds": round(time.perf_counter() - started, 1),
        })
    return report


if __name__ == "__main__":
    try:
        main()
    except WorldStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
