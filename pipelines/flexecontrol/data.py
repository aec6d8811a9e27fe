"""ShapesWorld training data for FlexEControl: images, captions, condition maps, object masks and object words.

ShapesWorld knows every object's mask and its words in the caption, so the
thesis' dataset augmentation (9.2.3: an LLM parses the objects, CLIPSeg finds
their masks) is exact here: object ``j``'s mask is ``M_j`` of eq. 9.4 and its
colour and shape tokens are ``T_j`` of eq. 9.3. A parser for free text is a
hook (``object_phrases``) for the hub path.

A plain folder of pictures (:func:`folder_control_scenes`: each ``NAME.png``/``.jpg`` with its caption in
``NAME.txt`` and optional maps ``NAME.<type>.png``) trains at a real model's scale: no object masks or words
there, so only whole maps, without eq. 9.3's L_ca.

Several conditions of one training step come from one scene: a single map, or
the scene split by object (object ``a``'s map in one condition, the other
objects' in the other), which gives the homogeneous (two canny) and
heterogeneous (canny + segmentation) cases of thesis 9.3.3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from ..attention.supervision import phrase_token_sets
from ..shapesworld import sample_scene
from ..shapesworld.conditions import CONDITION_TYPES, condition_maps
from ..shapesworld.scene import ObjectTruth, Scene
from ..errors import InvalidInputError
from .conditions import from_drawing, from_upload, map_at_size, map_tensor
from .strokes import draw_objects

MAX_OBJECTS = 3
# Object masks are dilated by this many pixels before cutting a map by object, so outlines stay whole.
SPLIT_DILATION = 2


def object_phrases(scene: Scene) -> list[str]:
    """The caption's phrase for each object (ShapesWorld: "colour shape"); replace with a parser for free text."""
    return [f"{obj.colour} {obj.shape}" for obj in scene.objects]


