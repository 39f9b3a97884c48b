"""Score files and frames: find the face, cut the canonical crop, run the detector, aggregate per file.

A video, with a detector that has a temporal stage (``detect.temporal``): up to ``max_frames // 16`` windows of 100
frames spread over the file; in each, 16 frames t with the frame after them; per pair, the face of frame t (dlib
HOG, tracked through the window) and both frames' face chips cut with frame t's landmarks give the pair's texture
statistics (and the CNN's logit on frame t's crop, if the head reads it); per window their medians and spreads give
its fake probability (the temporal head). An image (or a detector without that stage): per frame,
the largest face → ``synth.faces.align.align_crop`` at the CNN's input size → the CNN's fake probability.
A file's score is the median over the windows (frames) with a face; it is *synthetic* above the threshold calibrated
on held-out real identities (``threshold`` for windows, ``image_threshold`` for the CNN when both exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import UserError

MAX_FRAMES = 64  # frames sampled evenly over a video: enough for a stable median, bounded time


@dataclass(frozen=True)
class FileScore:
    """The detector's view of one file."""

    path: str
    score: float | None  # aggregate fake probability; None when no frame had a face
    threshold: float
    synthetic: bool
    frame_indices: list[int]  # which frames of the file were scored
    frame_scores: list[float | None]  # per scored frame; None where no face was found
    fps: float | None
    detector: str  # "arch@sha256[:12]"
    unit: str = "frame"  # what frame_scores score: "frame" (the CNN) or "window" (the temporal stage, from its start)

    @property
    def faces(self) -> int:
        return sum(s is not None for s in self.frame_scores)

    def to_dict(self) -> dict:
        return {
            "file": self.path,
            "score": None if self.score is None else round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "synthetic": self.synthetic,
            "frames_scored": len(self.frame_scores),
            "frames_with_face": self.faces,
            "aggregate": "median",
            "unit": self.unit,
            "detector": self.detector,
            "frame_indices": self.frame_indices,
            "frame_scores": [None if s is None else round(s, 4) for s in self.frame_scores],
        }


_DETECTOR = None


def default_detector():
    """The bundled detector, loaded once per process (in ONNX Runtime when installed: detect.model.load_scorer)."""
    global _DETECTOR
    if _DETECTOR is None:
        from detect.model import load_scorer

        _DETECTOR = load_scorer()
    return _DETECTOR


def face_crops(frames: list[np.ndarray], size: int, thorough: bool = False) -> list[np.ndarray | None]:
    """The canonical crop of the largest face in each frame (None where there is none)."""
    from synth.faces.align import align_crop
    from synth.faces.detector import MIN_FACE_PX, FaceDetector

    det = FaceDetector()
    out: list[np.ndarray | None] = []
    for rgb in frames:
        faces = [f for f in det.detect(rgb, thorough=thorough) if f.size >= MIN_FACE_PX]
        out.append(align_crop(rgb, faces[0].landmarks, size=size)[0] if faces else None)
    return out


def score_frames(frames: list[np.ndarray], detector=None, thorough: bool = False) -> list[float | None]:
    """The CNN's fake probability per RGB frame (None where no face was found)."""
    det = detector or default_detector()
    crops = face_crops(frames, det.spec.input_size, thorough=thorough)
    have = [c for c in crops if c is not None]
    probs = iter(det.probabilities(np.stack(have)).tolist() if have else [])
    return [None if c is None else next(probs) for c in crops]


