"""The generator as animation runs it: the same folded network, executed by ONNX Runtime on a CPU.

Measured (bench/bench_model.py, 256 px, 2 threads): torch's convolutions are slow for this generator's
shapes — a 4-channel output head at full size, 8×8 bottleneck convolutions that fall back to torch's slow
path, layout copies around instance norm — and ONNX Runtime's fused CPU kernels run the identical graph about
twice as fast. The exported graph is the folded generator itself (spectral norm already divided in, fine-tuned
weights included), exported once per set of weights (cached in ``$TH_HOME/cache/engine/<sha256>.onnx``: the
export costs ~1.7 s of start-up) and checked against torch on the first frame of every run: outputs agree to
~1e-6, so the engine changes speed, never pictures.

``engine``: ``auto`` (ONNX Runtime on a CPU when it is installed, else torch), ``onnx`` or ``torch``.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synth.errors import UserError
from synth.media.atomic import atomic_write_bytes

ENGINES = ("auto", "onnx", "torch")
CACHE_KEEP = 8  # exported graphs kept (~7 MB each for the default model)
AGREEMENT = 1e-3  # largest |onnx − torch| accepted on the first frame (measured: ~2e-6)


def onnx_available() -> bool:
    """onnxruntime and onnx (torch's exporter needs it) are installed; found without importing them (onnx
    alone takes ~1 s to import, and a cached graph does not need it)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


class OnnxGenerator:
    """A callable with the generator's signature ``(y, psi, warped) → x̂`` that runs an ONNX Runtime session.

    ``k`` = the number of warped shots per frame (the warp-guided generator blends K > 1 shots by learned
    confidences, a branch fixed at export); the batch axis is dynamic.
    """

    def __init__(self, g: nn.Module, size: int, k: int | None, threads: int) -> None:
        import onnxruntime as ort

        self.uses_warp = bool(getattr(g, "uses_warp", False))
        self.project = g.project
        self._torch = g
        self._checked = False
        n_adain = g.P.shape[0]
        y = torch.zeros(1, 3, size, size)
        psi = torch.zeros(1, n_adain)
        args: tuple = (y, psi)
        names = ["y", "psi"]
        if self.uses_warp:
            args = (*args, torch.zeros(1, k or 1, 3, size, size))
            names.append("warped")
        cached = _cache_dir() / f"{engine_key(g, size, k)}.onnx"
        try:
            graph = cached.read_bytes()
            cached.touch()  # least recently used goes first
        except OSError:
            buf = io.BytesIO()
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the exporter warns about the tracer and the deprecated exporter
                torch.onnx.export(g, args, buf, dynamo=False, opset_version=17, input_names=names,
                                  output_names=["x"], dynamic_axes={n: {0: "b"} for n in [*names, "x"]})
            graph = buf.getvalue()
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(cached, graph, force=True)
                for old in sorted(cached.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime)[:-CACHE_KEEP]:
                    old.unlink(missing_ok=True)
            except (OSError, UserError):
                pass  # no cache (read-only home, full disk): the next run exports again
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self._names = names
        self._session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])

    def __call__(self, y: torch.Tensor, psi: torch.Tensor, warped: torch.Tensor | None = None) -> torch.Tensor:
        # y (B,3,S,S), psi (B,n_adain), warped (B,K,3,S,S) → x̂ (B,3,S,S), as the torch generator
        feeds = {"y": y, "psi": psi}
        if self.uses_warp:
            feeds["warped"] = warped
        arrays = {n: np.ascontiguousarray(t.detach().cpu().float().numpy()) for n, t in feeds.items()}
        out = torch.from_numpy(self._session.run(None, arrays)[0])
        if not self._checked:  # the first frame runs through torch too: a wrong export must never ship
            with torch.no_grad():
                ref = self._torch(y[:1], psi[:1], None if warped is None else warped[:1])
            err = float((out[:1] - ref).abs().max())
            if not err <= AGREEMENT:
                raise RuntimeError(f"ONNX Runtime disagrees with torch by {err:.2e} on the first frame")
            self._checked = True
        return out


def engine_key(g: nn.Module, size: int, k: int | None) -> str:
    """sha256 of what the exported graph depends on: the weights, the class, the size, K and torch's version."""
    h = hashlib.sha256(f"{type(g).__name__}|{size}|{k}|{torch.__version__}|opset17".encode())
    for name, t in sorted(g.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _cache_dir() -> Path:
    from synth.media.workdir import th_home

    return th_home() / "cache" / "engine"


def runtime_generator(g: nn.Module, size: int, k: int | None, device: torch.device, engine: str = "auto"):
    """The fastest correct way to run the folded generator ``g`` here (see module docstring)."""
    if engine not in ENGINES:
        raise UserError(f"unknown --engine {engine!r} (use {', '.join(ENGINES)})")
    if engine == "torch" or device.type != "cpu":
        if engine == "onnx":
            raise UserError("--engine onnx runs on the CPU only; use --device cpu or --engine torch")
        return g
    if not onnx_available():
        if engine == "onnx":
            raise UserError("--engine onnx needs the onnx and onnxruntime packages (pip install onnx onnxruntime)")
        return g
    return OnnxGenerator(g, size, k, torch.get_num_threads())
