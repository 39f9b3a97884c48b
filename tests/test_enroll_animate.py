"""Enroll from frames of a real clip, animate with later frames, verify; and every bad input."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from synth.media.video import VideoWriter, iter_frames, probe, write_image
from tests.conftest import run_th, shared_path

CLIP = "clips/RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4"  # 4 s, 25 fps, 224 px, AAC audio


@pytest.fixture(scope="module")
def clip_parts(tmp_path_factory):
    """Frames 0-39 as photos, frames 40-99 as a driver video with the clip's audio."""
    src = shared_path(CLIP)
    d = tmp_path_factory.mktemp("clip_parts")
    frames = list(iter_frames(src))
    photos = []
    for i in (0, 10, 20, 30):
        p = d / f"shot{i}.png"
        write_image(p, frames[i])
        photos.append(p)
    driver = d / "driver.mp4"
    with VideoWriter(driver, 25, (224, 224), audio_from=src) as w:
        for f in frames[40:]:
            w.write(f)
    return photos, driver


@pytest.mark.parametrize("shots", [1, 4])
def test_enroll_then_animate_with_later_frames_verifies_signed(tmp_path, tiny_model, clip_parts, shots):
    photos, driver = clip_parts
    avatar = tmp_path / "p.avatar"
    r = run_th("enroll", *photos[:shots], "-o", avatar, "--steps", "3", "--model", tiny_model, "--consent", "test subject")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.preview.png").exists()
    out = tmp_path / "out.mp4"
    r = run_th("animate", avatar, driver, "-o", out, "--model", tiny_model, "--size", "128")
    assert r.returncode == 0, r.stderr
    info, drv = probe(out), probe(driver)
    assert info.frames == drv.frames == 60 and abs(info.fps - drv.fps) < 1e-3 and info.has_audio
    v = run_th("verify", out, "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    rep = json.loads(v.stdout)
    rep = rep[0] if isinstance(rep, list) else rep
    assert rep["verdict"] == "signed"


def test_animate_photo_on_the_fly_with_builtin_motion(tmp_path, tiny_model, clip_parts):
    photos, _ = clip_parts
    out = tmp_path / "nod.mp4"
    r = run_th("animate", photos[0], "nod", "-o", out, "--model", tiny_model, "--seconds", "2", "--fps", "10",
               "--steps", "0")
    assert r.returncode == 0, r.stderr
    assert probe(out).frames == 20
    assert run_th("verify", out).returncode == 0


def test_relative_motion_keeps_avatar_shape():
    from synth.avatar.motion import relative_transfer

    rng = np.random.default_rng(0)
    avatar = rng.uniform(40, 90, (68, 2)).astype(np.float32)
    driver = rng.uniform(100, 300, (68, 2)).astype(np.float32)
    seq = np.stack([driver, driver + 3.0])
    out = relative_transfer(avatar, seq, 0)
    assert np.allclose(out[0], avatar)  # the neutral frame gives the avatar's own face, not the driver's
    assert np.allclose(out[1] - out[0], out[1, 0] - out[0, 0])  # a pure translation stays one


def test_faceless_stretch_is_held_and_reported(tmp_path, tiny_model, clip_parts):
    photos, _ = clip_parts
    src = shared_path(CLIP)
    frames = list(iter_frames(src))[:50]
    for i in range(20, 30):
        frames[i] = np.zeros_like(frames[i])
    driver = tmp_path / "gap.mp4"
    with VideoWriter(driver, 25, (224, 224)) as w:
        for f in frames:
            w.write(f)
    out = tmp_path / "gap_out.mp4"
    r = run_th("animate", photos[0], driver, "-o", out, "--model", tiny_model, "--steps", "0", "--size", "64")
    assert r.returncode == 0, r.stderr
    assert "10 driver frame(s) without a face" in r.stderr
    assert probe(out).frames == 50


def one_line(r, code=2):
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("th: error:"), r.stderr
    return lines[0]


def test_bad_avatars_and_photos(tmp_path, tiny_model, clip_parts, prepared3):
    photos, driver = clip_parts
    good = tmp_path / "good.avatar"
    assert run_th("enroll", photos[0], "-o", good, "--steps", "0", "--model", tiny_model).returncode == 0
    # No face in the photo.
    blank = tmp_path / "blank.png"
    write_image(blank, np.full((256, 256, 3), 100, np.uint8))
    assert "no face" in one_line(run_th("enroll", blank, "-o", tmp_path / "b.avatar", "--model", tiny_model))
    assert not (tmp_path / "b.avatar").exists()
    # Truncated and corrupted avatars.
    data = good.read_bytes()
    (tmp_path / "trunc.avatar").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.avatar").write_bytes(b"\x07" * 64 + data[64:])
    # A pickle renamed .avatar is never unpickled.
    (tmp_path / "evil.avatar").write_bytes(pickle.dumps({"psi": [1, 2, 3]}))
    for name, words in (("trunc.avatar", "truncated"), ("corrupt.avatar", "not"), ("evil.avatar", "not")):
        out = tmp_path / f"{name}.mp4"
        line = one_line(run_th("animate", tmp_path / name, "talk", "-o", out, "--model", tiny_model))
        assert words in line, line
        assert not out.exists()
    # An avatar made for another base model.
    other_run = tmp_path / "other_run"
    assert run_th("meta-train", prepared3, other_run, "--preset", "tiny", "--steps", "2", "--seed", "7",
                  "--quiet").returncode == 0
    from synth.avatar.model import export_model

    other = tmp_path / "other.safetensors"
    export_model(other_run, other)
    line = one_line(run_th("animate", good, "talk", "-o", tmp_path / "o.mp4", "--model", other))
    assert "base model" in line
    # Existing output is not overwritten without --force; a bad driver name is one line.
    (tmp_path / "exists.mp4").write_bytes(b"keep")
    one_line(run_th("animate", good, "talk", "-o", tmp_path / "exists.mp4", "--model", tiny_model))
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep"
    assert "built-in motion" in one_line(run_th("animate", good, "dance", "-o", tmp_path / "d.mp4", "--model", tiny_model))
    assert not list(tmp_path.glob("*.part*"))


def test_full_frame_output_is_the_photo_with_the_face_animated(tmp_path, tiny_model, astronaut):
    photo = tmp_path / "astro.png"
    write_image(photo, astronaut)
    avatar = tmp_path / "a.avatar"
    assert run_th("enroll", photo, "-o", avatar, "--steps", "0", "--model", tiny_model).returncode == 0
    out = tmp_path / "full.mp4"
    r = run_th("animate", avatar, "talk", "-o", out, "--model", tiny_model, "--full-frame", "--seconds", "1")
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert (info.width, info.height) == (512, 512) and info.frames == 25
    frame = next(iter_frames(out))
    # Far from the face the photo is untouched (up to H.264 and the watermark).
    corner = np.abs(frame[400:, :100].astype(int) - astronaut[400:, :100].astype(int)).mean()
    assert corner < 6
    assert run_th("verify", out).returncode == 0
