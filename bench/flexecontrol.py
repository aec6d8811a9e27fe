"""FlexEControl efficiency and controllability (issue 5; thesis tables 9.1-9.3).

Prints JSON lines:

1. ``trainable_parameters``: FlexEControl, full copy, LoRA and PHM copied encoders over the tiny UNet and
   over Stable Diffusion 1.5's UNet, both built on the ``meta`` device from their configs (no weights).
   Bar: FlexEControl <= 0.5x the full copy on SD 1.5.
2. ``peak_training_memory_mb`` and ``seconds_per_iteration`` on the tiny config, same batch and condition
   draws for every method. Memory: the peak of tensor storage alive at once during the first training
   steps (``bench.common.LiveTensorBytes``, a dispatch mode that counts every op's outputs until they are
   freed; a CPU has no allocator statistics, and the resident size, measured before, varied by +-10-25 MB
   between identical runs), weights not counted, so it is activations, gradients and optimiser state;
   deterministic. Speed: the methods take turns step by step in one
   process, so load from neighbours hits them alike. Bars: <= 0.7x and <= 0.5x the full copy (memory
   also at a smaller batch, where parameters, gradients and optimiser state weigh more than activations).
   Speed also times ``embedding_only``, the full copy with nothing trainable but the condition embedding
   and the zero convolutions (no adapter, no weight gradient inside the copy): every method trains those
   and back-propagates through the whole copy to reach the embedding, so no method can be faster; its
   ratio to the full copy is the floor under the 0.5x bar on this config.
   Both are measured twice: with activations kept, and with gradient checkpointing in every method
   (``FlexTrainConfig.gradient_checkpointing``: diffusers' per-block recomputation in the copy and the
   frozen UNet), the usual setting for training a ControlNet-sized copy on one GPU.
3. ``controllability`` on 48 held-out ShapesWorld scenes (the test split; training used train-split scenes),
   25 steps, one seed per scene, after equal training (the weights `make tiny-flexecontrol` trains with the
   same steps, batch, data and seed): for one canny map, one segmentation, two canny maps (the scene split by
   object) and canny + segmentation (split by object), each with maps **drawn by hand** (wobbly outlines and
   brushes, ``pipelines.flexecontrol.strokes``, through the studio's ``from_drawing``) and **extracted** from the
   render: **object placement** (the share of the conditions' objects the detector finds where they were drawn,
   box IoU >= 0.5, and with the right shape and colour), segmentation mIoU against the truth, SSIM of the
   output's edges against the truth's Canny edges; FlexEControl vs the full copy vs no condition, and
   FlexEControl trained without L_ca and without L_mask (extracted maps). ``detector_ceiling`` is the detector's
   own mIoU on the renders (ControlNet++'s reading: a ratio to it). Bars of issue 18 (``placement_bar``,
   ``ceiling_ratio_bar``, ``two_types_bar``) and issue 5 (``controllability_bar``). ``--workers`` one-thread
   processes share the jobs.
4. ``studio_seconds``: the studio's generation path (``FlexEControlRunner.run``, as the tab calls it) for a 64x64 image with
   two drawn conditions at 25 steps. Bar: <= 3 s.
5. ``seconds_per_iteration`` with ``config: sd15``: the full copy, FlexEControl and the embedding-only floor
   on Stable Diffusion 1.5's UNet config with random weights (timing only), 64x64 images, batch 1, L_ldm:
   the regime of the thesis' table 9.1, where parameters rather than activations set the cost.
6. ``training_step`` (part ``sd15_scale``, what ``scripts/gpu_check.sh`` runs): the full copy and FlexEControl one
   after the other on ``--sd15-device`` in ``--sd15-dtype`` (fp16: the frozen weights in fp16, the trained ones in
   fp32 under autocast) at ``--sd15-side`` pixels: median seconds per step and, on CUDA, the peak of allocated
   memory and its part above the frozen UNet. ``--sd15-config small`` is SD 1.5's layout at toy widths (the
   script's CPU dry run).

Run: ``WORLDSTUDIO_THREADS=1 .venv/bin/python bench/flexecontrol.py > bench/results/flexecontrol.jsonl``
(``--parts`` and ``--models`` run a subset; the machine line records the load average, since every
timing here is only comparable on an equally loaded machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import LiveTensorBytes, emit, machine  # noqa: E402
from pipelines.flexecontrol.encoder import ALWAYS_TRAINED, METHODS, EncoderConfig, build_copied_encoder  # noqa: E402
from pipelines.models import TINY_PACK_DIR  # noqa: E402
from pipelines.utils import set_torch_threads  # noqa: E402

BENCH = "flexecontrol"
BASE = TINY_PACK_DIR / "shapes-sd"
WEIGHTS = TINY_PACK_DIR / "flexecontrol"
# Variants trained with equal steps by `make tiny-flexecontrol` (folder -> label).
VARIANTS = {"flexecontrol": WEIGHTS, "full": WEIGHTS / "equal-training" / "full",
            "flexecontrol_without_ca": WEIGHTS / "equal-training" / "without-ca",
            "flexecontrol_without_mask": WEIGHTS / "equal-training" / "without-mask"}
# Stable Diffusion 1.5's UNet (runwayml/stable-diffusion-v1-5 unet/config.json), for counting only.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)


# SD 1.5's block layout at toy widths: the CPU dry run of the scale measurement (timing of the code path only).
SMALL_UNET = {**SD15_UNET, "block_out_channels": (32, 64, 64, 64), "layers_per_block": 1, "cross_attention_dim": 32,
              "norm_num_groups": 8}
UNET_CONFIGS = {"sd15": SD15_UNET, "small": SMALL_UNET}


def parameter_counts() -> None:
    from diffusers import UNet2DConditionModel

    tiny_config = json.loads((BASE / "unet" / "config.json").read_text())
    tiny_config = {k: v for k, v in tiny_config.items() if not k.startswith("_")}
    for name, config, scale in (("tiny", tiny_config, 4), ("sd15", SD15_UNET, 8)):
        with torch.device("meta"):
            unet = UNet2DConditionModel(**config)
            counts = {m: build_copied_encoder(unet, scale, EncoderConfig(method=m), copy_weights=False).num_trainable()
                      for m in METHODS}
        for method, count in counts.items():
            emit(BENCH, "trainable_parameters", count, config=name, method=method,
                 ratio_to_full=round(count / counts["full"], 4))
        emit(BENCH, "trainable_parameters_bar", counts["flexecontrol"] / counts["full"] <= 0.5, config=name,
             bar="flexecontrol <= 0.5x full", ratio=round(counts["flexecontrol"] / counts["full"], 4))


def _training_setup(num_scenes: int = 128):
    from accelerate import Accelerator

    from pipelines.flexecontrol.data import build_control_scenes
    from pipelines.flexecontrol.train import load_base_pipeline, prepare_base

    pipe = load_base_pipeline(BASE)
    scenes = build_control_scenes(num_scenes, 64, pipe.tokenizer, pipe.tokenizer.model_max_length)
    return Accelerator(cpu=True), scenes, prepare_base(pipe, scenes, "cpu")


def _trainer(method: str, steps: int, batch: int, accelerator, scenes, base, checkpointing: bool = False):
    from pipelines.flexecontrol.train import FlexTrainConfig, FlexTrainer
    from pipelines.training import TrainSchedule

    config = FlexTrainConfig(encoder=EncoderConfig(method=method), schedule=TrainSchedule(steps, batch, 1e-3),
                             gradient_checkpointing=checkpointing)
    return FlexTrainer(config, base, scenes, accelerator)


def measure_memory(method: str, steps: int, batch: int, accelerator, scenes, base, checkpointing: bool) -> float:
    """Peak MB of tensors alive at once during ``steps`` training steps (:class:`bench.common.LiveTensorBytes`),
    the frozen and trainable weights not counted: activations, gradients and optimiser state."""
    trainer = _trainer(method, steps, batch, accelerator, scenes, base, checkpointing)
    draws = np.random.default_rng(0)
    weights = [*trainer.encoder.parameters(), *trainer.encoder.buffers(), *trainer.unet.parameters(),
               *trainer.unet.buffers()]
    with LiveTensorBytes(weights) as memory:
        for _ in range(steps):
            trainer.step(draws.integers(0, len(scenes.images), batch))
    return memory.peak / 2**20


# The timing's lower bound: the copied encoder with only the condition embedding and the zero convolutions
# trainable (what every method here trains), so no weight gradient inside the copy and no adapter.
EMBEDDING_ONLY = "embedding_only"


def train_embedding_only(encoder):
    """Freeze a full-copy encoder (no adapter layers) except its condition embedding and zero convolutions."""
    encoder.controlnet.requires_grad_(False)
    for prefix in ALWAYS_TRAINED:
        getattr(encoder.controlnet, prefix).requires_grad_(True)
    return encoder


def _embedding_only_trainer(steps: int, batch: int, accelerator, scenes, base, checkpointing: bool):
    trainer = _trainer("full", steps, batch, accelerator, scenes, base, checkpointing)
    train_embedding_only(trainer.encoder)  # AdamW skips the frozen parameters, whose gradients stay None
    return trainer


def measure_speed(steps: int, batch: int, warmup: int, accelerator, scenes, base,
                  checkpointing: bool = False) -> dict[str, list[float]]:
    """Seconds per step of every method and of the embedding-only lower bound, taking turns step by step
    (same batches, same condition draws), so a neighbour's load changes them alike."""
    trainers = {m: _trainer(m, steps + warmup, batch, accelerator, scenes, base, checkpointing) for m in METHODS}
    trainers[EMBEDDING_ONLY] = _embedding_only_trainer(steps + warmup, batch, accelerator, scenes, base, checkpointing)
    draws = {m: np.random.default_rng(0) for m in trainers}
    times: dict[str, list[float]] = {m: [] for m in trainers}
    for round_ in range(steps + warmup):
        for method, trainer in trainers.items():
            index = draws[method].integers(0, len(scenes.images), batch)
            start = time.perf_counter()
            trainer.step(index)
            if round_ >= warmup:
                times[method].append(time.perf_counter() - start)
    return times


