"""Assembles the studio from its tabs; loads nothing heavy."""

from __future__ import annotations

import gradio as gr

from . import about, flexecontrol, match, mojito, morpho4d, sendto
from .context import StudioContext
from .sessions import SESSION_TTL

# Each tab module exposes TITLE and create_tab(context) (returning the components other tabs send to, or
# None); order is tab order.
TAB_MODULES = (match, morpho4d, flexecontrol, mojito, about)


def build_studio(context: StudioContext | None = None) -> gr.Blocks:
    """Return the studio as a ``gr.Blocks`` with every tab and the queue enabled."""
    context = context or StudioContext()
    # Gradio's cache (uploads, copies of outputs) is swept every 10 min of files older than the session TTL.
    with gr.Blocks(title="WorldStudio", delete_cache=(600, int(SESSION_TTL))) as studio:
        with gr.Tabs() as tabs:
            ports = {module.TITLE: module.create_tab(context) for module in TAB_MODULES}
        sendto.wire(tabs, ports)
    # Cheap events run side by side; heavy ones share the "models" pool (studio/sessions.py).
    studio.queue(default_concurrency_limit=4, max_size=64)
    return studio


def tab_titles() -> list[str]:
    """Titles of the tabs, in order (the browser test checks each is shown)."""
    return [module.TITLE for module in TAB_MODULES]
