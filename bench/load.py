"""Many people at once: N clients x M requests mixing cheap and heavy events through ``gradio_client`` on
loopback, against a served studio (issue 21, item 7).

Each client is its own session (its own ``gradio_client.Client``) with its own ShapesWorld picture, captions
and Morpho4D example, and checks that every answer is its own (no cross-session leak):

* heavy: ``/match_score`` (Discffusion: the diffusion UNet once per caption and noise level; the shared
  "models" pool, one at a time);
* cheap: ``/match_heatmaps`` (switching the caption of the heatmaps: this session's stored maps),
  ``/mojito_preset`` (a trajectory preset drawn on this session's keyframe canvas, its own box size),
  ``/morpho4d_view`` (re-rendering this session's 4D scene at another time and camera: scrubbing);
* setup (once per client, not in the mix): ``/morpho4d_load_example`` (when ``morpho4d_view`` is a kind).

Prints JSON lines: per event kind n, p50, p95 and max seconds; ``errors`` (count; wrong answers and leaks
count as errors); ``leaks``; ``cheap_p95_seconds``; ``heavy_p95_seconds``; wall time. Run:
``.venv/bin/python bench/load.py [--clients 8 --requests 20] [--url http://127.0.0.1:7860/]`` (without
``--url`` it serves the studio itself on a free port); results: ``bench/results/load.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, machine  # noqa: E402
from studio.serving import served_studio  # noqa: E402

BENCH = "load"
CHEAP_KINDS = ("match_heatmaps", "mojito_preset", "morpho4d_view")
HEAVY_KINDS = ("match_score",)
# Every HEAVY_EVERY-th request of a client is heavy, the rest cheap (alternating kinds).
HEAVY_EVERY = 4


@dataclass
class Timings:
    """Seconds per event kind, errors (with their messages) and leaks, shared by the client threads."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    leaks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.seconds.setdefault(kind, []).append(seconds)

    def fail(self, message: str, leak: bool = False) -> None:
        with self.lock:
            self.errors.append(message)
            self.leaks += int(leak)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by linear interpolation (statistics' 'inclusive' method)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


def client_inputs(number: int, folder: Path) -> tuple[str, list[str], str]:
    """Client ``number``'s own picture (a ShapesWorld scene, saved as PNG), its captions, its Morpho4D example."""
    from PIL import Image

    from pipelines.matching.overlay import swapped_captions
    from pipelines.shapesworld import sample_scene
    from studio.morpho4d import example_labels

    scene = sample_scene(100 + number, size=64, split="test")
    path = folder / f"client-{number}.png"
    Image.fromarray(scene.image).save(path)
    captions = [scene.caption, *swapped_captions(scene.caption)][:3]
    labels = list(example_labels())
    return str(path), captions, labels[number % len(labels)]


def run_client(url: str, number: int, requests: int, folder: Path, timings: Timings, start: threading.Barrier,
               cheap_kinds: tuple[str, ...] = CHEAP_KINDS):
    """One person: load a scene, score once, then ``requests`` events, every ``HEAVY_EVERY``-th heavy and the
    others cycling through ``cheap_kinds``."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    image, captions, example = client_inputs(number, folder)
    words = {w for c in captions for w in re.findall(r"[a-z]+", c)}

    def call(kind: str, *args):
        started = time.perf_counter()
        try:
            result = client.predict(*args, api_name=f"/{kind}")
        except Exception as error:  # an error answer counts; the bench goes on
            timings.fail(f"client {number} {kind}: {type(error).__name__}: {str(error)[:200]}")
            return None
        timings.add(kind, time.perf_counter() - started)
        return result

    def check_score(result) -> None:
        table = result[0]["data"] if result else []
        if sorted({row[2] for row in table}) != sorted(captions):
            timings.fail(f"client {number}: match_score ranked captions that are not its own", leak=True)

    def check_heatmaps(result) -> None:
        labels = [item.get("caption") or "" for item in (result or [])]
        shown = {w for label in labels for w in re.findall(r"^[a-z]+", label)}
        if not labels or not shown <= words:
            timings.fail(f"client {number}: heatmaps for words {sorted(shown - words)} it never wrote", leak=True)

    from pipelines.mojito import PRESETS
    from pipelines.shapesworld import COLOURS, SHAPES

    colour, shape = list(COLOURS)[number % len(COLOURS)], SHAPES[number % len(SHAPES)]
    prompt, phrase = f"a {colour} {shape} moves from left to right quickly", f"{colour} {shape}"
    side = round(0.1 + 0.05 * (number % 8), 2)

    def check_preset(result) -> None:
        rows = (result or [None, {}])[1].get("data", [])
        widths = {round(float(row[3]) - float(row[1]), 2) for row in rows}
        if len(rows) < 2 or widths != {side}:
            timings.fail(f"client {number}: keyframes of box size {sorted(widths)}, not its own {side}", leak=True)

    def check_view(result) -> None:
        status = (result or [None] * 4)[2] or ""
        if example not in status:
            timings.fail(f"client {number}: the view shows another scene ({status[:80]!r})", leak=True)

    if "morpho4d_view" in cheap_kinds:
        loaded = call("morpho4d_load_example", example)
        if loaded is not None:
            check_view(loaded)
    scored = call("match_score", handle_file(image), "\n".join(captions), ["discffusion"], False)
    if scored is not None:
        check_score(scored)
    start.wait()
    for k in range(requests):
        kind = "match_score" if k % HEAVY_EVERY == HEAVY_EVERY - 1 else cheap_kinds[(k + number) % len(cheap_kinds)]
        if kind == "match_score":
            result = call("match_score", handle_file(image), "\n".join(captions), ["discffusion"], False)
            if result is not None:
                check_score(result)
        elif kind == "match_heatmaps":
            result = call("match_heatmaps", captions[k % len(captions)], "all layers (mean)", "all levels (mean)")
            if result is not None:
                check_heatmaps(result)
        elif kind == "mojito_preset":
            result = call("mojito_preset", prompt, phrase, PRESETS[(number + k) % len(PRESETS)], side, "linear")
            if result is not None:
                check_preset(result)
        else:
            t = float(k % 8)
            result = call("morpho4d_view", t, float(15 * k % 180), 0.0, 1.0)
            if result is not None:
                check_view(result)


def run_load(url: str, clients: int, requests: int, cheap_kinds: tuple[str, ...] = CHEAP_KINDS) -> dict:
    """Run the mix; returns the summary (also what :func:`report` prints)."""
    timings = Timings()
    barrier = threading.Barrier(clients)
    with tempfile.TemporaryDirectory(prefix="worldstudio-load-") as folder:
        threads = [threading.Thread(target=run_client, args=(url, n, requests, Path(folder), timings, barrier, cheap_kinds),
                                    daemon=True) for n in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    summary = {"kinds": {}, "errors": len(timings.errors), "error_messages": timings.errors[:10],
               "leaks": timings.leaks, "wall_seconds": wall, "clients": clients, "requests": requests,
               "cheap_kinds": list(cheap_kinds)}
    for kind, values in timings.seconds.items():
        summary["kinds"][kind] = {"n": len(values), "p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
                                  "max": max(values)}
    cheap = [v for kind in cheap_kinds for v in timings.seconds.get(kind, [])]
    heavy = [v for kind in HEAVY_KINDS for v in timings.seconds.get(kind, [])]
    summary["cheap_p95_seconds"] = percentile(cheap, 0.95) if cheap else None
    summary["heavy_p95_seconds"] = percentile(heavy, 0.95) if heavy else None
    summary["cheap_n"], summary["heavy_n"] = len(cheap), len(heavy)
    return summary


def report(summary: dict) -> list[dict]:
    """Print the summary as JSON lines; returns them."""
    records = []
    for kind, row in sorted(summary["kinds"].items()):
        records.append(emit(BENCH, "seconds", {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, kind=kind,
             cheap=kind in summary["cheap_kinds"]))
    records.append(emit(BENCH, "cheap_p95_seconds", round(summary["cheap_p95_seconds"] or 0.0, 4), n=summary["cheap_n"],
         kinds=summary["cheap_kinds"]))
    records.append(emit(BENCH, "heavy_p95_seconds", round(summary["heavy_p95_seconds"] or 0.0, 4),
                        n=summary["heavy_n"], kinds=list(HEAVY_KINDS)))
    records.append(emit(BENCH, "errors", summary["errors"], messages=summary["error_messages"]))
    records.append(emit(BENCH, "leaks", summary["leaks"]))
    records.append(emit(BENCH, "wall_seconds", round(summary["wall_seconds"], 2), clients=summary["clients"],
                        requests_per_client=summary["requests"]))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--url", default=None, help="a served studio (default: serve one on a free port)")
    parser.add_argument("--cheap", default=",".join(CHEAP_KINDS), help="cheap event kinds, comma-separated")
    parser.add_argument("--out", default=None, help="also write the JSON lines here (e.g. bench/results/load.jsonl)")
    args = parser.parse_args(argv)
    cheap = tuple(k for k in args.cheap.split(",") if k)
    records = [emit(BENCH, "machine", machine(), heavy_every=HEAVY_EVERY)]
    if args.url:
        summary = run_load(args.url, args.clients, args.requests, cheap)
    else:
        with served_studio(Path(tempfile.mkdtemp(prefix="worldstudio-load-server-")), timeout=180.0) as url:
            summary = run_load(url, args.clients, args.requests, cheap)
    records += report(summary)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in records))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
