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
        return True

t = Talker.remote()
ray.get(t.talk.remote())
time.sleep(3)  # the log monitor relays the worker's lines within about a second
ray.shutdown()
"""


def test_rays_known_benign_notes_stay_off_the_console_and_real_lines_show():
    """Through local Ray's own relay of a worker's output to the driver (``log_to_driver``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_DATA_LOGGING_CONFIG", "IPL_VERBOSE", "RAY_ADDRESS")}
    out = subprocess.run([sys.executable, "-c", RELAY], capture_output=True, text=True, timeout=240, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "a real worker error line" in text and "a Ray Data warning in a worker" in text
    assert "has constructor arguments in the object store" not in text
    assert "a Ray Data progress note" not in text
    shown = subprocess.run([sys.executable, "-c", RELAY], capture_output=True, text=True, timeout=240,
                           env={**env, "IPL_VERBOSE": "1"})  # --verbose: Ray's notes come back
    assert "has constructor arguments in the object store" in shown.stdout + shown.stderr
    assert "a Ray Data progress note" in shown.stdout + shown.stderr
