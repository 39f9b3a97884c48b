"""th: detect — a small timm detector of synthetic talking-head frames, with bundled weights.

API: ``score_file(path) -> FileScore``, ``score_frames(frames) -> list[float | None]``,
``verify_evidence(path, max_frames)`` (the hook ``th verify`` passes to provenance),
``Detector.load(path=None)``; training in ``detect.train``. Importing this package does not import torch.
"""

from detect.score import FileScore, score_file, score_frames, verify_evidence

__all__ = ["FileScore", "score_file", "score_frames", "verify_evidence"]
