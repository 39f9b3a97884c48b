"""The detector's temporal stage (detect.temporal): its data, its fit into detector weights, and its evaluation
through the shipped scorer. th's files as shipped (scripts/detect_shipped.py `gen`: photo- and frame-enrolled,
built-in motions and real driver clips) against every real clip of the share re-written by th's write path, that copy
through the re-uploader's chain, and the clip as it is.

    python scripts/detect_shipped.py gen [--source clips] [--driver video]   # th files (4 runs: docs/DETECTOR.md)
    python scripts/detect_temporal.py extract    # per file (raw and chained) 16 pairs (t, t+1) in its first 100
                                                 # frames: dlib 150 px chips cut with frame t's landmarks, frame t's
                                                 # canonical crop; the later windows of each real clip as it is
    python scripts/detect_temporal.py temporal   # detect.temporal.pair_features + the CNN's logit per pair
    python scripts/detect_temporal.py fit        # the selection grid (val numbers only)
    python scripts/detect_temporal.py fit --groups pix+flow --l2 1e-3 --write W   # fit, report test + foreign, store
    python scripts/detect_temporal.py score      # the shipped scorer (detect.score_file) on every file
    python scripts/detect_temporal.py features   # measured, not used: frozen face ResNet statistics per pair

Splits (as detect_shipped.py): real clips of the dev identities = test reals; a seeded fifth of the other
identities = val reals; th files of dev identities and a seeded third of the others = test fakes, of which the
non-dev ones are the val fakes. The head and its features are chosen on val only; test and foreign_fakes/ are
reported, never used to choose. Work files: runs/shipped/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import detect_shipped as ds  # noqa: E402

WORK = ds.WORK


def file_chips(path: Path, start: int = 0) -> dict[str, np.ndarray]:
    """One window (frames [start, start+100)) of a file as the scorer cuts it (detect.score.pair_chips): its 16
    pairs' 150 px chips of t and t+1, frame t's canonical crop and landmarks."""
    from detect import temporal
    from detect.score import pair_chips
    from synth.media.video import iter_frames

    frames = list(iter_frames(path, max_frames=start + temporal.WINDOW_FRAMES))[start:]
    pairs = [(frames[t], frames[t + 1]) for t in temporal.window_pairs(0, len(frames))] if len(frames) >= 2 else []
    _, chips, nexts, crops, marks = pair_chips(pairs, 128)  # 128: the bundled CNN's input
    return {"chips": chips, "next": nexts, "crops": crops, "landmarks": marks}


def extract() -> None:
    from detect.score import window_starts
    from provenance import attacks
    from synth.media.video import probe

    rows = ds.manifest()
    jobs = [("real", ds.DATA / r[0]) for r in rows if r[1] == "clip"]
    jobs += [("asis", ds.DATA / r[0]) for r in rows if r[1] == "clip"]  # the clip as it is, not re-written
    jobs += [("foreign", ds.DATA / r[0]) for r in rows if r[1] == "foreign_fake"]
    jobs += [("fake", p) for p in sorted((WORK / "out").glob("*.mp4"))]
    (WORK / "chips").mkdir(parents=True, exist_ok=True)
    for kind, path in jobs:
        dest = WORK / "chips" / f"{kind}__{path.stem}.npz"
        if dest.exists() and "raw_crops" in np.load(dest).files:
            continue
        with tempfile.TemporaryDirectory() as td:
            src = ds.marked_copy(path, Path(td) / "marked.mp4") if kind == "real" else path
            raw = file_chips(src)
            chain = file_chips(attacks.chain_video(src, Path(td) / "chain.mp4", "chain")) if kind != "asis" else raw
        np.savez_compressed(dest, **{f"raw_{k}": v for k, v in raw.items()}, **{f"chain_{k}": v for k, v in chain.items()})
        print(kind, path.name, len(raw["chips"]), len(chain["chips"]), flush=True)
    for r in rows:  # the later windows of every real clip as it is (the scorer reads up to 4 windows of a file)
        if r[1] != "clip":
            continue
        for start in window_starts(probe(ds.DATA / r[0]).frames or 0, 4)[1:]:
            dest = WORK / "chips" / f"asis__{Path(r[0]).stem}@{start}.npz"
            if not dest.exists():
                got = file_chips(ds.DATA / r[0], start)
                np.savez_compressed(dest, **{f"{w}_{k}": v for k, v in got.items() for w in ("raw", "chain")})
                print("asis", r[0], start, len(got["chips"]), flush=True)


def _net_stats(net, chips: np.ndarray, nexts: np.ndarray) -> np.ndarray:
    """Frozen face ResNet: per stage, channel mean and std over space; the 128-D descriptor; and per channel of
    the first two stages the mean |change| from t to t+1."""
    import torch

    from synth.nets.face_resnet import chips_to_tensor

    out = []
    for i in range(0, len(chips), 32):
        with torch.no_grad():
            fa = net(chips_to_tensor(chips[i:i + 32]))
            fb = net(chips_to_tensor(nexts[i:i + 32]))
        parts = [torch.cat([m.mean((2, 3)), m.std((2, 3))], 1) for m in fa.maps]
        parts.append(fa.descriptor)
        parts += [(ma - mb).abs().mean((2, 3)) for ma, mb in zip(fa.maps[:2], fb.maps[:2])]
        out.append(torch.cat(parts, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def features() -> None:
    """The frozen face ResNet's statistics per pair (runs/shipped/feats/; measured, not used: docs/DETECTOR.md)."""
    import torch

    from detect import temporal
    from synth.nets.face_resnet import load_face_resnet

    torch.set_num_threads(1)
    net = load_face_resnet().eval()
    (WORK / "feats").mkdir(parents=True, exist_ok=True)
    for p in sorted((WORK / "chips").glob("*.npz")):
        dest = WORK / "feats" / p.name
        if dest.exists():
            continue
        z = np.load(p)
        got = {}
        for which in ("raw", "chain"):
            a, b = temporal.equalise(z[f"{which}_chips"]), temporal.equalise(z[f"{which}_next"])
            if len(a):
                got[f"{which}_net"] = _net_stats(net, a, b)
            else:
                got[f"{which}_net"] = np.zeros((0, 1184), np.float32)
        np.savez(dest, **got)
        print(p.stem, flush=True)


