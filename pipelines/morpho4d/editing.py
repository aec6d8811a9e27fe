"""Editing a Scene4D by feature similarity, thesis 11.3.3 (eq. 11.13-11.14).

1. **Query and alternatives.** A text query (e.g. "red circle") is matched against the scene's object
   names: an object matches when its name contains every word of the query ("circle" matches every
   circle). The *alternatives* are the names that do not match, "background" included. No match
   raises :class:`NoMatchError` naming the objects that exist; the scene is left unchanged.
2. **Probabilities (eq. 11.13-11.14).** With ``s_tau = cos(f_j, q(tau))`` for each matched name and each
   alternative, ``p(query | j) = sum_matched exp(s_m / temp) / sum_tau exp(s_tau / temp)``: a query is the
   set of names it matched. ("blue" in a scene of a blue and a purple circle is the softmax mass of "blue
   circle" against "purple circle" and "background"; the bare word's embedding is about as close to
   "purple circle" as to "blue circle" in a word-sum space, and selected nothing: best p 0.81.) The
   thesis writes the softmax of raw cosines (temp = 1); since cosines lie in [-1, 1], that caps p near
   ``e / (e + k e^-1)`` and its own code's thresholds 0.85-0.95 would select nothing, so a
   temperature (default 0.1; a feature space may bring its own, e.g. CLIP's 1 / logit scale) sharpens it;
   temp = 1 is the literal equation.
3. **Threshold search.** The thesis renders candidate edits over thresholds and keeps the one that
   best matches the intent (its code scans 0.85-0.95; an LLM judges). Here the judge needs no
   remote model: for every candidate threshold the selection is rendered as an extra channel next to
   the features, in one pass per view (home camera, first / middle / last frame); a pixel's
   *relevance* is the query probability of its rendered feature times its alpha, its *coverage* the
   share of its colour the selection contributes (occlusion included); the score is the soft IoU
   sum(min) / sum(max) over all views (:func:`_score_thresholds`). The best score wins; ties go to
   the higher threshold. If the object is seen in no view, the middle threshold is used.
4. **Operations**, on the selected Gaussians, the same in every frame because a Gaussian keeps its
   identity over time: ``recolour`` (assign an RGB colour), ``multiply`` (scale RGB per channel),
   ``delete`` (drop them), ``extract`` (keep only them).
5. **Non-destructive edits.** :class:`EditSession` keeps the original scene and a list of
   :class:`Edit` (operation + the selection mask over the original Gaussians); the current scene is
   recomputed from the original by replaying the list up to a cursor, so undo and redo are exact.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import InvalidInputError
from ..shapesworld.vocab import COLOURS
from .queries import BACKGROUND, QueryEncoder, encoder_for
from .rendering import render
from .scene import Scene4D, rgb_to_sh, sh_to_rgb

OPERATIONS: tuple[str, ...] = ("recolour", "multiply", "delete", "extract")
# The thesis' code scans thresholds 0.85-0.95; candidates from high to low.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.95, 0.93, 0.91, 0.89, 0.87, 0.85)
TEMPERATURE = 0.1
# Longest side of the views the threshold search renders.
SCORE_VIEW_SIZE = 64
MAX_HISTORY = 64

# Colour names a user may type: the ShapesWorld palette and a few common ones (RGB 0-255).
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    **COLOURS,
    "white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128),
    "pink": (240, 130, 180), "cyan": (0, 200, 220), "magenta": (220, 0, 200), "brown": (140, 85, 40),
}


class NoMatchError(InvalidInputError):
    """A query selects no Gaussians; the message names the objects the scene has."""


def parse_colour(value, *, allow_factor: bool = False) -> tuple[float, float, float]:
    """RGB in [0, 1] from a name (``NAMED_COLOURS``), ``#rgb`` / ``#rrggbb``, ``rgb(r, g, b)`` /
    ``rgba(...)`` or ``"r, g, b"`` in 0-255, or an RGB sequence in [0, 1]. With ``allow_factor``
    (for "multiply"), a single number in [0, 4] scales all channels and sequences may exceed 1."""
    if isinstance(value, (tuple, list, np.ndarray)):
        rgb = np.asarray(value, dtype=np.float64).reshape(-1)
        top = 4.0 if allow_factor else 1.0
        if rgb.shape != (3,) or not np.isfinite(rgb).all() or rgb.min() < 0 or rgb.max() > top:
            raise InvalidInputError(f"A colour is three numbers in [0, {top:g}], got {value!r}.")
        return tuple(float(c) for c in rgb)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError("No colour was given; type a name such as 'blue' or a hex code such as '#2a5ae1'.")
    text = value.strip().lower()
    if text in NAMED_COLOURS:
        return tuple(c / 255.0 for c in NAMED_COLOURS[text])
    hex_match = re.fullmatch(r"#?([0-9a-f]{3}|[0-9a-f]{6})", text)
    if hex_match and (text.startswith("#") or len(text) == 6):
        digits = hex_match.group(1)
        digits = "".join(d * 2 for d in digits) if len(digits) == 3 else digits
        return tuple(int(digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    numbers = re.fullmatch(r"(?:rgba?\()?\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)?", text)
    if numbers:
        rgb = [float(n) for n in numbers.groups()]
        if all(0 <= c <= 255 for c in rgb):
            return tuple(c / 255.0 for c in rgb)
    if allow_factor and re.fullmatch(r"[\d.]+", text):
        factor = float(text)
        if 0 <= factor <= 4:
            return (factor, factor, factor)
    raise InvalidInputError(
        f"Unknown colour {value!r}. Use a name ({', '.join(sorted(NAMED_COLOURS))}), a hex code such as "
        "'#2a5ae1', or 'r, g, b' in 0-255" + (", or a factor in [0, 4] for multiply." if allow_factor else ".")
    )


def existing_objects(scene: Scene4D) -> str:
    """The scene's object names for messages: "background, red circle and blue square"."""
    names = list(scene.object_names) or ["(no named objects)"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True)
