"""Enroll from frames of a real clip, animate with later frames, verify; and every bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

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


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _audio(path) -> tuple[np.ndarray, int]:
    """The first audio track, decoded to mono float64, and its sample rate."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.codec_context.sample_rate
        chunks = [f.to_ndarray().reshape(f.to_ndarray().shape[0], -1) for f in c.decode(stream)]
    return np.concatenate(chunks, axis=1).astype(np.float64).mean(0), rate


def _best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 4096) -> float:
    """Largest normalised correlation of ``a`` and ``b`` over lags up to ``max_lag`` samples (AAC delays)."""
    n = min(len(a), len(b)) - max_lag
    best = 0.0
    for lag in range(-max_lag, max_lag + 1, 8):
        x = a[max(lag, 0):max(lag, 0) + n]
        y = b[max(-lag, 0):max(-lag, 0) + n]
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    return best


@pytest.mark.parametrize("shots", [1, 4])
def test_enroll_then_animate_with_later_frames_verifies_signed(tmp_path, tiny_model, clip_parts, shots):
    from provenance.verify import verify_file
    from synth.avatar.avatar_file import Avatar

    photos, driver = clip_parts
    avatar = tmp_path / "p.avatar"
    r = run_th("enroll", *photos[:shots], "-o", avatar, "--steps", "3", "--model", tiny_model, "--consent", "test subject")
    assert r.returncode == 0, r.stderr
    preview = verify_file(tmp_path / "p.preview.png")  # the preview is generated pixels too: sealed
    assert preview.verdict == "signed" and preview.mark.payload == preview.c2pa.payload
    out = tmp_path / "out.mp4"
    r = run_th("animate", avatar, driver, "-o", out, "--model", tiny_model, "--size", "128")
    assert r.returncode == 0, r.stderr
    info, drv = probe(out), probe(driver)
    assert info.frames == drv.frames == 60 and abs(info.fps - drv.fps) < 1e-3 and info.has_audio
    assert (info.width, info.height) == (128, 128)  # --size, not the model's 32 px
    # the driver's sound: same length, same samples (up to AAC's re-encode and its priming delay)
    (a_out, rate_out), (a_drv, rate_drv) = _audio(out), _audio(driver)
    aac_frame = 1024 / rate_out  # AAC encodes whole frames of 1024 samples
    assert rate_out == rate_drv and abs(len(a_out) - len(a_drv)) <= 1024
    assert abs(len(a_out) / rate_out - drv.frames / drv.fps) < aac_frame + 0.01
    assert np.abs(a_drv).max() > 0.01 and _best_correlation(a_out, a_drv) > 0.9
    v = run_th("verify", out, "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    rep = json.loads(v.stdout)
    assert rep["verdict"] == "signed" and rep["watermark"]["matches_manifest"] is True
    facts = rep["c2pa"]["claims"]["th"]
    assert facts["consent_statement"] == "test subject"
    assert facts["model_sha256"] == _sha256(tiny_model)
    assert facts["driver_sha256"] == _sha256(driver)
    assert facts["avatar_id"] == Avatar.load(avatar).avatar_id and len(facts["avatar_id"]) == 16
    assert rep["c2pa"]["claims"]["th"]["avatar_id"] == preview.c2pa.claims["th"]["avatar_id"]


def test_enroll_with_an_unusable_key_leaves_nothing_and_reruns_without_force(tmp_path, tiny_model, clip_parts, th_home):
    import os

    from provenance import keys

    photos, _ = clip_parts
    keys.create_identity()
    os.chmod(th_home / "keys" / "signer.key", 0o644)
    avatar = tmp_path / "p.avatar"
    line = one_line(run_th("enroll", photos[0], "-o", avatar, "--steps", "0", "--model", tiny_model))
    assert "chmod 600" in line and "0644" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["th_home"] or list(tmp_path.iterdir()) == []
    os.chmod(th_home / "keys" / "signer.key", 0o600)
    r = run_th("enroll", photos[0], "-o", avatar, "--steps", "0", "--model", tiny_model)  # no --force needed
    assert r.returncode == 0, r.stderr
    assert avatar.is_file() and (tmp_path / "p.preview.png").is_file()


def test_npz_track_drives_an_avatar(tmp_path, tiny_model, clip_parts):
    from synth.faces.tracking import track_video

    photos, driver = clip_parts
    track = track_video(driver)
    npz = tmp_path / "drv.npz"
    track.save(npz)
    avatar = tmp_path / "p.avatar"
    assert run_th("enroll", photos[0], "-o", avatar, "--steps", "0", "--model", tiny_model).returncode == 0
    for extra in ((), ("--absolute",)):
        out = tmp_path / f"npz{len(extra)}.mp4"
        r = run_th("animate", avatar, npz, "-o", out, "--model", tiny_model, "--size", "128", *extra)
        assert r.returncode == 0, r.stderr
        info = probe(out)
        assert info.frames == len(track) == 60 and abs(info.fps - track.fps) < 1e-3 and not info.has_audio
        v = json.loads(run_th("verify", out, "--json").stdout)
        assert v["verdict"] == "signed" and v["c2pa"]["claims"]["th"]["driver_sha256"] == _sha256(npz)


def test_animate_photo_on_the_fly_with_builtin_motion(tmp_path, tiny_model, clip_parts):
    photos, _ = clip_parts
    out = tmp_path / "nod.mp4"
    r = run_th("animate", photos[0], "nod", "-o", out, "--model", tiny_model, "--seconds", "2", "--fps", "10",
               "--steps", "0")
    assert r.returncode == 0, r.stderr
    assert probe(out).frames == 20
    assert run_th("verify", out).returncode == 0


def test_relative_motion_keeps_avatar_shape():
    from synth.avatar.motion import face_scale, relative_transfer

    rng = np.random.default_rng(0)
    avatar = rng.uniform(40, 90, (68, 2)).astype(np.float32)
    driver = rng.uniform(100, 300, (68, 2)).astype(np.float32)
    seq = np.stack([driver, driver + np.float32([3.0, -2.0])])
    out = relative_transfer(avatar, seq, 0)
    assert np.allclose(out[0], avatar)  # the neutral frame gives the avatar's own face, not the driver's
    # the driver's (3, -2) px move, rescaled by the ratio of face sizes, moves every avatar landmark
    k = face_scale(avatar) / face_scale(driver)
    assert 0.05 < k < 0.9  # the two faces really differ in size, so the rescaling is exercised
    assert np.allclose(out[1] - out[0], np.float32([3.0 * k, -2.0 * k])[None], atol=1e-4)


def _face(cx: float = 64, cy: float = 64, half: float = 40, eye_gap: float = 0.5) -> np.ndarray:
    """A plausible 68-point face (iBUG order) centred at (cx, cy); ``eye_gap`` sets its proportions."""
    lm = np.zeros((68, 2), np.float32)
    t = np.linspace(-1, 1, 17)
    lm[:17] = np.column_stack([t, 0.3 + 0.6 * np.sqrt(1 - t**2)])
    lm[17:27] = np.column_stack([np.r_[np.linspace(-0.7, -0.2, 5), np.linspace(0.2, 0.7, 5)], np.full(10, -0.45)])
    lm[27:31] = np.column_stack([np.zeros(4), np.linspace(-0.3, 0.15, 4)])
    lm[31:36] = np.column_stack([np.linspace(-0.15, 0.15, 5), np.full(5, 0.25)])
    a6 = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    for c, sl in ((-eye_gap, slice(36, 42)), (eye_gap, slice(42, 48))):
        lm[sl] = np.column_stack([c - 0.15 * np.cos(a6), -0.25 - 0.06 * np.sin(a6)])  # corner, upper lid, ...
    a12 = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    lm[48:60] = np.column_stack([0.35 * np.cos(a12), 0.55 + 0.1 * np.sin(a12)])
    a8 = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lm[60:68] = np.column_stack([0.25 * np.cos(a8), 0.55 + 0.02 * np.sin(a8)])
    return (lm * half + np.float32([cx, cy])).astype(np.float32)


def test_builtin_motions_shapes_and_what_each_moves():
    from synth.avatar.motion import BUILTIN_MOTIONS, builtin_motion
    from synth.errors import UserError

    lm0 = _face()
    half_mouth = np.ptp(lm0[48:60, 0]) / 2
    gap = lambda lm: lm[..., 66, 1] - lm[..., 62, 1]  # noqa: E731  inner lips apart
    eye = lambda lm: lm[..., 41, 1] - lm[..., 37, 1]  # noqa: E731  left eye open
    tracks = {m: builtin_motion(m, lm0, fps=25, seconds=2.0) for m in BUILTIN_MOTIONS}
    for name, tr in tracks.items():
        assert tr.shape == (50, 68, 2) and tr.dtype == np.float32 and np.isfinite(tr).all(), name
    assert builtin_motion("nod", lm0, fps=10, seconds=3.3).shape == (33, 68, 2)
    assert gap(tracks["talk"]).max() - gap(lm0) > 0.3 * half_mouth  # the mouth opens ...
    assert np.abs(gap(tracks["turn"]) - gap(lm0)).max() < 0.1 * half_mouth  # ... and only when talking
    assert eye(tracks["blink"]).min() < 0.2 * eye(lm0) and eye(tracks["blink"][0]) > 0.9 * eye(lm0)
    nose = {m: tracks[m][:, 30] for m in ("nod", "turn")}
    assert np.ptp(nose["nod"][:, 1]) > 3 * np.ptp(nose["nod"][:, 0])  # nodding moves the nose up and down
    assert np.ptp(nose["turn"][:, 0]) > 3 * np.ptp(nose["turn"][:, 1])  # turning moves it sideways
    width = tracks["smile"][:, 54, 0] - tracks["smile"][:, 48, 0]
    assert width[25] > width[0] + 0.2 * half_mouth and abs(width[-1] - width[0]) < 0.1 * half_mouth
    assert np.ptp(tracks["demo"][:, 30], axis=0).min() > 0.5  # head motion in both directions
    with pytest.raises(UserError, match="built-in motion"):
        builtin_motion("dance", lm0)


def test_absolute_uses_the_drivers_face_relative_the_avatars(tmp_path):
    from synth.avatar.animate import plan_driver
    from synth.faces.align import apply_affine, clip_box
    from synth.faces.tracking import LandmarkTrack

    avatar = _face(64, 64, 30, eye_gap=0.35)  # narrow-set eyes
    driver = np.stack([_face(300 + 2 * t, 200, 90, eye_gap=0.6) for t in range(10)])  # wide-set, bigger, moving
    track = LandmarkTrack(driver, np.ones(10, np.float32), np.ones(10, bool), fps=20.0, frame_size=(640, 480))
    npz = tmp_path / "drv.npz"
    track.save(npz)
    ratio = lambda lm: (lm[42:48, 0].mean() - lm[36:42, 0].mean()) / np.ptp(lm[:17, 0])  # noqa: E731
    rel = plan_driver(str(npz), avatar, 128)
    ab = plan_driver(str(npz), avatar, 128, relative=False)
    assert rel.fps == ab.fps == 20.0 and rel.audio_from is None and len(rel.landmarks) == len(ab.landmarks) == 10
    assert np.allclose(rel.landmarks[0], avatar) and ratio(rel.landmarks[5]) == pytest.approx(ratio(avatar), abs=1e-3)
    M = clip_box(driver).affine(128)
    assert np.allclose(ab.landmarks, np.stack([apply_affine(x, M) for x in driver]), atol=1e-3)
    assert ratio(ab.landmarks[5]) == pytest.approx(ratio(driver[5]), abs=1e-3)  # the driver's shape leaks
    assert abs(ratio(ab.landmarks[5]) - ratio(avatar)) > 0.05


def test_faceless_stretch_is_held_and_reported(tmp_path, tiny_model, clip_parts):
    from synth.avatar.animate import plan_driver
    from synth.avatar.avatar_file import Avatar

    photos, _ = clip_parts
    src = shared_path(CLIP)
    frames = list(iter_frames(src))[:50]
    for i in range(20, 30):
        frames[i] = np.zeros_like(frames[i])
    driver = tmp_path / "gap.mp4"
    with VideoWriter(driver, 25, (224, 224)) as w:
        for f in frames:
            w.write(f)
    avatar = tmp_path / "p.avatar"
    assert run_th("enroll", photos[0], "-o", avatar, "--steps", "0", "--model", tiny_model).returncode == 0
    out = tmp_path / "gap_out.mp4"
    r = run_th("animate", avatar, driver, "-o", out, "--model", tiny_model, "--size", "128")
    assert r.returncode == 0, r.stderr
    assert "10 driver frame(s) without a face" in r.stderr
    assert probe(out).frames == 50
    # the landmarks really are held: frames 20-29 repeat frame 19's, and the face moved before the gap
    plan = plan_driver(str(driver), Avatar.load(avatar).landmarks, 32)  # streamed: tracked while rendered
    assert plan.frames == 50 and plan.faceless_count() == 0  # nothing tracked yet
    lms = np.stack(list(plan.landmarks))
    assert plan.faceless_count() == 10
    assert all(np.array_equal(lms[i], lms[19]) for i in range(20, 30))
    assert not np.array_equal(lms[30], lms[19])
    assert np.abs(lms[:20] - lms[19]).max() > 0.1
    # the stream equals tracking the whole video first (the eager path, taken with an explicit neutral frame)
    eager = plan_driver(str(driver), Avatar.load(avatar).landmarks, 32, neutral=0)
    assert isinstance(eager.landmarks, np.ndarray) and eager.faceless == 10
    np.testing.assert_array_equal(eager.landmarks, lms)
    rendered = np.stack(list(iter_frames(out))).astype(int)
    held = np.abs(rendered[21:30] - rendered[20]).mean()  # a held pose renders (almost) the same frame
    moving = np.abs(rendered[1:20] - rendered[0]).mean()
    assert held < 1.5 and held < moving, (held, moving)


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
    for name, words in (("trunc.avatar", "avatar file is truncated"), ("corrupt.avatar", "not an avatar (not a safetensors"),
                        ("evil.avatar", "not an avatar (not a safetensors")):
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
    assert "exists; pass --force" in one_line(run_th("animate", good, "talk", "-o", tmp_path / "exists.mp4",
                                                     "--model", tiny_model))
    assert (tmp_path / "exists.mp4").read_bytes() == b"keep"
    assert "built-in motion" in one_line(run_th("animate", good, "dance", "-o", tmp_path / "d.mp4", "--model", tiny_model))
    for seconds in ("0", "-2"):  # a zero-length motion is an error, not a one-frame file
        assert "--seconds must be > 0" in one_line(run_th("animate", good, "talk", "-o", tmp_path / "z.mp4",
                                                          "--seconds", seconds, "--model", tiny_model))
    assert not (tmp_path / "z.mp4").exists()
    assert not list(tmp_path.glob("*.part*")) and not list(tmp_path.glob(".*"))


def test_full_frame_of_an_odd_sized_photo(tmp_path, tiny_model, astronaut):
    """A 511×383 photo (odd sides, which H.264 4:2:0 cannot store) animates full-frame at 510×382."""
    photo = tmp_path / "odd.png"
    write_image(photo, astronaut[:383, :511])
    out = tmp_path / "odd.mp4"
    r = run_th("animate", photo, "talk", "-o", out, "--model", tiny_model, "--steps", "0", "--full-frame",
               "--seconds", "0.4")
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert (info.width, info.height) == (510, 382)


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
    from synth.avatar.avatar_file import Avatar
    from synth.faces.align import apply_affine, invert_affine

    frames = np.stack(list(iter_frames(out))).astype(int)
    photo = astronaut.astype(int)
    # Far from the face the photo is untouched (up to H.264 and the watermark).
    corner = np.abs(frames[:, 400:, :100] - photo[400:, :100]).mean()
    assert corner < 6
    # The face region (the middle of the avatar's crop, mapped back into the photo) is generated: it is
    # not the photo, and it moves over the frames (a copy of the photo would pass neither).
    av = Avatar.load(avatar)
    s = 32  # the tiny model's crop side
    (x0, y0), (x1, y1) = apply_affine(np.array([[0.3 * s, 0.3 * s], [0.7 * s, 0.7 * s]]), invert_affine(av.photo_affine))
    face = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
    assert (y1 - y0) > 60 and 150 < x0 < x1 < 350  # the astronaut's face, not some corner
    unlike_photo = np.abs(frames[:, face[0], face[1]] - photo[face]).mean()
    motion = np.abs(frames[:, face[0], face[1]] - frames[:1, face[0], face[1]]).mean(axis=(1, 2, 3)).max()
    still = np.abs(frames[:, 400:, :100] - frames[:1, 400:, :100]).mean(axis=(1, 2, 3)).max()
    # the negative control: the photo itself through the same encoder, as a copy of it would come out
    with VideoWriter(tmp_path / "copy.mp4", 25, (512, 512)) as w:
        w.write(astronaut)
    copy = next(iter_frames(tmp_path / "copy.mp4")).astype(int)
    copy_level = np.abs(copy[face] - photo[face]).mean()
    assert unlike_photo > 2 * copy_level + 2, (unlike_photo, copy_level)
    assert motion > 4 * still and motion > 1.0, (motion, still)
    assert run_th("verify", out).returncode == 0


@pytest.mark.parametrize("args,words", [(("--engine", "tensorrt"), "unknown --engine 'tensorrt'"),
                                        (("--seconds", "0"), "--seconds must be > 0")])
def test_animate_option_errors_are_one_line_and_write_nothing(tmp_path, tiny_model, args, words):
    out = tmp_path / "o.mp4"
    line = one_line(run_th("animate", shared_path(CLIP), "talk", "-o", out, "--model", tiny_model, *args))
    assert words in line, line
    assert list(tmp_path.iterdir()) == []
def _live(tmp_path, tiny_model, extra=(), reader=True):
    """`th animate` of a built-in motion with --live into a named pipe read by a thread: (result, raw frames)."""
    import threading

    from skimage import data

    photos_avatar = tmp_path / "a.avatar"
    photo = tmp_path / "astronaut.png"
    write_image(photo, data.astronaut())
    assert run_th("enroll", photo, "-o", photos_avatar, "--steps", "0", "--model", tiny_model).returncode == 0
    fifo = tmp_path / "live.fifo"
    os.mkfifo(fifo)
    got = bytearray()

    def read():
        with open(fifo, "rb") as fh:
            got.extend(fh.read())

    t = threading.Thread(target=read, daemon=True)
    if reader:
        t.start()
        time.sleep(0.3)  # the reader has the pipe open before th probes it
    r = run_th("animate", photos_avatar, "talk", "--seconds", "1", "-o", tmp_path / "o.mp4", "--model", tiny_model,
               "--size", "128", "--live", fifo, *extra)
    if reader:
        t.join(30)
    return r, np.frombuffer(bytes(got), np.uint8)


def test_live_pipe_gets_every_frame_watermarked_as_it_is_made(tmp_path, tiny_model):
    from provenance import watermark

    r, raw = _live(tmp_path, tiny_model)
    assert r.returncode == 0, r.stderr
    n = probe(tmp_path / "o.mp4").frames
    assert n == 25 and raw.size == n * 128 * 128 * 3  # every frame, raw RGB24 at the output size
    frames = raw.reshape(n, 128, 128, 3)
    assert frames.std() > 10  # pictures, not zeros
    payload = r.stdout.split("[watermark ")[1].split(",")[0]
    found = watermark.detect(iter(frames))
    assert found.found and found.payload == payload  # the mark of the signed file, on the live frames too
    assert "live: 25 frames" in r.stderr and "latency landmarks → written median" in r.stderr


def test_live_refuses_files_terminals_and_unread_pipes(tmp_path, tiny_model):
    plain = tmp_path / "frames.raw"
    plain.write_bytes(b"")
    line = one_line(run_th("animate", shared_path(CLIP), "talk", "-o", tmp_path / "o.mp4", "--model", tiny_model,
                           "--live", plain))
    assert "not a named pipe" in line
    r, _ = _live(tmp_path, tiny_model, reader=False)
    assert "nobody is reading the pipe" in one_line(r)
    with open(tmp_path / "x", "wb") as stdout:  # `--live -` with stdout redirected to a file
        r = subprocess.run([sys.executable, "-m", "thcli", "animate", str(shared_path(CLIP)), "talk", "-o",
                            str(tmp_path / "o2.mp4"), "--live", "-"], stdout=stdout, stderr=subprocess.PIPE, text=True,
                           timeout=120)
    assert r.returncode == 2 and "stdout is not a pipe" in r.stderr
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o2.mp4").exists()
