"""What a seller gets for a real photo: drafts for the real catalogue and ABO photos
(``../shared/realdata``, evaluation only) through the run's models in-process (the same
DraftPipeline as the Serve graph), with the repeats edit on and off side by side
(``generate.repeats``, :mod:`ipl.generate.repetition`), photo by photo alternating.

    .venv/bin/python bench/real_drafts.py --run demo [--photos 36] [--show 5]

Per side: drafts, drafts a loop ended, drafts with a clause or word still said three times over
(``letting letting letting``, a clause repeated: what the edit is for), words per description
(median), completion tokens decoded (the Generator's count) and the wall time of the drafts.
Nothing here trains or tunes on the photos; the numbers are what the run's models do with them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ipl.serve.stage import load_serve_config  # noqa: E402

_RUN = re.compile(r"\b(\w+)\b(?:\W+\1\b){2,}", re.IGNORECASE)


def repeats_left(text: str) -> bool:
    """A word said three times in a row, or a sentence said twice."""
    sentences = [s.strip().lower() for s in re.split(r"[.!?。！？]", text) if len(s.split()) >= 2]
    return bool(_RUN.search(text)) or len(sentences) != len(set(sentences))


def photos_of(root: Path, n: int) -> list[Path]:
    fashion = sorted((root / "fashion" / "images").glob("*.jpg"))
    abo = sorted((root / "abo").glob("*/*.jpg"))
    return (abo + fashion)[:n] if n < len(abo) else abo + fashion[: n - len(abo)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="demo")
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "realdata"), help="the real data (read only)")
    ap.add_argument("--photos", type=int, default=36)
    ap.add_argument("--show", type=int, default=3, help="print this many drafts of each side")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "real_drafts.json"))
    args = ap.parse_args()
    root = Path(args.root)
    photos = photos_of(root, args.photos)
    if not photos:
        raise SystemExit(f"no real photos under {root} (see ../shared/realdata/README.md)")

    from serve import local_stages

    from ipl.catalog.templates import load_levels, load_templates
    from ipl.serve.generator import Generator
    from ipl.serve.pipeline import DraftPipeline, DraftRequest, LocalStages

    sides = {}
    for name, flag in (("edited", "true"), ("raw", "false")):
        cfg = load_serve_config(REPO / "serve_configs" / "local.yaml", [f"run.name={args.run}",
                                                                        f"generate.repeats={flag}"])
        if not sides:
            stages = local_stages(cfg)  # bench/serve.py's in-process stages
        else:  # the same models; only the Generator reads generate.repeats
            stages = LocalStages(stages.safety, stages.perception, stages.extractor, Generator(cfg))
        sides[name] = DraftPipeline(stages, load_templates(cfg.templates_path), cfg, load_levels(cfg.templates_path))

    async def one(pipe, photo: Path) -> dict:
        t = time.monotonic()
        draft = await pipe.prepare(DraftRequest(photos=[photo.read_bytes()]))
        last = ("error", {})
        async for kind, data in pipe.generate(draft):
            last = (kind, data)
        kind, data = last
        return {"photo": photo.name, "kind": kind, "text": data.get("description") or "",
                "ended": "repetition_ended" in draft.fallbacks,
                "tokens": (data.get("usage") or {}).get("completion_tokens", 0), "s": time.monotonic() - t}

    async def run() -> dict:
        out: dict = {name: [] for name in sides}
        for i, photo in enumerate(photos):
            for name in (list(sides) if i % 2 else list(sides)[::-1]):
                out[name].append(await one(sides[name], photo))
            print(f"  {i + 1}/{len(photos)} photos", flush=True)
        return out

    results = asyncio.run(run())
    summary = {}
    for name, rows in results.items():
        summary[name] = {"drafts": len(rows), "answered": sum(r["kind"] == "done" for r in rows),
                         "loops_ended": sum(r["ended"] for r in rows),
                         "repeats_left": sum(repeats_left(r["text"]) for r in rows),
                         "words_p50": statistics.median(len(r["text"].split()) for r in rows),
                         "completion_tokens": sum(r["tokens"] for r in rows),
                         "wall_s": round(sum(r["s"] for r in rows), 2)}
        print(f"{name:>6}: {json.dumps(summary[name])}")
        for r in rows[: args.show]:
            print(f"        {r['photo']}: {r['text'][:160]!r}")
    e, r = summary["edited"], summary["raw"]
    print(f"edited / raw: tokens {e['completion_tokens'] / max(1, r['completion_tokens']):.2f}x, "
          f"wall {e['wall_s'] / max(1e-9, r['wall_s']):.2f}x, drafts with repeats left {e['repeats_left']} / "
          f"{r['repeats_left']} of {len(photos)}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"photos": len(photos), "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
