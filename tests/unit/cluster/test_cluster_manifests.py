"""cluster/: every manifest parses, validates against Ray's own schemas, points at entrypoints
and configs that exist and load, and asks for no more than its node groups have."""
import copy
import re
from pathlib import Path

import pytest
import yaml

from ipl.cluster import check_documents, job_of, kuberay_nodes, place, serve_bundles
from ipl.config import ConfigError, load_config

CLUSTER = Path("cluster")


def docs(path):
    return [d for d in yaml.safe_load_all((CLUSTER / path).read_text()) if d]


def test_every_manifest_parses_and_the_set_is_complete():
    kinds = {}
    for f in sorted(CLUSTER.rglob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            kinds.setdefault(d.get("kind", "launcher" if "available_node_types" in d else "?"), []).append(f.name)
    assert kinds == {"RayCluster": ["raycluster.yaml"], "RayJob": ["rayjob-index.yaml", "rayjob-train.yaml"],
                     "RayService": ["rayservice.yaml"], "launcher": ["aws.yaml"]}


@pytest.mark.parametrize("path", ["kuberay/raycluster.yaml", "kuberay/rayjob-train.yaml", "kuberay/rayjob-index.yaml",
                                  "kuberay/rayservice.yaml", "launcher/aws.yaml"])
def test_requests_fit_the_declared_node_groups(path):
    lines = check_documents(docs(path), path)
    assert lines and all(path in line for line in lines)


def test_rayservice_is_production_yaml_and_passes_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    spec = docs("kuberay/rayservice.yaml")[0]["spec"]
    serve = yaml.safe_load(spec["serveConfigV2"])
    assert serve == yaml.safe_load(Path("serve_configs/production.yaml").read_text())
    ServeDeploySchema.model_validate(serve)
    cluster = spec["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"]  # GCS FT with an external Redis


def test_training_rayjob_is_3_nodes_of_8_gpus_and_its_entrypoint_loads():
    job = docs("kuberay/rayjob-train.yaml")[0]["spec"]
    nodes = kuberay_nodes(job["rayClusterSpec"])
    assert [(n.gpu, n.types) for n in nodes if n.gpu] == [(8.0, {"A800-80G"})] * 3
    stage, cfg = job_of(job["entrypoint"])
    assert stage == "train" and cfg.scaling.num_workers == 24 and cfg.scaling.use_gpu
    assert "stage: 1" in yaml.safe_dump(cfg.deepspeed)


def test_too_small_a_cluster_is_refused_with_what_is_missing():
    train = copy.deepcopy(docs("kuberay/rayjob-train.yaml")[0])
    group = train["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["replicas"] = group["minReplicas"] = group["maxReplicas"] = 2
    with pytest.raises(ConfigError, match="24 workers"):
        check_documents([train], "small")
    service = copy.deepcopy(docs("kuberay/rayservice.yaml")[0])
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = 1
    with pytest.raises(ConfigError, match=r"llm replica .* fits on no node"):
        check_documents([service], "small")


def test_accelerator_type_is_honoured():
    serve = yaml.safe_load(Path("serve_configs/production.yaml").read_text())
    a800_only = kuberay_nodes(docs("kuberay/rayjob-train.yaml")[0]["spec"]["rayClusterSpec"])
    with pytest.raises(ConfigError, match="A10G"):  # the LLMServer asks for A10Gs
        place(serve_bundles(serve), a800_only)


def test_entrypoint_errors_name_the_problem():
    with pytest.raises(ConfigError, match="does not exist"):
        job_of("python /home/ray/ipl/jobs/nope.py --config x.yaml")
    with pytest.raises(ConfigError, match="expected `python jobs"):
        job_of("bash run.sh")
    with pytest.raises(ConfigError, match="rows"):
        job_of("python jobs/synth.py --config jobs/configs/synth_local.yaml rows=-3")


def test_launcher_validates_against_rays_schema_and_installs_the_gpu_extra():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((CLUSTER / "launcher" / "aws.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    assert any("[gpu]" in c for c in cfg["setup_commands"])
    types = cfg["available_node_types"]
    assert types["a10g_serving"]["resources"]["GPU"] == 8 and types["a100_training"]["max_workers"] == 3


def test_dockerfile_matches_the_pinned_ray_and_copies_what_exists():
    text = (CLUSTER / "Dockerfile").read_text()
    pin = re.search(r'"ray\[[^\]]*\]==([\d.]+)\.\*"', Path("pyproject.toml").read_text()).group(1)
    assert re.search(rf"rayproject/ray:{re.escape(pin)}\.\d+-py311-gpu", text)
    for src in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", text, re.M):
        for item in src.split():
            assert Path(item).exists(), item
    assert "-e '.[gpu]'" in text
    for f in CLUSTER.rglob("*.yaml"):  # every manifest runs the same image version
        for image in re.findall(r"image: (\S+)", f.read_text()):
            assert image == "registry.internal/ipl:0.1.0", (f, image)


def test_production_configs_share_one_run():
    from ipl.cli import stage_config
    from ipl.serve.stage import load_serve_config

    roots = {stage_config(s, f, []).run.dir for s, f in [
        ("prepare", "jobs/configs/prepare_cluster.yaml"), ("train", "jobs/configs/train_24gpu.yaml"),
        ("index", "jobs/configs/index_cluster.yaml"), ("eval", "jobs/configs/eval_cluster.yaml")]}
    roots.add(load_serve_config("serve_configs/production.yaml").run.dir)
    assert roots == {Path("/mnt/shared/ipl/runs/prod")}
    from ipl.eval.config import EvalConfig

    ev = load_config(EvalConfig, "jobs/configs/eval_cluster.yaml")
    assert ev.serve_config().vlm_dir == load_serve_config("serve_configs/production.yaml").vlm_dir


# -- GPU memory ---------------------------------------------------------------------------------------
def test_the_shipped_gpu_manifests_fit_and_print_their_memory_figures():
    for path, want in (("kuberay/rayservice.yaml", "ipl/llm: 8.29B params"), ("launcher/aws.yaml", "ipl/llm"),
                       ("kuberay/rayjob-train.yaml", "ZeRO-1 bf16"), ("launcher/aws.yaml", "ZeRO-2 bf16")):
        lines = check_documents(docs(path), path)
        assert any(want in line and "GiB per GPU" in line for line in lines), (path, lines)


def test_the_aws_launcher_with_16gb_v100s_serving_the_7b_is_refused_naming_the_group(tmp_path):
    launcher = copy.deepcopy(docs("launcher/aws.yaml")[0])
    group = launcher["available_node_types"].pop("a10g_serving")
    group["node_config"]["InstanceType"] = "p3.16xlarge"  # 8 x V100 16 GB, as the launcher first shipped
    group["resources"] = {"CPU": 60, "GPU": 8, "accelerator_type:V100": 1}
    launcher["available_node_types"]["v100_serving"] = group
    serve = yaml.safe_load(Path("serve_configs/production.yaml").read_text())
    args = serve["applications"][0]["args"]
    args["deployments"]["llm"]["accelerator_type"] = "V100"
    args["generate"]["dtype"] = "float16"
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve))
    with pytest.raises(ConfigError, match=r"llm replica .*18\.4 GiB on each GPU.* GPU memory too small in node "
                                          r"group\(s\) v100_serving"):
        check_documents([launcher], "aws-v100", tmp_path / "serve.yaml")
    # the same model split over two V100s (tensor parallelism) fits
    args["generate"]["tensor_parallel_size"] = 2
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve))
    assert any("(1/2 each)" in line for line in check_documents([launcher], "aws-v100", tmp_path / "serve.yaml"))


