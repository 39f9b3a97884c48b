"""The detector's temporal stage (detect.temporal): its data, its fit into detector weights, and its evaluation
through the shipped scorer. th's files as shipped (scripts/detect_shipped.py `gen`: photo- and frame-enrolled,
built-in motions and real driver clips) against every real clip of the share re-written by th's write path, that copy
through the re-uploader's chain, and the clip as it is.

    python scripts/detect_shipped.py gen [--source clips] [--driver video] [--take 1]  # th files (docs/DETECTOR.md)
    python scripts/detect_temporal.py extract    # per file (raw and chained) 16 pairs (t, t+1) in its first 100
                                                 # frames: dlib 150 px chips cut with frame t's landmarks, frame t's
                                                 # canonical crop; the later windows of each real clip as it is
    python scripts/detect_temporal.py extract-later [--shard I N]   # the later windows of th's longer files
    python scripts/detect_temporal.py temporal   # detect.temporal.pair_features + the CNN's logit per pair
    python scripts/detect_temporal.py cv         # the selection grid, 5-fold out of fold over non-dev identities
    python scripts/detect_temporal.py cv --groups G --hidden H --l2 L --write W   # fit on all non-dev, report test
                                                 # + foreign once, store (the bundled head's recipe)
    python scripts/detect_temporal.py fit [...]  # the earlier protocol: one val split, threshold = its largest real
    python scripts/detect_temporal.py score      # the shipped scorer (detect.score_file) on every file
    python scripts/detect_temporal.py features   # measured, not used: frozen face ResNet statistics per pair

Splits: the dev identities (models/dev_identities.txt) are the test set, real clips and th files alike; `cv` folds
the others by identity (zlib.crc32 % 5), `fit` (as detect_shipped.py) takes a seeded fifth of their real clips and
a third of their th files as val. Heads and features are chosen out of fold (or on val) only; test and
foreign_fakes/ are reported, never used to choose. Work files: runs/shipped/.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import zlib
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


def _save(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    """Written whole or not at all (two extract processes may share the work: ``--fakes-only --reverse``)."""
    tmp = dest.with_suffix(".part")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(dest)


def _done(dest: Path) -> bool:
    try:
        return dest.exists() and "raw_crops" in np.load(dest).files
    except (OSError, ValueError, EOFError):  # being written by the other process
        return True


def extract(fakes_only: bool = False, reverse: bool = False) -> None:
    from detect.score import window_starts
    from provenance import attacks
    from synth.media.video import probe

    rows = ds.manifest()
    jobs = [] if fakes_only else [("real", ds.DATA / r[0]) for r in rows if r[1] == "clip"]
    if not fakes_only:
        jobs += [("asis", ds.DATA / r[0]) for r in rows if r[1] == "clip"]  # the clip as it is, not re-written
        jobs += [("foreign", ds.DATA / r[0]) for r in rows if r[1] == "foreign_fake"]
    jobs += [("fake", p) for p in sorted((WORK / "out").glob("*.mp4"))]
    (WORK / "chips").mkdir(parents=True, exist_ok=True)
    for kind, path in reversed(jobs) if reverse else jobs:
        dest = WORK / "chips" / f"{kind}__{path.stem}.npz"
        if _done(dest):
            continue
        with tempfile.TemporaryDirectory() as td:
            src = ds.marked_copy(path, Path(td) / "marked.mp4") if kind == "real" else path
            raw = file_chips(src)
            chain = file_chips(attacks.chain_video(src, Path(td) / "chain.mp4", "chain")) if kind != "asis" else raw
        _save(dest, {**{f"raw_{k}": v for k, v in raw.items()}, **{f"chain_{k}": v for k, v in chain.items()}})
        print(kind, path.name, len(raw["chips"]), len(chain["chips"]), flush=True)
    for r in [] if fakes_only else rows:  # the later windows of every real clip as it is (the scorer reads up to 4)
        if r[1] != "clip":
            continue
        for start in window_starts(probe(ds.DATA / r[0]).frames or 0, 4)[1:]:
            dest = WORK / "chips" / f"asis__{Path(r[0]).stem}@{start}.npz"
            if not _done(dest):
                got = file_chips(ds.DATA / r[0], start)
                _save(dest, {f"{w}_{k}": v for k, v in got.items() for w in ("raw", "chain")})
                print("asis", r[0], start, len(got["chips"]), flush=True)


def extract_later_fakes(shard: int = 0, shards: int = 1) -> None:
    """The later windows of th's files longer than one window (those driven by a real clip run as long as it), raw
    and through the re-uploader's chain: the scorer reads up to 4 windows of a file. ``shard``/``shards``: this
    process's share of the files (two processes, one per core)."""
    from detect.score import window_starts
    from provenance import attacks
    from synth.media.video import probe

    files = sorted((WORK / "out").glob("*.mp4"))[shard::shards]
    for path in files:
        starts = window_starts(probe(path).frames or 0, 4)[1:]
        todo = [s for s in starts if not _done(WORK / "chips" / f"fake__{path.stem}@{s}.npz")]
        if not todo:
            continue
        with tempfile.TemporaryDirectory() as td:
            chained = attacks.chain_video(path, Path(td) / "chain.mp4", "chain")
            for start in todo:
                raw, chain = file_chips(path, start), file_chips(chained, start)
                _save(WORK / "chips" / f"fake__{path.stem}@{start}.npz",
                      {**{f"raw_{k}": v for k, v in raw.items()}, **{f"chain_{k}": v for k, v in chain.items()}})
                print("fake", path.name, start, len(raw["chips"]), len(chain["chips"]), flush=True)


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
        self.dev = ds.dev_identities()
        self.files: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        from detect import temporal

        for p in sorted((WORK / "temporal").glob("*.npz")):
            kind, stem = p.stem.split("__", 1)
            z = np.load(p)
            self.files[(kind, stem)] = {w: temporal.columns(z[f"{w}_pairs"], z[f"{w}_cnn"]) for w in ("raw", "chain")}

    def identity_of(self, stem: str) -> str:
        # name@start: a later window of that file; clip-: enrolled from a clip's frame; drv-, drvK-: driven by a clip
        return self.identity[re.sub(r"^(drv\d*-)?(clip-)?", "", stem.split("@")[0])]

    def split(self, kind: str, stem: str) -> str:
        ident = self.identity_of(stem)
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
    return "video-driven" if stem.startswith("drv") else "frame-enrolled" if stem.startswith("clip-") else "photo+motion"


