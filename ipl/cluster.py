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
        # Ray labels the type without the size (A100); the capacity check reads the size from the label
        res.update({f"accelerator_type:{t.split('-')[0]}": 1.0 for t in self.types})
        return {"NodeID": self.name, "Alive": True, "Resources": {k: v for k, v in res.items() if v}}


@dataclass
class Bundle:
    what: str
    cpu: float
    gpu: float = 0.0
    accelerator: Optional[str] = None
    gpu_mem_gib: float = 0.0  # GPU memory the bundle needs on each of its GPUs (0: not checked)
    usable: float = 0.9  # the share of each GPU's memory it may use (vLLM: gpu_memory_utilization)


def node_gpu_memory(node: Node) -> Optional[float]:
    """GiB per GPU of a node (its accelerator label; None: unknown)."""
    from ipl.devices import labels_memory_gib

    return labels_memory_gib(node.types)


def _memory_fits(b: Bundle, node: Node) -> bool:
    if not b.gpu or not b.gpu_mem_gib:
        return True
    mem = node_gpu_memory(node)
    if mem is None:
        return True  # unknown GPU type: the CPU/GPU count is all that can be checked
    # a fractional GPU bundle shares the GPU: it may use its fraction of the memory
    return b.gpu_mem_gib <= b.usable * mem * min(1.0, b.gpu) + 1e-9


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
            size = re.search(r"-(\d+)\s*GB\b", str(v), re.I)  # Tesla-V100-SXM2-32GB: the memory is in the label
            types.add(m.group(1).upper() + (f"-{size.group(1)}G" if size else ""))
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
            kind_ok = not b.accelerator or any(t.split("-")[0] == b.accelerator for t in kinds[n.name])
            if c + 1e-9 >= b.cpu and g + 1e-9 >= b.gpu and kind_ok and _memory_fits(b, n):
                free[n.name] = [c - b.cpu, g - b.gpu]
                placed[n.name] = placed.get(n.name, 0) + 1
                break
        else:
            have = ", ".join(f"{n.name} {free[n.name][0]:g}/{n.cpu:g} CPU {free[n.name][1]:g}/{n.gpu:g} GPU"
                             f"{' ' + '/'.join(sorted(n.types)) if n.types else ''}"
                             f"{f' {node_gpu_memory(n):g} GiB/GPU' if n.gpu and node_gpu_memory(n) else ''}"
                             for n in nodes)
            mem = (f", {b.gpu_mem_gib:.1f} GiB on each GPU (at most {b.usable:.0%} of it usable)"
                   if b.gpu and b.gpu_mem_gib else "")
            short = [n.name.rsplit("-", 1)[0] for n in nodes if n.gpu >= b.gpu > 0 and not _memory_fits(b, n)
                     and (not b.accelerator or any(t.split("-")[0] == b.accelerator for t in kinds[n.name]))]
            why = (f"; GPU memory too small in node group(s) {', '.join(dict.fromkeys(short))}" if short else "")
            raise ConfigError(f"{b.what} ({b.cpu:g} CPU, {b.gpu:g} GPU{', ' + b.accelerator if b.accelerator else ''}"
                              f"{mem}) fits on no node{why}; free/total: {have}")
    return placed


def memory_figures(what: str, params_b: Optional[float], model_dir, dtype: str, tensor_parallel: int = 1,
                   kv_gib: float = 0.0, size_key: str = "params_b") -> tuple[float, str]:
    """(GiB per GPU, the figures as words) of a model on GPUs (:func:`ipl.devices.serving_memory_gib`);
    ConfigError naming ``size_key`` when its size is neither configured nor countable here."""
    from ipl.devices import serving_memory_gib
    from ipl.models.vlm import count_params_b

    params = params_b or (count_params_b(model_dir) if model_dir else None)
    if params is None:
        raise ConfigError(f"{what}: the model's size is unknown ({model_dir} is not on this machine): set "
                          f"{size_key} (e.g. 8.29 for Qwen2-VL-7B) so the GPU memory can be checked")
    m = serving_memory_gib(params, dtype, tensor_parallel, kv_gib)
    words = (f"{params:.2f}B params {dtype if dtype != 'auto' else 'bf16/fp16'}: weights {m['weights_gib']:.1f}"
             f"{f' (1/{tensor_parallel} each)' if tensor_parallel > 1 else ''} + overhead {m['overhead_gib']:.1f}"
             f"{f' + KV reserve {kv_gib:.1f}' if kv_gib else ''} = {m['total_gib']:.1f} GiB per GPU")
    return m["total_gib"], words


def model_memory(cfg, what: str) -> tuple[float, str]:
    """(GiB per GPU, the figures as words) of the served VLM under ``cfg.generate``."""
    g = cfg.generate
    tp = g.tensor_parallel_size if g.backend == "serve_llm" else 1
    return memory_figures(what, g.params_b, cfg.vlm_dir, g.dtype, tp, g.kv_reserve_gib, "generate.params_b")


