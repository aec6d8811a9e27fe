"""Train FlexEControl (or a baseline) on ShapesWorld or a folder of pictures (``--data``):
``python -m pipelines.flexecontrol --out DIR`` (several GPUs or machines: ``accelerate launch -m pipelines.flexecontrol``);
remake a generated PNG from its recipe: ``python -m pipelines.flexecontrol rerun FILE [--out OUT]``."""

from __future__ import annotations

import argparse
import sys

from ..errors import exits_on_error
from ..models import TINY_PACK_DIR
from ..models.presets import get_source
from ..training import TrainSchedule
from ..utils import set_torch_threads
from .encoder import METHODS, EncoderConfig
from .train import FlexTrainConfig, train_flexecontrol


@exits_on_error
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rerun"]:
        from ..recipes import rerun_main

        return rerun_main("flexecontrol", argv[1:])
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder for the trained tensors and the report")
    parser.add_argument("--base", default=None, help="base StableDiffusionPipeline folder (default: the tiny preset's control-base)")
    parser.add_argument("--method", default="flexecontrol", choices=METHODS)
    parser.add_argument("--targets", default="cross-attention", choices=("cross-attention", "all"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--scenes", type=int, default=2000)
    parser.add_argument("--data", default="", help="a folder of pictures (NAME.png + NAME.txt caption + optional "
                        "NAME.<type>.png maps) to train on instead of ShapesWorld scenes")
    parser.add_argument("--lambda-ca", type=float, default=0.01)
    parser.add_argument("--lambda-mask", type=float, default=0.01)
    parser.add_argument("--drawn-probability", type=float, default=0.0,
                        help="share of training maps drawn by hand (wobbly outlines, scribbles, brushes)")
    parser.add_argument("--embedding-lr-multiplier", type=float, default=1.0,
                        help="learning rate of the condition embedding and zero convolutions, times --lr")
    parser.add_argument("--cycle-weight", type=float, default=0.0,
                        help="weight of the cycle-consistency reward (ControlNet++; 0 = off)")
    parser.add_argument("--cycle-max-timestep", type=int, default=200)
    parser.add_argument("--reward-model", default=None,
                        help="reward segmenter folder (default: the tiny pack's shapes-seg)")
    parser.add_argument("--resume", default=None, help="a saved encoder folder (weights or checkpoint) to continue")
    parser.add_argument("--checkpoints", default=None, help="folder for a checkpoint every --checkpoint-every steps")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_torch_threads()
    base = args.base or str(get_source("tiny", "control-base").path)
    config = FlexTrainConfig(
        encoder=EncoderConfig(method=args.method, targets=args.targets),
        schedule=TrainSchedule(args.steps, args.batch_size, args.lr), lambda_ca=args.lambda_ca,
        lambda_mask=args.lambda_mask, num_scenes=args.scenes, seed=args.seed,
        drawn_probability=args.drawn_probability, embedding_lr_multiplier=args.embedding_lr_multiplier,
        cycle_weight=args.cycle_weight, cycle_max_timestep=args.cycle_max_timestep,
        data=args.data, reward_model=args.reward_model or (str(TINY_PACK_DIR / "shapes-seg") if args.cycle_weight else ""),
    )
    report = train_flexecontrol(base, args.out, config, resume=args.resume, checkpoint_dir=args.checkpoints,
                                checkpoint_every=args.checkpoint_every)
    print(f"trained {report['trainable_parameters']} parameters in {report['seconds']:.0f} s; last loss {report['losses'][-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
