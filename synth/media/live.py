"""`th animate --live PIPE`: every frame, watermarked, as raw RGB24 to a named pipe or stdout the moment it is made.

For a live view or a live pipeline (a webcam through ffmpeg in, `ffplay -f rawvideo -pixel_format rgb24
-video_size 256x256 -framerate 25 -i PIPE` out), while the signed mp4 is still written. Only watermarked frames
are sent (the sink sits behind the watermark, provenance.write.write_video's ``on_frame``), and only to a pipe:
a regular file is refused, because every file th writes carries a C2PA manifest and a raw stream cannot.

Latency is measured per frame from the moment its landmarks reach the renderer (``ready``) to the moment its
bytes are written; the tracking of a driver video comes before that (its ms/frame is in bench_speed's table).
"""

from __future__ import annotations

import collections
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np

from synth.errors import UserError


def check_live_target(target: str) -> None:
    """``-`` (stdout, when it is a pipe) or an existing named pipe; anything else is a one-line error, before
    any slow work."""
    if target == "-":
        mode = os.fstat(sys.stdout.fileno()).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise UserError("--live -: stdout is not a pipe (pipe it into a viewer; a file th writes is a signed "
                            "mp4, and raw frames do not belong on a terminal)")
        return
    p = Path(target)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"--live {target}: no such pipe (make one with `mkfifo {target}`)") from None
    if not stat.S_ISFIFO(mode):
        raise UserError(f"--live {target}: not a named pipe; raw frames go only to a pipe or - (stdout): every file "
                        "th writes is a signed mp4")


class LiveSink:
    """Writes frames to the target; ``ready()`` marks when a frame's landmarks reached the renderer."""

    def __init__(self, target: str) -> None:
        check_live_target(target)
        self.target = target
        if target == "-":
            self._fd = sys.stdout.fileno()
        else:
            try:  # non-blocking open fails at once when nobody reads the pipe (instead of hanging)
                self._fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                raise UserError(f"--live {target}: nobody is reading the pipe (start the viewer first)") from e
            os.set_blocking(self._fd, True)
        self._ready: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.sent = 0
        self.broken = False

    def ready(self) -> None:
        """Called (from the renderer's thread) as each frame's landmarks are taken, in order."""
        self._ready.append(time.monotonic())

    def __call__(self, frame: np.ndarray) -> None:
        t0 = self._ready.popleft() if self._ready else None
        if self.broken:
            return
        try:
            data = memoryview(np.ascontiguousarray(frame, np.uint8)).cast("B")
            while data:
                data = data[os.write(self._fd, data):]
        except BrokenPipeError:
            self.broken = True  # the viewer went away: the signed mp4 is still finished
            print(f"th: --live {self.target}: the reader closed the pipe after {self.sent} frames; the mp4 goes on",
                  file=sys.stderr)
            return
        self.sent += 1
        if t0 is not None:
            self.latencies.append(time.monotonic() - t0)

    def close(self) -> None:
        if self.target != "-":
            os.close(self._fd)

    def summary(self) -> str:
        lat = np.array(self.latencies) * 1000.0
        if not lat.size:
            return f"live: {self.sent} frames to {self.target}"
        return (f"live: {self.sent} frames to {self.target}, latency landmarks → written median "
                f"{np.median(lat):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms")
