"""Mojito tab: trajectory editing handlers keep each user's objects apart and explain bad input;
a real browser clicks three keyframes, generates, and sees the video play and the metrics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from studio_server import CHROMIUM, browser_page, running_studio

from pipelines.errors import InvalidInputError
from pipelines.models import TINY_PACK_DIR
from pipelines.mojito import KeyframeOrderError, PhraseNotInPromptError, TooFewKeyframesError
from pipelines.mojito.runner import MojitoRequest, MojitoRunner
from pipelines.recipes import read_recipe
from studio import mojito as tab
from studio import tab_titles

PROMPT = "a red circle moves from left to right quickly while a blue square stays still"


def click(session, x, y, phrase="red circle", prompt=PROMPT, size=0.3):
    return tab.add_click(session, prompt, phrase, size, "linear", SimpleNamespace(index=(x, y)))


def test_tab_is_listed_before_about():
    titles = tab_titles()
    assert "Mojito" in titles and titles.index("Mojito") < titles.index("About")


def test_phrases_come_from_the_prompt():
    choices = tab.phrase_choices(PROMPT)
    assert choices[:2] == ["red circle", "blue square"]
    assert "quickly" in choices and "a" not in choices


def test_clicks_make_keyframes_spread_over_the_video():
    session, canvas, rows = click(None, 32, 128)
    assert rows == [[0, 0.0, 0.35, 0.3, 0.65]]  # a box of side 0.3 moved inside the frame
    session, canvas, rows = click(session, 128, 128)
    session, canvas, rows = click(session, 224, 64)
    assert [r[0] for r in rows] == [0, 8, 15]
    assert rows[1][1:] == [0.35, 0.35, 0.65, 0.65]
    assert canvas.shape == (tab.CANVAS, tab.CANVAS, 3)
    assert canvas[128, 128].tolist() != [236, 236, 236]  # the path is drawn through the middle keyframe
    request = MojitoRequest(PROMPT, session.trajectories(), interpolation="smooth")
    trajectories, _ = MojitoRunner.check(request)
    assert len(trajectories) == 1 and trajectories[0].boxes(16)[15].tolist() == rows[2][1:]


def test_sessions_are_separate_and_hold_several_objects():
    first, _, _ = click(None, 30, 30)
    second, _, _ = click(None, 200, 200)
    first, _, _ = tab.apply_preset(first, PROMPT, "blue square", "circle", 0.25, "linear")
    assert set(first.objects) == {"red circle", "blue square"} and set(second.objects) == {"red circle"}
    assert len(first.objects["blue square"]) == 16
    assert not any(isinstance(value, tab.MojitoSession) for value in vars(tab).values())
    first, _, rows = tab.clear_object(first, "blue square", "linear")
    assert rows == [] and set(first.objects) == {"red circle"}


def test_table_edits_replace_the_keyframes():
    session, _, _ = click(None, 30, 30)
    session, canvas = tab.table_edited(session, PROMPT, "red circle",
                                       [[0, 0.1, 0.1, 0.4, 0.4], [15, 0.6, 0.6, 0.9, 0.9], [None] * 5], "linear")
    assert session.objects["red circle"] == [[0, 0.1, 0.1, 0.4, 0.4], [15, 0.6, 0.6, 0.9, 0.9]]


def test_bad_input_is_explained_before_any_model_loads():
    manager = SimpleNamespace(get=lambda role: pytest.fail("no model should load for bad input"),
                              derived=lambda key, factory: pytest.fail("no pipeline should be built for bad input"))

    def generate(session, prompt=PROMPT, intensity=5, strength=2.0):
        settings = dict(prompt=prompt, intensity=intensity, strength=strength, guided_steps=10, smoothness=1.0,
                        steps=20, seed=0, interpolation="linear")
        return tab.generate(MojitoRunner(manager), session, settings)

    with pytest.raises(PhraseNotInPromptError, match="not in the prompt"):
        click(None, 30, 30, phrase="green triangle")
    with pytest.raises(InvalidInputError, match="Add keyframes"):
        generate(None)
    one, _, _ = click(None, 30, 30)
    with pytest.raises(TooFewKeyframesError, match="at least two"):
        generate(one)
    two, _, _ = click(one, 200, 30)
    with pytest.raises(PhraseNotInPromptError):
        generate(two, prompt="a blue square moves upward slowly")
    for bad in (0, 11, 2.5):
        with pytest.raises(InvalidInputError, match="1 to 10"):
            generate(two, intensity=bad)
    disordered, _ = tab.table_edited(None, PROMPT, "red circle", [[9, 0.1, 0.1, 0.4, 0.4], [3, 0.5, 0.1, 0.8, 0.4]],
                                     "linear")
    with pytest.raises(KeyframeOrderError):
        generate(disordered)
    # Impossible rows are refused where they are typed (before Generate), naming the row.
    with pytest.raises(InvalidInputError, match="frame must be a whole number from 0 to 15, not 20"):
        tab.table_edited(None, PROMPT, "red circle", [[0, 0.1, 0.1, 0.4, 0.4], [20, 0.5, 0.1, 0.8, 0.4]], "linear")
    with pytest.raises(InvalidInputError, match="must lie inside the frame"):
        tab.table_edited(None, PROMPT, "red circle", [[0, 0.1, 0.1, 0.4, 0.4], [15, 0.8, 0.1, 1.2, 0.4]], "linear")
    with pytest.raises(InvalidInputError, match="x0 < x1"):
        tab.table_edited(None, PROMPT, "red circle", [[0, 0.1, 0.1, 0.1, 0.4], [15, 0.5, 0.1, 0.8, 0.4]], "linear")
    with pytest.raises(InvalidInputError, match="Guidance strength"):
        generate(two, strength=-3)
    with pytest.raises(InvalidInputError, match="five numbers"):
        tab.table_edited(None, PROMPT, "red circle", [["zero", 0.1, 0.1, 0.4, 0.4]], "linear")


def test_box_editor_shows_the_keyframes_and_its_drags_become_keyframes():
    session, _, rows = click(None, 32, 128)
    session, _, rows = click(session, 224, 128)
    session, value = tab.redraw_box_editor(session, "red circle")
    assert value["image"].shape == (tab.CANVAS, tab.CANVAS, 3)
    assert [b["label"] for b in value["boxes"]] == ["frame 0", "frame 15"]
    assert value["boxes"][1] == {"xmin": 179, "ymin": 90, "xmax": 256, "ymax": 166, "label": "frame 15"}
    # The editor's echo of a redraw (even one that arrives after a later click) changes nothing.
    session, _, _ = click(session, 128, 128)
    echoed = tab.boxes_moved(session, PROMPT, "red circle", value, "linear")
    assert echoed[1:] == (tab.gr.skip(), tab.gr.skip()) and len(session.objects["red circle"]) == 3
    # Given back from a person's edit elsewhere, boxes that did not move keep their exact fractions.
    session, _, _ = tab.clear_object(session, "red circle", "linear")
    session.objects["red circle"] = [list(row) for row in rows]
    # The frame-15 box dragged 64 px up and pulled 32 px wider to the left, then a new box at frame 8.
    value["boxes"][1].update(xmin=147, ymin=26, ymax=102)
    value["boxes"].append({"xmin": 96, "ymin": 96, "xmax": 160, "ymax": 160, "label": "frame 8"})
    session, canvas, moved = tab.boxes_moved(session, PROMPT, "red circle", value, "linear")
    assert [r[0] for r in moved] == [0, 8, 15] and moved[0] == rows[0]  # frame 0 did not move: exact
    assert moved[1][1:] == [0.375, 0.375, 0.625, 0.625]
    assert moved[2][1:] == [round(147 / 256, 4), round(26 / 256, 4), 1.0, round(102 / 256, 4)]
    assert session.objects["red circle"] == moved and canvas.shape == (tab.CANVAS, tab.CANVAS, 3)
    # A box without a frame, or two boxes on one frame, are refused in words; the keyframes stay.
    unlabeled = {"boxes": [*value["boxes"], {"xmin": 10, "ymin": 10, "xmax": 40, "ymax": 40, "label": ""}]}
    with pytest.raises(InvalidInputError, match="Box 4 has no frame"):
        tab.boxes_moved(session, PROMPT, "red circle", unlabeled, "linear")
    twice = {"boxes": [*value["boxes"], {"xmin": 10, "ymin": 10, "xmax": 40, "ymax": 40, "label": "frame 8"}]}
    with pytest.raises(InvalidInputError, match="both at frame 8"):
        tab.boxes_moved(session, PROMPT, "red circle", twice, "linear")
    assert session.objects["red circle"] == moved
    # Every box deleted: the object has no keyframes left.
    session, _, none = tab.boxes_moved(session, PROMPT, "red circle", {"boxes": []}, "linear")
    assert none == [] and "red circle" not in session.objects


def test_path_plot_has_target_and_generated_paths():
    boxes = {"red circle": np.array([[0.1, 0.4, 0.3, 0.6], [0.7, 0.4, 0.9, 0.6]])}
    figure = tab.path_plot(boxes, {"red circle": np.array([[0.2, 0.5], [np.nan, np.nan]])})
    assert [trace.name for trace in figure.data] == ["red circle: target", "red circle: generated"]
    assert list(figure.layout.yaxis.range) == [1, 0]


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by `make test`")
@pytest.mark.skipif(not (TINY_PACK_DIR / "shapes-t2v" / "motion_encoder").is_dir(), reason="needs the shapes-t2v pack")
def test_browser_clicks_three_keyframes_generates_and_plays(tmp_path, artifacts_dir):
    with running_studio(tmp_path) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Mojito").click()
        canvas = page.locator("#mojito-canvas img").first
        canvas.wait_for(timeout=30_000)
        # The ready example: 16 keyframes (one per frame) on a first frame that shows the red circle, and a legend.
        source = canvas.get_attribute("src")
        page.locator("#mojito-example").click()
        page.wait_for_function("src => document.querySelector('#mojito-canvas img')?.src !== src", arg=source,
                               timeout=30_000)
        page.wait_for_function("document.querySelector('#mojito-table').innerText.includes('\\n15\\n')",
                               timeout=30_000)
        legend = page.locator("#mojito-legend").inner_text()
        assert "coloured box is where the object should be" in legend and "white box" in legend
        assert page.locator("#mojito-how").count() == 1 and not page.get_by_text("mIoU 6.3x").first.is_visible()
        page.get_by_role("button", name="Clear object").click()
        page.wait_for_function("!document.querySelector('#mojito-table').innerText.includes('\\n15\\n')",
                               timeout=30_000)
        box = canvas.bounding_box()
        for fx, fy in ((0.15, 0.5), (0.5, 0.35), (0.85, 0.5)):
            before = page.locator("#mojito-table").inner_text()
            canvas.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
            page.wait_for_function(  # changed, and no progress timer left over the table
                "before => { const t = document.querySelector('#mojito-table').innerText;"
                " return t !== before && t.trim().startsWith('Keyframes'); }", arg=before, timeout=30_000
            )
        page.wait_for_function("document.querySelector('#mojito-table').innerText.includes('\\n8\\n')",
                               timeout=30_000)
        table = page.locator("#mojito-table").inner_text().split()
        assert table.count("0") >= 1 and "8" in table and "15" in table
        # Drag the last keyframe's box up in the box editor: the table and the canvas follow.
        page.get_by_text("Move or resize boxes").click()
        editor = page.locator("#mojito-boxes canvas").first
        editor.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)  # the accordion opens
        editor.scroll_into_view_if_needed()
        frame = editor.bounding_box()
        side = min(frame["width"], frame["height"])
        left, top = frame["x"] + (frame["width"] - side) / 2, frame["y"] + (frame["height"] - side) / 2
        start = (left + 0.85 * side, top + 0.5 * side)  # the centre of the frame-15 box clicked at (0.85, 0.5)
        page.mouse.move(*start)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(start[0], start[1] - k * 0.03 * side)
        page.mouse.up()
        page.wait_for_function(
            "() => { const cells = document.querySelector('#mojito-table').innerText.split(/\\s+/);"
            " const at = cells.lastIndexOf('15'); return at >= 0 && parseFloat(cells[at + 2]) < 0.1; }",
            timeout=30_000)
        page.locator("#mojito-generate").click()
        page.wait_for_function("document.querySelector('#mojito-video video')?.readyState === 4", timeout=240_000)
        page.get_by_text("mIoU").first.wait_for(timeout=30_000)
        metrics = page.locator("#mojito-metrics").inner_text()
        assert "red circle" in metrics and "Intensity" in metrics
        duration = page.evaluate("document.querySelector('#mojito-video video').duration")
        assert duration == pytest.approx(16 / tab.FPS, abs=0.2)  # 16 frames at 8 fps
        page.locator("#mojito-plot .js-plotly-plot").first.wait_for(timeout=30_000)
        page.screenshot(path=str(artifacts_dir / "mojito-generated.png"), full_page=True)


def test_generate_returns_videos_plot_and_metrics_with_a_tiny_model():
    from test_mojito import tiny_components

    from pipelines.mojito import MojitoPipeline

    pipe = MojitoPipeline(**tiny_components())
    pipe.set_progress_bar_config(disable=True)
    manager = SimpleNamespace(preset="hub", get=lambda role: pipe,  # a hub preset: no MIM folder is looked up
                              derived=lambda key, factory: factory())
    session, _, _ = tab.apply_preset(None, PROMPT, "red circle", "zigzag", 0.3, "linear")
    settings = dict(prompt=PROMPT, intensity=6, strength=0.25, guided_steps=1, smoothness=1.0, steps=2, seed=3,
                    interpolation="smooth", with_unguided=True)
    video, unguided, figure, metrics, gif, raw, recipe = tab.generate(MojitoRunner(manager), session, settings)
    assert Path(video).suffix == ".mp4" and Path(video).stat().st_size > 0
    assert Path(unguided).is_file() and Path(gif).suffix == ".gif"
    assert "| red circle |" in metrics and "asked 6" in metrics and "MIM off" in metrics
    assert [trace.name for trace in figure.data][0] == "red circle: target"
    carried = read_recipe(raw)
    assert carried.method == "mojito" and carried.request["seed"] == 3 and carried.request["intensity"] == 6
    assert carried.request["trajectories"][0]["phrase"] == "red circle" and read_recipe(gif) == read_recipe(video)
    assert "python -m pipelines.mojito rerun" in recipe
    assert read_recipe(unguided).request["guided"] is False and read_recipe(unguided).request["seed"] == 3


def test_generation_reports_every_denoising_step_and_stops_at_the_next_one():
    from test_mojito import tiny_components

    from pipelines.errors import RunStopped
    from pipelines.mojito import MojitoPipeline
    from pipelines.stopping import Stop, stopping

    pipe = MojitoPipeline(**tiny_components())
    pipe.set_progress_bar_config(disable=True)
    manager = SimpleNamespace(preset="hub", get=lambda role: pipe, derived=lambda key, factory: factory())
    session, _, _ = tab.apply_preset(None, PROMPT, "red circle", "zigzag", 0.3, "linear")
    settings = dict(prompt=PROMPT, intensity=6, strength=0.25, guided_steps=1, smoothness=1.0, steps=4, seed=3,
                    interpolation="smooth", with_unguided=True)
    reports = []
    tab.generate(MojitoRunner(manager), session, settings, progress=lambda f, desc=None: reports.append((f, desc)))
    # guided video then unguided, each half of the bar, one report before and after every step
    assert [f for f, _ in reports] == [0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.625, 0.75, 0.875, 1.0]
    assert reports[1][1] == "guided video" and reports[-1][1] == "unguided video"
    stop, steps = Stop(), []

    def progress(fraction, desc=None):
        steps.append(fraction)
        if len(steps) == 3:
            stop.set()  # Stop pressed after the guided video's second step

    with pytest.raises(RunStopped):
        tab.generate(MojitoRunner(manager), session, settings, progress=stopping(progress, stop))
    assert steps == [0.0, 0.125, 0.25]  # the third step's report raised; no unguided video was started
