"""A generated paraphrase set for the Morpho4D command grammar (thesis eq. 11.5): templates x synonyms x word
orders x casing and punctuation, each sentence with the plan structure it must give.

The sentences are drawn (seeded) from the product of the tables below, so they are not a list the grammar
was tuned to: every noun synonym, direction phrase, speed phrase, verb and word order appears with every
other. The grammar must read every one of them to the expected structure."""

from __future__ import annotations

import itertools
import random

import pytest

from pipelines.morpho4d.commands import GrammarParser
from pipelines.shapesworld.vocab import COLOURS

NOUNS = {"circle": ("circle", "ball", "disc", "dot", "sphere"), "square": ("square", "box", "block", "cube"),
         "triangle": ("triangle", "pyramid", "wedge")}
DIRECTION_WORDS = {
    "from left to right": ("from left to right", "left to right", "to the right", "rightward", "from the left",
                           "from the left to the right", "towards the right"),
    "from right to left": ("from right to left", "right to left", "to the left", "leftwards", "from the right",
                           "from the right to the left", "toward the left"),
    "upward": ("upward", "up", "from the bottom to the top", "to the top", "from the bottom", "upwards"),
    "downward": ("downward", "down", "from top to bottom", "to the bottom", "from the top", "downwards"),
}
OPPOSITE = {"from left to right": "from right to left", "from right to left": "from left to right",
            "upward": "downward", "downward": "upward"}
SPEED_WORDS = {"quickly": ("quickly", "fast", "rapidly", "very quickly", "swiftly"),
               "slowly": ("slowly", "slow", "gently", "very slowly"),
               "steadily": ("steadily", "at a steady pace", "")}
VERBS = {"moves": "straight", "slides": "straight", "rolls": "straight", "glides": "straight", "travels": "straight",
         "drifts": "straight", "is moving": "straight", "bounces": "arc", "hops": "arc"}
ING = {"moves": "moving", "slides": "sliding", "rolls": "rolling", "glides": "gliding", "travels": "travelling",
       "drifts": "drifting", "is moving": "moving", "bounces": "bouncing", "hops": "hopping"}
PLURAL = {"moves": "move", "slides": "slide", "rolls": "roll", "glides": "glide", "travels": "travel",
          "drifts": "drift", "is moving": "are moving", "bounces": "bounce", "hops": "hop"}
SIZES = {"": "medium", "small ": "small", "tiny ": "small", "big ": "large", "large ": "large"}
JOINERS = ("while", "and", ", and", "as", "whereas", ", while", "while at the same time", "and meanwhile", ",",
           "and at the same time")
STILL = ("stays still", "remains motionless", "sits still", "does not move", "stays where it is", "is still",
         "doesn't move", "stays put", "is stationary")
FALLS = {"downward": ("falls", "drops", "sinks", "descends", "falls down", "drops down", "tumbles"),
         "upward": ("rises", "climbs", "ascends", "rises up", "floats up")}
FALL_FROM = {"downward": ("", " from the top", " from the top to the bottom", " to the bottom"),
             "upward": ("", " from the bottom", " to the top", " from the bottom to the top")}


def _cased(text: str, rng: random.Random) -> str:
    """The sentence as people type it: any capitalisation, with or without an end mark."""
    case = rng.choice((str, str.capitalize, str.upper, str.title))
    return case(text) + rng.choice(("", "", ".", "!", " .", "?"))


def _object(rng: random.Random, exclude: set[str] = frozenset()) -> tuple[str, str, str, str, str]:
    """(noun phrase, colour, shape, phrase without article, size) of a random object."""
    while True:
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(sorted(NOUNS))
        if f"{colour} {shape}" not in exclude:
            break
    noun, size = rng.choice(NOUNS[shape]), rng.choice(sorted(SIZES))
    article = rng.choice(("a", "the", "one")) if colour[0] not in "aeiou" else rng.choice(("an", "the"))
    return f"{article} {size}{colour} {noun}", colour, shape, f"{colour} {noun}", SIZES[size]


def _motion(rng: random.Random) -> tuple[str, str, str, str]:
    direction = rng.choice(sorted(DIRECTION_WORDS))
    speed = rng.choice(sorted(SPEED_WORDS))
    return rng.choice(DIRECTION_WORDS[direction]), direction, rng.choice(SPEED_WORDS[speed]), speed


