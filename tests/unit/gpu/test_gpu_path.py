"""The production GPU path on a real GPU (marked `gpu`: collected everywhere, skipped without CUDA).

Run on a GPU machine with `scripts/gpu_check.sh` (it installs the small wheels it is given and
skips, saying so, what cannot run there, e.g. without Ray, DeepSpeed or FAISS's GPU build)."""
import importlib.util

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed here")


def test_the_device_helper_places_models_on_the_gpu_it_was_given():
    from ipl.devices import placement_device, resolve_dtype, supports_bf16

    assert placement_device("auto") == "cuda" and placement_device("auto", num_gpus=0) == "cpu"
    assert placement_device("cuda") == "cuda"
    assert resolve_dtype("auto", "cuda") == ("bfloat16" if supports_bf16("cuda") else "float16")
    assert resolve_dtype("auto", "cpu") == "float32"


@needs("open_clip")
def test_clip_embedding_actor_loads_on_cuda_and_returns_cpu_vectors(tiny_clip):
    import io

    import pyarrow as pa
    from PIL import Image

    from ipl.index.embed import ListingEmbedder

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="JPEG")
    emb = ListingEmbedder(tiny_clip.source, num_gpus=1)  # what the index job's GPU actors get
    assert emb.clip.device.type == "cuda"
    out = emb(pa.table({"photos": [[buf.getvalue()]]}))
    assert out.column("embed_error").to_pylist() == [None]
    v = np.asarray(out.column("embedding").to_pylist()[0])
    assert np.isfinite(v).all() and abs(np.linalg.norm(v) - 1) < 1e-3


def _load(tiny_vlm, dtype):
    from ipl.models.vlm import load_vlm

    return load_vlm(tiny_vlm.path, dtype=dtype, device="cuda")


@pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="no bf16 on this GPU")
def test_the_tiny_vlm_generates_in_bf16_with_finite_logits(tiny_vlm):
    from ipl.devices import probe_vlm
    from ipl.generate.local import generate_batch
    from ipl.generate.prompts import description_messages

    vlm = _load(tiny_vlm, torch.bfloat16)
    assert vlm.model.device.type == "cuda" and vlm.model.dtype == torch.bfloat16
    probe_vlm(vlm, "bfloat16")
    from PIL import Image

    texts = generate_batch(vlm, [(description_messages(1, "Describe.", "en"), [Image.new("RGB", (112, 112))])], 8)
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_the_tiny_vlm_in_fp16_passes_or_fails_the_probe_clearly(tiny_vlm):
    from ipl.devices import PrecisionError, probe_vlm

    vlm = _load(tiny_vlm, torch.float16)
    try:
        probe_vlm(vlm, "float16")  # finite logits: fp16 may serve
    except PrecisionError as exc:
        assert "bfloat16" in str(exc)  # the refusal names the alternative
    broken = _load(tiny_vlm, torch.float16)
    with torch.no_grad():
        next(broken.model.parameters()).fill_(float("inf"))
    with pytest.raises(PrecisionError, match="not finite"):
        probe_vlm(broken, "float16")


def test_the_serving_backend_runs_on_the_replicas_gpu(tiny_vlm):
    import asyncio
    import threading

    from PIL import Image

    from ipl.generate.prompts import description_messages
    from ipl.serve.config import GenerateConfig
    from ipl.serve.generator import TransformersBackend

    backend = TransformersBackend(tiny_vlm.path, GenerateConfig(max_new_tokens=8))
    assert backend.vlm.model.device.type == "cuda" and backend.dtype in ("bfloat16", "float16")

    async def run():
        items = []
        async for item in backend.stream(description_messages(1, "Describe.", "en"), [Image.new("RGB", (112, 112))],
                                         8, threading.Event()):
            items.append(item)
        return items

    items = asyncio.run(run())
    assert "finish_reason" in items[-1] and items[-1]["tokens"] <= 8


@needs("deepspeed")
def test_one_deepspeed_zero_step_on_one_gpu(tiny_vlm, monkeypatch):
    import deepspeed

    from ipl.train.collate import Collator
    from rows import instruction_row  # tests/helpers is on sys.path

    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "29517"}.items():
        monkeypatch.setenv(k, v)
    vlm = _load(tiny_vlm, torch.float32)
    bf16 = torch.cuda.is_bf16_supported()
    config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "train_batch_size": 2,
              "zero_optimization": {"stage": 1}, "bf16": {"enabled": bf16}, "fp16": {"enabled": not bf16},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}
    engine, *_ = deepspeed.initialize(model=vlm.model, model_parameters=vlm.model.parameters(), config=config)
    batch = Collator(vlm.processor, max_length=256, max_photos=1)([instruction_row("a phone", 1),
                                                                   instruction_row("a watch", 1, "r2")])
    dtype = torch.bfloat16 if bf16 else torch.float16
    inputs = {k: (v.to("cuda", dtype) if k == "pixel_values" else v.to("cuda")) for k, v in batch.items()}
    loss = engine(**inputs).loss
    engine.backward(loss)
    engine.step()
    assert torch.isfinite(loss).item()


@needs("faiss")
def test_faiss_trains_and_searches_on_the_gpu_when_the_gpu_build_is_installed():
    import faiss

    from ipl.index.faiss_index import faiss_gpus, normalize, search_copy, train_index

    if faiss_gpus() == 0:
        pytest.skip("faiss is the CPU build here (install faiss-gpu-cu12, the gpu extra)")
    rng = np.random.default_rng(0)
    x = normalize(rng.standard_normal((4000, 64)).astype(np.float32))
    index = faiss.index_factory(64, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    assert train_index(index, x) == "cuda"
    index.add(x)
    index.nprobe = 64
    gpu, where = search_copy(index)
    assert where.startswith("cuda")
    _, cpu_ids = index.search(x[:50], 1)
    _, gpu_ids = gpu.search(x[:50], 1)
    assert (cpu_ids[:, 0] == np.arange(50)).all() and (gpu_ids[:, 0] == cpu_ids[:, 0]).all()