def temporal_features() -> None:
    """Per pair: detect.temporal.pair_features and the bundled CNN's logit on frame t's canonical crop
    (runs/shipped/temporal/)."""
    from detect import temporal
    from detect.model import load_scorer

    cnn = load_scorer()
    (WORK / "temporal").mkdir(parents=True, exist_ok=True)
    for p in sorted((WORK / "chips").glob("*.npz")):
        dest = WORK / "temporal" / p.name
        z = np.load(p)
        if dest.exists() or "raw_crops" not in z.files:
            continue
        got = {}
        for which in ("raw", "chain"):
            a, b, c = temporal.equalise(z[f"{which}_chips"]), temporal.equalise(z[f"{which}_next"]), z[f"{which}_crops"]
            got[f"{which}_pairs"] = temporal.pair_features(a, b)
            prob = np.clip(cnn.probabilities(c), 1e-6, 1 - 1e-6) if len(c) else np.zeros(0)
            got[f"{which}_cnn"] = np.log(prob / (1 - prob))
        np.savez(dest, **got)


class FeatureSet:
    """Per-pair columns (detect.temporal.COLUMNS) of every file: (kind, stem) → {"raw"|"chain": (N, 20)}."""

    def __init__(self) -> None:
        self.identity = {Path(r[0]).stem: r[2] for r in ds.manifest()}
        self.identity |= {f"clip-{k}": v for k, v in self.identity.items()}  # enrolled from a clip's frame
        self.identity |= {f"drv-{k}": v for k, v in self.identity.items()}  # driven by a real clip
        self.dev = ds.dev_identities()
        self.files: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        from detect import temporal

        for p in sorted((WORK / "temporal").glob("*.npz")):
            kind, stem = p.stem.split("__", 1)
            z = np.load(p)
            self.files[(kind, stem)] = {w: temporal.columns(z[f"{w}_pairs"], z[f"{w}_cnn"]) for w in ("raw", "chain")}

    def split(self, kind: str, stem: str) -> str:
        ident = self.identity[stem.split("@")[0]]  # name@start: a later window of that clip
        if kind == "foreign":
            return "eval"
        if kind in ("real", "asis"):  # a real clip re-written by th's write path, or as it is
            return ds.real_split(ident, self.dev)
        if ident in self.dev:
            return "test"
        return "val" if ds.fake_split(ident, self.dev) == "test" else "train"

    def windows(self, kind: str, split: str | None, which: str, names: tuple[str, ...]):
        """(stem, window vector) of each file with enough pairs with a face."""
        from detect import temporal

        cols = [temporal.COLUMNS.index(n) for n in names]
        return [(s, temporal.window_vector(v[which][:, cols])) for (k, s), v in self.files.items()
                if k == kind and (split is None or self.split(k, s) == split) and len(v[which]) >= temporal.MIN_PAIRS]


