"""Relation layouts for text-to-image: Directional Motion Control on one frame (pipelines.attention.layout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dummies import dummy_sd_pipeline

from pipelines.attention import token_indices
from pipelines.errors import InvalidInputError
from pipelines.attention.guidance import GuidanceConfig, GuidanceTarget, guide_latents
from pipelines.attention.layout import LayoutGuidance
from pipelines.shapesworld.layout import relation_layout


def centre(box):
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


@pytest.mark.parametrize("relation, axis, sign", [("left of", 0, -1), ("right of", 0, 1), ("above", 1, -1), ("below", 1, 1)])
def test_relation_layout_puts_each_object_on_its_side(relation, axis, sign):
    layout = relation_layout(f"a red circle {relation} a blue square")
    assert list(layout) == ["red circle", "blue square"]
    shift = centre(layout["red circle"]) - centre(layout["blue square"])
    assert sign * shift[axis] > 0.4 and abs(shift[1 - axis]) < 1e-9
    for box in layout.values():
        assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1


def test_relation_layout_needs_a_relation_and_two_different_objects():
    assert relation_layout("a red circle") == {}
    assert relation_layout("a red circle and a blue square") == {}
    with pytest.raises(InvalidInputError, match="cannot be told apart"):
        relation_layout("a red circle left of a red circle")
    with pytest.raises(InvalidInputError):
        relation_layout("a red zebra left of a blue square")


def test_guide_latents_lowers_each_image_energy_and_leaves_unguided_images_alone():
    pipe = dummy_sd_pipeline(seed=3)
    pipe.unet.requires_grad_(False)
    prompts = ["a red circle left of a blue square", "a red circle"]
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=16, return_tensors="pt").input_ids
    cond = pipe.text_encoder(ids)[0]
    layout = relation_layout(prompts[0])
    targets = [[GuidanceTarget(p, token_indices(pipe.tokenizer, prompts[0], p), np.asarray([b])) for p, b in layout.items()],
               []]
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[1]
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    config = GuidanceConfig(strength=0.05, steps=1)
    updated, before = guide_latents(pipe.unet, pipe.scheduler, latents, t, cond, targets, config)
    _, after = guide_latents(pipe.unet, pipe.scheduler, updated, t, cond, targets, config)
    assert before[1] == {} and torch.equal(updated[1], latents[1])
    assert not torch.equal(updated[0], latents[0])
    assert sum(after[0].values()) < sum(before[0].values())


def test_layout_callback_guides_only_the_images_with_boxes():
    pipe = dummy_sd_pipeline(seed=1)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle left of a blue square", "a green triangle"]
    layouts = [relation_layout(p) for p in prompts]

    def generate(callback=None):
        generators = [torch.Generator().manual_seed(s) for s in (5, 6)]
        extra = {} if callback is None else dict(callback_on_step_end=callback,
                                                 callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
        return pipe(prompts, num_inference_steps=6, guidance_scale=3.0, generator=generators, output_type="np",
                    **extra).images

    plain = generate()
    callback = LayoutGuidance(layouts, prompts, pipe.tokenizer, GuidanceConfig(strength=0.3, steps=3))
    guided = generate(callback)
    assert len(callback.energies) == 3  # guided after steps 0, 1, 2
    assert all(report[1] == {} and set(report[0]) == {"red circle", "blue square"} for report in callback.energies)
    assert np.abs(guided[0] - plain[0]).max() > 1e-3
    np.testing.assert_allclose(guided[1], plain[1], atol=1e-5)


def test_layout_guidance_checks_its_inputs():
    pipe = dummy_sd_pipeline()
    with pytest.raises(InvalidInputError, match="layouts for"):
        LayoutGuidance([{}], ["a red circle", "a blue square"], pipe.tokenizer)
    with pytest.raises(InvalidInputError):
        LayoutGuidance([{"green square": (0, 0, 0.5, 0.5)}], ["a red circle"], pipe.tokenizer)
