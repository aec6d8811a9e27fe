"""The command parameterizer of Morpho4D, thesis eq. 11.5: a sentence -> a :class:`~.plan.Plan`.

Two back ends behind one interface (:class:`CommandParser`: ``parse(text) -> ParseResult``):

* :class:`GrammarParser` (the default, offline, deterministic). After the guards below it reads
  the normalised words (lower case; punctuation, possessive "'s" and hyphens dropped; "please",
  "now", "can you" ... ignored):

  - **undo / redo**: "undo", "undo that (last) change", "revert the previous edit", "take that back",
    "go back", "redo the last undone change" ... (any capitalisation and punctuation);
  - **recolour**: "make|paint|colour|recolour|dye|turn T (to|in|into|as|with) C", "change (the colour of) T
    to C", "set the colour of T (to) C", "give T a C colour", "T should be C" (C a colour name or hex code;
    "recolor the red ball to orange" targets "red ball");
  - **delete**: "delete|remove|erase|hide|get rid of|take away|eliminate T (from the scene)",
    "make T disappear|vanish";
  - **extract**: "extract|isolate T", "keep|show|display|leave (me) only|just|nothing but T", "just|only
    show|keep T", "show|keep T only|alone", "delete|remove everything but|except T";
  - **motion**: "make|have|let T <verb> M", "move|send T M", "T should <verb> M", "speed up T",
    "slow down T", "make T faster|slower", "reverse (the direction of) T", where M is direction
    and/or speed words (a direction gives change_direction, speed alone change_speed);
  - **GEN**: anything else that describes a scene ("(generate|create|show|give me|there is ...) ..."), cut
    into clauses at "while", "and", "as", "whereas", commas or sentence ends where a new noun phrase and
    its verb begin (:func:`split_clauses`). Each clause is "NP <motion verb> M" (M before or after the
    verb, in any order: "quickly, a red ball rolls left", "from the top, a ball falls"), "NP stays still |
    sits | does not move", or "NP1 and NP2 <verb> M" (both move so). Verbs that say their direction
    ("falls", "drops", "sinks", "rises", "climbs") give it when M does not; "from the top" is downward,
    "from the left" left to right; a later mover may go "the other way" or "the same way" as the first.
    E.g. "a red circle moves left to right while a blue square moves right to left".
    Nouns are read as ShapesWorld shapes ("ball", "disc", "sphere" -> circle; "box", "block", "cube" ->
    square; "pyramid", "wedge" -> triangle), a few colour names as ShapesWorld colours ("crimson" -> red).

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

import functools
import json
import re
from dataclasses import dataclass
from typing import Protocol

from ..errors import InvalidInputError
from ..shapesworld.vocab import SHAPES
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
    **dict.fromkeys(("ball", "disc", "disk", "dot", "sphere", "orb", "coin", "bubble", "marble"), "circle"),
    **dict.fromkeys(("box", "block", "cube", "crate", "tile", "brick", "rectangle"), "square"),
    **dict.fromkeys(("pyramid", "wedge", "cone"), "triangle"),
}
# Colour words read as the ShapesWorld colour they name (applied by :func:`normalise`).
COLOUR_SYNONYMS = {"crimson": "red", "scarlet": "red", "violet": "purple", "lilac": "purple", "navy": "blue",
                   "azure": "blue", "emerald": "green", "lime": "green", "golden": "yellow", "amber": "orange",
}
SIZE_WORDS = {"small": "small", "tiny": "small", "little": "small", "big": "large", "large": "large",
              "huge": "large", "giant": "large"}
# Motion verbs (any form) of a GEN sentence or a motion edit; the arc ones bounce.
_VERB_STEMS = ("move", "go", "slide", "bounce", "roll", "glide", "swim", "drive", "travel", "fly", "run", "crawl",
               "float", "drift", "walk", "hop", "jump", "sail", "race", "zoom", "head", "ride", "skate", "shift",
               "dash", "speed", "cruise", "wander", "pass", "cross", "coast", "scoot", "hurry", "tumble",
               "fall", "drop", "sink", "descend", "plummet", "rise", "climb", "ascend", "soar", "lift")
ARC_STEMS = frozenset({"bounce", "hop", "jump"})
# Verbs that say the direction themselves ("a ball falls"), used when the sentence names none.
VERB_DIRECTIONS = {**dict.fromkeys(("fall", "drop", "sink", "descend", "plummet", "tumble"), "downward"),
                   **dict.fromkeys(("rise", "climb", "ascend", "soar", "lift"), "upward")}
# Verbs of an object that stays where it is ("a blue square stays still", "... sits in the corner").
STILL_VERBS = frozenset({"stay", "stays", "staying", "stayed", "remain", "remains", "remaining", "remained", "sit",
                         "sits", "sitting", "sat", "stand", "stands", "standing", "stood", "rest", "rests", "resting",
                         "wait", "waits", "waiting", "is", "are", "keeps", "keep", "lies", "lie", "lying", "hovers",
                         "hover", "hovering"})
STILL_WORDS = ("still", "put", "motionless", "in place", "where it is", "where they are", "static", "stationary",
               "at rest", "unmoving", "fixed", "not moving", "perfectly still", "completely still", "idle",
               "in the middle", "in the centre", "in the center", "in the corner", "nearby", "there")
_NOT_MOVING = re.compile(r"\b(?:does not|doesnt|doesn t|do not|dont|don t|never|not) (?:move|moves|moving)\b")


def _verb_forms(stem: str) -> set[str]:
    """Present, third person, -ing and past forms of a motion verb ("drop" -> drops, dropping, dropped)."""
    irregular = {"go": {"go", "goes", "going", "went", "gone"}, "fly": {"fly", "flies", "flying", "flew"},
                 "run": {"run", "runs", "running", "ran"}, "swim": {"swim", "swims", "swimming", "swam"},
                 "ride": {"ride", "rides", "riding", "rode"}, "slide": {"slide", "slides", "sliding", "slid"},
                 "travel": {"travel", "travels", "traveling", "travelling", "traveled", "travelled"},
                 "fall": {"fall", "falls", "falling", "fell"}, "sink": {"sink", "sinks", "sinking", "sank"},
                 "rise": {"rise", "rises", "rising", "rose", "risen"},
                 "hurry": {"hurry", "hurries", "hurrying", "hurried"}, "speed": {"speeds", "speeding", "sped"},
                 "pass": {"passes", "passing", "passed"}, "cross": {"crosses", "crossing", "crossed"}}
    if stem in irregular:
        return irregular[stem]
    base = stem[:-1] if stem.endswith("e") else stem + (stem[-1] if stem in ("hop", "drop") else "")
    plural = stem + ("es" if stem.endswith(("s", "sh", "ch", "x", "z")) else "s")
    return {stem, plural, base + "ing", base + ("d" if stem.endswith("e") else "ed")}


VERB_STEM_OF = {form: stem for stem in _VERB_STEMS for form in _verb_forms(stem)}

# Direction phrases (word tuples) -> ShapesWorld direction; matched longest first.
_DIRECTION_PHRASES: dict[str, tuple[str, ...]] = {
    "from left to right": ("from left to right", "from the left to the right", "left to right", "to the right",
                           "towards the right", "toward the right", "rightward", "rightwards", "right",
                           "from the left", "from left", "from the left side", "from the left edge",
                           "to the right side", "to the right edge", "left to the right"),
    "from right to left": ("from right to left", "from the right to the left", "right to left", "to the left",
                           "towards the left", "toward the left", "leftward", "leftwards", "left",
                           "from the right", "from right", "from the right side", "from the right edge",
                           "to the left side", "to the left edge", "right to the left"),
    "upward": ("upward", "upwards", "up", "from bottom to top", "from the bottom to the top", "to the top",
               "towards the top", "toward the top", "bottom to top", "from the bottom", "from bottom",
               "from the bottom edge", "from below", "to the top edge", "skyward", "skywards"),
    "downward": ("downward", "downwards", "down", "from top to bottom", "from the top to the bottom",
                 "to the bottom", "towards the bottom", "toward the bottom", "top to bottom", "from the top",
                 "from top", "from the top edge", "from above", "to the bottom edge", "to the ground",
                 "to the floor"),
}
for _vertical, _v in (("top", "up"), ("bottom", "down")):
    for _side in ("right", "left"):
        _DIRECTION_PHRASES[f"toward the {_vertical} {_side}"] = tuple(
            f"{prefix} {_vertical} {_side}" for prefix in ("toward the", "towards the", "to the")
        ) + tuple(f"{prefix} {'upper' if _vertical == 'top' else 'lower'} {_side}"
                  for prefix in ("toward the", "towards the", "to the")) + (f"{_v} and to the {_side}", f"{_v} and {_side}")
SPEED_PHRASES: dict[str, tuple[str, ...]] = {
    "quickly": ("quickly", "fast", "rapidly", "swiftly", "speedily", "quick", "at high speed", "at full speed",
                "briskly", "at a fast pace", "at a quick pace", "in a hurry", "hurriedly"),
    "slowly": ("slowly", "slow", "gently", "leisurely", "lazily", "at a slow pace", "unhurriedly",
               "at a leisurely pace", "in slow motion", "at a snail pace", "sluggishly"),
    "steadily": ("steadily", "steady", "at a steady pace", "at a constant speed", "at a normal speed",
                 "at a moderate pace", "moderately"),
    "faster": ("faster", "quicker", "more quickly", "more rapidly"),
    "slower": ("slower", "more slowly"),
}
REVERSE_PHRASES = ("the other way", "the opposite way", "in the opposite direction", "in the other direction",
                   "backwards", "backward", "in reverse", "the opposite direction", "the other direction")
# Phrases of a second mover that repeat the first one's direction ("... and a blue box does the same").
SAME_PHRASES = ("the same way", "in the same direction", "the same direction", "likewise", "alongside")
OPPOSITE = {"from left to right": "from right to left", "from right to left": "from left to right",
            "upward": "downward", "downward": "upward", "toward the top right": "toward the bottom left",
            "toward the bottom left": "toward the top right", "toward the top left": "toward the bottom right",
            "toward the bottom right": "toward the top left"}
# Intensifiers, read as nothing ("very quickly" = "quickly").
INTENSIFIERS = frozenset({"very", "really", "super", "extremely", "quite", "pretty", "rather", "fairly", "so",
                          "too", "all", "way", "straight", "directly", "just"})
# Words of a motion phrase that carry no meaning.
MOTION_FILLER = frozenset({",", "now", "instead", "again", "please", "too", "and", "then", "across", "the", "screen",
                           "frame", "scene", "smoothly", "gracefully", "effortlessly", "along"})
MANNER_WORDS = frozenset({"smoothly", "gracefully", "effortlessly", "elegantly", "calmly", "happily", "playfully",
                          "freely", "merrily", "diagonally", "evenly", "continuously"})
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
for _phrase in SAME_PHRASES:
    _LONG_MATCH[tuple(_phrase.split())] = ("direction", "same")
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
    """Lower case, possessives and punctuation dropped (hex colours kept; a sentence end inside the text becomes
    a comma), colour synonyms read as ShapesWorld colours, polite prefixes removed."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"'s\b", "", text)
    text = re.sub(r"[.!?]+(?=\s+[a-z])", " , ", text)  # "a ball moves left. a box moves right." is one scene
    text = re.sub(r"(#[0-9a-f]{3,6})\b|(,)|[^a-z0-9#,]+", lambda m: m.group(1) or (" , " if m.group(2) else " "), text)
    text = re.sub(r"#(?![0-9a-f]{3,6}\b)", " ", text)
    text = " ".join(text.split())
    text = " ".join(COLOUR_SYNONYMS.get(word, word) for word in text.split())
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
                if kind in found and found[kind] != value or value == "same":
                    return None
                found[kind] = value
                i += length
                break
        else:
            if words[i] in MOTION_FILLER or words[i] in MANNER_WORDS or words[i] in INTENSIFIERS:
                i += 1
                continue
            return None
    return found or None


