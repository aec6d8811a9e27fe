"""FlexEControl tab: condition layers from canvases and uploads, clear messages for bad input, overlay and
numbers; a real browser draws a stroke on a canvas, generates, and sees the image and the numbers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from studio_server import CHROMIUM, browser_page, running_studio

from pipelines.errors import InvalidInputError
from pipelines.shapesworld import sample_scene
from pipelines.shapesworld.conditions import canny, segmentation
from studio import flexecontrol as tab
from studio import tab_titles
from studio.context import StudioContext

pytestmark = pytest.mark.skipif(not tab.WEIGHTS_DIR.is_dir(), reason="run `make tiny-flexecontrol`")


def canvas(image: np.ndarray) -> dict:
    """An ImageEditor value whose composite is ``image`` drawn at the canvas size."""
    big = np.kron(image, np.ones((4, 4, 1) if image.ndim == 3 else (4, 4), np.uint8))
    return {"background": np.zeros_like(big), "layers": [], "composite": big}


def layer(kind, drawing=None, upload=None, weight=1.0, start=0.0, end=1.0, source="draw"):
    return tab.LayerInput(kind, source, drawing, upload, weight, start, end)


@pytest.fixture(scope="module")
def cache():
    return tab.PipelineCache(StudioContext(preset="tiny", device="cpu"))


@pytest.fixture(scope="module")
def scene():
    return sample_scene(4, split="test")


def test_tab_is_listed_before_about():
    titles = tab_titles()
    assert "FlexEControl" in titles and titles.index("FlexEControl") < titles.index("About")


def test_generation_from_two_canvases_gives_numbers_and_overlay(cache, scene):
    layers = [layer("canny", canvas(canny(scene))), layer("segmentation", canvas(segmentation(scene)), weight=0.8)]
    image, conditions, notes, rows, seconds = tab.run_generation(cache, scene.caption, layers, 0, 4, 3.0)
    assert image.shape == (64, 64, 3) and notes == [] and seconds > 0
    assert [c.type for c in conditions] == ["canny", "segmentation"]
    assert np.array_equal(conditions[0].image, canny(scene))  # the 256 canvas comes back to the 64 map exactly
    assert [r["metric"] for r in rows] == ["SSIM (edges)", "mIoU (segmentation)"]
    assert all(-1.0 <= r["value"] <= 1.0 for r in rows)
    assert "| 1 | canny | SSIM (edges) |" in tab.numbers_markdown(rows, seconds)
    shown = tab.overlay(image, conditions)
    assert (shown[canny(scene) > 0] == tab.OVERLAY_COLOUR.astype(np.uint8)).all()


def test_uploads_are_extracted_and_resizing_is_said(cache, scene):
    big = np.kron(scene.image, np.ones((3, 3, 1), np.uint8))  # 192x192 upload
    conditions, notes = tab.read_layers([layer("edge", upload=big, source="upload")], 64)
    assert conditions[0].type == "canny" and conditions[0].image.shape == (64, 64)
    assert notes == ["Condition 1 (edge): the 192x192 upload was resized to 64x64."]


def test_bad_input_is_explained(cache, scene):
    black = canvas(np.zeros((64, 64), np.uint8))
    with pytest.raises(InvalidInputError, match="Condition 1 \\(canny\\) is empty"):
        tab.run_generation(cache, scene.caption, [layer("canny", black)], 0, 2, 3.0)
    with pytest.raises(InvalidInputError, match="upload an image"):
        tab.read_layers([layer("depth", source="upload")], 64)
    with pytest.raises(InvalidInputError, match="weight 3 is outside"):
        tab.read_layers([layer("canny", canvas(canny(scene)), weight=3)], 64)
    with pytest.raises(InvalidInputError, match="Unknown condition type 'pose'"):
        tab.read_layers([layer("pose", canvas(canny(scene)))], 64)
    with pytest.raises(InvalidInputError, match="5 conditions"):
        tab.read_layers([layer("canny", canvas(canny(scene)))] * 5, 64)
    image, conditions, notes, rows, _ = tab.run_generation(cache, scene.caption, [layer("none")] * 4, 0, 2, 3.0)
    assert conditions == [] and rows == [] and "text alone" in notes[0]


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by `make test`")
def test_browser_draws_a_stroke_generates_and_shows_numbers(tmp_path, artifacts_dir):
    with running_studio(tmp_path) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="FlexEControl").click()
        drawing = page.locator("#flexecontrol-canvas-1 canvas").first
        drawing.wait_for(timeout=30_000)
        box = drawing.bounding_box()
        x0, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5
        page.mouse.move(x0, y)
        page.mouse.down()
        for step in range(1, 9):  # a short horizontal stroke (FACTS: page.mouse drawing is slow)
            page.mouse.move(x0 + step * box["width"] * 0.05, y)
        page.mouse.up()
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Generate").click()
        page.locator("#flexecontrol-output img").first.wait_for(timeout=90_000)
        numbers = page.locator("#flexecontrol-numbers")
        page.wait_for_function("document.querySelector('#flexecontrol-numbers')?.innerText.includes('SSIM')",
                               timeout=30_000)
        text = numbers.inner_text()
        assert "Generated in" in text and "canny" in text
        value = float(re.search(r"SSIM \(edges\)\s+(-?[0-9.]+)", text).group(1))
        assert -1.0 <= value <= 1.0
        assert page.locator("#flexecontrol-previews img").count() >= 1
        page.screenshot(path=str(artifacts_dir / "flexecontrol-generated.png"), full_page=True)


def test_depth_upload_goes_through_the_presets_depth_model(cache, scene):
    model = cache.depth_model()
    if model is None:
        pytest.skip("the tiny preset has no depth model (make tiny-depth)")
    conditions, _ = tab.read_layers([layer("depth", upload=scene.image, source="upload")], 64)
    grey = conditions[0].image
    objects = np.any([obj.mask for obj in scene.objects], axis=0)
    assert grey[objects].mean() > grey[~objects].mean() + 30  # objects stand in front: brighter (near = bright)