@dataclass
class ControlScenes:
    """Training scenes with everything the FlexEControl losses need, as arrays."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    captions: list[str]
    # condition type -> uint8 [N, 3, H, W] (see ``map_batch``)
    maps: dict[str, torch.Tensor]
    # bool [N, J, H, W] object masks (J = MAX_OBJECTS; missing objects are all False)
    masks: torch.Tensor
    # float [N, J, tokens]: 1 where token i is one of object j's words (eq. 9.3's Iverson bracket)
    token_sets: torch.Tensor
    # bool [N, J]: which objects exist and were found in the caption
    valid: torch.Tensor
    # Each scene's objects (shape, colour, box, mask, depth), for maps drawn by hand (:mod:`.strokes`).
    objects: list[list[ObjectTruth]]

    def pixel_batch(self, index: np.ndarray) -> torch.Tensor:
        """Images as float [B, 3, H, W] in [-1, 1] (the interface of ``tinypack.train.encode_latents``)."""
        return torch.from_numpy(self.images[index]).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def map_batch(self, kind: str, index: np.ndarray) -> torch.Tensor:
        """Condition maps of ``kind`` as the encoder's input, float [B, 3, H, W] in [0, 1]."""
        return self.maps[kind][torch.from_numpy(index)].float() / 255.0

    def split_objects(self, index: np.ndarray, generator: torch.Generator) -> list[tuple[list[int], list[int]]]:
        """For each scene, one random present object and the rest, as object indices."""
        splits = []
        for i in index:
            present = self.valid[i].nonzero().flatten().tolist() or [0]
            pick = present[int(torch.randint(len(present), (1,), generator=generator))]
            splits.append(([pick], [j for j in range(len(self.objects[i])) if j != pick]))
        return splits

    def part_masks(self, index: np.ndarray, parts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Float ``[B, 1, H, W]``: the union of the dilated masks of objects ``parts[b]`` of scene ``index[b]``
        (used to cut a clean map by object)."""
        kernel = np.ones((2 * SPLIT_DILATION + 1,) * 2, np.uint8)
        out = []
        for i, part in zip(index, parts):
            dilated = [cv2.dilate(m.numpy().astype(np.uint8), kernel) > 0 for m in self.masks[i]]
            mask = np.any([dilated[j] for j in part], axis=0) if part else np.zeros_like(dilated[0])
            out.append(torch.from_numpy(mask))
        return torch.stack(out)[:, None].float()

    def drawn_batch(self, kind: str, index: np.ndarray, parts: Sequence[Sequence[int] | None],
                    rng: np.random.Generator) -> torch.Tensor:
        """Maps of ``kind`` drawn by hand (:func:`.strokes.draw_objects`) of objects ``parts[b]`` (None: all),
        float [B, 3, H, W] in [0, 1] as :meth:`map_batch`."""
        size = self.images.shape[1]
        maps = []
        for i, part in zip(index, parts):
            objects = self.objects[i] if part is None else [self.objects[i][j] for j in part]
            maps.append(map_tensor(from_drawing(draw_objects(objects, kind, rng, size), kind, size)))
        return torch.stack(maps)


def object_token_sets(tokenizer, scene: Scene, max_tokens: int,
                      phrases: Callable[[Scene], Sequence[str]] = object_phrases) -> tuple[torch.Tensor, torch.Tensor]:
    """``[J, max_tokens]`` token indicators per object and ``[J]`` validity (phrase found within the tokens)."""
    return phrase_token_sets(tokenizer, scene.caption, phrases(scene), max_tokens, MAX_OBJECTS)


def build_control_scenes(num_scenes: int, size: int, tokenizer, max_tokens: int, split: str = "train",
                         first_seed: int = 0) -> ControlScenes:
    """Render scenes ``first_seed ..`` of ``split`` with their maps, masks and object words."""
    images, captions, masks, sets, valid, objects = [], [], [], [], [], []
    maps: dict[str, list[torch.Tensor]] = {t: [] for t in CONDITION_TYPES}
    for seed in tqdm(range(first_seed, first_seed + num_scenes), desc="FlexEControl scenes"):
        scene = sample_scene(seed, size=size, split=split)
        images.append(scene.image)
        captions.append(scene.caption)
        objects.append(scene.objects[:MAX_OBJECTS])
        for kind, image in condition_maps(scene).items():
            maps[kind].append((map_tensor(image) * 255).round().byte())
        object_masks = np.zeros((MAX_OBJECTS, size, size), dtype=bool)
        for j, obj in enumerate(scene.objects[:MAX_OBJECTS]):
            object_masks[j] = obj.mask
        masks.append(torch.from_numpy(object_masks))
        token_set, found = object_token_sets(tokenizer, scene, max_tokens)
        sets.append(token_set)
        valid.append(found)
    return ControlScenes(
        images=np.stack(images), captions=captions, maps={k: torch.stack(v) for k, v in maps.items()},
        masks=torch.stack(masks), token_sets=torch.stack(sets), valid=torch.stack(valid), objects=objects,
    )


# Picture suffixes of a folder dataset, and the condition types extracted from a picture when it has no map of
# its own (depth and segmentation need a model or the truth: only maps given for every picture are used).
FOLDER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EXTRACTED_TYPES = ("canny", "sketch")


def _read_rgb(path: Path) -> np.ndarray:
    """A picture file as uint8 RGB; :class:`InvalidInputError` naming it when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidInputError(f"{path} is not a picture that can be read.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def folder_control_scenes(folder: str | Path, size: int, tokenizer, max_tokens: int) -> ControlScenes:
    """Training scenes from a plain folder: ``NAME.png`` (or ``.jpg``) with its caption in ``NAME.txt`` and
    optional maps ``NAME.<type>.png`` (canny, sketch, segmentation, depth), all at ``size x size``.

    Canny and sketch maps missing for a picture are extracted from it; depth and segmentation are used when
    every picture has its map. A folder has no object masks or words, so the scenes have no objects (training
    then uses whole maps only, without L_ca). Raises :class:`InvalidInputError` for a missing folder, no
    pictures, a picture without its caption, or a file that is no readable picture.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"The training folder {folder} does not exist.")
    pictures = sorted(p for p in folder.iterdir() if p.suffix.lower() in FOLDER_IMAGE_SUFFIXES and "." not in p.stem)
    if not pictures:
        raise InvalidInputError(f"{folder} has no pictures ({', '.join(FOLDER_IMAGE_SUFFIXES)} beside a .txt caption).")
    missing = [p.name for p in pictures if not p.with_suffix(".txt").is_file()]
    if missing:
        raise InvalidInputError(f"Pictures without a caption file (NAME.txt): {', '.join(missing[:5])}.")

    def given(picture: Path, kind: str) -> Path | None:
        found = [picture.with_name(f"{picture.stem}.{kind}{suffix}") for suffix in FOLDER_IMAGE_SUFFIXES]
        return next((p for p in found if p.is_file()), None)

    types = [t for t in CONDITION_TYPES if t in EXTRACTED_TYPES or all(given(p, t) for p in pictures)]
    images, captions, maps = [], [], {t: [] for t in types}
    for picture in tqdm(pictures, desc="folder pictures"):
        rgb = cv2.resize(_read_rgb(picture), (size, size), interpolation=cv2.INTER_AREA)
        images.append(rgb)
        captions.append(picture.with_suffix(".txt").read_text().strip())
        for kind in types:
            path = given(picture, kind)
            if path is None:
                image = from_upload(rgb, kind, size)
            else:
                image = map_at_size(_read_rgb(path), kind, size)
            maps[kind].append((map_tensor(image) * 255).round().byte())
    count = len(pictures)
    return ControlScenes(
        images=np.stack(images), captions=captions, maps={k: torch.stack(v) for k, v in maps.items()},
        masks=torch.zeros(count, MAX_OBJECTS, size, size, dtype=torch.bool),
        token_sets=torch.zeros(count, MAX_OBJECTS, max_tokens), valid=torch.zeros(count, MAX_OBJECTS, dtype=torch.bool),
        objects=[[] for _ in pictures],
    )
