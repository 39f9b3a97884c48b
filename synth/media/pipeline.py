"""Overlap the stages of a streaming job: run a producer in a background thread behind a bounded queue.

`th animate` is decode → track → warp + generate → watermark → encode. The heavy parts release the GIL
(ONNX Runtime / torch kernels, OpenCV, numpy, the ffmpeg child process), so producer threads let the driver be
tracked and the generator work on the next frames while the main thread watermarks and hands frame t to the
encoder: on two cores the stages overlap instead of adding up. The queue is bounded, so memory stays flat
for any length.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """An iterator over ``items`` whose values a background thread computes up to ``depth`` ahead.

    The thread starts at construction (so a slow first item, e.g. loading the face models, overlaps with
    whatever the caller does next). An exception in the producer is re-raised in the consumer at the same
    position; ``close()`` (also on exhaustion, and from ``with``) stops the producer and joins it, so no thread
    outlives its consumer.
    """

    def __init__(self, items: Iterable[T], depth: int = 8, setup: Callable[[], None] | None = None,
                 name: str = "th-prefetch") -> None:
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._items = items
        self._setup = setup
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def _put(self, x: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            if self._setup is not None:
                self._setup()
            for x in self._items:
                if not self._put(x):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(_Failure(e))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        x = self._q.get()
        if x is _DONE or isinstance(x, _Failure):
            self.close()
            if isinstance(x, _Failure):
                raise x.error
            raise StopIteration
        return x

    def close(self) -> None:
        self._done = True
        self._stop.set()
        if self._worker is not threading.current_thread():
            self._worker.join()

    def __del__(self) -> None:  # an abandoned iterator: let the producer stop at its next put
        self._stop.set()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch(items: Iterable[T], depth: int = 8, setup: Callable[[], None] | None = None,
             name: str = "th-prefetch") -> Prefetch[T]:
    """``Prefetch(items, depth, setup)``: ``setup`` runs first in the thread (e.g. torch's thread count, which
    OpenMP keeps per thread)."""
    return Prefetch(items, depth, setup, name)
