"""``ipl <stage> [--config FILE] [key=value ...]``: the command line of every stage.

Stages: synth prepare train index eval serve demo curve. Without ``--config`` a stage reads its
local config ``jobs/configs/<stage>_local.yaml``. ``--print-config`` validates and prints
the resolved config without running. ``jobs/<stage>.py`` calls :func:`run_stage`, so
``ray job submit -- python jobs/<stage>.py --config ...`` runs the same code.

Exit codes: 0 done, 2 bad config or missing input (the message says which command makes it),
3 stage not built yet, 1 anything else.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ipl.config import REPO_ROOT, ConfigError, dump_config, load_config

log = logging.getLogger("ipl")
# before anything imports huggingface_hub: no per-file bars for models that load in milliseconds
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    config: Optional[str]  # "module:Class" of the config model
    runner: Optional[str]  # "module:function(cfg) -> int"
    issue: Optional[int] = None  # the issue that builds a stage not built yet
    loader: Optional[str] = None  # "module:function(path, overrides)" when the YAML is not the model itself
    default_config: Optional[str] = None  # default config path when not jobs/configs/<stage>_local.yaml


STAGES = {
    s.name: s
    for s in [
        Stage("synth", "synthesize a marketplace and build the tiny local models", "ipl.synth.config:SynthConfig",
              "ipl.synth.stage:main"),
        Stage("prepare", "clean listings, extract attributes, mine templates, write instructions",
              "ipl.data.config:PrepareConfig", "ipl.data.stage:main"),
        Stage("train", "fine-tune the VLM with Ray Train + DeepSpeed ZeRO-1", "ipl.train.config:TrainConfig",
              "ipl.train.stage:main"),
        Stage("index", "fine-tune the encoder, build the sharded FAISS index + category predictor",
              "ipl.index.config:IndexConfig", "ipl.index.stage:main"),
        Stage("eval", "evaluate: paper metrics, RAG ablation, retrieval accuracy, real data",
              "ipl.eval.config:EvalConfig", "ipl.eval.stage:main"),
        Stage("serve", "run the Ray Serve application (serve_configs/local.yaml)", "ipl.serve.config:ServeConfig",
              "ipl.serve.stage:main", loader="ipl.serve.stage:load_serve_config",
              default_config="serve_configs/local.yaml"),
        Stage("demo", "run every built stage end to end on a small marketplace", "ipl.demo:DemoConfig",
              "ipl.demo:main"),
        Stage("curve", "the data-size curve: fine-tune on 10/20/50/100% of the instructions, evaluate each",
              "ipl.curve:CurveConfig", "ipl.curve:main"),
    ]
}


def _resolve(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def default_config_path(stage: str) -> Path:
    """``jobs/configs/<stage>_local.yaml`` in the working directory, else in the checkout."""
    default = STAGES[stage].default_config if stage in STAGES else None
    rel = Path(default) if default else Path("jobs") / "configs" / f"{stage}_local.yaml"
    return rel if rel.is_file() else REPO_ROOT / rel


class NotBuilt(RuntimeError):
    """A stage the project does not have yet."""


def stage_config(stage: str, config: Optional[str], overrides: Sequence[str]):
    """Load and validate the config of ``stage`` (the default local one when ``config`` is None)."""
    st = STAGES[stage]
    if st.config is None:
        raise NotBuilt(f"stage '{stage}' is not built yet (issue #{st.issue}: {st.help})")
    path = Path(config) if config else default_config_path(stage)
    if st.loader:
        return _resolve(st.loader)(path, overrides)
    return load_config(_resolve(st.config), path, overrides)


def setup_logging(verbose: bool = False) -> None:
    from ipl.runtime import log_to_stderr

    log_to_stderr(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        os.environ["IPL_VERBOSE"] = "1"  # Ray's own driver logs too (ipl.runtime.ensure_ray)


def run_stage(stage: str, argv: Sequence[str]) -> int:
    """Parse ``[--config FILE] [key=value ...]`` for ``stage``, validate, run; returns the exit code."""
    parser = argparse.ArgumentParser(prog=f"ipl {stage}", description=STAGES[stage].help)
    parser.add_argument("--config", help=f"YAML config (default: {default_config_path(stage)})")
    parser.add_argument("--print-config", action="store_true", help="validate, print the resolved config, exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and Ray's own driver logs")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, dotted for nesting")
    if stage == "demo":
        parser.add_argument("--serve", action="store_true", help="keep the application running after the demo")
    args = parser.parse_args(list(argv))
    if getattr(args, "serve", False):
        args.overrides.append("keep_serving=true")
    setup_logging(args.verbose)
    try:
        cfg = stage_config(stage, args.config, args.overrides)
    except NotBuilt as exc:
        print(f"ipl {stage}: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:
        print(f"ipl {stage}: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    runner: Callable = _resolve(STAGES[stage].runner)
    started = time.monotonic()
    try:
        code = runner(cfg)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"ipl {stage}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ipl {stage}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    log.info("ipl %s finished in %.1fs", stage, time.monotonic() - started)
    return int(code or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "feedback":  # a report over the serving database, not a pipeline stage
        from ipl.feedback.report import main as feedback_main

        setup_logging(False)
        return feedback_main(argv[1:])
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        lines = ["usage: ipl <stage> [--config FILE] [--print-config] [key=value ...]", "", "stages:"]
        for s in STAGES.values():
            built = "" if s.runner else f"  [not built yet: issue #{s.issue}]"
            lines.append(f"  {s.name:<8} {s.help}{built}")
        lines.append(f"  {'feedback':<8} report [--json]: do sellers use the drafts? (the serving feedback database)")
        print("\n".join(lines), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nipl: unknown stage {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return run_stage(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
