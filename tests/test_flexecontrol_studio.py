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
from pipelines.flexecontrol.runner import FlexEControlRunner, controllability, read_conditions
from pipelines.models import TINY_PACK_DIR, ModelManager, choose_placement
from pipelines.recipes import read_recipe

pytestmark = pytest.mark.skipif(not (TINY_PACK_DIR / "flexecontrol").is_dir(), reason="run `make tiny-flexecontrol`")


def canvas(image: np.ndarray) -> dict:
    """An ImageEditor value whose composite is ``image`` drawn at the canvas size."""
    big = np.kron(image, np.ones((4, 4, 1) if image.ndim == 3 else (4, 4), np.uint8))
    return {"background": np.zeros_like(big), "layers": [], "composite": big}


def layer(kind, drawing=None, upload=None, weight=1.0, start=0.0, end=1.0, source="draw"):
    return tab.LayerInput(kind, source, drawing, upload, weight, start, end)


def read_layers(layers, size):
    return read_conditions(tab.condition_inputs(layers), size)


def run_generation(runner, prompt, layers, seed, steps, guidance):
    report, path = tab.generate_image(runner, prompt, layers, seed, steps, guidance, True)
    return report.image, report.conditions, report.notes, report.rows, report.seconds, path


@pytest.fixture(scope="module")
def cache():
    return FlexEControlRunner(ModelManager("tiny", choose_placement("cpu")))


@pytest.fixture(scope="module")
def scene():
    return sample_scene(4, split="test")


def test_tab_is_listed_before_about():
    titles = tab_titles()
    assert "FlexEControl" in titles and titles.index("FlexEControl") < titles.index("About")


def test_generation_from_two_canvases_gives_numbers_and_overlay(cache, scene):
    layers = [layer("canny", canvas(canny(scene))), layer("segmentation", canvas(segmentation(scene)), weight=0.8)]
    image, conditions, notes, rows, seconds, path = run_generation(cache, scene.caption, layers, 0, 4, 3.0)
    recipe = read_recipe(path)
    assert recipe.method == "flexecontrol" and recipe.request["steps"] == 4 and recipe.request["seed"] == 0
    assert [c["type"] for c in recipe.request["conditions"]] == ["canny", "segmentation"]
    assert image.shape == (64, 64, 3) and notes == [] and seconds > 0
    assert [c.type for c in conditions] == ["canny", "segmentation"]
    assert np.array_equal(conditions[0].image, canny(scene))  # the 256 canvas comes back to the 64 map exactly
    assert [r["metric"] for r in rows] == ["SSIM (edges)", "mIoU (segmentation)"]
    assert all(-1.0 <= r["value"] <= 1.0 for r in rows)
    text = tab.numbers_markdown(rows, seconds)
    assert re.search(r"\| 1 \| canny \| \d of \d \(.*\) \| SSIM \(edges\) \|", text)
    shown = tab.overlay(image, conditions)
    assert (shown[canny(scene) > 0] == tab.OVERLAY_COLOUR.astype(np.uint8)).all()


def test_numbers_check_each_drawn_object_against_the_output(scene):
    """On the scene's own render every object of its canny and segmentation maps is found where drawn (green
    boxes); on a blank image none is (red boxes)."""
    from pipelines.flexecontrol import Condition

    conditions = [Condition("canny", canny(scene)), Condition("segmentation", segmentation(scene))]
    rows = controllability(conditions, scene.image)
    assert [len(r["objects"]) for r in rows] == [len(scene.objects)] * 2 and all(f is not None for r in rows for f in r["found"])
    assert f"{len(scene.objects)} of {len(scene.objects)}" in tab.numbers_markdown(rows, 1.0)
    boxes = tab.placement_boxes(np.zeros((256, 256, 3), np.uint8), rows, 4.0)
    assert (boxes == (40, 200, 40)).all(axis=-1).sum() > 100 and not (boxes == (230, 40, 40)).all(axis=-1).any()
    blank = np.full_like(scene.image, 128)
    missed = controllability(conditions, blank)
    assert all(f is None for r in missed for f in r["found"]) and f"0 of {len(scene.objects)}" in tab.numbers_markdown(missed, 1.0)
    red = tab.placement_boxes(np.zeros((256, 256, 3), np.uint8), missed, 4.0)
    assert (red == (230, 40, 40)).all(axis=-1).sum() > 100


