"""The generator as animation runs it: the same folded network, executed by ONNX Runtime on a CPU.

Measured (bench/bench_model.py, 256 px, 2 threads): torch's convolutions are slow for this generator's
shapes — a 4-channel output head at full size, 8×8 bottleneck convolutions that fall back to torch's slow
path, layout copies around instance norm — and ONNX Runtime's fused CPU kernels run the identical graph about
twice as fast. The exported graph is the folded generator itself (spectral norm already divided in, fine-tuned
weights included), exported once per set of weights (cached by synth.nets.engine: the export costs ~1.7 s of
start-up) and checked against torch on the first frame of every run: outputs agree to ~1e-6, so the engine
changes speed, never pictures.

``engine``: ``auto`` (ONNX Runtime on a CPU when it is installed, else torch), ``onnx`` or ``torch``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from synth.errors import UserError
from synth.nets import engine as ort_engine
from synth.nets.engine import ENGINES

AGREEMENT = 1e-3  # largest |onnx − torch| accepted on the first frame (measured: ~2e-6)


def engine_key(g: nn.Module, size: int, k: int | None) -> str:
    """The cache key of ``g``'s graph: its weights, size and K (the branch for K > 1 is fixed at export)."""
    return ort_engine.state_key(g, size, k)


class OnnxGenerator:
    """A callable with the generator's signature ``(y, psi, warped) → x̂`` that runs an ONNX Runtime session.

    ``k`` = the number of warped shots per frame; the batch axis is dynamic.
    """

    def __init__(self, g: nn.Module, size: int, k: int | None, threads: int) -> None:
        self.uses_warp = bool(getattr(g, "uses_warp", False))
        self.project = g.project
        self._torch = g
        self._checked = False
        args: tuple = (torch.zeros(1, 3, size, size), torch.zeros(1, g.P.shape[0]))
        self._names = ["y", "psi"]
        if self.uses_warp:
            args = (*args, torch.zeros(1, k or 1, 3, size, size))
            self._names.append("warped")
        graph = ort_engine.graph_for("generator", engine_key(g, size, k),
                                     lambda: ort_engine.export_graph(g, args, self._names, ["x"]))
        self._session = ort_engine.session(graph, threads)

    def __call__(self, y: torch.Tensor, psi: torch.Tensor, warped: torch.Tensor | None = None) -> torch.Tensor:
        # y (B,3,S,S), psi (B,n_adain), warped (B,K,3,S,S) → x̂ (B,3,S,S), as the torch generator
        feeds = dict(zip(self._names, (y, psi, warped)))
        arrays = {n: np.ascontiguousarray(t.detach().cpu().float().numpy()) for n, t in feeds.items()}
        out = torch.from_numpy(self._session.run(None, arrays)[0])
        if not self._checked:  # the first frame runs through torch too: a wrong graph must never ship
            with torch.no_grad():
                ref = self._torch(y[:1], psi[:1], None if warped is None else warped[:1])
            err = float((out[:1] - ref).abs().max())
            if not err <= AGREEMENT:
                raise RuntimeError(f"ONNX Runtime disagrees with torch by {err:.2e} on the first frame")
            self._checked = True
        return out


def runtime_generator(g: nn.Module, size: int, k: int | None, device: torch.device, engine: str = "auto"):
    """The fastest correct way to run the folded generator ``g`` here (see module docstring)."""
    if engine not in ENGINES:
        raise UserError(f"unknown --engine {engine!r} (use {', '.join(ENGINES)})")
    if engine == "torch" or device.type != "cpu":
        if engine == "onnx":
            raise UserError("--engine onnx runs on the CPU only; use --device cpu or --engine torch")
        return g
    if not ort_engine.onnx_available():
        if engine == "onnx":
            raise UserError("--engine onnx needs the onnx and onnxruntime packages (pip install onnx onnxruntime)")
        return g
    return OnnxGenerator(g, size, k, torch.get_num_threads())
