"""dlib's face-recognition ResNet read into torch: the identity network of th (CSIM, identity loss).

The paper's content loss (Zakharov et al. 2019, Sec. 3.2, Eq. 1) compares VGGFace activations of the
generated and real frame; VGGFace cannot be downloaded here. One pretrained face network is installed:
``dlib_face_recognition_resnet_model_v1.dat`` (face-recognition-models; public domain; a ResNet trained
with a metric loss on ~3M faces, 99.38 % on LFW). This module reads that file directly (dlib's DNN
serialization: dlib/dnn/core.h, layers.h, input.h, tensor.h; nothing converted by dlib, nothing pickled)
into :class:`FaceResNet`, the same topology as dlib's ``anet_type``::

    input_rgb_image_sized<150>  (x − mean_rgb) / 256
    con 32 7×7/2 (no padding) · affine · relu · max_pool 3×3/2 (no padding)      150 → 72 → 35
    4 stages of residual blocks  ares<N> = relu(x + affine(con(relu(affine(con(x))))))
                                 ares_down<N>: first con 3×3/2 unpadded, shortcut avg_pool 2×2/2,
                                 the sum zero-extends the smaller tensor (dlib's add_prev)
        32×3 @35 · 64×4 @17 · 128×3 @8 · 256×3 @4 · 256×1 @2
    avg_pool_everything · fc_no_bias 128                                        → descriptor (B,128)

dlib's ``affine_`` layers (batch norm folded into a per-channel scale and shift at export) are
:class:`Affine`. Input chips are 150×150 RGB faces aligned like ``dlib.get_face_chip`` (see
``synth.faces.chip``). Descriptors of one person lie within 0.6 (Euclidean) of each other.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synth.errors import UserError

DLIB_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150  # the network's input side (input_rgb_image_sized<150>)
CHIP_PADDING = 0.25  # dlib's default padding around the face in the chip (compute_face_descriptor)
# (width, blocks, first block halves the resolution): anet_type's alevel4 ... alevel0.
ANET_STAGES: tuple[tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True),
                                                  (256, 1, True))
FEATURE_STAGES = (0, 1, 2, 3)  # features(): outputs of the stages at 35, 17, 8 and 4 px


class Affine(nn.Module):
    """dlib's ``affine_`` layer in CONV_MODE: y = scale[c]·x + shift[c] (a batch norm frozen at export)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B,C,H,W) -> (B,C,H,W)
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def add_zero_extended(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, each input zero-extended at the end of every axis.

    Shortcuts with fewer channels, and a 3×3 branch added to a 4×4 pooled shortcut, are handled this way.
    """
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class ResBlock(nn.Module):
    """dlib's ``ares<N>`` (``down=False``) or ``ares_down<N>`` (``down=True``) with affine for batch norm."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        # dlib's con default padding: nr/2 for stride 1, none for stride 2
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.affine2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B,cin,H,W) -> (B,cout,H,W), or (B,cout,⌊(H−2)/2⌋+1,…) when down
        y = F.relu(self.affine1(self.conv1(x)))  # (B,cout,H',W') with H' = ⌊(H−3)/2⌋+1 when down
        y = self.affine2(self.conv2(y))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x  # (B,cin,⌊(H−2)/2⌋+1,…): can exceed H' by one
        return F.relu(add_zero_extended(y, skip))


class FaceFeatures(NamedTuple):
    maps: list[torch.Tensor]  # stage outputs at FEATURE_STAGES: (B,32,35,35) (B,64,17,17) (B,128,8,8) (B,256,4,4)
    descriptor: torch.Tensor  # (B,128)