class QueryMatch:
    """A query resolved against a scene's object names (module docstring, step 1)."""

    query: str
    words: tuple[str, ...]
    matched: tuple[str, ...]
    alternatives: tuple[str, ...]
    query_vector: np.ndarray  # [D]
    alternative_vectors: np.ndarray  # [A, D]
    # [M, D]: the embeddings of the matched names, the query's side of eq. 11.13 (step 2).
    matched_vectors: np.ndarray | None = None

    @property
    def positives(self) -> np.ndarray:
        """The query side of eq. 11.13: the matched names' embeddings (the query's own if none are given)."""
        return self.query_vector[None] if self.matched_vectors is None else self.matched_vectors


def match_query(scene: Scene4D, query: str, encoder: QueryEncoder | None = None) -> QueryMatch:
    """Resolve ``query`` against ``scene``; raises :class:`NoMatchError` naming the existing objects."""
    encoder = encoder or encoder_for(scene.feature_space)
    words = encoder.words(query)
    names = list(scene.object_names)
    matched = [name for name in names if set(words) <= set(encoder.words(name))]
    if not matched:
        raise NoMatchError(
            f"Nothing in this scene matches {query!r}. It has: {existing_objects(scene)}. The scene is unchanged."
        )
    alternatives = [name for name in names if name not in matched]
    if BACKGROUND not in names and BACKGROUND not in matched:
        alternatives.append(BACKGROUND)
    dim = scene.feature_dim
    return QueryMatch(
        query=query,
        words=words,
        matched=tuple(matched),
        alternatives=tuple(alternatives),
        query_vector=encoder.encode(" ".join(words)),
        alternative_vectors=np.stack([encoder.encode(name) for name in alternatives]) if alternatives
        else np.zeros((0, dim), np.float32),
        matched_vectors=np.stack([encoder.encode(name) for name in matched]),
    )


