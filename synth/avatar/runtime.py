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
import torch.nn.functional as F
from torch import nn

from synth.errors import UserError
from synth.nets import engine as ort_engine
from synth.nets.engine import ENGINES

AGREEMENT = 1e-3  # largest |onnx − torch| accepted on the first frame (measured: ~2e-6)


def engine_key(g: nn.Module, size: int, k: int | None) -> str:
    """The cache key of ``g``'s graph: its weights, size and K (the branch for K > 1 is fixed at export)."""
    return ort_engine.state_key(g, size, k, "subpixel-head-v1" if hasattr(g, "head") else "")


# Bilinear ×2 (align_corners=False) then a 3×3 tap, per output phase a (even/odd row) and tap dy: the weights of
# the low-resolution rows i-1, i, i+1 (replicate padding at the edges stands in for bilinear's clamping).
_BILINEAR_TAPS = torch.tensor([[[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25]],
                               [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]]])


class SubpixelWarpGenerator(nn.Module):
    """The warp-guided generator with its full-size output head rewritten for speed, same function.

    The head convolves [bilinear×2(h), W, y] (4 channels out at S², 36 % of ONNX Runtime's time). Bilinear
    upsampling and the convolution are both linear, so the h part equals ONE 3×3 convolution of h at S/2 with
    16 channels out (4 outputs × 4 sub-pixel phases) followed by a pixel shuffle; W and y keep their small
    convolution at S². That identity holds wherever the head's zero padding is not involved: the one-pixel
    border ring is recomputed the original way on thin strips. Measured 22.8 → 19.0 ms/frame (1 thread).
    """

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g
        c = g.head.in_channels - 6
        wt = g.head.weight.detach()
        k = torch.einsum("ocyx,ayp,bxq->oabcpq", wt[:, :c], _BILINEAR_TAPS, _BILINEAR_TAPS)
        self.sub = nn.Parameter(k.reshape(4 * 4, c, 3, 3).contiguous(), requires_grad=False)  # (o,a,b) → 16
        self.rest = nn.Parameter(wt[:, c:].contiguous(), requires_grad=False)

    def _ring(self, h: torch.Tensor, wy: torch.Tensor, rows: bool, first: bool) -> torch.Tensor:
        """The head's exact output on the first/last row (``rows``) or column, from 2 low-res lines of h."""
        sl = slice(0, 2) if first else slice(-2, None)
        hs = h[:, :, sl] if rows else h[:, :, :, sl]
        up = F.interpolate(hs, scale_factor=2.0, mode="bilinear", align_corners=False)  # 4 lines: 2 exact
        up, wys = (up[:, :, sl], wy[:, :, sl]) if rows else (up[:, :, :, sl], wy[:, :, :, sl])
        o = F.conv2d(torch.cat([up, wys], 1), self.g.head.weight, self.g.head.bias, padding=1)
        i = slice(0, 1) if first else slice(-1, None)
        return o[:, :, i] if rows else o[:, :, :, i]

    def forward(self, y: torch.Tensor, psi: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
        h, w, _ = self.g.features(y, psi, warped)  # h (B,c,S/2,S/2)
        wy = torch.cat([w, y], 1)  # (B,6,S,S)
        o = (F.pixel_shuffle(F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), self.sub), 2)
             + F.conv2d(wy, self.rest, self.g.head.bias, padding=1))  # (B,4,S,S), exact but on the border
        mid = torch.cat([self._ring(h, wy, False, True)[:, :, 1:-1], o[:, :, 1:-1, 1:-1],
                         self._ring(h, wy, False, False)[:, :, 1:-1]], dim=3)
        o = torch.cat([self._ring(h, wy, True, True), mid, self._ring(h, wy, True, False)], dim=2)
        return self.g.compose(o, w)["out"]


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
        exported = SubpixelWarpGenerator(g) if hasattr(g, "head") else g
        self.key = engine_key(g, size, k)  # the cached graph's name (synth.avatar.compiled refers to it)
        graph = ort_engine.graph_for("generator", self.key,
                                     lambda: ort_engine.export_graph(exported, args, self._names, ["x"]))
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
                raise UserError(f"ONNX Runtime disagrees with torch by {err:.2e} on the first frame (a damaged "
                                f"cache? remove {ort_engine.cache_dir()}), or use --engine torch")
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
