"""ipl's Ray Data logging config: warnings reach the console, except the transient "no available
CPUs" note (a race between two datasets in ipl's stages; it stays in Ray Data's log file)."""
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
