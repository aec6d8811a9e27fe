"""Does a Mojito pack's denoiser use the MIM's level? (issue 19's intensity bars, thesis 10.3.3)

The intensity sweep (``bench/mojito.py --parts intensity``) asks whether generated videos speed up with the
level; this asks the cheaper question under it: on held-out ShapesWorld videos with a known level (one object,
paths starting on the side they leave from, the caption's speed word removed, as the sweep's captions), how
much worse does the denoiser predict the noise when it is told a far level (7 for true levels 1-4, else 1),
"none", or no caption instead of the truth? Per timestep band, over the whole latent and over the latent cells
the truth object covers (where a wrong speed puts the object in the wrong place). Same videos, noise and
timesteps for every pack, so packs compare directly.

JSON lines: ``band`` (per band: each condition's error over the true condition's, ``[whole, object cells]``;
1.0 = that input is not used) and ``mim_signal`` (the far level's object-cell ratio averaged over t >= 600,
where only the conditions can say where the object is, beside the caption's).
Run: ``WORLDSTUDIO_THREADS=2 .venv/bin/python bench/mojito_mim_signal.py --model PACK [--run LABEL]``
(about 1.5 min a pack on two threads).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import emit, machine  # noqa: E402
from pipelines.models import TINY_PACK_DIR  # noqa: E402
from pipelines.mojito import MojitoPipeline  # noqa: E402
from pipelines.mojito.train import denoiser_of, without_speed_word  # noqa: E402
from pipelines.shapesworld import sample_video  # noqa: E402
from pipelines.training import SceneArrays, build_train_scheduler, encode_latents, tokenize  # noqa: E402

BENCH = "mojito_mim_signal"
N_FRAMES = 16
BANDS = ((0, 300), (300, 600), (600, 800), (800, 1000))
# Held-out video seeds (training uses 0..num_videos-1).
FIRST_SEED = 900_000
# A latent cell is the object's if the object covers this share of it.
OBJECT_CELL = 0.3


def held_out_videos(count: int, size: int, latent_side: int) -> tuple[list, np.ndarray]:
    """The first ``count`` one-object leaving-side videos from :data:`FIRST_SEED`, and each one's object cells
    [count, T, h, w] (bool) at the latent's side."""
    videos, seed = [], FIRST_SEED
    while len(videos) < count:
        video = sample_video(seed, size=size, n_frames=N_FRAMES, start="leaving_side")
        if len(video.objects) == 1:
            videos.append(video)
        seed += 1
    cell = size // latent_side
    cover = np.stack([v.objects[0].masks.reshape(N_FRAMES, latent_side, cell, latent_side, cell).mean(axis=(2, 4))
                      for v in videos])
    return videos, cover > OBJECT_CELL


@torch.no_grad()
def band_errors(pack: Path, count: int) -> dict[str, dict[str, list[float]]]:
    """Per band, each condition's squared error over the true condition's, ``[whole latent, object cells]``."""
    pipe = MojitoPipeline.from_pretrained(pack, local_files_only=True)
    model = denoiser_of(pipe).eval()
    side = model.unet.config.sample_size
    videos, cells = held_out_videos(count, side * 4, side)
    frames = np.stack([v.frames for v in videos])  # [B, T, H, W, 3] uint8
    latents, _ = encode_latents(pipe.vae, SceneArrays(frames.reshape(-1, *frames.shape[2:]), []), "cpu")
    latents = (latents * pipe.vae.config.scaling_factor).unflatten(0, (count, N_FRAMES)).permute(0, 2, 1, 3, 4)
    objects = torch.from_numpy(cells)[:, None].expand(-1, latents.shape[1], -1, -1, -1)
    max_tokens = pipe.tokenizer.model_max_length
    captions = tokenize(pipe.tokenizer, [without_speed_word(v.caption) for v in videos], max_tokens)
    empty = tokenize(pipe.tokenizer, [""] * count, max_tokens)
    levels = [v.intensity for v in videos]
    conditions = {"true": (captions, levels), "far_level": (captions, [7 if lv <= 4 else 1 for lv in levels]),
                  "no_level": (captions, [None] * count), "no_caption": (empty, levels)}
    scheduler, generator = build_train_scheduler(), torch.Generator().manual_seed(0)
    out = {}
    for low, high in BANDS:
        timesteps = torch.randint(low, high, (count,), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        errors = {}
        for name, (ids, rows) in conditions.items():
            squared = (model(noisy, timesteps, ids, model.motion_encoder.index(rows)) - noise) ** 2
            errors[name] = (float(squared.mean()), float(squared[objects].mean()))
        true = errors.pop("true")
        out[f"{low}-{high}"] = {name: [round(e[0] / true[0], 4), round(e[1] / true[1], 4)] for name, e in errors.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TINY_PACK_DIR / "shapes-t2v")
    parser.add_argument("--run", default=None, help="label of the pack in the JSON lines (default: its folder)")
    parser.add_argument("--videos", type=int, default=16)
    args = parser.parse_args()
    emit(BENCH, "machine", machine())
    run = args.run or args.model.name
    bands = band_errors(args.model, args.videos)
    for band, ratios in bands.items():
        emit(BENCH, "band", band, run=run, videos=args.videos, **ratios)
    high = [b for b in bands if int(b.split("-")[0]) >= 600]
    emit(BENCH, "mim_signal", round(float(np.mean([bands[b]["far_level"][1] for b in high])), 4), run=run,
         videos=args.videos, caption=round(float(np.mean([bands[b]["no_caption"][1] for b in high])), 4),
         measure="object-cell error with a far level / with the true level, t >= 600 (1.0: the level is not used)")


if __name__ == "__main__":
    main()
