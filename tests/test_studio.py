"""The studio shell: builds without weights, and shows every tab in a real browser."""

from pathlib import Path

import numpy as np

import pytest
from studio_server import CHROMIUM, browser_page, running_studio

from pipelines.errors import UnknownPresetError
from studio import StudioContext, build_studio, tab_titles
from studio.about import presets_table


def test_studio_builds_without_loading_any_model():
    context = StudioContext(preset="tiny", device="cpu")
    studio = build_studio(context)
    assert context.manager.loaded() == []
    assert tab_titles()[-1] == "About"
    assert studio.title == "WorldStudio"


def test_unknown_preset_is_refused_by_name():
    with pytest.raises(UnknownPresetError, match="Unknown preset 'giant'"):
        StudioContext(preset="giant")


def test_about_table_lists_every_preset_role():
    rows = presets_table(StudioContext(preset="tiny", device="cpu"))
    assert {(row[0], row[2]) for row in rows} >= {("tiny", "text-to-image"), ("hub", "text-to-video")}
    assert all(row[1] == "yes" for row in rows if row[0] == "tiny")


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by `make test`")
def test_browser_sees_every_tab(tmp_path, artifacts_dir):
    with running_studio(tmp_path) as url, browser_page() as page:
        page.goto(url, wait_until="load")  # gr.State keeps a heartbeat open: never "networkidle"
        tabs = page.get_by_role("tab")
        tabs.first.wait_for(timeout=30_000)
        shown = [name.strip() for name in tabs.all_inner_texts()]
        assert shown == tab_titles()
        for title in tab_titles():
            page.get_by_role("tab", name=title).click()
            page.wait_for_timeout(300)
            page.screenshot(path=str(artifacts_dir / f"studio-{title.lower()}.png"), full_page=True)
        page.get_by_role("tab", name="About").click()
        assert page.get_by_text("Model presets").first.is_visible()
        assert page.get_by_text("stabilityai/stable-diffusion-2-1-base").first.is_visible()


def test_about_sample_grid_with_and_without_layout_guidance():
    from studio.about import sample_gallery

    context = StudioContext(preset="tiny", device="cpu")
    plain, summary, loaded = sample_gallery(context, 4, 3, layout=False, progress=lambda *a, **k: None)
    guided, _, _ = sample_gallery(context, 4, 3, layout=True, progress=lambda *a, **k: None)
    assert len(plain) == len(guided) == 4 and "of 4 captions" in summary and "text-to-image" in loaded
    captions = [label.split(" — ")[0] for _, label in plain]
    assert captions == [label.split(" — ")[0] for _, label in guided]
    # Only relation captions are guided: every other caption's image keeps its pixels (to rounding).
    relation = [any(r in caption for r in (" left of ", " right of ", " above ", " below ")) for caption in captions]
    assert sum(relation) == 3
    for guided_one, (a, _), (b, _) in zip(relation, plain, guided):
        change = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()
        assert change > 10 if guided_one else change <= 1


@pytest.mark.parametrize("argv, message", [(["--preset", "giant"], "Unknown preset 'giant'"),
                                           (["--device", "tpu"], "Unknown device 'tpu'")])
def test_app_refuses_bad_settings_with_a_message_not_a_traceback(argv, message, capsys):
    import app

    assert app.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