def serve_bundles(serve_config: dict, replicas: str = "max", notes: Optional[list] = None) -> list[Bundle]:
    """One bundle per replica of every deployment (Serve's own schema, as in the YAML); the model
    deployments (the LLMServer, a GPU Generator or llm extractor with transformers) carry the GPU
    memory they need. ``notes`` collects the memory figures."""
    out = []
    for app in serve_config.get("applications", []):
        from ipl.serve.config import ServeConfig

        cfg = ServeConfig.model_validate(app.get("args") or {})
        for name in type(cfg.deployments).model_fields:
            d = getattr(cfg.deployments, name)
            if name == "llm" and cfg.generate.backend != "serve_llm":
                continue
            if name == "extractor" and cfg.extract.backend != "llm":
                continue
            if d.autoscaling is not None:
                n = d.autoscaling.get("max_replicas", 1) if replicas == "max" else d.autoscaling.get(
                    "min_replicas", 1)
            else:
                n = d.num_replicas or 1
            gpus, mem, usable = d.num_gpus, 0.0, 0.9
            holds_model = ((name == "llm") or (name == "generator" and cfg.generate.backend == "transformers")
                           or (name == "extractor" and cfg.extract.llm.backend == "transformers"))
            if name == "llm":  # Ray Serve LLM places tensor_parallel_size GPUs per replica (one node)
                gpus, usable = float(cfg.generate.tensor_parallel_size), cfg.generate.gpu_memory_utilization
            if holds_model and gpus:
                mem, words = model_memory(cfg, f"{app['name']}/{name}")
                if notes is not None:
                    notes.append(f"{app['name']}/{name}: {words}; {usable:.0%} of each GPU usable")
            out += [Bundle(f"{app['name']}/{name} replica {i + 1}/{n}", d.num_cpus, gpus, d.accelerator_type,
                           mem, usable) for i in range(int(n))]
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


def actor_memory(what: str, params_b: Optional[float], model_dir, dtype: str, gpus: float,
                 notes: Optional[list], kv_gib: float = 0.0) -> float:
    """GiB per GPU of a batch job's model actor; 0 when it runs on CPUs (its figures go to ``notes``)."""
    if not gpus:
        return 0.0
    gib, words = memory_figures(what, params_b, model_dir, dtype, 1, kv_gib, "its params_b")
    if notes is not None:
        notes.append(f"memory {what}: {words}")
    return gib


def job_bundles(stage: str, cfg, notes: Optional[list] = None) -> list[list[Bundle]]:
    """The resource phases of a job (each must fit by itself); ``notes`` collects the memory
    figures of the model actors."""
    phases: list[list[Bundle]] = []
    if stage == "index":
        enc = cfg.encoder.scaling
        phases.append([Bundle(f"index: encoder worker {i + 1}", enc.cpus_per_worker, 1.0 if enc.use_gpu else 0.0)
                       for i in range(enc.num_workers)] if cfg.encoder.finetune else [])
        phases.append([Bundle(f"index: embedding actor {i + 1}", cfg.embed.num_cpus, cfg.embed.num_gpus)
                       for i in range(cfg.embed.concurrency)])
        phases.append([Bundle("index: shard task", cfg.faiss.shard_cpus)])
        if cfg.faiss.train_num_gpus:
            phases.append([Bundle("index: IVF training task", 1, cfg.faiss.train_num_gpus)])
        c = cfg.caption
        if c.enabled:
            from ipl.index.captions import vlm_dir_of

            mem = actor_memory("index: caption actor", c.params_b, vlm_dir_of(cfg), c.dtype, c.num_gpus, notes)
            phases.append([Bundle(f"index: caption actor {i + 1}", c.num_cpus, c.num_gpus, gpu_mem_gib=mem)
                           for i in range(c.concurrency)])
    elif stage == "prepare":
        pools = []
        if cfg.consistency.enabled:
            pools += [Bundle(f"prepare: image-text actor {i + 1}", cfg.consistency.num_cpus, cfg.consistency.num_gpus)
                      for i in range(cfg.consistency.concurrency)]
        if cfg.llm.backend != "none":
            lc = cfg.llm
            mem = actor_memory("prepare: extraction actor", lc.params_b, lc.model, lc.dtype, lc.num_gpus, notes,
                               kv_gib=2.0 if lc.backend == "vllm" else 0.0)
            usable = lc.gpu_memory_utilization if lc.backend == "vllm" else 0.9
            pools += [Bundle(f"prepare: extraction actor {i + 1}", lc.num_cpus, lc.num_gpus, gpu_mem_gib=mem,
                             usable=usable) for i in range(lc.concurrency)]
        phases.append(pools)  # Ray Data runs both pools in one streaming pipeline
    elif stage == "eval":
        g, scfg = cfg.generation, cfg.serve_config()
        mem = actor_memory("eval: generation actor", scfg.generate.params_b, scfg.vlm_dir, scfg.generate.dtype,
                           g.num_gpus, notes)
        phases.append([Bundle(f"eval: generation actor {i + 1}", g.num_cpus, g.num_gpus, gpu_mem_gib=mem)
                       for i in range(g.workers)])
    return [p for p in phases if p]


