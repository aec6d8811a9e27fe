"""Where the studio writes its output files and how it shows the recipe each one carries."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.recipes import Recipe


def scratch_path(prefix: str, suffix: str) -> Path:
    """A fresh file path in a private temporary folder (Gradio serves it from its cache); folders older than
    :data:`~studio.sessions.SCRATCH_TTL` are deleted."""
    from .sessions import scratch_dir

    return scratch_dir(prefix) / f"output{suffix}"


def recipe_markdown(recipe: Recipe, path: str | Path) -> str:
    """The recipe for people: the request as JSON and the command line that reproduces the file."""
    shown = {"request": recipe.request, "preset": recipe.preset, "models": recipe.models,
             "version": recipe.version, "threads": recipe.threads}
    return (f"**Recipe** (stored in `{Path(path).name}`):\n```json\n{json.dumps(shown, indent=1)}\n```\n"
            f"Reproduce it:\n```bash\n{recipe.command_line(Path(path).name)}\n```")
