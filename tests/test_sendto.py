""""Send to" between tabs: the handlers move an image, a prompt and keyframes where they belong, and a real
browser walks one creation through generate (Match) -> match -> animate (Mojito) -> 4D (Morpho4D)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from studio_server import CHROMIUM, browser_page, running_studio

from pipelines.errors import InvalidInputError
from pipelines.models import TINY_PACK_DIR, ModelManager
from pipelines.morpho4d.runner import Morpho4DRunner
from studio import morpho4d, sendto

PROMPT = "a red circle left of a blue square"


def _picture() -> np.ndarray:
    image = np.full((64, 64, 3), 200, np.uint8)
    image[20:40, 8:28] = (220, 35, 45)
    return image


def test_an_image_goes_to_flexecontrol_as_an_upload_and_to_mojito_as_the_canvas():
    image = _picture()
    prompt, kind, source, upload, tab = sendto.to_flexecontrol(image, f"{PROMPT}\nanother caption")
    assert (prompt, kind, source) == (PROMPT, "segmentation", "upload") and upload is image
    assert tab.selected == "flexecontrol"
    session, prompt, phrase, canvas, table, tab = sendto.to_mojito(image, PROMPT)
    assert prompt == PROMPT and phrase["value"] == "red circle" and table == [] and tab.selected == "mojito"
    assert canvas.shape == (256, 256, 3) and session.background.shape == (64, 64, 3)
    assert canvas[120, 70].tolist() == [220, 35, 45]  # the red square of the picture, 4x larger
    with pytest.raises(InvalidInputError, match="no image to send"):
        sendto.to_mojito(None, PROMPT)


def test_flexecontrol_output_goes_to_match_with_the_prompt_and_its_swaps():
    image = _picture()
    sent, captions, truth, tab = sendto.flexecontrol_to_match((image, [], []), PROMPT)
    assert truth == PROMPT
    assert sent is image and captions.splitlines()[0] == PROMPT and len(captions.splitlines()) == 4
    assert tab.selected == "match"
    with pytest.raises(InvalidInputError, match="Generate an image in FlexEControl first"):
        sendto.flexecontrol_to_match(None, PROMPT)


def test_a_4d_scene_goes_back_to_mojito_with_its_first_frame_and_its_keyframes():
    from pipelines.morpho4d.fitting import FitConfig
    from pipelines.morpho4d.generation import GenConfig

    runner = Morpho4DRunner(ModelManager("tiny"), frames="stand-in",
                            config=GenConfig(n_frames=4, fit=FitConfig(steps=5, init_gaussians=500)))
    session = runner.new_session()
    session.run("a red ball moves from left to right quickly")
    view = morpho4d.new_view(session, "test")
    prompt, first, objects = morpho4d.to_mojito(view)
    assert prompt == session.gen.video.prompt and first.shape == (256, 256, 3)
    rows = objects["red circle"]
    assert [row[0] for row in rows] == [0, 5, 10, 15] and rows[-1][1] > rows[0][1]  # it moves to the right
    with pytest.raises(InvalidInputError, match="Load an example"):
        morpho4d.to_mojito(None)


def _image(page, selector) -> np.ndarray:
    src = page.locator(selector).first.get_attribute("src")
    if src.startswith("data:"):
        import base64

        data = base64.b64decode(src.split(",", 1)[1])
    else:
        data = page.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by `make test`")
@pytest.mark.skipif(not (TINY_PACK_DIR / "shapes-t2v").is_dir(), reason="needs the shapes-t2v pack")
def test_browser_walks_one_creation_from_match_to_mojito_to_4d(tmp_path, artifacts_dir):
    with running_studio(tmp_path) as url, browser_page(height=1400) as page:
        page.goto(url, wait_until="load")
        # 1. Generate an image in Match, and score its captions.
        page.get_by_role("tab", name="Match").click()
        page.get_by_label("Generate from prompt").fill(PROMPT)
        page.get_by_role("button", name="Generate", exact=True).first.click()
        page.wait_for_function(
            "document.querySelector('#match-captions textarea')?.value.split('\\n').length === 4", timeout=90_000)
        page.get_by_text("python -m pipelines.matching rerun").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Score").click()
        page.get_by_text("Scored 4 captions").first.wait_for(timeout=120_000)
        generated = _image(page, "#match-image img")

        # 2. Send it to Mojito: the prompt, and the image as the first-frame canvas.
        page.locator("#match-to-mojito").click()
        page.wait_for_function(
            f"document.querySelector('#mojito-prompt textarea')?.value === {PROMPT!r}", timeout=30_000)
        canvas = _image(page, "#mojito-canvas img")
        small = np.asarray(Image.fromarray(canvas).resize(generated.shape[1::-1], Image.NEAREST)).astype(int)
        assert np.abs(small - generated.astype(int)).mean() < 8  # the canvas is the generated image

        # 3. Animate: a preset path for the red circle, Generate.
        page.get_by_role("button", name="Apply preset").click()
        page.wait_for_function("document.querySelector('#mojito-table').innerText.includes('15')", timeout=30_000)
        page.locator("#mojito-generate").click()
        page.get_by_text("mIoU").first.wait_for(timeout=300_000)
        page.locator("#mojito-raw a").first.wait_for(timeout=30_000)

        # 4. Lift to 4D: Morpho4D fits the video along its trajectory.
        page.locator("#mojito-lift").click()
        page.locator("#morpho4d-chat").get_by_text("Fitted the Mojito video").first.wait_for(timeout=600_000)
        page.wait_for_function("document.querySelector('#morpho4d-view img')?.src?.length > 0", timeout=60_000)
        view = _image(page, "#morpho4d-view img")
        chat = page.locator("#morpho4d-chat").inner_text()
        page.screenshot(path=str(artifacts_dir / "sendto-lifted.png"), full_page=True)
    assert "over 16 frames; objects: red circle" in chat  # Mojito's 16 frames, the object it was steered
    assert view.shape[0] >= 64 and view.std() > 5  # a rendered scene, not a blank view
