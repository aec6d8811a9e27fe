"""CLIP and ComCLIP (thesis ch. 4, eq. 4.4-4.5) matching scores."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..shapesworld import detect, parse_caption
from .results import MatchResult
from .inputs import check_captions, check_image

Box = tuple[float, float, float, float]


class ClipMatcher:
    """Cosine similarity of CLIP's image and text embeddings (the zero-shot baseline)."""

    def __init__(self, model, processor) -> None:
        self.model = model.eval().requires_grad_(False)
        self.processor = processor

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Unit-norm image embeddings ``F(x)``, ``[N, d]``."""
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        features = self.model.get_image_features(pixel_values=pixels.to(device))
        features = getattr(features, "pooler_output", features)
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``G(y)``, ``[N, d]``."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        device = next(self.model.parameters()).device
        features = self.model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})
        features = getattr(features, "pooler_output", features)
        return F.normalize(features.float(), dim=-1)

    def score(self, image, captions: str | Sequence[str]) -> MatchResult:
        started = time.perf_counter()
        array = check_image(image)
        captions = check_captions(captions, self.tokenizer)
        sims = (self.text_embeddings(captions) @ self.image_embeddings([array]).T)[:, 0]
        return MatchResult(captions, sims.cpu().numpy().astype(np.float64), "clip",
                           seconds=time.perf_counter() - started)


@dataclass
class Entities:
    """The subject / object / predicate words of a caption (ShapesWorld grammar)."""

    subject: str
    object: str | None = None
    predicate: str | None = None


def caption_entities(caption: str) -> Entities:
    """Subject, object and predicate phrases of a ShapesWorld caption, e.g.
    ``"red circle"``, ``"blue square"``, ``"red circle left of blue square"``."""
    spec = parse_caption(caption)
    first = spec.objects[0].words
    if len(spec.objects) < 2:
        return Entities(first)
    second = spec.objects[1].words
    predicate = f"{first} {spec.relation} {second}" if spec.relation else None
    return Entities(first, second, predicate)


def _entities(caption: str) -> Entities:
    """:func:`caption_entities`, or the whole caption as the subject outside the ShapesWorld grammar."""
    try:
        return caption_entities(caption)
    except InvalidInputError:
        return Entities(caption)


def counterfactual(image: np.ndarray, boxes: Sequence[Box], pad: float = 2.0) -> np.ndarray:
    """The image with only ``boxes`` kept; the rest is filled with the median (background) colour.

    Thesis ch. 4.3.3: "what if we retain only the subject/object/predicate?".
    Positions are kept, so a predicate subimage still shows the relation.
    """
    height, width = image.shape[:2]
    keep = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        keep[max(0, int(y0 - pad)) : min(height, int(np.ceil(y1 + pad))),
             max(0, int(x0 - pad)) : min(width, int(np.ceil(x1 + pad)))] = True
    fill = np.median(image.reshape(-1, 3), axis=0).astype(image.dtype)
    out = np.empty_like(image)
    out[:] = fill
    out[keep] = image[keep]
    return out


class ComClipMatcher:
    """ComCLIP (thesis eq. 4.4-4.5): entity subimages re-weighted into the global image embedding.

    For each caption: subject and object words are matched to the detected
    boxes (``boxes`` given by the user; else ``locate(image, phrases)``, an
    open-vocabulary detector's box per entity phrase of the captions; else the
    ShapesWorld detector's objects) by CLIP similarity; counterfactual
    subimages keep only the subject, only the object, or both (the predicate). ``S_k = cos(F(subimage_k), G(words_k))``
    (eq. 4.4), weights ``softmax(S / temperature)``, ``V = F(X) + sum_k w_k
    F(subimage_k)`` (eq. 4.5), score ``cos(G(Y), V)``.
    """

    def __init__(self, clip: ClipMatcher, temperature: float = 0.1,
                 locate: Callable[[np.ndarray, list[str]], list[Box]] | None = None) -> None:
        if temperature <= 0:
            raise InvalidInputError(f"temperature must be positive, got {temperature}.")
        self.clip = clip
        self.temperature = temperature
        self.locate = locate

    def boxes_for(self, image: np.ndarray, captions: Sequence[str]) -> list[Box]:
        """Candidate entity boxes: ``locate``'s for the captions' subject and object phrases, or the
        ShapesWorld detector's objects."""
        if self.locate is None:
            return [tuple(float(v) for v in d.box) for d in detect(image)]
        phrases = list(dict.fromkeys(w for c in captions for w in (_entities(c).subject, _entities(c).object) if w))
        return list(dict.fromkeys(tuple(float(v) for v in box) for box in self.locate(image, phrases)))

    def score(self, image, captions: str | Sequence[str], boxes: Sequence[Box] | None = None) -> MatchResult:
        started = time.perf_counter()
        array = check_image(image)
        captions = check_captions(captions, self.clip.tokenizer)
        boxes = list(boxes) if boxes is not None else self.boxes_for(array, captions)
        global_image = self.clip.image_embeddings([array])[0]
        global_text = self.clip.text_embeddings(captions)
        if not boxes:  # nothing to disentangle: ComCLIP is CLIP
            sims = global_text @ global_image
            return MatchResult(captions, sims.cpu().numpy().astype(np.float64), "comclip",
                               seconds=time.perf_counter() - started)
        singles = self.clip.image_embeddings([counterfactual(array, [box]) for box in boxes])  # [K, d]
        scores = []
        for caption, text in zip(captions, global_text):
            entities = _entities(caption)
            words = [w for w in (entities.subject, entities.object) if w]
            word_embeddings = self.clip.text_embeddings(words)  # [E, d]
            chosen = (word_embeddings @ singles.T).argmax(dim=1).tolist()  # best box per entity
            parts = [singles[i] for i in chosen]
            part_words = list(word_embeddings)
            if entities.predicate and len(set(chosen)) == 2:
                both = self.clip.image_embeddings([counterfactual(array, [boxes[i] for i in chosen])])[0]
                parts.append(both)
                part_words.append(self.clip.text_embeddings([entities.predicate])[0])
            parts_t, words_t = torch.stack(parts), torch.stack(part_words)
            similarity = (parts_t * words_t).sum(dim=1)  # eq. 4.4
            weights = torch.softmax(similarity / self.temperature, dim=0)
            fused = F.normalize(global_image + (weights[:, None] * parts_t).sum(dim=0), dim=0)  # eq. 4.5
            scores.append(float(text @ fused))
        return MatchResult(captions, np.asarray(scores), "comclip", seconds=time.perf_counter() - started)
