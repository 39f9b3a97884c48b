"""The detector network: a small timm backbone (trained from scratch) with one logit, real → 0, fake → 1.

Input: the canonical face crop (``synth.faces.align``) at ``input_size`` px, RGB, normalised with the mean/std
timm's data config gives the architecture. Weights are safetensors; the architecture, input size,
normalisation and the calibrated threshold travel in the file's metadata, so a weights file describes
itself (the card JSON beside it adds data, splits and metrics).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from synth.errors import UserError

WEIGHTS_FORMAT = "th-detector"
WEIGHTS_FORMAT_VERSION = 1
BUNDLED_WEIGHTS = "th-detector.safetensors"
BUNDLED_CARD = "th-detector.card.json"
DEFAULT_ARCH = "mobilenetv3_small_100"
DEFAULT_INPUT = 128


@dataclass(frozen=True)
class DetectorSpec:
    """Everything needed to rebuild the network and feed it: stored in the weights' metadata."""

    arch: str = DEFAULT_ARCH
    input_size: int = DEFAULT_INPUT
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    threshold: float = 0.5  # on the fake probability; calibrated at 1 % FPR on held-out real identities
    aggregate: str = "median"  # per-file score = this statistic of the per-frame probabilities
    # The temporal stage (detect.temporal.Head as a dict): a video is scored per window from its pairs of consecutive
    # frames, and ``threshold`` applies to the median over windows. A still image has no pair: the CNN alone scores
    # it, against ``image_threshold``. None (older weights): the CNN scores everything against ``threshold``.
    temporal: dict | None = None
    image_threshold: float | None = None

    @staticmethod
    def for_arch(arch: str, input_size: int) -> DetectorSpec:
        """Mean/std from timm's data config for ``arch`` (resolve_data_config), at our own input size."""
        import timm
        from timm.data import resolve_data_config

        net = timm.create_model(arch, pretrained=False, num_classes=1)
        cfg = resolve_data_config({"input_size": (3, input_size, input_size)}, model=net)
        return DetectorSpec(arch, input_size, tuple(float(v) for v in cfg["mean"]),
                            tuple(float(v) for v in cfg["std"]))


def build_network(spec: DetectorSpec):
    """The timm backbone with a single-logit head, randomly initialised (no pretrained weights offline)."""
    import timm

    return timm.create_model(spec.arch, pretrained=False, num_classes=1)


