"""The execution plan of a Morpho4D command, thesis eq. 11.5: ``A : L -> P = (M, Q)``.

``M`` is the routing decision, ``"GEN"`` (build a new 4D scene) or ``"EDIT"`` (change the current
one); ``Q`` are the structured queries:

* GEN: ``objects`` (each a :class:`GenObject`: the noun phrase, its colour and ShapesWorld shape if it
  has one, its direction and speed words, the path kind and a size word) and ``scene_words`` (the
  words that describe the surroundings, e.g. "crystal clear waters").
* EDIT: ``operation`` (:data:`EDIT_OPERATIONS`), ``targets`` (one or several noun phrases, articles
  dropped: "the fish and the seaweed" -> ``("fish", "seaweed")``; ``"it"`` refers back) and
  ``parameters`` (a colour for recolour, a direction and/or a speed for motion edits).

A plan is plain data: :meth:`Plan.to_dict` / :meth:`Plan.from_dict` map it to JSON that
:data:`PLAN_SCHEMA` describes, and :func:`validate_plan_dict` checks any dict (e.g. an LLM's output)
against that schema and the vocabularies below before a plan is built. Nothing in a plan is ever
evaluated; strings are looked up in closed tables.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..errors import InvalidInputError
from ..shapesworld.vocab import DIRECTIONS, SHAPES, SPEEDS

MODES: tuple[str, ...] = ("GEN", "EDIT")
EDIT_OPERATIONS: tuple[str, ...] = ("recolour", "delete", "extract", "change_direction", "change_speed", "undo", "redo")
# Direction words of a plan: ShapesWorld's phrases, plus "reverse" (the opposite of the current one) for edits.
DIRECTION_WORDS: tuple[str, ...] = (*DIRECTIONS, "reverse")
# Speed words: ShapesWorld's, plus relative ones for edits.
SPEED_WORDS: tuple[str, ...] = (*SPEEDS, "faster", "slower")
PATHS: tuple[str, ...] = ("straight", "arc", "still")
SIZES: tuple[str, ...] = ("small", "medium", "large")
# Longest phrase / target / scene word list a plan may carry.
MAX_PHRASE_CHARS = 60
MAX_ITEMS = 8

_WORD_LIST = {"type": "array", "maxItems": MAX_ITEMS,
              "items": {"type": "string", "pattern": r"^[a-z][a-z ]*$", "maxLength": MAX_PHRASE_CHARS}}

# JSON Schema (draft 2020-12) of Plan.to_dict(); also what the LLM back end is asked to emit.
PLAN_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Morpho4D plan (thesis eq. 11.5)",
    "type": "object",
    "additionalProperties": False,
    "required": ["mode"],
    "properties": {
        "mode": {"enum": list(MODES)},
        "objects": {
            "type": "array", "maxItems": 3,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["phrase"],
                "properties": {
                    "phrase": {"type": "string", "pattern": r"^[a-z][a-z ]*$", "maxLength": MAX_PHRASE_CHARS},
                    "colour": {"type": ["string", "null"], "pattern": r"^[a-z]+$", "maxLength": 20},
                    "shape": {"enum": [*SHAPES, None]},
                    "direction": {"enum": [*DIRECTIONS, None]},
                    "speed": {"enum": [*SPEEDS, None]},
                    "path": {"enum": list(PATHS)},
                    "size": {"enum": list(SIZES)},
                },
            },
        },
        "scene_words": _WORD_LIST,
        "operation": {"enum": [*EDIT_OPERATIONS, None]},
        "targets": _WORD_LIST,
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "colour": {"type": ["string", "null"], "pattern": r"^(#?[0-9a-f]{3}|#?[0-9a-f]{6}|[a-z]+)$",
                           "maxLength": 20},
                "direction": {"enum": [*DIRECTION_WORDS, None]},
                "speed": {"enum": [*SPEED_WORDS, None]},
            },
        },
    },
}


class PlanError(InvalidInputError):
    """A plan (e.g. an LLM's JSON) that does not satisfy :data:`PLAN_SCHEMA` or its mode's rules."""


@dataclass(frozen=True)
class GenObject:
    """One object of a GEN plan."""

    # The noun phrase without articles, e.g. "red ball".
    phrase: str
    # Colour word (a ShapesWorld colour or another name) or None.
    colour: str | None = None
    # The ShapesWorld shape the noun maps to ("ball" -> "circle"), None if it has none.
    shape: str | None = None
    # A key of DIRECTIONS, or None for an object that stays still.
    direction: str | None = None
    # A key of SPEEDS, or None (still objects).
    speed: str | None = None
    # "straight", "arc" (bounces) or "still".
    path: str = "straight"
    # Size word: small / medium / large.
    size: str = "medium"


@dataclass(frozen=True)
class Plan:
    """P = (M, Q) of eq. 11.5 (module docstring)."""

    mode: str
    objects: tuple[GenObject, ...] = ()
    scene_words: tuple[str, ...] = ()
    operation: str | None = None
    targets: tuple[str, ...] = ()
    # Only the keys the operation uses: colour, direction, speed.
    parameters: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_plan_dict(self.to_dict())

    def to_dict(self) -> dict:
        """JSON-ready dict in the layout of :data:`PLAN_SCHEMA` (fields of the other mode left out)."""
        if self.mode == "GEN":
            return {"mode": "GEN", "objects": [vars(o).copy() for o in self.objects],
                    "scene_words": list(self.scene_words)}
        return {"mode": self.mode, "operation": self.operation, "targets": list(self.targets),
                "parameters": dict(self.parameters)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data) -> Plan:
        """A plan from a dict, after :func:`validate_plan_dict`; raises :class:`PlanError`."""
        validate_plan_dict(data)
        if data["mode"] == "GEN":
            objects = tuple(GenObject(**o) for o in data.get("objects", ()))
            return cls("GEN", objects=objects, scene_words=tuple(data.get("scene_words", ())))
        parameters = {k: v for k, v in data.get("parameters", {}).items() if v is not None}
        return cls("EDIT", operation=data.get("operation"), targets=tuple(data.get("targets", ())),
                   parameters=parameters)

    def describe(self) -> str:
        """One line for people, e.g. "EDIT recolour fish, seaweed -> black"."""
        if self.mode == "GEN":
            parts = []
            for o in self.objects:
                motion = "stays still" if o.path == "still" else f"{o.path} {o.direction} {o.speed}"
                parts.append(f"{o.phrase} ({motion})")
            return "GEN " + "; ".join(parts) + (f" | scene: {' '.join(self.scene_words)}" if self.scene_words else "")
        params = ", ".join(f"{k}={v}" for k, v in self.parameters.items())
        return f"EDIT {self.operation} {', '.join(self.targets)}" + (f" ({params})" if params else "")


def _check_schema(data) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(PLAN_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise PlanError(f"The plan does not match the schema at {where}: {first.message[:200]}")


def validate_plan_dict(data) -> None:
    """Raise :class:`PlanError` unless ``data`` satisfies :data:`PLAN_SCHEMA` and its mode's rules:
    GEN has 1-3 objects, the first of them moving, and no edit fields; EDIT has an operation, targets
    unless it is undo/redo, a colour for recolour, a direction for change_direction, a speed for
    change_speed."""
    if not isinstance(data, dict):
        raise PlanError(f"A plan is a JSON object, got {type(data).__name__}.")
    _check_schema(data)
    if data["mode"] == "GEN":
        if any(key in data for key in ("operation", "targets", "parameters")):
            raise PlanError("A GEN plan has objects and scene words, not an operation, targets or parameters.")
        objects = data.get("objects") or []
        if not objects:
            raise PlanError("A GEN plan needs at least one object.")
        for i, o in enumerate(objects):
            still = o.get("path", "straight") == "still"
            if still != (o.get("direction") is None) or still != (o.get("speed") is None):
                raise PlanError(f"Object {i} ({o['phrase']!r}): a still object has no direction or speed, "
                                "a moving one has both.")
        if objects[0].get("path", "straight") == "still":
            raise PlanError("The first object of a GEN plan is the one that moves.")
        return
    if "objects" in data or "scene_words" in data:
        raise PlanError("An EDIT plan has an operation, targets and parameters, not objects or scene words.")
    operation, targets = data.get("operation"), data.get("targets") or []
    parameters = {k: v for k, v in (data.get("parameters") or {}).items() if v is not None}
    if operation is None:
        raise PlanError("An EDIT plan needs an operation.")
    if operation in ("undo", "redo"):
        if targets or parameters:
            raise PlanError(f"{operation} takes no targets or parameters.")
        return
    if not targets:
        raise PlanError(f"The {operation} operation needs at least one target.")
    allowed = {"recolour": {"colour"}, "delete": set(), "extract": set(),
               "change_direction": {"direction", "speed"}, "change_speed": {"speed"}}[operation]
    extra = set(parameters) - allowed
    if extra:
        raise PlanError(f"The {operation} operation takes no {', '.join(sorted(extra))}.")
    needed = {"recolour": "colour", "change_direction": "direction", "change_speed": "speed"}.get(operation)
    if needed and needed not in parameters:
        raise PlanError(f"The {operation} operation needs a {needed}.")
    for target in targets:
        if not re.fullmatch(r"[a-z][a-z ]*", target):
            raise PlanError(f"Target {target!r} is not a phrase of lower-case words.")
