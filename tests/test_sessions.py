"""Serving many people: events sorted into pools (cheap ones never wait behind a generation), per-user state with
a time to live and a memory bound, output files deleted after their time, Stop buttons on long runs."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from studio import sessions
from studio.match import MatchSession


def test_state_bytes_counts_arrays_inside_sessions():
    session = MatchSession()
    session.offsets = {"layer": np.zeros((1000, 100), np.float32)}
    assert sessions.state_bytes(session) == 400_000
    assert sessions.state_bytes([np.zeros(10, np.uint8), {"a": np.zeros(5, np.float64)}]) == 50
    assert sessions.state_bytes(None) == 0


def test_a_session_over_its_memory_bound_is_dropped(monkeypatch):
    monkeypatch.setattr(sessions, "MAX_SESSION_BYTES", 1000)
    warnings = []
    monkeypatch.setattr(sessions.gr, "Warning", lambda message: warnings.append(message))
    small, big = {"a": np.zeros(10, np.uint8)}, {"a": np.zeros(2000, np.uint8)}
    assert sessions.check_session_size(small) is small
    assert sessions.check_session_size(big, "your Match session") is None
    assert "Your Match session grew to 0 MB, over the 0 MB" in warnings[0] and "cleared" in warnings[0]


def test_old_output_folders_are_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(sessions, "SCRATCH_ROOT", tmp_path)
    old, new = sessions.scratch_dir("old-"), sessions.scratch_dir("new-")
    (old / "output.png").write_bytes(b"x")
    past = time.time() - 3 * 3600
    os.utime(old, (past, past))
    assert sessions.sweep_scratch(now=time.time(), ttl=2 * 3600) == 1
    assert not old.exists() and new.exists()


@pytest.fixture(scope="module")
def studio():
    from studio import build_studio

    return build_studio()


def test_events_are_sorted_into_pools(studio):
    by_api = {fn.api_name: fn for fn in studio.fns.values() if fn.api_name}
    for heavy in ("match_score", "match_generate", "flexecontrol_generate", "mojito_generate", "morpho4d_command",
                  "mojito_lift_to_4d", "morpho4d_lift_photo"):
        assert by_api[heavy].concurrency_id == "models" and by_api[heavy].concurrency_limit == 1, heavy
    for cheap in ("match_heatmaps", "morpho4d_view", "mojito_preset", "match_load_example"):
        assert by_api[cheap].concurrency_limit is None, cheap  # never waits behind anyone
    assert by_api["morpho4d_load_example"].concurrency_id == "scenes"


def test_long_runs_have_stop_buttons_and_states_expire(studio):
    cancelled = {i for fn in studio.fns.values() for i in (fn.cancels or [])}
    by_api = {fn.api_name: fn._id for fn in studio.fns.values() if fn.api_name}
    assert {by_api["match_score"], by_api["morpho4d_command"]} <= cancelled
    heavy = {fn._id for fn in studio.fns.values() if fn.concurrency_id == "models"}
    # Match: score, training, benchmark; FlexEControl and Mojito: Generate; Morpho4D: send and submit.
    assert len(heavy & cancelled) >= 7
    # ... and each of them stops on the server too: it is stoppable (Gradio gives it the person's request), and
    # its Stop button runs a function beside the browser-side cancel
    import inspect

    for fn in studio.fns.values():
        if fn._id in heavy & cancelled:
            assert "request" in inspect.signature(fn.fn).parameters, fn.name
    stops = [fn for fn in studio.fns.values() if getattr(fn.fn, "__name__", "") == "stop"]
    assert len(stops) == 6 and all(not fn.queue for fn in stops)
    states = [block for block in studio.blocks.values() if type(block).__name__ == "State"]
    assert states and all(state.time_to_live == sessions.SESSION_TTL for state in states
                          if state.time_to_live is not None)
    assert sum(state.time_to_live is not None for state in states) >= 4  # one per tab


@pytest.fixture(scope="module")
def match_runner():
    from pipelines.matching.runner import MatchRunner
    from pipelines.models import ModelManager

    return MatchRunner(ModelManager("tiny"))


def test_stop_stops_a_running_batch_evaluation_on_the_server(match_runner):
    """A 200-group evaluation runs in a worker thread (as Gradio runs it); pressing Stop (the registry call the
    button makes for this person) ends it at the next group, long before the end; another person's Stop does not
    touch it."""
    import threading
    from types import SimpleNamespace

    from pipelines.errors import RunStopped
    from studio import match as tab

    run = sessions.stoppable(lambda groups, progress=None: tab.batch_eval(
        match_runner, None, groups, None, ["clip"], False, progress=progress), "match-batch")
    seen, outcome, started = [], {}, threading.Event()

    def progress(fraction, desc=None):
        seen.append(fraction)
        started.set()

    def work():
        try:
            outcome["report"] = run(200, progress, request=SimpleNamespace(session_hash="person-a"))
        except RunStopped as error:
            outcome["stopped"] = str(error)

    worker = threading.Thread(target=work)
    worker.start()
    assert started.wait(120)
    assert sessions.STOPS.stop("person-b", "match-batch") == 0  # someone else's Stop: nothing of theirs runs
    assert sessions.STOPS.stop("person-a", "match-batch") == 1
    worker.join(60)
    assert not worker.is_alive() and "Stopped" in outcome.get("stopped", "")
    assert 1 <= len(seen) < 20 and max(seen) < 0.1  # stopped a few groups in, of 200 (a busy CPU may lag)
    assert sessions.STOPS.stop("person-a", "match-batch") == 0  # the run is no longer registered


@pytest.mark.browser
def test_browser_stop_ends_the_servers_run_and_the_studio_answers_at_once(tmp_path):
    """Through Gradio itself: Run benchmark (200 groups, Discffusion: minutes of work), Stop once it has begun; the
    server's run ends within a group (its log says so) and the next heavy event, Score, gets the models at once."""
    from pathlib import Path

    from studio_server import CHROMIUM, browser_page, running_studio

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is installed by `make test`")
    with running_studio(tmp_path) as url, browser_page() as page:
        log = tmp_path / "studio.log"
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Match").click()
        page.get_by_text("Batch evaluation: ShapesWorld groups or your own set").click()
        groups = page.locator("#match-batch").get_by_label("ShapesWorld groups (5-200)")
        groups.fill("200")
        groups.press("Tab")
        page.locator("#match-batch").get_by_label("CLIP (cosine similarity)").uncheck()
        page.get_by_role("button", name="Run benchmark").click()
        page.get_by_text("discffusion: group").first.wait_for(timeout=120_000)  # the run has begun
        page.locator("#match-batch").get_by_role("button", name="Stop").click()
        deadline = time.monotonic() + 30
        while "run stopped on request" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "run stopped on request" in log.read_text() and "Traceback" not in log.read_text()
        assert "Evaluated" not in page.locator("#match-batch-status").inner_text()
        page.get_by_role("button", name="Load example").click()
        page.wait_for_function("document.querySelector('#match-captions textarea')?.value.length > 0",
                               timeout=30_000)
        started = time.monotonic()
        page.get_by_role("button", name="Score").click()
        page.get_by_text("Scored 5 captions").first.wait_for(timeout=60_000)
        assert time.monotonic() - started < 30  # not queued behind the rest of 200 groups (minutes)