def check_job(stage: str, cfg, nodes: list[Node]) -> list[str]:
    """Lines saying where the job's phases go; ConfigError when one does not fit."""
    lines = []
    if stage == "train":
        from ipl.train.capacity import check_capacity, memory_line

        need = cfg.memory_need()
        if cfg.scaling.use_gpu and need is None:
            raise ConfigError(f"train: the model's size is unknown ({cfg.model_path} is not on this machine): set "
                              "model.params_b so the GPU memory can be checked")
        per_node = check_capacity(cfg.scaling, [n.ray_node() for n in nodes], memory=need)
        lines.append(f"train: {cfg.scaling.num_workers} workers -> {[k for k in per_node if k]} per node"
                     f"{'; ' + memory_line(need) if need else ''}")
    notes: list[str] = []
    for phase in job_bundles(stage, cfg, notes):
        placed = place(phase, nodes)
        kinds = ", ".join(dict.fromkeys(b.what.rsplit(" ", 1)[0] if b.what[-1].isdigit() else b.what for b in phase))
        lines.append(f"{len(phase)} x ({kinds}) -> {len(placed)} nodes")
    return lines + notes


# -- manifests --------------------------------------------------------------------------------------
BATCH_JOBS = [("prepare", "jobs/configs/prepare_cluster.yaml", []), ("index", "jobs/configs/index_cluster.yaml", []),
              ("eval", "jobs/configs/eval_cluster.yaml", [])]
# on the launcher's VMs: training pinned to the A100 type (else PACK may mix in V100 nodes)
# and ZeRO-2: the p4d's A100s have 40 GB, where ZeRO-1's replicated 7B gradients do not fit
LAUNCHER_JOBS = [("train", "jobs/configs/train_24gpu.yaml",
                  ["scaling.accelerator_type=A100", "deepspeed.zero_optimization.stage=2"]), *BATCH_JOBS]


def check_documents(docs: list[dict], source: str = "", serve_path: Optional[Path] = None) -> list[str]:
    """Check every KubeRay or launcher document; returns the report lines. A launcher YAML is
    checked with ``serve_path`` (default ``serve_configs/production.yaml``)."""
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
            notes: list[str] = []
            for size in ("max", "initial"):
                nodes = kuberay_nodes(spec["rayClusterConfig"], size)
                placed = place(serve_bundles(serve, "max" if size == "max" else "min", notes), nodes)
                lines.append(f"{where}: {'most' if size == 'max' else 'fewest'} replicas on {len(placed)} of "
                             f"{len(nodes)} nodes ({size} cluster)")
            lines += [f"{where}: memory {n}" for n in dict.fromkeys(notes)]
        elif kind in ("RayCluster", "launcher"):
            nodes = kuberay_nodes(doc["spec"]) if kind == "RayCluster" else launcher_nodes(doc)
            for stage, path, overrides in (BATCH_JOBS if kind == "RayCluster" else LAUNCHER_JOBS):
                cfg = stage_config(stage, str(REPO_ROOT / path), overrides)
                lines += [f"{where}: {x}" for x in check_job(stage, cfg, nodes)]
            if kind == "launcher":
                sp = serve_path or REPO_ROOT / "serve_configs" / "production.yaml"
                serve = yaml.safe_load(Path(sp).read_text())
                notes = []
                placed = place(serve_bundles(serve, "max", notes), nodes)
                lines.append(f"{where}: {Path(sp).name} at most replicas on {len(placed)} nodes")
                lines += [f"{where}: memory {n}" for n in notes]
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
    serve_path = None
    if "--serve" in paths:
        i = paths.index("--serve")
        if i + 1 >= len(paths):
            print("--serve needs a Serve config YAML", file=sys.stderr)
            return 2
        serve_path = Path(paths[i + 1])
        paths = paths[:i] + paths[i + 2:]
    if not paths:
        print("usage: python -m ipl.cluster [--serve SERVE.yaml] MANIFEST.yaml ...", file=sys.stderr)
        return 2
    failed = 0
    for p in paths:
        try:
            docs = list(yaml.safe_load_all(Path(p).read_text()))
            for line in check_documents(docs, p, serve_path):
                print(line)
        except (ConfigError, ValueError, KeyError, OSError) as exc:
            failed += 1
            print(f"{p}: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
