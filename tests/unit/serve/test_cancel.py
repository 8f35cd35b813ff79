"""Work abandoned by its caller (a stage timeout) stops in its worker thread instead of running on."""
import asyncio
import threading
import time

from ipl.serve.deployments import Cancelled, _checkpoint, in_thread


def test_a_timed_out_stage_stops_its_thread_at_the_next_step():
    steps, stopped = [], threading.Event()
    stats = {"cancelled": 0}

    def work(n, cancel):
        try:
            for i in range(n):
                _checkpoint(cancel, stats)
                steps.append(i)
                time.sleep(0.02)
        except Cancelled:
            stopped.set()
            raise
        return "finished"

    async def caller():
        try:
            await asyncio.wait_for(in_thread(work, 500), 0.1)
        except asyncio.TimeoutError:
            return "timed out"

    assert asyncio.run(caller()) == "timed out"
    assert stopped.wait(2) and stats["cancelled"] == 1
    done = len(steps)
    time.sleep(0.1)
    assert len(steps) == done < 50  # it stopped, long before its 500 steps


def test_work_that_is_not_cancelled_returns_its_result():
    assert asyncio.run(in_thread(lambda x, cancel: x * 2, 21)) == 42
