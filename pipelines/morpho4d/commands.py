"""The command parameterizer of Morpho4D, thesis eq. 11.5: a sentence -> a :class:`~.plan.Plan`.

Two back ends behind one interface (:class:`CommandParser`: ``parse(text) -> ParseResult``):

* :class:`GrammarParser` (the default, offline, deterministic). After the guards below it reads
  the normalised words (lower case; punctuation, possessive "'s" and hyphens dropped; "please",
  "now", "can you" ... ignored):

  - **undo / redo**: "undo", "undo that", "take that back", "revert the last edit", "redo" ...
  - **recolour**: "make|paint|colour|turn|dye|recolour T C", "change (the colour of) T to C",
    "set|make the colour of T (to) C", "T should be C" (C a colour name or hex code);
  - **delete**: "delete|remove|erase|get rid of|take away|eliminate T (from the scene)",
    "make T disappear|vanish";
  - **extract**: "extract|isolate|keep only|only keep|show only|keep just T", "keep T only",
    "delete|remove everything but|except T";
  - **motion**: "make|have|let T <verb> M", "move|send T M", "T should <verb> M", "speed up T",
    "slow down T", "make T faster|slower", "reverse (the direction of) T", where M is direction
    and/or speed words (a direction gives change_direction, speed alone change_speed);
  - **GEN**: anything else of the form "(generate|create|show|make a ...) NP <motion verb> M (scene
    words) (while NP stays still)", e.g. "a small red ball bounces quickly from right to left".

  Targets T are one or several noun phrases ("the fish and the seaweed", "the ball, the box and the
  triangle"), articles dropped; "it" / "them" refer back (resolved when applied, :mod:`.language`).
  A sentence that fits none of these raises :class:`UnparsedCommandError` with examples.
* :class:`LLMCommandParser` (optional): a local transformers causal LM prompted with the schema and
  examples; its output is searched for a JSON object (``json`` only; nothing is evaluated or
  executed), validated against :data:`~.plan.PLAN_SCHEMA`, and replaced by the grammar's plan when
  it is missing or invalid (the result says so).

Guards, before either back end (typed errors, subclasses of
:class:`~pipelines.errors.InvalidInputError`): :class:`EmptyCommandError`,
:class:`CommandTooLongError` (over :data:`MAX_COMMAND_CHARS`), :class:`NonEnglishCommandError`
(letters outside ASCII, or more function words of other languages than of English) and
:class:`InstructionSmugglingError` (attempts to address the model, e.g. "ignore the previous
instructions", "system prompt", "you are now", or code: brackets, backticks, ``import``, ``eval``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Protocol

from ..errors import InvalidInputError
from ..shapesworld.vocab import DIRECTIONS, SHAPES
from .editing import NAMED_COLOURS
from .plan import PLAN_SCHEMA, GenObject, Plan, PlanError

MAX_COMMAND_CHARS = 300


class CommandError(InvalidInputError):
    """Base class of the parameterizer's input errors."""


class EmptyCommandError(CommandError):
    """The command has no words."""


class CommandTooLongError(CommandError):
    """The command is longer than :data:`MAX_COMMAND_CHARS`."""


class NonEnglishCommandError(CommandError):
    """The command is not in English."""


class InstructionSmugglingError(CommandError):
    """The command tries to instruct the language model or carries code."""


class UnparsedCommandError(CommandError):
    """The command fits none of the forms the grammar reads."""


EXAMPLES = ("'a red ball bounces quickly from right to left'", "'make the ball blue'", "'delete the ball'",
            "'extract the ball'", "'now make it go left to right'", "'undo'")

# ----- lexicon
COLOUR_WORDS = frozenset(NAMED_COLOURS)
_COLOUR = r"(?:#[0-9a-f]{6}|#[0-9a-f]{3}|" + "|".join(sorted(COLOUR_WORDS, key=len, reverse=True)) + ")"
# Nouns the offline world can draw, and the ShapesWorld shape each one is drawn as.
NOUN_SHAPES: dict[str, str] = {
    **{shape: shape for shape in SHAPES},
    **dict.fromkeys(("ball", "disc", "disk", "dot", "sphere", "orb", "coin", "bubble"), "circle"),
    **dict.fromkeys(("box", "block", "cube", "crate", "tile", "brick"), "square"),
    **dict.fromkeys(("pyramid", "wedge", "cone"), "triangle"),
}
SIZE_WORDS = {"small": "small", "tiny": "small", "little": "small", "big": "large", "large": "large",
              "huge": "large", "giant": "large"}
