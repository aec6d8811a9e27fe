"""The GPU check's steps and its one JSON report (``scripts/gpu_check.sh`` runs this after installing).

1. ``pytest -m gpu``: gsplat against the CPU reference rasterizer, every runner in fp16 on the hub-shaped
   models (``tests/test_hub_preset.py[cuda]``), the tiny pack on CUDA (``tests/test_gpu.py``, Match's accuracy
   checks of ``tests/test_matching_pack.py[cuda]``);
2. FlexEControl against the full copy on Stable Diffusion 1.5's UNet config at 512x512 in fp16 with random
   weights: seconds per training step and peak memory (``bench/flexecontrol.py --parts sd15_scale``);
3. the report: the machine, test outcomes (failures by name), the bench rows, seconds, and ``ok``.

``--dry-run`` takes the same steps on the CPU at toy sizes (SD 1.5's layout at toy widths, 64 pixels, fp32):
the gpu tests are collected and skip, the bench runs its code path. The exit status is 0 when ``ok``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The whole check (tests and bench, not the install) must fit in this many seconds (issue 22: 8 minutes).
TIME_LIMIT = 480
# bench/flexecontrol.py's arguments for the measurement: on a GPU, and for the CPU dry run.
BENCH_ARGS = {
    "gpu": ["--sd15-device", "cuda", "--sd15-dtype", "float16", "--sd15-side", "512", "--sd15-config", "sd15",
            "--sd15-steps", "5"],
    "dry-run": ["--sd15-device", "cpu", "--sd15-dtype", "float32", "--sd15-side", "64", "--sd15-config", "small",
                "--sd15-steps", "1"],
}


def run_tests(env: dict) -> dict:
    """``pytest -m gpu`` in a child process: counts, the names of failed tests and the exit status."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                               f"--junitxml={report}"], cwd=ROOT, env=env, capture_output=True, text=True)
        if not report.is_file():
            return {"returncode": done.returncode, "error": done.stderr[-2000:] or done.stdout[-2000:]}
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = suite.findall("testcase")
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in cases
              if c.find("failure") is not None or c.find("error") is not None]
    skipped = sum(c.find("skipped") is not None for c in cases)
    return {"returncode": done.returncode, "collected": len(cases), "passed": len(cases) - len(failed) - skipped,
            "skipped": skipped, "failed": failed}


def run_bench(mode: str, env: dict) -> dict:
    """FlexEControl vs the full copy (bench/flexecontrol.py part sd15_scale): its JSON rows and exit status."""
    done = subprocess.run([sys.executable, "bench/flexecontrol.py", "--parts", "sd15_scale", *BENCH_ARGS[mode]],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {"returncode": done.returncode, "rows": [r for r in rows if r["name"] != "machine"],
            **({"error": done.stderr[-2000:]} if done.returncode else {})}


def gpu_name() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at toy sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    parser.add_argument("--install-seconds", type=float, default=None, help="time the install took (reported)")
    args = parser.parse_args(argv)
    mode = "dry-run" if args.dry_run else "gpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORLDSTUDIO_THREADS": os.environ.get("WORLDSTUDIO_THREADS", "1")}
    started = time.perf_counter()
    tests = run_tests(env)
    bench = run_bench(mode, env)
    seconds = round(time.perf_counter() - started, 1)
    gpu = gpu_name()
    ok = (tests.get("returncode") == 0 and not tests.get("failed") and bench["returncode"] == 0
          and seconds < TIME_LIMIT and (args.dry_run or (gpu is not None and tests.get("passed", 0) > 0)))
    report = {"check": "gpu", "dry_run": args.dry_run, "ok": ok, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": {"python": platform.python_version(), "torch": version("torch"), "gpu": gpu,
                          "cpus": os.cpu_count()},
              "install_seconds": args.install_seconds, "seconds": seconds, "time_limit": TIME_LIMIT,
              "tests": tests, "flexecontrol_sd15": bench}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ok": ok, "out": str(args.out), "seconds": seconds, "tests": {k: v for k, v in tests.items()
                                                                                    if k != "error"}}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
