"""A multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and worker
raylets on loopback) with simulated GPUs per node:

* the training job's placement: 24 workers x (8 CPU, 1 GPU) fit 3 nodes x 8 GPUs (our check and
  a real placement group agree), and with a node gone our check refuses at once, naming what is
  missing, where Ray itself would wait forever;
* the IPL Serve application with the Generator on "GPU" nodes: it scales from min to max replicas
  under load and back down with no failed request, and when a GPU node dies under load the
  requests in flight on it end with a clean retryable error, every other request succeeds, and
  a replacement replica comes up on another node;
* the prepare and index jobs spread their tasks over the nodes.

The placement test runs in ``make test``; the Serve and job tests (minutes each on 2 cores)
are also marked ``slow`` and run with ``make test-slow``.
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ipl.config import ConfigError, load_config

pytestmark = pytest.mark.integration
TIMEOUT = 120


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(served_run):
    """Replaces the session's local Ray with a multi-node cluster for this module, then restores it."""
    import ray
    from ray.cluster_utils import Cluster

    restore = ray.is_initialized()
    if restore:
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 256 * 2**20, "include_dashboard": True,
        "dashboard_port": free_port()})
    ray.init(address=c.address, log_to_driver=False)
    yield c
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()
        c.shutdown()
        if restore:
            ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            ctx.print_on_execution_start = False


def alive_nodes():
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_training_placement_on_3x8_gpus_and_refusal_when_smaller(cluster):
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    from ipl.train.capacity import check_capacity
    from ipl.train.config import TrainConfig

    before = len(alive_nodes())
    gpu_nodes = [cluster.add_node(num_cpus=72, num_gpus=8, resources={"accelerator_type:A800": 1},
                                  object_store_memory=128 * 2**20) for _ in range(3)]
    wait_for(lambda: len(alive_nodes()) == before + 3, 60, "3 GPU nodes")
    try:
        cfg = load_config(TrainConfig, "jobs/configs/train_24gpu.yaml")
        placement = check_capacity(cfg.scaling, ray.nodes(), data_cpus=cfg.data.read_cpus)
        assert sorted(placement)[-3:] == [8, 8, 8] and sum(placement) == 24
        # Ray agrees: the same 24 bundles with the same strategy are placed, 8 on each GPU node
        bundles = [{"CPU": cfg.scaling.cpus_per_worker, "GPU": 1}] * cfg.scaling.num_workers
        pg = placement_group(bundles, strategy=cfg.scaling.placement_strategy)
        assert pg.wait(60)
        per_node = {}
        for node in placement_group_table(pg)["bundles_to_node_id"].values():
            per_node[node] = per_node.get(node, 0) + 1
        assert sorted(per_node.values()) == [8, 8, 8]
        remove_placement_group(pg)

        cluster.remove_node(gpu_nodes.pop())
        wait_for(lambda: len(alive_nodes()) == before + 2, 60, "a GPU node to leave")
        with pytest.raises(ConfigError, match=r"24 workers .*8 CPU, 1 GPU"):
            check_capacity(cfg.scaling, ray.nodes(), data_cpus=cfg.data.read_cpus)
        # without the check Ray would only wait: the placement group stays pending
        pg = placement_group(bundles, strategy=cfg.scaling.placement_strategy)
        assert not pg.wait(5)
        remove_placement_group(pg)
    finally:
        for n in gpu_nodes:
            cluster.remove_node(n)
        wait_for(lambda: len(alive_nodes()) == before, 60, "the GPU nodes to leave")


# -- the Serve application on a multi-node cluster ---------------------------------------------------
def serve_cfg(root, port, *overrides):
    from ipl.serve.stage import load_serve_config

    # every deployment but the Generator asks for CPU, which only the head has; the Generator asks for
    # a V100 GPU, which only the GPU nodes have (0 CPUs each)
    return load_serve_config("serve_configs/local.yaml", ["caption.enabled=false",
        f"run.root={root}", "run.name=s", f"models.vlm={root}/t/models/vlm-base", f"models.templates={root}/t/templates.yaml",
        f"http.port={port}", "http.proxy_location=HeadOnly", "generate.max_new_tokens=12", "safety.prohibited=[]",
        "pipeline.max_inflight=64", "retrieval.refresh_s=0", "deployments.generator.num_cpus=0",
        "deployments.generator.num_gpus=1", "deployments.generator.accelerator_type=V100",
        "deployments.generator.max_ongoing_requests=2", *overrides])


