"""About tab: the machine, the presets and which models are loaded."""

from __future__ import annotations

import platform

import diffusers
import gradio as gr
import torch
import transformers

from pipelines.models import PRESETS

from .context import StudioContext

TITLE = "About"

INTRO = """\
# WorldStudio
Four controllable world-model methods from one thesis, in a browser:
**Match** (Discffusion image-text matching, ch. 5), **FlexEControl** (multi-condition
generation, ch. 9), **Mojito** (trajectory and intensity control for video, ch. 10) and
**Morpho4D** (language-driven 4D scenes on dynamic Gaussians, ch. 11).
Offline, the studio runs the *tiny pack*: small models trained on ShapesWorld, a
synthetic world of flat coloured shapes whose truth is known, so every result can be
checked by a detector and a number. The *hub* preset loads real checkpoints on a GPU.
"""


def machine_markdown(context: StudioContext) -> str:
    """Device, threads and library versions, as a Markdown table."""
    rows = [
        ("device", context.manager.placement.describe()),
        ("preset", context.preset),
        ("CUDA available", "yes" if torch.cuda.is_available() else "no (CPU rasterizer and CPU pipelines)"),
        ("torch threads", str(torch.get_num_threads())),
        ("python", platform.python_version()),
        ("torch / diffusers / transformers / gradio",
         f"{torch.__version__} / {diffusers.__version__} / {transformers.__version__} / {gr.__version__}"),
    ]
    return "| machine | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def presets_table(context: StudioContext) -> list[list[str]]:
    """One row per (preset, role): where its weights are and whether they are here."""
    rows = []
    for preset in PRESETS.values():
        for role, source in preset.sources.items():
            if source.local:
                status = "on disk" if source.path.is_dir() else "missing: run `make tiny-models`"
            else:
                status = "hub (downloaded on first use)"
            active = "yes" if preset.name == context.preset else ""
            rows.append([preset.name, active, role, source.location, source.class_name, status, source.note])
    return rows


def loaded_markdown(context: StudioContext) -> str:
    loaded = context.manager.loaded()
    return "Loaded models: " + (", ".join(loaded) if loaded else "none yet (models load on first use)")


def create_tab(context: StudioContext) -> None:
    """Build the About tab inside the current ``gr.Blocks``."""
    with gr.Tab(TITLE, id="about"):
        gr.Markdown(INTRO)
        gr.Markdown(machine_markdown(context))
        gr.Dataframe(
            value=presets_table(context),
            headers=["preset", "active", "role", "source", "class", "status", "note"],
            label="Model presets",
            interactive=False,
            wrap=True,
        )
        loaded = gr.Markdown(loaded_markdown(context))
        gr.Button("Refresh", size="sm").click(lambda: loaded_markdown(context), outputs=loaded, api_name=False)
