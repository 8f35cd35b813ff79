"""ipl's Ray Data logging config: warnings reach the console, except the transient "no available
CPUs" note (a race between two datasets in ipl's stages; it stays in Ray Data's log file); Ray
Data inside local workers logs the same way; Ray's known benign notes stay off the console."""
import os
import subprocess
import sys

SCRIPT = r"""
import logging, os
from ipl.runtime import quiet_ray_data
quiet_ray_data()
log = logging.getLogger("ray.data.dataset")
log.warning("Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will hang")
log.warning("a real Ray Data warning")
"""


def test_the_transient_no_cpu_note_stays_off_the_console_and_other_warnings_show():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_DATA_LOGGING_CONFIG", "IPL_VERBOSE")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "a real Ray Data warning" in text
    assert "does not have any available CPUs" not in text


RELAY = r"""
import sys, time, logging
from ipl.config import RayConfig
from ipl.runtime import ensure_ray
ray = ensure_ray(RayConfig(num_cpus=1))

@ray.remote(num_cpus=0)
class Talker:
    def talk(self):
        print("[2026-12-06 16:32:09,708 E 1 2] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and "
              "ID: 'x' has constructor arguments in the object store and max_restarts > 0. If ...", file=sys.stderr)
        print("a real worker error line", file=sys.stderr, flush=True)
        import ray.data  # Ray Data inside a worker logs with ipl's config (it inherited the variable)
        logging.getLogger("ray.data._internal.progress").info("a Ray Data progress note")
        logging.getLogger("ray.data").warning("a Ray Data warning in a worker")
        sys.stderr.flush()
        import threading
        def signaler(exc):  # Ray Data's ListFiles completion signaler, shut down first (benign) or failing
            raise exc
        for exc in (InterruptedError(), ValueError("a real signaler failure")):
            th = threading.Thread(target=signaler, args=(exc,), name="pool-4/completion-signaler")
            th.start()
            th.join()
        sys.stderr.flush()
        return True

t = Talker.remote()
ray.get(t.talk.remote())
time.sleep(3)  # the log monitor relays the worker's lines within about a second
ray.shutdown()
"""


def test_rays_known_benign_notes_stay_off_the_console_and_real_lines_show():
    """Through local Ray's own relay of a worker's output to the driver (``log_to_driver``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_DATA_LOGGING_CONFIG", "IPL_VERBOSE", "RAY_ADDRESS")}
    # the quiet run and the --verbose one (Ray's notes come back) side by side: two local Rays
    quiet, verbose = (subprocess.Popen([sys.executable, "-c", RELAY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=e) for e in (env, {**env, "IPL_VERBOSE": "1"}))
    out, shown = (p.communicate(timeout=240) for p in (quiet, verbose))
    text, shown_text = out[0] + out[1], shown[0] + shown[1]
    assert quiet.returncode == 0, text
    assert verbose.returncode == 0, shown_text
    assert "a real worker error line" in text and "a Ray Data warning in a worker" in text
    assert "has constructor arguments in the object store" not in text
    assert "a Ray Data progress note" not in text
    assert "InterruptedError" not in text  # the benign signaler traceback, dropped whole
    assert "ValueError: a real signaler failure" in text and text.count("Exception in thread pool-4") == 1
    assert "has constructor arguments in the object store" in shown_text
    assert "a Ray Data progress note" in shown_text
    assert "InterruptedError" in shown_text


def test_a_known_benign_traceback_is_judged_whole_even_split_over_relay_batches():
    from ipl.runtime import _TracebackFilter

    benign = ["Exception in thread pool-4/completion-signaler:", "Traceback (most recent call last):",
              '  File "/x/threading.py", line 1045, in _bootstrap_inner', "    self.run()", "InterruptedError"]
    other = ["Exception in thread pool-4/completion-signaler:", "Traceback (most recent call last):",
             '  File "/x/dynamic_work_queue.py", line 180', "ValueError: broken"]
    f = _TracebackFilter()
    assert f.lines(1, ["before"] + benign[:3]) == ["before"]
    assert f.lines(2, ["another worker's line"]) == ["another worker's line"]  # per worker process
    assert f.lines(1, benign[3:] + ["after"]) == ["after"]
    assert f.lines(1, other[:2]) == [] and f.lines(1, other[2:]) == other  # another exception: shown whole
    announced = ["Exception in thread pool-4/completion-signaler:", "not a traceback"]
    assert f.lines(1, announced) == announced
    assert f.lines(1, ["Exception in thread worker-1:", "Traceback (most recent call last):"]) == \
        ["Exception in thread worker-1:", "Traceback (most recent call last):"]
