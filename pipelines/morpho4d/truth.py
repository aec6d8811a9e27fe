"""Truth-based edit metrics: how well a text query's selection (thesis eq. 11.13-11.14) finds the object.

The selection an edit acts on is judged against the world's truth, never against the masks a method was
taught with:

1. **Truth masks** ``[T, H, W]`` (0 = background, k = object k of ``names``) from the ShapesWorld renderer's
   own drawing: for a ShapesWorld video its objects' masks (:func:`video_truth`); for a GEN plan the
   renderer's shapes along the plan's trajectory boxes, the first object on top as the stand-in draws them
   (:func:`plan_truth`). On the stand-in's frames these are the frames' exact masks; on a generator's
   frames they are the layout it was asked to draw, not what it drew.
2. **The object each Gaussian was fitted to** (:func:`gaussian_truth`): the truth label of the pixels it
   draws, each pixel weighted by the Gaussian's blending weight there (``alpha_j T_j`` of eq. 11.8), summed
   over all frames from the home camera. The weights are read as the gradient of ``sum_pixels <rendered
   probe, one_hot(truth)>`` with respect to a per-Gaussian probe of zeros, one backward pass per frame.
   A Gaussian whose summed weight is under ``min_seen`` of what it would draw unoccluded (``opacity *
   2 pi sigma_1 sigma_2`` in pixels, over the frames) is unlabelled (-1) and left out of the counts: it
   is hidden (the plane under a still object, which otherwise took the object's label: 19 of 105 "purple
   circle" Gaussians of a built scene) or outside the view.
3. **Precision and recall** of a selection (bool per Gaussian) against the Gaussians of the queried
   objects: precision = |selected & truth| / |selected & labelled|, recall = |selected & truth| / |truth|.

:func:`query_set` gives the queries of a scene by colour ("red"), shape ("circle"), both ("red circle")
and synonym ("ball", "red box"); :func:`truth_edit_metrics` selects each through the editing engine
(synonyms read as the grammar reads them) and scores it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError
from ..shapesworld.render import shape_coverage
from .commands import NOUN_SHAPES
from .editing import NoMatchError, select
from .motion import object_name
from .queries import BACKGROUND
from .rendering import blend_weights
from .scene import Scene4D

# A synonym per ShapesWorld shape for the synonym queries (the grammar's NOUN_SHAPES reads them back).
SYNONYMS = {"circle": "ball", "square": "box", "triangle": "pyramid"}
QUERY_KINDS = ("colour", "shape", "both", "synonym")


def video_truth(video) -> tuple[np.ndarray, tuple[str, ...]]:
    """Truth ids ``[T, H, W]`` and names of a ShapesWorld video: its objects' own masks, later objects on top."""
    names = (BACKGROUND, *(f"{obj.colour} {obj.shape}" for obj in video.objects))
    ids = np.zeros(video.frames.shape[:3], np.int32)
    for index, obj in enumerate(video.objects, start=1):
        ids[obj.masks] = index
    return ids, names


def plan_truth(objects, boxes: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Truth ids ``[T, H, W]`` and names of a GEN plan's objects drawn by the ShapesWorld renderer along their
    trajectory ``boxes`` (fractions): a pixel is an object's where the shape covers at least half of it (the
    renderer's own rule), the first object on top (the stand-in draws the mover last)."""
    names = (BACKGROUND, *(object_name(obj) for obj in objects))
    T = len(next(iter(boxes.values())))
    ids = np.zeros((T, size, size), np.int32)
    for t in range(T):
        for k in range(len(objects), 0, -1):
            box = tuple(float(v) * size for v in boxes[names[k]][t])
            ids[t][shape_coverage(objects[k - 1].shape, box, size) >= 0.5] = k
    return ids, names


def gaussian_truth(scene: Scene4D, ids: np.ndarray, min_seen: float = 0.3) -> np.ndarray:
    """int32 ``[N]``: the truth label each Gaussian was fitted to (module docstring, step 2), -1 if unseen."""
    ids = np.asarray(ids)
    T, H, W = ids.shape
    if (scene.camera.height, scene.camera.width) != (H, W) or T != scene.n_frames:
        raise InvalidInputError(f"The truth masks are {ids.shape}; the scene has {scene.n_frames} frames of "
                                f"{scene.camera.width}x{scene.camera.height}.")
    labels = int(ids.max()) + 1
    votes = np.zeros((scene.n_gaussians, labels), np.float64)
    footprint = np.zeros(scene.n_gaussians, np.float64)
    focal = float(np.sqrt(scene.camera.K[0, 0] * scene.camera.K[1, 1]))
    flat = np.sort(scene.scales, axis=1)[:, 1:].prod(axis=1)  # the two largest axes: a splat's face
    for t in range(T):
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(ids[t].astype(np.int64)), labels)
        votes += blend_weights(scene, scene.camera, float(t), one_hot).double().numpy()
        depth = scene.camera.to_camera(scene.means_at(float(t)))[:, 2]
        footprint += scene.opacities_at(float(t)) * 2 * np.pi * flat * (focal / np.maximum(depth, 1e-6)) ** 2
    truth = votes.argmax(axis=1).astype(np.int32)
    truth[votes.sum(axis=1) < min_seen * footprint] = -1
    return truth


