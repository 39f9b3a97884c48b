"""Score files and frames: find the face, cut the canonical crop, run the detector, aggregate per file.

Per frame: dlib HOG faces (synth.faces.detector) → the largest face → ``synth.faces.align.align_crop`` at the
detector's input size (the same canonical crop the training data used) → fake probability. A file's
score is the median over the frames where a face was found; it is *synthetic* when that exceeds the
threshold calibrated at 1 % false positives on held-out real identities.
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
    """Fake probability per RGB frame (None where no face was found)."""
    det = detector or default_detector()
    crops = face_crops(frames, det.spec.input_size, thorough=thorough)
    have = [c for c in crops if c is not None]
    probs = iter(det.probabilities(np.stack(have)).tolist() if have else [])
    return [None if c is None else next(probs) for c in crops]


def read_sampled(path: Path, max_frames: int) -> tuple[list[np.ndarray], list[int], float | None]:
    """An image as one frame, or up to ``max_frames`` frames spread evenly over a video."""
    from synth.media import video

    if video.is_image_path(path):
        return [video.read_image(path)], [0], None
    info = video.probe(path)
    every = max(1, int(np.ceil(info.frames / max_frames))) if info.frames else 1
    frames = list(video.iter_frames(path, every=every, max_frames=max_frames))
    return frames, [i * every for i in range(len(frames))], info.fps


def score_file(path: Path | str, detector=None, max_frames: int = MAX_FRAMES) -> FileScore:
    """Per-frame scores and the file's aggregate (median over frames with a face)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a video or an image")
    det = detector or default_detector()
    frames, indices, fps = read_sampled(path, max_frames)
    scores = score_frames(frames, det, thorough=fps is None)
    found = [s for s in scores if s is not None]
    agg = float(np.median(found)) if found else None
    thr = det.spec.threshold
    name = f"{det.spec.arch}@{(det.sha256 or 'unsaved')[:12]}"
    return FileScore(str(path), agg, thr, agg is not None and agg > thr, indices, scores, fps, name)


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
