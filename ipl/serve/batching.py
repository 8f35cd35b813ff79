"""Cross-request batching of a per-photo model call (the SafetyGate's Open-NSFW, Perception's CLIP).

A replica runs each request's work in its own thread; without this each thread calls the model
on its own one or two photos, and on a loaded replica the calls fight over the same cores. A
:class:`Coalescer` owns the model call: callers hand it their photos and wait, one worker thread
runs the call on every photo queued at that moment (up to ``max_items``), then splits the
results back. Nobody waits for a batch to fill: an idle worker starts at once, so one request
alone costs what it did before; under load the requests that queued while a batch ran share the
next one (greedy batching). A caller whose ``cancel`` is set before its photos are run is
dropped from the batch and gets :class:`Cancelled`.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Optional, Sequence

import numpy as np

log = logging.getLogger("ipl.serve")


class Cancelled(Exception):
    """The caller gave up before its items were run."""


class _Job:
    __slots__ = ("items", "cancel", "done", "result", "error")

    def __init__(self, items: list, cancel: Optional[threading.Event]):
        self.items, self.cancel = items, cancel
        self.done = threading.Event()
        self.result: Optional[np.ndarray] = None
        self.error: Optional[BaseException] = None


class Coalescer:
    """``fn(items) -> array`` (one row per item, in order) run for several callers at once.

    ``max_items`` caps the items of one call (a caller's items are never split: one caller with
    more runs alone); 1 switches batching off (each caller runs ``fn`` in its own thread).
    ``stats``: ``batches`` (calls of ``fn``), ``items``, ``max_items`` (the largest call),
    ``shared`` (calls that served more than one caller)."""

    def __init__(self, fn: Callable[[list], np.ndarray], max_items: int, name: str):
        if max_items < 1:
            raise ValueError(f"{name}: max_items must be at least 1, got {max_items}")
        self.fn, self.max_items, self.name = fn, max_items, name
        self.stats = {"batches": 0, "items": 0, "max_items": 0, "shared": 0}
        self._lock = threading.Lock()
        self._queue: "queue.Queue[_Job]" = queue.Queue()
        self._carry: Optional[_Job] = None
        self._worker: Optional[threading.Thread] = None  # started by the first call (a model never called,
        # such as a safety CLIP with no concept or blocklist to screen against, costs no thread)

    def __call__(self, items: Sequence, cancel: Optional[threading.Event] = None) -> np.ndarray:
        items = list(items)
        if not items:
            return self.fn(items)
        if self.max_items == 1:
            out = self.fn(items)
            self._count(len(items), 1)
            return out
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name=f"ipl-batch-{self.name}", daemon=True)
                self._worker.start()
        job = _Job(items, cancel)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _count(self, n: int, callers: int) -> None:
        with self._lock:
            self.stats["batches"] += 1
            self.stats["items"] += n
            self.stats["max_items"] = max(self.stats["max_items"], n)
            self.stats["shared"] += callers > 1

    def _take(self) -> list[_Job]:
        first = self._carry or self._queue.get()
        self._carry = None
        jobs, n = [first], len(first.items)
        while n < self.max_items:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if n + len(job.items) > self.max_items:
                self._carry = job  # first in the next call
                break
            jobs.append(job)
            n += len(job.items)
        return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            live = []
            for job in jobs:
                if job.cancel is not None and job.cancel.is_set():
                    job.error = Cancelled()
                    job.done.set()
                else:
                    live.append(job)
            if not live:
                continue
            items = [x for job in live for x in job.items]
            try:
                out = np.asarray(self.fn(items))
                if len(out) != len(items):
                    raise RuntimeError(f"{self.name}: {len(out)} results for {len(items)} items")
            except BaseException as exc:  # noqa: BLE001 - each caller gets the failure
                log.exception("%s: batched call failed", self.name)
                for job in live:
                    job.error = exc
                    job.done.set()
                continue
            self._count(len(items), len(live))
            start = 0
            for job in live:
                job.result = out[start:start + len(job.items)]
                start += len(job.items)
                job.done.set()
