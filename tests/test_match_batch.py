"""Match's batch evaluation on people's own Winoground-style sets: uploads checked before anything runs (each bad
one answered in words), accuracies right on a set whose answer is known, the same numbers as the generated
ShapesWorld groups they were saved from, downloads carrying the recipe, prompt-learned offsets loaded back."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import InvalidInputError
from pipelines.matching import uploads
from pipelines.matching.benchmark import shapesworld_groups
from pipelines.matching.results import MatchResult
from pipelines.matching.runner import HELD_OUT_SEED, MatchRunner
from pipelines.matching.uploads import read_upload
from pipelines.models import TINY_PACK_DIR, ModelManager
from pipelines.recipes import read_recipe
from pipelines.shapesworld.benchmark import save_winoground
from studio import match as tab

needs_pack = pytest.mark.skipif(not (Path(TINY_PACK_DIR) / "shapes-sd").is_dir()
                                or not (Path(TINY_PACK_DIR) / "shapes-clip").is_dir(),
                                reason="the tiny pack (assets/models/tiny) is not on disk")
# Three groups whose verdicts are known under the colour-channel scorer below (score of "a red ..." = the
# picture's mean red, "a green ..." = its mean green):
#   1: (200,100,0) vs (100,200,0) - each picture and caption prefer their own: text, image, group right;
#   2: (200,100,0) vs (150,120,0) - picture 1 prefers "red" (150 > 120): text wrong; each caption prefers its own
#      picture (200 > 150, 120 > 100): image right;
#   3: the pictures of 1 swapped - everything wrong.
KNOWN = [((200, 100, 0), (100, 200, 0)), ((200, 100, 0), (150, 120, 0)), ((100, 200, 0), (200, 100, 0))]
CAPTIONS = ("a red circle", "a green circle")


def known_set(folder: Path, table: str = "jsonl") -> Path:
    """The KNOWN groups as ``examples.jsonl`` (or ``.csv``) beside an ``images/`` folder."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for number, colours in enumerate(KNOWN, start=1):
        for k, colour in enumerate(colours):
            Image.new("RGB", (16, 16), colour).save(folder / "images" / f"g{number}_{k}.png")
        rows.append({"id": f"g{number}", "caption_0": CAPTIONS[0], "caption_1": CAPTIONS[1],
                     "image_0": f"g{number}_0", "image_1": f"g{number}_1.png"})
    if table == "csv":
        lines = ["id,caption_0,caption_1,image_0,image_1"] + [",".join(row.values()) for row in rows]
        (folder / "examples.csv").write_text("\n".join(lines) + "\n")
        return folder / "examples.csv"
    (folder / "examples.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return folder / "examples.jsonl"


def zipped(folder: Path, out: Path, prefix: str = "myset/") -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return out


def channel_scorer(image, captions) -> MatchResult:
    channel = {"red": 0, "green": 1}
    array = np.asarray(image, dtype=np.float64)
    scores = np.array([array[..., channel[c.split()[1]]].mean() for c in captions])
    return MatchResult(list(captions), scores, "clip")


def test_an_upload_is_read_as_a_zip_a_table_with_its_pictures_or_a_csv(tmp_path):
    examples = known_set(tmp_path / "set")
    from_zip = read_upload(zipped(tmp_path / "set", tmp_path / "set.zip"))
    loose = read_upload([examples, *sorted((tmp_path / "set" / "images").glob("*.png"))])
    beside = read_upload(examples)
    csv = read_upload(known_set(tmp_path / "csv", "csv"))
    for groups in (from_zip, loose, beside, csv):
        assert [g.name for g in groups] == ["g1", "g2", "g3"] and all(g.captions == CAPTIONS for g in groups)
        assert tuple(groups[1].images[1][0, 0]) == (150, 120, 0) and groups[0].images[0].shape == (16, 16, 3)


def bad_zip(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def png(size: tuple[int, int]) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


ROW = {"caption_0": "a red circle", "caption_1": "a blue circle", "image_0": "a", "image_1": "b"}


@pytest.mark.parametrize("members, message", [
    ({"images/a.png": png((16, 16))}, "holds no examples.jsonl or .csv"),
    ({"examples.jsonl": json.dumps(ROW), "images/a.png": png((16, 16))}, "image_1 names 'b', which is not among"),
    ({"examples.jsonl": json.dumps(ROW), "a.png": png((5000, 8)), "b.png": png((16, 16))},
     "a.png is 5000x8 pixels; the largest side allowed is 4096"),
    ({"examples.jsonl": json.dumps(ROW), "a.png": png((4, 4)), "b.png": png((16, 16))}, "give at least 8 pixels"),
    ({"examples.jsonl": json.dumps(ROW), "a.png": b"not a picture", "b.png": png((16, 16))},
     "a.png is not an image this studio can read"),
    ({"examples.jsonl": json.dumps(ROW) + "\n{oops", "a.png": png((16, 16)), "b.png": png((16, 16))},
     "examples.jsonl, line 2: not a JSON object"),
    ({"examples.jsonl": json.dumps({**ROW, "caption_1": " "})}, "line 1: caption_1 is missing or empty"),
    ({"examples.jsonl": json.dumps({**ROW, "caption_1": "a red circle"})}, "needs two different captions"),
    ({"examples.csv": "caption_0,image_0\nx,y\n"}, "has no columns caption_1, image_1"),
    ({"one.csv": "x", "two.csv": "x"}, "holds 2 example tables"),
    ({"../evil.jsonl": json.dumps(ROW)}, "holds a file outside its folder"),
])
def test_bad_uploads_are_refused_naming_the_problem(tmp_path, members, message):
    with pytest.raises(InvalidInputError, match=message):
        read_upload(bad_zip(tmp_path, members))


def test_broken_zips_and_odd_files_are_refused(tmp_path, monkeypatch):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(InvalidInputError, match="broken.zip is not a zip file that can be opened"):
        read_upload(broken)
    with pytest.raises(InvalidInputError, match="No file was given"):
        read_upload([])
    with pytest.raises(InvalidInputError, match="notes.txt: not a .zip"):
        read_upload([tmp_path / "notes.txt"])
    known_set(tmp_path / "set")
    archive = zipped(tmp_path / "set", tmp_path / "set.zip")
    with pytest.raises(InvalidInputError, match="one .zip on its own"):
        read_upload([archive, tmp_path / "set" / "examples.jsonl"])
    with monkeypatch.context() as patched:  # a zip bomb's shape: small packed, large unpacked
        patched.setattr(uploads, "MAX_UNPACKED_BYTES", 100)
        with pytest.raises(InvalidInputError, match="unpacks to more than"):
            read_upload(bad_zip(tmp_path, {"examples.jsonl": b"\n" * 10_000}))
    monkeypatch.setattr(uploads, "MAX_GROUPS", 2)
    with pytest.raises(InvalidInputError, match="holds 3 groups; at most 2"):
        read_upload(archive)


@pytest.fixture(scope="module")
def runner() -> MatchRunner:
    return MatchRunner(ModelManager("tiny"))


@needs_pack
def test_accuracies_and_verdicts_are_right_on_a_set_whose_answer_is_known(runner, tmp_path, monkeypatch):
    monkeypatch.setattr(runner.matchers, "scorer", lambda method: channel_scorer)
    known_set(tmp_path / "set")
    archive = zipped(tmp_path / "set", tmp_path / "set.zip")
    seen = []
    table, figure, groups, files, status = tab.batch_eval(runner, None, 20, [str(archive)], ["clip"], False,
                                                          progress=lambda f, desc=None: seen.append(f))
    assert table[0][:4] == ["clip", round(1 / 3, 3), round(2 / 3, 3), round(1 / 3, 3)]
    assert [row[:1] + row[5:8] for row in groups] == [["g1", "✔", "✔", "✔"], ["g2", "✘", "✔", "✘"],
                                                       ["g3", "✘", "✘", "✘"]]
    assert groups[1][8:] == [200.0, 100.0, 150.0, 120.0]  # s(c0,i0), s(c1,i0), s(c0,i1), s(c1,i1)
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])  # the progress bar moves once per group
    bars = {trace.name: list(trace.y) for trace in figure.data}
    assert bars["clip"] == pytest.approx([1 / 3, 2 / 3, 1 / 3]) and bars["chance"] == pytest.approx([0.25, 0.25, 1 / 6])
    assert "Evaluated 3 groups from your upload (set.zip)" in status and "--benchmark set.zip" in status
    csv_file, json_file = map(Path, files)
    recipe = read_recipe(csv_file)
    assert recipe.request["upload"] == ["set.zip"] and recipe.request["methods"] == ["clip"]
    assert len(recipe.request["upload_sha256"]) == 64 and recipe == read_recipe(json_file)
    saved = json.loads(json_file.read_text())
    assert saved["accuracy"]["clip"]["image"] == pytest.approx(2 / 3) and len(saved["rows"]) == 3
    assert csv_file.read_text().splitlines()[1].startswith("id,kind,caption_0,caption_1,method,c0_i0")