# Motion verbs (any form) of a GEN sentence or a motion edit; the arc ones bounce.
_VERB_STEMS = ("move", "go", "slide", "bounce", "roll", "glide", "swim", "drive", "travel", "fly", "run", "crawl",
               "float", "drift", "walk", "hop", "jump", "sail", "race", "zoom", "head", "ride", "skate")
ARC_STEMS = frozenset({"bounce", "hop", "jump"})


def _verb_forms(stem: str) -> set[str]:
    irregular = {"go": {"go", "goes", "going", "went"}, "fly": {"fly", "flies", "flying"},
                 "run": {"run", "runs", "running"}, "swim": {"swim", "swims", "swimming"},
                 "hop": {"hop", "hops", "hopping"}, "ride": {"ride", "rides", "riding"},
                 "travel": {"travel", "travels", "traveling", "travelling"}}
    if stem in irregular:
        return irregular[stem]
    base = stem[:-1] if stem.endswith("e") else stem
    plural = stem + ("es" if stem.endswith(("s", "sh", "ch", "x", "z")) else "s")
    return {stem, plural, base + "ing"}


VERB_STEM_OF = {form: stem for stem in _VERB_STEMS for form in _verb_forms(stem)}

# Direction phrases (word tuples) -> ShapesWorld direction; matched longest first.
_DIRECTION_PHRASES: dict[str, tuple[str, ...]] = {
    "from left to right": ("from left to right", "from the left to the right", "left to right", "to the right",
                           "towards the right", "toward the right", "rightward", "rightwards", "right"),
    "from right to left": ("from right to left", "from the right to the left", "right to left", "to the left",
                           "towards the left", "toward the left", "leftward", "leftwards", "left"),
    "upward": ("upward", "upwards", "up", "from bottom to top", "from the bottom to the top", "to the top",
               "towards the top", "toward the top", "bottom to top"),
    "downward": ("downward", "downwards", "down", "from top to bottom", "from the top to the bottom",
                 "to the bottom", "towards the bottom", "toward the bottom", "top to bottom"),
}
for _vertical, _v in (("top", "up"), ("bottom", "down")):
    for _side in ("right", "left"):
        _DIRECTION_PHRASES[f"toward the {_vertical} {_side}"] = tuple(
            f"{prefix} {_vertical} {_side}" for prefix in ("toward the", "towards the", "to the")
        ) + tuple(f"{prefix} {'upper' if _vertical == 'top' else 'lower'} {_side}"
                  for prefix in ("toward the", "towards the", "to the")) + (f"{_v} and to the {_side}", f"{_v} and {_side}")
SPEED_PHRASES: dict[str, tuple[str, ...]] = {
    "quickly": ("quickly", "fast", "rapidly", "swiftly", "speedily", "quick", "at high speed", "at full speed"),
    "slowly": ("slowly", "slow", "gently", "leisurely", "lazily", "at a slow pace", "unhurriedly"),
    "steadily": ("steadily", "steady", "at a steady pace", "at a constant speed", "at a normal speed",
                 "at a moderate pace", "moderately"),
    "faster": ("faster", "quicker", "more quickly", "more rapidly"),
    "slower": ("slower", "more slowly"),
}
REVERSE_PHRASES = ("the other way", "the opposite way", "in the opposite direction", "in the other direction",
                   "backwards", "backward", "in reverse")
# Words of a motion phrase that carry no meaning.
MOTION_FILLER = frozenset({",", "now", "instead", "again", "please", "too", "and", "then", "across", "the", "screen",
                           "frame", "scene", "smoothly", "gracefully", "effortlessly", "along"})