class FaceResNet(nn.Module):
    """dlib's face-recognition ResNet (``anet_type``); chips (B,3,150,150) RGB in [-1, 1] → descriptors (B,128).

    Frozen after :func:`load_face_resnet`; differentiable with respect to the input chips.
    """

    def __init__(
        self,
        stem: int = 32,
        stages: tuple[tuple[int, int, bool], ...] = ANET_STAGES,
        dim: int = 128,
        mean_rgb: tuple[float, float, float] = (122.782, 117.001, 104.298),
        chip_size: int = CHIP_SIZE,
    ) -> None:
        super().__init__()
        self.chip_size = chip_size
        self.register_buffer("mean_rgb", torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.stem_conv = nn.Conv2d(3, stem, 7, stride=2, padding=0)
        self.stem_affine = Affine(stem)
        blocks = []
        cin = stem
        for width, n, down in stages:
            blocks.append(nn.Sequential(*(ResBlock(cin if i == 0 else width, width, down and i == 0) for i in range(n))))
            cin = width
        self.stages = nn.ModuleList(blocks)
        self.fc = nn.Linear(cin, dim, bias=False)

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        """dlib's input_rgb_image_sized: pixel values 0-255, per-channel mean subtracted, divided by 256."""
        return ((chips + 1.0) * 127.5 - self.mean_rgb) / 256.0

    def forward(self, chips: torch.Tensor) -> FaceFeatures:
        # chips (B,3,150,150) RGB in [-1,1]
        s = self.chip_size
        if chips.ndim != 4 or chips.shape[1:] != (3, s, s):
            raise ValueError(f"FaceResNet expects chips (B,3,{s},{s}), got {tuple(chips.shape)}")
        h = self.stem_affine(self.stem_conv(self.normalise(chips)))  # (B,32,72,72)
        h = F.max_pool2d(F.relu(h), 3, 2)  # (B,32,35,35)
        maps = []
        for i, stage in enumerate(self.stages):
            h = stage(h)  # (B,32,35,35) (B,64,17,17) (B,128,8,8) (B,256,4,4) (B,256,2,2)
            if i in FEATURE_STAGES:
                maps.append(h)
        return FaceFeatures(maps, self.fc(h.mean(dim=(2, 3))))  # avg_pool_everything -> (B,256) -> (B,128)

    def descriptor(self, chips: torch.Tensor) -> torch.Tensor:
        """128-D face descriptors (dlib's, unnormalised): chips (B,3,150,150) in [-1,1] → (B,128)."""
        return self(chips).descriptor

    def features(self, chips: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at FEATURE_STAGES (35, 17, 8 and 4 px) for a face-perceptual loss."""
        return self(chips).maps


# --- reading dlib's serialization -------------------------------------------------------------------

@dataclass
class DlibLayer:
    """One computational layer of a dlib network, as serialized (input side first)."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    args: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    loss: str
    input: str
    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DlibLayer]
    wrappers: list[int]  # add_layer / tag / skip versions, outermost first (tags and skips are version 1)


class _Stream:
    """dlib's serialize.h formats: variable-length integers, float_details, '0'/'1' bools, tensors."""

    def __init__(self, data: bytes, name: str) -> None:
        self.b = memoryview(data)
        self.pos = 0
        self.name = name

    def bad(self, what: str) -> UserError:
        return UserError(f"{self.name}: not a dlib face-recognition network file ({what}, at byte {self.pos})")

    def _take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.b):
            raise UserError(f"{self.name}: truncated dlib network file (ends at byte {len(self.b)} while "
                            f"reading {what})")
        out = self.b[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, what: str = "an integer") -> int:
        ctl = self._take(1, what)[0]
        size = ctl & 0x0F
        if ctl & 0x70 or size > 8:
            raise self.bad(f"bad integer control byte 0x{ctl:02x} reading {what}")
        value = int.from_bytes(self._take(size, what), "little")
        return -value if ctl & 0x80 else value

    def peek_string(self) -> str | None:
        """The string at the current position if one plausibly starts here (without consuming it)."""
        pos = self.pos
        try:
            n = self.int()
            if not 0 < n < 64:
                return None
            s = bytes(self._take(n, "a string"))
            return s.decode("ascii") if s.isascii() and s.replace(b"_", b"").isalnum() else None
        except UserError:
            return None
        finally:
            self.pos = pos

    def string(self, what: str = "a layer name") -> str:
        n = self.int(what)
        if not 0 <= n < 1 << 16:
            raise self.bad(f"implausible string length {n} reading {what}")
        return bytes(self._take(n, what)).decode("latin-1")

    def float(self, what: str = "a number") -> float:
        mantissa, exponent = self.int(what), self.int(what)
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}  # float_details::is_inf ...
        return special[exponent] if exponent in special else math.ldexp(mantissa, exponent)

    def bool(self, what: str = "a flag") -> bool:
        ch = self._take(1, what)[0]
        if ch not in b"01":
            raise self.bad(f"bad bool byte 0x{ch:02x} reading {what}")
        return ch == ord("1")

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        version = self.int(what)
        shape = tuple(self.int(what) for _ in range(4))  # num_samples, k, nr, nc
        if any(d < 0 for d in shape) or math.prod(shape) > 1 << 28:
            raise self.bad(f"implausible tensor shape {shape} reading {what}")
        n = math.prod(shape)
        if version == 2:  # 4-byte little-endian IEEE floats
            return np.frombuffer(self._take(4 * n, what), dtype="<f4").astype(np.float32).reshape(shape)
        if version == 1:  # older files: one float_details per value
            return np.array([self.float(what) for _ in range(n)], dtype=np.float32).reshape(shape)
        raise self.bad(f"unknown tensor version {version} reading {what}")

    def alias(self, what: str = "an alias tensor") -> tuple[int, int, int, int]:
        if self.int(what) != 1:
            raise self.bad(f"unknown alias_tensor version reading {what}")
        return tuple(self.int(what) for _ in range(4))  # type: ignore[return-value]


