"""Collator: chat template + processor, the Eq. 1 loss mask, photos mixed with text-only rows."""
import json

import pytest
import torch

from ipl.generate.prompts import description_messages
from ipl.train.collate import IGNORE, Collator


def labelled_text(collator, batch, r):
    ids = batch["labels"][r]
    return collator.tokenizer.decode(ids[ids != IGNORE])


def test_only_the_answer_and_its_im_end_are_targets(tiny_vlm, make_row):
    c = Collator(tiny_vlm.processor)
    batch = c([make_row("Selling my Huawei P30, Blue, 128GB.")])
    assert labelled_text(c, batch, 0) == "Selling my Huawei P30, Blue, 128GB.<|im_end|>"
    # nothing of the system/user turns or the image placeholders is a target
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    image_id = tiny_vlm.model.config.image_token_id
    assert (labels[ids == image_id] == IGNORE).all()
    first_target = int((labels != IGNORE).nonzero()[0])
    assert (labels[:first_target] == IGNORE).all()
    assert c.tokenizer.decode(ids[:first_target]).endswith("<|im_start|>assistant\n")


def test_every_assistant_turn_counts_in_multi_turn_chats(tiny_vlm, make_row):
    c = Collator(tiny_vlm.processor)
    msgs = [{"role": "user", "content": "colour?"}, {"role": "assistant", "content": "Blue"},
            {"role": "user", "content": "storage?"}, {"role": "assistant", "content": "128GB"}]
    batch = c([{"id": "m", "messages": msgs, "photos": []}])
    assert labelled_text(c, batch, 0) == "Blue<|im_end|>128GB<|im_end|>"


def test_mixed_batch_with_and_without_photos(tiny_vlm, make_row):
    c = Collator(tiny_vlm.processor, max_photos=2)
    rows = [make_row("two photos here", 2, "a"), make_row("no photo at all", 0, "b"), make_row("one photo", 1, "c")]
    batch = c(rows)
    image_id = tiny_vlm.model.config.image_token_id
    per_row = (batch["input_ids"] == image_id).sum(1).tolist()
    assert per_row == [32, 0, 16]
    assert batch["image_grid_thw"].shape[0] == 3
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod(-1).sum())
    assert (batch["attention_mask"].sum(1) < batch["input_ids"].shape[1]).any()  # padded on the right
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    out = tiny_vlm.model(**batch)
    assert torch.isfinite(out.loss)


def test_text_only_batch_has_no_pixels(tiny_vlm, make_row):
    batch = Collator(tiny_vlm.processor)([make_row("just text", 0)])
    assert "pixel_values" not in batch and "image_grid_thw" not in batch
    assert torch.isfinite(tiny_vlm.model(**batch).loss)


def test_photos_beyond_max_photos_are_left_out_with_their_placeholders(tiny_vlm, make_row):
    batch = Collator(tiny_vlm.processor, max_photos=1)([make_row("three photos", 3)])
    assert int((batch["input_ids"] == tiny_vlm.model.config.image_token_id).sum()) == 16


def test_long_rows_lose_photos_first_then_are_cut_in_the_answer_and_counted(tiny_vlm, make_row):
    full = Collator(tiny_vlm.processor)([make_row("word " * 60, 1)])
    length = full["input_ids"].shape[1]
    c = Collator(tiny_vlm.processor, max_length=length - 20)
    cut = c([make_row("word " * 60, 1), make_row("short", 1)])
    assert cut["input_ids"].shape[1] == length - 20
    assert c.stats["truncated"] == 1
    # a cut inside the image tokens never happens: the photo goes first (photos_that_fit, the rule
    # serving and evaluation use), then the text is cut at the end
    tiny = Collator(tiny_vlm.processor, max_length=32)
    kept = tiny([make_row("word " * 60, 1), make_row("x", 0)])
    assert tiny.stats["photos_dropped_for_length"] == 1 and tiny.stats["dropped_too_long"] == 0
    assert kept["input_ids"].shape == (2, 32) and "pixel_values" not in kept
    assert int((kept["input_ids"] == tiny_vlm.model.config.image_token_id).sum()) == 0
    assert tiny.stats["truncated"] >= 1


def test_photos_without_placeholders_are_an_error_naming_the_row(tiny_vlm, make_row):
    bad = make_row("x", 2, "L1:desc")
    bad["messages"] = json.dumps(description_messages(1, "p", "en", "x"))
    with pytest.raises(ValueError, match="L1:desc"):
        Collator(tiny_vlm.processor, max_photos=3)([bad])
