"""Overlap the stages of a streaming job: run a producer in a background thread behind a bounded queue.

`th animate` is decode → track → warp + generate → watermark → encode. The heavy parts release the GIL
(ONNX Runtime / torch kernels, OpenCV, numpy, the ffmpeg child process), so a producer thread lets the
generator work on frame t+1 while the main thread watermarks and hands frame t to the encoder: on two cores
the stages overlap instead of adding up. The queue is bounded, so memory stays flat for any length.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 8, setup: Callable[[], None] | None = None) -> Iterator[T]:
    """Yield ``items`` in order while a background thread computes up to ``depth`` of them ahead.

    ``setup`` runs first in the thread (e.g. torch's thread count, which OpenMP keeps per thread).

    An exception in the producer is re-raised in the consumer at the same position; if the consumer stops
    early (or raises), the producer is told to stop and is joined, so no thread outlives the call.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(x: object) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            if setup is not None:
                setup()
            for x in items:
                if not put(x):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(e))
            return
        put(_DONE)

    worker = threading.Thread(target=run, name="th-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            x = q.get()
            if x is _DONE:
                return
            if isinstance(x, _Failure):
                raise x.error
            yield x
    finally:
        stop.set()
        worker.join()
