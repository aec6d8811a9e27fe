"""The Mojito bench's split over worker processes (bench/mojito.py: worker_commands)."""

import argparse
import json

import numpy as np
import pytest

from bench.mojito import ABLATION_UNITS, NO_MIM_UNITS, worker_commands


def _args(workers: int, n: int = 51, mim_cases: int = 12, intensity_guidance=None) -> argparse.Namespace:
    return argparse.Namespace(n=n, mim_cases=mim_cases, workers=workers, subset=2, steps=10, guided_steps=5,
                              strength=0.1, model="m", intensity_guidance=intensity_guidance)


def _slices(commands):
    return [(c[c.index("--parts") + 1].split(","), tuple(int(v) for v in c[c.index("--cases") + 1].split(":")))
            for c in commands]


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_slices_cover_every_case_once_and_balance_the_work(workers):
    args = _args(workers)
    slices = _slices(worker_commands(args, {"main", "ablations", "studio"}))
    covered = [i for parts, (a, b) in slices if "main" in parts for i in range(a, b)]
    assert covered == list(range(args.n))
    assert [parts for parts, _ in slices if "ablations" in parts] == [slices[-1][0]]  # on the last worker only
    loads = [sum(1 + NO_MIM_UNITS * (i < args.mim_cases) for i in range(a, b) if "main" in parts)
             + ABLATION_UNITS * ("ablations" in parts) for parts, (a, b) in slices]
    total = args.n + NO_MIM_UNITS * args.mim_cases + ABLATION_UNITS
    assert len(slices) == workers
    assert sum(loads) == pytest.approx(total)
    # within about a case of an even share, except that the ablations cannot be split
    share = max(total / workers, ABLATION_UNITS)
    assert all(abs(load - share) <= 1.5 for load in loads[:-1] if ABLATION_UNITS < total / workers)
    assert loads[-1] <= share + 1.5
    assert max(loads[:-1]) - min(loads[:-1]) <= 1.5


def test_ablations_alone_run_in_one_worker():
    slices = _slices(worker_commands(_args(3), {"ablations"}))
    assert slices == [(["ablations"], (0, 0))]


def test_workers_get_the_intensity_guidance_only_when_set():
    assert all("--intensity-guidance" not in c for c in worker_commands(_args(2), {"main"}))
    commands = worker_commands(_args(2, intensity_guidance=15.0), {"main"})
    assert all(c[c.index("--intensity-guidance") + 1] == "15.0" for c in commands) and len(commands) == 2


class _SpeedPipe:
    """Stands in for the pipeline: a "video" whose measured intensity is 0.8 x level + 1 with the MIM, 4 without."""

    def set_progress_bar_config(self, **kwargs):
        pass

    def __call__(self, caption, intensity, use_motion_encoder=True, **kwargs):
        assert "quickly" not in caption and "slowly" not in caption
        return argparse.Namespace(frames=np.full(2, 0.8 * intensity + 1 if use_motion_encoder else 4.0))


def test_intensity_sweep_reports_spearman_and_alignment_against_the_none_row(monkeypatch, capsys):
    import bench.mojito as bench

    monkeypatch.setattr(bench, "motion_alignment", lambda frames, level: (float(frames[0]), None))
    bench.intensity_sweep(_SpeedPipe(), argparse.Namespace(sweep_captions=2, steps=3, intensity_guidance=None))
    rows = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["intensity_sweep"]["value"] == 1.0 and rows["intensity_sweep"]["met"]
    alignment = rows["intensity_sweep_alignment"]
    # with: |0.8 l + 1 - l| / 10 = |1 - 0.2 l| / 10, mean over l = 1..10 -> 0.05; without: mean |4 - l| / 10 = 0.27
    assert alignment["value"] == pytest.approx(0.05) and alignment["without_mim"] == pytest.approx(0.27)
    assert alignment["met"] and alignment["ratio"] == pytest.approx(5.4)
