"""Benchmark of the Serve graph: latency and time to first event at several concurrencies,
against the same models called in-process one after another, and Chinese streaming (time to
the first description text over the whole draft). Everything is measured side by side in one run.

    .venv/bin/python bench/serve.py --run demo                 # after `ipl demo` (uses models/vlm-ft)
    .venv/bin/python bench/serve.py --run tr --vlm runs/tr/models/vlm-base --requests 16

1. in-process: SafetyGate, CategoryPredictor, Retriever, AttributeExtractor and Generator
   objects in this process, driven by the same DraftPipeline with category and retrieval run
   one after the other; requests one at a time (the baseline);
2. the Serve graph (local Ray, real HTTP, SSE) at concurrency 1, 8 and 32: p50/p95 of the
   whole draft, time to the first event (``meta``) and to the first description text;
3. Chinese drafts (``language=zh``) through the graph at concurrency 1: time to the first
   ``delta`` over the whole draft (the output monitor releases Chinese text by characters); then
   the same drafts decoded to ``--zh-tokens`` new tokens (96; ``generate.ignore_eos``): the tiny
   demo model's texts are so short that the stages before generation decide the share, so this
   row shows what the streaming gives a text of a production model's length. Chinese streaming is
   measured only with a model that writes Chinese: the demo's model learned English listings and
   answers ``language=zh`` in English, which the monitor holds back as Latin text; the bench
   prints a line when most of a Chinese row's drafts have no Chinese character. A small
   ``language=zh`` run for it: docs/benchmarks.md ("Chinese, measured with a Chinese-writing
   model").
4. the server's own per-stage clock: each row's p50 of the ``done`` event's ``timings``.

The top concurrency is run again side by side with the cross-request photo batching the other way
(on where the config has it off, as the CPU configs do; off where it is on), or with the Serve config
overrides of ``--compare KEY=VALUE ...`` (e.g. ``--compare generate.stream_items_per_s=200``).
Each row also reports the ``delta`` events of a draft (p50): each is a message through Ray
Serve's router and the HTTP proxy.

``--guard`` measures only the cost of the trust layer: the same in-process stages driven by two
pipelines, one with the decode-time guard and the verification on and one with both off
(abstention on in both, so the prompts are the same), requests alternating between them one
at a time; it prints the p50 ratio (goal: at most 1.10).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ipl.serve.stage import load_serve_config, multipart  # noqa: E402

CJK = re.compile(r"[\u3400-\u9fff]")


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def local_stages(cfg):
    from ipl.serve.deployments import Perception, SafetyGate
    from ipl.serve.extractor import AttributeExtractor
    from ipl.serve.generator import Generator
    from ipl.serve.pipeline import LocalStages

    return LocalStages(SafetyGate(cfg), Perception(cfg), AttributeExtractor(cfg), Generator(cfg))


def guard_cost(cfg, photos, n):
    """p50 draft latency with guard + verification on vs off, alternating, same stages."""
    from ipl.catalog.templates import load_levels, load_templates
    from ipl.serve.pipeline import DraftPipeline, DraftRequest

    stages = local_stages(cfg)
    templates, levels = load_templates(cfg.templates_path), load_levels(cfg.templates_path)
    off = cfg.model_copy(update={"evidence": cfg.evidence.model_copy(update={"guard": False, "verify": False})})
    pipes = {"on": DraftPipeline(stages, templates, cfg, levels), "off": DraftPipeline(stages, templates, off, levels)}
    times: dict = {"on": [], "off": []}
    blocked = []

    async def one(name, p):
        t = time.monotonic()
        draft = await pipes[name].prepare(DraftRequest(photos=[p]))
        async for _ in pipes[name].generate(draft):
            pass
        if name == "on":
            blocked.append(len(draft.blocked))
        return time.monotonic() - t

    async def run():
        for name in ("on", "off"):
            await one(name, photos[0])  # warm-up (tokenized value cache, vocabulary cache)
        for i in range(n):
            for name in (("on", "off") if i % 2 else ("off", "on")):
                times[name].append(await one(name, photos[i % len(photos)]))

    asyncio.run(run())
    on, off = pct(times["on"], 50), pct(times["off"], 50)
    print(f"guard + verification on / off, p50 draft latency at concurrency 1 (in-process, {n} requests each, "
          f"alternating): {on:.3f}s / {off:.3f}s = {on / off:.3f}x; values blocked per draft p50 {pct(blocked, 50)}")
    return {"on_p50_s": on, "off_p50_s": off, "ratio": on / off, "requests": n, "blocked_p50": pct(blocked, 50)}


def in_process(cfg, photos, n):
    from ipl.catalog.templates import load_levels, load_templates
    from ipl.serve.pipeline import DraftPipeline, DraftRequest

    stages = local_stages(cfg)
    pipe = DraftPipeline(stages, load_templates(cfg.templates_path), cfg, load_levels(cfg.templates_path))

    async def one(p):
        t = time.monotonic()
        draft = await pipe.prepare(DraftRequest(photos=[p]))
        first_event = time.monotonic() - t
        first_text = None
        async for kind, _ in pipe.generate(draft):
            if kind == "delta" and first_text is None:
                first_text = time.monotonic() - t
        return {"total": time.monotonic() - t, "first_event": first_event, "first_text": first_text or float("nan"),
                "perception_ms": draft.meta["timings"]["perception_ms"]}

    async def run():
        await one(photos[0])  # warm-up
        start = time.monotonic()
        out = [await one(photos[i % len(photos)]) for i in range(n)]
        return out, time.monotonic() - start

    return asyncio.run(run())


def http_draft(url, photo, language="en", max_new_tokens=None):
    fields = {"stream": "true", "language": language}
    if max_new_tokens:
        fields["max_new_tokens"] = str(max_new_tokens)
    body, ctype = multipart(fields, [photo])
    req = urllib.request.Request(url + "/v1/listings/draft", data=body, method="POST", headers={"Content-Type": ctype})
    t = time.monotonic()
    first_event = first_text = None
    meta, deltas, timings, text = None, 0, None, ""
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            event = None
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                    if first_event is None:
                        first_event = time.monotonic() - t
                elif line.startswith("data: ") and event == "meta":
                    meta = json.loads(line[6:])
                elif line.startswith("data: ") and event in ("done", "halted", "error"):
                    end = json.loads(line[6:])
                    timings, text = end.get("timings"), end.get("description") or ""
                elif line.startswith("data: ") and event == "delta":
                    deltas += 1
                    if first_text is None:
                        first_text = time.monotonic() - t
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    return {"status": status, "total": time.monotonic() - t, "first_event": first_event, "first_text": first_text,
            "perception_ms": meta["timings"]["perception_ms"] if meta else None, "deltas": deltas,
            "timings": timings, "cjk": bool(CJK.search(text)) if text else None}


def wait_healthy(url, timeout=180):
    """After a redeploy: /healthz answers 200 (the new replicas are up)."""
    time.sleep(2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/healthz", timeout=5).status == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit("the redeployed application did not become healthy")


def busy_cpu_s() -> float:
    """Seconds of CPU the whole machine has spent busy (every core, every process) since boot."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def load(url, photos, concurrency, n, language="en", max_new_tokens=None):
    """``n`` drafts from ``concurrency`` client threads: (rows, wall seconds, CPU): CPU is the
    seconds the machine was busy and those of this process (the load generator) over the row."""
    start, machine, client = time.monotonic(), busy_cpu_s(), time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(lambda i: http_draft(url, photos[i % len(photos)], language, max_new_tokens), range(n)))
    return out, time.monotonic() - start, {"machine_s": busy_cpu_s() - machine, "client_s": time.process_time() - client}