def enrollment(stem: str) -> str:
    """How a th file was made: from a photo with a built-in motion, from a clip's frame, or driven by a real clip."""
    return "video-driven" if stem.startswith("drv-") else "frame-enrolled" if stem.startswith("clip-") else "photo+motion"


GROUPS = {"pix+flow": lambda c: c[:-1], "pix+flow+cnn": lambda c: c}


def fit(groups: list[str], l2s: list[float], write: Path | None) -> None:
    """Fit a head per (group, l2) on the train split, calibrate on the val reals (the largest window score: no val
    real window flagged), print val; with ``write``, the single (group, l2) given is also reported on test and
    foreign_fakes/ and stored in the detector weights ``write``."""
    from detect import temporal
    from detect.metrics import roc_auc

    data = FeatureSet()
    for group in groups:
        names = tuple(GROUPS[group](temporal.COLUMNS))
        labelled = [(v, 0.0) for w in ("raw", "chain") for _, v in data.windows("real", "train", w, names)]
        labelled += [(v, 0.0) for _, v in data.windows("asis", "train", "raw", names)]
        labelled += [(v, 1.0) for w in ("raw", "chain") for _, v in data.windows("fake", "train", w, names)]
        x, y = np.stack([v for v, _ in labelled]), np.array([t for _, t in labelled])
        for l2 in l2s:
            head = temporal.fit_head(x, y, names, l2)
            score = head.window_probability
            thr = max(score(v) for k, w in (("real", "raw"), ("real", "chain"), ("asis", "raw"))
                      for _, v in data.windows(k, "val", w, names))
            row = [f"{group} l2={l2:g} threshold {thr:.4f}"]
            for split in ("val", "test") if write else ("val",):
                for which in ("raw", "chain"):
                    r = np.array([score(v) for _, v in data.windows("real", split, which, names)])
                    fk = data.windows("fake", split, which, names)
                    f = np.array([score(v) for _, v in fk])
                    by = {e: np.mean([score(v) > thr for s, v in fk if enrollment(s) == e])
                          for e in ("photo+motion", "frame-enrolled", "video-driven")}
                    row.append(f"{split}-{which}: files real {len(r)} fake {len(f)} AUC {roc_auc(r, f):.3f} flagged "
                               f"{np.mean(f > thr):.0%} ({', '.join(f'{e} {v:.0%}' for e, v in by.items())}) "
                               f"real flagged {np.sum(r > thr)}/{len(r)}")
                asis = np.array([score(v) for _, v in data.windows("asis", split, "raw", names)])
                row.append(f"{split} real clips as they are: {np.sum(asis > thr)}/{len(asis)} flagged")
            if write:
                asis = np.array([score(v) for _, v in data.windows("asis", "test", "raw", names)])
                foreign = np.array([score(v) for _, v in data.windows("foreign", None, "raw", names)])
                row.append(f"foreign_fakes vs dev real clips as they are: AUC {roc_auc(asis, foreign):.3f}, foreign "
                           f"flagged {np.sum(foreign > thr)}/{len(foreign)}, real flagged {np.sum(asis > thr)}/{len(asis)}")
                kinds = {}
                for (k, stem), _ in data.files.items():
                    if k == "fake":
                        key = f"{enrollment(stem)}:{data.split(k, stem)}"
                        kinds[key] = kinds.get(key, 0) + 1
                store(write, head, thr, {"group": group, "l2": l2, "report": row, "fake_files": kinds,
                                         "train_windows": {"real": int((y == 0).sum()), "fake": int((y == 1).sum())}})
            print("\n    ".join(row), flush=True)


