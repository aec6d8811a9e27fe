"""What every tab is given: the shared model manager and the studio's settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pipelines.models import ModelManager, choose_placement


@dataclass
class StudioContext:
    """State shared by all tabs and all users (models only; never a user's data).

    Per-user data (scenes, uploads, results) lives in ``gr.State`` inside each
    tab, so one user's scene never reaches another's session.
    """

    # Model preset every tab loads from ("tiny" offline, "hub" on a GPU machine).
    preset: str = field(default_factory=lambda: os.environ.get("WORLDSTUDIO_PRESET", "tiny"))
    # Device override ("cpu", "cuda", "cuda:1"); None chooses automatically.
    device: str | None = None
    manager: ModelManager = field(init=False)

    def __post_init__(self) -> None:
        self.manager = ModelManager(self.preset, choose_placement(self.device))
