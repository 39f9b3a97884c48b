"""One place that owns device, thread count and precision for every torch stage."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from synth.errors import UserError

if TYPE_CHECKING:
    import torch


def thread_count(n: int | None = None) -> int:
    """The thread count to use: ``n``, else TH_THREADS, else all cores (no torch needed: ONNX Runtime uses it too)."""
    return max(1, n or int(os.environ.get("TH_THREADS", "0")) or (os.cpu_count() or 1))


def set_threads(n: int | None) -> int:
    """Set torch's intra-op thread count (``thread_count(n)``). Returns the count used."""
    import torch

    torch.set_num_threads(thread_count(n))
    return torch.get_num_threads()


def resolve_device(name: str = "cpu") -> torch.device:
    """Turn ``cpu|cuda|cuda:N|mps|auto`` into a torch device, with a clear error if it is not here."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r} (use cpu, cuda, cuda:N or mps)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps asked for, but MPS is not available here")
    return dev


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision where it helps (CUDA fp16/bf16); a no-op on CPU, which here has no bf16 units."""
    import contextlib

    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
