"""The generator as animation runs it: the same folded network, executed by ONNX Runtime on a CPU.

Measured (bench/bench_model.py, 256 px, 2 threads): torch's convolutions are slow for this generator's
shapes — a 4-channel output head at full size, 8×8 bottleneck convolutions that fall back to torch's slow
path, layout copies around instance norm — and ONNX Runtime's fused CPU kernels run the identical graph about
twice as fast. The exported graph is the folded generator itself (spectral norm already divided in, fine-tuned
weights included), exported once per ``th animate`` in memory and checked against torch on its first frame:
outputs agree to ~1e-6, so the engine changes speed, never pictures.

``engine``: ``auto`` (ONNX Runtime on a CPU when it is installed, else torch), ``onnx`` or ``torch``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from synth.errors import UserError

ENGINES = ("auto", "onnx", "torch")
AGREEMENT = 1e-3  # largest |onnx − torch| accepted on the first frame (measured: ~2e-6)


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


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
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter warns about the tracer and the deprecated exporter
            torch.onnx.export(g, args, buf, dynamo=False, opset_version=17, input_names=names,
                              output_names=["x"], dynamic_axes={n: {0: "b"} for n in [*names, "x"]})
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self._names = names
        self._session = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])

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