def gaussian_probabilities(features, query_vector, alternative_vectors, temperature: float = TEMPERATURE):
    """p(query | j) of eq. 11.13 from the cosine similarities of eq. 11.14 (any leading shape ``[..., D]``).
    ``query_vector`` is one embedding ``[D]`` or the embeddings of the objects a query names ``[M, D]``; the
    query's probability is then the softmax mass of those M entries."""
    if temperature <= 0:
        raise InvalidInputError(f"The temperature must be positive, got {temperature!r}.")
    features = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    positives = np.asarray(query_vector).reshape(-1, np.shape(query_vector)[-1])
    candidates = torch.as_tensor(np.concatenate([positives, np.asarray(alternative_vectors)]), dtype=torch.float32)
    if features.shape[-1] != candidates.shape[-1]:
        raise InvalidInputError(
            f"The scene's features have dimension {features.shape[-1]} but the query's has {candidates.shape[-1]}."
        )
    cosine = torch.nn.functional.normalize(features, dim=-1) @ torch.nn.functional.normalize(candidates, dim=-1).T
    return torch.softmax(cosine / temperature, dim=-1)[..., : len(positives)].sum(-1).numpy()


@dataclass
class Selection:
    """The Gaussians chosen for a query, with the threshold search's record."""

    match: QueryMatch
    mask: np.ndarray  # bool [N]
    probabilities: np.ndarray  # float32 [N]
    threshold: float
    # Score of each candidate threshold (IoU, module docstring).
    scores: dict[float, float] = field(default_factory=dict)
    seconds: float = 0.0


