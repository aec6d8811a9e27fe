"""The closed caption grammar: generator and parser are inverses; the rest is rejected."""

import pytest

from pipelines.errors import InvalidInputError
from pipelines.shapesworld import (
    CaptionSpec,
    MotionSpec,
    ObjectSpec,
    format_caption,
    parse_caption,
    sample_scene,
    sample_video,
    vocabulary,
)
from pipelines.shapesworld.captions import caption_words, object_word_positions


def test_parse_inverts_500_generated_captions_exactly():
    for seed in range(500):
        scene = sample_scene(seed)
        spec = parse_caption(scene.caption)
        assert [(o.colour, o.shape) for o in spec.objects] == [(o.colour, o.shape) for o in scene.objects]
        assert spec.relation == (None if scene.relation is None else scene.relation[1])
        assert format_caption(spec) == scene.caption


def test_parse_inverts_video_captions():
    for seed in range(60):
        video = sample_video(seed, n_frames=4)
        spec = parse_caption(video.caption)
        assert spec.motion == MotionSpec(video.verb, video.direction, video.speed)
        assert [o.spec for o in video.objects] == list(spec.objects)
        assert format_caption(spec) == video.caption


@pytest.mark.parametrize(
    "spec, text",
    [
        (CaptionSpec((ObjectSpec("red", "circle"),)), "a red circle"),
        (CaptionSpec((ObjectSpec("orange", "square"),)), "an orange square"),
        (
            CaptionSpec((ObjectSpec("red", "circle"), ObjectSpec("blue", "square")), "left of"),
            "a red circle left of a blue square",
        ),
        (
            CaptionSpec((ObjectSpec("red", "circle"), ObjectSpec("blue", "square"), ObjectSpec("green", "triangle"))),
            "a red circle, a blue square and a green triangle",
        ),
        (
            CaptionSpec(
                (ObjectSpec("red", "circle"), ObjectSpec("blue", "square"), ObjectSpec("green", "triangle")), "above"
            ),
            "a red circle above a blue square with a green triangle",
        ),
        (
            CaptionSpec((ObjectSpec("red", "circle"),), motion=MotionSpec("moves", "from left to right", "quickly")),
            "a red circle moves from left to right quickly",
        ),
        (
            CaptionSpec(
                (ObjectSpec("red", "circle"), ObjectSpec("blue", "square")),
                motion=MotionSpec("bounces", "upward", "slowly"),
            ),
            "a red circle bounces upward slowly while a blue square stays still",
        ),
    ],
)
def test_grammar_examples(spec, text):
    assert format_caption(spec) == text
    assert parse_caption(text) == spec


def test_parse_tolerates_case_punctuation_and_speed_order():
    assert parse_caption("  A Red Circle, LEFT of a blue square!! ") == parse_caption(
        "a red circle left of a blue square"
    )
    assert parse_caption("an red circle moves quickly from right to left.") == parse_caption(
        "a red circle moves from right to left quickly"
    )
    assert parse_caption("a red circle and a blue square").relation is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a pink circle",
        "a red hexagon",
        "a red circle next to a blue square",
        "red circle",
        "a red circle left of",
        "a red circle a blue square a green triangle a yellow circle",
        "a red circle moves quickly",
        "a red circle left of a blue square moves upward slowly",
        "a red circle moves upward slowly while a blue square",
        "a red circle stays still",
    ],
)
def test_text_outside_the_grammar_raises(text):
    with pytest.raises(InvalidInputError):
        parse_caption(text)


def test_vocabulary_covers_every_generated_word():
    words = set(vocabulary())
    assert {"red", "circle", "left", "of", "above", "moves", "quickly", "upward", "an", "and"} <= words
    for seed in range(200):
        assert set(caption_words(sample_scene(seed).caption)) <= words
    for seed in range(40):
        assert set(caption_words(sample_video(seed, n_frames=4).caption)) <= words


def test_object_word_positions_follow_the_objects():
    scene = sample_scene(3, n_objects=3)
    words = caption_words(scene.caption)
    positions = object_word_positions(scene.caption)
    assert [(words[c], words[s]) for c, s in positions] == [(o.colour, o.shape) for o in scene.objects]
