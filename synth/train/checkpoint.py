"""Self-describing, atomic training checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint holds the weights of E, G, D and both Adam states (tensors under ``opt_g/…``, ``opt_d/…``;
scalars and param groups as JSON in the safetensors metadata), the config, the step and a format
version. Nothing is pickled. Files appear only by atomic rename, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _flatten_optimizer(prefix: str, state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in state["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}/state/{idx}/{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}/{k}"] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
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


def save_checkpoint(
    run_dir: Path,
    step: int,
    config: Config,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    keep: int = 3,
) -> Path:
    """Write ``RUN/checkpoints/ckpt-<step>.safetensors`` atomically; keep the newest ``keep`` files."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"{name}/{k}"] = v.detach().cpu().contiguous().clone()
    optim_meta = {}
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(name, opt.state_dict())
        tensors.update(t)
        optim_meta[name] = m
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "step": str(step),
        "config": config.to_json(),
        "optimizers": json.dumps(optim_meta),
    }
    for stale in ckpt_dir.glob(".ckpt-*.part*"):  # temp files of a run killed mid-write
        stale.unlink(missing_ok=True)
    dest = ckpt_dir / f"ckpt-{step:08d}.safetensors"
    with atomic_path(dest, force=True) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)
    old = sorted(p for p in ckpt_dir.iterdir() if _NAME.match(p.name))
    for p in old[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
    return dest


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
    optimizers = {name: _unflatten_optimizer(name, tensors, m) for name, m in optim_meta.items()}
    return Checkpoint(path, int(meta["step"]), Config.from_json(meta["config"]), modules, optimizers)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, oldest first (only complete ones exist: writes are atomic)."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def load_latest(run_dir: Path) -> Checkpoint | None:
    """The newest checkpoint of ``run_dir``, or None for a fresh run."""
    ckpts = list_checkpoints(run_dir)
    return load_checkpoint(ckpts[-1]) if ckpts else None
