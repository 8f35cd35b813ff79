"""A tiny VLM that writes: the session's untrained tiny Qwen2-VL writes newlines whatever it is
given; larger random weights make its greedy text depend on the prompt and the photo."""
from pathlib import Path


def lively_copy(model, processor, out: Path, scale: float = 0.08, seed: int = 0) -> Path:
    """Save a copy of ``model`` with N(0, scale) noise added to every matrix, with ``processor``."""
    import copy

    import torch

    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