def serve_status(deployment="Generator"):
    from ray import serve

    app = serve.status().applications.get("ipl")
    if app is None or deployment not in app.deployments:
        return {}
    return dict(app.deployments[deployment].replica_states)


def running(deployment="Generator") -> int:
    return serve_status(deployment).get("RUNNING", 0)


class Load:
    """Clients sending drafts in a loop; every reply is kept (status, error code, seconds)."""

    def __init__(self, url, photo, clients, stream=False):
        self.url, self.photo, self.stream = url, photo, stream
        self.stop = threading.Event()
        self.results: list[tuple[int, str, float]] = []
        self.pool = ThreadPoolExecutor(clients)
        self.futures = [self.pool.submit(self._client) for _ in range(clients)]

    def _one(self):
        t = time.monotonic()
        files = [("photos", ("p.jpg", self.photo, "image/jpeg"))]
        data = {"stream": "true" if self.stream else "false"}
        try:
            r = requests.post(self.url + "/v1/listings/draft", files=files, data=data, timeout=TIMEOUT,
                              stream=self.stream)
            if self.stream and r.status_code == 200:
                last = None
                for line in r.iter_lines(decode_unicode=True):
                    if line.startswith("event: "):
                        last = line[7:]
                    elif line.startswith("data: ") and last == "error":
                        import json

                        return 200, "sse:" + json.loads(line[6:]).get("code", "?"), time.monotonic() - t
                return 200, "done" if last == "done" else f"sse:{last}", time.monotonic() - t
            code = r.json().get("error", {}).get("code", "") if r.status_code != 200 else "done"
            return r.status_code, code, time.monotonic() - t
        except requests.RequestException as exc:  # a hang or a cut connection is a failure of its own kind
            return -1, type(exc).__name__, time.monotonic() - t

    def _client(self):
        while not self.stop.is_set():
            self.results.append(self._one())

    def finish(self):
        self.stop.set()
        for f in self.futures:
            f.result(timeout=TIMEOUT * 2)
        self.pool.shutdown()
        return self.results


@pytest.fixture(scope="module")
def app(cluster, served_run):
    from ray import serve

    from ipl.serve.samples import held_out_examples
    from ipl.serve.stage import start

    root = served_run[0]
    gpu_nodes = [cluster.add_node(num_cpus=0, num_gpus=1, resources={"accelerator_type:V100": 1},
                                  object_store_memory=128 * 2**20) for _ in range(3)]
    cluster.wait_for_nodes()
    port = free_port()
    cfg = serve_cfg(root, port, "deployments.generator.autoscaling={min_replicas: 1, max_replicas: 3, "
                                "target_ongoing_requests: 1, upscale_delay_s: 1, downscale_delay_s: 8, "
                                "metrics_interval_s: 0.5, look_back_period_s: 2}")
    url = start(cfg)
    wait_for(lambda: _healthy(url), 180, "the application to answer /healthz")
    photo = held_out_examples(root / "t" / "clean" / "listings", root / "s" / "index", n=1)[0]["photos"][0]
    yield {"url": url, "photo": photo, "root": root, "port": port, "gpu_nodes": gpu_nodes}
    serve.shutdown()


