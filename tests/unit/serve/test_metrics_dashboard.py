"""The Grafana dashboard charts only metrics the service exports (names as Prometheus sees them)."""
import json
import re
from pathlib import Path

import ipl.serve.metrics as m

DASHBOARD = Path(__file__).resolve().parents[3] / "cluster" / "grafana" / "ipl-dashboard.json"


def exported_names() -> set[str]:
    src = Path(m.__file__).read_text()
    names = set()
    for kind, name in re.findall(r"metrics\.(Counter|Histogram)\(\"(\w+)\"", src):
        if kind == "Counter":
            names.add(f"ray_{name}_total")
        else:
            names |= {f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"}
    return names


def test_every_ipl_metric_the_dashboard_queries_is_exported():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"\bray_ipl_\w+", e)}
    assert used and used <= exported_names(), used - exported_names()
    assert {"ray_ipl_drafts_total", "ray_ipl_fallbacks_total", "ray_ipl_abstentions_total", "ray_ipl_halts_total",
            "ray_ipl_stage_latency_ms_bucket", "ray_ipl_time_to_first_text_ms_bucket"} <= used
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
