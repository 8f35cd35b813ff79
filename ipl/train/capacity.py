"""Will the training workers fit? Checked before the trainer starts, instead of a silent hang.

``check_capacity(scaling, nodes)`` places one bundle per worker (``cpus_per_worker`` CPUs,
one GPU with ``use_gpu``) on the alive nodes' total resources the way the placement
strategy would (STRICT_PACK: one node; STRICT_SPREAD: distinct nodes; PACK/SPREAD: any)
and also keeps ``data_cpus`` free for Ray Data's read and map tasks that feed the workers --
at least one whole CPU: Ray 2.60's Parquet read (ReadFilesParquetV2) does not start with
less free, whatever its ``num_cpus`` says (measured: it hangs with 0.25 free).
A plan that cannot fit raises :class:`~ipl.config.ConfigError` saying what is missing.
"""
from __future__ import annotations

from typing import Optional

from ipl.config import ConfigError
from ipl.devices import labels_memory_gib
from ipl.train.config import ScalingConfig

PARQUET_READ_FREE_CPUS = 1.0


def node_capacity(nodes: list[dict]) -> list[dict]:
    """``ray.nodes()`` -> [{"node": id, "CPU": n, "GPU": n, "accelerator": {...}}] for alive nodes."""
    out = []
    for n in nodes:
        if not n.get("Alive", n.get("alive", True)):
            continue
        res = n.get("Resources", {})
        out.append({"node": n.get("NodeID", "?")[:8], "CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)),
                    "types": {k for k in res if k.startswith("accelerator_type:")}})
    return out


def memory_line(need: dict) -> str:
    return (f"{need['params_b']:.2f}B params, ZeRO-{need['zero_stage']} {need['precision']}: weights "
            f"{need['weights_gib']:.1f} + grads {need['grads_gib']:.1f} + optimizer {need['optimizer_gib']:.1f} + "
            f"activations {need['activation_gib']:.1f} = {need['total_gib']:.1f} GiB per GPU")


def check_memory(need: Optional[dict], cap: list[dict], usable: float = 0.9) -> list[dict]:
    """The nodes whose GPUs hold a worker's ``need`` (``usable`` of each GPU's memory: the CUDA
    context and fragmentation take the rest); nodes of unknown GPU memory are kept."""
    if not need:
        return cap
    ok = []
    for n in cap:
        mem = labels_memory_gib(n["types"])
        if mem is None or need["total_gib"] <= usable * mem + 1e-9:
            ok.append(n)
    if not ok and cap:
        have = ", ".join(sorted({f"{n['node']}: {labels_memory_gib(n['types']):g} GiB" for n in cap
                                 if labels_memory_gib(n["types"])}))
        hint = (" ZeRO stage 2 shards the gradients too (deepspeed.zero_optimization.stage: 2)"
                if need["zero_stage"] < 2 else " ZeRO stage 3 shards the weights too")
        raise ConfigError(f"scaling: a training worker needs {memory_line(need)}, more than {usable:.0%} of any "
                          f"node's GPU ({have}).{hint}, or use GPUs with more memory")
    return ok


def check_capacity(scaling: ScalingConfig, nodes: list[dict], data_cpus: float = 0.5,
                   memory: Optional[dict] = None) -> list[int]:
    """Workers per node of a feasible placement; ConfigError when there is none. With ``memory``
    (:meth:`TrainConfig.memory_need`) only nodes whose GPUs hold a worker count."""
    data_cpus = max(data_cpus, PARQUET_READ_FREE_CPUS)
    cpu, gpu = scaling.cpus_per_worker, 1.0 if scaling.use_gpu else 0.0
    cap = node_capacity(nodes)
    if scaling.accelerator_type:
        cap = [n for n in cap if f"accelerator_type:{scaling.accelerator_type}" in n["types"]]
    if gpu:
        cap = check_memory(memory, cap)
    want = scaling.num_workers
    total_cpu = sum(n["CPU"] for n in cap)
    total_gpu = sum(n["GPU"] for n in cap)

    def fits(n, k):
        return n["CPU"] + 1e-9 >= k * cpu and n["GPU"] + 1e-9 >= k * gpu

    def per_node(n):
        k = int(n["CPU"] // cpu) if cpu else want
        if gpu:
            k = min(k, int(n["GPU"] // gpu))
        return max(0, k)

    where = ", ".join(f"{n['node']}: {n['CPU']:g} CPU {n['GPU']:g} GPU" for n in cap) or "no alive nodes"
    need = f"{want} workers x ({cpu:g} CPU{', 1 GPU' if gpu else ''})"
    if scaling.placement_strategy == "STRICT_PACK":
        if not any(fits(n, want) for n in cap):
            raise ConfigError(f"scaling: {need} must fit on one node (STRICT_PACK); nodes: {where}")
        placement = [want]
    elif scaling.placement_strategy == "STRICT_SPREAD":
        ok = [n for n in cap if fits(n, 1)]
        if len(ok) < want:
            raise ConfigError(f"scaling: {need} need {want} distinct nodes (STRICT_SPREAD), {len(ok)} can host one; "
                              f"nodes: {where}")
        placement = [1] * want
    else:
        slots = [per_node(n) for n in cap]
        if sum(slots) < want:
            raise ConfigError(f"scaling: {need} do not fit the cluster: room for {sum(slots)} "
                              f"({total_cpu:g} CPU, {total_gpu:g} GPU{' of type ' + scaling.accelerator_type if scaling.accelerator_type else ''}"
                              f"); nodes: {where}. Lower scaling.num_workers or add nodes")
        placement, left = [], want
        for s in slots:
            placement.append(min(s, left))
            left -= placement[-1]
    if total_cpu - want * cpu < data_cpus - 1e-9:
        raise ConfigError(f"scaling: {need} take {want * cpu:g} of the cluster's {total_cpu:g} CPUs and leave less than "
                          f"{data_cpus:g} for Ray Data to feed them (the job would hang): lower scaling.cpus_per_worker")
    return placement
