"""ONNX Runtime for th's networks on a CPU: export once per set of weights, cache the graph, run sessions.

Measured: ONNX Runtime runs the warp-guided generator 2.1× faster than torch on 2 threads (docs/MODEL.md),
and a cached graph needs neither torch's exporter nor (for the detector) torch and timm at all, which
is most of `th verify`'s start-up. Graphs live in ``$TH_HOME/cache/engine/<name>-<sha256>.onnx``; the key
covers everything the graph depends on, the newest ``CACHE_KEEP`` are kept. Callers check a session's
first output against torch where torch is loaded anyway, so a wrong graph fails loudly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import warnings
from collections.abc import Callable
from pathlib import Path

from synth.errors import UserError
from synth.media.atomic import atomic_write_bytes

ENGINES = ("auto", "onnx", "torch")  # `th animate --engine`: auto = ONNX Runtime on a CPU when installed
CACHE_KEEP = 8  # cached graphs kept (~7 MB each for the default generator)
OPSET = 17


def onnx_available(export: bool = True) -> bool:
    """onnxruntime (and, to ``export``, onnx, which torch's exporter needs) is installed; found without
    importing them (onnx alone takes ~1 s to import, and a cached graph does not need it)."""
    mods = ("onnx", "onnxruntime") if export else ("onnxruntime",)
    return all(importlib.util.find_spec(m) is not None for m in mods)


def cache_dir() -> Path:
    from synth.media.workdir import th_home

    return th_home() / "cache" / "engine"


def state_key(module, *extra: object) -> str:
    """sha256 of a torch module's weights (names and bytes), its class, ``extra`` and torch's version."""
    import torch

    h = hashlib.sha256(f"{type(module).__name__}|{extra}|{torch.__version__}|opset{OPSET}".encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_graph(name: str, key: str) -> bytes | None:
    """The cached graph ``name-key``, or None."""
    path = cache_dir() / f"{name}-{key}.onnx"
    try:
        graph = path.read_bytes()
        path.touch()  # least recently used goes first
    except OSError:
        return None
    return graph


def export_graph(module, args: tuple, input_names: list[str], output_names: list[str]) -> bytes:
    """torch → ONNX bytes with a dynamic batch axis on every input and output."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter warns about the tracer and the deprecated exporter
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=output_names,
                          dynamic_axes={n: {0: "b"} for n in [*input_names, *output_names]})
    return buf.getvalue()


def graph_for(name: str, key: str, export: Callable[[], bytes]) -> bytes:
    """The cached graph for ``key``, else ``export()`` it and cache it (best effort: a read-only home or a
    full disk only means the next run exports again)."""
    graph = cached_graph(name, key)
    if graph is not None:
        return graph
    graph = export()
    path = cache_dir() / f"{name}-{key}.onnx"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, graph, force=True)
        for old in sorted(path.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime)[:-CACHE_KEEP]:
            old.unlink(missing_ok=True)
    except (OSError, UserError):
        pass
    return graph


def session(graph: bytes, threads: int):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Idle workers sleep instead of spinning (as OMP_WAIT_POLICY=PASSIVE for torch): in `th animate` the session
    # shares two cores with the tracker and the encoder, and spinning cost 1.4 s of an 11.5 s run (measured).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
