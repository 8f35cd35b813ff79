"""bench/demo_log.py, the newcomer's-eye check of a demo log: a traceback fails the check (a
newcomer reads it as an error) and is reported by its exception's own line."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "demo_log.py"


def check(tmp_path, lines):
    log = tmp_path / "log.txt"
    log.write_text("".join(f"{i:.1f}\t{line}\n" for i, line in enumerate(lines)))
    return subprocess.run([sys.executable, str(SCRIPT), "--check", str(log)], capture_output=True, text=True,
                          timeout=60)


def test_a_clean_log_passes_and_a_relayed_traceback_fails_with_its_exception(tmp_path):
    clean = check(tmp_path, ["== synth", "   (3s)", "done"])
    assert clean.returncode == 0, clean.stdout
    assert "tracebacks: 0" in clean.stdout
    worker = "\x1b[36m(ListFiles pid=14217)\x1b[0m "
    bad = check(tmp_path, ["== train", worker + "Exception in thread pool-4/completion-signaler:",
                           worker + "Traceback (most recent call last):",
                           worker + '  File "/x/threading.py", line 1045, in _bootstrap_inner',
                           worker + "    self.run()", worker + "InterruptedError", "trained"])
    assert bad.returncode == 1
    assert "tracebacks: 1" in bad.stdout and "'InterruptedError'" in bad.stdout
