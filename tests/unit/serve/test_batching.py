"""The cross-request batcher of the SafetyGate's and Perception's model calls."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ipl.serve.batching import Cancelled, Coalescer


class Gated:
    """fn(items) -> items * 10; the first call waits for ``release`` (so others queue meanwhile)."""

    def __init__(self, fail_on=None):
        self.calls, self.release, self.fail_on = [], threading.Event(), fail_on

    def __call__(self, items):
        self.calls.append(list(items))
        if len(self.calls) == 1:
            assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return np.asarray(items) * 10


def running(fn: Gated) -> None:
    """The first call has started (and waits for ``release``)."""
    deadline = time.monotonic() + 10
    while not fn.calls and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fn.calls


def queued(c: Coalescer, n: int) -> None:
    deadline = time.monotonic() + 10
    while c._queue.qsize() < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert c._queue.qsize() == n


def test_callers_that_queue_while_a_call_runs_share_the_next_one():
    fn = Gated()
    c = Coalescer(fn, max_items=8, name="t")
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(c, [1])
        running(fn)
        rest = [pool.submit(c, [10 * i, 10 * i + 1]) for i in range(1, 5)]  # 8 items, queued behind the first
        queued(c, 4)
        fn.release.set()
        assert first.result().tolist() == [10]
        for i, f in enumerate(rest, 1):  # each caller gets its own rows, in order
            assert f.result().tolist() == [100 * i, 100 * i + 10]
    assert fn.calls[0] == [1] and len(fn.calls) == 2 and sorted(fn.calls[1]) == sorted(
        x for i in range(1, 5) for x in (10 * i, 10 * i + 1))
    assert c.stats == {"batches": 2, "items": 9, "max_items": 8, "shared": 1}


def test_a_call_never_exceeds_max_items_and_a_big_caller_runs_alone():
    fn = Gated()
    c = Coalescer(fn, max_items=3, name="t")
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(c, [0])
        running(fn)
        a, b, big = pool.submit(c, [1, 2]), None, None
        queued(c, 1)
        b = pool.submit(c, [3, 4])
        queued(c, 2)
        big = pool.submit(c, [5, 6, 7, 8])
        queued(c, 3)
        fn.release.set()
        assert [f.result().tolist() for f in (first, a, b, big)] == [[0], [10, 20], [30, 40], [50, 60, 70, 80]]
    assert fn.calls == [[0], [1, 2], [3, 4], [5, 6, 7, 8]]  # 2 + 2 > 3: not joined; 4 > 3: alone


def test_a_cancelled_caller_is_dropped_and_a_failure_reaches_every_caller_of_that_call():
    fn = Gated(fail_on=3)
    c = Coalescer(fn, max_items=8, name="t")
    gone = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(c, [1])
        running(fn)
        dropped = pool.submit(c, [2], gone)
        bad = [pool.submit(c, [3]), pool.submit(c, [4])]
        queued(c, 3)
        gone.set()
        fn.release.set()
        assert first.result().tolist() == [10]
        with pytest.raises(Cancelled):
            dropped.result()
        for f in bad:  # both were in the failing call
            with pytest.raises(ValueError, match="bad item 3"):
                f.result()
    assert 2 not in fn.calls[1]
    assert c([5]).tolist() == [50]  # the worker lives on


def test_max_items_one_runs_each_caller_alone_in_its_thread():
    seen = []
    c = Coalescer(lambda items: (seen.append(threading.current_thread().name), np.asarray(items))[1], 1, "t")
    assert c([1, 2]).tolist() == [1, 2] and seen == [threading.current_thread().name]
    assert c.stats["batches"] == 1 and c.stats["shared"] == 0
    with pytest.raises(ValueError, match="max_items"):
        Coalescer(lambda items: items, 0, "t")


def test_the_worker_thread_starts_with_the_first_call():
    def threads():
        return [t for t in threading.enumerate() if t.name == "ipl-batch-lazy"]

    before = len(threads())
    c = Coalescer(lambda items: np.asarray([len(x) for x in items]), 4, "lazy")
    assert len(threads()) == before  # a model never asked costs no thread
    assert c(["ab", "c"]).tolist() == [2, 1] and len(threads()) == before + 1
    assert c(["abc"]).tolist() == [3] and len(threads()) == before + 1  # one worker for every later call
