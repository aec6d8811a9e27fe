"""Box layouts for text-to-image: box guidance on a single frame (thesis eq. 10.5, 10.7).

An image is a one-frame video, so the trajectory guidance of :mod:`.guidance` also places objects in
a still image: each object phrase gets a box, the energy of eq. 10.5 on its cross-attention map pulls
the phrase's attention into the box, and the latent moves down its gradient in the first denoising
steps (eq. 10.7; the smoothness term of eq. 10.6 is 0 with one frame). This is the same idea as
training-free layout guidance for text-to-image (boxes on cross-attention), through the project's one
attention mechanism.

:func:`pipelines.shapesworld.layout.relation_layout` turns a ShapesWorld caption with a spatial relation
("a red circle left of a blue square") into one box per object; :class:`LayoutGuidance` is a ``callback_on_step_end`` for any
diffusers ``StableDiffusionPipeline``, so the stock pipeline runs unchanged::

    layouts = [relation_layout(caption) for caption in captions]
    pipe(captions, callback_on_step_end=LayoutGuidance(layouts, captions, pipe.tokenizer),
         callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])

The callback acts after each scheduler step, so guidance starts on the latent of the second timestep
and covers ``GuidanceConfig.steps`` steps from there.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InvalidInputError
from .guidance import GuidanceConfig, GuidanceTarget, guide_latents
from .tokens import token_indices

# Image guidance: a gentle normalised step over the first 10 of 25 steps. On 48 two-object captions
# of the tiny pack, eta 0.25 / 0.1 / 0.05 / 0.03 (K 8-10) gave relation accuracy 0.83 / 0.73 / 0.93 /
# 0.83 among images with both objects, but both objects present in 0.25 / 0.23 / 0.31 / 0.38 of
# them (0.40 unguided): strong steps paint blobs that fill the boxes. ``bench/tiny_pack.py`` measures it.
DEFAULT_IMAGE_GUIDANCE = GuidanceConfig(strength=0.03, steps=10)


class LayoutGuidance:
    """``callback_on_step_end`` that guides each image's object phrases into their boxes (eq. 10.5, 10.7).

    Args:
        layouts: per image of the batch, ``{phrase: (x0, y0, x1, y1)}`` in frame fractions; an empty
            dict leaves that image unguided. Each phrase must be words of that image's prompt.
        prompts: the batch's prompts (to find each phrase's tokens).
        tokenizer: the pipeline's tokenizer.
        config: DMC settings (strength eta, guided steps K, layers).
    """

    def __init__(self, layouts: Sequence[dict], prompts: Sequence[str], tokenizer,
                 config: GuidanceConfig = DEFAULT_IMAGE_GUIDANCE) -> None:
        if len(layouts) != len(prompts):
            raise InvalidInputError(f"{len(layouts)} layouts for {len(prompts)} prompts.")
        self.config = config
        self.targets = [
            [GuidanceTarget(phrase, token_indices(tokenizer, prompt, phrase), np.asarray([box], dtype=np.float32))
             for phrase, box in layout.items()]
            for layout, prompt in zip(layouts, prompts)
        ]
        # per guided step: each image's mean E_i per phrase (eq. 10.5), for reports and tests
        self.energies: list[list[dict[str, float]]] = []

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        timesteps = pipe.scheduler.timesteps
        if step + 1 >= len(timesteps) or step >= self.config.steps or not self.config.active:
            return callback_kwargs
        latents = callback_kwargs["latents"]
        embeds = callback_kwargs["prompt_embeds"]
        cond = embeds[-latents.shape[0]:]  # with classifier-free guidance: [uncond, cond]
        updated, reports = guide_latents(pipe.unet, pipe.scheduler, latents, timesteps[step + 1], cond,
                                         self.targets, self.config)
        self.energies.append(reports)
        return callback_kwargs | {"latents": updated}
