"""Entrypoint for ``ray job submit --working-dir . -- python jobs/evaluate.py --config FILE [key=value ...]``."""
import sys

from ipl.cli import run_stage


def main(argv=None) -> int:
    return run_stage("eval", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
