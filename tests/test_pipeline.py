"""The stage-overlap helper of `th animate`: order kept, errors surface, no thread outlives the call."""

from __future__ import annotations

import threading
import time

import pytest

from synth.media.pipeline import Prefetch


def test_prefetch_keeps_order_and_runs_ahead() -> None:
    made: list[int] = []

    def items():
        for i in range(50):
            made.append(i)
            yield i

    it = Prefetch(items(), depth=4)
    assert next(it) == 0
    time.sleep(0.2)  # the producer fills the queue while the consumer is busy
    assert 3 <= len(made) <= 6  # ahead by the queue depth, not unbounded
    assert [0, *it] == list(range(50))


def test_prefetch_reraises_the_producers_error_in_place() -> None:
    def items():
        yield 1
        yield 2
        raise ValueError("bad frame 3")

    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for x in Prefetch(items()):
            got.append(x)
    assert got == [1, 2]


def test_consumer_stopping_early_stops_the_producer() -> None:
    before = threading.active_count()

    def items():
        i = 0
        while True:  # endless: only the stop signal ends it
            yield i
            i += 1

    it = Prefetch(items(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()  # what a consumer's exception or break does to the generator
    assert threading.active_count() == before


def test_setup_runs_in_the_producer_thread() -> None:
    seen = {}

    def setup():
        seen["thread"] = threading.current_thread().name

    assert list(Prefetch(iter([1, 2]), setup=setup)) == [1, 2]
    assert seen["thread"] == "th-prefetch"


def _count(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"bad item {i}")
        yield i


def test_process_stream_runs_in_a_child_and_reraises_its_errors() -> None:
    from synth.media.pipeline import ProcessStream

    with ProcessStream(_count, 300) as s:  # more than the pipe buffers: the child waits for the reader
        assert list(s) == list(range(300))
        assert not s._proc.is_alive()
    got = []
    with pytest.raises(ValueError, match="bad item 5"):
        for x in ProcessStream(_count, 10, 5):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_process_stream_closed_early_kills_the_child() -> None:
    from synth.media.pipeline import ProcessStream

    s = ProcessStream(_count, 10**9)
    assert [next(s) for _ in range(3)] == [0, 1, 2]
    s.close()
    assert not s._proc.is_alive() and s._proc.exitcode is not None


def _dies(n: int):
    import os

    yield from range(n)
    os._exit(3)  # as an OOM kill would: no exception, no end marker


def test_process_stream_child_dying_is_a_clear_error() -> None:
    from synth.errors import UserError
    from synth.media.pipeline import ProcessStream

    got = []
    with pytest.raises(UserError, match="died with exit code 3"):
        for x in ProcessStream(_dies, 2):
            got.append(x)
    assert got == [0, 1]