def efficiency(steps: int, memory_steps: int, batch: int, warmup: int, extra_memory_batches: list[int]) -> None:
    """Memory and speed with activations kept, then with gradient checkpointing in every method (the
    recomputation that makes activations small, so parameters, gradients and optimiser state dominate)."""
    accelerator, scenes, base = _training_setup()
    for checkpointing in (False, True):
        for size in [batch, *extra_memory_batches]:
            memory = {method: measure_memory(method, memory_steps, size, accelerator, scenes, base, checkpointing)
                      for method in METHODS}
            for method in METHODS:
                emit(BENCH, "peak_training_memory_mb", round(memory[method], 1), method=method, batch=size,
                     gradient_checkpointing=checkpointing, ratio_to_full=round(memory[method] / memory["full"], 3))
            emit(BENCH, "memory_bar", memory["flexecontrol"] <= 0.7 * memory["full"], bar="flexecontrol <= 0.7x full",
                 batch=size, gradient_checkpointing=checkpointing, ratio=round(memory["flexecontrol"] / memory["full"], 3))
        times = measure_speed(steps, batch, warmup, accelerator, scenes, base, checkpointing)
        speed = {m: statistics.median(t) for m, t in times.items()}
        for method in times:
            emit(BENCH, "seconds_per_iteration", round(speed[method], 4), method=method, batch=batch, steps=steps,
                 gradient_checkpointing=checkpointing, mean=round(statistics.mean(times[method]), 4),
                 ratio_to_full=round(speed[method] / speed["full"], 3))
        emit(BENCH, "speed_bar", speed["flexecontrol"] <= 0.5 * speed["full"], bar="flexecontrol <= 0.5x full",
             batch=batch, gradient_checkpointing=checkpointing, ratio=round(speed["flexecontrol"] / speed["full"], 3))


