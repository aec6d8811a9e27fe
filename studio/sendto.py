""""Send to": the outputs of one tab become the inputs of another, and the studio switches to it.

An image (generated or loaded in Match, generated in FlexEControl) goes to Match (to score), FlexEControl (as
an upload the extractor reads maps from) and Mojito (its prompt, and the image as the first-frame canvas of
the trajectory); a Mojito video goes to Morpho4D ("lift to 4D": the video fitted along its trajectory); a
Morpho4D scene goes back to Mojito (its prompt, its first frame and each object's boxes as keyframes).
Each handler only moves values; the work is the receiving tab's runner.
"""

from __future__ import annotations

import gradio as gr

from pipelines.errors import InvalidInputError
from pipelines.matching.runner import captions_for

from . import mojito
from .errors import shows_errors
from .sessions import HEAVY

# The condition type an image sent to FlexEControl is read as (its segmentation by the preset's segmenter, or by
# ShapesWorld's detector when the preset has none).
SENT_CONDITION = "segmentation"


def _first_caption(text) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[0] if lines else ""


def _image(value):
    if value is None:
        raise InvalidInputError("There is no image to send yet: generate or load one first.")
    return value


def to_flexecontrol(image, captions):
    """Match's image -> FlexEControl's first condition layer as an upload, the caption as the prompt."""
    return (_first_caption(captions), SENT_CONDITION, "upload", _image(image), gr.Tabs(selected="flexecontrol"))


def to_mojito(image, captions):
    """An image and its caption -> Mojito's prompt and first-frame canvas."""
    return (*mojito.receive(_first_caption(captions), _image(image)), gr.Tabs(selected="mojito"))


def _flexecontrol_image(result):
    if result is None:
        raise InvalidInputError("Generate an image in FlexEControl first.")
    return result[0]


def flexecontrol_to_match(result, prompt):
    """FlexEControl's output -> Match's image, with the prompt and its swaps as the captions (the prompt is
    what the picture was asked to show: its true caption)."""
    return _flexecontrol_image(result), "\n".join(captions_for(prompt)), prompt, gr.Tabs(selected="match")


def flexecontrol_to_mojito(result, prompt):
    return to_mojito(_flexecontrol_image(result), prompt)


def wire(tabs: gr.Tabs, ports: dict[str, dict]) -> None:
    """Connect the tabs' send buttons (``ports``: tab title -> what its ``create_tab`` returned)."""
    match, flex, video, scene = ports["Match"], ports["FlexEControl"], ports["Mojito"], ports["Morpho4D"]
    mojito_inputs = [video["state"], video["prompt"], video["phrase"], video["canvas"], video["table"], tabs]
    match["to_flexecontrol"].click(shows_errors(to_flexecontrol), [match["image"], match["captions"]],
                                   [flex["prompt"], flex["kind"], flex["source"], flex["upload"], tabs], api_name=False)
    match["to_mojito"].click(shows_errors(to_mojito), [match["image"], match["captions"]], mojito_inputs,
                             api_name=False)
    flex["to_match"].click(shows_errors(flexecontrol_to_match), [flex["result"], flex["prompt"]],
                           [match["image"], match["captions"], match["truth"], tabs], api_name=False)
    flex["to_mojito"].click(shows_errors(flexecontrol_to_mojito), [flex["result"], flex["prompt"]], mojito_inputs,
                            api_name=False)
    video["lift"].click(lambda: gr.Tabs(selected="morpho4d"), None, tabs, api_name=False).then(
        scene["lift"], [video["raw"], scene["state"]], scene["lift_outputs"], api_name="mojito_lift_to_4d",
        show_progress_on=[scene["chat"]], **HEAVY)

    def scene_to_mojito(view):
        prompt, first, objects = scene["to_mojito_values"](view)
        return (*mojito.receive(prompt, first, objects), gr.Tabs(selected="mojito"))

    scene["to_mojito"].click(shows_errors(scene_to_mojito), scene["state"], mojito_inputs, api_name=False)
