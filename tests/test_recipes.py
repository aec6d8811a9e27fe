"""Every output carries its recipe and ``python -m pipelines.<method> rerun FILE`` remakes it bit-identically
(same CPU, one thread): a Match PNG, a FlexEControl PNG, a Mojito MP4 and GIF, a Morpho4D NPZ, PLY and MP4."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import InvalidInputError
from pipelines.models import TINY_PACK_DIR, ModelManager
from pipelines.recipes import NoRecipeError, Recipe, attach, digest, read_recipe, write_png

needs = {name: pytest.mark.skipif(not (TINY_PACK_DIR / name).is_dir(), reason=f"the tiny pack has no {name}")
         for name in ("shapes-sd", "flexecontrol", "shapes-t2v", "shapes-depth")}


def _rerun(main, path, tmp_path, capsys) -> dict:
    out = tmp_path / f"again{path.suffix}"
    status = main(["rerun", str(path), "--out", str(out)])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["file"] == str(out) and out.is_file()
    assert status == 0 and line["identical"] is True and line["threads"] == 1
    return line


def test_each_kind_of_file_carries_a_recipe_and_a_foreign_file_is_refused(tmp_path):
    recipe = Recipe("mojito", {"prompt": "a red circle", "seed": 3}, "tiny", {"text-to-video": "ab" * 32},
                    output_sha256=digest(np.zeros((2, 2), np.uint8)))
    png = write_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "a.png", recipe)
    assert read_recipe(png) == recipe and recipe.version and recipe.threads == 1
    np.savez(tmp_path / "a.npz", x=np.arange(3))
    ply = tmp_path / "a.ply"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nend_header\n")
    gif = tmp_path / "a.gif"
    frames = [Image.new("RGB", (4, 4), (255 * i, 0, 0)) for i in range(2)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], loop=0)
    from pipelines.video_io import encode_video

    mp4 = encode_video(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "a.mp4")
    for path in (tmp_path / "a.npz", ply, gif, mp4):
        with pytest.raises(NoRecipeError, match="carries no WorldStudio recipe"):
            read_recipe(path)
        assert read_recipe(attach(path, recipe)) == recipe
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]  # the archive's own entries are untouched
    assert ply.read_bytes().endswith(b"end_header\n")
    with Image.open(gif) as opened:  # the GIF still has its two frames
        assert opened.n_frames == 2
    with pytest.raises(InvalidInputError, match="No recipe slot for .txt"):
        attach(tmp_path / "a.txt", recipe)
    assert recipe.command_line("out put.png") == "python -m pipelines.mojito rerun 'out put.png'"


@needs["shapes-sd"]
def test_match_rerun_remakes_a_generated_png(tmp_path, capsys):
    from pipelines.matching.__main__ import main
    from pipelines.matching.runner import ImageRequest, MatchRunner

    report = MatchRunner(ModelManager("tiny")).generate(ImageRequest("a red circle left of a blue square", 2))
    path = write_png(report.image, tmp_path / "match.png", report.recipe)
    _rerun(main, path, tmp_path, capsys)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), report.image)


@needs["flexecontrol"]
def test_flexecontrol_rerun_remakes_a_png_from_the_maps_it_stored(tmp_path, capsys):
    from pipelines.flexecontrol.__main__ import main
    from pipelines.flexecontrol.runner import ConditionInput, FlexEControlRequest, FlexEControlRunner
    from pipelines.shapesworld import sample_scene
    from pipelines.shapesworld.conditions import canny

    scene = sample_scene(4, split="test")
    big = np.kron(canny(scene), np.ones((4, 4), np.uint8))  # a 256 drawing, as the canvas gives
    request = FlexEControlRequest(scene.caption, [ConditionInput("canny", big, "draw", 0.9, 0.0, 0.8)], 5, 4)
    report = FlexEControlRunner(ModelManager("tiny")).run(request, progress=False)
    path = write_png(report.image, tmp_path / "flex.png", report.recipe)
    stored = report.recipe.request["conditions"][0]
    assert stored["source"] == "map" and stored["weight"] == 0.9 and stored["end"] == 0.8
    _rerun(main, path, tmp_path, capsys)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), report.image)


@needs["shapes-t2v"]
def test_mojito_rerun_remakes_the_frames_of_a_video(tmp_path, capsys):
    from pipelines.mojito.__main__ import main
    from pipelines.mojito.runner import MojitoRequest, MojitoRunner, TrajectoryInput, write_frames

    request = MojitoRequest("a red circle moves from left to right quickly",
                            [TrajectoryInput("red circle", [[0, 0.05, 0.35, 0.35, 0.65], [15, 0.65, 0.35, 0.95, 0.65]])],
                            intensity=7, guided_steps=2, steps=4, seed=1, with_unguided=True)
    report = MojitoRunner(ModelManager("tiny")).run(request)
    for suffix in (".mp4", ".gif"):
        path = write_frames(report.frames, tmp_path / f"video{suffix}", report.recipe)
        assert read_recipe(path).request["trajectories"][0]["keyframes"][1][0] == 15
        _rerun(main, path, tmp_path, capsys)
    unguided = write_frames(report.unguided, tmp_path / "unguided.mp4", report.unguided_recipe)
    assert read_recipe(unguided).request["guided"] is False
    _rerun(main, unguided, tmp_path, capsys)
    assert not np.array_equal(report.unguided, report.frames)  # the guidance changed the video


@needs["shapes-depth"]
def test_morpho4d_rerun_replays_typed_and_pressed_steps_into_npz_ply_and_video(tmp_path, capsys):
    from pipelines.morpho4d import load_scene, read_ply
    from pipelines.morpho4d.__main__ import main
    from pipelines.morpho4d.fitting import FitConfig
    from pipelines.morpho4d.generation import GenConfig
    from pipelines.morpho4d.runner import Morpho4DRunner, write_scene_file

    runner = Morpho4DRunner(ModelManager("tiny"), frames="stand-in",
                            config=GenConfig(n_frames=4, fit=FitConfig(steps=8, init_gaussians=600)))
    generated = runner.new_session()
    generated.run("a big red ball moves from left to right quickly while a green box stays still")
    generated.apply_edit("recolour", "green square", "yellow")
    generated.run("make the ball blue")
    generated.run("undo")
    npz, recipe = write_scene_file(runner, generated, tmp_path / "scene.npz")
    assert recipe.request["frames"] == "stand-in" and len(recipe.request["actions"]) == 4
    _rerun(main, npz, tmp_path, capsys)
    again = load_scene(tmp_path / "again.npz")
    np.testing.assert_array_equal(again.sh_dc, generated.scene.sh_dc)

    example = runner.load_example(3, 64, 4, 1500)
    example.run("delete the triangle")
    ply, _ = write_scene_file(runner, example, tmp_path / "scene.ply", 2.0)
    _rerun(main, ply, tmp_path, capsys)
    assert read_ply(tmp_path / "again.ply").n_gaussians == example.scene.n_gaussians
    video, _ = write_scene_file(runner, example, tmp_path / "sweep.mp4",
                                video={"kind": "orbit", "fps": 8.0, "t": 1.0, "steps": 4, "size": 32})
    _rerun(main, video, tmp_path, capsys)
    from pipelines.mojito.__main__ import main as mojito_main

    assert mojito_main(["rerun", str(npz)]) == 2
    assert "made by morpho4d; run `python -m pipelines.morpho4d rerun" in capsys.readouterr().err


@needs["shapes-t2v"]
@needs["shapes-depth"]
def test_a_mojito_video_lifted_to_4d_is_replayed_from_the_video_recipe(tmp_path, capsys):
    from pipelines.mojito.runner import MojitoRequest, TrajectoryInput
    from pipelines.morpho4d.__main__ import main
    from pipelines.morpho4d.fitting import FitConfig
    from pipelines.morpho4d.generation import GenConfig
    from pipelines.morpho4d.runner import Morpho4DRunner, write_scene_file

    runner = Morpho4DRunner(ModelManager("tiny"), config=GenConfig(fit=FitConfig(steps=5, init_gaussians=500)))
    video = MojitoRequest("a red circle moves from left to right quickly",
                          [TrajectoryInput("red circle", [[0, 0.05, 0.35, 0.35, 0.65], [15, 0.65, 0.35, 0.95, 0.65]])],
                          intensity=9, guided_steps=2, steps=4, seed=2)
    session = runner.lift(video.to_json())
    assert session.scene.n_frames == 16 and session.scene.object_names == ("background", "red circle")
    assert session.gen.plan.objects[0].direction == "from left to right" and session.gen.plan.objects[0].speed == "quickly"
    session.run("make the ball green")
    npz, recipe = write_scene_file(runner, session, tmp_path / "lifted.npz")
    assert recipe.request["origin"]["mojito"]["seed"] == 2 and "text-to-video" in recipe.models
    _rerun(main, npz, tmp_path, capsys)
    with pytest.raises(InvalidInputError, match="ShapesWorld colour and shape"):
        runner.lift(MojitoRequest("a red thing moves", [TrajectoryInput("red thing", [[0, .1, .1, .4, .4],
                                                                                     [15, .5, .1, .8, .4]])]).to_json())
