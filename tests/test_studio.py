"""The studio shell: builds without weights, and shows every tab in a real browser."""

from pathlib import Path

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