COMMANDS = [
    "python scripts/detect_shipped.py gen",
    "python scripts/detect_shipped.py gen --source clips",
    "python scripts/detect_shipped.py gen --driver video",
    "python scripts/detect_shipped.py gen --source clips --driver video   # stopped after 70 of 109 identities",
    "python scripts/detect_temporal.py extract && python scripts/detect_temporal.py temporal",
    "python scripts/detect_temporal.py fit   # the selection grid, val only",
    "python scripts/detect_temporal.py fit --groups pix+flow --l2 1e-3 --write detect/assets/th-detector.safetensors",
]


def store(path: Path, head, threshold: float, facts: dict) -> None:
    """The head and its threshold into detector weights (the CNN's threshold kept for still images), and the
    card beside them (``<stem>.card.json``) updated: sha256, thresholds, the temporal stage's data and metrics."""
    import dataclasses
    import json

    from detect import temporal
    from detect.model import Detector

    det = Detector.load(path)
    image_threshold = det.spec.image_threshold if det.spec.temporal is not None else det.spec.threshold
    det.spec = dataclasses.replace(det.spec, temporal=head.to_dict(), threshold=threshold,
                                   image_threshold=image_threshold)
    sha = det.save(path, force=True)
    card_path = path.with_name(path.stem + ".card.json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card |= {"id": f"th-detector-{sha[:12]}", "sha256": sha, "threshold": threshold, "image_threshold": image_threshold,
             "aggregate": "median over windows (videos) / frames (stills)"}
    card["temporal"] = {
        "module": "detect.temporal", "columns": list(head.columns),
        "window": {"frames": temporal.WINDOW_FRAMES, "pairs": temporal.WINDOW_PAIRS, "min_pairs": temporal.MIN_PAIRS},
        "head": f"logistic regression on per-window medians and spreads, L2 {facts['l2']:g}, classes weighted equally",
        "selection": "group and L2 chosen on the val split only (mean of the val flag rates raw and chained, then "
                     "AUC); test and foreign_fakes/ reported once for the chosen head",
        "threshold": "the largest score of a val real window (th-written copies raw and chained, and every window "
                     "the scorer reads of the clips as they are): no val real window flagged",
        "data": {"real": "every clip of ../shared/data/clips: its first 100 frames re-written by th's write path "
                         "(watermark + H.264) and that copy through the re-uploader's chain (one window each), and the "
                         "clip as it is (every window the scorer reads: up to 4)",
                 "fake": "th animate outputs (scripts/detect_shipped.py gen): one-shot, feed-forward, 4 s (driven by a "
                         "video: the driver's length), raw and chained; one window each (the first 100 frames)",
                 "fake_files": facts["fake_files"], "train_windows": facts["train_windows"],
                 "splits": "by identity as scripts/detect_shipped.py (dev identities = test)"},
        "report": facts["report"], "commands": COMMANDS,
    }
    tmp = card_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(card_path)
    print(f"written {path} (sha256 {sha}) and {card_path}")


