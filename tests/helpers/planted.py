"""A VLM with a planted unsafe output: a copy of a tiny checkpoint fine-tuned until it answers
every description prompt with ``answer`` (a real model and real generation, for the halt test)."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from ipl.generate.prompts import description_messages, description_prompt
from ipl.models.vlm import load_vlm
from ipl.train.collate import Collator


def _photo(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    rgb = tuple(int(x) for x in torch.randint(0, 255, (3,), generator=g))
    out = io.BytesIO()
    Image.new("RGB", (96, 96), rgb).save(out, format="JPEG")
    return out.getvalue()


def plant_output(src: Path, out: Path, answer: str, categories: list[str], steps: int = 120, lr: float = 3e-3) -> Path:
    torch.manual_seed(0)
    vlm = load_vlm(src)
    collate = Collator(vlm.processor, max_length=1024, max_photos=1)
    prompts = [description_prompt(None, None, None)] + [description_prompt(c, ["Brand", "Model", "Color"]) for c in
                                                        categories]
    opt = torch.optim.AdamW(vlm.model.parameters(), lr=lr)
    vlm.model.train()
    for step in range(steps):
        rows = [{"messages": description_messages(1, prompts[(step + k) % len(prompts)], "en", answer=answer),
                 "photos": [_photo(step * 2 + k)]} for k in range(2)]
        loss = vlm.model(**collate(rows)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    vlm.model.eval()
    vlm.model.save_pretrained(out)
    vlm.processor.save_pretrained(out)
    return out
