"""The bundled default audio-to-landmark model, found with importlib.resources."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from synth.errors import UserError

DEFAULT_AUDIO_MODEL = "th-audio-default.safetensors"


def default_audio_model_path() -> Path:
    """Path of the bundled audio model (a clear error if this install has none)."""
    p = Path(str(resources.files("synth") / "assets" / DEFAULT_AUDIO_MODEL))
    if not p.exists():
        raise UserError(f"no bundled audio model at {p}; pass --audio-model PATH (from `th audio train`)")
    return p


def resolve_audio_model(path: Path | None) -> Path:
    """The audio model the user asked for, or the bundled default."""
    if path is None:
        return default_audio_model_path()
    if not Path(path).exists():
        raise UserError(f"{path}: no such audio model file")
    return Path(path)
