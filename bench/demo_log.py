"""Timestamp a command's output and check it as a newcomer reads it: silent stretches, lines printed
twice in a row, Python warnings, tracebacks, wall time.

    python bench/demo_log.py --out runs/demo_log.txt -- make demo
    python bench/demo_log.py --check runs/demo_log.txt        # the report of an earlier log

The log holds ``<seconds since start>\\t<line>``; the report lists every gap longer than ``--gap``
seconds (with the lines around it), every line equal to the one before, every line that looks
like a Python warning, every traceback (a newcomer reads it as an error), and the wall time. Exit 1 when any is found (0: a clean log).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

# Python warnings, and Ray Data's fallback to pickling a column it could not give an Arrow type
WARNING = re.compile(r"(\w+Warning:|^\s*warnings\.warn\(|\bWARNING\b.*(deprecat|warn)|serialize as pickled)", re.I)
TRACEBACK = re.compile(r"Traceback \(most recent call last\):")
OTHER = re.compile(r"\bWARNING\b")  # every other WARNING-level line (ipl's own and Ray's): listed, not failed on


def _body(line: str) -> str:
    """A relayed worker line without its colour codes and its ``(Name pid=N)`` prefix."""
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    return re.sub(r"^\([^)]*pid=\d+[^)]*\) ", "", line)


def record(cmd: list[str], out: str) -> int:
    start = time.monotonic()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)  # runs/ of a fresh clone
    with open(out, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                errors="replace")
        for line in proc.stdout:
            fh.write(f"{time.monotonic() - start:.1f}\t{line.rstrip()}\n")
            fh.flush()
            sys.stdout.write(line)
        return proc.wait()


def check(path: str, gap: float) -> dict:
    rows = []
    for raw in open(path, encoding="utf-8", errors="replace"):
        t, _, line = raw.rstrip("\n").partition("\t")
        try:
            rows.append((float(t), line))
        except ValueError:
            continue
    gaps = [(rows[i - 1], rows[i]) for i in range(1, len(rows)) if rows[i][0] - rows[i - 1][0] > gap]
    repeats = [rows[i] for i in range(1, len(rows)) if rows[i][1].strip() and rows[i][1] == rows[i - 1][1]]
    warnings = [r for r in rows if WARNING.search(r[1])]
    other = [r for r in rows if OTHER.search(r[1]) and not WARNING.search(r[1])]
    tracebacks = [(t, line, rows[i + 1:i + 40]) for i, (t, line) in enumerate(rows) if TRACEBACK.search(line)]
    return {"lines": len(rows), "wall_s": rows[-1][0] if rows else 0.0, "gaps": gaps, "repeats": repeats,
            "warnings": warnings, "tracebacks": tracebacks, "other_warning_lines": other}


def report(r: dict, gap: float) -> str:
    out = [f"{r['lines']} lines, wall time {r['wall_s'] / 60:.1f} min",
           f"silent stretches > {gap:.0f}s: {len(r['gaps'])}"]
    out += [f"  {b[0] - a[0]:6.0f}s after {a[0]:.0f}s: {a[1][:100]!r} -> {b[1][:100]!r}" for a, b in r["gaps"]]
    out.append(f"lines printed twice in a row: {len(r['repeats'])}")
    out += [f"  at {t:.0f}s: {line[:120]!r}" for t, line in r["repeats"][:20]]
    out.append(f"warnings: {len(r['warnings'])}")
    out += [f"  at {t:.0f}s: {line[:160]!r}" for t, line in r["warnings"][:20]]
    out.append(f"tracebacks: {len(r['tracebacks'])}")
    for t, line, after in r["tracebacks"][:10]:  # the exception's own line: the first one not indented
        last = next((body for body in map(_body, (a[1] for a in after)) if body.strip() and not body[0].isspace()), "")
        out.append(f"  at {t:.0f}s: {last[:160]!r}")
    other = r.get("other_warning_lines", [])
    out.append(f"other WARNING-level lines (not counted above): {len(other)}")
    out += [f"  at {t:.0f}s: {line[:160]!r}" for t, line in other[:20]]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_log.txt", help="where the timestamped log goes")
    ap.add_argument("--check", metavar="LOG", help="only report on an existing log")
    ap.add_argument("--gap", type=float, default=30.0, help="longest silence allowed, seconds")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to run")
    args = ap.parse_args(argv)
    path = args.check or args.out
    code = 0
    if not args.check:
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            ap.error("give a command after --, or --check LOG")
        code = record(cmd, path)
    r = check(path, args.gap)
    print("\n" + report(r, args.gap))
    if code:
        return code
    return 1 if (r["gaps"] or r["repeats"] or r["warnings"] or r["tracebacks"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