def sd15_speed(steps: int, warmup: int, image_side: int, batch: int) -> None:
    """Seconds per training step on Stable Diffusion 1.5's UNet config with random weights (timing does not
    depend on the values): the full copy, FlexEControl and the embedding-only floor take turns, eq. 9.3's
    L_ldm only (no scenes or text encoder at this size), ``image_side`` images, AdamW as in training.
    The regime the thesis measured, where parameters, not activations, set the cost."""
    from diffusers import UNet2DConditionModel

    from pipelines.training import TrainSchedule, make_optimizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).requires_grad_(False)
    encoders = {}
    for method in ("full", "flexecontrol", EMBEDDING_ONLY):
        encoder = build_copied_encoder(unet, 8, EncoderConfig(method="full" if method == EMBEDDING_ONLY else method))
        if method == EMBEDDING_ONLY:
            train_embedding_only(encoder)
        encoders[method] = (encoder.train(), make_optimizer(encoder.trainable_parameters(), TrainSchedule(steps, batch, 1e-5))[0])
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {m: [] for m in encoders}
    for round_ in range(steps + warmup):
        inputs = _sd15_inputs(generator, batch, image_side, SD15_UNET["cross_attention_dim"], torch.device("cpu"))
        for method, (encoder, optimizer) in encoders.items():
            start = time.perf_counter()
            _sd15_step(unet, encoder, optimizer, inputs, torch.float32)
            if round_ >= warmup:
                times[method].append(time.perf_counter() - start)
    speed = {m: statistics.median(t) for m, t in times.items()}
    for method, encoder_optimizer in encoders.items():
        emit(BENCH, "seconds_per_iteration", round(speed[method], 3), method=method, config="sd15", batch=batch,
             image_side=image_side, steps=steps, trainable=encoder_optimizer[0].num_trainable(),
             ratio_to_full=round(speed[method] / speed["full"], 3), weights="random (timing only)")
    emit(BENCH, "speed_sd15", speed["flexecontrol"] <= 0.5 * speed["full"], bar="flexecontrol <= 0.5x full (the bar "
         "is on the tiny config; this is the thesis' config)", ratio=round(speed["flexecontrol"] / speed["full"], 3))


