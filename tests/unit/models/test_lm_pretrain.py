"""Generic copy pretraining of the tiny VLM: the conversations, the loss mask, that it learns."""
import json
import random
import re

import pytest
import torch

from ipl.models.lm_pretrain import CopyBatches, Vocabulary, copy_recall, copy_sample, pretrain_copy
from ipl.models.vlm import vision_parameters


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return Vocabulary.build()


def test_vocabulary_spans_the_whole_catalogue(vocab):
    from ipl.synth.catalogue import Catalogue

    cat = Catalogue.build(brands_per_category=99, models_per_brand=99)
    brands = {b.en for c in cat.categories.values() for b, _ in c.brands}
    assert brands <= set(vocab.values["en"])
    assert "Brand" in vocab.keys["en"] and cat.key_name("Brand", "zh") in vocab.keys["zh"]


def test_sample_answer_restates_the_reference_in_order(vocab):
    rng = random.Random(0)
    for _ in range(200):
        messages, values = copy_sample(vocab, rng)
        user, answer = messages[0]["content"], messages[1]["content"]
        facts = json.loads(re.search(r"<reference>(.*)</reference>", user).group(1))
        assert list(facts.values()) == values and 2 <= len(values) <= 4
        at = 0
        for v in values:  # each value after the one before it (str.index raises otherwise)
            at = answer.index(v, at) + len(v)


def test_batches_count_only_the_answer(tokenizer, vocab):
    batches = CopyBatches(tokenizer, vocab, seed=1)
    batch = batches(4)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rng = random.Random(1)
    for i in range(4):
        messages, _ = copy_sample(vocab, rng)
        kept = batch["labels"][i][batch["labels"][i] != -100]
        assert tokenizer.decode(kept) == messages[1]["content"] + "<|im_end|>"
        assert int(kept[-1]) == im_end
        n = int(batch["attention_mask"][i].sum())
        assert (batch["labels"][i][n:] == -100).all()  # padding
        assert (batch["input_ids"][i][:n][batch["labels"][i][:n] != -100] == kept).all()


def test_pretraining_lowers_the_loss_and_leaves_the_vision_tower(tokenizer, tmp_path):
    from ipl.models.config import TinyVLMConfig
    from ipl.models.vlm import build_tiny_vlm

    vlm = build_tiny_vlm(tokenizer, TinyVLMConfig(hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                                                  vision_embed_dim=32, vision_num_heads=2), tmp_path)
    frozen = [p.detach().clone() for p in vision_parameters(vlm.model)]
    calls = []
    out = pretrain_copy(vlm.model, tokenizer, steps=60, batch_size=8, lr=3e-3, eval_rows=4,
                        on_step=lambda: calls.append(1))  # ipl.models.tiny takes more threads through it
    assert len(calls) == 60
    assert out["steps"] == 60 and out["loss_last"] < 0.8 * out["loss_first"]  # 6.7 -> 4.6 here; flat if nothing learns
    assert 0.0 <= out["copy_recall_after"] <= 1.0
    assert all(torch.equal(a, b) for a, b in zip(frozen, vision_parameters(vlm.model)))


def test_copy_recall_counts_stated_values(tokenizer, vocab):
    class Echo(torch.nn.Module):
        """Answers with the reference's values: a perfect copier (recall 1)."""

        def __init__(self):
            super().__init__()
            self.training = False

        def generate(self, input_ids, attention_mask, max_new_tokens, do_sample):
            text = tokenizer.decode(input_ids[0])
            facts = json.loads(re.search(r"<reference>(.*)</reference>", text).group(1))
            answer = tokenizer.encode(", ".join(facts.values()), add_special_tokens=False)
            return torch.cat([input_ids, torch.tensor([answer])], dim=1)

    assert copy_recall(Echo(), tokenizer, vocab, rows=5) == 1.0
