"""Morpho4D: one session owns the scene, the editor and one history; edits made with the buttons and typed
commands are steps of the same history, so "undo" typed takes back a button's edit and the Undo button takes
back a typed one."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import InvalidInputError
from pipelines.models import ModelManager
from pipelines.morpho4d.runner import Morpho4DRunner
from studio import morpho4d as tab

# Example #3: "a red square moves toward the top right quickly while a blue triangle stays still".
SEED, SIZE, FRAMES, GAUSSIANS = 3, 64, 8, 6000
BLUE = np.array([40, 90, 225]) / 255


@pytest.fixture(scope="module")
def runner() -> Morpho4DRunner:
    return Morpho4DRunner(ModelManager("tiny"))


def _triangle_colour(session) -> np.ndarray:
    scene = session.scene
    triangle = scene.object_ids == scene.object_names.index("blue triangle")
    return np.median(scene.colours[triangle], axis=0)


def test_undo_and_redo_walk_over_button_edits_and_typed_commands_alike(runner):
    session = runner.load_example(SEED, SIZE, FRAMES, GAUSSIANS)
    original = session.scene
    square = int((original.object_ids == original.object_names.index("red square")).sum())
    assert square > 100 and np.allclose(_triangle_colour(session), BLUE, atol=0.05)

    session.apply_edit("delete", "red square")  # the Apply edit button
    deleted = session.scene
    assert deleted.n_gaussians == original.n_gaussians - square
    session.run("make the triangle green")  # typed
    green = session.scene.colours.copy()
    assert not np.allclose(_triangle_colour(session), BLUE, atol=0.05)

    session.run("undo")  # typed undo takes back the typed edit ...
    np.testing.assert_array_equal(session.scene.sh_dc, deleted.sh_dc)
    session.run("undo")  # ... and the button's edit: the square is back, bit-exact
    assert session.scene.n_gaussians == original.n_gaussians
    np.testing.assert_array_equal(session.scene.sh_dc, original.sh_dc)
    np.testing.assert_array_equal(session.scene.means, original.means)
    with pytest.raises(InvalidInputError, match="Nothing to undo"):
        session.undo()

    session.redo()  # the Redo button makes the button's edit again
    assert session.scene.n_gaussians == original.n_gaussians - square
    session.run("redo")  # typed redo makes the typed one again
    np.testing.assert_array_equal(session.scene.colours, green)
    assert [a for a in session.actions] == [
        {"edit": {"operation": "delete", "query": "red square", "colour": None}},
        {"command": "make the triangle green"}, {"command": "undo"}, {"command": "undo"}, {"command": "redo"},
        {"command": "redo"}]

    session.undo()
    session.apply_edit("recolour", "blue triangle", "yellow")  # a new step drops what could be redone
    with pytest.raises(InvalidInputError, match="Nothing to redo"):
        session.run("redo")


def test_the_tab_has_one_state_and_its_undo_button_undoes_a_typed_command(runner):
    examples = tab.example_labels()
    label = next(label for label, seed in examples.items() if seed == SEED)
    view = tab.load_example(runner, label, examples=examples)[0]
    count = view.scene.n_gaussians
    view = tab.run_command(runner, view, "delete the square", 0, 0, 0, 1.0)[0]
    assert view.scene.n_gaussians < count and "deleted 'red square'" in view.session.history[-1].outcome
    outputs = tab.undo_redo(view, 0, 0, 0, 1.0, action="undo")  # the Undo button
    assert outputs[0].scene.n_gaussians == count
    view = tab.apply_edit(view, "blue triangle", "delete", None, (0, 0, 0, 1.0))[0]  # the Apply edit button
    chat = tab.run_command(runner, view, "undo", 0, 0, 0, 1.0)[1]  # typed undo
    assert view.scene.n_gaussians == count and chat[-1]["content"].startswith("Done: Undid")
    assert "[delete 'blue triangle']" in [m["content"] for m in chat if m["role"] == "user"]


@pytest.mark.parametrize("image, objects, message", [
    (None, ["woman"], "No image"),
    (np.zeros((4, 64, 3), np.uint8), ["woman"], "at least 8"),
    (np.zeros((64, 64, 3), np.uint8), [], "Name what the photo shows"),
    (np.zeros((64, 64, 3), np.uint8), "woman", "Name what the photo shows"),
    (np.zeros((64, 64, 3), np.uint8), ["the background"], "no object name"),
    (np.zeros((64, 64, 3), np.uint8), [f"bird{c}" for c in "abcdefghi"], "At most 8"),
])
def test_lifting_a_photo_refuses_bad_input_before_loading_any_model(image, objects, message):
    manager = ModelManager("tiny")
    with pytest.raises(InvalidInputError, match=message):
        Morpho4DRunner(manager).lift_photo(image, objects)
    assert manager.loaded() == []


def test_a_photo_is_lifted_from_its_centre_square():
    from pipelines.morpho4d.generation import check_object_names, square_frame

    photo = np.zeros((60, 40, 3), np.uint8)
    photo[10:50] = 200  # the centre 40x40 square is bright, the 10-pixel bands above and below dark
    assert square_frame(photo, 20).shape == (20, 20, 3) and (square_frame(photo, 20) == 200).all()
    assert check_object_names(["The Woman", "a red car", "woman"]) == ("woman", "red car")
