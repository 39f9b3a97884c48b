"""Shared fixtures: the developer share of real media, a private TH_HOME, and a `th` runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("TH_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def shared_path(rel: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason when the share is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"needs ../shared/data/{rel}")
    return p


@pytest.fixture(autouse=True)
def th_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own TH_HOME so keys and config never touch the real home."""
    home = tmp_path_factory.mktemp("th_home")
    monkeypatch.setenv("TH_HOME", str(home))
    return home


def run_th(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (real exit codes, real stderr)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "thcli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


@pytest.fixture
def one_torch_thread():
    """Tiny nets gain nothing from 2 threads, and spinning OpenMP threads crawl on a shared CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def th():
    return run_th


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def prepared3(tmp_path_factory) -> Path:
    """Three real clips of different people prepared by `th prepare` (16 frames each, 128 px)."""
    clips = ["RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4", "EDTalk__pose_source1.mp4", "first-order-model__00.mp4"]
    src = tmp_path_factory.mktemp("clips3")
    for c in clips:
        (src / c).symlink_to(shared_path(f"clips/{c}"))
    out = tmp_path_factory.mktemp("prep3") / "prep"
    r = run_th("prepare", src, out, "--frames", "16", "--size", "128", "--manifest", SHARED / "MANIFEST.tsv")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, prepared3) -> Path:
    """A tiny model really meta-trained for a few steps on three real clips, exported for inference."""
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    r = run_th("meta-train", prepared3, run, "--preset", "tiny", "--steps", "4", "--quiet", "--threads", "2")
    assert r.returncode == 0, r.stderr
    from synth.avatar.model import export_model

    out = run.parent / "tiny.safetensors"
    export_model(run, out)
    return out


def _generated(tmp_path_factory, driver: str) -> tuple[Path, Path]:
    """What the bundled generator makes of a held-out person's photo, one-shot and feed-forward, written twice: raw
    (no watermark, no manifest: what another tool could output) and through th's sealing write path. ``driver``:
    "clip" = 2 s driven by another held-out person's tracked clip; "talk" = 4 s of the built-in talking motion."""
    import cv2
    import torch

    from detect.data import generate_fakes
    from provenance.manifest import GenerationFacts
    from provenance.write import write_video
    from synth.avatar.model import TalkingHeadModel
    from synth.avatar.motion import builtin_motion
    from synth.faces.align import align_crop, apply_affine, clip_box
    from synth.faces.detector import FaceDetector
    from synth.faces.tracking import track_video
    from synth.media.video import VideoWriter, iter_frames, read_image
    from tests.test_detect import DRIVER_CLIP, PHOTO, generator_path

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    net = TalkingHeadModel.load(generator_path())
    photo = read_image(shared_path(PHOTO))
    lm = FaceDetector().detect(photo, thorough=True)[0].landmarks
    crop, m = align_crop(photo, lm, size=256)
    if driver == "clip":
        track = track_video(shared_path(DRIVER_CLIP)).landmarks[:50]
        _, m_drv = align_crop(next(iter_frames(shared_path(DRIVER_CLIP))), box=clip_box(track), size=256)
        drv = np.stack([apply_affine(p, m_drv) for p in track])
    else:
        drv = builtin_motion("talk", apply_affine(lm, m), fps=25, seconds=4)
    fake, _ = generate_fakes(net, crop[None], apply_affine(lm, m)[None], drv, k_shot=1, steps=0, seed=0)
    torch.set_num_threads(n)
    frames = [cv2.resize(f, (256, 256), interpolation=cv2.INTER_CUBIC) for f in fake]
    d = tmp_path_factory.mktemp(f"generated_{driver}")
    with VideoWriter(d / "raw.mp4", 25, (256, 256)) as w:  # test data: deliberately outside the write path
        for f in frames:
            w.write(f)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TH_HOME", str(tmp_path_factory.mktemp("generated_home")))
        write_video(frames, d / "th.mp4", 25, GenerationFacts.current())
    return d / "raw.mp4", d / "th.mp4"


@pytest.fixture(scope="session")
def generated_clips(tmp_path_factory) -> tuple[Path, Path]:
    """(raw, th) 2 s of a held-out person's photo driven by another held-out person's clip (``_generated``).
    Skips without the shared clips, the bundled generator or the bundled detector's card."""
    return _generated(tmp_path_factory, "clip")


@pytest.fixture(scope="session")
def generated_motion_clips(tmp_path_factory) -> tuple[Path, Path]:
    """(raw, th) 4 s of a held-out person's photo moved by the built-in talking motion (``_generated``): what
    `th animate PHOTO` renders by default."""
    return _generated(tmp_path_factory, "talk")