def _read_details(st: _Stream) -> DlibLayer:
    """One layer's details (layers.h serialize functions)."""
    name = st.string()
    if name in ("con_4", "con_5", "con_6"):
        params = st.tensor("con params")
        filters, nr, nc, sy, sx, py, px = (st.int("con shape") for _ in range(7))
        wshape, bshape = st.alias("con filters"), st.alias("con biases")
        for _ in range(4):
            st.float("con learning-rate multipliers")
        use_bias = st.bool("con use_bias") if name in ("con_5", "con_6") else True
        if name == "con_6" and st.bool("con use_relu"):
            raise st.bad("a con with a fused relu is not supported")
        flat = params.reshape(-1)
        nw = math.prod(wshape)
        if wshape[0] != filters or wshape[2:] != (nr, nc) or flat.size != nw + (filters if use_bias else 0):
            raise st.bad(f"inconsistent con parameters {wshape} {bshape} for {flat.size} values")
        tensors = {"weight": flat[:nw].reshape(wshape)}
        if use_bias:
            tensors["bias"] = flat[nw:nw + filters].copy()
        return DlibLayer("con", {"filters": filters, "nr": nr, "nc": nc, "stride_y": sy, "stride_x": sx,
                                 "padding_y": py, "padding_x": px, "bias": int(use_bias)}, tensors)
    if name in ("affine_", "affine_2"):
        params = st.tensor("affine params").reshape(-1)
        g, _b = st.alias("affine gamma"), st.alias("affine beta")
        mode = st.int("affine mode")
        if name == "affine_2" and st.bool("affine disabled"):
            raise st.bad("a disabled affine layer is not supported")
        n = math.prod(g)
        if mode != 0 or params.size != 2 * n:  # 0 = CONV_MODE: one scale and shift per channel
            raise st.bad(f"unsupported affine layer (mode {mode}, {params.size} values)")
        return DlibLayer("affine", {"channels": n}, {"scale": params[:n].copy(), "shift": params[n:].copy()})
    if name == "bn_con2":  # a batch norm: folded into scale and shift as dlib's affine_(bn_) does
        params = st.tensor("bn params").reshape(-1)
        st.alias("bn gamma"), st.alias("bn beta")
        st.tensor("bn means"), st.tensor("bn invstds")
        mean, var = st.tensor("bn running means").reshape(-1), st.tensor("bn running variances").reshape(-1)
        st.int("bn num_updates"), st.int("bn window")
        for _ in range(4):
            st.float("bn multipliers")
        eps = st.float("bn eps")
        n = mean.size
        scale = params[:n] / np.sqrt(var + eps)
        return DlibLayer("affine", {"channels": n},
                         {"scale": scale.astype(np.float32), "shift": (params[n:] - scale * mean).astype(np.float32)})
    if name == "relu_":
        return DlibLayer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (st.int("pool shape") for _ in range(6))
        return DlibLayer(name[:-2], {"nr": nr, "nc": nc, "stride_y": sy, "stride_x": sx, "padding_y": py,
                                     "padding_x": px})
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name in ("fc_2", "fc_3"):
        n_out, n_in = st.int("fc outputs"), st.int("fc inputs")
        params = st.tensor("fc params").reshape(-1)
        st.alias("fc weights"), st.alias("fc biases")
        bias_mode = st.int("fc bias mode")  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
        for _ in range(4):
            st.float("fc multipliers")
        if name == "fc_3":
            st.bool("fc use_bias")
        if params.size < n_in * n_out:
            raise st.bad(f"fc with {params.size} values for {n_in}×{n_out}")
        tensors = {"weight": params[:n_in * n_out].reshape(n_in, n_out).T.copy()}  # dlib: x (N,in) · W (in,out)
        if bias_mode == 0:
            tensors["bias"] = params[n_in * n_out:n_in * n_out + n_out].copy()
        return DlibLayer("fc", {"outputs": n_out, "inputs": n_in}, tensors)
    raise st.bad(f"unsupported layer {name!r}")