MANNER_WORDS = frozenset({"smoothly", "gracefully", "effortlessly", "elegantly", "calmly", "happily", "playfully",
                          "freely", "merrily"})
STOP_WORDS = frozenset({"a", "an", "the", "is", "are", "was", "its", "it", "their", "of", "in", "on", "at", "to",
                        "from", "through", "across", "over", "under", "into", "onto", "with", "and", "along", "by",
                        "for", "towards", "toward", "around", "past", "while", "that", "which", "this", "some",
                        "as", "into", "within", "upon", "near", "beside", "between", "among", "among", "there"})
DETERMINERS = frozenset({"the", "a", "an", "this", "that", "these", "those", "my", "our", "your", "all", "both",
                         "every", "each"})
PRONOUNS = {"it": "it", "them": "them", "this": "it", "that": "it", "they": "them"}
_POLITE = re.compile(r"^(?:(?:please|now|then|ok|okay|so|and|can you|could you|would you|will you|i want you to|"
                     r"i would like you to|id like you to|i want to|i would like to|id like to|lets|let us|,)"
                     r"(?: ,)? )+")

_LONG_MATCH: dict[tuple[str, ...], tuple[str, str]] = {}
for _value, _phrases in _DIRECTION_PHRASES.items():
    for _phrase in _phrases:
        _LONG_MATCH[tuple(_phrase.split())] = ("direction", _value)
for _value, _phrases in SPEED_PHRASES.items():
    for _phrase in _phrases:
        _LONG_MATCH[tuple(_phrase.split())] = ("speed", _value)
for _phrase in REVERSE_PHRASES:
    _LONG_MATCH[tuple(_phrase.split())] = ("direction", "reverse")
_LONGEST = max(len(key) for key in _LONG_MATCH)

