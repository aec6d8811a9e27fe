"""Language to trajectory: thesis 11.3.2, "Bounding Box Definition" and "Frame-Wise Bounding Box Allocation".

For each object of a GEN plan (:class:`~.plan.GenObject`):

1. **Key points from the direction words.** The direction's unit vector (ShapesWorld's
   ``DIRECTIONS``, image coordinates, y down) gives the line through the frame's centre, and its two
   key points (x_1, y_1), (x_L, y_L) are where that line leaves the room a box of side ``side`` has
   (a margin inside the frame). Nominally the object crosses between them in the clip's T - 1
   frame steps: velocity v = |(x_L - x_1, y_L - y_1)| / (T - 1).
2. **Speed-dependent spacing.** The displacement between consecutive boxes is scaled by
   lambda(v): ``x_{i+1} = x_i + lambda * (x_{i+1} - x_i)`` with lambda from the speed word
   (:data:`SPEED_LAMBDA`: slowly 0.35, steadily 0.6, quickly 1.0), so fast objects get boxes spaced
   farther apart; the shortened path is placed at a seeded position along its line (and across it),
   inside the frame.
3. **Path kind.** "bounces" (and hop/jump) follows an arc above the chord (height
   :data:`ARC_HEIGHT` x chord, lowered if it would leave the frame); others a straight line.
4. **Boxes (eq. 10.4 = B_i of 11.3.2).** Each point becomes the box ``|x - x_i| <= Delta_x,
   |y - y_i| <= Delta_y`` with Delta = side / 2, the side from the object's size word
   (:data:`SIZE_SIDES`). The result is Mojito's :class:`~pipelines.mojito.trajectory.Trajectory`
   (one keyframe per frame), so the same per-frame boxes guide Mojito's generator.

A still object gets a two-keyframe trajectory that holds one box, placed clear of the mover's boxes.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from ..mojito.trajectory import Keyframe, Trajectory, trajectory_from_points
from ..shapesworld.vocab import DIRECTIONS, SPEEDS
from .plan import GenObject

# lambda(v) of the frame-wise allocation: the fraction of the full crossing travelled in the clip.
SPEED_LAMBDA: dict[str, float] = {"slowly": 0.35, "steadily": 0.6, "quickly": 1.0}
# Box side (fraction of the frame) per size word.
SIZE_SIDES: dict[str, float] = {"small": 0.16, "medium": 0.2, "large": 0.26}
# Arc height over the chord for bouncing objects.
ARC_HEIGHT = 0.25
# Boxes keep this far (fraction of the frame) inside the frame.
MARGIN = 0.02
# Gap between a still object's box and every box of the mover (fraction of the frame).
STILL_GAP = 0.04
MAX_TRIES = 200


def object_name(obj: GenObject) -> str:
    """The phrase an object is known by in prompts and scenes: "red circle" if it has a ShapesWorld
    colour and shape, else its phrase."""
    from ..shapesworld.vocab import COLOURS

    if obj.shape is not None and obj.colour in COLOURS:
        return f"{obj.colour} {obj.shape}"
    return obj.phrase


def _check(obj: GenObject, n_frames: int) -> None:
    if not isinstance(n_frames, (int, np.integer)) or isinstance(n_frames, bool) or not 2 <= n_frames <= 64:
        raise InvalidInputError(f"n_frames must be an integer in [2, 64], got {n_frames!r}.")
    if obj.path != "still" and (obj.direction not in DIRECTIONS or obj.speed not in SPEEDS):
        raise InvalidInputError(f"A moving object needs a direction and a speed; got {obj.direction!r}, {obj.speed!r}.")


def path_points(obj: GenObject, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Centres ``[n_frames, 2]`` (fractions) of a moving object's boxes (module docstring, steps 1-3)."""
    _check(obj, n_frames)
    side = SIZE_SIDES[obj.size]
    half_room = 0.5 - side / 2 - MARGIN
    unit = np.asarray(DIRECTIONS[obj.direction], dtype=np.float64)
    normal = np.array([unit[1], -unit[0]])
    if normal[1] > 0 or (normal[1] == 0 and normal[0] < 0):
        normal = -normal  # arcs bulge upward (or, for vertical motion, to the right)
    # 1. Key points where the centre line leaves the room; nominal crossing in T - 1 steps.
    reach = half_room / np.abs(unit).max()
    first, last = 0.5 - unit * reach, 0.5 + unit * reach
    # 2. Speed-dependent spacing: x_{i+1} = x_i + lambda * (x_{i+1} - x_i).
    lam = SPEED_LAMBDA[obj.speed]
    steps = np.linspace(0.0, 1.0, n_frames)[:, None]
    chord = lam * (last - first)
    arc = ARC_HEIGHT * lam * 2 * reach if obj.path == "arc" else 0.0
    offsets = steps * chord + (4.0 * steps * (1.0 - steps)) * arc * normal
    # Place the path: seeded position of its start within the room, so every box stays inside.
    low = 0.5 - half_room - offsets.min(axis=0)
    high = 0.5 + half_room - offsets.max(axis=0)
    if np.any(low > high + 1e-9):  # an arc too high for the room: flatten it until it fits
        scale = 1.0
        while np.any(low > high + 1e-9) and scale > 0:
            scale -= 0.1
            offsets = steps * chord + (4.0 * steps * (1.0 - steps)) * arc * max(scale, 0.0) * normal
            low = 0.5 - half_room - offsets.min(axis=0)
            high = 0.5 + half_room - offsets.max(axis=0)
    start = low + rng.uniform(0.0, 1.0, 2) * np.maximum(high - low, 0.0)
    return start + offsets


