"""The studio served with ``--preset hub`` over the hub-shaped cache (offline, CPU), driven through its API
like tests/test_api.py: Match scores with every model of the preset, FlexEControl answers with what is missing
and the command that trains it, Mojito makes a video."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from studio_server import running_studio

from pipelines.recipes import read_recipe

pytestmark = pytest.mark.hub


@pytest.fixture(scope="module")
def client(hub_shaped_cache, tmp_path_factory):
    from gradio_client import Client

    with pytest.MonkeyPatch.context() as patch:  # the server process inherits the environment
        patch.setenv("HF_HUB_CACHE", str(hub_shaped_cache))
        patch.setenv("WORLDSTUDIO_PRESET", "hub")
        patch.delenv("WORLDSTUDIO_FLEXECONTROL_WEIGHTS", raising=False)
        with running_studio(tmp_path_factory.mktemp("hub-api")) as url:
            yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def test_match_scores_a_photo_with_the_hub_models(client, tmp_path):
    from gradio_client import handle_file

    picture = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(1).random((72, 96, 3)) * 255).astype(np.uint8)).save(picture)
    table = client.predict(handle_file(picture), "a photo of a cat\na dog on the beach",
                           ["discffusion", "clip", "comclip"], False, api_name="/match_score")[0]
    rows = table["data"]
    assert len(rows) == 6 and {row[0] for row in rows} == {"discffusion", "clip", "comclip"}
    assert sorted(row[1] for row in rows if row[0] == "clip") == [1, 2]


def test_flexecontrol_says_what_is_missing_and_how_to_train_it(client, tmp_path):
    from gradio_client import handle_file

    picture = tmp_path / "drawing.png"
    drawing = np.zeros((64, 64, 3), np.uint8)
    drawing[20:44, 20:44] = 255
    Image.fromarray(drawing).save(picture)
    with pytest.raises(Exception, match="python -m pipelines.flexecontrol --base stable-diffusion-v1-5"):
        client.predict("a photo of a cat", [handle_file(picture)], [{"type": "sketch"}], 0, 2, 3.0, True,
                       api_name="/flexecontrol_generate")


def test_mojito_makes_a_video_with_the_hub_model(client):
    trajectory = [{"phrase": "dog", "keyframes": [[0, 0.05, 0.35, 0.35, 0.65], [15, 0.65, 0.35, 0.95, 0.65]]}]
    path, report = client.predict("a dog runs on the beach", trajectory, 5, 0.1, 1, 1.0, 5, 0, "linear",
                                  api_name="/mojito_generate")
    recipe = read_recipe(path)
    assert recipe.preset == "hub" and recipe.request["prompt"] == "a dog runs on the beach"
    assert report["objects"][0]["phrase"] == "dog" and 0 <= report["objects"][0]["miou"] <= 1
