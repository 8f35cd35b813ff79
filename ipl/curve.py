"""``ipl curve``: the data-size curve (paper Q1, Table 4): how the domain tasks and the
description's trustworthiness grow with the instruction data.

For each share ``f`` of ``fractions`` the VLM is fine-tuned on that share of the training rows
(``ipl train data.fraction=f``: each row's ``draw``, so 10% is inside 20%; the held-out
validation split is the same for every share), then evaluated on the same held-out sets: the
domain benchmark (base against this model) and the Table 7 main row (``row``, the full system).
Each share is its own run under ``<run>/curve/frac<NNN>/`` (``train/``, ``model/``, ``eval/``,
``result.json``): a re-run skips the shares whose result matches their config and resumes a
share's training from its last checkpoint. The table and plot go to ``<run>/curve/``
(``curve.json``, ``curve.md``, ``curve.png``).

Long on 2 cores (a training and an evaluation per share); not part of ``make test``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ipl.config import REPO_ROOT, RayConfig, RunConfig, Strict, load_config
from ipl.eval.config import CONDITIONS
from ipl.eval.report import _f
from ipl.runtime import read_json, write_json_atomic

log = logging.getLogger("ipl.curve")
ROW_KEYS = ("acc", "precision", "hallucination", "abstained", "model_acc", "sim", "rougeL")


class CurveConfig(Strict):
    """``ipl curve``: which shares of the instruction data, and the train / eval configs each uses."""

    run: RunConfig = Field(default_factory=RunConfig, description="The run whose instructions, index and held-out "
                           "sets every share uses (its own model is left alone).")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.5, 1.0],
                                   description="Shares of the training rows, each in (0, 1].")
    train_config: str = Field("jobs/configs/train_local.yaml", description="ipl train's config for every share.")
    train_overrides: list[str] = Field(default_factory=list, description="key=value on top of it (every share).")
    eval_config: str = Field("jobs/configs/eval_local.yaml", description="ipl eval's config for every share.")
    eval_overrides: list[str] = Field(default_factory=list, description="key=value on top of it (every share).")
    row: Literal[CONDITIONS] = Field("image+category+reference",  # type: ignore[valid-type]
                                     description="The Table 7 row reported (the full system).")
    plot: bool = Field(True, description="Write curve.png.")

    @field_validator("fractions")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f <= 1]
        if bad or not v:
            raise ValueError(f"fractions: each in (0, 1], at least one (bad: {bad})")
        if len(set(v)) != len(v):
            raise ValueError(f"fractions: each once ({v})")
        return sorted(v)

    @property
    def dir(self) -> Path:
        return self.run.dir / "curve"

    def share_dir(self, f: float) -> Path:
        return self.dir / f"frac{round(f * 100):03d}"


def _config_path(p: str) -> Path:
    path = Path(p)
    return path if path.is_file() or path.is_absolute() else REPO_ROOT / path


def share_configs(cfg: CurveConfig, f: float):
    """(TrainConfig, EvalConfig) of one share: its own training directory, model and report folder."""
    from ipl.eval.config import EvalConfig
    from ipl.train.config import TrainConfig

    d = cfg.share_dir(f)
    common = {"run": cfg.run, "ray": cfg.ray}
    tcfg = load_config(TrainConfig, _config_path(cfg.train_config), [
        *cfg.train_overrides, f"data.fraction={f}", f"workdir={d / 'train'}", f"output={d / 'model'}"])
    tcfg = tcfg.model_copy(update=common)
    ecfg = load_config(EvalConfig, _config_path(cfg.eval_config), cfg.eval_overrides).model_copy(update=common)
    serve = ecfg.serve.model_copy(update={"models": ecfg.serve.models.model_copy(update={"vlm": str(d / "model")})})
    ecfg = ecfg.model_copy(update={
        "serve": serve, "out": str(d / "eval"), "conditions": [cfg.row], "unguarded_rows": False,
        "caption_rows": False, "confirmed_row": False, "plots": False,
        "realdata": ecfg.realdata.model_copy(update={"enabled": False})})
    return tcfg, ecfg


def share_key(tcfg, ecfg) -> str:
    blob = json.dumps({"train": tcfg.key(), "eval": ecfg.model_dump(mode="json", exclude={"run", "ray"})},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def share_result(f: float, train_summary: dict, result: dict, row: str) -> dict:
    """One share's line of the curve: training size, the domain benchmark, the Table 7 row."""
    plan, final = train_summary.get("plan") or {}, train_summary.get("final") or {}
    table = ((result.get("ablation") or {}).get("table") or {}).get("all", {}).get(row) or {}
    dom = result.get("domain") or {}
    return {"fraction": f, "train_rows": plan.get("train_rows"), "steps": plan.get("total_steps"),
            "val_loss": final.get("val_loss"),
            "domain": {t: r.get("finetuned") for t, r in (dom.get("tasks") or {}).items() if "skipped" not in r},
            "domain_average": (dom.get("average") or {}).get("finetuned"),
            "domain_base_average": (dom.get("average") or {}).get("base"),
            "table7": {k: table.get(k) for k in ROW_KEYS}, "descriptions": table.get("descriptions")}