def precision_recall(selected: np.ndarray, truth: np.ndarray, targets) -> tuple[float, float]:
    """Precision and recall of ``selected`` (bool ``[N]``) against the Gaussians whose ``truth`` label is in
    ``targets`` (module docstring, step 3)."""
    selected = np.asarray(selected, bool)
    wanted = np.isin(truth, list(targets))
    hit = float((selected & wanted).sum())
    return hit / max(float((selected & (truth >= 0)).sum()), 1.0), hit / max(float(wanted.sum()), 1.0)


@dataclass(frozen=True)
class TruthQuery:
    """A query and the truth objects it names."""

    text: str
    kind: str  # one of QUERY_KINDS
    targets: tuple[str, ...]


def query_set(names: tuple[str, ...]) -> list[TruthQuery]:
    """For every object "colour shape" of ``names``: its colour, its shape, both, and both with the shape's
    synonym; each with the objects that have those words (distinct texts only)."""
    objects = [name for name in names if name != BACKGROUND]
    out: dict[str, TruthQuery] = {}
    for name in objects:
        colour, shape = name.split()
        for kind, text in (("colour", colour), ("shape", shape), ("both", name),
                           ("synonym", f"{colour} {SYNONYMS[shape]}")):
            words = set(text.split()) - {SYNONYMS[shape]} | ({shape} if kind == "synonym" else set())
            out.setdefault(text, TruthQuery(text, kind, tuple(o for o in objects if words <= set(o.split()))))
    return list(out.values())


def read_query(text: str) -> str:
    """A query as the grammar reads its nouns ("red ball" -> "red circle", "boxes" -> "square")."""
    words = []
    for word in text.split():
        singular = next((word[: -len(end)] for end in ("es", "s") if word.endswith(end) and word[: -len(end)] in NOUN_SHAPES),
                        word)
        words.append(NOUN_SHAPES.get(singular, singular))
    return " ".join(words)


def truth_edit_metrics(scene: Scene4D, ids: np.ndarray, names: tuple[str, ...], queries=None, encoder=None,
                       truth: np.ndarray | None = None) -> list[dict]:
    """One row per query (default :func:`query_set` of ``names``): its kind, the selection's size, precision
    and recall (0 and 0 where the engine refuses the query, with its message) against :func:`gaussian_truth` (``truth``, if already computed). ``names`` are the truth
    masks' object names; a query's truth objects are looked up in them."""
    truth = gaussian_truth(scene, ids) if truth is None else truth
    index = {name: k for k, name in enumerate(names)}
    rows = []
    for query in queries or query_set(names):
        try:
            mask, refused = select(scene, read_query(query.text), encoder=encoder).mask, ""
        except NoMatchError as error:  # the engine selects nothing: precision and recall 0
            mask, refused = np.zeros(scene.n_gaussians, bool), str(error)
        precision, recall = precision_recall(mask, truth, [index[name] for name in query.targets])
        rows.append({"query": query.text, "kind": query.kind, "targets": list(query.targets), "refused": refused,
                     "selected": int(mask.sum()), "truth_gaussians": int(np.isin(
                         truth, [index[name] for name in query.targets]).sum()),
                     "precision": round(precision, 4), "recall": round(recall, 4)})
    return rows
