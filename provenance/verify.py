"""``th verify``: C2PA state, watermark, detector score and one verdict per file.

The JSON report (``Report.to_dict``) is a stable interface, documented in docs/PROVENANCE.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provenance import keys, manifest, watermark
from synth.errors import UserError

# verdict -> exit code; with several files the CLI exits with the most severe verdict (SEVERITY order,
# least severe first): alarming findings outrank an unreadable file, which outranks reassuring verdicts.
EXIT_CODES = {"signed": 0, "unreadable": 2, "stripped": 3, "tampered": 4, "no-evidence": 5,
              "likely-synthetic": 6, "signed-untrusted": 7, "signed-no-watermark": 8}
SEVERITY = ("signed", "signed-untrusted", "no-evidence", "unreadable", "likely-synthetic", "signed-no-watermark",
            "stripped", "tampered")
MAX_FRAMES = 250  # 10 s at 25 fps: enough votes for the watermark, bounded time for long files
VERDICT_TEXT = {
    "signed": "signed th output (C2PA manifest valid, signer trusted, watermark matches the manifest)",
    "signed-untrusted": "signed th output, but the signer is not trusted here (C2PA Valid; trust its root "
                        "with --trust ROOT.pem)",
    "signed-no-watermark": "signed, but the pixels carry no th watermark: the manifest's watermark claim "
                           "does not hold",
    "stripped": "th output with its provenance stripped (watermark found, no manifest)",
    "tampered": "tampered (manifest invalid, or watermark and manifest disagree)",
    "likely-synthetic": "likely synthetic (detector)",
    "no-evidence": "no evidence of synthesis",
    "unreadable": "not readable as an image or video",
}
NOT_TH_TEXT = {  # a valid C2PA manifest that makes no th watermark claim (another tool signed it)
    "signed": "C2PA-signed by a trusted signer; not a th manifest (no watermark claim)",
    "signed-untrusted": "C2PA-signed by a signer not trusted here; not a th manifest (no watermark claim)",
}


@dataclass(frozen=True)
class Report:
    path: Path
    verdict: str
    c2pa: manifest.ManifestReport
    mark: watermark.WatermarkResult
    matches_manifest: bool | None
    detector: dict | None
    trusted_roots: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def verdict_text(self) -> str:
        if self.c2pa.payload is None and self.verdict in NOT_TH_TEXT:
            return NOT_TH_TEXT[self.verdict]
        return VERDICT_TEXT[self.verdict]

    def to_dict(self) -> dict:
        m = self.mark
        return {
            "file": str(self.path),
            "verdict": self.verdict,
            "verdict_text": self.verdict_text,
            "exit_code": self.exit_code,
            "c2pa": {
                "state": self.c2pa.state,
                "claims": self.c2pa.claims,
                "errors": self.c2pa.errors,
                "trusted_roots": self.trusted_roots,
            },
            "watermark": {
                "found": m.found,
                "payload": m.payload,
                "matches_manifest": self.matches_manifest,
                "expected": self.c2pa.payload,  # the payload the manifest claims (null: no claim)
                "bit_accuracy": round(m.bit_accuracy, 4),
                "sync_z": round(m.sync_z, 2),
                "crc_ok": m.crc_ok,
                "scale": round(m.scale, 4),
                "shift": list(m.shift),
                "frames": m.frames,
            },
            "detector": self.detector,
        }


def _frames(path: Path, max_frames: int):
    from synth.media import video

    if video.is_image_path(path):
        return [video.read_image(path)]
    video.probe(path)  # clear one-line error for text files, truncated headers, no video stream
    return video.iter_frames(path, max_frames=max_frames)


def trust_anchors(extra: list[Path], local: bool = True) -> tuple[list[bytes], list[str]]:
    """PEM roots to trust: this machine's local root (if any, and ``local``) plus ``extra``."""
    paths = [p for p in [keys.local_root() if local else None] if p is not None] + list(extra)
    pems = []
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"--trust {p}: no such file")
        data = Path(p).read_bytes()
        if b"BEGIN CERTIFICATE" not in data:
            raise UserError(f"--trust {p}: not a PEM certificate")
        pems.append(data)
    return pems, [str(p) for p in paths]


def verdict_for(state: str, found: bool, matches: bool | None, detector: dict | None,
                claimed: str | None = None) -> str:
    """One verdict from the C2PA state, the watermark (found; matches the manifest's ``claimed`` payload),
    and the detector's evidence."""
    if state == "Invalid" or matches is False:
        return "tampered"
    if state in ("Valid", "Trusted"):
        if claimed is not None and not found:
            return "signed-no-watermark"
        return "signed" if state == "Trusted" else "signed-untrusted"
    if found:
        return "stripped"
    if detector is not None and detector.get("synthetic"):
        return "likely-synthetic"
    return "no-evidence"


DetectorScore = Callable[[Path, int], "dict | None"]
"""A detector's evidence for a file: ``score(path, max_frames) -> {"score", "synthetic", ...}`` or None.

Passed in by the caller (the CLI passes ``detect.verify_evidence``): provenance does not import detect."""


def verify_file(path: Path | str, trust: list[Path] | None = None, max_frames: int = MAX_FRAMES,
                detector: DetectorScore | None = None, anchors: tuple[list[bytes], list[str]] | None = None
                ) -> Report:
    """Everything ``th verify`` reports about one file (the detector's evidence when ``detector`` is given).

    ``anchors`` = ``trust_anchors(...)`` computed once by the caller; else this machine's root + ``trust``.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    frames = _frames(path, max_frames)
    pems, roots = anchors if anchors is not None else trust_anchors(trust or [])
    c2pa_report = manifest.read_manifest(path, pems)
    mark = watermark.detect(frames)
    matches = None
    if c2pa_report.payload is not None and mark.found:
        matches = mark.payload == c2pa_report.payload
    evidence = None if detector is None else detector(path, min(max_frames, 64))  # a 64-frame median is stable
    verdict = verdict_for(c2pa_report.state, mark.found, matches, evidence, c2pa_report.payload)
    return Report(path, verdict, c2pa_report, mark, matches, evidence, roots)


def worst(verdicts: list[str]) -> str:
    return max(verdicts, key=SEVERITY.index)