def _read_trailer(st: _Stream, version: int, input_layer: bool) -> None:
    """add_layer's bookkeeping after the details (core.h): flags and empty gradient/output tensors."""
    for what in ("setup flag", "gradient flag", "output flag"):
        st.bool(what)
    st.tensor("x_grad"), st.tensor("cached output")
    if input_layer:
        st.tensor("grad_final")
        if version >= 3:
            st.int("sample expansion factor")
    elif version == 2:
        st.tensor("params_grad")


def read_dlib_net(data: bytes, name: str = "network") -> DlibNet:
    """Parse a dlib DNN file (plain bytes) with a metric loss and an RGB input layer."""
    st = _Stream(data, name)
    if st.int("the loss layer version") != 1:
        raise st.bad("no dlib loss layer at the start")
    loss = st.string("the loss layer name")
    if loss != "loss_metric_2":
        raise st.bad(f"loss layer {loss!r}, expected the face-recognition network's loss_metric_2")
    st.float("margin"), st.float("distance threshold")
    wrappers = []
    while (s := st.peek_string()) is None or not s.startswith("input"):
        v = st.int("a layer version")
        if v not in (1, 2, 3) or len(wrappers) > 10_000:
            raise st.bad(f"unexpected layer version {v}")
        wrappers.append(v)
    if not wrappers:
        raise st.bad("no layers")
    input_version = wrappers.pop()  # the add_layer that holds the input layer
    input_name = st.string("the input layer")
    mean = (st.float("mean red"), st.float("mean green"), st.float("mean blue"))
    size = (st.int("input rows"), st.int("input columns")) if input_name == "input_rgb_image_sized" else (0, 0)
    if input_name not in ("input_rgb_image_sized", "input_rgb_image"):
        raise st.bad(f"input layer {input_name!r}")
    layers = [_read_details(st)]
    _read_trailer(st, input_version, input_layer=True)
    for v in reversed(wrappers):
        if v == 1:  # a tag or skip layer: only its version was written, before the subnetwork
            continue
        layers.append(_read_details(st))
        _read_trailer(st, v, input_layer=False)
    if st.pos != len(st.b):
        raise st.bad(f"{len(st.b) - st.pos} bytes left after the last layer")
    return DlibNet(loss, input_name, mean, size, layers, wrappers + [input_version])


def decompress(data: bytes) -> bytes:
    """The file's bytes, bz2/gzip/xz-decompressed when the header says so (dlib-models ships .dat.bz2)."""
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


# --- dlib layers → FaceResNet ----------------------------------------------------------------------

def _expect(layer: DlibLayer, kind: str, name: str, **args: int) -> DlibLayer:
    if layer.kind != kind or any(layer.args.get(k) != v for k, v in args.items()):
        raise UserError(f"{name}: not dlib's face-recognition ResNet (found {layer.kind} {layer.args}, expected "
                        f"{kind} {args})")
    return layer


def _conv(dst: nn.Conv2d, layer: DlibLayer, name: str) -> dict[str, torch.Tensor]:
    _expect(layer, "con", name, filters=dst.out_channels, nr=dst.kernel_size[0], nc=dst.kernel_size[1],
            stride_y=dst.stride[0], stride_x=dst.stride[1], padding_y=dst.padding[0], padding_x=dst.padding[1],
            bias=1)
    if layer.tensors["weight"].shape != tuple(dst.weight.shape):
        raise UserError(f"{name}: conv weight {layer.tensors['weight'].shape}, expected {tuple(dst.weight.shape)}")
    return {"weight": torch.from_numpy(layer.tensors["weight"].copy()), "bias": torch.from_numpy(layer.tensors["bias"])}


def _affine(dst: Affine, layer: DlibLayer, name: str) -> dict[str, torch.Tensor]:
    _expect(layer, "affine", name, channels=dst.scale.numel())
    return {"scale": torch.from_numpy(layer.tensors["scale"]), "shift": torch.from_numpy(layer.tensors["shift"])}


