"""Audio as the driver: decoding, features, mouth space, the network's streaming, training, sync, eval, CLI."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from synth.audio import features as F
from synth.audio import mouth
from synth.audio.dataset import ClipData
from synth.audio.model import PRESETS, AudioToLandmarks, stack_features
from synth.errors import UserError
from tests.conftest import run_th, shared_path

SPEECH_CLIP = "clips/SadTalker__WDA_KatieHill_000.mp4"  # 8 s, AAC 16 kHz stereo, a dev identity


def syllables(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: a voiced harmonic tone in syllables of random length and spacing."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    env = np.zeros_like(t)
    start = rng.uniform(0, 0.2)
    while start < seconds:
        length = rng.uniform(0.08, 0.3)
        env = np.maximum(env, np.clip(np.sin(np.pi * (t - start) / length), 0, None) * ((t >= start) & (t < start + length)))
        start += length + rng.uniform(0.03, 0.35)
    return (0.2 * voice * env / np.abs(voice).max()).astype(np.float32)


def write_wav(path: Path, x: np.ndarray, sr: int = 16_000, channels: int = 1) -> Path:
    data = np.repeat(x[:, None], channels, axis=1) if channels > 1 else x[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def encode(src: Path, dest: Path, *args: str) -> Path:
    from synth.media.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *args, str(dest)],
                   check=True)
    return dest


@pytest.fixture(scope="module")
def tiny_audio_model() -> AudioToLandmarks:
    torch.manual_seed(0)
    m = AudioToLandmarks(PRESETS["tiny"]).eval()
    torch.nn.init.normal_(m.head.weight, std=0.3)  # zero-initialised head would predict nothing
    return m


# --- decoding and features ---

@pytest.mark.parametrize(("suffix", "sr", "channels", "args"), [
    (".wav", 44_100, 2, ()), (".wav", 8_000, 1, ()), (".mp3", 48_000, 2, ("-c:a", "libmp3lame")),
    (".ogg", 22_050, 1, ("-c:a", "libvorbis")), (".flac", 32_000, 6, ()), (".m4a", 24_000, 2, ("-c:a", "aac")),
])
def test_every_format_rate_and_channel_count_decodes_to_16k_mono(tmp_path, suffix, sr, channels, args):
    t = np.arange(int(2.0 * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    src = write_wav(tmp_path / "src.wav", x, sr, channels)
    path = src if suffix == ".wav" else encode(src, tmp_path / f"a{suffix}", *args)
    y = F.read_audio(path)
    assert abs(len(y) - 32_000) <= 0.03 * 32_000  # codec priming/padding: a few ms at most
    rms = float(np.sqrt(np.mean(y[4000:-4000] ** 2)))
    assert 0.3 < rms < 0.4, rms  # the sine's level survives resampling and down-mixing (0.354)
    assert F.is_audio_path(path)


def test_streamed_log_mel_equals_whole_signal():
    x = syllables(3.1)
    stream = F.LogMelStream()
    parts = [stream.push(x[i:i + 7777]) for i in range(0, len(x), 7777)] + [stream.finish(len(x))]
    got = np.concatenate(parts)
    padded = np.concatenate([np.zeros(F.WIN // 2, np.float32), x, np.zeros(F.WIN + F.HOP, np.float32)])
    want = F.log_mel(padded)[: len(got)]
    assert len(got) == -(-len(x) // F.HOP)
    assert np.abs(got - want).max() < 1e-4


def test_file_without_audio_stream_is_a_clear_error(tmp_path):
    from synth.media.video import VideoWriter

    silent_video = tmp_path / "v.mp4"
    with VideoWriter(silent_video, 25, (64, 64)) as w:
        for _ in range(5):
            w.write(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(UserError, match="no audio stream"):
        F.check_audio(silent_video)
    photo = tmp_path / "p.png"
    photo.write_bytes(b"not used")
    r = run_th("animate", photo, "-o", tmp_path / "o.mp4", "--audio-from", silent_video)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "no audio stream" in r.stderr
    assert not (tmp_path / "o.mp4").exists()
    r = run_th("animate", photo, tmp_path / "nothing.wav", "-o", tmp_path / "o.mp4")
    assert r.returncode != 0 and "no such file" in r.stderr


# --- mouth space ---

@pytest.fixture(scope="module")
def face68(astronaut) -> np.ndarray:
    from synth.faces.detector import FaceDetector

    return FaceDetector().detect(astronaut, thorough=True)[0].landmarks.astype(np.float32)


@pytest.fixture(scope="module")
def unit_face(face68) -> np.ndarray:
    """A real neutral face in mouth-space axes and units (eye line horizontal, face scale 1)."""
    origin, rot = mouth.eye_frame(face68)
    return ((face68 - origin) @ rot.T / mouth.face_scale(face68)).astype(np.float32)


def test_mouth_space_round_trip_ignores_head_pose_and_size(face68):
    rng = np.random.default_rng(0)
    n = 60
    m = np.zeros((n, mouth.N_MOVING, 2), np.float32)
    amount = np.clip(np.sin(np.arange(n) / 3.0), 0, None)[20:]
    m[20:, 24:29, 1] = 0.08 * amount[:, None]  # outer lower lip (55-59) down
    m[20:, 34:37, 1] = 0.08 * amount[:, None]  # inner lower lip (65-67) down
    m[20:, 5:12, 1] = 0.05 * amount[:, None]  # chin (5-11) down
    ang, s = 0.3, 1.7
    tilted = face68 @ np.array([[np.cos(ang), np.sin(ang)], [-np.sin(ang), np.cos(ang)]]) * s + [40.0, -25.0]
    faces = mouth.apply_mouth_motion(tilted, m)
    for t in range(n):  # the head moves too: a different rotation, scale and shift every frame
        a, k, sh = rng.normal(0, 0.1), rng.uniform(0.8, 1.2), rng.normal(0, 10, 2)
        c = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        faces[t] = faces[t] @ c.T * k + sh
    rec, neutral, _ = mouth.clip_targets(faces)
    assert np.abs(rec - m).max() < 1e-3, np.abs(rec - m).max()
    assert abs(mouth.face_scale(neutral) - 1) < 1e-4


# --- the network and streaming ---

def test_streamed_motion_equals_one_pass_and_memory_stays_flat(tmp_path, tiny_audio_model):
    import tracemalloc

    from synth.audio.infer import MotionStream, iter_motion

    m = tiny_audio_model
    x = syllables(7.3)
    mel = F.log_mel(np.concatenate([np.zeros(F.WIN // 2, np.float32), x, np.zeros(F.WIN + 4 * F.HOP, np.float32)]))
    n = -(-len(x) // 640)
    with torch.no_grad():
        whole = m(torch.from_numpy(stack_features(mel[: -(-len(x) // F.HOP)], -m.config.context,
                                                  n + m.config.context))[None])[0][0].numpy()
    stream = MotionStream(m, block=37)
    blocks = [b for i in range(0, len(x), 3001) for b in stream.push(x[i:i + 3001])] + stream.finish()
    streamed = np.concatenate([b[0] for b in blocks])
    assert streamed.shape == whole.shape == (n, 37, 2)
    assert np.abs(streamed - whole).max() < 1e-4

    def peak(seconds: float) -> tuple[int, int]:
        path = write_wav(tmp_path / f"long{seconds}.wav", np.tile(x, int(seconds / 7.3) + 1)[: int(seconds * 16_000)])
        tracemalloc.start()
        frames = sum(len(b) for b in iter_motion(m, path, chunk_seconds=5))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return frames, top

    f1, p1 = peak(30)
    f2, p2 = peak(600)
    assert (f1, f2) == (750, 15_000)
    assert p2 < 1.3 * p1, (p1, p2)  # 20× longer audio, same peak


def test_silence_gives_a_closed_still_mouth(tmp_path, tiny_audio_model):
    from synth.audio.infer import audio_motion

    rng = np.random.default_rng(0)
    quiet = write_wav(tmp_path / "quiet.wav", rng.normal(0, 10 ** (-75 / 20), 48_000).astype(np.float32))
    zero = write_wav(tmp_path / "zero.wav", np.zeros(40_000, np.float32), sr=44_100, channels=2)
    for p in (quiet, zero):
        motion = audio_motion(tiny_audio_model, p)
        assert len(motion) > 0 and np.abs(motion).max() == 0.0
    speech = write_wav(tmp_path / "speech.wav", np.concatenate([syllables(2.0), np.zeros(32_000, np.float32)]))
    motion = audio_motion(tiny_audio_model, speech)
    assert np.abs(motion[:40]).max() > 0 and np.abs(motion[58:]).max() == 0.0  # still after the last syllable


def test_silent_avatar_keeps_its_lips_closed_and_still(face68):
    from synth.avatar.motion import talking_motion

    assert mouth.opening(face68) > mouth.OPEN_AT_REST * mouth.face_scale(face68)  # the astronaut smiles, lips parted
    faces = talking_motion(face68, np.zeros((100, mouth.N_MOVING, 2), np.float32), seed=1)
    k = mouth.face_scale(face68)
    assert np.allclose(mouth.opening(faces) / k, mouth.CLOSED_OPENING, atol=2e-3)  # closed (head motion included)
    still = mouth.canonicalise(faces)[:, mouth.MOUTH]
    assert np.abs(still - still[0]).max() < 0.01 * k  # the mouth does not move on the face
    assert np.abs(faces[:, 36:48] - faces[0, 36:48]).max() > 0.05 * k  # while the eyes blink and the head moves


# --- training ---

def synthetic_clip(neutral: np.ndarray, key: str, identity: str, seconds: float, lag: int = 0,
                   seed: int = 0) -> ClipData:
    """A clip whose mouth opens with the loudness of its audio, ``lag`` frames after it (lag > 0: audio late)."""
    x = syllables(seconds, seed=seed)
    n = int(seconds * 25)
    mel = F.log_mel(np.concatenate([np.zeros(F.WIN // 2, np.float32), x, np.zeros(F.WIN, np.float32)]))[: 4 * n]
    loud = np.clip((mel.reshape(n, 4, -1).max(-1).mean(-1) + 8) / 8, 0, 1)
    motion = np.zeros((n, mouth.N_MOVING, 2), np.float32)
    motion[:, 34:37, 1] = 0.1 * np.roll(loud, -lag)[:, None]  # inner lower lip (65-67) down
    op = mouth.opening(mouth.apply_mouth_motion(neutral, motion)).astype(np.float32)
    return ClipData(key, mel.astype(np.float32), motion, op, np.ones(n, bool), np.zeros(n, np.float32), neutral,
                    {"key": key, "identity": identity})


def test_training_resumes_exactly_and_learns(tmp_path, unit_face):
    from dataclasses import replace

    from synth.audio.train import AudioTrainConfig, load_model, train, validate

    clips = [synthetic_clip(unit_face, f"c{i}", f"id{i}", 6.0, seed=i) for i in range(3)]
    cfg = replace(AudioTrainConfig(steps=6, batch=4, window=32, checkpoint_every=3, eval_every=3), lr=3e-3)
    a = train(tmp_path / "a", clips, [], cfg, PRESETS["tiny"], {"train_clips": ["c0"]})
    assert train(tmp_path / "b", clips, [], cfg, PRESETS["tiny"], {}, until=4) is None  # interrupted at step 4
    b = train(tmp_path / "b", clips, [], cfg, PRESETS["tiny"], {})  # the same command again resumes
    ma, mb = load_model(a), load_model(b)
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), k
    longer = train(tmp_path / "c", clips, [], replace(cfg, steps=150), PRESETS["tiny"], {})
    before, after = validate(load_model(a), clips, cfg), validate(load_model(longer), clips, cfg)
    assert after["val_mouth_dist"] < before["val_mouth_dist"]


def test_truncated_latest_audio_checkpoint_falls_back_to_the_one_before(tmp_path, unit_face, capfd):
    """A damaged newest training state (a crash mid-copy, a full disk) is skipped with a warning and the run
    resumes from the previous one, then finishes as an uninterrupted run would (issue #17)."""
    from dataclasses import replace

    from synth.audio.train import AudioTrainConfig, load_model, train

    clips = [synthetic_clip(unit_face, f"c{i}", f"id{i}", 6.0, seed=i) for i in range(3)]
    cfg = replace(AudioTrainConfig(steps=6, batch=4, window=32, checkpoint_every=2, eval_every=3), lr=3e-3)
    a = train(tmp_path / "a", clips, [], cfg, PRESETS["tiny"], {})
    assert train(tmp_path / "b", clips, [], cfg, PRESETS["tiny"], {}, until=4) is None
    ckpts = sorted((tmp_path / "b" / "checkpoints").glob("ckpt-*.safetensors"))
    assert ckpts[-1].name == "ckpt-00000004.safetensors"
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[: ckpts[-1].stat().st_size // 3])
    b = train(tmp_path / "b", clips, [], cfg, PRESETS["tiny"], {})
    assert "ckpt-00000004.safetensors cannot be read" in capfd.readouterr().err
    for (k, va), vb in zip(load_model(a).state_dict().items(), load_model(b).state_dict().values()):
        assert torch.equal(va, vb), k


def test_sigkilled_audio_training_resumes(tmp_path, unit_face):
    """`th audio train` killed by SIGKILL after its first checkpoint: the same command resumes from it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    metas = []
    for i in range(3):
        c = synthetic_clip(unit_face, f"k{i}", f"id{i}", 6.0, seed=i)
        wav = write_wav(tmp_path / f"k{i}.wav", syllables(6.0, seed=i))
        c.meta.update({"license": "MIT", "seconds": 6.0, "path": str(wav), "clip": wav.name})
        c.rms_db = F.frame_rms_db(F.read_audio(wav), 25, len(c))
        c.save(data / "clips" / f"k{i}.npz")
        metas.append(c.meta)
    (data / "index.json").write_text(json.dumps({"version": 1, "clips": metas, "skipped": [], "offsets": {}}))
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "thcli", "audio", "train", str(data), str(run), "--preset", "tiny",
            "--steps", "4000", "--threads", "1"]
    env = {**os.environ, "TH_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((run / "checkpoints").glob("ckpt-*.safetensors")) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted((run / "checkpoints").glob("ckpt-*.safetensors"))
    assert saved, "no checkpoint within 240 s"
    step = int(saved[-1].stem.split("-")[1])
    r = run_th("audio", "train", data, run, "--preset", "tiny", "--steps", str(step + 2), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert (run / "audio-model.safetensors").is_file()
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    assert max(e.get("step", 0) for e in log) >= step + 1


# --- sync and eval ---

def test_offset_estimate_finds_a_shifted_clip(unit_face):
    from synth.audio.sync import estimate_offsets

    clips = [synthetic_clip(unit_face, f"c{i}", f"id{i}", 6.0, seed=i) for i in range(5)]
    clips.append(synthetic_clip(unit_face, "late", "id_late", 6.0, lag=4, seed=9))
    flat = synthetic_clip(unit_face, "dub", "id_dub", 6.0, seed=11)
    flat.opening = np.random.default_rng(0).uniform(0, 0.1, len(flat)).astype(np.float32)  # mouth ignores audio
    res = estimate_offsets(clips + [flat])
    assert res["late"]["lag"] == 4 and res["late"]["decision"] == "correct"
    assert all(res[f"c{i}"]["decision"] == "keep" for i in range(5))
    assert res["dub"]["decision"] == "drop"
    fixed = clips[-1].shifted(4)  # corrected: its mouth now follows its audio at lag 0
    assert len(fixed) == len(clips[-1]) - 4 and len(fixed.mel) >= 4 * len(fixed)
    in_sync = synthetic_clip(unit_face, "x", "x", 6.0, seed=9)
    assert np.allclose(fixed.opening, in_sync.opening[4:4 + len(fixed)])


def test_metrics_of_a_perfect_and_a_lagged_prediction(unit_face):
    from synth.eval.audio_sync import clip_metrics

    c = synthetic_clip(unit_face, "c", "id", 6.0)
    perfect = clip_metrics(c, c.motion)
    assert perfect["mouth_dist"] == 0 and perfect["open_corr"] > 0.999 and perfect["lag"] == 0
    late = clip_metrics(c, np.roll(c.motion, 2, axis=0))
    assert late["lag"] == 2 and late["open_corr"] > 0.95 and late["mouth_dist"] > 0


# --- end to end ---

def test_animate_speaks_an_audio_file_with_its_sound_and_verifies(tmp_path, tiny_model):
    from synth.audio.bundled import default_audio_model_path
    from synth.media.video import probe

    clip = shared_path(SPEECH_CLIP)
    photo = tmp_path / "face.png"
    from synth.media.video import iter_frames, write_image

    write_image(photo, next(iter_frames(clip)))
    speech = encode(clip, tmp_path / "speech.mp3", "-vn", "-t", "3", "-c:a", "libmp3lame")
    out = tmp_path / "talk.mp4"
    r = run_th("animate", photo, speech, "-o", out, "--model", tiny_model, "--steps", "0", "--size", "128",
               "--audio-model", default_audio_model_path())
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert info.has_audio and abs(info.fps - 25) < 1e-3 and abs(info.frames - 75) <= 1
    v = run_th("verify", out, "--json")
    assert v.returncode == 0, v.stdout + v.stderr
    r = run_th("animate", photo, "-o", tmp_path / "from_video.mp4", "--model", tiny_model, "--steps", "0",
               "--size", "128", "--audio-from", clip)
    assert r.returncode == 0, r.stderr
    assert abs(probe(tmp_path / "from_video.mp4").frames - 200) <= 1


def test_cli_train_resume_and_eval_on_a_small_data_folder(tmp_path, unit_face):
    """`th audio train` (licence and identity filters, tiny preset) then `th audio eval` on the held-out one."""
    import json

    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    metas = []
    for i, (ident, lic) in enumerate([("a", "MIT"), ("b", "CC BY-NC 4.0"), ("c", "Apache-2.0"), ("dev", "MIT")]):
        c = synthetic_clip(unit_face, f"k{i}", ident, 4.0, seed=i)
        wav = write_wav(tmp_path / f"k{i}.wav", syllables(4.0, seed=i))
        c.meta.update({"license": lic, "seconds": 4.0, "path": str(wav), "clip": wav.name})
        c.rms_db = F.frame_rms_db(F.read_audio(wav), 25, len(c))
        c.save(data / "clips" / f"k{i}.npz")
        metas.append(c.meta)
    (data / "index.json").write_text(json.dumps({"version": 1, "clips": metas, "skipped": [], "offsets": {}}))
    r = run_th("audio", "train", data, tmp_path / "run", "--preset", "tiny", "--steps", "4", "--license", "MIT",
               "--license", "Apache", "--exclude-identity", "dev", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["train_clips"] == ["k0", "k2"]  # non-commercial and held-out clips left out
    r = run_th("audio", "train", data, tmp_path / "run", "--preset", "tiny", "--steps", "4", "--license", "MIT",
               "--license", "Apache", "--exclude-identity", "dev", "--threads", "1")
    assert r.returncode == 0, r.stderr
    model = tmp_path / "run" / "audio-model.safetensors"
    r = run_th("audio", "eval", data, "-o", tmp_path / "rep", "--model", model, "--identities", "a")
    assert r.returncode != 0 and "trained on a" in r.stderr  # a training identity is refused
    r = run_th("audio", "eval", data, "-o", tmp_path / "rep", "--model", model, "--identities", "dev")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [c["key"] for c in rep["clips"]] == ["k3"] and set(rep["summary"]) == {"model", "energy", "talk", "still"}
