"""The draft service's metrics in Ray Serve's own metrics system (``ray.serve.metrics``).

They are exported with the rest of Ray's metrics on each node's metrics port, in Prometheus'
format (Ray prefixes ``ray_``; a counter gets ``_total``); Serve adds the ``deployment``,
``replica`` and ``application`` tags. ``cluster/grafana/ipl-dashboard.json`` charts them.

=============================== ========= ================================================
metric                          kind      tags
=============================== ========= ================================================
``ipl_drafts``                  counter   ``endpoint`` (draft|chat), ``outcome`` (done|halted|
                                          error|rejected)
``ipl_fallbacks``               counter   ``kind`` (no_category, no_retrieval_hit,
                                          out_of_domain, extraction_failed, generation_timeout)
``ipl_abstentions``             counter   ``key``: a template value left to the seller
                                          (``to_confirm``) instead of stated
``ipl_halts``                   counter   ``reason`` (pii:phone, risk:traffic, ...)
``ipl_rejected``                counter   ``code`` (overloaded, body_timeout, not_an_image, ...)
``ipl_stage_latency_ms``        histogram ``stage`` (safety, perception, extract, admission,
                                          generate, total)
``ipl_time_to_first_text_ms``   histogram ``language``: request start to the first description
                                          text sent
=============================== ========= ================================================
"""
from __future__ import annotations

from typing import Optional

LATENCY_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
STAGES = {"safety_ms": "safety", "perception_ms": "perception", "extract_ms": "extract",
          "admission_ms": "admission", "generate_ms": "generate", "total_ms": "total"}


class DraftMetrics:
    """Created in the ingress replica (the metric objects need Ray's worker)."""

    def __init__(self):
        from ray.serve import metrics

        self.drafts = metrics.Counter("ipl_drafts", description="Drafts answered, by endpoint and outcome.",
                                      tag_keys=("endpoint", "outcome"))
        self.fallbacks = metrics.Counter("ipl_fallbacks", description="Appendix D fallbacks taken, by kind.",
                                         tag_keys=("kind",))
        self.abstentions = metrics.Counter("ipl_abstentions", description="Template values left to the seller to "
                                           "confirm instead of stated (no calibrated evidence), by key.",
                                           tag_keys=("key",))
        self.halts = metrics.Counter("ipl_halts", description="Descriptions halted by the output monitor, by reason.",
                                     tag_keys=("reason",))
        self.rejected = metrics.Counter("ipl_rejected", description="Requests answered with an error before any "
                                        "draft, by error code.", tag_keys=("code",))
        self.latency = metrics.Histogram("ipl_stage_latency_ms", description="Per-stage latency of a draft (ms).",
                                         boundaries=LATENCY_MS, tag_keys=("stage",))
        self.first_text = metrics.Histogram("ipl_time_to_first_text_ms", description="Request start to the first "
                                            "description text sent (ms).", boundaries=LATENCY_MS,
                                            tag_keys=("language",))

    def rejected_with(self, code: str) -> None:
        self.rejected.inc(1, tags={"code": code})

    def prepared(self, meta: dict) -> None:
        for a in meta.get("attributes") or []:
            if a.get("status") == "to_confirm":
                self.abstentions.inc(1, tags={"key": str(a.get("key"))})

    def finished(self, endpoint: str, kind: str, data: dict, meta: dict, fallbacks: Optional[list] = None) -> None:
        """One draft's end: ``kind`` is done | halted | error."""
        self.drafts.inc(1, tags={"endpoint": endpoint, "outcome": kind})
        for f in fallbacks or meta.get("fallbacks") or []:
            self.fallbacks.inc(1, tags={"kind": str(f)})
        if kind == "halted":
            self.halts.inc(1, tags={"reason": str(data.get("reason"))})
        timings = data.get("timings") or meta.get("timings") or {}
        for key, stage in STAGES.items():
            if isinstance(timings.get(key), (int, float)):
                self.latency.observe(float(timings[key]), tags={"stage": stage})
        if isinstance(timings.get("first_text_ms"), (int, float)):
            self.first_text.observe(float(timings["first_text_ms"]), tags={"language": str(meta.get("language"))})