def summary(name, rows, wall, cpu=None):
    ok = [r for r in rows if r.get("status", 200) == 200]
    col = lambda k: [r[k] for r in ok if r.get(k) is not None and r[k] == r[k]]  # noqa: E731
    # CPU per finished draft: the whole machine's busy seconds, and the load generator's own share of them
    per = {} if cpu is None or not ok else {"machine_cpu_s_per_draft": cpu["machine_s"] / len(ok),
                                            "client_cpu_s_per_draft": cpu["client_s"] / len(ok),
                                            "machine_busy_share": cpu["machine_s"] / (wall * (os.cpu_count() or 1))}
    return {"what": name, "requests": len(rows), "ok": len(ok), "rejected": len(rows) - len(ok), **per,
            "p50_s": pct(col("total"), 50), "p95_s": pct(col("total"), 95),
            "first_event_p50_s": pct(col("first_event"), 50), "first_text_p50_s": pct(col("first_text"), 50),
            "throughput_rps": len(ok) / wall if wall else float("nan"),
            "perception_ms_p50": pct(col("perception_ms"), 50), "deltas_p50": pct(col("deltas"), 50),
            "first_text_share_p50": pct([r["first_text"] / r["total"] for r in ok
                                         if r.get("first_text") is not None and r["first_text"] == r["first_text"]], 50),
            # the share of finished drafts written in CJK characters: a Chinese arm measures Chinese
            # streaming only where the run's model writes Chinese (the demo's en model does not)
            "cjk_share": (sum(bool(r["cjk"]) for r in ok if r.get("cjk") is not None)
                          / max(1, sum(r.get("cjk") is not None for r in ok))),
            # the server's own per-stage clock (the done event's timings), p50 per stage
            "stages_ms_p50": {k: round(pct([r["timings"][k] for r in ok if (r.get("timings") or {}).get(k) is not None],
                                           50), 1)
                              for k in sorted({k for r in ok for k in (r.get("timings") or {})})}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="demo")
    ap.add_argument("--vlm", help="VLM directory (default: <run>/models/vlm-ft)")
    ap.add_argument("--requests", type=int, default=16, help="requests per measurement (at least 2x concurrency)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "serve.json"))
    ap.add_argument("--guard", action="store_true", help="only the guard + verification cost (in-process A/B)")
    ap.add_argument("--skip-unbatched", action="store_true", help="skip the side-by-side run at the top concurrency "
                    "with the cross-request photo batching the other way (off where the config batches, else on: "
                    "safety/retrieval.batch_photos 16/32)")
    ap.add_argument("--compare", nargs="+", metavar="KEY=VALUE", help="the side-by-side run at the top concurrency "
                    "with these Serve config overrides instead of the photo batching the other way")
    ap.add_argument("--zh-tokens", type=int, default=96, help="also Chinese drafts decoded to this many new tokens "
                    "(generate.ignore_eos: a production model's length, which the tiny demo model's short texts "
                    "do not reach; 0: skip)")
    ap.add_argument("extra", nargs="*", help="extra key=value overrides of the Serve config")
    args = ap.parse_args()
    overrides = [f"run.name={args.run}", f"http.port={args.port}", "pipeline.max_inflight=64",
                 "deployments.generator.max_queued_requests=64", "deployments.ingress.max_queued_requests=128",
                 "deployments.generator.autoscaling=null", "deployments.generator.num_replicas=1", *args.extra]
    if args.vlm:
        overrides.append(f"models.vlm={args.vlm}")
    cfg = load_serve_config(REPO / "serve_configs" / "local.yaml", overrides)
    from ipl.serve.samples import held_out_examples

    photos = [e["photos"][0] for e in held_out_examples(cfg.run.dir / "clean" / "listings", cfg.index_root, 32)]
    if not photos:
        raise SystemExit(f"no held-out photos for run {args.run}")
    if args.guard:
        out = guard_cost(cfg, photos, args.requests)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).with_name("serve_guard.json").write_text(json.dumps(out, indent=2))
        return
    results = []
    rows, wall = in_process(cfg, photos, args.requests)
    results.append(summary("in-process, sequential (baseline)", rows, wall))
    print(f"done: in-process, {len(rows)} requests", flush=True)

    from ray import serve

    from ipl.serve.stage import start

    url = start(cfg)
    try:
        for _ in range(2):
            http_draft(url, photos[0])  # warm-up
        for c in args.concurrency:
            rows, wall, cpu = load(url, photos, c, max(args.requests, 2 * c))
            results.append(summary(f"Serve graph, concurrency {c}", rows, wall, cpu))
            print(f"done: concurrency {c}", flush=True)
        stats = json.loads(urllib.request.urlopen(url + "/v1/stats", timeout=30).read())
        batching = {name: stats.get(name, {}).get("batching") for name in ("safety", "perception")}
        print(f"cross-request photo batching so far: {json.dumps(batching)}", flush=True)
        if not args.skip_unbatched:  # the same top load with each request's photos alone in the model calls
            from ipl.serve.app import build

            top = max(args.concurrency)
            batched = cfg.safety.batch_photos > 1 or cfg.retrieval.batch_photos > 1
            other = args.compare or (["safety.batch_photos=1", "retrieval.batch_photos=1"] if batched
                                     else ["safety.batch_photos=16", "retrieval.batch_photos=32"])
            alone = load_serve_config(REPO / "serve_configs" / "local.yaml", [*overrides, *other])
            serve.run(build(alone), name=alone.name, route_prefix=alone.route_prefix, blocking=False)
            wait_healthy(url)
            for _ in range(2):
                http_draft(url, photos[0])
            rows, wall, cpu = load(url, photos, top, max(args.requests, 2 * top))
            other_label = " ".join(args.compare) if args.compare else "photo batching " + ("off" if batched else "on")
            unbatched = summary(f"Serve graph, concurrency {top}, {other_label}", rows, wall, cpu)
            serve.run(build(cfg), name=cfg.name, route_prefix=cfg.route_prefix, blocking=False)
            wait_healthy(url)
            for _ in range(2):
                http_draft(url, photos[0])
        rows, wall, cpu = load(url, photos, 1, args.requests, "zh")
        results.append(summary("Serve graph, Chinese, concurrency 1", rows, wall, cpu))
        zh_rows = 1
        if args.zh_tokens:  # the same Chinese drafts at a fixed length: what streaming gives a long text
            from ipl.serve.app import build

            fixed = load_serve_config(REPO / "serve_configs" / "local.yaml", [*overrides, "generate.ignore_eos=true"])
            serve.run(build(fixed), name=fixed.name, route_prefix=fixed.route_prefix, blocking=False)
            wait_healthy(url)
            http_draft(url, photos[0], "zh", args.zh_tokens)
            rows, wall, cpu = load(url, photos, 1, args.requests, "zh", args.zh_tokens)
            results.append(summary(f"Serve graph, Chinese, c1, {args.zh_tokens} tokens", rows, wall, cpu))
            zh_rows = 2
        if not args.skip_unbatched:
            results.insert(len(results) - zh_rows, unbatched)
    finally:
        serve.shutdown()
    print(f"\nmachine: {os.cpu_count()} cores, no GPU; run {args.run}; generate.max_new_tokens="
          f"{cfg.generate.max_new_tokens}")
    print(f"{'what':<38}{'ok/n':>8}{'p50 s':>8}{'p95 s':>8}{'1st ev':>8}{'1st txt':>8}{'txt/tot':>8}{'req/s':>8}"
          f"{'perc ms':>9}{'deltas':>8}")
    for r in results:
        print(f"{r['what']:<38}{str(r['ok']) + '/' + str(r['requests']):>8}{r['p50_s']:>8.2f}{r['p95_s']:>8.2f}"
              f"{r['first_event_p50_s']:>8.2f}{r['first_text_p50_s']:>8.2f}{r['first_text_share_p50']:>8.2f}"
              f"{r['throughput_rps']:>8.2f}{r['perception_ms_p50']:>9.1f}{r['deltas_p50']:>8.0f}")
    for r in results:
        if "Chinese" in r["what"] and r.get("cjk_share", 1) < 0.5:
            print(f"{r['what']}: only {r['cjk_share']:.0%} of the drafts are Chinese text (the run's model writes "
                  "another language): the row measures that language's streaming, not Chinese; use a language=zh "
                  "run (docs/benchmarks.md)")
        if r.get("machine_cpu_s_per_draft") is not None:
            print(f"{r['what']}: CPU per draft {r['machine_cpu_s_per_draft']:.3f} core-s (the machine "
                  f"{r['machine_busy_share']:.0%} busy; the load generator {r['client_cpu_s_per_draft']:.3f} of it)")
        if r.get("stages_ms_p50"):
            print(f"{r['what']}: server timings p50 (ms): "
                  + ", ".join(f"{k[:-3]} {v:g}" for k, v in r["stages_ms_p50"].items()))
    base, c1 = results[0], results[1]
    print(f"Serve graph at concurrency 1 / in-process p50 latency: {c1['p50_s'] / base['p50_s']:.2f}x")
    chinese = [r for r in results if "Chinese" in r["what"]]
    for r in [r for r in results[2:] if r not in chinese]:
        print(f"{r['what']} throughput / Serve graph at concurrency 1: {r['throughput_rps'] / c1['throughput_rps']:.2f}x "
              f"(/ in-process: {r['throughput_rps'] / base['throughput_rps']:.2f}x)")
    if not args.skip_unbatched:
        on = next(r for r in results if r["what"] == f"Serve graph, concurrency {max(args.concurrency)}")
        print(f"at concurrency {max(args.concurrency)}: {on['throughput_rps']:.2f} req/s as configured vs "
              f"{unbatched['throughput_rps']:.2f} with {other_label} ({unbatched['throughput_rps'] / on['throughput_rps']:.2f}x), "
              f"p95 {on['p95_s']:.2f} vs {unbatched['p95_s']:.2f} s")
    for zh in chinese:
        print(f"{zh['what']}: time to first description text / total time, p50: {zh['first_text_share_p50']:.2f} "
              f"(first text {zh['first_text_p50_s']:.2f} s of {zh['p50_s']:.2f} s)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
