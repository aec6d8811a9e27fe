"""Match tab: handlers on the shipped tiny pack keep each user's data apart and explain bad input;
a real browser loads an example, scores it and sees the bars and the heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from studio_server import CHROMIUM, browser_page, running_studio

from pipelines.errors import InvalidInputError
from pipelines.matching.runner import MatchRunner, relation_guidance
from pipelines.models import TINY_PACK_DIR, ModelManager
from pipelines.recipes import read_recipe
from studio import match as tab
from studio import tab_titles

PACK = Path(TINY_PACK_DIR)
needs_pack = pytest.mark.skipif(not (PACK / "shapes-sd").is_dir() or not (PACK / "shapes-clip").is_dir(),
                                reason="the tiny pack (assets/models/tiny) is not on disk")


@pytest.fixture(scope="module")
def matchers() -> MatchRunner:
    return MatchRunner(ModelManager("tiny"))


@pytest.fixture(scope="module")
def examples():
    return tab.example_items()


def test_tab_is_listed_first():
    assert tab_titles()[0] == "Match"


def test_examples_and_samples_give_an_image_and_captions(examples):
    assert len(examples) >= 3
    image, captions, truth = tab.load_example(next(iter(examples)), examples)
    assert image.ndim == 3 and image.shape[2] == 3 and len(captions.splitlines()) == 5
    assert truth == captions.splitlines()[0]  # the example's own caption is its truth
    image, captions, truth = tab.shapesworld_sample(4)
    lines = captions.splitlines()
    assert image.shape == (128, 128, 3) and len(lines) >= 3 and len(set(lines)) == len(lines) and truth == lines[0]


def test_layer_names_are_readable():
    assert tab.layer_label("down_blocks.0.attentions.0.transformer_blocks.0.attn2", 16, 2) == "16x16, down 1"
    assert tab.layer_label("down_blocks.1.attentions.1.transformer_blocks.0.attn2", 16, 2) == "8x8, down 2, part 2"
    assert tab.layer_label("up_blocks.1.attentions.0.transformer_blocks.0.attn2", 16, 2) == "16x16, up 2"
    assert tab.layer_label("mid_block.attentions.0.transformer_blocks.0.attn2", 16, 2) == "8x8, middle"


@needs_pack
def test_score_ranks_plots_and_gives_one_heatmap_per_word(matchers, examples):
    image, captions, truth = tab.load_example(next(iter(examples)), examples)
    outputs = tab.score(matchers, None, image, captions, ["discffusion", "clip"], False, truth)
    session, table, figure, _, layers, levels, gallery, status = outputs
    assert len(table) == 2 * 5 and {row[0] for row in table} == {"discffusion", "clip"}
    assert len(figure.data) == 2 and all(len(bar.y) == 5 for bar in figure.data)
    # the truth: marked in the table, on the bars (outlined, labelled) and each method's pick right or wrong
    assert {row[2] for row in table if row[3] == "✔ true"} == {truth}
    assert all(f"✔ {truth} (true)" in bar.y for bar in figure.data)
    assert all(set(bar.marker.color) <= {tab.WINNER_COLOUR, tab.OTHER_COLOUR} for bar in figure.data)
    assert f"True caption: **{truth}**" in status and status.count("right") + status.count("wrong") == 2
    assert all(not label.startswith(("down_blocks", "up_blocks")) for label, _ in layers["choices"][1:])
    words = captions.splitlines()[0].split()
    assert [label.split(" (")[0] for _, label in gallery] == list(dict.fromkeys(words))
    assert all(overlay.shape == (160, 160, 3) for overlay, _ in gallery)
    # another caption, one layer and one noise level
    layer = layers["choices"][1][1]
    level = levels["choices"][1]
    second = captions.splitlines()[1]
    again = tab.refresh_heatmaps(matchers, session, second, layer, level)
    assert [label.split(" (")[0] for _, label in again] == list(dict.fromkeys(second.split()))
    assert "Scored 5 captions" in status
    # each call builds its own session: nothing of this user reaches another
    other = tab.score(matchers, None, image, "a red circle", ["clip"], False)[0]
    assert other is not session and other.report.features is None and session.report.features is not None


@needs_pack
def test_generate_from_prompt_gives_the_prompt_and_its_swaps(matchers):
    path, captions, recipe, truth = tab.generate(matchers, "a red circle left of a blue square", 0)
    assert truth == "a red circle left of a blue square"
    from PIL import Image

    image = np.asarray(Image.open(path))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    carried = read_recipe(path)
    assert carried.request == {"kind": "image", "prompt": "a red circle left of a blue square", "seed": 0}
    assert carried.preset == "tiny" and len(carried.models["text-to-image"]) == 64
    assert "python -m pipelines.matching rerun output.png" in recipe
    assert captions.splitlines() == ["a red circle left of a blue square", "a blue circle left of a red square",
                                     "a red square left of a blue circle", "a red circle right of a blue square"]


@needs_pack
def test_generated_relation_prompts_are_laid_out_by_box_guidance(matchers):
    from PIL import Image

    from pipelines.shapesworld import caption_verdict

    prompt = "a green triangle above a yellow circle"
    assert relation_guidance(prompt) is not None
    assert relation_guidance("a green triangle") is None and relation_guidance("a cat on a mat") is None
    verdicts = [caption_verdict(np.asarray(Image.open(tab.generate(matchers, prompt, seed)[0])), prompt) for seed in range(4)]
    present = [v for v in verdicts if v.both_present]
    # seeds 0-3 of the shipped pack: 3 of 4 draw both objects, each time the triangle above the circle
    assert len(present) >= 2 and all(v.relation_ok for v in present)


@needs_pack
def test_few_shot_panel_trains_offsets_for_this_session_only_and_batch_eval_gives_a_table(matchers, examples):
    session = tab.MatchSession()
    session, report, figure, path = tab.train(matchers, session, 2, 3, 5, False, progress=lambda *a, **k: None)
    assert session.offsets is not None and Path(path).is_file() and len(figure.data[0].y) == 3
    assert "| overall |" in report and "before | after" in report
    image, captions, _ = tab.load_example(next(iter(examples)), examples)
    tuned = tab.score(matchers, session, image, captions, ["discffusion"], False)
    plain = tab.score(matchers, None, image, captions, ["discffusion"], False)
    assert "prompt-learned" in tuned[1][0][0] and "prompt-learned" not in plain[1][0][0]
    assert matchers.matchers.offsets is None  # the shared matchers never hold a user's offsets
    session, _, _ = tab.reset_offsets(session)
    assert session.offsets is None
    rows = tab.batch_eval(matchers, session, 5, None, ["clip", "discffusion"], False, progress=lambda *a, **k: None)[0]
    assert [row[0] for row in rows] == ["discffusion", "clip"] and all(0 <= v <= 1 for v in rows[0][1:4])


@needs_pack
def test_handlers_explain_bad_input(matchers, examples):
    image, captions, _ = tab.load_example(next(iter(examples)), examples)
    with pytest.raises(InvalidInputError, match="No image"):
        tab.score(matchers, None, None, captions, ["clip"], False)
    with pytest.raises(InvalidInputError, match="No captions"):
        tab.score(matchers, None, image, " \n ", ["clip"], False)
    with pytest.raises(InvalidInputError, match="at most 32"):
        tab.score(matchers, None, image, "\n".join(["a red circle"] * 40), ["clip"], False)
    with pytest.raises(InvalidInputError, match="names nothing this model can draw"):
        tab.score(matchers, None, image, "quantum flapjack", ["clip"], False)
    with pytest.raises(InvalidInputError, match="at least 8 pixels"):
        tab.score(matchers, None, np.zeros((1, 1, 3), np.uint8), captions, ["clip"], False)
    with pytest.raises(InvalidInputError, match="Tick at least one"):
        tab.score(matchers, None, image, captions, [], False)
    with pytest.raises(InvalidInputError, match="Score with Discffusion first"):
        tab.refresh_heatmaps(matchers, None, "a red circle", None, None)
    with pytest.raises(InvalidInputError, match="Write a prompt"):
        tab.generate(matchers, "  ", 0)


@pytest.mark.browser
@needs_pack
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is installed by `make test`")
def test_browser_loads_an_example_scores_it_and_sees_bars_and_heatmaps(tmp_path, artifacts_dir):
    with running_studio(tmp_path) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Match").click()
        page.get_by_role("button", name="Load example").click()
        page.wait_for_function(
            "document.querySelector('#match-captions textarea')?.value.split('\\n').length === 5", timeout=30_000
        )
        page.locator("#match-image img").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Score").click()
        page.get_by_text("Scored 5 captions").first.wait_for(timeout=90_000)
        truth = page.locator("#match-truth textarea, #match-truth input").first.input_value()
        status = page.locator("#match-status").inner_text()
        assert truth and f"True caption: {truth}" in status  # the truth marked, each pick right or wrong
        assert status.count("right") + status.count("wrong") == 2
        assert "✔ true" in page.locator("#match-table").inner_text()
        assert page.locator("#match-colour-scale img").count() == 1
        bars = page.locator("#match-plot .js-plotly-plot .bars path")
        bars.first.wait_for(timeout=30_000)
        assert bars.count() >= 10  # 5 captions x 2 methods
        heatmaps = page.locator("#match-heatmaps img")
        heatmaps.first.wait_for(timeout=30_000)
        assert heatmaps.count() >= 4
        assert "discffusion" in page.locator("#match-table").inner_text()
        page.screenshot(path=str(artifacts_dir / "match-scored.png"), full_page=True)