def _scan_motion(words: list[str], bare: bool = True) -> tuple[dict, list[bool]]:
    """Direction and speed phrases anywhere in ``words`` (a GEN clause's words after its verb, or with
    ``bare=False`` those before it), and which words they used. A direction may also be "reverse" or
    "same" (relative to the sentence's first mover, resolved by the caller)."""
    found: dict[str, str] = {}
    used = [False] * len(words)
    i = 0
    while i < len(words):
        for length in range(min(_LONGEST, len(words) - i), 0, -1):
            key = tuple(words[i : i + length])
            token = _LONG_MATCH.get(key)
            # Bare "left" / "right" / "up" / "down" count only right after a verb or another motion word.
            if token is not None and length == 1 and key[0] in ("left", "right", "up", "down"):
                after_motion = i > 0 and (words[i - 1] in VERB_STEM_OF or used[i - 1] or words[i - 1] in INTENSIFIERS)
                if not (bare and (i == 0 or after_motion)):
                    token = None
            if token is not None and token[1] not in ("faster", "slower"):
                kind, value = token
                if kind in found and found[kind] != value:
                    raise UnparsedCommandError(
                        f"The command gives two {kind}s ({found[kind]!r} and {value!r}) for one object; give one."
                    )
                found[kind] = value
                used[i : i + length] = [True] * length
                i += length
                break
        else:
            i += 1
    return found, used


