"""Streaming video and image I/O: decode with PyAV, encode H.264 yuv420p with the ffmpeg binary that
imageio-ffmpeg ships. Frames are RGB uint8 ``H×W×3``; memory use does not depend on video length.
ffmpeg is always called with an argv list (never a shell).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg"}
MAX_IMAGE_PIXELS = 40_000_000  # ~6300×6300; an 8000×8000 image is refused, not silently eaten


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, as far as its container says."""

    fps: float
    width: int
    height: int
    frames: int
    duration: float
    has_audio: bool


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg (libx264 + aac)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _require_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")


def is_image_path(path: Path | str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def probe(path: Path | str) -> VideoInfo:
    """Read the container header: fps, size, frame count (estimated if unknown), duration, audio."""
    import av

    path = Path(path)
    _require_file(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise UserError(f"{path}: no video stream")
            vs = c.streams.video[0]
            fps = float(vs.average_rate or vs.guessed_rate or 25.0)
            if vs.duration is not None and vs.time_base is not None:
                duration = float(vs.duration * vs.time_base)
            elif c.duration is not None:
                duration = c.duration / 1_000_000
            else:
                duration = 0.0
            frames = int(vs.frames) or int(round(duration * fps))
            return VideoInfo(
                fps=fps,
                width=int(vs.codec_context.width),
                height=int(vs.codec_context.height),
                frames=frames,
                duration=duration,
                has_audio=bool(c.streams.audio),
            )
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: not a readable video ({e.__class__.__name__})") from e


def _decoded(path: Path | str) -> Iterator:
    """PyAV's decoded frames of the first video stream, not yet converted to RGB (the conversion costs more than
    the decoding: callers convert only the frames they keep). Errors as ``iter_frames`` describes."""
    import av

    path = Path(path)
    _require_file(path)
    n_out = 0
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: not a readable video ({e.__class__.__name__})") from e
    with container:
        if not container.streams.video:
            raise UserError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame
                n_out += 1
        except av.error.FFmpegError as e:
            if n_out == 0:
                raise UserError(f"{path}: corrupt video, no frame could be decoded") from e
    if n_out == 0:
        raise UserError(f"{path}: video has no decodable frames")


def iter_frames(path: Path | str, every: int = 1, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames one at a time (every ``every``-th, at most ``max_frames``).

    A file that decodes to no frame at all raises UserError; corruption after some frames ends the
    stream early (what was decodable is returned), as players do.
    """
    n_out = 0
    decoded = _decoded(path)
    try:
        for i, frame in enumerate(decoded):
            if i % every == 0:
                yield frame.to_ndarray(format="rgb24")
                n_out += 1
                if max_frames is not None and n_out >= max_frames:
                    return
    finally:
        decoded.close()  # closes the container now, not when the generator is collected


def read_frames_at(path: Path | str, indices: list[int] | set[int]) -> dict[int, np.ndarray]:
    """Decode once, convert and keep only the frames at ``indices``; memory is O(len(indices))."""
    wanted = set(indices)
    last = max(wanted) if wanted else -1
    out: dict[int, np.ndarray] = {}
    if last < 0:
        return out
    decoded = _decoded(path)
    try:
        for i, frame in enumerate(decoded):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    finally:
        decoded.close()
    return out


class VideoWriter:
    """Stream RGB frames into an H.264 (yuv420p) mp4 through an ffmpeg subprocess.

    ``audio_from``: a media file whose first audio track is muxed in (AAC), cut or padded with
    silence to exactly the video's length. The frames are encoded first and the audio added when
    their number is known: ffmpeg's ``-shortest`` overshoots by up to a second of audio when frames
    arrive slower than the audio file is read (measured), so it is not used. Use as a context manager;
    on an exception the partial file is removed.
    """

    def __init__(
        self,
        path: Path | str,
        fps: float,
        size: tuple[int, int],
        audio_from: Path | str | None = None,
        crf: int = 18,
        preset: str = "veryfast",
        label: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.label = label or str(path)  # the name errors give (the destination, not a temp file)
        self.fps = float(fps)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width % 2 or self.height % 2:
            raise UserError(f"video size must be even for yuv420p, got {self.width}x{self.height}")
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None
        self._video_only = None  # an anonymous file holding the frames until the audio is added

    def _argv(self, out: Path) -> list[str]:
        return [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-framerate", f"{self.fps:.6f}", "-i", "pipe:0",
            "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(out),
        ]

    def _add_audio(self) -> None:
        """Mux the frames with ``audio_from``'s first track, padded with silence and cut to their length."""
        from synth.media.workdir import fd_of

        assert self._video_only is not None and self.audio_from is not None
        argv = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(self._video_only.path),
                "-i", str(self.audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-af", "apad",
                "-c:a", "aac", "-b:a", "128k", "-t", f"{self.frames_written / self.fps:.6f}",
                "-movflags", "+faststart", "-f", "mp4", str(self.path)]
        fds = tuple(fd for fd in (fd_of(self._video_only.path), fd_of(self.path)) if fd is not None)
        r = subprocess.run(argv, capture_output=True, text=True, pass_fds=fds)
        if r.returncode != 0:
            raise self._failure(r.returncode, r.stderr)

    def __enter__(self) -> VideoWriter:
        from synth.media.workdir import AnonymousFile, fd_of, th_home

        out = self.path
        if self.audio_from is not None and probe_has_audio(self.audio_from):
            self._video_only = AnonymousFile(th_home() / "video-only.mp4")  # closed (freed) in __exit__
            out = self._video_only.path
        fd = fd_of(out)  # an anonymous file (synth.media.workdir): ffmpeg inherits its descriptor
        self._proc = subprocess.Popen(self._argv(out), stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                      pass_fds=() if fd is None else (fd,))
        return self

    def _failure(self, rc: int, err: str) -> UserError:
        """One line saying why ffmpeg could not write (disk full, size limit, ...); exit code 1."""
        import signal

        from synth.media.workdir import io_reason

        last = err.strip().splitlines()[-1] if err.strip() else ""
        if rc == -signal.SIGXFSZ:
            reason = "file size limit reached (ulimit -f)"
        else:
            reason = io_reason(RuntimeError(err)) or last or f"ffmpeg exited with status {rc}"
        return UserError(f"cannot write {self.label}: {reason}; nothing was written", exit_code=1)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 {(self.height, self.width, 3)}, got {frame.dtype} {frame.shape}")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError as e:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise self._failure(self._proc.wait(), err) from e
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._proc is not None
        if self._proc.stdin:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        rc = self._proc.wait()
        try:
            if exc_type is None and rc == 0 and self.frames_written > 0 and self._video_only is not None:
                self._add_audio()
        except BaseException:
            self._discard()
            raise
        finally:
            if self._video_only is not None:
                self._video_only.close()
        if exc_type is not None or rc != 0 or self.frames_written == 0:
            self._discard()
            if exc_type is None:
                if self.frames_written == 0:
                    raise UserError(f"cannot write {self.label}: no frames", exit_code=1)
                raise self._failure(rc, err)

    def _discard(self) -> None:
        from synth.media.workdir import fd_of

        if fd_of(self.path) is None:  # an anonymous file is freed by its owner, not unlinked
            self.path.unlink(missing_ok=True)


def probe_has_audio(path: Path | str) -> bool:
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except av.error.FFmpegError:
        return False


def audio_codec(path: Path | str) -> str | None:
    import av

    with av.open(str(path)) as c:
        return c.streams.audio[0].codec_context.name if c.streams.audio else None


def read_image(path: Path | str) -> np.ndarray:
    """Load an image as RGB uint8, with clear errors for missing, unreadable or oversized files."""
    import cv2

    path = Path(path)
    _require_file(path)
    data = np.fromfile(str(path), dtype=np.uint8)
    # Check the header size before decoding so a huge image costs no memory.
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:
        raise UserError(f"{path}: not a readable image") from e
    if w * h > MAX_IMAGE_PIXELS:
        raise UserError(f"{path}: image is {w}x{h}, larger than th accepts ({MAX_IMAGE_PIXELS // 1_000_000} MP); downscale it first")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image(path: Path | str, rgb: np.ndarray) -> None:
    """Encode an RGB uint8 image to ``path`` (format from the suffix). Not for generated pixels:
    those go through ``provenance.write``."""
    import cv2

    ok, buf = cv2.imencode(Path(path).suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"cannot encode image as {Path(path).suffix}")
    Path(path).write_bytes(buf.tobytes())
