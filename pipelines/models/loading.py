"""Device and dtype choice, and loading a preset's components with clear errors.

Everything loads through ``from_pretrained`` of a whitelisted diffusers or
transformers class, with ``use_safetensors=True`` and never
``trust_remote_code``. :class:`ModelManager` loads lazily and caches, so
importing the studio needs no weights.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import InvalidInputError, ModelNotFoundError
from .presets import LOADABLE_CLASSES, ModelSource, get_preset, get_source

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Placement:
    """Where a model runs: a torch device and the dtype of its weights."""

    device: torch.device
    dtype: torch.dtype

    def describe(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else self.device.type
        return f"{name} ({str(self.dtype).removeprefix('torch.')})"


def choose_placement(device: str | None = None, dtype: str | None = None) -> Placement:
    """CUDA with fp16 when present, else CPU with fp32; overridable by arguments or env.

    ``WORLDSTUDIO_DEVICE`` and ``WORLDSTUDIO_DTYPE`` override the automatic choice
    when the arguments are ``None``.
    """
    device = device or os.environ.get("WORLDSTUDIO_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise InvalidInputError(f"Unknown device {device!r}: {error}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("Device 'cuda' was asked for, but this machine has no CUDA GPU.")
    dtype = dtype or os.environ.get("WORLDSTUDIO_DTYPE") or ("float16" if chosen.type == "cuda" else "float32")
    if dtype not in _DTYPES:
        raise InvalidInputError(f"Unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}.")
    return Placement(chosen, _DTYPES[dtype])


def _class_for(source: ModelSource) -> type:
    if source.class_name not in LOADABLE_CLASSES[source.library]:
        raise InvalidInputError(f"{source.library}.{source.class_name} is not a class WorldStudio loads.")
    if source.library == "diffusers":
        import diffusers as library
    else:
        import transformers as library
    return getattr(library, source.class_name)


def missing_model_message(preset: str, role: str, source: ModelSource, reason: str = "") -> str:
    """The message a person sees when a preset's weights are not available."""
    if source.local:
        return (
            f"Preset {preset!r} needs its {role} model at {source.location}, which is missing "
            f"({reason or 'no such folder'}). Train the tiny pack with `make tiny-models`, "
            "or pick the 'hub' preset on a machine with a GPU."
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    how = (
        "HF_HUB_OFFLINE=1 is set, so only the local cache is searched"
        if offline
        else "the hub could not be reached or refused the request"
    )
    return (
        f"Preset {preset!r} needs its {role} model {source.location!r}, which is not in the Hugging Face cache "
        f"and {how}. On a machine with network run `hf download {source.location}` (or set HF_HOME to a cache "
        f"that has it){'; ' + reason if reason else ''}."
    )


def load_source(
    source: ModelSource,
    placement: Placement,
    *,
    preset: str = "?",
    role: str = "?",
    **kwargs: Any,
):
    """Load one source with its whitelisted class, safetensors only, and place it.

    Raises :class:`ModelNotFoundError` naming the preset, the role, what is
    missing and how to get it.
    """
    cls = _class_for(source)
    if source.local and not source.path.is_dir():
        raise ModelNotFoundError(missing_model_message(preset, role, source))
    location = str(source.path) if source.local else source.location
    options: dict[str, Any] = {"use_safetensors": True}
    if source.local:
        options["local_files_only"] = True
    elif source.revision:
        options["revision"] = source.revision
    if source.library == "diffusers":
        options["torch_dtype"] = placement.dtype
        if source.class_name == "StableDiffusionPipeline":
            options.update(safety_checker=None, requires_safety_checker=False)
    else:
        options["dtype"] = placement.dtype
    options.update(kwargs)
    options.pop("trust_remote_code", None)
    try:
        model = cls.from_pretrained(location, **options)
    except (OSError, EnvironmentError, ValueError) as error:
        raise ModelNotFoundError(missing_model_message(preset, role, source, str(error).splitlines()[0])) from error
    return model.to(placement.device)


class ModelManager:
    """Loads a preset's models on first use and keeps them; thread-safe.

    The studio holds one manager; its About tab lists :meth:`loaded`.
    """

    def __init__(self, preset: str = "tiny", placement: Placement | None = None) -> None:
        self.preset = get_preset(preset).name
        self.placement = placement or choose_placement()
        self._models: dict[str, Any] = {}
        self._derived: dict[str, Any] = {}
        # Re-entrant: a ``derived`` factory loads its roles through ``get``.
        self._lock = threading.RLock()

    def get(self, role: str, **kwargs: Any):
        """Return the model for ``role``, loading it once."""
        with self._lock:
            if role not in self._models:
                source = get_source(self.preset, role)
                self._models[role] = load_source(source, self.placement, preset=self.preset, role=role, **kwargs)
            return self._models[role]

    def derived(self, key: str, factory: Callable[[], Any]):
        """Return what ``factory()`` builds from this manager's models (a pipeline over a loaded base, a
        processor), building it once per manager; every runner of the manager shares it."""
        with self._lock:
            if key not in self._derived:
                self._derived[key] = factory()
            return self._derived[key]

    def preload(self) -> list[str]:
        """Load every role of the preset whose weights are there now (what a ZeroGPU Space needs: models placed
        at start-up, outside the calls that borrow a GPU); returns the roles loaded."""
        for role in get_preset(self.preset).sources:
            if self.is_available(role):
                self.get(role)
        return self.loaded()

    def is_available(self, role: str) -> bool:
        """Whether ``role``'s weights are on disk (local) or named (hub; not checked online)."""
        source = get_source(self.preset, role)
        return source.path.is_dir() if source.local else True

    def loaded(self) -> list[str]:
        """Roles loaded so far."""
        with self._lock:
            return sorted(self._models)

    def source_location(self, role: str) -> str:
        """Folder (local) or hub id of ``role``'s weights, for processors that load beside the model."""
        source = get_source(self.preset, role)
        return str(source.path) if source.local else source.location
