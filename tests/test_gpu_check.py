"""scripts/gpu_check.sh: its CPU dry run takes every step of the GPU check and writes the report; without a GPU
and without --dry-run it refuses before installing anything."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from pipelines.models.presets import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.sh"


def run_script(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PY": sys.executable, "WORLDSTUDIO_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_dry_run_takes_every_step_and_writes_the_report(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_script("--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["ok"] is True and report["seconds"] < report["time_limit"] == 480
    tests = report["tests"]
    # gsplat vs the CPU rasterizer, four runners on the hub-shaped models, the tiny pack's Match/FlexEControl/Mojito.
    assert tests["collected"] >= 8 and tests["failed"] == []
    if not torch.cuda.is_available():
        assert tests["skipped"] == tests["collected"]
    rows = {row["method"]: row for row in report["flexecontrol_sd15"]["rows"] if row["name"] == "training_step"}
    assert set(rows) == {"full", "flexecontrol"} and all(row["value"] > 0 for row in rows.values())
    assert rows["flexecontrol"]["trainable"] < 0.5 * rows["full"]["trainable"]  # eq. 9.2's sharing, on SD 1.5's layout
    assert rows["full"]["config"] == "small" and rows["full"]["image_side"] == 64


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine may have a GPU")
def test_without_a_gpu_the_real_check_refuses_before_installing(tmp_path):
    done = run_script("--out", str(tmp_path / "report.json"), timeout=60)
    assert done.returncode == 1 and "--dry-run" in done.stderr and not (tmp_path / "report.json").exists()