def gen_single(rng: random.Random):
    """One mover, in one of six word orders, with or without a scene prefix."""
    np_, colour, shape, phrase, size = _object(rng)
    dir_text, direction, speed_text, speed = _motion(rng)
    verb = rng.choice(sorted(VERBS))
    order = rng.randrange(6)
    if order == 2 and (" " in speed_text or not speed_text):
        order = 0
    if order == 4 and (not dir_text.startswith(("from", "to")) or not speed_text):
        order = 1
    sentence = [
        f"{np_} {verb} {dir_text} {speed_text}",
        f"{np_} {verb} {speed_text} {dir_text}",
        f"{np_} {speed_text} {verb.replace('is moving', 'moves')} {dir_text}",
        f"{speed_text}, {np_} {verb} {dir_text}" if speed_text else f"{np_} {verb} {dir_text}",
        f"{dir_text}, {np_} {verb} {speed_text}",
        f"{rng.choice(('show', 'generate a scene of', 'create a video of', 'there is', 'give me'))} "
        f"{np_} {ING[verb]} {dir_text} {speed_text}",
    ][order]
    expected = [(colour, shape, direction, speed, VERBS[verb], size)]
    return " ".join(sentence.split()), ("GEN", expected)


def gen_two(rng: random.Random):
    """Two objects in one sentence: two movers, a mover and a still one, a mover and one that goes the other
    way, or two subjects sharing one motion."""
    np1, c1, s1, _, z1 = _object(rng)
    np2, c2, s2, _, z2 = _object(rng, exclude={f"{c1} {s1}"})
    d1_text, d1, sp1_text, sp1 = _motion(rng)
    d2_text, d2, sp2_text, sp2 = _motion(rng)
    v1, v2 = rng.choice(sorted(VERBS)), rng.choice(sorted(VERBS))
    joiner = rng.choice(JOINERS)
    kind = rng.randrange(4)
    first = f"{np1} {v1} {d1_text} {sp1_text}"
    if kind == 0:
        sentence = f"{first} {joiner} {np2} {v2} {d2_text} {sp2_text}"
        second = (c2, s2, d2, sp2, VERBS[v2], z2)
    elif kind == 1:
        sentence = f"{first} {joiner} {np2} {rng.choice(STILL)}"
        second = (c2, s2, None, None, "still", z2)
    elif kind == 2:
        other = rng.choice(("the other way", "in the opposite direction", "the opposite way"))
        sentence = f"{first} {joiner} {np2} {v2} {other} {sp2_text}"
        second = (c2, s2, OPPOSITE[d1], sp2, VERBS[v2], z2)
    else:
        sentence = f"{np1} and {np2} {PLURAL[v1]} {d1_text} {sp1_text}"
        second = (c2, s2, d1, sp1, VERBS[v1], z2)
    expected = [(c1, s1, d1, sp1, VERBS[v1], z1), second]
    return " ".join(sentence.replace(" ,", ",").split()), ("GEN", expected)


def gen_falls(rng: random.Random):
    """Verbs that say the direction themselves: falls / drops / sinks / rises / climbs (from the top ...)."""
    np_, colour, shape, _, size = _object(rng)
    direction = rng.choice(sorted(FALLS))
    speed_text = rng.choice(SPEED_WORDS[speed := rng.choice(sorted(SPEED_WORDS))])
    sentence = f"{np_} {rng.choice(FALLS[direction])}{rng.choice(FALL_FROM[direction])} {speed_text}"
    return " ".join(sentence.split()), ("GEN", [(colour, shape, direction, speed, "straight", size)])


def _target(rng: random.Random) -> tuple[str, str]:
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(sorted(NOUNS))
    noun = rng.choice(NOUNS[shape])
    return rng.choice(((f"the {colour} {noun}", f"{colour} {noun}"), (f"the {noun}", noun), ("it", "it"),
                       (f"that {colour} {noun}", f"{colour} {noun}")))


def gen_recolour(rng: random.Random):
    """recolour / recolor / paint / make / turn / change ... T (to) C: the target is T, the colour C."""
    text, target = _target(rng)
    colour = rng.choice((*sorted(COLOURS), "white", "black", "pink", "grey", "#ff8800"))
    template = rng.choice((
        "recolor {t} to {c}", "recolour {t} to {c}", "recolor {t} {c}", "make {t} {c}", "paint {t} {c}",
        "paint {t} {c} instead", "turn {t} {c}", "change {t} to {c}", "change the colour of {t} to {c}",
        "change the color of {t} to {c}", "color {t} {c}", "colour {t} in {c}", "{t} should be {c}",
        "set the color of {t} to {c}", "make {t} {c} now", "recolor {t} as {c}", "paint {t} with {c}",
        "dye {t} {c}", "turn {t} into {c}", "can you recolor {t} to {c}", "please make {t} {c}",
    ))
    return template.format(t=text, c=colour), ("EDIT", "recolour", (target,), {"colour": colour})