def pair_chips(pairs: list[tuple[np.ndarray, np.ndarray]], crop_size: int | None
               ) -> tuple[list[bool], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the temporal stage reads of pairs of consecutive RGB frames (t, t+1): whether frame t has a face, and for
    those that do, the 150 px face chips of t and t+1 cut with frame t's landmarks (dlib's chip geometry, OpenCV's
    bilinear sampling), frame t's canonical crop (the CNN's input; none cut when ``crop_size`` is None) and its
    landmarks. The face of frame t is looked for near the previous pair's face first (HOG on a small region), in
    the whole frame when that finds none. The one cutting both scoring and the stage's training data use."""
    from detect import temporal
    from synth.faces.align import align_crop
    from synth.faces.chip import chip_details, extract_chips
    from synth.faces.detector import MIN_FACE_PX, FaceDetector

    finder = FaceDetector()
    found, chips, nexts, crops, marks = [], [], [], [], []
    last = None  # the face of the previous pair: looked for near it first (a few ms), in the whole frame if lost
    for a, b in pairs:
        face = finder.detect_near(a, last.box) if last is not None else None
        if face is None or face.size < MIN_FACE_PX:
            faces = [f for f in finder.detect(a) if f.size >= MIN_FACE_PX]
            face = faces[0] if faces else None
        last = face
        found.append(face is not None)
        if face is not None:
            chip_a, chip_b = extract_chips([a, b], chip_details(face.landmarks, temporal.CHIP, 0.25), fast=True)
            chips.append(chip_a)
            nexts.append(chip_b)
            if crop_size is not None:
                crops.append(align_crop(a, face.landmarks, size=crop_size)[0])
            marks.append(face.landmarks.astype(np.float32))

    def stack(items: list[np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.stack(items) if items else np.zeros((0, *shape), dtype)

    side = (temporal.CHIP, temporal.CHIP, 3)
    return (found, stack(chips, side, np.uint8), stack(nexts, side, np.uint8),
            stack(crops, (crop_size or 0, crop_size or 0, 3), np.uint8), stack(marks, (68, 2), np.float32))


def pair_columns(pairs: list[tuple[np.ndarray, np.ndarray]], detector, with_cnn: bool) -> list[np.ndarray | None]:
    """The temporal stage's columns (``detect.temporal.COLUMNS``) per pair of consecutive RGB frames (t, t+1):
    None where frame t has no face. The CNN's logit column is computed only ``with_cnn`` (else 0)."""
    from detect import temporal

    found, chips, nexts, crops, _ = pair_chips(pairs, detector.spec.input_size if with_cnn else None)
    if not len(chips):
        return [None] * len(pairs)
    stats = temporal.pair_features(temporal.equalise(chips), temporal.equalise(nexts))
    logit = np.zeros(len(chips))
    if with_cnn:
        p = np.clip(detector.probabilities(crops), 1e-6, 1 - 1e-6)
        logit = np.log(p / (1 - p))
    rows = iter(temporal.columns(stats, logit))
    return [next(rows) if f else None for f in found]


def window_starts(n_frames: int, max_windows: int) -> list[int]:
    """First frames of up to ``max_windows`` windows of ``WINDOW_FRAMES`` frames spread evenly over a video."""
    from detect.temporal import WINDOW_FRAMES

    last = max(n_frames - WINDOW_FRAMES, 0)
    count = min(max_windows, last // WINDOW_FRAMES + 1)
    return sorted(set(np.linspace(0, last, count).round().astype(int).tolist()))


def score_windows(path: Path, detector, max_windows: int, n_frames: int, workers: int = 1
                  ) -> tuple[list[int], list[float | None]]:
    """Fake probability of each window of a video of ``n_frames`` frames from the temporal stage (None where a window
    has fewer than ``MIN_PAIRS`` pairs with a face): (window start frames, probabilities). One decoding pass; the
    windows in ``workers`` threads (OpenCV, numpy and ONNX Runtime run side by side; dlib's calls take turns: its
    detectors are not safe to share between threads, ``synth.faces.detector``)."""
    from concurrent.futures import ThreadPoolExecutor

    from detect import temporal
    from synth.media import video

    plan = {s: temporal.window_pairs(s, min(temporal.WINDOW_FRAMES, n_frames - s))
            for s in window_starts(n_frames, max_windows)}
    got = video.read_frames_at(path, {u for ts in plan.values() for t in ts for u in (t, t + 1)})
    head = temporal.Head.from_dict(detector.spec.temporal)
    cols = [temporal.COLUMNS.index(c) for c in head.columns]

    decoded = {s: [t for t in ts if t in got and t + 1 in got] for s, ts in plan.items()}  # a short file ends early
    todo = [s for s, ts in decoded.items() if ts]

    def window(s: int) -> float | None:
        pairs = [(got[t], got[t + 1]) for t in decoded[s]]
        rows = [r for r in pair_columns(pairs, detector, "cnn_logit" in head.columns) if r is not None]
        return head.probability(np.stack(rows)[:, cols]) if len(rows) >= temporal.MIN_PAIRS else None

    if workers > 1 and len(todo) > 1:
        with ThreadPoolExecutor(min(workers, len(todo))) as pool:
            return todo, list(pool.map(window, todo))
    return todo, [window(s) for s in todo]


def read_sampled(path: Path, max_frames: int) -> tuple[list[np.ndarray], list[int], float | None]:
    """An image as one frame, or up to ``max_frames`` frames spread evenly over a video."""
    from synth.media import video

    if video.is_image_path(path):
        return [video.read_image(path)], [0], None
    info = video.probe(path)
    every = max(1, int(np.ceil(info.frames / max_frames))) if info.frames else 1
    frames = list(video.iter_frames(path, every=every, max_frames=max_frames))
    return frames, [i * every for i in range(len(frames))], info.fps


def score_file(path: Path | str, detector=None, max_frames: int = MAX_FRAMES, workers: int | None = None) -> FileScore:
    """Per-frame (per-window, on a video with the temporal stage) scores and the file's aggregate: the median over
    those with a face. ``max_frames`` bounds the frames examined: a window examines ``WINDOW_PAIRS`` of them.
    ``workers``: threads for a video's windows (default ``synth.device.thread_count()``; the scores do not depend
    on it)."""
    from synth.device import thread_count
    from synth.media import video

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a video or an image")
    det = detector or default_detector()
    scores: list[float | None] = []
    unit = "window"
    info = None if video.is_image_path(path) else video.probe(path)
    if det.spec.temporal is not None and info is not None and info.frames != 1:
        from detect.temporal import WINDOW_FRAMES, WINDOW_PAIRS

        fps = info.fps
        indices, scores = score_windows(path, det, max(1, max_frames // WINDOW_PAIRS), info.frames or WINDOW_FRAMES,
                                        thread_count(workers))
        thr = det.spec.threshold
    if not scores:  # an image, a one-frame video, or a detector without the temporal stage: the CNN per frame
        frames, indices, fps = read_sampled(path, max_frames)
        scores = score_frames(frames, det, thorough=fps is None)
        thr = det.spec.threshold if det.spec.temporal is None else det.spec.image_threshold
        unit = "frame"
    found = [s for s in scores if s is not None]
    agg = float(np.median(found)) if found else None
    name = f"{det.spec.arch}@{(det.sha256 or 'unsaved')[:12]}"
    return FileScore(str(path), agg, thr, agg is not None and agg > thr, indices, scores, fps, name, unit)


def plot_scores(results: list[FileScore], dest: Path | str, force: bool = False) -> None:
    """PNG of per-frame score over time (one line per file) with the threshold (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synth.media.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    for r in results:
        t = [i / r.fps if r.fps else i for i, s in zip(r.frame_indices, r.frame_scores) if s is not None]
        s = [s for s in r.frame_scores if s is not None]
        ax.plot(t, s, marker="o", ms=3, lw=1, label=f"{Path(r.path).name} (median {r.score if r.score is None else round(r.score, 3)})")
    if results:
        ax.axhline(results[0].threshold, color="red", ls="--", lw=1, label="threshold (1 % FPR)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time (s)" if results and results[0].fps else "frame")
    ax.set_ylabel("fake probability")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(dest, force=force, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def verify_evidence(path: Path, max_frames: int) -> dict | None:
    """The detector's evidence for ``th verify`` (``provenance.verify.DetectorScore``): the bundled
    detector's file score as a dict, or None when no weights are bundled."""
    from detect.model import bundled_weights

    if not bundled_weights().is_file():
        return None
    return score_file(path, max_frames=max_frames).to_dict()
