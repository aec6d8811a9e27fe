"""Gradio UI only: one module per tab, shared widgets and state. Pipelines do the work."""

from .context import StudioContext
from .shell import build_studio, tab_titles

__all__ = ["StudioContext", "build_studio", "tab_titles"]