def test_the_cli_refuses_the_v100_copy(tmp_path):
    from ipl.cluster import main

    launcher = copy.deepcopy(docs("launcher/aws.yaml")[0])
    launcher["available_node_types"]["a10g_serving"]["resources"] = {"CPU": 60, "GPU": 8, "accelerator_type:V100": 1}
    serve = yaml.safe_load(Path("serve_configs/production.yaml").read_text())
    serve["applications"][0]["args"]["deployments"]["llm"]["accelerator_type"] = "V100"
    (tmp_path / "aws.yaml").write_text(yaml.safe_dump(launcher))
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve))
    assert main(["--serve", str(tmp_path / "serve.yaml"), str(tmp_path / "aws.yaml")]) == 1
    assert main([str(CLUSTER / "launcher" / "aws.yaml")]) == 0


def test_training_that_does_not_fit_a_gpu_is_refused_and_zero_2_is_the_way_out():
    from ipl.cli import stage_config
    from ipl.cluster import launcher_nodes
    from ipl.train.capacity import check_capacity

    nodes = [n.ray_node() for n in launcher_nodes(docs("launcher/aws.yaml")[0])]  # the p4d's A100 40 GB
    stage1 = stage_config("train", "jobs/configs/train_24gpu.yaml", ["scaling.accelerator_type=A100"])
    with pytest.raises(ConfigError, match=r"38\.7 GiB per GPU.*ZeRO stage 2"):
        check_capacity(stage1.scaling, nodes, memory=stage1.memory_need())
    stage2 = stage_config("train", "jobs/configs/train_24gpu.yaml",
                          ["scaling.accelerator_type=A100", "deepspeed.zero_optimization.stage=2"])
    assert check_capacity(stage2.scaling, nodes, memory=stage2.memory_need()) == [8, 8, 8]
    assert stage2.memory_need()["total_gib"] < 0.9 * 40 < stage1.memory_need()["total_gib"]


def test_every_shipped_manifest_prints_the_memory_of_its_gpu_models():
    for path in ("kuberay/raycluster.yaml", "kuberay/rayjob-index.yaml", "kuberay/rayjob-train.yaml",
                 "kuberay/rayservice.yaml", "launcher/aws.yaml"):
        lines = check_documents(docs(path), path)
        assert any("GiB per GPU" in line for line in lines), path
    lines = check_documents(docs("kuberay/raycluster.yaml"), "rc")
    for actor in ("prepare: extraction actor", "index: caption actor", "eval: generation actor"):
        assert any(f"memory {actor}: 8.29B" in line for line in lines), actor


def test_a_batch_model_actor_of_unknown_size_on_a_gpu_is_named():
    from ipl.cli import stage_config
    from ipl.cluster import job_bundles

    cfg = stage_config("eval", "jobs/configs/eval_cluster.yaml", ["serve.generate.params_b=null"])
    with pytest.raises(ConfigError, match=r"eval: generation actor: the model's size is unknown.*params_b"):
        job_bundles("eval", cfg)
