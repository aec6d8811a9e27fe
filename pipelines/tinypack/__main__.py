"""Train the tiny pack from scratch: ``python -m pipelines.tinypack --out assets/models/tiny``.

Stages: ``vae`` (autoencoder), ``t2i`` (UNet + text encoder; needs the
autoencoder), ``clip``. Fixed seeds; runs on a CPU, a GPU or under
``accelerate launch``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
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
    parser.add_argument("--t2i-steps", type=int, default=None, help="text-to-image steps (after --steps-scale)")
    parser.add_argument("--t2i-batch", type=int, default=None, help="text-to-image batch size")
    parser.add_argument("--attention-supervision", type=float, default=None,
                        help="weight of eq. 9.4's L_ca in text-to-image pretraining (0: off)")
    parser.add_argument("--supervision-max-timestep", type=int, default=None,
                        help="supervise attention only on samples noised to at most this timestep")
    parser.add_argument("--supervision-min-timestep", type=int, default=None,
                        help="supervise attention only on samples noised to at least this timestep")
    parser.add_argument("--text-grounding", type=float, default=None,
                        help="weight of the text grounding term (object words' features say where the object is)")
    parser.add_argument("--object-mix", type=float, nargs=3, default=None, metavar=("ONE", "TWO", "THREE"),
                        help="relative frequency of 1-, 2- and 3-object training scenes")
    parser.add_argument("--uniform-objects", action="store_true", help="the scene sampler's own 1-3 objects (pack v1)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="write resumable text-to-image checkpoints (step-NNNNN) into this folder")
    parser.add_argument("--checkpoint-every", type=int, default=300)
    parser.add_argument("--resume", type=Path, default=None, help="continue text-to-image from a checkpoint folder")
    parser.add_argument("--init", type=Path, default=None,
                        help="fine-tune: start text-to-image from a checkpoint folder's EMA weights, fresh optimiser")
    parser.add_argument("--t2i-lr", type=float, default=None, help="text-to-image peak learning rate")
    parser.add_argument("--v-prediction", action="store_true",
                        help="the UNet predicts velocity over a zero-terminal-SNR schedule (Lin et al. 2023)")
    parser.add_argument("--snr-gamma", type=float, default=None, help="Min-SNR gamma (0: plain MSE)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 autocast in the autoencoder and text-to-image forward passes (float32 weights; "
                             "on by default)")
    parser.add_argument("--head-width", type=int, default=None, help="UNet channels per attention head (0: 16 heads, v1)")
    args = parser.parse_args(argv)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.num_scenes is not None and args.num_scenes < 16:
        parser.error("--num-scenes must be at least 16")
    if args.steps_scale <= 0:
        parser.error("--steps-scale must be positive")
    if args.init is not None and args.resume is not None:
        parser.error("--init starts a new training from a checkpoint; --resume continues one: pick one")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    set_torch_threads()
    config = TinyPackConfig.smoke() if args.smoke else TinyPackConfig()
    if args.num_scenes:
        config.num_scenes = args.num_scenes
    for schedule in (config.vae, config.text_to_image, config.clip):
        schedule.steps = max(1, round(schedule.steps * args.steps_scale))
    if args.t2i_steps:
        config.text_to_image.steps = args.t2i_steps
    if args.t2i_batch:
        config.text_to_image.batch_size = args.t2i_batch
    if args.attention_supervision is not None:
        config.attention_supervision = args.attention_supervision
    if args.supervision_max_timestep is not None:
        config.supervision_max_timestep = args.supervision_max_timestep
    if args.text_grounding is not None:
        config.text_grounding = args.text_grounding
    if args.supervision_min_timestep is not None:
        config.supervision_min_timestep = args.supervision_min_timestep
    if args.t2i_lr is not None:
        config.text_to_image.learning_rate = args.t2i_lr
    if args.object_mix is not None:
        config.object_count_weights = tuple(args.object_mix)
    if args.uniform_objects:
        config.object_count_weights = None
    if args.bf16 is not None:
        config.bf16 = args.bf16
    if args.v_prediction:
        config.prediction_type, config.zero_terminal_snr = "v_prediction", True
    if args.snr_gamma is not None:
        config.snr_gamma = args.snr_gamma or None
    if args.head_width is not None:
        config.sizes.head_width = args.head_width or None
    seed_everything(config.seed)
    # find_unused_parameters: the text encoder's pooler is built but its output is never read.
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    started = time.perf_counter()
    tokenizer = closed_vocabulary_tokenizer(vocabulary(), model_max_length=config.sizes.max_tokens)
    size = config.sizes.image_size
    scenes = build_scene_arrays(config.num_scenes, size, config.object_count_weights, config.seed,
                                mask_side=size // 4 if config.attention_supervision > 0 or config.text_grounding > 0 else None)
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
        unet, text_encoder, log = train_text_to_image(config, scenes, vae, tokenizer, accelerator, args.checkpoints,
                                                      args.checkpoint_every, args.resume, args.init)
        logs.append(log)
        if accelerator.is_main_process:
            pipeline = StableDiffusionPipeline(
                vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                scheduler=build_inference_scheduler(config.prediction_type, config.zero_terminal_snr),
                safety_checker=None, feature_extractor=None,
                image_encoder=None, requires_safety_checker=False,
            )
            pipeline.save_pretrained(sd_dir, safe_serialization=True)
            save_half_precision(unet, sd_dir / "unet")
    if "clip" in args.stages:
        clip, log = train_clip(config, scenes, tokenizer, accelerator)
        logs.append(log)
        if accelerator.is_main_process:
            clip.save_pretrained(clip_dir, safe_serialization=True)
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
            "total_seconds": round(time.perf_counter() - started, 1), "config": asdict(config),
        })
    return report


if __name__ == "__main__":
    try:
        main()
    except WorldStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
