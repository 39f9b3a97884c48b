"""Self-describing, atomic training checkpoints: safetensors for tensors, JSON for everything else.

``CheckpointDir`` is the helper every th trainer uses (meta-training, the detector, and any later one):
step-numbered ``ckpt-<step>.safetensors`` files in one folder, written atomically (made in th's work
folder, fsync-ed, then renamed: a kill never leaves half a file), rotated to the newest ``keep``, and
read back newest first: a checkpoint that cannot be read (truncated by a copy, a full disk or a power
cut) is skipped with a warning and the previous one is used, so a resume never becomes a crash loop.

A meta-training checkpoint holds the weights of E, G, D and both Adam states (tensors under ``opt_g/…``,
``opt_d/…``; scalars and param groups as JSON in the safetensors metadata), the config, the step and a
format version. Nothing is pickled.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from synth.media.atomic import atomic_path
from synth.nets.config import Config

FORMAT = "th-meta-train"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8})\.safetensors$")


@dataclass
class Checkpoint:
    """What ``load_latest`` returns: step, config and flat state dicts (tensors on CPU)."""

    path: Path
    step: int
    config: Config
    modules: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict[str, Any]]


def flatten_optimizer(prefix: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}/state/{idx}/{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}/state/"
    for name, t in tensors.items():
        if name.startswith(head):
            idx, k = name[len(head):].split("/", 1)
            state.setdefault(int(idx), {})[k] = t
    for name, v in meta["scalars"].items():
        idx, k = name.split("/", 1)
        state.setdefault(int(idx), {})[k] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


T = TypeVar("T")


def _warn(message: str) -> None:
    print(f"th: warning: {message}", file=sys.stderr, flush=True)


class CheckpointDir:
    """Step-numbered safetensors checkpoints in one folder (see the module docstring)."""

    def __init__(self, folder: Path | str, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first (only complete ones can exist: writes are atomic)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if _NAME.match(p.name))

    def save(self, step: int, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
        """Write ``ckpt-<step>.safetensors`` atomically (replacing one of that step); rotate to ``keep``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".ckpt-*.part*"):  # temp files of th versions that wrote them here
            stale.unlink(missing_ok=True)
        dest = self.folder / f"ckpt-{step:08d}.safetensors"
        with atomic_path(dest, force=True, mode=0o644) as tmp:
            save_file(tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
        old = self.paths()
        for p in old[:-self.keep] if self.keep > 0 else []:
            p.unlink(missing_ok=True)
        return dest

    def load_latest(self, read: Callable[[Path], T]) -> T | None:
        """``read`` of the newest readable checkpoint, or None when there is none; unreadable newer ones
        are skipped with a warning (never a crash: the run resumes from the one before)."""
        for path in reversed(self.paths()):
            try:
                return read(path)
            except FileNotFoundError:
                continue  # rotated away by another process between listing and reading
            except Exception as e:  # safetensors, JSON and format errors all mean "cannot resume from this"
                _warn(f"{path} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                      "resuming from the checkpoint before it")
        return None


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors checkpoint (fails on a truncated or damaged file)."""
    meta = read_metadata(path)
    return load_file(str(path)), meta


def save_checkpoint(
    run_dir: Path,
    step: int,
    config: Config,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    keep: int = 3,
) -> Path:
    """Write ``RUN/checkpoints/ckpt-<step>.safetensors`` atomically; keep the newest ``keep`` files."""
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"{name}/{k}"] = v.detach().cpu().contiguous().clone()
    optim_meta = {}
    for name, opt in optimizers.items():
        t, m = flatten_optimizer(name, opt.state_dict())
        tensors.update(t)
        optim_meta[name] = m
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "step": str(step),
        "config": config.to_json(),
        "optimizers": json.dumps(optim_meta),
    }
    return CheckpointDir(Path(run_dir) / "checkpoints", keep).save(step, tensors, metadata)


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors metadata (JSON strings) of a checkpoint or exported model."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_checkpoint(path: Path) -> Checkpoint:
    """Read one checkpoint file (format and version checked)."""
    path = Path(path)
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a th meta-training checkpoint")
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {meta['format_version']} (newer than this th)")
    tensors = load_file(str(path))
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        head, rest = name.split("/", 1)
        if head in ("E", "G", "D"):
            modules.setdefault(head, {})[rest] = t
    optim_meta = json.loads(meta["optimizers"])
    optimizers = {name: unflatten_optimizer(name, tensors, m) for name, m in optim_meta.items()}
    return Checkpoint(path, int(meta["step"]), Config.from_json(meta["config"]), modules, optimizers)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first (only complete ones exist: writes are atomic)."""
    return CheckpointDir(Path(run_dir) / "checkpoints").paths()


def load_latest(run_dir: Path) -> Checkpoint | None:
    """The newest readable checkpoint of ``run_dir`` (unreadable newer ones skipped with a warning), or
    None for a fresh run."""
    return CheckpointDir(Path(run_dir) / "checkpoints").load_latest(load_checkpoint)