def score_views(scene: Scene4D) -> list[tuple]:
    """(camera, t) pairs the threshold search renders: the home camera, first/middle/last frame."""
    camera = scene.camera
    scale = SCORE_VIEW_SIZE / max(camera.width, camera.height)
    if scale < 1:
        camera = camera.resized(max(1, round(camera.width * scale)), max(1, round(camera.height * scale)))
    times = sorted({0.0, float((scene.n_frames - 1) // 2), float(scene.n_frames - 1)})
    return [(camera, t) for t in times]


def select(
    scene: Scene4D,
    query: str,
    *,
    encoder: QueryEncoder | None = None,
    thresholds=None,
    temperature: float | None = None,
    views: list[tuple] | None = None,
) -> Selection:
    """Select the Gaussians of ``query`` (module docstring, steps 1-3). Raises :class:`NoMatchError` if
    the query names no object here or no Gaussian passes any threshold. ``thresholds`` default to the feature
    space's own (an encoder's ``thresholds``), else :data:`DEFAULT_THRESHOLDS`."""
    start = time.perf_counter()
    encoder = encoder or encoder_for(scene.feature_space)
    if thresholds is None:
        thresholds = getattr(encoder, "thresholds", DEFAULT_THRESHOLDS)
    thresholds = sorted({float(t) for t in thresholds}, reverse=True)
    if not thresholds or not all(0.0 < t < 1.0 for t in thresholds):
        raise InvalidInputError(f"Thresholds are probabilities in (0, 1), got {thresholds!r}.")
    if temperature is None:  # the feature space's own (CLIP's 1 / logit scale), else TEMPERATURE
        temperature = float(getattr(encoder, "temperature", TEMPERATURE))
    match = match_query(scene, query, encoder)
    probabilities = gaussian_probabilities(scene.features, match.positives, match.alternative_vectors, temperature)
    candidates = np.stack([probabilities >= t for t in thresholds], axis=1)  # [N, K]
    if not candidates.any():
        raise NoMatchError(
            f"No Gaussian is close enough to {query!r} (best probability {float(probabilities.max(initial=0)):.2f}, "
            f"lowest threshold {thresholds[-1]}). The scene has: {existing_objects(scene)}. The scene is unchanged."
        )
    scores = _score_thresholds(scene, match, candidates, temperature, views or score_views(scene))
    if max(scores) > 0:
        best = max(range(len(thresholds)), key=lambda i: (scores[i], thresholds[i]))
    else:  # the object is not seen from the scoring views
        best = len(thresholds) // 2
    mask = candidates[:, best]
    if not mask.any():
        best = int(np.nonzero(candidates.any(axis=0))[0][0])
        mask = candidates[:, best]
    return Selection(
        match=match,
        mask=mask,
        probabilities=probabilities,
        threshold=thresholds[best],
        scores=dict(zip(thresholds, scores)),
        seconds=time.perf_counter() - start,
    )


def _score_thresholds(scene, match, candidates, temperature, views) -> list[float]:
    """Soft IoU between rendered selections and the rendered feature field's relevance, per threshold.

    Per pixel, a selection *covers* the fraction of the pixel's colour its Gaussians contribute (its
    indicator rendered like a colour, occlusion included) and the pixel's *relevance* is the query
    probability of its rendered feature times its alpha; the score is sum(min) / sum(max) over the
    views' pixels. Missing Gaussians inside an object lower the coverage, and extra ones elsewhere
    raise it where relevance is low, so both lower the score.
    """
    # Extra channels: a ones column (renders to the alpha map) and one indicator per threshold.
    extra = torch.from_numpy(np.concatenate([np.ones((len(candidates), 1)), candidates], axis=1).astype(np.float32))
    intersections = np.zeros(candidates.shape[1])
    unions = np.zeros(candidates.shape[1])
    dim = scene.feature_dim
    for camera, t in views:
        image = render(scene, camera, t, "features", extra_values=extra).cpu().numpy()
        features, alpha, covered = image[..., :dim], image[..., dim], np.clip(image[..., dim + 1 :], 0.0, 1.0)
        p = gaussian_probabilities(features, match.positives, match.alternative_vectors, temperature)
        relevance = (p * np.clip(alpha, 0.0, 1.0))[..., None]
        intersections += np.minimum(covered, relevance).sum(axis=(0, 1))
        unions += np.maximum(covered, relevance).sum(axis=(0, 1))
    return [float(i / u) if u > 0 else 0.0 for i, u in zip(intersections, unions)]


@dataclass(frozen=True)
class Edit:
    """One operation over a selection of the original scene's Gaussians."""

    operation: str
    query: str
    # bool [N_original]: the Gaussians it acts on.
    mask: np.ndarray
    # RGB (recolour) or per-channel factors (multiply); None for delete / extract.
    colour: tuple[float, float, float] | None = None
    threshold: float = float("nan")
    seconds: float = 0.0

    def describe(self) -> str:
        what = {"recolour": "recoloured", "multiply": "tinted", "delete": "deleted", "extract": "extracted"}[self.operation]
        colour = f" to {_hex(self.colour)}" if self.operation == "recolour" else (
            f" by {tuple(round(c, 3) for c in self.colour)}" if self.operation == "multiply" else "")
        return f"{what} {self.query!r}{colour}: {int(self.mask.sum()):,} Gaussians (threshold {self.threshold:.2f})"


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(round(min(max(c, 0), 1) * 255)):02x}" for c in rgb)


def apply_edits(base: Scene4D, edits) -> tuple[Scene4D, np.ndarray]:
    """Replay ``edits`` on ``base``: the edited scene and the bool mask of surviving original Gaussians.
    Gaussians no edit touches keep every value bit for bit."""
    sh_dc = base.sh_dc.copy()
    alive = np.ones(base.n_gaussians, dtype=bool)
    for edit in edits:
        if edit.mask.shape != alive.shape:
            raise InvalidInputError("An edit's mask does not fit this scene.")
        if edit.operation == "recolour":
            sh_dc[edit.mask] = rgb_to_sh(np.asarray(edit.colour, np.float32))
        elif edit.operation == "multiply":
            sh_dc[edit.mask] = rgb_to_sh(sh_to_rgb(sh_dc[edit.mask]) * np.asarray(edit.colour, np.float32))
        elif edit.operation == "delete":
            alive &= ~edit.mask
        elif edit.operation == "extract":
            alive &= edit.mask
        else:
            raise InvalidInputError(f"Unknown operation {edit.operation!r}; expected one of {OPERATIONS}.")
    edited = replace(base, sh_dc=sh_dc) if any(e.operation in ("recolour", "multiply") for e in edits) else base
    return edited.subset(alive), alive


class EditSession:
    """An original scene, a list of edits and a cursor: the non-destructive editor behind the tab."""

    def __init__(self, base: Scene4D, encoder: QueryEncoder | None = None) -> None:
        self.base = base
        self.encoder = encoder
        self.edits: list[Edit] = []
        self.cursor = 0
        self._cache: tuple[int, Scene4D, np.ndarray] | None = None

    # ----- state
    def _current(self) -> tuple[Scene4D, np.ndarray]:
        if self._cache is None or self._cache[0] != self.cursor:
            scene, alive = apply_edits(self.base, self.edits[: self.cursor])
            self._cache = (self.cursor, scene, alive)
        return self._cache[1], self._cache[2]

    @property
    def scene(self) -> Scene4D:
        """The scene with the edits up to the cursor applied."""
        return self._current()[0]

    @property
    def alive(self) -> np.ndarray:
        """bool [N_original]: original Gaussians present in :attr:`scene`."""
        return self._current()[1]

    @property
    def can_undo(self) -> bool:
        return self.cursor > 0

    @property
    def can_redo(self) -> bool:
        return self.cursor < len(self.edits)

    def history(self) -> list[str]:
        """One line per edit; undone ones are marked."""
        return [("" if i < self.cursor else "(undone) ") + edit.describe() for i, edit in enumerate(self.edits)]

    def last_selection(self) -> np.ndarray:
        """bool over :attr:`scene`'s Gaussians: those the last applied edit acted on (still present)."""
        if self.cursor == 0:
            return np.zeros(self.scene.n_gaussians, dtype=bool)
        return self.edits[self.cursor - 1].mask[self.alive]

    # ----- actions
    def preview(self, query: str, **kwargs) -> Selection:
        """The selection ``query`` would make now (nothing changes)."""
        return select(self.scene, query, encoder=self.encoder, **kwargs)

    def apply(self, operation: str, query: str, colour=None, **kwargs) -> Edit:
        """Select ``query`` in the current scene and push ``operation`` on it (dropping any redo steps).
        Raises :class:`InvalidInputError` (unknown operation or colour) or :class:`NoMatchError`, leaving
        the session unchanged."""
        if operation not in OPERATIONS:
            raise InvalidInputError(f"Unknown operation {operation!r}; expected one of {OPERATIONS}.")
        rgb = None
        if operation in ("recolour", "multiply"):
            rgb = parse_colour(colour, allow_factor=operation == "multiply")
        if self.cursor >= MAX_HISTORY:
            raise InvalidInputError(f"At most {MAX_HISTORY} edits are kept; undo some or export the scene.")
        selection = select(self.scene, query, encoder=self.encoder, **kwargs)
        mask = np.zeros(self.base.n_gaussians, dtype=bool)
        mask[np.nonzero(self.alive)[0][selection.mask]] = True
        edit = Edit(operation, query, mask, rgb, selection.threshold, selection.seconds)
        del self.edits[self.cursor :]
        self.edits.append(edit)
        self.cursor += 1
        return edit

    def undo(self) -> Edit:
        if not self.can_undo:
            raise InvalidInputError("Nothing to undo.")
        self.cursor -= 1
        return self.edits[self.cursor]

    def redo(self) -> Edit:
        if not self.can_redo:
            raise InvalidInputError("Nothing to redo.")
        self.cursor += 1
        return self.edits[self.cursor - 1]
