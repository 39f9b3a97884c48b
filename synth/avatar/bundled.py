"""The bundled default model: its weights and model card, found with importlib.resources."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from synth.errors import UserError

DEFAULT_MODEL = "th-cpu-default.safetensors"
DEFAULT_CARD = "th-cpu-default.card.json"


def default_model_path() -> Path:
    """Path of the bundled default model (a clear error if this install has none)."""
    p = Path(str(resources.files("synth") / "assets" / DEFAULT_MODEL))
    if not p.exists():
        raise UserError(f"no bundled model at {p}; pass --model PATH (a file from `th meta-train` / export)")
    return p


def file_sha256(path: Path | str) -> str:
    """sha256 of a file, streamed (model files, drivers, photos)."""
    return _sha256_cached(str(Path(path).resolve()), Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=16)
def _sha256_cached(path: str, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_identity(path: Path) -> tuple[str, str]:
    """(model card id, sha256) of a model file: the card's id for the bundled model, else the file name."""
    sha = file_sha256(path)
    card = Path(path).with_name(Path(path).name.replace(".safetensors", ".card.json"))
    if card.exists():
        try:
            return str(json.loads(card.read_text()).get("id", Path(path).stem)), sha
        except json.JSONDecodeError:
            pass
    return Path(path).stem, sha


def resolve_model(path: Path | None) -> Path:
    """The model the user asked for, or the bundled default."""
    if path is None:
        return default_model_path()
    if not Path(path).exists():
        raise UserError(f"{path}: no such model file")
    return Path(path)


def model_card_path(path: Path) -> Path:
    """The model card beside a model file: ``NAME.card.json`` for ``NAME.safetensors``."""
    p = Path(path)
    return p.with_name(p.name.replace(".safetensors", "") + ".card.json")


def train_identities(path: Path) -> list[str] | None:
    """Identities a model was trained on, from its card's ``train_identities``; None if no card says."""
    card = model_card_path(path)
    if not card.exists():
        return None
    try:
        listed = json.loads(card.read_text()).get("train_identities")
    except (json.JSONDecodeError, AttributeError) as e:
        raise UserError(f"{card}: unreadable model card ({e})") from e
    return None if listed is None else [str(x) for x in listed]
