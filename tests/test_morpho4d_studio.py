"""Morpho4D tab: handlers keep each user's scene apart; a real browser scrubs time, edits, downloads, plays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from studio_server import CHROMIUM, browser_page, running_studio

from pipelines.errors import InvalidInputError
from pipelines.morpho4d import read_ply, save_scene, write_ply
from pipelines.models import ModelManager
from pipelines.morpho4d.runner import Morpho4DRunner
from studio import morpho4d as tab
from studio import tab_titles

# The first example: "#3: a red square moves toward the top right quickly while a blue triangle stays still".
FIRST_EXAMPLE_OBJECTS = ("background", "red square", "blue triangle")


@pytest.fixture(scope="module")
def examples() -> dict[str, int]:
    return tab.example_labels()


@pytest.fixture(scope="module")
def runner() -> Morpho4DRunner:
    return Morpho4DRunner(ModelManager("tiny"))


def test_tab_is_listed_before_about():
    titles = tab_titles()
    assert "Morpho4D" in titles and titles.index("Morpho4D") < titles.index("About")


def test_each_session_keeps_its_own_scene(runner, examples):
    label = next(iter(examples))
    first = tab.load_example(runner, label, examples=examples)[0]
    second = tab.load_example(runner, label, examples=examples)[0]
    assert first is not second and first.editor is not second.editor
    tab.apply_edit(first, "red square", "delete", None, (0, 0, 0, 1.0))
    assert first.scene.n_gaussians < second.scene.n_gaussians
    assert second.editor.edits == [] and second.scene.object_names == FIRST_EXAMPLE_OBJECTS
    assert not any(isinstance(value, tab.ViewerSession) for value in vars(tab).values())


def test_handlers_explain_bad_input(runner, examples, tmp_path):
    session = tab.load_example(runner, next(iter(examples)), examples=examples)[0]
    with pytest.raises(InvalidInputError, match="Load an example"):
        tab.refresh(None, 0, 0, 0, 1)
    with pytest.raises(InvalidInputError, match="outside the scene"):
        tab.refresh(session, 12, 0, 0, 1)
    with pytest.raises(InvalidInputError, match="not .txt"):
        tab.open_file(runner, str(tmp_path / "scene.txt"))
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1e99\nend_header\n")
    with pytest.raises(InvalidInputError, match="vertex count"):
        tab.open_file(runner, str(tmp_path / "bad.ply"))
    outputs = tab.open_file(runner, str(save_scene(session.scene, tmp_path / "scene.npz")))
    assert outputs[0].scene.n_gaussians == session.scene.n_gaussians and outputs[1].shape == (256, 256, 3)
    outputs = tab.open_file(runner, str(write_ply(session.scene, tmp_path / "scene.ply")))
    assert outputs[0].scene.n_frames == 1
    assert read_ply(tab.show_splats(runner, session, 3.5)).n_gaussians == session.scene.n_gaussians
    with pytest.raises(InvalidInputError, match="outside the scene"):
        tab.show_splats(runner, session, 9)


def test_a_scene_over_the_per_person_memory_bound_is_refused_and_the_old_one_kept(runner, examples, tmp_path,
                                                                                   monkeypatch):
    from studio import sessions
    from studio.sessions import SessionTooLargeError

    session = tab.load_example(runner, next(iter(examples)), examples=examples)[0]
    held = session.scene
    path = save_scene(held, tmp_path / "scene.npz")
    needed = sessions.state_bytes(held)
    monkeypatch.setattr(sessions, "MAX_SESSION_BYTES", needed - 1)
    with pytest.raises(SessionTooLargeError, match=r"The scene in scene.npz needs \d+ MB, over the \d+ MB one person"):
        tab.open_file(runner, str(path), session)
    assert session.scene is held
    monkeypatch.setattr(sessions, "MAX_SESSION_BYTES", needed)
    assert tab.open_file(runner, str(path), session)[0].scene.n_gaussians == held.n_gaussians


def test_every_frame_downloads_as_ply_in_one_zip_and_the_splat_viewer_follows_time(runner, examples, tmp_path):
    import zipfile

    from pipelines.recipes import read_recipe

    session = tab.load_example(runner, next(iter(examples)), examples=examples)[0]
    scene = session.scene
    path, shown = tab.export_file(runner, session, 0, kind="zip")
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".ply"))
        archive.extractall(tmp_path)
    assert len(names) == scene.n_frames == 8
    for t, name in enumerate(names):
        frame = read_ply(tmp_path / name)
        assert frame.n_gaussians == scene.n_gaussians
        assert np.array_equal(frame.means, scene.means_at(float(t)))  # bit-exact, frame by frame
    assert read_recipe(path).method == "morpho4d" and "No recipe" not in shown

    assert isinstance(tab.follow_splats(runner, session, 5.0, None), dict)  # not shown: left as it is
    first = read_ply(tab.follow_splats(runner, session, 0.0, "shown.ply"))
    last = read_ply(tab.follow_splats(runner, session, 7.0, "shown.ply"))
    assert np.array_equal(last.means, scene.means_at(7.0)) and not np.array_equal(first.means, last.means)


def _image_source(page) -> str:
    image = page.locator("#morpho4d-view img").first
    image.wait_for(timeout=30_000)
    return image.get_attribute("src") or ""


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by `make test`")
def test_browser_scrubs_time_edits_downloads_and_plays(tmp_path, artifacts_dir):
    with running_studio(tmp_path) as url, browser_page() as page:
        # Not "networkidle": a gr.State makes Gradio hold a heartbeat stream open for the session.
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Morpho4D").click()
        page.get_by_role("button", name="Load example").click()
        first = _image_source(page)
        page.wait_for_function("document.querySelector('#morpho4d-view img')?.src?.length > 0", timeout=30_000)

        # 1. Move the time slider: the rendered view changes.
        number = page.locator("#morpho4d-time input[type='number']")
        number.fill("7")
        number.press("Enter")
        page.wait_for_function(
            "src => document.querySelector('#morpho4d-view img')?.src !== src", arg=first, timeout=30_000
        )
        moved = _image_source(page)
        assert moved != first

        # 2. A query that matches nothing is explained and changes nothing.
        query = page.locator("#morpho4d-query textarea, #morpho4d-query input").first
        query.fill("green circle")
        page.get_by_role("button", name="Apply edit").click()
        page.get_by_text("Nothing in this scene matches 'green circle'").first.wait_for(timeout=30_000)
        assert "none yet" in page.locator("#morpho4d-history").inner_text()

        # 3. Delete the red square.
        query.fill("red square")
        page.get_by_label("delete", exact=True).check()
        page.get_by_role("button", name="Apply edit").click()
        page.get_by_text("deleted 'red square'").first.wait_for(timeout=30_000)
        page.wait_for_function(
            "src => document.querySelector('#morpho4d-view img')?.src !== src", arg=moved, timeout=30_000
        )
        page.screenshot(path=str(artifacts_dir / "morpho4d-edited.png"), full_page=True)

        # 4. Download the PLY of this time step: the square's Gaussians are gone.
        page.get_by_role("button", name="Export PLY (this time)").click()
        link = page.locator("#morpho4d-download a").first
        link.wait_for(timeout=30_000)
        with page.expect_download(timeout=30_000) as download:
            link.click()
        saved = tmp_path / "download.ply"
        download.value.save_as(saved)
        scene = read_ply(saved)
        history = page.locator("#morpho4d-history").inner_text()
        deleted = int(history.split(": ", 1)[1].split(" Gaussians")[0].replace(",", ""))
        assert deleted > 100 and scene.n_gaussians > 1000
        assert np.isfinite(scene.means).all()

        # 5. Play: the time sweep video loads fully in Chromium (H.264 MP4).
        page.get_by_role("button", name="Play (time sweep)").click()
        page.wait_for_function(
            "document.querySelector('#morpho4d-video video')?.readyState === 4", timeout=45_000
        )

        # 6. The splat viewer (gr.Model3D, gsplat.js) opens the current time step's PLY.
        page.get_by_role("button", name="Show splats (this time step)").click()
        page.locator("#morpho4d-splats canvas").first.wait_for(timeout=30_000)