def test_uploads_are_extracted_and_resizing_is_said(cache, scene):
    big = np.kron(scene.image, np.ones((3, 3, 1), np.uint8))  # 192x192 upload
    conditions, notes = read_layers([layer("edge", upload=big, source="upload")], 64)
    assert conditions[0].type == "canny" and conditions[0].image.shape == (64, 64)
    assert notes == ["Condition 1 (edge): the 192x192 upload was resized to 64x64."]


def test_bad_input_is_explained(cache, scene):
    black = canvas(np.zeros((64, 64), np.uint8))
    with pytest.raises(InvalidInputError, match="Condition 1 \\(canny\\) is empty"):
        run_generation(cache, scene.caption, [layer("canny", black)], 0, 2, 3.0)
    with pytest.raises(InvalidInputError, match="upload an image"):
        read_layers([layer("depth", source="upload")], 64)
    with pytest.raises(InvalidInputError, match="weight 3 is outside"):
        read_layers([layer("canny", canvas(canny(scene)), weight=3)], 64)
    with pytest.raises(InvalidInputError, match="Unknown condition type 'pose'"):
        read_layers([layer("pose", canvas(canny(scene)))], 64)
    with pytest.raises(InvalidInputError, match="5 conditions"):
        read_layers([layer("canny", canvas(canny(scene)))] * 5, 64)
    image, conditions, notes, rows, _, _ = run_generation(cache, scene.caption, [layer("none")] * 4, 0, 2, 3.0)
    assert conditions == [] and rows == [] and "text alone" in notes[0]


def _black_area(element) -> dict:
    """The page rectangle of the black drawing surface inside the editor's canvas element (found on a
    screenshot of the element: the editor centres and scales the image inside a larger viewport)."""
    import cv2

    box = element.bounding_box()
    shot = cv2.imdecode(np.frombuffer(element.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    ys, xs = np.nonzero(shot.max(axis=2) < 12)
    sx, sy = box["width"] / shot.shape[1], box["height"] / shot.shape[0]
    return {"x": box["x"] + xs.min() * sx, "y": box["y"] + ys.min() * sy,
            "width": (xs.max() + 1 - xs.min()) * sx, "height": (ys.max() + 1 - ys.min()) * sy}


def _draw_path(page, area, points) -> None:
    """Press, move through ``points`` (fractions of the drawing surface ``area``), release."""
    page.mouse.move(area["x"] + points[0][0] * area["width"], area["y"] + points[0][1] * area["height"])
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(area["x"] + fx * area["width"], area["y"] + fy * area["height"], steps=2)
    page.mouse.up()


# A circle on the left and a square on the right, as fractions of the canvas: (centre x, centre y, half side).
DRAWN_CIRCLE = (0.28, 0.5, 0.13)
DRAWN_SQUARE = (0.72, 0.5, 0.11)


def _fetch(base: str, src: str) -> np.ndarray:
    """A shown image (the output or a preview, both 256 px views of a 64 px image) back at 64 px, RGB."""
    import urllib.request

    import cv2

    with urllib.request.urlopen(src if src.startswith("http") else base.rstrip("/") + src) as response:
        shown = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    return cv2.resize(shown, (64, 64), interpolation=cv2.INTER_AREA)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by `make test`")
def test_browser_draws_a_circle_and_a_square_and_both_land_where_drawn(tmp_path, artifacts_dir):
    """Issue 18: a person draws a circle outline on the left and a square outline on the right with the mouse,
    keeps the prompt "a red circle left of a blue square" and generates with five seeds; in at least 4 of the 5
    images the detector must find an object where each was drawn (box IoU >= 0.5 with the drawn outline's box),
    red on the left and blue on the right. (Shapes are judged by the bench: the tiny base model draws blobby
    circles that the detector does not always call circles.)"""
    from pipelines.flexecontrol.metrics import drawn_objects
    from pipelines.shapesworld.detector import detect
    from pipelines.shapesworld.metrics import box_iou

    with running_studio(tmp_path) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="FlexEControl").click()
        drawing = page.locator("#flexecontrol-canvas-1 canvas").first
        drawing.wait_for(timeout=30_000)
        box = _black_area(drawing)
        cx, cy, r = DRAWN_CIRCLE
        _draw_path(page, box, [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 17)])
        sx, sy, h = DRAWN_SQUARE
        _draw_path(page, box, [(sx - h, sy - h), (sx + h, sy - h), (sx + h, sy + h), (sx - h, sy + h), (sx - h, sy - h)])
        page.wait_for_timeout(500)
        assert "circle left of a blue square" in page.locator("#flexecontrol-prompt textarea").input_value()
        hits, previous = [], None
        for seed in range(5):
            page.locator("#flexecontrol-seed input").fill(str(seed))
            page.locator("#flexecontrol-seed input").press("Tab")
            page.get_by_role("button", name="Generate").click()
            page.wait_for_function(
                "(prev) => { const img = document.querySelector('#flexecontrol-output img');"
                " return img && img.src && img.src !== prev; }", arg=previous, timeout=90_000)
            previous = page.locator("#flexecontrol-output img").first.get_attribute("src")
            image = _fetch(url, previous)
            # Where the objects were drawn: the map the studio read from the canvas (its preview), not the
            # mouse path, whose placement on the canvas depends on the editor's layout.
            drawn = _fetch(url, page.locator("#flexecontrol-previews img").first.get_attribute("src"))
            objects = sorted(drawn_objects("canny", drawn[..., 0]), key=lambda o: o.box[0])
            assert len(objects) == 2 and objects[0].box[2] < 32 < objects[1].box[0], [o.box for o in objects]
            found = detect(image)
            left = any(d.colour == "red" and box_iou(d.box, objects[0].box) >= 0.5 for d in found)
            right = any(d.colour == "blue" and box_iou(d.box, objects[1].box) >= 0.5 for d in found)
            hits.append(left and right)
            page.screenshot(path=str(artifacts_dir / f"flexecontrol-drawn-seed{seed}.png"), full_page=True)
        text = page.locator("#flexecontrol-numbers").inner_text()
        assert "Generated in" in text and "canny" in text and "of 2" in text
        assert page.locator("#flexecontrol-previews img").count() >= 1
        assert sum(hits) >= 4, f"red and blue objects where drawn in {sum(hits)} of 5 seeds: {hits}"
        # The ready example, generated: each drawn object checked against the output (the truth the studio knows).
        page.get_by_role("button", name="Load the example").click()
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            "(prev) => { const img = document.querySelector('#flexecontrol-output img');"
            " return img && img.src && img.src !== prev; }", arg=previous, timeout=90_000)
        text = page.locator("#flexecontrol-numbers").inner_text()
        assert "objects where you drew them" in text and "of 2" in text and "no condition" in text