def gen_extract_delete(rng: random.Random):
    text, target = _target(rng)
    if rng.random() < 0.6:
        template = rng.choice((
            "show just {t}", "show only {t}", "just show {t}", "only show {t}", "keep only {t}", "keep just {t}",
            "extract {t}", "isolate {t}", "show {t} only", "keep {t} alone", "remove everything but {t}",
            "delete everything except {t}", "show me only {t}", "show me just {t}", "display only {t}",
            "leave only {t}", "keep nothing but {t}", "show nothing but {t}",
        ))
        return template.format(t=text), ("EDIT", "extract", (target,), {})
    template = rng.choice(("delete {t}", "remove {t}", "get rid of {t}", "erase {t}", "make {t} disappear",
                           "hide {t}", "take away {t}", "remove {t} from the scene", "please delete {t}"))
    return template.format(t=text), ("EDIT", "delete", (target,), {})


def gen_undo_redo(rng: random.Random):
    verb = rng.choice(("undo", "revert", "cancel", "undo", "undo"))
    referent = rng.choice(("", " that", " the", " my", " it"))
    last = rng.choice(("", " last", " previous", " latest", " most recent"))
    change = rng.choice(("", " change", " edit", " step", " command", " action"))
    if referent == " it" and (last or change):
        referent = " that"
    if referent == " the" and not (last or change):
        referent = ""
    if rng.random() < 0.25:
        text = rng.choice(("redo", "redo that", "redo the last change", "redo that change", "redo it",
                           "redo the last undone edit", "redo my last change"))
        return text, ("EDIT", "redo", (), {})
    if rng.random() < 0.15:
        return rng.choice(("take that back", "go back", "step back", "take it back", "never mind")), ("EDIT", "undo", (), {})
    return f"{verb}{referent}{last}{change}", ("EDIT", "undo", (), {})


def gen_motion_edit(rng: random.Random):
    text, target = _target(rng)
    dir_text, direction, speed_text, speed = _motion(rng)
    verb = rng.choice(("go", "move", "slide", "roll", "travel"))
    template = rng.choice(("make {t} {v} {d} {s}", "have {t} {v} {d} {s}", "move {t} {d} {s}",
                           "{t} should {v} {d} {s}", "let {t} {v} {d} {s}"))
    parameters = {"direction": direction} | ({"speed": speed} if speed_text else {})
    sentence = " ".join(template.format(t=text, v=verb, d=dir_text, s=speed_text).split())
    return sentence, ("EDIT", "change_direction", (target,), parameters)


GENERATORS = {gen_single: 160, gen_two: 160, gen_falls: 40, gen_recolour: 80, gen_extract_delete: 60,
              gen_undo_redo: 40, gen_motion_edit: 40}


def paraphrases(seed: int = 0) -> list[tuple[str, tuple]]:
    """The paraphrase set: (sentence, expected structure), distinct sentences only."""
    rng = random.Random(seed)
    out: dict[str, tuple] = {}
    for generator, count in GENERATORS.items():
        for _ in itertools.repeat(None, count):
            text, expected = generator(rng)
            out.setdefault(_cased(text, rng), expected)
    return list(out.items())


def structure(plan) -> tuple:
    if plan.mode == "GEN":
        return ("GEN", [(o.colour, o.shape, o.direction, o.speed, o.path, o.size) for o in plan.objects])
    return ("EDIT", plan.operation, tuple(plan.targets), dict(plan.parameters))


def test_the_set_is_large_and_varied():
    cases = paraphrases()
    assert len(cases) >= 500
    texts = " ".join(text.lower() for text, _ in cases)
    for phrase in ("while", "falls", "rises", "from the top", "show just", "recolor", "undo that", "last change",
                   "ball", "box", "pyramid", "the other way", "stays still", "very quickly"):
        assert phrase in texts, phrase
    assert sum(expected[0] == "GEN" and len(expected[1]) == 2 for _, expected in cases) >= 120


@pytest.mark.parametrize("seed", [0, 1])
def test_grammar_reads_every_generated_paraphrase(seed):
    """Every sentence gives the expected plan structure (the issue asks >= 0.97; any miss is listed)."""
    parser = GrammarParser()
    misses = []
    cases = paraphrases(seed)
    for text, expected in cases:
        try:
            got = structure(parser.parse_plan(text))
        except Exception as error:  # noqa: BLE001 - a miss is recorded with its error, then asserted below
            got = f"{type(error).__name__}: {error}"
        if got != expected:
            misses.append((text, got, expected))
    assert not misses, f"{len(misses)} of {len(cases)} paraphrases misread, e.g. {misses[:5]}"


def test_recolour_targets_the_object_not_the_colour_phrase():
    plan = GrammarParser().parse_plan("recolor the red ball to orange")
    assert plan.targets == ("red ball",) and plan.parameters == {"colour": "orange"}
    plan = GrammarParser().parse_plan("Recolour the blue box to red.")
    assert plan.targets == ("blue box",) and plan.parameters == {"colour": "red"}