def _healthy(url):
    try:
        return requests.get(url + "/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow  # ~1.5 min with the app fixture: `make test-slow` (keeps `make test` under 15 min)
def test_generator_scales_up_under_load_and_down_after_without_failures(app):
    assert running() == 1
    load = Load(app["url"], app["photo"], clients=6)
    try:
        wait_for(lambda: running() == 3, 180, "3 Generator replicas under load")
    finally:
        results = load.finish()
    # a light load keeps requests flowing while the replicas drain and stop
    light = Load(app["url"], app["photo"], clients=1)
    try:
        wait_for(lambda: serve_status() == {"RUNNING": 1}, 180, "the Generator back at 1 replica")
    finally:
        results += light.finish()
    failed = [r for r in results if r[:2] != (200, "done")]
    assert len(results) >= 10 and not failed, failed


@pytest.mark.slow
def test_losing_a_gpu_node_under_load_fails_only_its_requests_and_a_replacement_comes_up(app, cluster):
    import ray
    from ray import serve
    from ray.util.state import list_actors

    from ipl.serve.app import build

    cfg = serve_cfg(app["root"], app["port"], "deployments.generator.autoscaling=null",
                    "deployments.generator.num_replicas=2", "generate.max_new_tokens=64")
    serve.run(build(cfg), name=cfg.name, route_prefix=cfg.route_prefix, blocking=False)
    wait_for(lambda: serve_status() == {"RUNNING": 2}, 180, "2 Generator replicas")
    replicas = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if "Generator" in a.class_name]
    assert len({a.node_id for a in replicas}) == 2  # one replica per GPU node
    victim = next(n for n in app["gpu_nodes"] if n.node_id == replicas[0].node_id)

    load = Load(app["url"], app["photo"], clients=4, stream=True)
    time.sleep(4)  # requests in flight on both replicas
    cluster.remove_node(victim, allow_graceful=False)
    try:
        wait_for(lambda: serve_status() == {"RUNNING": 2} and
                 len([n for n in alive_nodes() if n["Resources"].get("GPU")]) == 2,
                 240, "a replacement Generator replica on the remaining GPU nodes")
        time.sleep(2)
    finally:
        results = load.finish()
    done = [r for r in results if r[:2] == (200, "done")]
    lost = [r for r in results if r[:2] != (200, "done")]
    # a request caught on the dead node ends with a retryable "unavailable" (503 JSON or SSE error
    # event), never a hang or a cut connection; every other request is answered in full
    assert all(code in ("sse:unavailable", "unavailable") for _, code, _ in lost), lost
    assert len(lost) <= 4 and len(done) >= 8, (len(done), lost)
    print(f"node loss under load: {len(done)} drafts completed, {len(lost)} ended with a retryable error")
    after = Load(app["url"], app["photo"], clients=2, stream=True)
    time.sleep(8)
    tail = after.finish()
    assert tail and all(r[:2] == (200, "done") for r in tail), tail
    nodes = {a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")]) if "Generator" in a.class_name}
    assert victim.node_id not in nodes and len(nodes) == 2
    assert ray.is_initialized()


@pytest.mark.slow
def test_prepare_and_index_jobs_spread_their_tasks_over_the_nodes(cluster, served_run, tmp_path):
    from ray.util.state import list_tasks

    from ipl.data.config import PrepareConfig
    from ipl.data.pipeline import run_prepare
    from ipl.index.config import IndexConfig
    from ipl.index.stage import build

    root = served_run[0]
    workers = [cluster.add_node(num_cpus=2, object_store_memory=128 * 2**20) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        run_prepare(load_config(PrepareConfig, None, [
            f"run.root={tmp_path}", "run.name=m", f"input.path={root}/t/raw", "consistency.enabled=false",
            "instructions.llamafactory_export=false"]))
        build(load_config(IndexConfig, None, [
            f"run.root={tmp_path}", "run.name=m", f"listings={tmp_path}/m/clean/listings",
            f"encoder.path={root}/t/models/clip-base", "encoder.finetune=false", "embed.batch_size=32",
            "faiss.type=Flat", "faiss.shards=4", "faiss.shard_cpus=1", "category.epochs=5"]))
        tasks = list_tasks(filters=[("state", "=", "FINISHED")], limit=10000, detail=True)
        nodes_of = {}
        for t in tasks:
            kind = "index shard" if "build_shard" in t.name else ("prepare" if "Map" in t.name or "Read" in t.name
                                                                  else None)
            if kind and t.node_id:
                nodes_of.setdefault(kind, set()).add(t.node_id)
        assert len(nodes_of.get("prepare", ())) >= 2, nodes_of
        assert len(nodes_of.get("index shard", ())) >= 2, nodes_of
    finally:
        for n in workers:
            cluster.remove_node(n)
