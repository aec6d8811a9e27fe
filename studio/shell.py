"""Assembles the studio from its tabs; loads nothing heavy."""

from __future__ import annotations

import gradio as gr

from . import about, flexecontrol, match, mojito, morpho4d, sendto
from .context import StudioContext

# Each tab module exposes TITLE and create_tab(context) (returning the components other tabs send to, or
# None); order is tab order.
TAB_MODULES = (match, morpho4d, flexecontrol, mojito, about)


def build_studio(context: StudioContext | None = None) -> gr.Blocks:
    """Return the studio as a ``gr.Blocks`` with every tab and the queue enabled."""
    context = context or StudioContext()
    with gr.Blocks(title="WorldStudio") as studio:
        with gr.Tabs() as tabs:
            ports = {module.TITLE: module.create_tab(context) for module in TAB_MODULES}
        sendto.wire(tabs, ports)
    studio.queue(default_concurrency_limit=1, max_size=32)
    return studio


def tab_titles() -> list[str]:
    """Titles of the tabs, in order (the browser test checks each is shown)."""
    return [module.TITLE for module in TAB_MODULES]
