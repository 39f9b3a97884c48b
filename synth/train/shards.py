"""Training data written by `th prepare`: aligned face crops + landmarks in WebDataset-style tar shards.

Layout of a prepared folder::

    index.json              {"version", "size", "frames_per_clip", "clips": [...], "skipped": [...]}
    shards/{key}.tar        one sample per clip: {key}.frames.npy (uint8 N×S×S×3),
                            {key}.landmarks.npy (float32 N×68×2, crop pixels), {key}.json (metadata)
    report.json             what was skipped and why

One shard per clip keeps resumption trivial (a finished clip is a finished file) and lets ranks and
data-loader workers split the data by shard.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import UserError

INDEX_VERSION = 1


@dataclass
class ClipSamples:
    """The prepared frames of one clip."""

    key: str
    identity: str
    frames: np.ndarray  # uint8 (N, S, S, 3)
    landmarks: np.ndarray  # float32 (N, 68, 2), crop pixels
    meta: dict


def clip_key(rel_path: str) -> str:
    """A WebDataset-safe key for a clip path (no dots or slashes)."""
    stem = rel_path.rsplit(".", 1)[0] if "." in Path(rel_path).name else rel_path
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_shard(path: Path, sample: ClipSamples) -> None:
    """Write one clip's sample as an uncompressed tar (call inside atomic_path)."""
    with tarfile.open(path, "w") as tar:
        _add(tar, f"{sample.key}.frames.npy", _npy_bytes(sample.frames.astype(np.uint8)))
        _add(tar, f"{sample.key}.landmarks.npy", _npy_bytes(sample.landmarks.astype(np.float32)))
        _add(tar, f"{sample.key}.json", json.dumps({"identity": sample.identity, **sample.meta}).encode())


def iter_shard(path: Path | str) -> Iterator[ClipSamples]:
    """Yield the clip samples stored in one shard (members grouped by key, WebDataset style)."""
    groups: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, "r") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                f = tar.extractfile(m)
                assert f is not None
                groups.setdefault(key, {})[ext] = f.read()
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{path}: unreadable shard ({e})") from e
    for key, parts in groups.items():
        if not {"frames.npy", "landmarks.npy", "json"} <= parts.keys():
            raise UserError(f"{path}: shard sample {key} is incomplete")
        meta = json.loads(parts["json"])
        yield ClipSamples(
            key=key,
            identity=str(meta.get("identity", key)),
            frames=np.load(io.BytesIO(parts["frames.npy"]), allow_pickle=False),
            landmarks=np.load(io.BytesIO(parts["landmarks.npy"]), allow_pickle=False),
            meta=meta,
        )


def shard_meta(path: Path | str) -> dict:
    """Only the JSON metadata of a one-clip shard (cheap: the frame arrays are not read)."""
    with tarfile.open(path, "r") as tar:
        for m in tar:
            if m.isfile() and m.name.endswith(".json"):
                f = tar.extractfile(m)
                assert f is not None
                return json.loads(f.read())
    raise UserError(f"{path}: shard has no metadata")


def read_index(root: Path | str) -> dict:
    """Load and check a prepared folder's index.json."""
    root = Path(root)
    path = root / "index.json"
    if not path.exists():
        raise UserError(f"{root}: not a prepared data folder (no index.json; run `th prepare` first)")
    index = json.loads(path.read_text())
    if index.get("version") != INDEX_VERSION:
        raise UserError(f"{path}: index version {index.get('version')} is not {INDEX_VERSION}")
    return index


def load_prepared(root: Path | str, identities: set[str] | None = None) -> list[ClipSamples]:
    """All clips of a prepared folder in index order (optionally only some identities)."""
    root = Path(root)
    index = read_index(root)
    out: list[ClipSamples] = []
    for clip in index["clips"]:
        if identities is not None and clip["identity"] not in identities:
            continue
        out.extend(iter_shard(root / clip["shard"]))
    return out
