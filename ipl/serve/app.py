"""The typed application builder: one validated :class:`ServeConfig` -> the bound Serve graph.

``serve run serve_configs/local.yaml`` calls ``build_app(args)`` with the YAML's ``args``
(the ServeConfig fields); ``ipl serve`` calls :func:`build` with a config it loaded. The
config and the artifacts are checked here, before any replica starts, so a typo or a
missing model fails the deploy with one message naming what to fix::

    Ingress (FastAPI) -> SafetyGate (one decode) -> Perception (one embedding: category + retrieval)
                      -> AttributeExtractor (a deployment for extract.backend=llm; in the ingress
                         for offline) -> Generator
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from ipl.config import ConfigError, validate
from ipl.serve.config import ServeConfig

_INGRESS = None


def ingress_class():
    """``serve.ingress(build_api)(Ingress)``, made once per process. The routes are built on each
    replica by ``build_api`` (a module-level function travels by reference, so the replica's
    routes are its own rather than a pickled copy of the driver's)."""
    global _INGRESS
    if _INGRESS is None:
        from ray import serve

        from ipl.serve.ingress import Ingress, build_api

        _INGRESS = serve.ingress(build_api)(Ingress)
    return _INGRESS


def build(cfg: ServeConfig):
    from ray import serve

    from ipl.serve.deployments import Perception, SafetyGate
    from ipl.serve.extractor import AttributeExtractor
    from ipl.serve.generator import Generator

    problems = cfg.check_artifacts()
    if problems:
        raise ConfigError("cannot serve: " + "; ".join(problems))
    d = cfg.deployments

    def bind(cls, opts, name, *args):
        deployment = serve.deployment(cls, **opts.serve_options(name))
        scoped = [a for a in args if isinstance(a, ServeConfig)]
        if scoped and hasattr(deployment, "_version"):
            # a version derived from what the deployment reads: `serve.run` of a changed config then
            # keeps the replicas whose settings did not change (Serve otherwise draws a random version)
            blob = json.dumps([cls.__qualname__, opts.model_dump(), scoped[0].model_dump(mode="json")],
                              sort_keys=True)
            deployment._version = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return deployment.bind(*args)

    safety = bind(SafetyGate, d.safety, "SafetyGate", cfg.scoped("SafetyGate"))
    perception = bind(Perception, d.perception, "Perception", cfg.scoped("Perception"))
    # generate.backend=serve_llm: Ray Serve LLM's LLMServer holds the model (vLLM, its GPUs placed by
    # Ray); the Generator (prompt, guard, stream) and an llm extractor get its handle: one copy of the weights
    llm = None
    if cfg.generate.backend == "serve_llm":
        from ipl.serve.llm_server import build_llm_app

        llm = build_llm_app(cfg)
    # the offline extractor is a pure function of the hits (the values `ipl prepare` stored with the
    # index, re-grounded): it runs inside the ingress, one hop fewer; the llm backend holds a model
    extractor_llm = (llm,) if cfg.extract.llm.backend == "serve_llm" else ()
    extractor = bind(AttributeExtractor, d.extractor, "AttributeExtractor", cfg.scoped("AttributeExtractor"),
                     *extractor_llm) if cfg.extract.backend == "llm" else None
    generator = bind(Generator, d.generator, "Generator", cfg.scoped("Generator"), *((llm,) if llm else ()))
    return bind(ingress_class(), d.ingress, "Ingress", safety, perception, extractor, generator, cfg)


def build_app(args: dict[str, Any]):
    """``import_path: ipl.serve.app:build_app`` (``args`` are the ServeConfig fields)."""
    return build(validate(ServeConfig, dict(args or {}), "serve application args"))