def product_scores() -> None:
    """The shipped scorer (detect.score.score_file, bundled weights, 64 frames = up to 4 windows) on every real
    clip as it is and after the re-uploader's chain, the foreign fakes, and th's test files raw and chained
    (runs/shipped/product.json; rerun skips what is scored)."""
    import json

    from detect.score import score_file
    from provenance import attacks

    dest = WORK / "product.json"
    done = json.loads(dest.read_text()) if dest.exists() else {}
    dev = ds.dev_identities()
    data = FeatureSet()
    jobs = [(f"real:{r[2]}:{'dev' if r[2] in dev else ds.real_split(r[2], dev)}", ds.DATA / r[0])
            for r in ds.manifest() if r[1] == "clip"]
    jobs += [("foreign", ds.DATA / r[0]) for r in ds.manifest() if r[1] == "foreign_fake"]
    jobs += [(f"th:{enrollment(p.stem)}", p) for p in sorted((WORK / "out").glob("*.mp4"))
             if ("fake", p.stem) in data.files and data.split("fake", p.stem) == "test"]
    for tag, path in jobs:
        for chained in (False, True):
            key = f"{tag}|{path.name}|{'chain' if chained else 'raw'}"
            if key in done or (chained and tag == "foreign"):
                continue
            with tempfile.TemporaryDirectory() as td:
                src = attacks.chain_video(path, Path(td) / "chain.mp4", "chain") if chained else path
                r = score_file(src)
            done[key] = {"score": r.score, "synthetic": r.synthetic, "windows": len(r.frame_scores)}
            dest.write_text(json.dumps(done, indent=1))
            print(key, r.score, r.synthetic, flush=True)
    summarise(done)


def summarise(done: dict) -> None:
    """The shipped scorer's numbers by group (what docs/DETECTOR.md quotes)."""
    from detect.metrics import roc_auc

    def pick(tag: str, which: str, split: str | None = None) -> list[dict]:
        return [v for k, v in done.items() if k.split("|")[0].startswith(tag) and k.endswith(which)
                and (split is None or k.split("|")[0].endswith(split))]

    def flagged(rows: list[dict]) -> str:
        return f"{sum(r['synthetic'] for r in rows)}/{len(rows)}"

    for which in ("raw", "chain"):
        print(f"{which}: real clips flagged: all {flagged(pick('real', which))}, dev identities "
              f"{flagged(pick('real', which, 'dev'))}, val {flagged(pick('real', which, 'val'))}")
        th = pick("th", which)
        kinds = ("photo+motion", "frame-enrolled", "video-driven")
        print(f"  th test files flagged {flagged(th)} (" + ", ".join(f"{k} {flagged(pick('th:' + k, which))}" for k in kinds)
              + ")")
        real = [r["score"] for r in pick("real", which, "dev") if r["score"] is not None]
        print(f"  th test files vs dev real clips: AUC {roc_auc(real, [r['score'] for r in th if r['score'] is not None]):.3f}")
    real = [r["score"] for r in pick("real", "raw", "dev") if r["score"] is not None]
    foreign = pick("foreign", "raw")
    scored = [r["score"] for r in foreign if r["score"] is not None]
    print(f"foreign fakes vs dev real clips as they are: AUC {roc_auc(real, scored):.3f} ({len(scored)} of "
          f"{len(foreign)} with a face), flagged {flagged(foreign)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("extract", "features", "temporal", "fit", "score"))
    ap.add_argument("--groups", nargs="+", default=list(GROUPS))
    ap.add_argument("--l2", nargs="+", type=float, default=[3e-4, 1e-3, 3e-3, 1e-2])
    ap.add_argument("--write", type=Path, help="fit: store the one (group, l2) given in these detector weights")
    args = ap.parse_args()
    if args.write and len(args.groups) * len(args.l2) != 1:
        ap.error("--write takes one --groups and one --l2")
    if args.stage == "extract":
        extract()
    elif args.stage == "features":
        features()
    elif args.stage == "temporal":
        temporal_features()
    elif args.stage == "score":
        product_scores()
    else:
        fit(args.groups, args.l2, args.write)
