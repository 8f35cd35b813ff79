"""Ray at the edges: connect to a cluster or start a local one, and small run-dir helpers.

``ensure_ray(cfg.ray)`` is called by each job's composer. Under ``ray job submit`` the
``RAY_ADDRESS`` variable points at the cluster; locally Ray starts embedded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ipl.config import RayConfig


def log_to_stderr(ipl_level: int) -> None:
    """Log lines as ``HH:MM:SS LEVEL name: message`` on stderr: warnings from every library, and
    ``ipl_level`` from ipl's own loggers (the CLI's process, and a process one of its stages spawns)."""
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("ipl").setLevel(ipl_level)


log = logging.getLogger("ipl")
# Ray Data's progress where stdout is not a terminal (a log file, CI): one block every 15 s instead of its 10 s
os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", "15")
# Hugging Face's per-file bars ("Loading weights", "Writing model shards") for models that load in
# milliseconds: noise in every worker's log (the workers inherit the variable)
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Two warnings raised inside third-party code about its own use of a deprecated API (Ray Train's default
# ingest options; DeepSpeed's all_gather_into_tensor): nothing ipl can change, shown on every run and in every
# Ray worker. Filtered by the exact module that warns in the workers Ray starts (PYTHONWARNINGS).
THIRD_PARTY_WARNINGS = ("ignore::DeprecationWarning:ray.data._internal.execution.interfaces.execution_options",
                        "ignore::FutureWarning:torch.distributed.c10d_logger")
os.environ["PYTHONWARNINGS"] = ",".join(dict.fromkeys(
    [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w] + list(THIRD_PARTY_WARNINGS)))


def verbose() -> bool:
    """``ipl --verbose`` (or IPL_VERBOSE=1): Ray's own driver logs are shown, not only written to its files."""
    return os.environ.get("IPL_VERBOSE", "") not in ("", "0")


RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")


class TransientNoCpuFilter(logging.Filter):
    """Keeps Ray Data's "The Ray cluster currently does not have any available CPUs. The Dataset job
    will hang ..." off the console (``ray_data_logging.yaml``; it stays in ray-data.log).

    Ray Data prints it once per process when a dataset starts while ``ray.available_resources()``
    shows no free CPU. In ipl's stages that is a race, not a hang: one dataset starts the moment the
    previous one's tasks finish, before Ray has counted their CPUs back (seen at the start of
    ``ipl prepare`` in a demo, the job then ran on). A dataset that really waits for CPUs shows as
    Ray Data's progress lines, every 15 s, with no task running."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "does not have any available CPUs" not in record.getMessage()


# Ray's own notes that reach the console through the driver's log relay (``log_to_driver``) and
# say nothing a user of ipl can act on; they stay in Ray's log files (raylet.out, gcs_server.out,
# the actors' .err files), and --verbose shows them. Each one, and why it is benign here:
RAY_CONSOLE_NOISE = (
    # the raylet, when Ray Train / Ray Data start their controller, coordinators and workers at once
    # on a 2-CPU node: a hint about actor counts, not an error
    r"worker processes have been started on node: .* maximum expected startup concurrency",
    # Ray Train's and Ray Data's own internal actors (PreemptionWatcher, MapWorker) take ObjectRefs as
    # constructor arguments (ray-project/ray#53727): logged at ERROR level on every job
    r"has constructor arguments in the object store and max_restarts > 0",
    # the Serve controller on every deploy of a deployment with a fixed replica count
    r"Cannot deregister autoscaling state for deployment",
    # serve.shutdown() kills the controller while its graceful shutdown task is in flight
    r"Task ServeController\.graceful_shutdown failed",
    # the GCS asked to kill an actor whose process had already exited
    r"gcs_actor_scheduler\.cc:\d+: Failed to kill actor",
)
_NOISE = re.compile("|".join(f"(?:{p})" for p in RAY_CONSOLE_NOISE))
# Whole tracebacks of Ray's own that are known to be benign: (the thread they start in, their
# exception). Ray Data's file listing (ListFiles) signals its work queue's completion from a thread
# named "pool-<n>/completion-signaler", whose queue put raises InterruptedError when the dataset is
# shut down first (ray/data/_internal/dynamic_work_queue.py catches that in its workers, not there);
# seen at the end of a training run's ingest, about one demo in three
RAY_CONSOLE_NOISE_TRACEBACKS = ((r"pool-\d+/completion-signaler", r"InterruptedError"),)


class _TracebackFilter:
    """Holds back a worker's traceback that starts in a :data:`RAY_CONSOLE_NOISE_TRACEBACKS` thread
    (``Exception in thread <name>:``, ``Traceback ...``, the indented frames) until its exception's
    own line: dropped whole when that is the known exception, printed whole otherwise. Per worker
    process, so a traceback split over two relay batches is judged whole."""

    def __init__(self):
        self.held: dict = {}  # pid -> (exception pattern, lines held back)

    def lines(self, pid, lines: list) -> list:
        out = []
        for line in lines:
            text = str(line).rstrip("\n")
            held = self.held.get(pid)
            if held is None:
                known = next((exc for thread, exc in RAY_CONSOLE_NOISE_TRACEBACKS
                              if re.fullmatch(f"Exception in thread {thread}:", text)), None)
                if known is None:
                    out.append(line)
                else:
                    self.held[pid] = (known, [line])
                continue
            exc, block = held
            if len(block) == 1 and not text.startswith("Traceback (most recent call last):"):
                out += self.held.pop(pid)[1] + [line]  # not the traceback it announced
            elif len(block) == 1 or text.startswith((" ", "\t")):
                block.append(line)
            else:  # the exception's own line ends the traceback
                self.held.pop(pid)
                if not re.match(f"{exc}\\b", text):
                    out += block + [line]
        return out


def quiet_ray_console() -> bool:
    """Drop :data:`RAY_CONSOLE_NOISE` lines and :data:`RAY_CONSOLE_NOISE_TRACEBACKS` tracebacks from what
    Ray relays to the driver's console (before
    ``ray.init``: Ray binds its relay to ``ray._private.worker.print_to_stdstream`` then; the
    error channel looks it up per message). Every other line, an OOM kill or a worker's traceback
    included, is printed as before. False where this Ray has no such function (left as is)."""
    import ray._private.worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_ipl_quiet", False):
        return original is not None

    blocks = _TracebackFilter()

    def print_to_stdstream(data, ignore_prefix: bool):
        lines = data.get("lines") or []
        kept = [line for line in blocks.lines(data.get("pid"), lines) if not _NOISE.search(str(line))]
        if lines and not kept:
            return None
        return original({**data, "lines": kept}, ignore_prefix)

    print_to_stdstream._ipl_quiet = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_to_stdstream
    return True


def quiet_ray_data() -> None:
    """Ray Data's documented logging switch (RAY_DATA_LOGGING_CONFIG) pointed at ipl's config:
    warnings and progress on the console, the rest in ray-data.log. Ray Data reads it when it
    configures its logger; it is applied again here in case ray.data was imported first."""
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))
    try:
        from ray.data._internal.logging import configure_logging

        configure_logging()
    except Exception as exc:  # a Ray without this internal: keep its default logging
        log.debug("Ray Data logging left as is: %s", exc)


def train_logging() -> tuple:
    """(Ray Train ``LoggingConfig``, worker env vars): Ray Train's INFO lines (worker group start,
    every report's metrics dict) go to its log files unless --verbose, and a worker's print is
    written once (Ray Train's print patch tees it to stdout *and* its logger inside Ray workers,
    so every progress line appeared twice)."""
    import ray.train

    return (ray.train.LoggingConfig(log_level="INFO" if verbose() else "WARNING"),
            {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"})


@contextlib.contextmanager
def no_data_progress():
    """Ray Data progress off while a Ray Train job streams its datasets: they run inside Ray's split
    coordinator actor, where Ray Data draws tqdm bars into the actor's stdout (forwarded to the
    console as escape codes), and the training loop prints its own progress."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.enable_progress_bars
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ctx.enable_progress_bars = before