GROUPS = ("pix+flow", "pix+flow+cnn", "pix+flow+parts", "pix+flow+parts+cnn")


def group_columns(group: str) -> tuple[str, ...]:
    """The per-pair columns of a feature group: pixel, flow and part statistics, the CNN's logit."""
    from detect import temporal

    parts = {"pix": temporal.PIXEL_FEATURES, "flow": temporal.FLOW_FEATURES, "parts": temporal.PART_FEATURES,
             "cnn": ("cnn_logit",)}
    return tuple(n for part in group.split("+") for n in parts[part])


def fit(groups: list[str], l2s: list[float], hiddens: list[int], write: Path | None) -> None:
    """Fit a head per (group, hidden units, l2) on the train split, calibrate on the val reals (the largest window
    score: no val real window flagged), print val; with ``write``, the single (group, hidden, l2) given is also
    reported on test and foreign_fakes/ and stored in the detector weights ``write``."""
    from detect import temporal
    from detect.metrics import roc_auc

    data = FeatureSet()
    ranking = []  # (mean val flag rate, mean val AUC, -hidden, label): the selection rule, fixed before the grid ran
    for group in groups:
        names = group_columns(group)
        labelled = [(v, 0.0) for w in ("raw", "chain") for _, v in data.windows("real", "train", w, names)]
        labelled += [(v, 0.0) for _, v in data.windows("asis", "train", "raw", names)]
        labelled += [(v, 1.0) for w in ("raw", "chain") for _, v in data.windows("fake", "train", w, names)]
        x, y = np.stack([v for v, _ in labelled]), np.array([t for _, t in labelled])
        for hidden, l2 in ((h, v) for h in hiddens for v in l2s):
            head = temporal.fit_head(x, y, names, l2, hidden)
            score = head.window_probability
            thr = max(score(v) for k, w in (("real", "raw"), ("real", "chain"), ("asis", "raw"))
                      for _, v in data.windows(k, "val", w, names))
            row = [f"{group} hidden={hidden} l2={l2:g} threshold {thr:.4f}"]
            val = []
            for split in ("val", "test") if write else ("val",):
                for which in ("raw", "chain"):
                    r = np.array([score(v) for _, v in data.windows("real", split, which, names)])
                    fk = data.windows("fake", split, which, names)
                    f = np.array([score(v) for _, v in fk])
                    if split == "val":
                        val.append((np.mean(f > thr), roc_auc(r, f)))
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
                store(write, head, thr, {"group": group, "hidden": hidden, "l2": l2, "report": row, "fake_files": kinds,
                                         "train_windows": {"real": int((y == 0).sum()), "fake": int((y == 1).sum())}})
            print("\n    ".join(row), flush=True)
            flag, auc = np.mean(val, axis=0)
            ranking.append((round(float(flag), 3), float(auc), -hidden, f"--groups {group} --hidden {hidden} --l2 {l2:g}"))
    if len(ranking) > 1:  # highest mean val flag rate (to 0.5 points), then mean val AUC, then fewer hidden units
        best = max(ranking, key=lambda r: (round(r[0] * 200) / 200, r[1], r[2]))
        print(f"chosen by the rule: {best[3]} (val flagged {best[0]:.1%}, AUC {best[1]:.3f})")


