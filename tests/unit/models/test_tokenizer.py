"""Tokenizer: round trips (English, Chinese, full-width), special tokens, chat template, save/load."""
import pytest

from ipl.models.tokenizer import SPECIAL_TOKENS, special_token_ids, train_tokenizer


@pytest.mark.parametrize(
    "text",
    ["Personal used Huawei Mate 10 Pro 128GB, Blue. Contact me privately!",
     "自用华为Mate10pro 6+64G，蓝色，成色如图，有意私聊。",
     "call １３８ １２３４ ５６７８ or 😀 emoji",
     "  spaces\tand\nnewlines  "],
)
def test_round_trip(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_ids(tokenizer):
    ids = special_token_ids(tokenizer)
    assert len(set(ids.values())) == len(SPECIAL_TOKENS)
    for token, i in ids.items():
        assert tokenizer(token)["input_ids"] == [i]
    assert tokenizer.eos_token == "<|im_end|>"


def test_trained_merges_compress_domain_text(tokenizer):
    text = "Personal used condition as shown in the pictures"
    assert len(tokenizer(text)["input_ids"]) < len(text.encode()) / 2.5


def test_chat_template_chatml_with_vision_tokens(tokenizer):
    msgs = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]},
        {"role": "assistant", "content": "Selling my Huawei."},
    ]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe it.<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\nSelling my Huawei.<|im_end|>\n")
    prompt = tokenizer.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_save_and_load(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "自用 Apple iPhone 11 128GB <|im_end|>"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.chat_template == tokenizer.chat_template


def test_prompt_vocabulary_keeps_chat_prompts_short(small_rows):
    from ipl.generate.prompts import description_prompt
    from ipl.synth.vocab import prompt_corpus
    from ipl.synth.catalogue import Catalogue

    texts = [r["description"] for r in small_rows]
    plain = train_tokenizer(texts, vocab_size=2000)
    tuned = train_tokenizer(texts + list(prompt_corpus(Catalogue.build())), vocab_size=2000)
    header = "<|im_start|>assistant\n"
    assert len(tuned.encode(header)) == 3 < len(plain.encode(header))
    prompt = description_prompt("phone", ["Brand", "Model", "Storage"], {"Brand": "Huawei"})
    assert len(tuned.encode(prompt)) < 0.7 * len(plain.encode(prompt))