def plan_trajectories(objects, n_frames: int, seed: int = 0) -> dict[str, Trajectory]:
    """Trajectories (one per object, by :func:`object_name`) of a GEN plan's objects."""
    rng = np.random.default_rng([int(seed), 11])
    out: dict[str, Trajectory] = {}
    mover_boxes: list[np.ndarray] = []
    for obj in objects:
        name = object_name(obj)
        if name in out:
            raise InvalidInputError(f"Two objects are called {name!r}; give them different colours or shapes.")
        side = SIZE_SIDES[obj.size]
        if obj.path != "still":
            trajectory = trajectory_from_points(name, path_points(obj, n_frames, rng), side / 2)
            mover_boxes.append(trajectory.boxes(n_frames))
        else:
            trajectory = _still_trajectory(name, side, n_frames, np.concatenate(mover_boxes) if mover_boxes
                                           else np.zeros((0, 4)), rng)
        out[name] = trajectory
    return out


def _still_trajectory(name: str, side: float, n_frames: int, avoid: np.ndarray, rng) -> Trajectory:
    lo, hi = MARGIN + side / 2, 1 - MARGIN - side / 2
    for _ in range(MAX_TRIES):
        x, y = rng.uniform(lo, hi, 2)
        box = (x - side / 2, y - side / 2, x + side / 2, y + side / 2)
        apart = [box[2] + STILL_GAP <= b[0] or b[2] + STILL_GAP <= box[0] or box[3] + STILL_GAP <= b[1]
                 or b[3] + STILL_GAP <= box[1] for b in avoid]
        if all(apart):
            return Trajectory(name, (Keyframe(0, box), Keyframe(n_frames - 1, box)))
    raise InvalidInputError(f"No place for the still {name!r} clear of the moving object's path; "
                            "try a smaller object or another direction.")


def path_direction(points: np.ndarray) -> np.ndarray:
    """Unit vector of a path's overall displacement (last minus first point); zeros if it does not move."""
    delta = np.asarray(points[-1], dtype=np.float64) - np.asarray(points[0], dtype=np.float64)
    norm = np.linalg.norm(delta)
    return delta / norm if norm > 1e-9 else np.zeros_like(delta)