class Detector:
    """A loaded detector: ``probabilities(crops)`` → fake probability per canonical crop."""

    def __init__(self, spec: DetectorSpec, net, sha256: str | None = None) -> None:
        import torch

        self.spec = spec
        self.net = net.eval()
        self.sha256 = sha256
        self._mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std).view(1, 3, 1, 1)

    def to_tensor(self, crops: np.ndarray):
        """uint8 (B,S,S,3) crops at input size → normalised float (B,3,S,S)."""
        import torch

        s = self.spec.input_size
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or crops.dtype != np.uint8:
            raise ValueError(f"expected uint8 crops (B,{s},{s},3), got {crops.dtype} {crops.shape}")
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
        return (x - self._mean) / self._std

    def logits(self, x):
        """(B,3,S,S) normalised → (B,) logits."""
        return self.net(x)[:, 0]

    def probabilities(self, crops: np.ndarray, batch: int = 64) -> np.ndarray:
        """Fake probability per crop (float64 (B,)); deterministic for the same input."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(crops), batch):
                out.append(torch.sigmoid(self.logits(self.to_tensor(crops[i:i + batch]))).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def save(self, path: Path | str, force: bool = False) -> str:
        """Write safetensors weights with the spec as metadata (atomically); returns the sha256."""
        import hashlib

        from safetensors.torch import save_file

        from synth.media.atomic import atomic_path

        tensors = {k: v.detach().float().cpu().contiguous().clone() for k, v in self.net.state_dict().items()
                   if v.dtype.is_floating_point}
        meta = {"format": WEIGHTS_FORMAT, "format_version": str(WEIGHTS_FORMAT_VERSION),
                "spec": json.dumps(asdict(self.spec))}
        with atomic_path(path, force=force) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    @staticmethod
    def load(path: Path | str | None = None) -> Detector:
        """Load weights written by ``save`` (default: the bundled ones), refusing anything else."""
        import hashlib

        from safetensors.torch import load_file

        path = Path(path) if path is not None else bundled_weights()
        spec = read_spec(path)
        try:
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for foreign files
            raise UserError(f"{path}: not a th detector weights file ({e.__class__.__name__})") from e
        net = build_network(spec)
        missing, unexpected = net.load_state_dict(tensors, strict=False)
        if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
            raise UserError(f"{path}: weights do not fit {spec.arch} (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return Detector(spec, net, hashlib.sha256(path.read_bytes()).hexdigest())


def read_spec(path: Path) -> DetectorSpec:
    """The spec in a weights file's metadata (no torch needed), refusing anything but th detector weights."""
    from safetensors import safe_open

    if not path.is_file():
        raise UserError(f"detector weights not found: {path}")
    try:
        with safe_open(str(path), "np") as fh:
            meta = fh.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for foreign files
        raise UserError(f"{path}: not a th detector weights file ({e.__class__.__name__})") from e
    if meta.get("format") != WEIGHTS_FORMAT:
        raise UserError(f"{path}: a safetensors file, but not th detector weights")
    if int(meta.get("format_version", "0")) > WEIGHTS_FORMAT_VERSION:
        raise UserError(f"{path}: detector format {meta['format_version']} needs a newer th")
    raw = json.loads(meta["spec"])
    if raw.get("temporal") is not None:
        from detect.temporal import Head

        try:
            Head.from_dict(raw["temporal"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: damaged temporal stage in the detector's metadata ({e})") from e
    return DetectorSpec(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})


class OnnxDetector:
    """A detector's network run by ONNX Runtime: the same ``spec``, ``sha256`` and ``probabilities`` as
    ``Detector``, without importing torch or timm (~6 s of `th verify`'s start-up). The graph is exported from
    the weights once and cached (synth.nets.engine); the export is checked against torch on a batch of crops."""

    AGREEMENT = 1e-4  # largest |onnx − torch| probability accepted at export (measured below 1e-6)

    def __init__(self, spec: DetectorSpec, session, sha256: str) -> None:
        self.spec = spec
        self.sha256 = sha256
        self._session = session
        self._mean = np.array(spec.mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.array(spec.std, np.float32).reshape(1, 3, 1, 1)

    def probabilities(self, crops: np.ndarray, batch: int = 64) -> np.ndarray:
        """Fake probability per crop (float64 (B,)), as ``Detector.probabilities``."""
        s = self.spec.input_size
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3) or crops.dtype != np.uint8:
            raise ValueError(f"expected uint8 crops (B,{s},{s},3), got {crops.dtype} {crops.shape}")
        out = []
        for i in range(0, len(crops), batch):
            x = (crops[i:i + batch].transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - self._mean) / self._std
            logit = self._session.run(None, {"x": np.ascontiguousarray(x)})[0][:, 0].astype(np.float64)
            out.append(1.0 / (1.0 + np.exp(-logit)))
        return np.concatenate(out) if out else np.zeros(0)


def load_scorer(path: Path | str | None = None):
    """The fastest loaded form of a detector for scoring: ``OnnxDetector`` when ONNX Runtime is installed
    (from the cached graph, else exported now and checked), else ``Detector``."""
    import hashlib

    from synth.device import thread_count
    from synth.nets import engine

    path = Path(path) if path is not None else bundled_weights()
    spec = read_spec(path)
    if not engine.onnx_available(export=False):
        return Detector.load(path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    threads = thread_count()
    graph = engine.cached_graph("detector", sha)
    if graph is not None:
        return OnnxDetector(spec, engine.session(graph, threads), sha)
    if not engine.onnx_available(export=True):
        return Detector.load(path)
    det = Detector.load(path)
    s = spec.input_size
    crops = np.random.default_rng(0).integers(0, 256, (4, s, s, 3), dtype=np.uint8)
    graph = engine.export_graph(det.net, (det.to_tensor(crops),), ["x"], ["logit"])
    fast = OnnxDetector(spec, engine.session(graph, threads), sha)
    err = float(np.abs(fast.probabilities(crops) - det.probabilities(crops)).max())
    if not err <= OnnxDetector.AGREEMENT:
        return det  # never score with a graph that disagrees; torch is loaded anyway
    engine.graph_for("detector", sha, lambda: graph)
    return fast


def bundled_weights() -> Path:
    """The detector shipped in detect/assets (found with importlib.resources)."""
    return Path(str(resources.files("detect") / "assets" / BUNDLED_WEIGHTS))


def has_bundled_weights() -> bool:
    return bundled_weights().is_file()
