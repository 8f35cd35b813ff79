"""Every rank must produce gradients for the same parameters, photos or not."""
import torch
from PIL import Image

from ipl.models.vlm import load_vlm
from ipl.train.collate import Collator
from ipl.train.loop import vision_touch
from ipl.train.optim import freeze_vision


def test_text_only_batches_still_give_the_merger_a_zero_gradient(tiny_vlm, make_row):
    vlm = load_vlm(tiny_vlm.path)
    model = vlm.model
    freeze_vision(model)
    model.train()
    batch = Collator(vlm.processor)([make_row("no photo", 0)])
    merger = [p for n, p in model.named_parameters() if "merger" in n]
    model(**batch).loss.backward()
    assert all(p.grad is None for p in merger)  # what makes DeepSpeed's reductions diverge between ranks
    model.zero_grad(set_to_none=True)
    dummy = vlm.processor.image_processor(images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    touch = vision_touch(model, dummy)
    assert float(touch.detach()) == 0.0
    loss = model(**batch).loss + touch
    loss.backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in merger)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_cpu_workers_skip_deepspeeds_shm_comm_op():
    """DeepSpeed's CPU backend would JIT-compile its shared-memory all-reduce (about 30 s on a fresh
    2-core machine) although training never uses it: the worker marks it incompatible first."""
    from deepspeed.comm.torch import build_shm_op

    from ipl.train.loop import skip_shm_comm_op

    skip_shm_comm_op()
    assert build_shm_op() is None