def curve_lines(rows: list[dict], row: str) -> list[str]:
    tasks = list(dict.fromkeys(t for r in rows for t in r["domain"]))
    base = next((r["domain_base_average"] for r in rows if r.get("domain_base_average") is not None), None)
    lines = ["## Data-size curve (paper Q1)", "",
             f"Fine-tuned on a share of the instruction data's training rows, the same held-out sets for every share. "
             f"Domain tasks: fine-tuned score (base model average {_f(base)}). Table 7 row `{row}`: ACC, precision "
             "of the stated values, hallucination, abstained share, and the model's own ACC.", "",
             "| data | train rows | val loss | " + " | ".join(tasks) + " | domain avg | ACC | precision | halluc. | "
             "abstained | model ACC | SIM |",
             "|" + "---|" * (len(tasks) + 10)]
    for r in rows:
        t7 = r["table7"]
        lines.append(f"| {round(r['fraction'] * 100)}% | {r['train_rows']} | {_f(r['val_loss'])} | "
                     + " | ".join(_f(r["domain"].get(t)) for t in tasks)
                     + f" | **{_f(r['domain_average'])}** | {_f(t7['acc'])} | {_f(t7['precision'])} | "
                     f"{_f(t7['hallucination'])} | {_f(t7['abstained'])} | {_f(t7['model_acc'])} | {_f(t7['sim'])} |")
    return lines + [""]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["fraction"] * 100 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, ys in (("domain average (fine-tuned)", [r["domain_average"] for r in rows]),
                      ("Table 7 ACC", [r["table7"]["acc"] for r in rows]),
                      ("Table 7 model ACC", [r["table7"]["model_acc"] for r in rows])):
        ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", label=label)
    base = next((r["domain_base_average"] for r in rows if r.get("domain_base_average") is not None), None)
    if base is not None:
        ax.axhline(base, ls="--", c="grey", label="domain average (base)")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}%" for v in x])
    ax.set_xlabel("share of the instruction data")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(cfg: CurveConfig) -> int:
    from ipl.eval import stage as eval_stage
    from ipl.train import stage as train_stage

    cfg.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.monotonic()
    for i, f in enumerate(cfg.fractions, 1):
        tcfg, ecfg = share_configs(cfg, f)
        key = share_key(tcfg, ecfg)
        done = cfg.share_dir(f) / "result.json"
        if done.is_file() and read_json(done).get("key") == key:
            rows.append(read_json(done))
            print(f"[{i}/{len(cfg.fractions)}] {round(f * 100)}%: reused {done}")
            continue
        t = time.monotonic()
        print(f"[{i}/{len(cfg.fractions)}] {round(f * 100)}% of the training rows: training into {tcfg.output_dir}",
              flush=True)
        train_summary = train_stage.run(tcfg)
        print(f"[{i}/{len(cfg.fractions)}] {round(f * 100)}%: trained ({time.monotonic() - t:.0f}s); evaluating "
              f"into {ecfg.out_dir}", flush=True)
        out = eval_stage.evaluate(ecfg)
        eval_stage.write(ecfg, out)
        row = {**share_result(f, train_summary, out["result"], cfg.row), "key": key,
               "model": str(tcfg.output_dir), "seconds": round(time.monotonic() - t)}
        write_json_atomic(done, row)
        rows.append(row)
        print(f"[{i}/{len(cfg.fractions)}] {round(f * 100)}%: domain average {_f(row['domain_average'])}, Table 7 "
              f"ACC {_f(row['table7']['acc'])} ({row['seconds']}s; {time.monotonic() - started:.0f}s so far)",
              flush=True)
    write_json_atomic(cfg.dir / "curve.json", {"row": cfg.row, "shares": rows})
    lines = curve_lines(rows, cfg.row)
    (cfg.dir / "curve.md").write_text("\n".join(lines), encoding="utf-8")
    if cfg.plot:
        plot(rows, cfg.dir / "curve.png")
    print("\n".join(lines))
    print(f"curve: {cfg.dir / 'curve.md'}" + (f", {cfg.dir / 'curve.png'}" if cfg.plot else ""))
    return 0
