"""The Serve application's config: both shipped YAMLs validate, errors name the key, options map to Serve."""
import pytest

from ipl.config import ConfigError
from ipl.serve.config import DeploymentOptions, ServeConfig
from ipl.serve.errors import CODES, ApiError
from ipl.serve.stage import load_serve_config, multipart


def test_shipped_serve_yamls_validate():
    local = load_serve_config("serve_configs/local.yaml")
    assert local.http.port == 8000 and local.generate.backend == "transformers"
    assert local.deployments.generator.autoscaling["max_replicas"] == 2
    prod = load_serve_config("serve_configs/production.yaml")
    assert prod.generate.backend == "serve_llm" and prod.extract.llm.backend == "serve_llm"
    assert prod.generate.dtype == "auto"  # bf16 on the A10Gs: no fp16 overflow to guard against
    gen = prod.deployments.generator.serve_options("Generator")
    assert gen["ray_actor_options"] == {"num_cpus": 2}  # prompt, guard and stream: the GPU is the LLMServer's
    assert prod.deployments.llm.accelerator_type == "A10G" and prod.deployments.llm.num_gpus == 0
    assert 0 < prod.deployments.perception.num_gpus < 1 and "num_replicas" not in gen
    assert prod.http.host == "0.0.0.0"


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="generate.max_tokens: unknown key"):
        load_serve_config("serve_configs/local.yaml", ["generate.max_tokens=3"])
    with pytest.raises(ConfigError, match="safety.formats"):
        load_serve_config(None, ["safety.formats=[jpeg,heic]"])
    with pytest.raises(ValueError, match="num_replicas or autoscaling"):
        DeploymentOptions(num_replicas=2, autoscaling={"min_replicas": 1})


def test_serve_options_and_overrides():
    opts = DeploymentOptions(max_ongoing_requests=3, max_queued_requests=5, num_cpus=0.5).serve_options("X")
    assert opts == {"name": "X", "max_ongoing_requests": 3, "max_queued_requests": 5,
                    "ray_actor_options": {"num_cpus": 0.5}, "num_replicas": 1}
    cfg = load_serve_config("serve_configs/local.yaml", ["run.name=x", "http.port=8123"])
    assert cfg.http.port == 8123 and cfg.run.name == "x"


def test_missing_artifacts_name_the_command_that_makes_them(tmp_path):
    cfg = ServeConfig(run={"root": str(tmp_path), "name": "none"}, extract={"backend": "llm"})
    problems = " ".join(cfg.check_artifacts())
    for fragment in ("ipl train", "ipl index", "ipl prepare", "extract.llm.backend"):
        assert fragment in problems
    from ipl.serve.app import build

    with pytest.raises(ConfigError, match="cannot serve"):
        build(cfg)


def test_error_codes_have_client_or_server_statuses():
    assert all(400 <= s < 600 for s in CODES.values())
    err = ApiError("overloaded", "busy", retry_after=2)
    assert err.status == 503 and err.body() == {"error": {"code": "overloaded", "message": "busy"}}
    with pytest.raises(ValueError):
        ApiError("no_such_code", "x")
    import pickle

    assert pickle.loads(pickle.dumps(err)).retry_after == 2


def test_multipart_helper_builds_a_parsable_body():
    body, ctype = multipart({"stream": "true"}, [b"\xff\xd8\xffabc"])
    assert ctype.startswith("multipart/form-data; boundary=") and b'name="photos"' in body and b"stream" in body


def test_each_deployment_is_versioned_by_what_it_reads():
    base = load_serve_config("serve_configs/local.yaml")
    planted = load_serve_config("serve_configs/local.yaml", ["models.vlm=/x/vlm", "generate.max_new_tokens=7"])
    assert planted.scoped("SafetyGate") == base.scoped("SafetyGate")
    assert planted.scoped("Perception") == base.scoped("Perception")
    assert planted.scoped("AttributeExtractor") == base.scoped("AttributeExtractor")  # offline: no VLM
    assert planted.scoped("Generator") != base.scoped("Generator")
    llm = load_serve_config("serve_configs/local.yaml", ["extract.backend=llm", "extract.llm.backend=transformers"])
    assert llm.scoped("AttributeExtractor").vlm_dir == llm.vlm_dir
    stricter = load_serve_config("serve_configs/local.yaml", ["safety.max_photos=2"])
    assert stricter.scoped("Generator") == base.scoped("Generator")
    assert stricter.scoped("SafetyGate").safety.max_photos == 2


def test_merged_and_removed_keys_say_what_to_do_instead():
    with pytest.raises(ConfigError, match="merged into deployments.perception"):
        load_serve_config(None, ["deployments.retriever.num_replicas=2"])
    with pytest.raises(ConfigError, match="pipeline.concurrent is gone"):
        load_serve_config(None, ["pipeline.concurrent=true"])
    with pytest.raises(ConfigError, match="sized by the model's image policy"):
        load_serve_config(None, ["generate.image_side=640"])


def test_serve_logging_follows_the_config_and_verbose_brings_it_back(monkeypatch):
    import logging

    from ipl.serve.stage import serve_logging

    monkeypatch.delenv("IPL_VERBOSE", raising=False)
    quiet = ServeConfig(logs={"level": "WARNING", "access_log": False})
    logs = serve_logging(quiet)
    assert (logs.log_level, logs.enable_access_log) == ("WARNING", False)
    assert logging.getLogger("ray.serve").level == logging.WARNING
    assert (serve_logging(ServeConfig()).log_level, serve_logging(ServeConfig()).enable_access_log) == ("INFO", True)
    monkeypatch.setenv("IPL_VERBOSE", "1")
    logs = serve_logging(quiet)
    assert (logs.log_level, logs.enable_access_log) == ("INFO", True)
    with pytest.raises(Exception, match="level"):
        ServeConfig(logs={"level": "LOUD"})
