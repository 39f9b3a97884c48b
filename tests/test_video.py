"""Streaming video round trip: frames, fps and audio survive; H.264 yuv420p."""

from __future__ import annotations

import numpy as np

from synth.media.video import VideoWriter, audio_codec, iter_frames, probe
from tests.conftest import shared_path


def test_round_trip_frames_fps_audio(tmp_path):
    src = shared_path("clips/RNTHM__examples_fine_tuning_test_video_e43ca9f.mp4")  # 25 fps, AAC audio
    frames = list(iter_frames(src, max_frames=60))
    out = tmp_path / "rt.mp4"
    with VideoWriter(out, fps=30, size=(224, 224), audio_from=src) as w:
        for f in frames:
            w.write(f)
    info = probe(out)
    assert info.frames == 60 and abs(info.fps - 30) < 1e-3 and (info.width, info.height) == (224, 224)
    assert info.has_audio and audio_codec(out) == "aac"
    back = list(iter_frames(out))
    assert len(back) == 60
    mse = np.mean((np.stack(back).astype(float) - np.stack(frames).astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 32

    import av

    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_no_audio_source_gives_silent_video(tmp_path):
    out = tmp_path / "silent.mp4"
    with VideoWriter(out, fps=25, size=(64, 48)) as w:
        for i in range(10):
            w.write(np.full((48, 64, 3), i * 20, np.uint8))
    info = probe(out)
    assert info.frames == 10 and not info.has_audio


def test_iter_frames_streams():
    import inspect

    src = shared_path("clips/LIA__obama.mov")  # 47 s: frames come one at a time, on demand
    it = iter_frames(src)
    assert inspect.isgenerator(it)
    first = [next(it) for _ in range(3)]
    assert all(f.shape == (256, 256, 3) for f in first)
    assert len(list(iter_frames(src, every=10, max_frames=5))) == 5


def test_read_frames_at_keeps_only_the_asked_frames_and_equals_iter_frames():
    """read_frames_at converts only the frames it keeps (the detector's reader): the same pixels as iter_frames at
    those indices, indices past the end left out, an empty request reads nothing."""
    from synth.media.video import read_frames_at

    src = shared_path("clips/EDTalk__pose_source1.mp4")  # 250 frames
    every = list(iter_frames(src, max_frames=60))
    got = read_frames_at(src, {0, 7, 8, 59})
    assert sorted(got) == [0, 7, 8, 59] and all(np.array_equal(got[i], every[i]) for i in got)
    assert sorted(read_frames_at(src, [249, 400])) == [249]
    assert read_frames_at(src, []) == {}


def test_short_audio_is_padded_with_silence_and_long_audio_cut_to_the_video(tmp_path):
    """The output's audio lasts exactly as long as its frames (to one AAC frame), whatever the source's."""
    import subprocess
    import time

    import av

    from synth.media.video import ffmpeg_exe

    tone = tmp_path / "tone.m4a"  # 1 s of a 440 Hz tone
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=16000:duration=1", "-c:a", "aac", str(tone)], check=True)

    def audio(path):
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            a = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(s)])
            return a.astype(np.float64), s.codec_context.sample_rate

    for n in (50, 10):  # 2 s of video on 1 s of sound, then 0.4 s
        out = tmp_path / f"v{n}.mp4"
        with VideoWriter(out, fps=25, size=(64, 48), audio_from=tone) as w:
            for i in range(n):
                w.write(np.full((48, 64, 3), i * 4, np.uint8))
                time.sleep(0.02)  # frames come slower than the audio file is read, as when rendering
        a, rate = audio(out)
        assert probe(out).frames == n
        assert abs(len(a) / rate - n / 25) < 1024 / rate + 0.01, (n, len(a) / rate)
        loud = np.sqrt(np.mean(a[int(0.2 * rate):int(0.35 * rate)] ** 2))
        assert loud > 0.05  # lavfi's sine has amplitude 1/8
        if n == 50:  # the second after the tone ends is silence
            assert np.sqrt(np.mean(a[int(1.2 * rate):int(1.9 * rate)] ** 2)) < 1e-3