# ----- GEN clauses
# Words that may join two clauses of a GEN sentence, and linkers skipped after them.
CLAUSE_JOINERS = frozenset({"while", "whilst", "as", "whereas", "and", "but", ",", "meanwhile", "when", "with"})
_LINKERS = (("at", "the", "same", "time"), ("in", "the", "meantime"), ("meanwhile",), ("also",), ("then",),
            ("simultaneously",), ("while",), ("and",), (",",), ("as",), ("just",))
_NP_STARTS = (DETERMINERS | {"one", "another"} | COLOUR_WORDS | set(SIZE_WORDS) | set(NOUN_SHAPES))
_SUBJECT_TAIL = frozenset({"is", "are", "was", "were", "that", "which", "who", "keeps", "starts", "begins", "then",
                           "also", "now", ","})


def _negated_motion_at(words: list[str]) -> int | None:
    found = _NOT_MOVING.search(" ".join(words))
    return None if found is None else " ".join(words)[: found.start()].count(" ")


def _still_index(words: list[str]) -> int | None:
    """Where a clause says its object stays put ("stays still", "sits in the corner", "does not move"), or None."""
    at = _negated_motion_at(words)
    for i in range(1, len(words)):
        if at is not None and i >= at:
            break
        if words[i] not in STILL_VERBS:
            continue
        rest = " ".join(words[i + 1 :])
        if words[i] not in ("is", "are", "keeps", "keep") or any(rest == w or rest.startswith(w + " ")
                                                                 for w in STILL_WORDS):
            return i
    return at if at else None