FOLDS = 5  # cross-validation folds over the non-dev identities (zlib.crc32(identity) % FOLDS)
MAX_FPR = 0.01  # the threshold lets at most this share of the out-of-fold real files through


class Files:
    """Per file of one feature group: its windows' vectors, label, identity, variant, kind of th file."""

    def __init__(self, data: FeatureSet, names: tuple[str, ...]) -> None:
        from detect import temporal

        cols = [temporal.COLUMNS.index(n) for n in names]
        self.rows: list[dict] = []  # {"key", "kind", "which", "ident", "label", "windows": [vector, ...]}
        grouped: dict[tuple[str, str, str], list[np.ndarray]] = {}
        for (kind, stem), v in data.files.items():
            for which in ("raw",) if kind in ("asis", "foreign") else ("raw", "chain"):
                if len(v[which]) >= temporal.MIN_PAIRS:  # the clip as it is: its windows form one file (stem@start)
                    grouped.setdefault((kind, stem.split("@")[0], which), []).append(
                        temporal.window_vector(v[which][:, cols]))
        for (kind, stem, which), wins in sorted(grouped.items(), key=lambda t: t[0]):
            ident = data.identity_of(stem)
            self.rows.append({"key": (kind, stem, which), "kind": kind, "which": which, "ident": ident,
                              "label": 1.0 if kind == "fake" else 0.0, "windows": wins,
                              "test": ident in data.dev, "how": enrollment(stem) if kind == "fake" else kind})

    def fold(self, row: dict) -> int:
        return zlib.crc32(row["ident"].encode()) % FOLDS

    def train_xy(self, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        x = [w for r in rows for w in r["windows"]]
        y = [r["label"] for r in rows for _ in r["windows"]]
        return np.stack(x), np.array(y)


def file_score(head, row: dict) -> float:
    """As detect.score_file: the median of the file's window probabilities."""
    return float(np.median([head.window_probability(w) for w in row["windows"]]))


def fpr_threshold(real_scores: list[float]) -> float:
    """The smallest threshold that lets at most MAX_FPR of these real files through (score > threshold flags)."""
    s = np.sort(np.asarray(real_scores))[::-1]
    return float(s[int(np.floor(MAX_FPR * len(s)))])


def cross_validate(groups: list[str], l2s: list[float], hiddens: list[int], write: Path | None) -> None:
    """Out-of-fold selection and calibration over every non-dev identity (FOLDS folds by identity): per (group,
    hidden, l2), each fold's files are scored by a head fitted on the other folds; the threshold lets ≤ 1 % of the
    out-of-fold real files (th-written raw and chained, and each clip as it is, median over its windows) through;
    the rule: the highest mean out-of-fold flag rate of th's files (raw, chained; to 0.5 points), then AUC, then
    fewer hidden units. With ``write`` (one configuration): a head fitted on every non-dev file, that threshold,
    reported once on the dev identities (test) and foreign_fakes/, stored in ``write``."""
    from detect import temporal
    from detect.metrics import roc_auc

    data = FeatureSet()
    ranking = []
    for group in groups:
        names = group_columns(group)
        files = Files(data, names)
        pool = [r for r in files.rows if not r["test"] and r["kind"] != "foreign"]
        for hidden, l2 in ((h, v) for h in hiddens for v in l2s):
            oof = {}
            for k in range(FOLDS):
                head = temporal.fit_head(*files.train_xy([r for r in pool if files.fold(r) != k]), names, l2, hidden)
                oof |= {r["key"]: file_score(head, r) for r in pool if files.fold(r) == k}
            real = [oof[r["key"]] for r in pool if r["label"] == 0]
            thr = fpr_threshold(real)
            rates, aucs, line = [], [], []
            for which in ("raw", "chain"):
                fk = [r for r in pool if r["label"] == 1 and r["which"] == which]
                f = np.array([oof[r["key"]] for r in fk])
                rates.append(np.mean(f > thr))
                aucs.append(roc_auc(np.array(real), f))
                by = {e: np.mean([oof[r["key"]] > thr for r in fk if r["how"] == e])
                      for e in ("photo+motion", "frame-enrolled", "video-driven")}
                line.append(f"{which}: th files {len(f)} flagged {rates[-1]:.0%} AUC {aucs[-1]:.3f} ("
                            + ", ".join(f"{e} {v:.0%}" for e, v in by.items()) + ")")
            label = f"--groups {group} --hidden {hidden} --l2 {l2:g}"
            print(f"{label}: threshold {thr:.4f}, out-of-fold real files {len(real)} flagged "
                  f"{sum(x > thr for x in real)}; " + "; ".join(line), flush=True)
            ranking.append((round(float(np.mean(rates)) * 200) / 200, float(np.mean(aucs)), -hidden, label, thr))
            if write:
                final = temporal.fit_head(*files.train_xy(pool), names, l2, hidden)
                report = [f"{label}: out-of-fold over {FOLDS} folds of the non-dev identities: threshold {thr:.4f} "
                          f"(≤ {MAX_FPR:.0%} of {len(real)} real files), " + "; ".join(line)]
                test = [r for r in files.rows if r["test"] and r["kind"] != "foreign"]
                for which in ("raw", "chain"):
                    tr = [file_score(final, r) for r in test if r["label"] == 0 and r["which"] == which]
                    tf = [r for r in test if r["label"] == 1 and r["which"] == which]
                    f = np.array([file_score(final, r) for r in tf])
                    by = {e: f"{sum(file_score(final, r) > thr for r in tf if r['how'] == e)}/"
                             f"{sum(r['how'] == e for r in tf)}" for e in ("photo+motion", "frame-enrolled", "video-driven")}
                    report.append(f"test-{which}: real files {len(tr)} flagged {sum(x > thr for x in tr)}; th files "
                                  f"{len(f)} flagged {np.mean(f > thr):.0%} AUC {roc_auc(np.array(tr), f):.3f} ("
                                  + ", ".join(f"{e} {v}" for e, v in by.items()) + ")")
                asis = [file_score(final, r) for r in test if r["kind"] == "asis"]
                foreign = [file_score(final, r) for r in files.rows if r["kind"] == "foreign"]
                report.append(f"foreign_fakes vs dev real clips as they are: AUC {roc_auc(np.array(asis), np.array(foreign)):.3f}, "
                              f"flagged {sum(x > thr for x in foreign)}/{len(foreign)}")
                print("\n    ".join(report), flush=True)
                kinds: dict[str, int] = {}
                for r in files.rows:
                    if r["kind"] == "fake" and r["which"] == "raw":
                        key = f"{r['how']}:{'test' if r['test'] else 'train'}"
                        kinds[key] = kinds.get(key, 0) + 1
                y = files.train_xy(pool)[1]
                store(write, final, thr, {
                    "group": group, "hidden": hidden, "l2": l2, "report": report, "fake_files": kinds,
                    "train_windows": {"real": int((y == 0).sum()), "fake": int((y == 1).sum())},
                    "selection": f"group, hidden units and L2 chosen by {FOLDS}-fold cross-validation over the non-dev "
                                 "identities (folds by identity): the highest mean out-of-fold flag rate of th's files "
                                 "(raw, chained; to 0.5 points), then AUC, then fewer hidden units; the head is then "
                                 "fitted on every non-dev file; test (dev identities) and foreign_fakes/ reported once",
                    "threshold": f"lets at most {MAX_FPR:.0%} of the out-of-fold real files through (th-written raw "
                                 "and chained, each clip as it is scored as the scorer does: median over its windows)",
                    "splits": "train: every non-dev identity (folds: zlib.crc32(identity) % 5); test: the dev "
                              "identities (models/dev_identities.txt)",
                    "commands": COMMANDS_CV})
    if len(ranking) > 1:
        best = max(ranking, key=lambda r: r[:3])
        print(f"chosen by the rule: {best[3]} (out-of-fold flagged {best[0]:.1%}, AUC {best[1]:.3f}, "
              f"threshold {best[4]:.4f})")


COMMANDS = [
    "python scripts/detect_shipped.py gen",
    "python scripts/detect_shipped.py gen --source clips",
    "python scripts/detect_shipped.py gen --driver video",
    "python scripts/detect_shipped.py gen --source clips --driver video",
    "python scripts/detect_shipped.py gen --driver video --take 1",
    "python scripts/detect_shipped.py gen --source clips --driver video --take 1",
    "python scripts/detect_temporal.py extract && python scripts/detect_temporal.py temporal",
    "python scripts/detect_temporal.py fit   # the selection grid, val only",
    "python scripts/detect_temporal.py extract-later && python scripts/detect_temporal.py temporal",
    "python scripts/detect_temporal.py fit --groups GROUP --hidden H --l2 L2 --write detect/assets/th-detector.safetensors",
]


COMMANDS_CV = COMMANDS[:7] + COMMANDS[8:9] + [
    "python scripts/detect_temporal.py cv   # the selection grid, out of fold",
    "python scripts/detect_temporal.py cv --groups pix+flow+parts+cnn --hidden 32 --l2 1e-2 "
    "--write detect/assets/th-detector.safetensors",
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
        "head": (f"one hidden layer of {facts['hidden']} ReLU units" if facts["hidden"] else "logistic regression")
                + f" on per-window medians and spreads, L2 {facts['l2']:g}, classes weighted equally",
        "selection": facts.get("selection", "group, hidden units and L2 chosen on the val split only (mean of the val "
                                             "flag rates raw and chained, then AUC); test and foreign_fakes/ reported "
                                             "once for the chosen head"),
        "threshold": facts.get("threshold", "the largest score of a val real window (th-written copies raw and chained, "
                                            "and every window the scorer reads of the clips as they are): no val real "
                                            "window flagged"),
        "data": {"real": "every clip of ../shared/data/clips: its first 100 frames re-written by th's write path "
                         "(watermark + H.264) and that copy through the re-uploader's chain (one window each), and the "
                         "clip as it is (every window the scorer reads: up to 4)",
                 "fake": "th animate outputs (scripts/detect_shipped.py gen): one-shot, feed-forward, 4 s (driven by a "
                         "video: the driver's length), raw and chained; one window each (the first 100 frames)",
                 "fake_files": facts["fake_files"], "train_windows": facts["train_windows"],
                 "splits": facts.get("splits", "by identity as scripts/detect_shipped.py (dev identities = test)")},
        "report": facts["report"], "commands": facts.get("commands", COMMANDS),
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
    ap.add_argument("stage", choices=("extract", "extract-later", "features", "temporal", "fit", "cv", "score"))
    ap.add_argument("--shard", nargs=2, type=int, default=(0, 1), metavar=("I", "N"),
                    help="extract-later: this process takes files I, I+N, ...")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS))
    ap.add_argument("--l2", nargs="+", type=float, default=[3e-4, 1e-3, 3e-3, 1e-2])
    ap.add_argument("--fakes-only", action="store_true", help="extract: only th's files (a second process)")
    ap.add_argument("--reverse", action="store_true", help="extract: last file first (a second process)")
    ap.add_argument("--hidden", nargs="+", type=int, default=[0, 8, 16], help="hidden ReLU units (0: logistic)")
    ap.add_argument("--write", type=Path, help="fit: store the one (group, l2) given in these detector weights")
    args = ap.parse_args()
    if args.write and len(args.groups) * len(args.l2) * len(args.hidden) != 1:
        ap.error("--write takes one --groups, one --hidden and one --l2")
    if args.stage == "extract":
        extract(args.fakes_only, args.reverse)
    elif args.stage == "extract-later":
        extract_later_fakes(*args.shard)
    elif args.stage == "features":
        features()
    elif args.stage == "temporal":
        temporal_features()
    elif args.stage == "score":
        product_scores()
    elif args.stage == "cv":
        cross_validate(args.groups, args.l2, args.hidden, args.write)
    else:
        fit(args.groups, args.l2, args.hidden, args.write)