def test_depth_upload_goes_through_the_presets_depth_model(cache, scene):
    model = cache.depth_model()
    if model is None:
        pytest.skip("the tiny preset has no depth model (make tiny-depth)")
    conditions, _ = read_layers([layer("depth", upload=scene.image, source="upload")], 64)
    grey = conditions[0].image
    objects = np.any([obj.mask for obj in scene.objects], axis=0)
    assert grey[objects].mean() > grey[~objects].mean() + 30  # objects stand in front: brighter (near = bright)


def test_the_example_drawing_shows_a_circle_left_and_a_square_right():
    from pipelines.flexecontrol import from_drawing
    from pipelines.flexecontrol.metrics import drawn_objects

    drawing = tab.example_canvas()["composite"]
    assert drawing.shape == (tab.CANVAS, tab.CANVAS, 3)
    objects = sorted(drawn_objects("canny", from_drawing(drawing, "canny", 64)), key=lambda o: o.box[0])
    assert [o.shape for o in objects] == ["circle", "square"]
    assert objects[0].box[2] < 32 < objects[1].box[0]
    assert "red circle" in tab.EXAMPLE_PROMPT and "blue square" in tab.EXAMPLE_PROMPT


def test_ready_examples_are_held_out_scenes_drawn_from_their_truth_and_load_with_one_click(cache):
    """Each example is a held-out scene's objects drawn by hand from its truth (the shipped file is that drawing,
    pixel for pixel) with the scene's caption; clicking it fills the prompt, layer 1's type and canvas, and the
    maps Generate reads show the scene's objects: the right shapes inside their true boxes (depth: brighter where
    the objects are)."""
    from PIL import Image

    from pipelines.flexecontrol.metrics import drawn_objects
    from studio import build_studio

    rows = tab.example_rows()
    assert [row[1] for row in rows] == ["canny", "sketch", "segmentation", "depth"]
    studio = build_studio()
    dataset = next(b for b in studio.blocks.values() if getattr(b, "elem_id", None) == "flexecontrol-examples")
    click = next(fn for fn in studio.fns.values() if any(target == dataset._id for target, _ in fn.targets))
    assert [c.elem_id for c in click.outputs] == ["flexecontrol-prompt", "flexecontrol-type-1", None,
                                                  "flexecontrol-canvas-1"]
    for index, ((seed, kind), (prompt, _, _, path)) in enumerate(zip(tab.EXAMPLE_SCENES, rows)):
        scene = sample_scene(seed, split="test")
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), tab.example_drawing(seed, kind)[0])
        updates = click.fn(dataset.preprocess(index))  # what one click sends to the browser
        assert [u["value"] for u in updates[:3]] == [scene.caption, kind, "draw"] and prompt == scene.caption
        canvas_component = click.outputs[3]
        drawing = canvas_component.preprocess(canvas_component.data_model.model_validate(updates[3]["value"]))
        (condition,), _ = cache.conditions(tab.condition_inputs([layer(kind, drawing)]))
        if kind == "depth":
            objects = np.any([obj.mask for obj in scene.objects], axis=0)
            grey = condition.image if condition.image.ndim == 2 else condition.image.mean(axis=-1)
            assert grey[objects].mean() > grey[~objects].mean() + 30
            continue
        drawn = drawn_objects(kind, condition.image)
        assert sorted(o.shape for o in drawn) == sorted(o.shape for o in scene.objects)
        for obj in drawn:
            truth = next(t for t in scene.objects if t.shape == obj.shape)
            centre = ((obj.box[0] + obj.box[2]) / 2, (obj.box[1] + obj.box[3]) / 2)
            assert truth.box[0] <= centre[0] <= truth.box[2] and truth.box[1] <= centre[1] <= truth.box[3]


