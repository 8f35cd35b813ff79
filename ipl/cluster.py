"""Do the jobs and the Serve application fit the cluster a manifest declares? Checked offline.

``python -m ipl.cluster cluster/kuberay/*.yaml cluster/launcher/aws.yaml`` reads KubeRay
``RayCluster``/``RayJob``/``RayService`` manifests and Ray cluster launcher YAMLs, turns their
node groups (at their largest: ``maxReplicas`` / ``max_workers``) into nodes with CPUs, GPUs
and the GPU type, and places on them what the configs ask for:

* a RayJob's entrypoint config (``jobs/<stage>.py --config ...``): the training workers
  (through :func:`ipl.train.capacity.check_capacity`, the check the training job runs itself),
  the index job's fine-tuning workers, embedding actors and shard tasks, the prepare job's
  GPU actor pools, the eval job's generation actors;
* a RayService's ``serveConfigV2``: every deployment at its most replicas
  (``autoscaling_config.max_replicas``) and at its fewest on the group's initial replicas;
* the long-lived RayCluster: the batch jobs submitted to it (prepare, index, eval; training
  has its own RayJob cluster and serving its RayService);
* a launcher YAML: every job (training pinned to the A100 nodes, as the operator guide's
  command does) and ``serve_configs/production.yaml``, one at a time.

Placement is first-fit over bundles sorted by GPUs then CPUs (Ray's own scheduler does at
least as well for these shapes). A bundle that fits nowhere is reported with what it needed
and what the nodes had.
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import yaml

from ipl.config import REPO_ROOT, ConfigError

IMAGE_ROOT = "/home/ray/ipl"  # where cluster/Dockerfile puts the checkout
_GPU_TYPE = re.compile(r"(V100|A100|A800|H100|H800|A10G|L4|T4)", re.I)


@dataclass
class Node:
    name: str
    cpu: float
    gpu: float
    types: set = field(default_factory=set)  # "V100", ...

    def ray_node(self) -> dict:
        """The node as ``ray.nodes()`` reports it (for :func:`check_capacity`)."""
        res = {"CPU": self.cpu, "GPU": self.gpu, **{f"accelerator_type:{t}": 1.0 for t in self.types}}
        return {"NodeID": self.name, "Alive": True, "Resources": {k: v for k, v in res.items() if v}}


@dataclass
class Bundle:
    what: str
    cpu: float
    gpu: float = 0.0
    accelerator: Optional[str] = None


def _quantity(value) -> float:
    s = str(value)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


# -- node groups ------------------------------------------------------------------------------------
def _pod_node(name: str, group: dict) -> Node:
    spec = group["template"]["spec"]
    limits = spec["containers"][0].get("resources", {}).get("limits", {})
    params = group.get("rayStartParams") or {}
    cpu = _quantity(params["num-cpus"]) if "num-cpus" in params else _quantity(limits.get("cpu", 0))
    gpu = _quantity(params["num-gpus"]) if "num-gpus" in params else _quantity(limits.get("nvidia.com/gpu", 0))
    types = set()
    for v in (spec.get("nodeSelector") or {}).values():
        m = _GPU_TYPE.search(str(v))
        if m and gpu:
            types.add(m.group(1).upper())
    return Node(name, cpu, gpu, types)


def kuberay_nodes(cluster_spec: dict, size: str = "max") -> list[Node]:
    """Nodes of a KubeRay ``RayClusterSpec``: the head, and each worker group at ``maxReplicas``
    (``size="max"``) or at its initial ``replicas`` (``size="initial"``)."""
    nodes = [_pod_node("head", cluster_spec["headGroupSpec"])]
    for g in cluster_spec.get("workerGroupSpecs", []):
        n = g.get("maxReplicas", g.get("replicas", 0)) if size == "max" else g.get("replicas", g.get("minReplicas", 0))
        proto = _pod_node(g["groupName"], g)
        nodes += [Node(f"{g['groupName']}-{i}", proto.cpu, proto.gpu, set(proto.types)) for i in range(int(n))]
    return nodes


def launcher_nodes(config: dict, size: str = "max") -> list[Node]:
    """Nodes of a Ray cluster launcher YAML (each type's declared ``resources``)."""
    nodes = []
    for name, t in config["available_node_types"].items():
        res = t.get("resources") or {}
        types = {k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")}
        if name == config["head_node_type"]:
            n = 1
        else:
            n = t.get("max_workers", 0) if size == "max" else t.get("min_workers", 0)
        nodes += [Node(f"{name}-{i}", float(res.get("CPU", 0)), float(res.get("GPU", 0)), set(types))
                  for i in range(int(n))]
    return nodes


# -- placement --------------------------------------------------------------------------------------
def place(bundles: Iterable[Bundle], nodes: list[Node]) -> dict[str, int]:
    """First-fit placement; returns bundles per node, raises ConfigError naming what did not fit."""
    free = {n.name: [n.cpu, n.gpu] for n in nodes}
    kinds = {n.name: n.types for n in nodes}
    placed: dict[str, int] = {}
    for b in sorted(bundles, key=lambda b: (-b.gpu, -b.cpu)):
        for n in nodes:
            c, g = free[n.name]
            if c + 1e-9 >= b.cpu and g + 1e-9 >= b.gpu and (not b.accelerator or b.accelerator in kinds[n.name]):
                free[n.name] = [c - b.cpu, g - b.gpu]
                placed[n.name] = placed.get(n.name, 0) + 1
                break
        else:
            have = ", ".join(f"{n.name} {free[n.name][0]:g}/{n.cpu:g} CPU {free[n.name][1]:g}/{n.gpu:g} GPU"
                             f"{' ' + '/'.join(sorted(n.types)) if n.types else ''}" for n in nodes)
            raise ConfigError(f"{b.what} ({b.cpu:g} CPU, {b.gpu:g} GPU{', ' + b.accelerator if b.accelerator else ''})"
                              f" fits on no node; free/total: {have}")
    return placed


def serve_bundles(serve_config: dict, replicas: str = "max") -> list[Bundle]:
    """One bundle per replica of every deployment (Serve's own schema, as in the YAML)."""
    out = []
    for app in serve_config.get("applications", []):
        from ipl.serve.config import ServeConfig

        cfg = ServeConfig.model_validate(app.get("args") or {})
        for name in type(cfg.deployments).model_fields:
            d = getattr(cfg.deployments, name)
            if d.autoscaling is not None:
                n = d.autoscaling.get("max_replicas", 1) if replicas == "max" else d.autoscaling.get(
                    "min_replicas", 1)
            else:
                n = d.num_replicas or 1
            out += [Bundle(f"{app['name']}/{name} replica {i + 1}/{n}", d.num_cpus, d.num_gpus, d.accelerator_type)
                    for i in range(int(n))]
    return out


# -- job configs ------------------------------------------------------------------------------------
def resolve(path: str) -> Path:
    """A path inside the image (``/home/ray/ipl/...``) or relative to the checkout."""
    p = path[len(IMAGE_ROOT) + 1:] if path.startswith(IMAGE_ROOT + "/") else path
    return Path(p) if Path(p).is_absolute() else REPO_ROOT / p


def job_of(entrypoint: str):
    """(stage, validated config) of ``python jobs/<x>.py --config FILE [key=value ...]``."""
    from ipl.cli import stage_config

    argv = shlex.split(entrypoint)
    if len(argv) < 2 or not argv[0].startswith("python"):
        raise ConfigError(f"entrypoint {entrypoint!r}: expected `python jobs/<stage>.py --config FILE ...`")
    script = resolve(argv[1])
    if not script.is_file():
        raise ConfigError(f"entrypoint {entrypoint!r}: {script} does not exist")
    found = re.search(r'run_stage\("(\w+)"', script.read_text())
    if not found:
        raise ConfigError(f"entrypoint {entrypoint!r}: {script} is not a stage entrypoint")
    rest = argv[2:]
    config = None
    if "--config" in rest:
        i = rest.index("--config")
        config = str(resolve(rest[i + 1]))
        rest = rest[:i] + rest[i + 2:]
    return found.group(1), stage_config(found.group(1), config, rest)


def job_bundles(stage: str, cfg) -> list[list[Bundle]]:
    """The resource phases of a job (each must fit by itself)."""
    phases: list[list[Bundle]] = []
    if stage == "index":
        enc = cfg.encoder.scaling
        phases.append([Bundle(f"index: encoder worker {i + 1}", enc.cpus_per_worker, 1.0 if enc.use_gpu else 0.0)
                       for i in range(enc.num_workers)] if cfg.encoder.finetune else [])
        phases.append([Bundle(f"index: embedding actor {i + 1}", cfg.embed.num_cpus, cfg.embed.num_gpus)
                       for i in range(cfg.embed.concurrency)])
        phases.append([Bundle("index: shard task", cfg.faiss.shard_cpus)])
    elif stage == "prepare":
        pools = []
        if cfg.consistency.enabled:
            pools += [Bundle(f"prepare: image-text actor {i + 1}", cfg.consistency.num_cpus, cfg.consistency.num_gpus)
                      for i in range(cfg.consistency.concurrency)]
        if cfg.llm.backend != "none":
            pools += [Bundle(f"prepare: extraction actor {i + 1}", cfg.llm.num_cpus, cfg.llm.num_gpus)
                      for i in range(cfg.llm.concurrency)]
        phases.append(pools)  # Ray Data runs both pools in one streaming pipeline
    elif stage == "eval":
        g = cfg.generation
        phases.append([Bundle(f"eval: generation actor {i + 1}", g.num_cpus, g.num_gpus) for i in range(g.workers)])
    return [p for p in phases if p]


def check_job(stage: str, cfg, nodes: list[Node]) -> list[str]:
    """Lines saying where the job's phases go; ConfigError when one does not fit."""
    lines = []
    if stage == "train":
        from ipl.train.capacity import check_capacity

        per_node = check_capacity(cfg.scaling, [n.ray_node() for n in nodes])
        lines.append(f"train: {cfg.scaling.num_workers} workers -> {[k for k in per_node if k]} per node")
    for phase in job_bundles(stage, cfg):
        placed = place(phase, nodes)
        kinds = ", ".join(dict.fromkeys(b.what.rsplit(" ", 1)[0] if b.what[-1].isdigit() else b.what for b in phase))
        lines.append(f"{len(phase)} x ({kinds}) -> {len(placed)} nodes")
    return lines


# -- manifests --------------------------------------------------------------------------------------
BATCH_JOBS = [("prepare", "jobs/configs/prepare_cluster.yaml", []), ("index", "jobs/configs/index_cluster.yaml", []),
              ("eval", "jobs/configs/eval_cluster.yaml", [])]
# on the launcher's VMs: training pinned to the A100 type (else PACK may mix in V100 nodes)
LAUNCHER_JOBS = [("train", "jobs/configs/train_24gpu.yaml", ["scaling.accelerator_type=A100"]), *BATCH_JOBS]


def check_documents(docs: list[dict], source: str = "") -> list[str]:
    """Check every KubeRay or launcher document; returns the report lines."""
    from ipl.cli import stage_config

    lines = []
    for doc in docs:
        if not doc:
            continue
        kind = doc.get("kind") or ("launcher" if "available_node_types" in doc else None)
        where = f"{source}: {kind} {doc.get('metadata', {}).get('name', doc.get('cluster_name', ''))}".strip()
        if kind == "RayJob":
            nodes = kuberay_nodes(doc["spec"]["rayClusterSpec"])
            stage, cfg = job_of(doc["spec"]["entrypoint"])
            lines += [f"{where}: {x}" for x in check_job(stage, cfg, nodes)]
        elif kind == "RayService":
            spec = doc["spec"]
            serve = yaml.safe_load(spec["serveConfigV2"])
            validate_serve(serve)
            for size in ("max", "initial"):
                nodes = kuberay_nodes(spec["rayClusterConfig"], size)
                placed = place(serve_bundles(serve, "max" if size == "max" else "min"), nodes)
                lines.append(f"{where}: {'most' if size == 'max' else 'fewest'} replicas on {len(placed)} of "
                             f"{len(nodes)} nodes ({size} cluster)")
        elif kind in ("RayCluster", "launcher"):
            nodes = kuberay_nodes(doc["spec"]) if kind == "RayCluster" else launcher_nodes(doc)
            for stage, path, overrides in (BATCH_JOBS if kind == "RayCluster" else LAUNCHER_JOBS):
                cfg = stage_config(stage, str(REPO_ROOT / path), overrides)
                lines += [f"{where}: {x}" for x in check_job(stage, cfg, nodes)]
            if kind == "launcher":
                serve = yaml.safe_load((REPO_ROOT / "serve_configs" / "production.yaml").read_text())
                placed = place(serve_bundles(serve, "max"), nodes)
                lines.append(f"{where}: serve_configs/production.yaml at most replicas on {len(placed)} nodes")
    return lines


def validate_serve(serve: dict) -> None:
    """Ray Serve's own schema, then each application's args as a ServeConfig."""
    from ray.serve.schema import ServeDeploySchema

    from ipl.serve.config import ServeConfig

    ServeDeploySchema.model_validate(serve)
    for app in serve.get("applications", []):
        ServeConfig.model_validate(app.get("args") or {})


def main(argv: Optional[list[str]] = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m ipl.cluster MANIFEST.yaml ...", file=sys.stderr)
        return 2
    failed = 0
    for p in paths:
        try:
            docs = list(yaml.safe_load_all(Path(p).read_text()))
            for line in check_documents(docs, p):
                print(line)
        except (ConfigError, ValueError, KeyError, OSError) as exc:
            failed += 1
            print(f"{p}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
