"""th: detect — a small timm detector of synthetic talking-head frames, with bundled weights.

API: ``score_file(path) -> FileScore``, ``score_frames(frames) -> list[float | None]``,
``Detector.load(path=None)``; training in ``detect.train``. Importing this package does not import torch.
"""

from detect.score import FileScore, score_file, score_frames

__all__ = ["FileScore", "score_file", "score_frames"]
