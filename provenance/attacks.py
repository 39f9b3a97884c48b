"""Everyday transformations a th output meets after publication, used by tests and the benchmark.

Videos go through the ffmpeg binary bundled with imageio-ffmpeg (argv lists, no shell); each attack
re-encodes with libx264, which on its own strips any C2PA manifest.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

# name -> ffmpeg video filter (None = plain re-encode) and CRF of the re-encode
VIDEO_ATTACKS: dict[str, tuple[str | None, int]] = {
    "crf23": (None, 23),
    "crf28": (None, 28),
    "half": ("scale=trunc(iw/4)*2:trunc(ih/4)*2", 23),
    "crop90": ("crop=trunc(iw*0.45)*2:trunc(ih*0.45)*2", 23),
    "crop90corner": ("crop=trunc(iw*0.45)*2:trunc(ih*0.45)*2:0:0", 23),
    "bright+20": ("eq=brightness=0.0784", 23),
    "bright-20": ("eq=brightness=-0.0784", 23),
    "combined": ("crop=trunc(iw*0.45)*2:trunc(ih*0.45)*2,scale=trunc(iw/4)*2:trunc(ih/4)*2,"
                 "eq=brightness=0.0784", 28),
}

# The re-uploader's chain of issue #13, exactly as reported (one ffmpeg pass, ffmpeg's default x264 preset),
# and a stronger one: name -> (video filter, CRF)
CHAINS: dict[str, tuple[str, int]] = {
    "chain": ("crop=iw*0.9:ih*0.9,scale=trunc(iw/4)*2:-2,eq=brightness=0.08", 28),  # 256 → 114 px
    "chain-strong": ("crop=iw*0.8:ih*0.8,scale=trunc(iw/6)*2:-2,eq=brightness=0.08", 32),  # 256 → 68 px
}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def attack_video(src: Path | str, dest: Path | str, name: str, seconds: float | None = None) -> Path:
    """Re-encode ``src`` into ``dest`` with attack ``name`` (a key of VIDEO_ATTACKS)."""
    vf, crf = VIDEO_ATTACKS[name]
    argv = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src)]
    if seconds is not None:
        argv += ["-t", f"{seconds:.3f}"]
    if vf is not None:
        argv += ["-vf", vf]
    argv += ["-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
             "-threads", "1", str(dest)]
    subprocess.run(argv, check=True, capture_output=True)
    return Path(dest)


def chain_video(src: Path | str, dest: Path | str, name: str = "chain") -> Path:
    """Re-encode ``src`` into ``dest`` through chain ``name`` of CHAINS, as a re-upload does."""
    vf, crf = CHAINS[name]
    argv = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-vf", vf,
            "-c:v", "libx264", "-crf", str(crf), "-threads", "1", str(dest)]
    subprocess.run(argv, check=True, capture_output=True)
    return Path(dest)


def chain_image(rgb: np.ndarray, dest: Path | str | None = None, keep: float = 0.9, factor: float = 0.5,
                delta: int = 20, quality: int = 75) -> np.ndarray:
    """The still-image chain: centre crop to ``keep``, resize by ``factor``, brighten by ``delta``, JPEG at
    ``quality`` (written to ``dest`` if given). Returns the decoded result."""
    import cv2

    pre = brightness(resize(crop(rgb, keep), factor), delta)
    if dest is not None:
        cv2.imwrite(str(dest), pre[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return jpeg(pre, quality)


def jpeg(rgb: np.ndarray, quality: int = 75) -> np.ndarray:
    """Round-trip through JPEG at ``quality`` (4:2:0, as most encoders do)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(2, round(w * factor)), max(2, round(h * factor))),
                      interpolation=cv2.INTER_AREA)


def crop(rgb: np.ndarray, keep: float, corner: bool = False) -> np.ndarray:
    """Keep ``keep`` of each side, centred (or from the top-left corner)."""
    h, w = rgb.shape[:2]
    ch, cw = round(h * keep), round(w * keep)
    y, x = (0, 0) if corner else ((h - ch) // 2, (w - cw) // 2)
    return rgb[y:y + ch, x:x + cw].copy()


def brightness(rgb: np.ndarray, delta: int) -> np.ndarray:
    return np.clip(rgb.astype(np.int16) + delta, 0, 255).astype(np.uint8)