@needs_pack
def test_a_set_with_an_unknown_caption_is_refused_naming_its_group(runner, tmp_path):
    known_set(tmp_path)
    lines = (tmp_path / "examples.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace("a green circle", "quantum flapjack")
    (tmp_path / "examples.jsonl").write_text("\n".join(lines))
    with pytest.raises(InvalidInputError, match="Group g2: .*names nothing this model can draw"):
        tab.batch_eval(runner, None, 20, [str(tmp_path / "examples.jsonl")], ["clip"], False,
                       progress=lambda *a, **k: None)


@needs_pack
def test_an_uploaded_set_scores_as_the_generated_groups_it_was_saved_from(runner, tmp_path):
    save_winoground(shapesworld_groups(5, seed=HELD_OUT_SEED), tmp_path / "set")
    archive = zipped(tmp_path / "set", tmp_path / "set.zip")
    uploaded = tab.batch_eval(runner, None, 5, [str(archive)], ["clip"], False, progress=lambda *a, **k: None)
    generated = tab.batch_eval(runner, None, 5, None, ["clip"], False, progress=lambda *a, **k: None)
    assert uploaded[0][0][:7] == generated[0][0][:7]
    assert [row[8:] for row in uploaded[2]] == [row[8:] for row in generated[2]]
    assert read_recipe(generated[3][0]).request["upload"] is None and "--seed 2000" in generated[4]


@needs_pack
def test_offsets_saved_earlier_load_into_this_session_only(runner, tmp_path):
    import torch

    from pipelines.attention import AttentionOffsets

    offsets = AttentionOffsets.from_unet(runner.matchers.backbone.unet, layers=runner.scorer("none").layers)
    with torch.no_grad():
        for tensor in offsets.tensors().values():
            tensor.normal_(0, 0.01)
    path = tmp_path / "offsets.safetensors"
    offsets.save(path)
    session, message, shown = tab.load_offsets(runner, None, str(path))
    assert f"Loaded offsets for {len(offsets.layer_names)} layers" in message and shown == str(path)
    for name, tensor in offsets.tensors().items():
        assert torch.equal(session.offsets.tensors()[name], tensor)
    assert runner.matchers.offsets is None  # nobody else's Discffusion changes
    examples = tab.example_items()
    image, captions, _ = tab.load_example(next(iter(examples)), examples)
    assert "prompt-learned" in tab.score(runner, session, image, captions, ["discffusion"], False)[1][0][0]
    from safetensors.torch import save_file

    save_file({"down_blocks.9.attn2.to_k": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InvalidInputError):
        tab.load_offsets(runner, None, str(tmp_path / "other.safetensors"))


def test_an_upload_is_read_when_given(tmp_path):
    known_set(tmp_path / "set")
    archive = zipped(tmp_path / "set", tmp_path / "set.zip")
    assert tab.check_upload([str(archive)]) == "Read 3 groups from set.zip. Press **Run benchmark** to evaluate them."
    assert tab.check_upload(None) == ""
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="broken.zip is not a zip file"):
        tab.check_upload([str(broken)])


@pytest.mark.browser
@needs_pack
def test_browser_uploads_a_zip_evaluates_it_and_offers_the_results(tmp_path, artifacts_dir):
    from studio_server import CHROMIUM, browser_page, running_studio

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is installed by `make test`")
    save_winoground(shapesworld_groups(5, seed=HELD_OUT_SEED), tmp_path / "set")
    archive = zipped(tmp_path / "set", tmp_path / "set.zip")
    with running_studio(tmp_path) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Match").click()
        page.get_by_text("Batch evaluation: ShapesWorld groups or your own set").click()
        page.locator("#match-batch-upload input[type=file]").set_input_files(str(archive))
        page.get_by_text("Read 5 groups from set.zip").wait_for(timeout=60_000)
        page.get_by_role("button", name="Run benchmark").click()
        page.get_by_text("Evaluated 5 groups from your upload (set.zip)").wait_for(timeout=120_000)
        cells = [line.strip() for line in page.locator("#match-batch-groups").inner_text().splitlines()]
        assert cells.count("discffusion") == cells.count("clip") == 5  # a row per group and method (the defaults)
        assert [c for c in cells if c in {"0", "1", "2", "3", "4"}][:5] == ["0", "1", "2", "3", "4"]  # the file's ids
        status = page.locator("#match-batch-status").inner_text()
        table = [line.strip() for line in page.locator("#match-eval-table").inner_text().splitlines()]
        for method in ("discffusion", "clip"):  # the status and the table agree on each text score
            text = float(status.split(f"{method}: text ")[1].split(",")[0])
            assert float(table[table.index(method) + 1]) == pytest.approx(text, abs=0.005)
        bars = page.locator("#match-batch-plot .js-plotly-plot .bars path")
        bars.first.wait_for(timeout=30_000)
        assert bars.count() >= 6  # 3 scores x 2 methods
        links = page.locator("#match-batch-files a")
        assert sorted(links.nth(i).get_attribute("href").rsplit("/", 1)[-1] for i in range(links.count())) == \
            ["results.csv", "results.json"]
        page.screenshot(path=str(artifacts_dir / "match-batch.png"), full_page=True)


def test_the_command_that_repeats_an_evaluation_names_its_benchmark_and_offsets():
    from pipelines.matching.runner import eval_command

    request = {"upload": ["examples.jsonl", "a.png", "b.png"], "groups": 2, "methods": ["discffusion", "clip"],
               "head_weighting": "attribution", "offsets_sha256": "ab" * 32}
    assert eval_command(request, "output.safetensors") == ("python -m pipelines.matching --offsets output.safetensors "
                                                           "eval --benchmark examples.jsonl --groups 2 "
                                                           "--methods discffusion-hw,clip")
    generated = {**request, "upload": None, "groups": 20, "head_weighting": "none", "offsets_sha256": None}
    assert eval_command(generated) == ("python -m pipelines.matching eval --benchmark shapesworld-comp --seed 2000 "
                                       "--groups 20 --methods discffusion,clip")
