"""The transformers backend's dynamic batching with the real tiny Qwen2-VL: concurrent requests
share forward passes, each row streams, stops and is guarded on its own, and a row's text is
the text it gets alone (greedy)."""
import asyncio
import threading

import numpy as np
import pytest

from ipl.generate.prompts import description_messages
from ipl.serve.config import GenerateConfig
from ipl.serve.generator import TransformersBackend


def photo(seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


async def collect(backend, prompt, seed, max_new, cancel=None, blocked=(), cancel_after=None):
    cancel = cancel or threading.Event()
    texts, final = [], None
    async for item in backend.stream(description_messages(1, prompt), [photo(seed)], max_new, cancel, blocked):
        if "text" in item:
            texts.append(item["text"])
            if cancel_after is not None and len(texts) >= cancel_after:
                cancel.set()
        else:
            final = item
    return texts, final


@pytest.fixture(scope="module")
def lively_vlm(tiny_vlm, tmp_path_factory):
    """The tiny Qwen2-VL with larger random weights: its greedy text then depends on the prompt and
    the photo (the freshly initialised one writes newlines whatever it is given)."""
    from lively import lively_copy

    return lively_copy(tiny_vlm.model, tiny_vlm.processor, tmp_path_factory.mktemp("lively-vlm"))


@pytest.fixture(scope="module")
def backends(lively_vlm):
    solo = TransformersBackend(lively_vlm, GenerateConfig(max_batch=1))
    batched = TransformersBackend(lively_vlm, GenerateConfig(max_batch=8, batch_wait_ms=200))
    return solo, batched


PROMPTS = ["Write a short listing for my phone.", "Describe this bag.", "My old camera, please describe it.",
           "Selling these shoes, write it up."]


def test_concurrent_requests_share_batches_and_each_gets_its_own_text(backends):
    solo, batched = backends
    alone = [asyncio.run(collect(solo, p, i, 12)) for i, p in enumerate(PROMPTS)]

    async def together():
        return await asyncio.gather(*[collect(batched, p, i, 12 if i % 2 else 7) for i, p in enumerate(PROMPTS)])

    before = dict(batched.batches)
    joint = asyncio.run(together())
    assert batched.batches["batches"] - before["batches"] < len(PROMPTS)  # they shared forward passes
    assert batched.batches["max_rows"] >= 2
    assert len({"".join(t) for t, _ in alone}) >= 3, alone  # the rows really differ
    for i, ((texts, final), (solo_texts, solo_final)) in enumerate(zip(joint, alone)):
        assert final["prompt_tokens"] == solo_final["prompt_tokens"] > 10  # padding is not counted
        assert 1 <= final["tokens"] <= (12 if i % 2 else 7)  # each row's own limit
        if i % 2:  # same limit as alone: the same greedy text, streamed in pieces
            assert "".join(texts) == "".join(solo_texts), i
        else:
            assert "".join(solo_texts).startswith("".join(texts)) or final["finish_reason"] == "stop"


def test_a_cancelled_row_stops_while_the_others_finish(backends):
    _, batched = backends

    async def together():
        stopper = threading.Event()
        return await asyncio.gather(collect(batched, PROMPTS[0], 0, 40, stopper, cancel_after=1),
                                    collect(batched, PROMPTS[1], 1, 40))

    (cut_texts, cut), (full_texts, full) = asyncio.run(together())
    assert cut["finish_reason"] == "cancelled" and cut["tokens"] < 40
    assert full["finish_reason"] in ("stop", "length") and full["tokens"] >= cut["tokens"]


def test_each_row_has_its_own_guard(backends):
    import re

    solo, batched = backends
    free = "".join(asyncio.run(collect(solo, PROMPTS[0], 0, 16))[0])
    words = re.findall(r"[A-Za-z]{3,}", free)
    if not words:
        pytest.skip(f"the tiny model wrote no word to block: {free!r}")

    async def together():
        return await asyncio.gather(collect(batched, PROMPTS[0], 0, 16, blocked=[words[0]]),
                                    collect(batched, PROMPTS[0], 0, 16))

    (guarded, _), (unguarded, _) = asyncio.run(together())
    assert words[0] not in "".join(guarded)
    assert "".join(unguarded) == free  # the other row of the same batch is not guarded
    # a guarded leading word ([word], ipl.generate.guard): banned as written
    exact, _ = asyncio.run(collect(batched, PROMPTS[0], 0, 16, blocked=[[words[0]]]))
    assert not re.search(rf"(?<![A-Za-z]){words[0]}(?![A-Za-z])", "".join(exact)), (words[0], free, exact)


def test_ignore_eos_decodes_past_the_end_of_text(tiny_vlm, tmp_path):
    """A model whose greedy first token is its end of text: it stops at once, unless
    ``generate.ignore_eos`` holds the end back (then every row runs to its own limit)."""
    import copy

    import torch

    model = copy.deepcopy(tiny_vlm.model)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # every logit 0: greedy picks token 0
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [0] + list(eos if isinstance(eos, (list, tuple)) else [eos])
    model.save_pretrained(tmp_path)
    tiny_vlm.processor.save_pretrained(tmp_path)
    ends = TransformersBackend(tmp_path, GenerateConfig(max_batch=2))
    _, final = asyncio.run(collect(ends, PROMPTS[0], 0, 9))
    assert final["finish_reason"] == "stop" and final["tokens"] == 1
    runs_on = TransformersBackend(tmp_path, GenerateConfig(max_batch=2, batch_wait_ms=200, ignore_eos=True))

    async def together():
        return await asyncio.gather(collect(runs_on, PROMPTS[0], 0, 9), collect(runs_on, PROMPTS[1], 1, 5))

    (_, long), (_, short) = asyncio.run(together())
    assert (long["finish_reason"], long["tokens"]) == ("length", 9)
    assert (short["finish_reason"], short["tokens"]) == ("length", 5)