def test_a_stopped_generation_ends_at_its_next_step_and_leaves_the_model_as_it_was(cache, scene):
    from pipelines.errors import RunStopped
    from pipelines.stopping import Stop, stopping

    layers = [layer("canny", canvas(canny(scene)))]
    before = run_generation(cache, scene.caption, layers, 3, 8, 3.0)[0]
    stop, steps = Stop(), []

    def progress(fraction, desc=None):
        steps.append(fraction)
        if len(steps) == 2:
            stop.set()  # Stop pressed during the second step

    with pytest.raises(RunStopped):
        tab.generate_image(cache, scene.caption, layers, 3, 8, 3.0, True, stopping(progress, stop))
    assert steps == [1 / 8, 2 / 8]  # no third step ran
    assert np.array_equal(run_generation(cache, scene.caption, layers, 3, 8, 3.0)[0], before)  # hooks all removed


def test_bench_reference_reads_the_drawn_rows(tmp_path, monkeypatch):
    import json

    rows = [{"name": "detector_ceiling", "value": 0.98, "scenes": 48},
            *({"name": "controllability", "model": m, "setting": s, "source": "drawn",
               "value": {"placed": p, "right": p / 2, "ssim_canny": 0.5 + p / 10, "miou_segmentation": p}}
              for m, p in (("flexecontrol", 0.8), ("no_condition", 0.0))
              for s in ("single_canny", "single_segmentation"))]
    path = tmp_path / "flexecontrol.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setattr(tab, "BENCH_RESULTS", path)
    tab.bench_reference.cache_clear()
    try:
        reference = tab.bench_reference()
        assert reference["segmentation"] == {"floor": 0.0, "model": 0.8, "placed": 0.8, "placed_floor": 0.0,
                                             "right": 0.4, "scenes": 48, "metric": "segmentation mIoU", "ceiling": 0.98}
        assert reference["canny"]["ceiling"] is None and reference["canny"]["model"] == pytest.approx(0.58)
        text = tab.measured_markdown()
        assert "objects where drawn 80% (no condition 0%)" in text and "0.98 for a perfect image" in text
    finally:
        tab.bench_reference.cache_clear()


def test_bench_reference_prefers_the_miou_against_the_drawing(tmp_path, monkeypatch):
    """The tab scores a drawn segmentation against the drawing, so the reference is the bench's mIoU against the
    map given where the file has it, not the one against the scene's truth."""
    import json

    rows = [{"name": "detector_ceiling", "value": 0.98, "scenes": 48},
            *({"name": "controllability", "model": m, "setting": "single_segmentation", "source": "drawn",
               "value": {"placed": 0.9, "right": 0.7, "ssim_canny": 0.6, "miou_segmentation": truth,
                         "miou_condition": given}}
              for m, truth, given in (("flexecontrol", 0.76, 0.84), ("no_condition", 0.29, 0.27)))]
    path = tmp_path / "flexecontrol.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setattr(tab, "BENCH_RESULTS", path)
    tab.bench_reference.cache_clear()
    try:
        reference = tab.bench_reference()["segmentation"]
        assert (reference["model"], reference["floor"]) == (0.84, 0.27)
        assert reference["metric"] == "segmentation mIoU against the drawing"
    finally:
        tab.bench_reference.cache_clear()