def _verb_index(words: list[str]) -> int | None:
    return next((i for i, word in enumerate(words) if word in VERB_STEM_OF and i > 0), None)


def _starts_clause(words: list[str]) -> bool:
    """Whether ``words`` open a clause of their own: a noun phrase, then a motion or stay verb."""
    if not words or words[0] not in _NP_STARTS:
        return False
    for i, word in enumerate(words[1:8], start=1):
        if word in CLAUSE_JOINERS:
            return False
        if word in VERB_STEM_OF or word in STILL_VERBS or _negated_motion_at(words[i:i + 3]) == 0:
            return True
    return False


def split_clauses(words: list[str]) -> list[list[str]]:
    """A GEN sentence's clauses: cut at a joiner ("while", "and", ",", "as" ...; linkers such as "at the same
    time" skipped) where a new noun phrase and its verb begin; a piece with no verb (a leading "from left to
    right," or the first of "a ball and a box move ...") joins the clause after it."""
    pieces: list[tuple[list[str], list[str]]] = [([], [])]  # (the joiner words that opened it, its words)
    i = 0
    while i < len(words):
        if words[i] in CLAUSE_JOINERS and pieces[-1][1]:
            j = i + 1
            while j < len(words):
                linker = next((lk for lk in _LINKERS if tuple(words[j : j + len(lk)]) == lk), None)
                if linker is None:
                    break
                j += len(linker)
            if _starts_clause(words[j:]):
                pieces.append((words[i:j], []))
                i = j
                continue
        pieces[-1][1].append(words[i])
        i += 1
    clauses: list[list[str]] = []
    carry: list[str] = []
    for opener, body in pieces:
        body = carry + (opener if carry else []) + body
        has_verb = _verb_index(body) is not None or _still_index(body) is not None
        carry = [] if has_verb else body
        if has_verb:
            clauses.append(body)
    if carry:
        if not clauses:
            return [carry]
        clauses[-1] += [","] + carry
    return clauses


def _subject(words: list[str]) -> tuple[list[str], dict]:
    """The noun phrase words before a clause's verb, and the motion words among them ("quickly, a ball ...")."""
    motion, used = _scan_motion(words, bare=False)
    words = [word for word, taken in zip(words, used) if not taken and word not in INTENSIFIERS]
    if words[:2] in (["there", "is"], ["there", "are"], ["we", "see"], ["i", "see"]):
        words = words[2:]
    while words and words[-1] in _SUBJECT_TAIL:
        words = words[:-1]
    while words and words[0] in (",", "and"):
        words = words[1:]
    return words, motion