def _sd15_inputs(generator, batch: int, side: int, text_width: int, device: torch.device) -> tuple:
    """Random latents, text embeddings, condition maps and timesteps of one step (timing does not read them)."""
    return tuple(t.to(device) for t in (
        torch.randn(batch, 4, side // 8, side // 8, generator=generator),
        torch.randn(batch, 77, text_width, generator=generator),
        torch.rand(batch, 3, side, side, generator=generator),
        torch.randint(0, 1000, (batch,), generator=generator)))


def _sd15_step(unet, encoder, optimizer, inputs: tuple, dtype: torch.dtype) -> None:
    """One training step with L_ldm only: the copy's residuals into the frozen UNet, backward, AdamW. Below
    fp32 the forward runs under autocast (the trained weights stay fp32)."""
    from contextlib import nullcontext

    from pipelines.flexecontrol.pipeline import fuse_residuals

    sample, text, maps, timestep = inputs
    device = sample.device
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    with autocast, encoder.condition_types(["canny"]):
        down, mid = fuse_residuals(encoder(sample, timestep, text, [("canny", maps)]), [1.0])
        prediction = unet(sample, timestep, encoder_hidden_states=text, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
        # Backward with the condition types still active (as in training: checkpointing re-runs adapted layers).
        torch.nn.functional.mse_loss(prediction.float(), sample.float()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def sd15_scale(device: str, dtype: str, image_side: int, steps: int, warmup: int, config: str) -> None:
    """The full copy and FlexEControl one after the other on ``device`` (module docstring, part 6)."""
    from diffusers import UNet2DConditionModel

    from pipelines.models import choose_placement
    from pipelines.training import TrainSchedule, make_optimizer

    placement = choose_placement(device, dtype)
    cuda = placement.device.type == "cuda"
    unet_config = UNET_CONFIGS[config]
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config).requires_grad_(False).to(placement.device, placement.dtype)
    seconds = {}
    for method in ("full", "flexecontrol"):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(placement.device)
        base = torch.cuda.memory_allocated(placement.device) if cuda else 0
        encoder = build_copied_encoder(unet, 8, EncoderConfig(method=method)).to(placement.device).train()
        trained = {id(p) for p in encoder.trainable_parameters()}
        for parameter in encoder.parameters():
            if id(parameter) not in trained:  # frozen: stored like the UNet
                parameter.data = parameter.data.to(placement.dtype)
        optimizer = make_optimizer(encoder.trainable_parameters(), TrainSchedule(steps, 1, 1e-5))[0]
        generator = torch.Generator().manual_seed(0)
        times = []
        for round_ in range(steps + warmup):
            inputs = _sd15_inputs(generator, 1, image_side, unet_config["cross_attention_dim"], placement.device)
            if cuda:
                torch.cuda.synchronize(placement.device)
            start = time.perf_counter()
            _sd15_step(unet, encoder, optimizer, inputs, placement.dtype)
            if cuda:
                torch.cuda.synchronize(placement.device)
            if round_ >= warmup:
                times.append(time.perf_counter() - start)
        seconds[method] = statistics.median(times)
        peak = torch.cuda.max_memory_allocated(placement.device) if cuda else None
        emit(BENCH, "training_step", round(seconds[method], 4), method=method, config=config, device=placement.describe(),
             image_side=image_side, batch=1, steps=steps, trainable=encoder.num_trainable(),
             peak_memory_mb=None if peak is None else round(peak / 2**20, 1),
             memory_above_unet_mb=None if peak is None else round((peak - base) / 2**20, 1),
             weights="random (timing and memory only)")
        del encoder, optimizer
    emit(BENCH, "training_step_ratio", round(seconds["flexecontrol"] / seconds["full"], 3), config=config,
         device=placement.describe(), image_side=image_side, bar="flexecontrol <= 0.5x full (thesis table 9.1)")


PARTS = ("parameters", "efficiency", "studio", "controllability", "sd15_speed", "sd15_scale")
# Settings of the controllability comparison (pipelines.flexecontrol.evaluate.SETTINGS) and the variants that
# run each source: the ablations only on extracted maps, to keep the bench inside its time.
CONTROL_SETTINGS = ("single_canny", "single_segmentation", "two_canny", "canny_segmentation")
ABLATIONS = ("flexecontrol_without_ca", "flexecontrol_without_mask")
NO_CONDITION = "no_condition"


def control_jobs(models: list[str]) -> list[tuple[str, str, str]]:
    """(model, setting, source) to generate and judge; the no-condition floor once per source."""
    jobs = []
    for model in models:
        sources = ("extracted",) if model in ABLATIONS else ("drawn", "extracted")
        jobs += [(model, setting, source) for source in sources for setting in CONTROL_SETTINGS]
    return jobs


_WORKER: dict = {}


def _control_worker_init(num_scenes: int) -> None:
    os.environ["WORLDSTUDIO_THREADS"] = "1"
    set_torch_threads()
    from pipelines.flexecontrol.data import build_control_scenes
    from pipelines.flexecontrol.train import load_base_pipeline

    base = load_base_pipeline(BASE)
    _WORKER["base"] = base
    _WORKER["scenes"] = build_control_scenes(num_scenes, 64, base.tokenizer, base.tokenizer.model_max_length,
                                             split="test")


def _control_job(job: tuple[str, str, str], steps: int) -> list[dict]:
    """Generate the job's images and judge them; the no-condition job judges one text-only batch against
    every setting and source."""
    from dataclasses import asdict

    from pipelines.flexecontrol import FlexEControlPipeline
    from pipelines.flexecontrol.evaluate import condition_slots, judge, score_model

    model, setting, source = job
    scenes, base = _WORKER["scenes"], _WORKER["base"]
    start = time.perf_counter()
    pipe = FlexEControlPipeline.from_pretrained(base, VARIANTS["flexecontrol" if model == NO_CONDITION else model])
    if model != NO_CONDITION:
        score = score_model(pipe, scenes, setting, source, steps=steps)
        return [{"model": model, **asdict(score), "seconds": round(time.perf_counter() - start, 1)}]
    generators = [torch.Generator().manual_seed(i) for i in range(len(scenes.images))]
    images = pipe.generate(scenes.captions, [], generators, num_inference_steps=steps, progress=False)
    rows = []
    for each_source in ("drawn", "extracted"):
        for each_setting in CONTROL_SETTINGS:
            slots, parts = condition_slots(scenes, each_setting, each_source)
            rows.append({"model": model, **asdict(judge(scenes, images, slots, parts, each_setting, each_source)),
                         "seconds": round(time.perf_counter() - start, 1)})
    return rows


def controllability(num_scenes: int, steps: int, models: list[str], workers: int) -> None:
    """Held-out scenes (test split), one seed per scene: FlexEControl, the full copy and the ablations under each
    setting and source, and the no-condition floor; object placement, segmentation mIoU, edge SSIM; the
    detector's ceiling; the issue's bars."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial
    from multiprocessing import get_context

    from pipelines.flexecontrol.data import build_control_scenes
    from pipelines.flexecontrol.evaluate import detector_ceiling
    from pipelines.flexecontrol.train import load_base_pipeline

    missing = [m for m in models if not VARIANTS[m].is_dir()]
    for label in missing:
        emit(BENCH, "controllability_missing", str(VARIANTS[label].relative_to(ROOT)), model=label)
    models = [m for m in models if m not in missing]
    base = load_base_pipeline(BASE)
    scenes = build_control_scenes(num_scenes, 64, base.tokenizer, base.tokenizer.model_max_length, split="test")
    ceiling = detector_ceiling(scenes)
    emit(BENCH, "detector_ceiling", round(ceiling, 4), metric="miou_segmentation", scenes=num_scenes,
         what="the detector's segmentation mIoU on the held-out renders themselves")
    jobs = control_jobs(models) + [(NO_CONDITION, "", "")]
    # The longest jobs (two conditions) first, so the workers finish together.
    jobs.sort(key=lambda job: job[1].startswith("single_") or job[0] == NO_CONDITION)
    scores: dict[tuple[str, str, str], dict] = {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_control_worker_init,
                             initargs=(num_scenes,)) as pool:
        for rows in pool.map(partial(_control_job, steps=steps), jobs):
            for row in rows:
                key = (row["model"], row["setting"], row["source"])
                scores[key] = row
                value = {k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v] if isinstance(v, list) else v)
                         for k, v in row.items() if k not in ("model", "setting", "source", "seconds", "objects")}
                emit(BENCH, "controllability", value, model=row["model"], setting=row["setting"], source=row["source"],
                     objects=row["objects"], scenes=num_scenes, steps=steps, seconds=row["seconds"])
    control_bars(scores, ceiling)


def control_bars(scores: dict[tuple[str, str, str], dict], ceiling: float) -> None:
    """Issue 18's bars and issue 5's 'within 10% of the full copy, above no condition', from the scores."""
    def get(model, setting, source):
        return scores.get((model, setting, source))

    for source in ("drawn", "extracted"):
        for setting in ("single_canny", "single_segmentation"):
            flex = get("flexecontrol", setting, source)
            if flex is None:
                continue
            none = get(NO_CONDITION, setting, source)
            emit(BENCH, "placement_bar", bool(flex["placed"] >= 0.8 and flex["right"] >= 0.6), setting=setting,
                 source=source, bar="placed >= 0.8 and right shape and colour >= 0.6", placed=round(flex["placed"], 4),
                 right=round(flex["right"], 4), no_condition_placed=round(none["placed"], 4) if none else None)
        seg = get("flexecontrol", "single_segmentation", source)
        if seg is not None:
            emit(BENCH, "ceiling_ratio_bar", bool(seg["miou_condition"] >= 0.8 * ceiling), source=source,
                 bar="segmentation mIoU against the map given (ControlNet++'s reading) >= 0.8x the detector's ceiling",
                 miou=round(seg["miou_condition"], 4), ceiling=round(ceiling, 4),
                 ratio=round(seg["miou_condition"] / ceiling, 4), miou_truth=round(seg["miou_segmentation"], 4),
                 ratio_truth=round(seg["miou_segmentation"] / ceiling, 4))
        pair = get("flexecontrol", "canny_segmentation", source)
        if pair is not None:
            emit(BENCH, "two_types_bar", bool(min(pair["placed_per_condition"]) >= 0.7), source=source,
                 bar="canny of one object and segmentation of another each place their object >= 0.7",
                 placed_per_condition=[round(v, 4) for v in pair["placed_per_condition"]])
    metrics = {"single_canny": ("ssim_canny", "placed"), "single_segmentation": ("miou_segmentation", "placed"),
               "two_canny": ("ssim_canny", "placed"), "canny_segmentation": ("ssim_canny", "miou_segmentation", "placed")}
    for source in ("drawn", "extracted"):
        for setting, names in metrics.items():
            flex, full, none = (get(m, setting, source) for m in ("flexecontrol", "full", NO_CONDITION))
            if flex is None or full is None or none is None:
                continue
            for metric in names:
                emit(BENCH, "controllability_bar", bool(flex[metric] >= 0.9 * full[metric] and flex[metric] > none[metric]),
                     setting=setting, source=source, metric=metric,
                     bar="flexecontrol within 10% of full copy and above no condition",
                     flexecontrol=round(flex[metric], 4), full=round(full[metric], 4), no_condition=round(none[metric], 4))


def studio_time(repeats: int) -> None:
    from pipelines.flexecontrol.conditions import from_upload
    from pipelines.flexecontrol.runner import ConditionInput, FlexEControlRequest, FlexEControlRunner
    from pipelines.models import ModelManager, choose_placement
    from pipelines.shapesworld import sample_scene
    from pipelines.shapesworld.conditions import canny

    scene = sample_scene(0, split="test")
    edges = cv2_resize(canny(scene), 256)
    segments = cv2_resize(from_upload(scene.image, "segmentation", 64), 256)
    drawn = [ConditionInput("canny", edges), ConditionInput("segmentation", segments)]
    runner = FlexEControlRunner(ModelManager("tiny", choose_placement("cpu")))

    def run(conditions, seed):
        runner.run(FlexEControlRequest(scene.caption, conditions, seed, 25), progress=True)

    run(drawn, 0)  # load and warm up
    times, plain = [], []
    for seed in range(repeats):  # taking turns with text-only generation, so the ratio survives a busy machine
        for chosen, record in ((drawn, times), ([], plain)):
            start = time.perf_counter()
            run(chosen, seed)
            record.append(time.perf_counter() - start)
    median = statistics.median(times)
    emit(BENCH, "studio_seconds", round(median, 3), best=round(min(times), 3), repeats=repeats, conditions=2,
         steps=25, size=64, threads=torch.get_num_threads(), load_average=os.getloadavg())
    emit(BENCH, "studio_text_only_seconds", round(statistics.median(plain), 3), best=round(min(plain), 3),
         ratio_two_conditions_to_text_only=round(median / statistics.median(plain), 3))
    emit(BENCH, "studio_bar", median <= 3.0, bar="64x64, two conditions, 25 steps <= 3 s")


def cv2_resize(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (side, side), interpolation=cv2.INTER_NEAREST)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per method")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-steps", type=int, default=3, help="training steps watched for peak memory")
    parser.add_argument("--extra-memory-batches", type=int, nargs="*", default=[2],
                        help="also measure memory at these batch sizes (the ratio depends on the batch)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--scenes", type=int, default=48, help="held-out scenes for controllability")
    parser.add_argument("--sample-steps", type=int, default=25, help="DDIM steps for the controllability images")
    parser.add_argument("--workers", type=int, default=2, help="one-thread processes for controllability")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--models", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="trained variants compared for controllability")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sd15-steps", type=int, default=3, help="timed steps per method on the SD 1.5 config")
    parser.add_argument("--sd15-side", type=int, default=64, help="image side for the SD 1.5 timing")
    parser.add_argument("--sd15-device", default="cpu", help="device of part sd15_scale (cuda on a GPU machine)")
    parser.add_argument("--sd15-dtype", default="float32", help="dtype of part sd15_scale (float16 on a GPU)")
    parser.add_argument("--sd15-config", default="sd15", choices=list(UNET_CONFIGS),
                        help="UNet config of part sd15_scale (small: SD 1.5's layout at toy widths)")
    args = parser.parse_args(argv)
    set_torch_threads()
    started = time.perf_counter()
    emit(BENCH, "machine", {**machine(), "load_average": os.getloadavg()})
    if "parameters" in args.parts:
        parameter_counts()
    if "efficiency" in args.parts:
        efficiency(args.steps, args.memory_steps, args.batch, args.warmup, args.extra_memory_batches)
    if "studio" in args.parts:
        studio_time(args.repeats)
    if "controllability" in args.parts:
        controllability(args.scenes, args.sample_steps, args.models, args.workers)
    if "sd15_speed" in args.parts:
        sd15_speed(args.sd15_steps, 1, args.sd15_side, 1)
    if "sd15_scale" in args.parts:
        sd15_scale(args.sd15_device, args.sd15_dtype, args.sd15_side, args.sd15_steps, 1, args.sd15_config)
    emit(BENCH, "total_seconds", round(time.perf_counter() - started, 1), bar="< 1200 s")


if __name__ == "__main__":
    main()