# ----- guards
_SMUGGLING = [
    (re.compile(r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(instructions?|rules?|prompts?|above|"
                r"previous|schema|everything)\b"), "it addresses the language model's instructions"),
    (re.compile(r"\b(system|developer|assistant)\s*(prompt|message|role|:)"), "it addresses the language model"),
    (re.compile(r"\b(you are now|act as|pretend to be|new instructions|jailbreak)\b"), "it addresses the language model"),
    (re.compile(r"\b(respond|reply|answer|output|print|return|emit)\b.{0,30}\b(json|plan|schema|mode)\b"),
     "it dictates the plan instead of describing a scene"),
    (re.compile(r"\b(import|exec|eval|subprocess|os\s*\.\s*system|lambda|rm\s+-rf|drop\s+table|sudo|"
                r"__\w+__|javascript)\b|__\w+__"), "it contains code"),
    (re.compile(r"[{}\[\]<>`$;\\|=]|\(\s*\)"), "it contains code-like characters"),
]
_FOREIGN_WORDS = frozenset({
    "el", "la", "los", "las", "una", "del", "por", "hacia", "que", "haz", "hacer", "pelota", "izquierda", "derecha",
    "azul", "rojo", "roja", "verde", "der", "das", "und", "ein", "eine", "nach", "links", "rechts", "mach",
    "blau", "rot", "le", "les", "des", "une", "est", "vers", "gauche", "droite", "fais", "balle", "bleu",
    "rouge", "il", "lo", "gli", "della", "verso", "sinistra", "destra", "palla", "rosso", "het", "een", "naar",
    "och", "ist", "mit", "dem", "den", "vom", "zum", "nicht", "sur", "avec", "dans", "et",
    "con", "para", "muy", "rapidamente", "lentamente", "schnell", "langsam", "rapidement", "lentement", "kugel",
})
_ENGLISH_FUNCTION = frozenset({"the", "a", "an", "to", "from", "and", "of", "make", "it", "is", "moves", "move",
                               "go", "goes", "left", "right", "delete", "remove", "extract", "paint", "colour",
                               "color", "with", "while", "quickly", "slowly", "up", "down", "in"})


def check_command(text) -> str:
    """The command, stripped, if it passes the guards (module docstring); else a typed error."""
    if not isinstance(text, str):
        raise EmptyCommandError(f"A command is text, got {type(text).__name__}.")
    text = text.strip()
    if not text:
        raise EmptyCommandError("The command is empty. Try " + ", ".join(EXAMPLES[:3]) + ".")
    if len(text) > MAX_COMMAND_CHARS:
        raise CommandTooLongError(
            f"The command has {len(text):,} characters; the most is {MAX_COMMAND_CHARS}. Describe one scene or one edit."
        )
    lowered = text.lower()
    for pattern, why in _SMUGGLING:
        found = pattern.search(lowered)
        if found:
            raise InstructionSmugglingError(
                f"This command was refused because {why} ({found.group(0)!r}). Commands describe a scene or an "
                "edit in plain words; nothing in them is ever run."
            )
    if re.search(r"[^\x00-\x7f]", text.replace("\u2019", "'").replace("\u2018", "'")):
        if re.search(r"[^\W\d_]", re.sub(r"[\x00-\x7f]", "", text.replace("\u2019", "").replace("\u2018", ""))):
            raise NonEnglishCommandError(
                "The command has letters outside English; Morpho4D reads commands in English, e.g. "
                + EXAMPLES[0] + "."
            )
    words = re.findall(r"[a-z]+", lowered)
    foreign = sum(word in _FOREIGN_WORDS for word in words)
    english = sum(word in _ENGLISH_FUNCTION for word in words)
    if foreign >= 2 and foreign > english:
        raise NonEnglishCommandError(
            "The command does not look like English; Morpho4D reads commands in English, e.g. " + EXAMPLES[0] + "."
        )
    return text


def normalise(text: str) -> str:
    """Lower case, possessives and punctuation dropped (hex colours kept), polite prefixes removed."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"'s\b", "", text)
    text = re.sub(r"(#[0-9a-f]{3,6})\b|(,)|[^a-z0-9#,]+", lambda m: m.group(1) or (" , " if m.group(2) else " "), text)
    text = re.sub(r"#(?![0-9a-f]{3,6}\b)", " ", text)
    text = " ".join(text.split())
    text = _POLITE.sub("", text + " ").strip()
    return re.sub(r"\b(please|thanks|thank you)$", "", text).strip()


# ----- motion phrases
def parse_motion(words: list[str]) -> dict | None:
    """Direction and speed of a motion phrase that is nothing else (filler aside), or None."""
    found: dict[str, str] = {}
    i = 0
    while i < len(words):
        for length in range(min(_LONGEST, len(words) - i), 0, -1):
            token = _LONG_MATCH.get(tuple(words[i : i + length]))
            if token is not None:
                kind, value = token
                if kind in found and found[kind] != value:
                    return None
                found[kind] = value
                i += length
                break
        else:
            if words[i] in MOTION_FILLER or words[i] in MANNER_WORDS:
                i += 1
                continue
            return None
    return found or None


def _scan_motion(words: list[str]) -> tuple[dict, list[bool]]:
    """Direction and speed phrases anywhere in ``words`` (the words after a GEN sentence's verb), and
    which words they used."""
    found: dict[str, str] = {}
    used = [False] * len(words)
    i = 0
    while i < len(words):
        for length in range(min(_LONGEST, len(words) - i), 0, -1):
            key = tuple(words[i : i + length])
            token = _LONG_MATCH.get(key)
            # Bare "left" / "right" / "up" / "down" count only right after a verb or another motion word.
            if token is not None and length == 1 and key[0] in ("left", "right", "up", "down"):
                if not (i == 0 or words[i - 1] in VERB_STEM_OF or used[i - 1]):
                    token = None
            if token is not None and token[1] not in ("reverse", "faster", "slower"):
                kind, value = token
                if kind in found and found[kind] != value:
                    raise UnparsedCommandError(
                        f"The command gives two {kind}s ({found[kind]!r} and {value!r}); give one."
                    )
                found[kind] = value
                used[i : i + length] = [True] * length
                i += length
                break
        else:
            i += 1
    return found, used


# ----- targets
def parse_targets(text: str) -> tuple[str, ...]:
    """Noun phrases of ``text`` ("the fish and the seaweed" -> ("fish", "seaweed")), or raise."""
    text = re.sub(r"\b(from the scene|in the scene|from the video|too|as well|only)$", "", text.strip()).strip()
    parts = [part.strip() for part in re.split(r"\band\b|,", text) if part.strip()]
    targets = []
    for part in parts:
        words = [word for word in part.split() if word not in DETERMINERS]
        if len(words) == 1 and words[0] in PRONOUNS:
            targets.append(PRONOUNS[words[0]])
            continue
        if not words or not all(re.fullmatch(r"[a-z]+", word) for word in words):
            raise UnparsedCommandError(f"Could not read which object {part!r} means; name it, e.g. 'the ball'.")
        if len(words) > 4:
            raise UnparsedCommandError(f"{part!r} is not an object name; name it, e.g. 'the red ball'.")
        targets.append(" ".join(words))
    if not targets:
        raise UnparsedCommandError("The command names no object; e.g. 'make the ball blue'.")
    if len(targets) > 8:
        raise UnparsedCommandError("Name at most 8 objects in one command.")
    return tuple(dict.fromkeys(targets))


def _edit(operation: str, targets=(), **parameters) -> Plan:
    return Plan("EDIT", operation=operation, targets=tuple(targets),
                parameters={k: v for k, v in parameters.items() if v is not None})


def _recolour(target_text: str, colour: str) -> Plan:
    targets = parse_targets(target_text)
    for target in targets:
        if target.split()[-1] in COLOUR_WORDS:
            raise UnparsedCommandError(
                f"Could not tell the object from the colour in {target!r}; give one colour per command, "
                "e.g. 'make the ball blue'."
            )
    return _edit("recolour", targets, colour=colour)


def _motion_plan(targets: tuple[str, ...], motion: dict) -> Plan:
    if "direction" in motion:
        return _edit("change_direction", targets, direction=motion["direction"], speed=motion.get("speed"))
    return _edit("change_speed", targets, speed=motion["speed"])


def _split_target_motion(words: list[str]) -> Plan | None:
    """"<targets> <motion>" at the first split where the tail is a whole motion phrase."""
    for i in range(1, len(words)):
        motion = parse_motion(words[i:])
        if motion is not None:
            try:
                return _motion_plan(parse_targets(" ".join(words[:i])), motion)
            except UnparsedCommandError:
                continue
    return None


_VERB_ALTERNATION = "|".join(sorted(VERB_STEM_OF, key=len, reverse=True))
_EDIT_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^(undo|undo that|undo it|undo the last (edit|change|command|step)|revert|revert that|"
                r"revert the last (edit|change)|go back|take that back|step back)$"), lambda m: _edit("undo")),
    (re.compile(r"^(redo|redo that|redo it|redo the last (edit|change)|do that again)$"), lambda m: _edit("redo")),
    # recolour
    (re.compile(rf"^(?:set|make|change|turn) the colou?r of (?P<t>.+?) (?:to |into )?(?P<c>{_COLOUR})$"),
     lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?:change|set|switch) (?P<t>.+?) colou?r to (?P<c>{_COLOUR})$"),
     lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?:change|turn|switch) (?P<t>.+?) (?:to|into) (?P<c>{_COLOUR})(?: colou?r)?$"),
     lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?:make|paint|colou?r|turn|dye|recolou?r|tint) (?P<t>.+?) (?:in |into )?(?P<c>{_COLOUR})"
                r"(?: colou?r| colou?red| instead)?$"), lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?P<t>.+?) should (?:be|become|turn) (?P<c>{_COLOUR})$"), lambda m: _recolour(m["t"], m["c"])),
    # extract (before delete: "remove everything but")
    (re.compile(r"^(?:delete|remove|erase|hide) everything (?:but|except|apart from|other than) (?P<t>.+)$"),
     lambda m: _edit("extract", parse_targets(m["t"]))),
    (re.compile(r"^(?:extract|isolate|keep only|only keep|show only|only show|keep just|just keep|leave only|"
                r"cut out|pull out|single out) (?P<t>.+)$"), lambda m: _edit("extract", parse_targets(m["t"]))),
    (re.compile(r"^keep (?P<t>.+?) only$"), lambda m: _edit("extract", parse_targets(m["t"]))),
    # delete
    (re.compile(r"^(?:delete|remove|erase|get rid of|take away|take out|eliminate|drop|discard|clear) (?P<t>.+)$"),
     lambda m: _edit("delete", parse_targets(m["t"]))),
    (re.compile(r"^make (?P<t>.+?) (?:disappear|vanish|go away)$"), lambda m: _edit("delete", parse_targets(m["t"]))),
    # motion
    (re.compile(r"^(?:speed up|accelerate) (?P<t>.+)$"), lambda m: _edit("change_speed", parse_targets(m["t"]),
                                                                          speed="faster")),
    (re.compile(r"^(?:slow down|decelerate) (?P<t>.+)$"), lambda m: _edit("change_speed", parse_targets(m["t"]),
                                                                           speed="slower")),
    (re.compile(r"^(?:speed|slow) (?P<t>.+?) (?P<d>up|down)$"),
     lambda m: _edit("change_speed", parse_targets(m["t"]), speed="faster" if m["d"] == "up" else "slower")),
    (re.compile(r"^(?:reverse|flip|invert) (?:the )?(?:direction|motion|movement|path) of (?P<t>.+)$"),
     lambda m: _edit("change_direction", parse_targets(m["t"]), direction="reverse")),
    (re.compile(r"^(?:reverse|flip|invert) (?P<t>.+?)(?: direction| motion| movement)?$"),
     lambda m: _edit("change_direction", parse_targets(m["t"]), direction="reverse")),
    (re.compile(rf"^(?:make|have|let|get) (?P<t>.+?) (?:{_VERB_ALTERNATION}) (?P<m>.+)$"),
     lambda m: _motion_or_none(m["t"], m["m"])),
    (re.compile(rf"^(?P<t>.+?) should (?:{_VERB_ALTERNATION}) (?P<m>.+)$"), lambda m: _motion_or_none(m["t"], m["m"])),
    (re.compile(r"^make (?P<t>.+?) (?P<s>faster|slower|quicker)$"),
     lambda m: _edit("change_speed", parse_targets(m["t"]), speed="slower" if m["s"] == "slower" else "faster")),
    (re.compile(rf"^(?:{_VERB_ALTERNATION}) (?P<rest>.+)$"), lambda m: _split_target_motion(m["rest"].split())),
    (re.compile(r"^send (?P<rest>.+)$"), lambda m: _split_target_motion(m["rest"].split())),
]
# First words that make a sentence an edit (imperatives on the current scene).
EDIT_STARTS = re.compile(
    r"^(undo|redo|revert|go back|take|step back|set|make|change|turn|switch|paint|colou?r|dye|recolou?r|tint|delete|"
    r"remove|erase|hide|extract|isolate|keep|only|show only|just|leave|cut|pull|single|get rid|get|eliminate|drop|"
    r"discard|clear|speed|slow|accelerate|decelerate|reverse|flip|invert|have|let|send|move|do that)\b"
)
GEN_STARTS = re.compile(
    r"^(?:(?:generate|create|render|build|produce|simulate|animate|show|draw|make)(?: me)?"
    r"(?: (?:a|an|the|one) (?:new )?(?:4d )?(?:scene|video|clip|animation|world|movie))?"
    r"(?: (?:of|where|in which|with|showing|that shows|in that))? )(?=(?:a|an|one|some|the|\w+)\b)"
)


def _motion_or_none(target_text: str, motion_text: str) -> Plan | None:
    motion = parse_motion(motion_text.split())
    return None if motion is None else _motion_plan(parse_targets(target_text), motion)


class CommandParser(Protocol):
    """One back end of the parameterizer."""

    name: str

    def parse(self, text: str) -> "ParseResult":
        ...


@dataclass
class ParseResult:
    """A plan and how it was obtained."""

    plan: Plan
    # "grammar" or "llm".
    backend: str
    # What a person should know, e.g. that the LLM's output was replaced by the grammar's plan.
    note: str = ""
    # The LLM's raw text (truncated), for the record.
    raw: str = ""


class GrammarParser:
    """The deterministic grammar back end (module docstring)."""

    name = "grammar"

    def parse(self, text: str) -> ParseResult:
        return ParseResult(self.parse_plan(text), "grammar")

    def parse_plan(self, text: str) -> Plan:
        text = normalise(check_command(text))
        if not text:
            raise EmptyCommandError("The command has no words. Try " + ", ".join(EXAMPLES[:3]) + ".")
        gen = GEN_STARTS.match(text)
        if gen and re.match(r"(a|an|one|some)\b", text[gen.end():]) or re.match(r"^(a|an|one|some)\b", text):
            return self._gen(text[gen.end():] if gen else text)
        if gen and not EDIT_STARTS.match(text):
            return self._gen(text[gen.end():])
        if EDIT_STARTS.match(text) or re.search(r"\bshould\b", text):
            for pattern, build in _EDIT_RULES:
                match = pattern.match(text)
                if match:
                    plan = build(match)
                    if plan is not None:
                        return plan
            raise UnparsedCommandError(
                f"Could not read the edit {text!r}. Edits look like " + ", ".join(EXAMPLES[1:]) + "."
            )
        return self._gen(text)

    # ----- GEN
    def _gen(self, text: str) -> Plan:
        text = " ".join(text.replace(",", " ").split())
        words = text.split()
        still_objects: list[GenObject] = []
        still = re.search(r"\b(?:while|as|and) (?P<np>(?:a|an|the|one) [a-z ]+?) (?:stays|remains|sits|is|stands|"
                          r"rests|waits) (?:still|put|motionless|in place|where it is)\b", text)
        if still:
            still_objects.append(self._noun_phrase(still["np"].split(), None, still=True))
            words = (text[: still.start()] + " " + text[still.end():]).split()
        verb_at = next((i for i, word in enumerate(words) if word in VERB_STEM_OF and i > 0), None)
        if verb_at is None:
            raise UnparsedCommandError(
                f"Could not read {text!r} as a scene or an edit. A scene names an object and how it moves, e.g. "
                f"{EXAMPLES[0]}; edits look like {', '.join(EXAMPLES[1:4])}."
            )
        subject = words[:verb_at]
        if subject and subject[-1] in ("is", "are"):
            subject = subject[:-1]
        stem = VERB_STEM_OF[words[verb_at]]
        tail = words[verb_at + 1 :]
        motion, used = _scan_motion(tail)
        if "direction" not in motion:
            raise UnparsedCommandError(
                f"Say which way the {' '.join(subject[-1:]) or 'object'} moves, e.g. 'from left to right', "
                f"'from right to left', 'upward', 'downward' or 'toward the top right'."
            )
        mover = self._noun_phrase(subject, (motion["direction"], motion.get("speed", "steadily"),
                                            "arc" if stem in ARC_STEMS else "straight"))
        scene_words = [word for word, taken in zip(tail, used) if not taken and word not in STOP_WORDS
                       and word not in MANNER_WORDS and word not in VERB_STEM_OF]
        for word in scene_words:
            if not re.fullmatch(r"[a-z]+", word):
                raise UnparsedCommandError(f"Could not read {word!r} in {text!r}.")
        return Plan("GEN", objects=(mover, *still_objects), scene_words=tuple(dict.fromkeys(scene_words))[:8])

    def _noun_phrase(self, words: list[str], motion, still: bool = False) -> GenObject:
        words = [w for w in words if w not in DETERMINERS and w != "one"]
        size = next((SIZE_WORDS[w] for w in words if w in SIZE_WORDS), "medium")
        words = [w for w in words if w not in SIZE_WORDS]
        if not words or not all(re.fullmatch(r"[a-z]+", w) for w in words) or len(words) > 5:
            raise UnparsedCommandError(
                f"Could not find the object in {' '.join(words) or 'the sentence'!r}; e.g. {EXAMPLES[0]}."
            )
        noun = words[-1]
        if any(w in PRONOUNS for w in words):
            raise UnparsedCommandError(
                f"Could not read {' '.join(words)!r} as an object. Edits look like {', '.join(EXAMPLES[1:])}."
            )
        if noun in COLOUR_WORDS:
            raise UnparsedCommandError(f"{' '.join(words)!r} names a colour but no object; e.g. 'a red ball'.")
        singular = noun[:-1] if noun.endswith("s") and noun[:-1] in NOUN_SHAPES else noun
        colours = [w for w in words[:-1] if w in COLOUR_WORDS]
        if len(colours) > 1:
            raise UnparsedCommandError(f"{' '.join(words)!r} has two colours; give an object one colour.")
        direction, speed, path = (None, None, "still") if still else motion
        return GenObject(phrase=" ".join(words), colour=colours[0] if colours else None,
                         shape=NOUN_SHAPES.get(singular), direction=direction, speed=speed, path=path, size=size)


# ----- LLM back end
LLM_INSTRUCTIONS = """You turn a user's command about a 4D scene into a JSON plan. Reply with one JSON object
and nothing else. Schema: {schema}
Examples:
{examples}
Command: {command}
JSON:"""
LLM_EXAMPLES = ("a red ball bounces quickly from right to left", "make the ball blue", "delete the ball",
                "keep only the boat", "now make it go left to right", "undo")
MAX_LLM_OUTPUT_CHARS = 4000


def extract_json_object(text: str):
    """The first JSON object in ``text`` (``json`` only), or None."""
    text = text[:MAX_LLM_OUTPUT_CHARS]
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


class LLMCommandParser:
    """Optional back end: a local transformers causal LM (module docstring). ``model`` and ``tokenizer``
    are any ``AutoModelForCausalLM`` / tokenizer pair; :meth:`from_preset` loads the hub preset's."""

    name = "llm"

    def __init__(self, model, tokenizer, *, fallback: GrammarParser | None = None, max_new_tokens: int = 160) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.fallback = fallback or GrammarParser()
        self.max_new_tokens = int(max_new_tokens)

    @classmethod
    def from_preset(cls, preset: str = "hub", **kwargs) -> LLMCommandParser:
        """Load the preset's ``language`` model and its tokenizer (safetensors, no remote code)."""
        from ..models import ModelManager

        return cls.from_manager(ModelManager(preset), **kwargs)

    @classmethod
    def from_manager(cls, manager, **kwargs) -> LLMCommandParser:
        """The ``language`` model of a shared model manager and its tokenizer."""
        from transformers import AutoTokenizer

        from ..models.presets import get_source

        source = get_source(manager.preset, "language")
        tokenizer = AutoTokenizer.from_pretrained(manager.source_location("language"), local_files_only=source.local)
        return cls(manager.get("language"), tokenizer, **kwargs)

    def prompt(self, command: str) -> str:
        grammar = self.fallback
        examples = "\n".join(f"Command: {c}\nJSON: {grammar.parse_plan(c).to_json(None)}" for c in LLM_EXAMPLES)
        return LLM_INSTRUCTIONS.format(schema=json.dumps(PLAN_SCHEMA), examples=examples, command=command)

    def generate_text(self, prompt: str) -> str:
        """Greedy continuation of ``prompt`` (the new text only)."""
        import torch

        inputs = self.tokenizer(prompt, return_tensors="pt")
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def parse(self, text: str) -> ParseResult:
        command = check_command(text)
        raw = self.generate_text(self.prompt(command))[:MAX_LLM_OUTPUT_CHARS]
        data = extract_json_object(raw)
        try:
            if data is None:
                raise PlanError("no JSON object in the model's output")
            plan = Plan.from_dict(data)
        except (PlanError, TypeError) as error:
            plan = self.fallback.parse_plan(command)
            return ParseResult(plan, "grammar", note=f"The language model's output was not a valid plan ({error}); "
                               "the grammar parser's plan was used.", raw=raw[:500])
        return ParseResult(plan, "llm", raw=raw[:500])


def parse_command(text: str, parser: CommandParser | None = None) -> ParseResult:
    """Parse ``text`` with ``parser`` (default: the grammar)."""
    return (parser or GrammarParser()).parse(text)