def _noun_phrases(words: list[str]) -> list[list[str]]:
    """One subject's noun phrases: "a red ball and a blue box" -> [[a, red, ball], [a, blue, box]]; a comma
    separates phrases only before an article ("a small, red ball" is one)."""
    phrases, current = [], []
    for i, word in enumerate(words):
        if word == "and" or word == "," and words[i + 1 : i + 2] and words[i + 1] in DETERMINERS | {"one", "another"}:
            if current:
                phrases.append(current)
            current = []
        elif word != ",":
            current.append(word)
    if current:
        phrases.append(current)
    if not phrases:
        raise UnparsedCommandError(f"Could not find the object in the sentence; e.g. {EXAMPLES[0]}.")
    return phrases


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
        if set(target.split()) & {"to", "into", "as", "with", "in", "using"}:
            raise UnparsedCommandError(
                f"Could not read the colour in {target_text!r}: name one colour ({', '.join(sorted(COLOUR_WORDS))}) "
                "or a hex code such as '#2a5ae1'."
            )
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
# Words of "undo that last change" / "redo the previous edit".
_REFERENT = "that|it|this|the|my|your|our|what i did|what you did|one"
_LAST = "very last|last|previous|latest|most recent|recent|prior|final"
_CHANGE = r"(?:edit|change|command|step|action|operation|modification|thing|one|move|instruction|recolou?r|" \
          r"deletion|extraction)s?"
