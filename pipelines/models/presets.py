"""Model presets: a name -> the component sources each method loads.

A preset maps *roles* (what a method needs: a text-to-image model to match
with, a text-to-video model to steer, a CLIP to compare against...) to a
:class:`ModelSource`: a folder in this repository (the tiny pack, trained on
ShapesWorld by ``make tiny-models``) or a Hugging Face hub id (real checkpoints
for a GPU machine or a Space). Methods never branch on which preset is in use:
both kinds load through the same ``from_pretrained`` classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Mapping

from ..errors import UnknownPresetError

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_PACK_DIR = REPO_ROOT / "assets" / "models" / "tiny"

Role = Literal["text-to-image", "control-base", "text-to-video", "clip", "depth", "detector", "segmentation",
               "language"]
ROLES: tuple[str, ...] = ("text-to-image", "control-base", "text-to-video", "clip", "depth", "detector", "segmentation",
                          "language")

# Classes a source may name. Looked up by name in the library's namespace, so
# nothing from a config file is ever evaluated.
LOADABLE_CLASSES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "diffusers": frozenset(
            {"StableDiffusionPipeline", "TextToVideoSDPipeline", "DiffusionPipeline", "ControlNetModel"}
        ),
        "transformers": frozenset(
            {"CLIPModel", "AutoModelForDepthEstimation", "OwlViTForObjectDetection", "AutoModel",
             "AutoModelForCausalLM", "AutoModelForSemanticSegmentation"}
        ),
    }
)


@dataclass(frozen=True)
class ModelSource:
    """Where one role's weights live and which class loads them."""

    # Folder relative to the repository root (local) or a hub repo id "owner/name".
    location: str
    # "diffusers" or "transformers": the library whose class loads it.
    library: Literal["diffusers", "transformers"]
    # Class name inside that library, one of LOADABLE_CLASSES.
    class_name: str
    # True: ``location`` is a folder in this repository; False: a hub id.
    local: bool
    # Hub revision (branch, tag or commit); ignored for local folders.
    revision: str | None = None
    # What a person should know about it (size, licence, hardware).
    note: str = ""

    def __post_init__(self) -> None:
        if self.class_name not in LOADABLE_CLASSES.get(self.library, ()):
            raise ValueError(f"{self.library}.{self.class_name} is not a loadable class")

    @property
    def path(self) -> Path:
        """Absolute folder of a local source."""
        return REPO_ROOT / self.location


@dataclass(frozen=True)
class Preset:
    """A named set of model sources, one per role."""

    name: str
    description: str
    sources: Mapping[str, ModelSource] = field(default_factory=dict)
    # Method -> folder (relative to the repository root) of weights a method trains over a source
    # (FlexEControl's adapters over 'control-base'); a preset without an entry has none.
    method_weights: Mapping[str, str] = field(default_factory=dict)


def _tiny(folder: str, library: str, class_name: str, note: str) -> ModelSource:
    return ModelSource(f"assets/models/tiny/{folder}", library, class_name, local=True, note=note)


