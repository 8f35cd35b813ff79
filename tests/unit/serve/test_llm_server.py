"""generate.backend=serve_llm: the LLMConfig Ray Serve LLM is given, validated by Ray's own class on
a machine without vLLM or a GPU, and the OpenAI wire format both ways."""
import base64
import io

import pytest
from PIL import Image

from ipl.serve.llm_server import chat_messages, chat_request, llm_config, llm_config_dict, read_stream_chunk
from ipl.serve.stage import load_serve_config


def test_the_production_config_is_a_valid_ray_serve_llm_config():
    cfg = load_serve_config("serve_configs/production.yaml")
    llm = llm_config(cfg)  # Ray's LLMConfig validates it
    assert type(llm).__name__ == "LLMConfig" and type(llm).__module__.startswith("ray.")
    assert llm.model_id == "ipl-vlm" and llm.accelerator_type == "A10G"
    e = llm.engine_kwargs
    assert e["dtype"] == "auto" and e["tensor_parallel_size"] == 1 and e["max_model_len"] == 4096
    assert e["gpu_memory_utilization"] == 0.9 and e["limit_mm_per_prompt"]["image"] >= 1
    assert e["mm_processor_kwargs"]["max_pixels"] >= e["mm_processor_kwargs"]["min_pixels"]
    assert llm.deployment_config["autoscaling_config"]["max_replicas"] == 16
    assert llm.model_loading_config.model_source == str(cfg.vlm_dir)


def test_ray_refuses_what_it_cannot_serve():
    cfg = load_serve_config("serve_configs/production.yaml", ["deployments.llm.accelerator_type=V1000"])
    with pytest.raises(ValueError, match="Unsupported accelerator type"):
        llm_config(cfg)
    bad = load_serve_config("serve_configs/production.yaml", ["deployments.llm.max_ongoing_requests=1"])
    d = llm_config_dict(bad)
    d["deployment_config"]["autoscaling_config"] = {"min_replicas": 4, "max_replicas": 2}
    from ipl.serve.llm_server import llm_config_class

    with pytest.raises(ValueError, match="deployment config"):
        llm_config_class()(**d)


def test_the_image_policy_of_the_model_reaches_the_engine(tiny_vlm, tmp_path):
    import shutil

    from ipl.config import ImagePolicy
    from ipl.models.vlm import save_image_policy

    vlm = tmp_path / "vlm"
    shutil.copytree(tiny_vlm.path, vlm)
    save_image_policy(vlm, ImagePolicy(min_pixels=3136, max_pixels=50176, max_photos=3))
    cfg = load_serve_config("serve_configs/production.yaml", [f"models.vlm={vlm}"])
    e = llm_config_dict(cfg)["engine_kwargs"]
    assert e["limit_mm_per_prompt"] == {"image": 3}
    assert e["mm_processor_kwargs"] == {"min_pixels": 3136, "max_pixels": 50176}


def test_serve_llm_settings_are_checked_up_front():
    from ipl.config import ConfigError

    with pytest.raises(ConfigError, match="now serve_llm"):
        load_serve_config(None, ["generate.backend=vllm"])
    with pytest.raises(ConfigError, match="synchronous LLM from request threads"):
        load_serve_config(None, ["extract.backend=llm", "extract.llm.backend=vllm"])
    with pytest.raises(ConfigError, match="asks the LLMServer of generate.backend=serve_llm"):
        load_serve_config(None, ["extract.backend=llm", "extract.llm.backend=serve_llm"])
    with pytest.raises(ConfigError, match="leave it 0"):
        load_serve_config("serve_configs/production.yaml", ["deployments.llm.num_gpus=1"])


def test_messages_carry_the_photos_as_data_urls_in_order():
    red, blue = Image.new("RGB", (56, 28), (255, 0, 0)), Image.new("RGB", (28, 56), (0, 0, 255))
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "hi"}]}]
    out = chat_messages(messages, [red, blue])
    assert out[0] == {"role": "system", "content": "be brief"}
    parts = out[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"] and parts[2]["text"] == "hi"
    sizes = []
    for p in parts[:2]:
        head, data = p["image_url"]["url"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        sizes.append(Image.open(io.BytesIO(base64.b64decode(data))).size)
    assert sizes == [(56, 28), (28, 56)]
    with pytest.raises(ValueError, match="more photos"):
        chat_messages(messages, [red, blue, red])
    with pytest.raises(ValueError, match="more image placeholders"):
        chat_messages(messages, [red])


def test_a_request_is_greedy_and_carries_the_guard():
    body = chat_request("ipl-vlm", [{"role": "user", "content": "x"}], [], 64, True, ["Samsung", "red"])
    assert body["temperature"] == 0.0 and body["max_tokens"] == 64 and body["stream"]
    assert body["bad_words"] == ["Samsung", "red"] and body["stream_options"] == {"include_usage": True}
    # a guarded leading word ([word]: as written only) goes to vLLM as the word, which it bans as written
    assert chat_request("ipl-vlm", [], [], 8, True, ["Samsung", ["Michael"]])["bad_words"] == ["Samsung", "Michael"]
    one = chat_request("ipl-vlm", [{"role": "user", "content": "x"}], [], 1, False, allowed_token_ids=[5, 3],
                       top_logprobs=2)
    assert one["allowed_token_ids"] == [5, 3] and one["logprobs"] and one["top_logprobs"] == 2
    assert "bad_words" not in one and "stream_options" not in one and "ignore_eos" not in one
    assert chat_request("ipl-vlm", [], [], 8, ignore_eos=True)["ignore_eos"] is True


def test_the_llm_servers_stream_is_read_back():
    batch = ['data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n\n',
             'data: {"choices": [{"delta": {"content": "Selling my "}}]}\n\n'
             'data: {"choices": [{"delta": {"content": "phone."}, "finish_reason": "stop"}]}\n\n',
             'data: {"choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 4}}\n\n',
             "data: [DONE]\n\n"]
    items = read_stream_chunk(batch)
    assert [i["text"] for i in items if "text" in i] == ["Selling my ", "phone."]
    assert {"finish_reason": "stop"} in items and {"usage": {"tokens": 4, "prompt_tokens": 120}} in items
    assert read_stream_chunk({"object": "error", "message": "engine dead", "code": 500}) == [{"error": "engine dead"}]
    assert read_stream_chunk('data: {"error": {"message": "too long"}}\n\n') == [{"error": "too long"}]