_EDIT_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^(?:undo|revert|cancel|roll back|rollback|take back|scratch)"
                rf"(?: (?:{_REFERENT}))*(?: (?:{_LAST}))?(?: (?:{_CHANGE}))?(?: back| please)?$"
                rf"|^reverse(?: (?:{_REFERENT}))*(?: (?:{_LAST}))? (?:{_CHANGE})$"
                r"|^(?:undo|revert|cancel|roll back|rollback|take back|scratch)(?: (?:that|it|this))?(?: back)?$"
                r"|^(?:go|step|move) back(?: one step| a step| once)?$|^(?:take|roll) (?:that|it) back$"
                r"|^(?:never mind|nevermind|oops|oops undo|whoops)$"), lambda m: _edit("undo")),
    (re.compile(r"^(?:redo|re do|redo that|do that again|repeat that|undo (?:the|that|my) undo)"
                rf"(?: (?:{_REFERENT}))*(?: (?:{_LAST}|undone))*(?: (?:{_CHANGE}))?(?: again| please)?$"),
     lambda m: _edit("redo")),
    # recolour
    (re.compile(rf"^(?:set|make|change|turn) the colou?r of (?P<t>.+?) (?:to |into )?(?P<c>{_COLOUR})$"),
     lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?:change|set|switch) (?P<t>.+?) colou?r to (?P<c>{_COLOUR})$"),
     lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?:change|turn|switch) (?P<t>.+?) (?:to|into) (?P<c>{_COLOUR})(?: colou?r)?$"),
     lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?:paint|colou?r|dye|recolou?r|repaint|tint|shade|fill) (?P<t>.+?) "
                rf"(?:in |into |to |as |with |using |so it is |so they are )?(?:the colou?r |a |the )?(?P<c>{_COLOUR})"
                r"(?: colou?r| colou?red| paint| instead| now)?$"), lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?:make|turn|render) (?P<t>.+?) (?:in |into )?(?P<c>{_COLOUR})"
                r"(?: colou?r| colou?red| instead| now)?$"), lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^give (?P<t>.+?) (?:a |the )?(?P<c>{_COLOUR}) (?:colou?r|paint|paint job|look)$"),
     lambda m: _recolour(m["t"], m["c"])),
    (re.compile(rf"^(?P<t>.+?) should (?:be|become|turn) (?P<c>{_COLOUR})$"), lambda m: _recolour(m["t"], m["c"])),
    # extract (before delete: "remove everything but")
    (re.compile(r"^(?:delete|remove|erase|hide) everything (?:but|except|apart from|other than) (?P<t>.+)$"),
     lambda m: _edit("extract", parse_targets(m["t"]))),
    (re.compile(r"^(?:extract|isolate|(?:keep|show|display|leave|render|show me|give me) (?:only|just|nothing but|"
                r"nothing except|solely)|(?:only|just) (?:keep|show|display|leave|render|show me|give me)|"
                r"cut out|pull out|single out|focus on|zoom in on) (?P<t>.+?)(?: alone| only| by itself| on its own)?$"),
     lambda m: _edit("extract", parse_targets(m["t"]))),
    (re.compile(r"^(?:keep|show|display|leave) (?P<t>.+?) (?:only|alone|by itself|on its own)$"),
     lambda m: _edit("extract", parse_targets(m["t"]))),
    # delete
    (re.compile(r"^(?:delete|remove|erase|get rid of|take away|take out|eliminate|drop|discard|clear|hide|wipe out|"
                r"throw away|destroy) (?P<t>.+)$"),
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
    r"^(undo|redo|re do|revert|cancel|roll back|rollback|scratch|never ?mind|oops|whoops|go back|move back|take|step back|"
    r"repeat that|set|make|change|turn|switch|paint|repaint|colou?r|dye|recolou?r|tint|shade|fill|give(?! me)|render (?:it|them|"
    r"the|only|just)|delete|remove|erase|hide|extract|isolate|keep|only|(?:show|display)(?: me)? (?:only|just|nothing)|"
    r"just|leave|cut|pull|single|focus|zoom in on|get rid|get|eliminate|drop|discard|clear|wipe|throw|destroy|"
    r"accelerate|decelerate|reverse|flip|invert|have|let|send|move|do that)\b|^(?:speed|slow)\b(?! ,)"
)
GEN_STARTS = re.compile(
    r"^(?:(?:generate|create|render|build|produce|simulate|animate|show|draw|make|give|imagine|picture|i want|"
    r"i would like|id like|there is|there are|we see|i see|see|watch)(?: me| to see)?"
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
        if EDIT_STARTS.match(text) or re.search(r"\bshould\b", text):
            plan = self._edit_rules(text)
            if plan is None:
                raise UnparsedCommandError(
                    f"Could not read the edit {text!r}. Edits look like " + ", ".join(EXAMPLES[1:]) + "."
                )
            return plan
        try:
            return self._gen(text[gen.end():] if gen else text)
        except UnparsedCommandError:
            plan = self._edit_rules(text)  # "show the ball only": a GEN opening, an edit's form
            if plan is None:
                raise
            return plan

    @staticmethod
    def _edit_rules(text: str) -> Plan | None:
        """The plan of the first edit rule ``text`` fits, or None."""
        for pattern, build in _EDIT_RULES:
            match = pattern.match(text)
            if match:
                plan = build(match)
                if plan is not None:
                    return plan
        return None

    # ----- GEN
    def _gen(self, text: str) -> Plan:
        """A GEN plan: the sentence cut into clauses (:func:`split_clauses`), each an object (or several
        joined by "and") that moves ("NP <motion verb> M") or stays where it is ("NP stays still"); the
        movers first, at most three objects."""
        words = [w for w in text.split()]
        movers: list[tuple[list[str], str, dict]] = []  # (noun phrase words, verb stem, motion)
        still_phrases: list[list[str]] = []
        scene_words: list[str] = []
        for clause in split_clauses(words):
            still_at, verb_at = _still_index(clause), _verb_index(clause)
            if still_at is not None and (verb_at is None or still_at < verb_at):
                subject, _ = _subject(clause[:still_at])
                still_phrases += _noun_phrases(subject)
                continue
            if verb_at is None:
                raise UnparsedCommandError(
                    f"Could not read {' '.join(clause)!r} as a scene or an edit. A scene names an object and how it "
                    f"moves, e.g. {EXAMPLES[0]}; edits look like {', '.join(EXAMPLES[1:4])}."
                )
            subject, before = _subject(clause[:verb_at])
            stem = VERB_STEM_OF[clause[verb_at]]
            tail = clause[verb_at + 1 :]
            motion, used = _scan_motion(tail)
            for kind, value in before.items():
                if motion.setdefault(kind, value) != value:
                    raise UnparsedCommandError(f"The command gives two {kind}s ({motion[kind]!r} and {value!r}) "
                                               "for one object; give one.")
            if "direction" not in motion and stem in VERB_DIRECTIONS:
                motion["direction"] = VERB_DIRECTIONS[stem]
            if "direction" not in motion:
                raise UnparsedCommandError(
                    f"Say which way the {' '.join(subject[-1:]) or 'object'} moves, e.g. 'from left to right', "
                    f"'from right to left', 'upward', 'downward' or 'toward the top right'."
                )
            movers += [(phrase, stem, motion) for phrase in _noun_phrases(subject)]
            scene_words += [word for word, taken in zip(tail, used) if not taken and word not in STOP_WORDS
                            and word not in MANNER_WORDS and word not in VERB_STEM_OF and word not in INTENSIFIERS
                            and word != ","]
        if not movers:
            raise UnparsedCommandError(f"Nothing in {text!r} moves; say how one object moves, e.g. {EXAMPLES[0]}.")
        if len(movers) + len(still_phrases) > 3:
            raise UnparsedCommandError("A scene has at most three objects; describe fewer.")
        first = movers[0][2]["direction"]
        if first in ("reverse", "same"):
            raise UnparsedCommandError("Say which way the first object moves before 'the other way' or 'the same way'.")
        objects = []
        for phrase, stem, motion in movers:
            direction = {"reverse": OPPOSITE[first], "same": first}.get(motion["direction"], motion["direction"])
            objects.append(self._noun_phrase(phrase, (direction, motion.get("speed", "steadily"),
                                                      "arc" if stem in ARC_STEMS else "straight")))
        objects += [self._noun_phrase(phrase, None, still=True) for phrase in still_phrases]
        for word in scene_words:
            if not re.fullmatch(r"[a-z]+", word):
                raise UnparsedCommandError(f"Could not read {word!r} in {text!r}.")
        return Plan("GEN", objects=tuple(objects), scene_words=tuple(dict.fromkeys(scene_words))[:8])

    def _noun_phrase(self, words: list[str], motion, still: bool = False) -> GenObject:
        words = [w for w in words if w not in DETERMINERS and w not in ("one", "another")]
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


@functools.lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
    """Every word the grammar reads: its word lists (nouns with their plurals, colours, sizes, verb forms,
    motion, stillness and filler words) and the words its rules spell."""
    phrases = [*COLOUR_WORDS, *COLOUR_SYNONYMS, *NOUN_SHAPES, *(f"{noun}s" for noun in NOUN_SHAPES), *SIZE_WORDS,
               *VERB_STEM_OF, *STILL_VERBS, *STILL_WORDS, *REVERSE_PHRASES, *SAME_PHRASES, *INTENSIFIERS,
               *MOTION_FILLER, *MANNER_WORDS, *STOP_WORDS, *DETERMINERS, *PRONOUNS,
               *(phrase for table in (_DIRECTION_PHRASES, SPEED_PHRASES) for group in table.values() for phrase in group)]
    rules = [GEN_STARTS, EDIT_STARTS, _POLITE, _NOT_MOVING, *(pattern for pattern, _ in _EDIT_RULES)]
    words = {word for phrase in phrases for word in re.findall(r"[a-z]+", phrase)}
    for rule in rules:  # an optional letter ("colou?r") spells both words
        source = re.sub(r"\\.", " ", rule.pattern)
        for spelling in (re.sub(r"([a-z])\?", "", source), re.sub(r"([a-z])\?", r"\1", source)):
            words |= set(re.findall(r"[a-z]{2,}", spelling))
    return frozenset(words)


def unknown_words(text: str, names=()) -> list[str]:
    """Words of a command that neither the grammar (:func:`lexicon`) nor the scene's object ``names`` know, by
    the studio-wide vocabulary policy (:func:`pipelines.vocabulary.check_text`); hex colours are values, not words."""
    from ..vocabulary import check_text

    text = re.sub(r"#[0-9a-f]{3,6}\b", " ", normalise(str(text)))
    if not re.search(r"[a-z0-9]", text):
        return []
    known = lexicon() | {word for name in names for word in str(name).lower().split()}
    return check_text(text, known=known, nouns=(), closed=False).unknown


def naming_unknown_words(error: InvalidInputError, command: str, names=()) -> InvalidInputError:
    """``error`` (a command that could not be read or names nothing in the scene) with the command's unknown
    words named first, as the same type; ``error`` itself when every word is known."""
    unknown = unknown_words(command, names)
    if not unknown:
        return error
    words = ", ".join(f"'{word}'" for word in unknown)
    return type(error)(f"Morpho4D does not know the word{'s' if len(unknown) > 1 else ''} {words}. {error}")


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