def state_dict_from_dlib(net: DlibNet, model: FaceResNet, name: str) -> dict[str, torch.Tensor]:
    """Map the serialized layers, in order, onto ``model``; any difference in topology is an error."""
    layers = iter(net.layers)

    def nxt() -> DlibLayer:
        try:
            return next(layers)
        except StopIteration:
            raise UserError(f"{name}: not dlib's face-recognition ResNet (too few layers)") from None

    sd: dict[str, torch.Tensor] = {}
    sd.update({f"stem_conv.{k}": v for k, v in _conv(model.stem_conv, nxt(), name).items()})
    sd.update({f"stem_affine.{k}": v for k, v in _affine(model.stem_affine, nxt(), name).items()})
    _expect(nxt(), "relu", name)
    _expect(nxt(), "max_pool", name, nr=3, nc=3, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            p = f"stages.{s}.{b}."
            sd.update({p + f"conv1.{k}": v for k, v in _conv(block.conv1, nxt(), name).items()})
            sd.update({p + f"affine1.{k}": v for k, v in _affine(block.affine1, nxt(), name).items()})
            _expect(nxt(), "relu", name)
            sd.update({p + f"conv2.{k}": v for k, v in _conv(block.conv2, nxt(), name).items()})
            sd.update({p + f"affine2.{k}": v for k, v in _affine(block.affine2, nxt(), name).items()})
            if block.down:
                _expect(nxt(), "avg_pool", name, nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
            _expect(nxt(), "add_prev", name)
            _expect(nxt(), "relu", name)
    _expect(nxt(), "avg_pool", name, nr=0, nc=0, stride_y=1, stride_x=1, padding_y=0, padding_x=0)
    fc = _expect(nxt(), "fc", name, outputs=model.fc.out_features, inputs=model.fc.in_features)
    if "bias" in fc.tensors:
        raise UserError(f"{name}: the descriptor layer has a bias (expected fc_no_bias)")
    sd["fc.weight"] = torch.from_numpy(fc.tensors["weight"])
    if next(layers, None) is not None:
        raise UserError(f"{name}: not dlib's face-recognition ResNet (more layers than anet_type)")
    # tags and skips (version 1): tag1 around every block's input; tag2 and skip1 as well in a down block
    if net.wrappers.count(1) != sum(1 + 2 * b.down for stage in model.stages for b in stage):
        raise UserError(f"{name}: not dlib's face-recognition ResNet (unexpected tag/skip layers)")
    return sd


def default_model_path() -> Path:
    """The .dat shipped by face-recognition-models."""
    from synth.faces.detector import model_file

    return model_file(DLIB_FILE)


def read_face_resnet(path: Path | None = None) -> FaceResNet:
    """Read dlib's face-recognition .dat (plain or bz2/gzip/xz) into a frozen, eval-mode FaceResNet."""
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise UserError(f"face-recognition model not found: {path}")
    name = str(path)
    try:
        data = decompress(path.read_bytes())
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise UserError(f"{name}: cannot read or decompress ({e})") from e
    net = read_dlib_net(data, name)
    if net.input != "input_rgb_image_sized" or net.input_size != (CHIP_SIZE, CHIP_SIZE):
        raise UserError(f"{name}: input layer {net.input} {net.input_size}, expected {CHIP_SIZE}×{CHIP_SIZE} RGB")
    model = FaceResNet(mean_rgb=net.mean_rgb)
    model.load_state_dict(state_dict_from_dlib(net, model, name), strict=True)
    model.requires_grad_(False)
    return model.eval()


@functools.lru_cache(maxsize=1)
def load_face_resnet() -> FaceResNet:
    """The shipped network, read once per process (frozen; share it, do not train it)."""
    return read_face_resnet()


def chips_to_tensor(chips: np.ndarray) -> torch.Tensor:
    """uint8 chips (N,S,S,3) → float (N,3,S,S) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def face_descriptors(images: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], batch: int = 16,
                     net: FaceResNet | None = None) -> np.ndarray:
    """dlib's 128-D descriptors of many (RGB uint8 image, landmarks (68,2) or (5,2) pixels) pairs: (N,128)
    float64, equal to ``compute_face_descriptor(image, shape)`` with those landmarks (within ~1e-6)."""
    from synth.faces.chip import face_chip

    if len(images) != len(landmarks):
        raise ValueError(f"{len(images)} images but {len(landmarks)} landmark sets")
    net = net if net is not None else load_face_resnet()
    device = net.fc.weight.device
    out = np.zeros((len(images), net.fc.out_features), np.float64)
    for i in range(0, len(images), batch):
        chips = np.stack([face_chip(img, lm, CHIP_SIZE, CHIP_PADDING)
                          for img, lm in zip(images[i:i + batch], landmarks[i:i + batch])])
        with torch.no_grad():
            out[i:i + len(chips)] = net.descriptor(chips_to_tensor(chips).to(device)).double().cpu().numpy()
    return out
