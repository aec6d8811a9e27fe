"""Loss curves (PNG) and the JSON training report of the tiny pack."""

from __future__ import annotations

import json
from pathlib import Path

from ..training import StageLog


def write_report(logs: list[StageLog], out_dir: Path, extra: dict) -> dict:
    """Write ``training_report.json`` and ``loss_curves.png`` into ``out_dir``; return the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    report = dict(extra)
    report["stages"] = {
        log.name: {"seconds": round(log.seconds, 1), "every": log.every, "losses": [round(x, 5) for x in log.losses],
                   "final_loss": round(log.losses[-1], 5) if log.losses else None}
        for log in logs
    }
    previous = out_dir / "training_report.json"
    if previous.exists():  # a run of some stages keeps the others' records
        old = json.loads(previous.read_text())
        report["stages"] = {**old.get("stages", {}), **report["stages"]}
    previous.write_text(json.dumps(report, indent=2))

    stages = report["stages"]
    figure, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3), squeeze=False)
    for axis, (name, stage) in zip(axes[0], stages.items()):
        steps = [stage["every"] * (i + 1) for i in range(len(stage["losses"]))]
        axis.plot(steps, stage["losses"])
        axis.set_title(f"{name} ({stage['seconds'] / 60:.1f} min)")
        axis.set_xlabel("step")
        axis.set_yscale("log")
    axes[0][0].set_ylabel("training loss")
    figure.tight_layout()
    figure.savefig(out_dir / "loss_curves.png", dpi=80)
    plt.close(figure)
    return report
