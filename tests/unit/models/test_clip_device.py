"""The encoder path on the model's device: inputs are built where the model is and results come back
on the CPU (a GPU run of the index job and the Serve deployments needs both). The CUDA half runs on
a GPU machine (`gpu` marker); the CPU half everywhere."""
import numpy as np
import pytest
import torch
from PIL import Image

from ipl.models.clip import load_clip


def images(n):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


def test_embeddings_come_back_on_the_cpu_as_numpy_ready_tensors(tiny_clip):
    assert tiny_clip.device.type == "cpu"
    e, t = tiny_clip.encode_images(images(2)), tiny_clip.encode_texts(["a phone"])
    assert e.device.type == "cpu" and t.device.type == "cpu" and e.numpy().shape == (2, tiny_clip.dim)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_encoder_runs_on_the_gpu_and_returns_cpu_arrays(tiny_clip):
    import pyarrow as pa

    from ipl.index.embed import ListingEmbedder
    from ipl.models.clip_train import ContrastiveData, contrastive_train

    gpu = load_clip(tiny_clip.source, device="cuda")
    assert gpu.device.type == "cuda"
    cpu = load_clip(tiny_clip.source)
    e = gpu.encode_images(images(3))
    assert e.device.type == "cpu" and torch.allclose(e, cpu.encode_images(images(3)), atol=1e-3)
    assert gpu.encode_texts(["a phone"]).device.type == "cpu"
    import io

    buf = io.BytesIO()
    images(1)[0].save(buf, format="JPEG")
    out = ListingEmbedder(tiny_clip.source, device="cuda")(pa.table({"photos": [[buf.getvalue()]]}))
    assert out.column("embed_error").to_pylist() == [None]
    data = ContrastiveData(torch.stack([gpu.preprocess(im) for im in images(4)]), gpu.tokenizer(["a"] * 4),
                           torch.tensor([0, 0, 1, 1]))
    losses = contrastive_train(gpu.model, data, steps=2, batch_size=4, log_every=0)  # CPU batches, CUDA model
    assert len(losses) == 2 and all(np.isfinite(losses))
