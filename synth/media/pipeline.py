"""Overlap the stages of a streaming job: a producer in a background thread (``Prefetch``) or, for a stage that
holds the GIL, in a child process (``ProcessStream``), behind a bounded buffer.

`th animate` is decode → track → warp + generate → watermark → encode. Rendering releases the GIL (ONNX Runtime
/ torch kernels, OpenCV, numpy), so a renderer thread works on the next frames while the main thread watermarks
and hands frame t to the ffmpeg child; dlib's tracker does not, so it runs in a child process. On two cores the
stages overlap instead of adding up; the buffers are bounded, so memory stays flat for any length.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from synth.errors import UserError

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
        # setup: runs first in the thread (e.g. torch's thread count, which OpenMP keeps per thread)
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


class ProcessStream(Generic[T]):
    """An iterator over ``fn(*args)`` (a generator; ``fn`` and ``args`` picklable) computed in a child process.

    Threads share one GIL, and a stage that holds it (dlib's tracker does) cannot overlap the others; a child
    process runs on the other core for real. The child is spawned (a fresh interpreter: safe whatever threads
    the parent runs); items come back through a pipe, whose buffer bounds how far the child runs ahead; an
    exception in the child is re-raised here at its position. The child dies with its parent (Linux
    parent-death signal) and is killed by ``close()``.
    """

    def __init__(self, fn: Callable[..., Iterable[T]], *args: object) -> None:
        import multiprocessing as mp

        self._done = False
        ctx = mp.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_stream_child, args=(send, fn, args), name="th-stream", daemon=True)
        self._proc.start()
        send.close()  # the child holds the only writer: a dead child reads as EOF here

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            kind, x = self._recv.recv()
        except EOFError:
            self._proc.join()
            kind, x = "error", UserError(f"a worker process ({self._proc.name}) died with exit code "
                                         f"{self._proc.exitcode}")
        if kind == "item":
            return x
        self.close()
        if kind == "error":
            raise x
        raise StopIteration

    def close(self) -> None:
        self._done = True
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._recv.close()

    def __enter__(self) -> ProcessStream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stream_child(send, fn: Callable[..., Iterable[object]], args: tuple) -> None:
    import ctypes
    import signal

    try:  # die with the parent, even when it is SIGKILLed (Linux)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    try:
        for x in fn(*args):
            send.send(("item", x))
        send.send(("end", None))
    except BaseException as e:  # noqa: BLE001 - handed to the parent, which re-raises it
        try:
            send.send(("error", e))
        except Exception:  # an exception that does not pickle: its text
            send.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        send.close()