def quiet_train_worker() -> None:
    """Inside a Ray Train worker: Ray Train 2.60 logs every ``report()`` (the whole metrics dict) through
    a logger named after its source *file* (``logging.getLogger(__file__)``), so its LoggingConfig level
    does not reach it; that one logger is set to WARNING here unless --verbose."""
    if verbose():
        return
    import importlib.util

    spec = importlib.util.find_spec("ray.train.v2._internal.execution.context")
    if spec is not None and spec.origin:
        logging.getLogger(spec.origin).setLevel(logging.WARNING)


def ensure_ray(cfg: RayConfig):
    """Initialise Ray once per process according to ``cfg``; returns the ray module."""
    import ray

    if ray.is_initialized():
        return ray
    # Ray's driver-side INFO/WARNING lines (start-up, token set-up) go to its log files under
    # /tmp/ray/session_latest/logs unless --verbose; errors and the workers' output still show
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True,
                              "logging_level": logging.INFO if verbose() else logging.ERROR}
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        kwargs["address"] = address
    else:
        if cfg.num_cpus:
            kwargs["num_cpus"] = cfg.num_cpus
        if cfg.object_store_mb:
            kwargs["object_store_memory"] = cfg.object_store_mb * 1024 * 1024
        kwargs["include_dashboard"] = cfg.dashboard
        if not verbose():  # before Ray starts: its local workers inherit it, so the Ray Data that runs
            # inside them (Ray Train's split coordinator, ...) logs like the driver's ("Progress bars
            # disabled", "Dataset ... execution finished" went to the console from every ingest)
            os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))
    if not verbose():
        quiet_ray_console()
    ray.init(**kwargs)
    if not verbose():  # Ray Data's per-dataset INFO lines to its log file; its progress stays on the console
        quiet_ray_data()
    ctx = ray.data.DataContext.get_current()
    # on by default; where stdout is not a terminal Ray Data logs the progress every 10 s instead of bars
    ctx.enable_progress_bars = cfg.progress
    ctx.print_on_execution_start = False
    if not verbose():
        # Ray Data's high-memory detector compares a read task's *worker process* (600 MiB once it has
        # imported torch for an earlier task) with the task's memory request and warns now and then;
        # the reads here hold a few MiB of parquet. --verbose keeps it.
        detectors = getattr(ctx, "issue_detectors_config", None)
        if detectors is not None and hasattr(detectors, "high_memory_detector_config"):
            detectors.high_memory_detector_config.detection_time_interval_s = -1
    return ray


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to ``path`` via a temp file, fsync and rename (readers never see half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_object(value) -> dict:
    """A JSON object column's value (a dict, or its JSON text) as a dict; anything else is ``{}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class Progress:
    """Log progress of long work at most every ``every`` seconds: done/total, rate, ETA.
    ``say``: where the line goes (default: this module's logger; a Ray worker may print)."""

    def __init__(self, what: str, total: int, every: float = 5.0, say: Optional[Callable[[str], Any]] = None):
        self.what, self.total, self.every, self.say = what, total, every, say
        self.start = self.last = time.monotonic()

    def update(self, done: int, force: bool = False, note: str = "") -> None:
        """``note``: appended to the line (e.g. the current loss)."""
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(1e-9, now - self.start)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        line = f"{self.what}: {done}/{self.total} ({rate:.0f}/s, ETA {eta:.0f}s){f' {note}' if note else ''}"
        (self.say or log.info)(line)
