"""Type a sentence, get an editable 4D scene; type edits, see them applied (thesis 11.3.2-11.3.3).

:class:`CommandSession` routes each command's plan (eq. 11.5, :mod:`.commands`):

* **GEN** -> :func:`~.generation.generate_scene`; a new scene replaces the old one.
* **EDIT** recolour / delete / extract -> the scene engine's :class:`~.editing.EditSession`
  (eq. 11.13-11.14, threshold search), one edit per target.
* **EDIT** change_direction / change_speed -> the GEN plan with that object's motion changed
  ("reverse" flips the direction; "faster" / "slower" move one speed word), regenerated along the new
  trajectory with the same seed, then the appearance edits made so far are replayed on the new scene
  (each re-selects its query there).
* **undo / redo** step over whole commands (a multi-target edit or a regeneration is one step).

**One session, one history.** The session owns the scene, its editor and the only undo history: an edit made
with the studio's buttons (:meth:`CommandSession.apply_edit`) is a step like a typed one, and undo / redo,
typed or pressed (:meth:`CommandSession.undo`), walk back and forth over both kinds alike. The session also
keeps what it started from and every step that succeeded (:attr:`CommandSession.actions`), which is the scene's
recipe: replaying them from the same origin rebuilds the same scene (:mod:`.runner`).

**Targets.** Each target phrase is mapped to the scene's vocabulary (nouns to shapes: "ball" ->
"circle", "box" -> "square"; plurals to singulars; "one" / "object" dropped) and must name at least
one object the scene has (every word of the target in the object's name, "background" included);
each object it matches is edited by its full name ("ball" -> "red circle"). "it" / "them" mean the last command's targets, or the moving object. Otherwise
:class:`UnknownTargetError` lists the objects in the scene and nothing changes: an edit is never
applied to something the user did not name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InvalidInputError
from ..shapesworld.vocab import DIRECTIONS
from .commands import NOUN_SHAPES, CommandParser, GrammarParser, UnparsedCommandError, naming_unknown_words
from .editing import Edit, EditSession, existing_objects, parse_colour
from .generation import FrameSource, GenConfig, GenResult, generate_scene
from .motion import object_name
from .plan import Plan

SPEED_ORDER = ("slowly", "steadily", "quickly")
FILLER = frozenset({"one", "ones", "object", "objects", "shape", "shapes", "thing", "things"})


class NoSceneError(InvalidInputError):
    """An edit was typed before any scene exists."""


class UnknownTargetError(InvalidInputError):
    """A target names nothing in the scene; the message lists what the scene has."""


@dataclass(frozen=True)
class AppearanceOp:
    """An appearance edit as typed (resolved query), replayed after a regeneration."""

    operation: str
    query: str
    colour: tuple[float, float, float] | None = None


@dataclass
class CommandRecord:
    """One command of the history: the plan it became and what was done."""

    command: str
    plan: dict | None
    backend: str
    outcome: str
    ok: bool
    seconds: float
    note: str = ""


@dataclass
class _State:
    gen: GenResult | None
    base: object | None
    edits: tuple[Edit, ...]
    cursor: int
    ops: tuple[AppearanceOp, ...]
    last_targets: tuple[str, ...]


class CommandSession:
    """One user's scene, its editor and its one history of typed and pressed steps (module docstring)."""

    def __init__(self, parser: CommandParser | None = None, source: FrameSource | None = None, depth_model=None,
                 config: GenConfig | None = None, manager=None) -> None:
        # What the scene started from (None: a generated scene; else e.g. {"example": {...}}) and every step
        # that succeeded since, as plain JSON: {"command": text} or {"edit": {operation, query, colour}}.
        self.origin: dict | None = None
        self.actions: list[dict] = []
        # The frame source's name in a recipe ("mojito" or "stand-in"; set by the runner that made the session).
        self.frames = "auto"
        self.parser = parser or GrammarParser()
        self.source = source
        self.depth_model = depth_model
        self.config = config or GenConfig()
        # The model manager whose preset's CLIP teaches features where the detector finds nothing (GenConfig).
        self.manager = manager
        self.gen: GenResult | None = None
        self.editor: EditSession | None = None
        self.ops: tuple[AppearanceOp, ...] = ()
        self.last_targets: tuple[str, ...] = ()
        self.history: list[CommandRecord] = []
        self._undo: list[_State] = []
        self._redo: list[_State] = []
        self._parsed = None

    # ----- state
    def load(self, scene, origin: dict | None = None, gen: GenResult | None = None) -> None:
        """Edit a scene that was not generated by a command here (an example, an opened file, or ``gen``: a
        video lifted to 4D): appearance edits work, motion edits need ``gen``. The history of the previous
        scene is dropped; ``origin`` says how to rebuild the scene (None: it cannot be rebuilt, so its recipe
        cannot be replayed)."""
        self.gen, self.editor, self.ops, self.last_targets = gen, EditSession(scene), (), ()
        self.origin, self.actions = origin, []
        self._undo.clear()
        self._redo.clear()

    @property
    def scene(self):
        return None if self.editor is None else self.editor.scene

    def _snapshot(self) -> _State:
        editor = self.editor
        return _State(self.gen, editor.base if editor else None, tuple(editor.edits) if editor else (),
                      editor.cursor if editor else 0, self.ops, self.last_targets)

    def _restore(self, state: _State) -> None:
        self.gen, self.ops, self.last_targets = state.gen, state.ops, state.last_targets
        if state.base is None:
            self.editor = None
        else:
            self.editor = EditSession(state.base)
            self.editor.edits, self.editor.cursor = list(state.edits), state.cursor

    # ----- commands
    def run(self, command: str, progress=None) -> CommandRecord:
        """Parse and execute ``command``; raises a typed error (and changes nothing) on bad input."""
        start = time.perf_counter()
        self._parsed = None
        names = self.scene.object_names if self.scene is not None else ()
        try:
            result = self._parsed = self.parser.parse(command)
        except UnparsedCommandError as error:  # say which words were not understood
            raise naming_unknown_words(error, command, names) from None
        before = self._snapshot()
        try:
            outcome = self.execute(result.plan, progress)
        except UnknownTargetError as error:
            self._restore(before)
            raise naming_unknown_words(error, command, names) from None
        except Exception:
            self._restore(before)
            raise
        if result.plan.operation not in ("undo", "redo"):
            self._undo.append(before)
            self._redo.clear()
        self.actions.append({"command": command})
        record = CommandRecord(command, result.plan.to_dict(), result.backend, outcome, True,
                               time.perf_counter() - start, result.note)
        self.history.append(record)
        return record

    def apply_edit(self, operation: str, query: str, colour=None) -> CommandRecord:
        """An edit from the buttons (query, operation, colour): one step of the same history as a typed
        command. Raises a typed error and changes nothing on bad input."""
        if self.editor is None:
            raise NoSceneError("Load an example or open a scene first.")
        start = time.perf_counter()
        before = self._snapshot()
        edit = self.editor.apply(operation, query, colour)
        self.ops += (AppearanceOp(operation, query, edit.colour),)
        self.last_targets = (query,)
        self._undo.append(before)
        self._redo.clear()
        self.actions.append({"edit": {"operation": operation, "query": query, "colour": colour}})
        record = CommandRecord(f"[{operation} {query!r}" + (f" {colour}" if colour not in (None, "") and
                                                             operation in ("recolour", "multiply") else "") + "]",
                               None, "buttons", edit.describe() + ".", True, time.perf_counter() - start)
        self.history.append(record)
        return record

    def undo(self) -> CommandRecord:
        """Take back the last step, typed or pressed (what typing "undo" does)."""
        return self.run("undo")

    def redo(self) -> CommandRecord:
        """Make the last undone step again (what typing "redo" does)."""
        return self.run("redo")

    def preview(self, query: str):
        """The selection ``query`` would make now; nothing changes."""
        if self.editor is None:
            raise NoSceneError("Load an example or open a scene first.")
        return self.editor.preview(query)

    def try_run(self, command: str, progress=None) -> CommandRecord:
        """:meth:`run` for a chat: a typed error becomes a failed record with its message."""
        start = time.perf_counter()
        try:
            return self.run(command, progress)
        except InvalidInputError as error:
            parsed = self._parsed  # set when the command parsed and failed later
            record = CommandRecord(str(command)[:300], parsed.plan.to_dict() if parsed else None,
                                   parsed.backend if parsed else getattr(self.parser, "name", "grammar"), str(error),
                                   False, time.perf_counter() - start, parsed.note if parsed else "")
            self.history.append(record)
            return record

    def execute(self, plan: Plan, progress=None) -> str:
        """Carry out ``plan``; returns what was done, in words."""
        if plan.mode == "GEN":
            return self._generate(plan, progress)
        if plan.operation == "undo":
            if not self._undo:
                raise InvalidInputError("Nothing to undo.")
            self._redo.append(self._snapshot())
            self._restore(self._undo.pop())
            return "Undid the last command."
        if plan.operation == "redo":
            if not self._redo:
                raise InvalidInputError("Nothing to redo.")
            self._undo.append(self._snapshot())
            self._restore(self._redo.pop())
            return "Redid the command."
        if self.editor is None:
            raise NoSceneError("There is no scene to edit yet. Describe one first, e.g. "
                               "'a red ball bounces quickly from right to left'.")
        names = self.resolve_targets(plan.targets)
        if plan.operation in ("change_direction", "change_speed"):
            return self._change_motion(plan, names, progress)
        operation = {"recolour": "recolour", "delete": "delete", "extract": "extract"}[plan.operation]
        colour = parse_colour(plan.parameters["colour"]) if operation == "recolour" else None
        lines = []
        for name in names:
            edit = self.editor.apply(operation, name, colour)
            self.ops += (AppearanceOp(operation, name, colour),)
            lines.append(edit.describe())
        self.last_targets = names
        return "; ".join(lines) + "."

    # ----- targets
    def resolve_targets(self, targets) -> tuple[str, ...]:
        """Scene queries for plan targets (module docstring, "Targets"); raises :class:`UnknownTargetError`."""
        scene = self.scene
        objects = [name for name in scene.object_names]
        resolved: list[str] = []
        for target in targets:
            if target in ("it", "them"):
                if self.last_targets:
                    resolved += [t for t in self.last_targets if t not in resolved]
                    continue
                if self.gen is not None:
                    resolved.append(object_name(self.gen.plan.objects[0]))
                    continue
                raise UnknownTargetError(f"Say which object {target!r} is. The scene has: {existing_objects(scene)}.")
            words = []
            for word in target.split():
                if word in FILLER:
                    continue
                singular = word[:-1] if word.endswith("s") and word[:-1] in NOUN_SHAPES else word
                words.append(NOUN_SHAPES.get(singular, singular))
            matches = [name for name in objects if words and set(words) <= set(name.split())]
            if not matches:
                raise UnknownTargetError(
                    f"There is no {target!r} in this scene. It has: {existing_objects(scene)}. The scene is unchanged."
                )
            # Each matched object by its full name: its Gaussians' features are closest to that query.
            resolved += [name for name in matches if name not in resolved]
        return tuple(resolved)

    # ----- GEN and motion edits
    def _generate(self, plan: Plan, progress=None, ops: tuple[AppearanceOp, ...] = ()) -> str:
        gen = generate_scene(plan, self.source, self.depth_model, config=self.config, progress=progress,
                             manager=self.manager)
        self.gen, self.editor, self.ops, self.last_targets = gen, EditSession(gen.scene), (), ()
        kind = "generated by" if gen.video.generated else "frames from the"
        scene = gen.scene
        text = (f"Built a 4D scene: {scene.n_gaussians:,} Gaussians over {scene.n_frames} frames; objects: "
                f"{', '.join(scene.object_names[1:])}; {kind} {gen.video.label}; features: {gen.teacher} teacher; "
                f"{sum(gen.seconds.values()):.0f} s.")
        skipped = []
        for op in ops:
            try:
                self.editor.apply(op.operation, op.query, op.colour)
                self.ops += (op,)
            except InvalidInputError as error:
                skipped.append(f"{op.operation} {op.query!r} ({error})")
        if ops:
            text += f" Replayed {len(ops) - len(skipped)} of {len(ops)} appearance edit(s)"
            text += (": skipped " + "; ".join(skipped) + ".") if skipped else "."
        return text

    def _change_motion(self, plan: Plan, names: tuple[str, ...], progress=None) -> str:
        if self.gen is None:
            raise InvalidInputError("This scene was not generated from a sentence, so its motion cannot be regenerated.")
        objects = list(self.gen.plan.objects)
        by_name = {object_name(obj): i for i, obj in enumerate(objects)}
        changed = []
        for name in names:
            index = next((i for n, i in by_name.items() if set(name.split()) <= set(n.split())), None)
            if index is None:
                raise UnknownTargetError(f"{name!r} is not an object whose motion can change (the background "
                                         f"stays put). Objects: {', '.join(by_name)}.")
            objects[index] = self._new_motion(objects[index], plan.parameters)
            changed.append(f"{object_name(objects[index])} now {objects[index].direction} {objects[index].speed}")
        if objects[0].path == "still":
            moving = [o for o in objects if o.path != "still"]
            objects = moving[:1] + [o for o in objects if o is not moving[0]]
        new_plan = replace(self.gen.plan, objects=tuple(objects))
        text = self._generate(new_plan, progress, self.ops)
        self.last_targets = names
        return "Regenerated along the new trajectory (" + "; ".join(changed) + "). " + text

    @staticmethod
    def _new_motion(obj, parameters: dict):
        direction, speed = parameters.get("direction"), parameters.get("speed")
        if direction == "reverse":
            if obj.direction is None:
                raise InvalidInputError(f"The {object_name(obj)} stays still; say which way it should move.")
            vector = -np.asarray(DIRECTIONS[obj.direction])
            direction = next(d for d, v in DIRECTIONS.items() if np.allclose(v, vector))
        if speed in ("faster", "slower"):
            if obj.speed is None:
                raise InvalidInputError(f"The {object_name(obj)} stays still; say which way it should move.")
            i = SPEED_ORDER.index(obj.speed) + (1 if speed == "faster" else -1)
            if not 0 <= i < len(SPEED_ORDER):
                raise InvalidInputError(f"The {object_name(obj)} already moves {obj.speed}, the "
                                        f"{'fastest' if speed == 'faster' else 'slowest'} speed.")
            speed = SPEED_ORDER[i]
        direction = direction or obj.direction
        if direction is None:
            raise InvalidInputError(f"The {object_name(obj)} stays still; say which way it should move.")
        path = "straight" if obj.path == "still" else obj.path
        return replace(obj, direction=direction, speed=speed or obj.speed or "steadily", path=path)
