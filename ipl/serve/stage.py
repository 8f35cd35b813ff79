"""``ipl serve``: run the application on Ray Serve from a Serve YAML or a plain ServeConfig YAML.

    ipl serve                                   # serve_configs/local.yaml, blocks; Ctrl-C stops
    ipl serve run.name=demo http.port=8001
    ipl serve once=true                         # start, one streamed draft of a held-out photo, stop

A Serve YAML (``applications: [...]``, what ``serve run``/``serve deploy`` read) is accepted:
the ``args`` of the application whose ``import_path`` is ``ipl.serve.app:build_app`` are the
config and its ``http_options`` give host and port. ``key=value`` overrides apply on top.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Optional

from ipl.config import ConfigError, deep_merge, parse_overrides, read_yaml, validate
from ipl.serve.config import ServeConfig

log = logging.getLogger("ipl.serve")
IMPORT_PATH = "ipl.serve.app:build_app"


def load_serve_config(path, overrides: Iterable[str] = ()) -> ServeConfig:
    overrides = list(overrides)
    data = read_yaml(path) if path is not None else {}
    if "applications" in data:
        apps = [a for a in data.get("applications") or [] if a.get("import_path") == IMPORT_PATH]
        if not apps:
            raise ConfigError(f"{path}: no application with import_path {IMPORT_PATH}")
        http = data.get("http_options") or {}
        args = dict(apps[0].get("args") or {})
        args.setdefault("name", apps[0].get("name", "ipl"))
        args.setdefault("route_prefix", apps[0].get("route_prefix", "/"))
        top = {k: http[k] for k in ("host", "port", "request_timeout_s") if k in http}
        if "proxy_location" in data:
            top["proxy_location"] = data["proxy_location"]
        args["http"] = deep_merge(top, args.get("http") or {})
        data = args
    data = deep_merge(data, parse_overrides(overrides))
    return validate(ServeConfig, data, f"{path}" + (" + overrides " + " ".join(overrides) if overrides else ""))


def multipart(fields: dict, photos: list[bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body (stdlib only) and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for i, p in enumerate(photos):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="photo{i}.jpg"\r\n'
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + p + b"\r\n")
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def stream_draft(url: str, photos: list[bytes], out=sys.stdout, **fields) -> list[tuple[str, dict]]:
    """POST a streamed draft and print the events as they arrive; returns them."""
    body, ctype = multipart({"stream": "true", **fields}, photos)
    req = urllib.request.Request(url.rstrip("/") + "/v1/listings/draft", data=body, method="POST",
                                 headers={"Content-Type": ctype})
    events, event = [], None
    try:
        resp = urllib.request.urlopen(req, timeout=300)
    except urllib.error.HTTPError as exc:
        print(f"   HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')}", file=out)
        return [("error", {"status": exc.code})]
    with resp:
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                events.append((event, data))
                if event == "meta":
                    cat = data["category"]
                    print(f"   category: {cat['name']} ({cat['source']}, score {cat['score']})", file=out)
                    print(f"   template: {', '.join(data['template'])}", file=out)
                    for a in data["attributes"]:
                        if a["status"] in ("stated", "confirmed"):
                            print(f"   stated      {a['key']} = {a['value']}  ({a['basis']}, confidence "
                                  f"{a['confidence']:.2f}, {_provenance(a)})", file=out)
                    for a in data["attributes"]:
                        if a["status"] == "to_confirm":
                            cands = ", ".join(_candidate(a["key"], c) for c in a["candidates"])
                            print(f"   to confirm  {a['key']}" + (f": candidates {cands}" if cands else ""), file=out)
                    if data["price_suggestion"]:
                        p = data["price_suggestion"]
                        print(f"   price: median {p['median']} ({p['low']}-{p['high']}, {p['listings']} "
                              f"{p['basis']} listings)", file=out)
                    cap = data.get("caption")
                    if cap and cap.get("skipped"):
                        print(f"   caption: skipped ({cap['skipped']})", file=out)
                    elif cap:
                        votes = "; ".join(f"{v['judge']} {'yes' if v['keep'] else 'no'} ({v['reason']})"
                                          for v in cap["verdict"]["votes"])
                        print(f"   caption: {cap['text']!r} -> {'kept' if cap['keep'] else 'dropped'} [{votes}]",
                              file=out)
                    print(f"   fallbacks: {data['fallbacks'] or 'none'}; instruction: {data['instruction']}", file=out)
                    print("   description: ", end="", file=out, flush=True)
                elif event == "delta":
                    print(data["text"], end="", file=out, flush=True)
                else:
                    shown = {k: v for k, v in data.items() if k not in ("timings", "verification")}
                    print(f"\n   [{event}] " + json.dumps(shown, ensure_ascii=False), file=out)
                    if data.get("verification"):
                        v = data["verification"]
                        print(f"   verification: {v['checked']} keys checked, "
                              + ("no contradiction" if not v["problems"] else
                                 f"{len(v['problems'])} problems, removed {v['removed']}") , file=out)
                    print(f"   timings (ms): {json.dumps(data.get('timings', {}))}", file=out)
    return events


def serve_logging(cfg: ServeConfig):
    """Serve's LoggingConfig from ``cfg.logs`` (``ipl --verbose``: INFO with the access log); the
    driver's own ``ray.serve`` messages follow the same level."""
    import logging

    from ray.serve.schema import LoggingConfig

    from ipl.runtime import verbose

    level, access = ("INFO", True) if verbose() else (cfg.logs.level, cfg.logs.access_log)
    logging.getLogger("ray.serve").setLevel(level)
    return LoggingConfig(log_level=level, enable_access_log=access)