def _hub(repo_id: str, library: str, class_name: str, note: str) -> ModelSource:
    return ModelSource(repo_id, library, class_name, local=False, note=note)


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "tiny": Preset(
            name="tiny",
            description="ShapesWorld tiny pack: trained by `make tiny-models`, runs on a CPU in seconds.",
            sources=MappingProxyType(
                {
                    "text-to-image": _tiny("shapes-sd", "diffusers", "StableDiffusionPipeline", "64x64 latent diffusion"),
                    "control-base": _tiny("shapes-sd", "diffusers", "StableDiffusionPipeline", "base for FlexEControl"),
                    "text-to-video": _tiny("shapes-t2v", "diffusers", "TextToVideoSDPipeline", "16-frame UNet3D"),
                    "clip": _tiny("shapes-clip", "transformers", "CLIPModel", "contrastive vision+text"),
                    "depth": _tiny("shapes-depth", "transformers", "AutoModelForDepthEstimation", "depth from RGB"),
                }
            ),
            method_weights=MappingProxyType({"flexecontrol": "assets/models/tiny/flexecontrol"}),
        ),
        "hub": Preset(
            name="hub",
            description="Real checkpoints from the Hugging Face hub, for a GPU machine or a Space.",
            sources=MappingProxyType(
                {
                    "text-to-image": _hub(
                        "stabilityai/stable-diffusion-2-1-base", "diffusers", "StableDiffusionPipeline",
                        "Discffusion's backbone (thesis table 5.1), 512x512, ~5 GB fp32",
                    ),
                    "control-base": _hub(
                        "stable-diffusion-v1-5/stable-diffusion-v1-5", "diffusers", "StableDiffusionPipeline",
                        "FlexEControl's base model (thesis ch. 9)",
                    ),
                    "text-to-video": _hub(
                        "cerspense/zeroscope_v2_576w", "diffusers", "TextToVideoSDPipeline",
                        "UNet3D text-to-video for Mojito and Morpho4D",
                    ),
                    "clip": _hub("openai/clip-vit-base-patch32", "transformers", "CLIPModel", "CLIP / ComCLIP baseline"),
                    "depth": _hub(
                        "Intel/dpt-hybrid-midas", "transformers", "AutoModelForDepthEstimation",
                        "monocular depth for FlexEControl and Morpho4D",
                    ),
                    "detector": _hub(
                        "google/owlvit-base-patch32", "transformers", "OwlViTForObjectDetection",
                        "open-vocabulary boxes for Mojito's evaluation",
                    ),
                    "segmentation": _hub(
                        "nvidia/segformer-b0-finetuned-ade-512-512", "transformers", "AutoModelForSemanticSegmentation",
                        "SegFormer-B0, ADE20K's 150 classes: FlexEControl's segmentation of uploads, ~15 MB",
                    ),
                    "language": _hub(
                        "Qwen/Qwen2.5-0.5B-Instruct", "transformers", "AutoModelForCausalLM",
                        "Morpho4D's optional LLM command parameterizer (eq. 11.5), Apache-2.0, ~1 GB",
                    ),
                }
            ),
        ),
    }
)


def get_preset(name: str) -> Preset:
    """Return the preset called ``name`` or raise :class:`UnknownPresetError` listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise UnknownPresetError(f"Unknown preset {name!r}; known presets: {known}.") from None


def get_source(preset: str, role: str) -> ModelSource:
    """Return the source of ``role`` in ``preset``, with a clear error when either is unknown."""
    chosen = get_preset(preset)
    try:
        return chosen.sources[role]
    except KeyError:
        roles = ", ".join(sorted(chosen.sources))
        raise UnknownPresetError(f"Preset {preset!r} has no {role!r} model; it has: {roles}.") from None


# Environment variable naming a folder of a method's weights, over whichever preset is in use.
METHOD_WEIGHTS_ENV = "WORLDSTUDIO_{method}_WEIGHTS"
# The base role each trained method's weights sit on.
TRAINED_OVER: Mapping[str, str] = MappingProxyType({"flexecontrol": "control-base"})


def training_command(preset: str, method: str) -> str:
    """The command that trains ``method``'s weights over ``preset``'s base model (several GPUs or machines:
    the same module under ``accelerate launch -m``)."""
    base = get_source(preset, TRAINED_OVER[method])
    out = f"runs/{method}-{preset}"
    return f"python -m pipelines.{method} --base {base.location} --out {out}"


def method_weights(preset: str, method: str) -> Path:
    """The folder of ``method``'s own weights: ``WORLDSTUDIO_<METHOD>_WEIGHTS`` when set, else the preset's.

    Raises :class:`ModelNotFoundError` when there are none, naming the command that trains them over the
    preset's base model and the variable that points the studio at the result.
    """
    from ..errors import ModelNotFoundError

    variable = METHOD_WEIGHTS_ENV.format(method=method.upper())
    chosen = get_preset(preset)
    folder = os.environ.get(variable) or chosen.method_weights.get(method)
    if folder is None:
        command = training_command(preset, method)
        out = command.rsplit(" ", 1)[-1]
        raise ModelNotFoundError(
            f"Preset {preset!r} has no {method} weights: none are published for its base model "
            f"{get_source(preset, TRAINED_OVER[method]).location}. Train them (a GPU is advised) with `{command}` "
            f"(your own pictures: add `--data FOLDER`; several GPUs or machines: `accelerate launch -m "
            f"pipelines.{method} ...`), then set {variable}={out}.")
    path = Path(folder) if Path(folder).is_absolute() else REPO_ROOT / folder
    if not path.is_dir():
        raise ModelNotFoundError(f"Preset {preset!r} needs its {method} weights at {folder}, which is missing; "
                                 f"run `make tiny-{method}`" + (f" or fix {variable}." if os.environ.get(variable)
                                                                else "."))
    return path
