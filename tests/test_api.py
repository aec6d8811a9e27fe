"""The stable API: one main action per tab driven through ``gradio_client`` against a served studio, with plain
values (an image and captions; condition images plus their types; a trajectory as keyframe lists; commands)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from studio_server import running_studio

from pipelines.models import TINY_PACK_DIR
from pipelines.recipes import read_recipe

pytestmark = pytest.mark.skipif(
    not all((TINY_PACK_DIR / name).is_dir() for name in ("shapes-sd", "shapes-clip", "shapes-t2v", "flexecontrol")),
    reason="the tiny pack (assets/models/tiny) is not on disk")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    with running_studio(tmp_path_factory.mktemp("api")) as url:
        yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def test_every_main_action_is_named(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/match_score", "/match_generate", "/flexecontrol_generate", "/mojito_generate", "/morpho4d_command",
            "/morpho4d_edit", "/morpho4d_undo"} <= names


def test_match_generates_then_scores_with_plain_values(client):
    from gradio_client import handle_file

    path, captions, recipe, truth = client.predict("a red circle left of a blue square", 0, api_name="/match_generate")
    assert truth == "a red circle left of a blue square"  # what the picture was asked to show
    assert read_recipe(path).request["prompt"] == "a red circle left of a blue square"
    assert captions.splitlines()[0] == "a red circle left of a blue square" and "rerun" in recipe
    table = client.predict(handle_file(path), captions, ["clip"], False, api_name="/match_score")[0]
    rows = table["data"]
    assert len(rows) == 4 and {row[0] for row in rows} == {"clip"} and [row[1] for row in rows] == [1, 2, 3, 4]


def test_flexecontrol_takes_condition_images_plus_types(client, tmp_path):
    from gradio_client import handle_file

    from pipelines.shapesworld import sample_scene

    scene = sample_scene(4, split="test")
    picture = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(picture)
    path, numbers = client.predict(scene.caption, [handle_file(picture)], [{"type": "segmentation", "weight": 0.8}],
                                   0, 4, 3.0, True, api_name="/flexecontrol_generate")
    image = np.asarray(Image.open(path))
    assert image.shape == (64, 64, 3) and read_recipe(path).request["conditions"][0]["weight"] == 0.8
    assert numbers["conditions"][0]["metric"] == "mIoU (segmentation)" and 0 <= numbers["conditions"][0]["value"] <= 1
    assert numbers["command"].startswith("python -m pipelines.flexecontrol rerun")
    with pytest.raises(Exception, match="condition images for"):
        client.predict(scene.caption, [handle_file(picture)], [], 0, 4, 3.0, True, api_name="/flexecontrol_generate")


def test_mojito_takes_the_trajectory_as_keyframe_lists(client):
    trajectory = [{"phrase": "red circle", "keyframes": [[0, 0.05, 0.35, 0.35, 0.65], [15, 0.65, 0.35, 0.95, 0.65]]}]
    path, report = client.predict("a red circle moves from left to right quickly", trajectory, 7, 0.1, 2, 1.0, 5, 1,
                                  "linear", api_name="/mojito_generate")
    assert read_recipe(path).request["trajectories"][0]["keyframes"][1] == [15, 0.65, 0.35, 0.95, 0.65]
    assert report["objects"][0]["phrase"] == "red circle" and 0 <= report["objects"][0]["miou"] <= 1
    assert report["intensity"] == 7
    with pytest.raises(Exception, match="at least two"):
        client.predict("a red circle moves", [{"phrase": "red circle", "keyframes": [[0, 0.1, 0.1, 0.4, 0.4]]}],
                       7, 0.1, 2, 1.0, 5, 1, "linear", api_name="/mojito_generate")


def test_morpho4d_loads_edits_and_undoes_in_one_session(client):
    from studio.morpho4d import example_labels

    outputs = client.predict(next(iter(example_labels())), api_name="/morpho4d_load_example")
    status = outputs[2]
    assert "red square" in status
    count = int(status.split("\n")[1].split(" Gaussians")[0].replace(",", ""))
    edited = client.predict("delete the square", 0, 0, 0, 1.0, api_name="/morpho4d_command")
    assert "deleted 'red square'" in edited[0][-1]["content"][0]["text"]
    assert int(edited[4].split("\n")[1].split(" Gaussians")[0].replace(",", "")) < count
    undone = client.predict(0, 0, 0, 1.0, api_name="/morpho4d_undo")
    assert int(undone[2].split("\n")[1].split(" Gaussians")[0].replace(",", "")) == count


def test_match_batch_evaluates_an_uploaded_zip_and_refuses_a_broken_one(client, tmp_path):
    import zipfile

    from gradio_client import handle_file

    from pipelines.matching.benchmark import shapesworld_groups
    from pipelines.shapesworld.benchmark import save_winoground

    save_winoground(shapesworld_groups(5, seed=2000), tmp_path / "set")
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for path in (tmp_path / "set").rglob("*"):
            packed.write(path, path.relative_to(tmp_path / "set").as_posix())
    table, plot, groups, files, status = client.predict(5, [handle_file(archive)], ["clip"], False,
                                                        api_name="/match_batch")
    generated = client.predict(5, None, ["clip"], False, api_name="/match_batch")
    assert table["data"][0][:4] == generated[0]["data"][0][:4] and table["data"][0][0] == "clip"
    assert len(groups["data"]) == 5 and {row[5] for row in groups["data"]} <= {"✔", "✘"}
    recipe = read_recipe(next(f for f in files if f.endswith(".csv")))
    assert recipe.request["upload"] == ["set.zip"] and recipe.request["groups"] == 5
    assert "Evaluated 5 groups from your upload (set.zip)" in status
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(Exception, match="broken.zip is not a zip file that can be opened") as refused:
        client.predict(5, [handle_file(broken)], ["clip"], False, api_name="/match_batch")
    assert "/tmp" not in str(refused.value) and "gradio" not in str(refused.value)  # no server path