@contextmanager
def start_progress(name: str, every: float = 10.0, say=None):
    """While the application deploys: a line every ``every`` seconds with the deployments ready and
    those still starting (``serve.status()`` read from a background thread)."""
    import threading

    say = say or (lambda line: print(line, flush=True))
    done = threading.Event()

    def watch() -> None:
        from ray import serve

        started = time.monotonic()
        while not done.wait(every):
            try:
                app = serve.status().applications.get(name)
            except Exception:  # the controller is starting: next time
                continue
            took = f"{time.monotonic() - started:.0f}s"
            if app is None or not app.deployments:
                say(f"   starting the Serve application {name!r} ({took})")
                continue
            waiting = [f"{n} {d.status.value.lower()}" for n, d in app.deployments.items() if d.status.value != "HEALTHY"]
            say(f"   starting the Serve application {name!r}: {len(app.deployments) - len(waiting)}/"
                f"{len(app.deployments)} deployments ready after {took}"
                + (f" (waiting: {', '.join(waiting)})" if waiting else ""))

    thread = threading.Thread(target=watch, name="serve-start-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


def start(cfg: ServeConfig):
    """Start Serve on (local) Ray with ``cfg.http`` and run the application; returns its base URL."""
    from ray import serve

    from ipl.runtime import ensure_ray
    from ipl.serve.app import build

    app = build(cfg)  # checks config + artifacts before Ray starts anything
    ensure_ray(cfg.ray)
    logs = serve_logging(cfg)
    serve.start(proxy_location=cfg.http.proxy_location, logging_config=logs,
                http_options={"host": cfg.http.host, "port": cfg.http.port,
                              "request_timeout_s": cfg.http.request_timeout_s})
    with start_progress(cfg.name):  # the replicas' start (models, ONNX export) can take half a minute
        serve.run(app, name=cfg.name, route_prefix=cfg.route_prefix, blocking=False, logging_config=logs)
    host = "127.0.0.1" if cfg.http.host in ("0.0.0.0", "::") else cfg.http.host
    return f"http://{host}:{cfg.http.port}{cfg.route_prefix.rstrip('/')}"


def demo_photo(cfg: ServeConfig) -> tuple[list[bytes], Optional[dict]]:
    if cfg.once_photo:
        return [Path(cfg.once_photo).read_bytes()], None
    from ipl.serve.samples import held_out_examples

    examples = held_out_examples(cfg.run.dir / "clean" / "listings", cfg.index_root, n=1)
    if not examples:
        raise FileNotFoundError(f"no held-out listing with photos in {cfg.run.dir / 'clean'}: set once_photo")
    return examples[0]["photos"][:1], examples[0]


def main(cfg: ServeConfig) -> int:
    from ray import serve

    url = start(cfg)
    try:
        if cfg.once or cfg.sample_draft:
            photos, example = demo_photo(cfg)
            if example:
                print(f"   held-out listing {example['listing_id']} ({example['category']}; true attributes "
                      f"{json.dumps(example['attributes'], ensure_ascii=False)})")
            print(f"   POST {url}/v1/listings/draft (stream=true)")
            stream_draft(url, photos)
        if cfg.once:
            return 0
        print(f"IPL is serving: seller page {url}/  (API {url}/v1/listings/draft); Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        if cfg.once:
            serve.shutdown()


def _provenance(attribute: dict) -> str:
    """Where a shown value comes from: the listings it cites, the photo itself, or the seller."""
    if attribute.get("sources"):
        return "from " + ", ".join(attribute["sources"])
    return {"photo": "from the photo", "seller": "from the seller"}.get(attribute.get("basis"),
                                                                        f"basis {attribute.get('basis')}")


def _candidate(key: str, candidate: dict) -> str:
    """A value to confirm as the console shows it: the value, its confidence, and the broader value
    it would have meant when it was held back for that (``implies``)."""
    implies = candidate.get("implies")
    why = f"; a {implies['value']} {key.lower()}, the {implies['key'].lower()} not stated" if implies else ""
    return f"{candidate['value']} ({candidate['confidence']:.2f}{why})"
