"""BLEU, ROUGE, SIM and the tokenisation, against small cases computed by hand."""
import math

import pytest

from ipl.eval.metrics import Similarity, bleu, rouge, text_scores, tokenize

HYP, REF = "the cat sat on the mat", "the cat is on the mat"


def test_bleu_by_hand():
    # unigrams: 5 of 6 hypothesis words are in the reference; bigrams: "the cat", "on the", "the mat" of 5;
    # trigrams: "on the mat" of 4; 4-grams: none of 3. Same length: no brevity penalty.
    b = bleu([HYP], [REF])
    assert b["bleu1"] == pytest.approx(5 / 6)
    assert b["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert b["bleu3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    # sacrebleu's default "exp" smoothing: the first zero precision counts as 1 / (2 x its total)
    assert b["bleu4"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 1 / (2 * 3)) ** (1 / 4))


def test_bleu_brevity_penalty():
    # "the cat" against a 6-word reference: all unigrams match, BP = exp(1 - 6/2)
    assert bleu(["the cat"], [REF])["bleu1"] == pytest.approx(math.exp(1 - 6 / 2))


def test_bleu_is_character_level_for_chinese():
    assert bleu(["这个手机很好"], ["这个手机很好"])["bleu4"] == pytest.approx(1.0)
    rev = bleu(["好很机手个这"], ["这个手机很好"])  # same characters, no bigram in order
    assert rev["bleu1"] == pytest.approx(1.0)
    assert rev["bleu2"] == pytest.approx(math.sqrt(1 * 1 / (2 * 5)))  # no bigram matches: smoothed 1/(2x5)


def test_rouge_by_hand():
    r = rouge([HYP], [REF])
    assert r["rouge1"] == pytest.approx(5 / 6)      # 5 shared unigrams, P = R = 5/6
    assert r["rouge2"] == pytest.approx(3 / 5)      # 3 shared bigrams of 5 each
    assert r["rougeL"] == pytest.approx(5 / 6)      # LCS "the cat on the mat"


def test_rouge_counts_chinese_characters():
    # rouge-score's own tokenizer drops CJK entirely (every score would be 0)
    r = rouge(["这个手机很好"], ["这个手机不错"])
    assert r["rouge1"] == pytest.approx(4 / 6)
    assert r["rouge2"] == pytest.approx(3 / 5)


def test_rouge_averages_over_pairs():
    r = rouge([HYP, "completely different words"], [REF, "nothing shared here"])
    assert r["rouge1"] == pytest.approx((5 / 6 + 0) / 2)


def test_tokenize_mixed_text():
    assert tokenize("自用iPhone 13，64GB！Barely-used.") == ["自", "用", "iphone", "13", "64gb", "barely", "used"]
    assert tokenize("ＡＢＣ") == ["abc"]  # full-width folded by NFKC


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])


@pytest.fixture(scope="module")
def sim():
    return Similarity()


def test_sim_orders_paraphrase_above_unrelated(sim):
    same, para, other = sim.pairwise(
        ["selling my blue iPhone 13, 128GB", "selling my blue iPhone 13, 128GB", "selling my blue iPhone 13, 128GB"],
        ["selling my blue iPhone 13, 128GB", "blue iPhone 13 with 128 GB storage for sale", "a wooden garden chair"])
    assert same == pytest.approx(1.0, abs=1e-4)
    assert para > 0.6 > 0.3 > other


def test_sim_encodes_each_distinct_text_once_with_the_same_scores(sim):
    a = ["selling my blue iPhone 13", "a wooden garden chair", "selling my blue iPhone 13"]
    b = ["blue iPhone 13 for sale", "blue iPhone 13 for sale", "garden chair, oak"]
    fresh = Similarity(str(sim.path))
    calls = []
    encode = fresh.model.encode
    fresh.model.encode = lambda texts, **kw: calls.append(list(texts)) or encode(texts, **kw)
    first = fresh.pairwise(a, b)
    assert fresh.pairwise(a, b) == first and sorted(sum(calls, [])) == sorted(set(a) | set(b))
    direct = (encode(a, normalize_embeddings=True) * encode(b, normalize_embeddings=True)).sum(axis=1)
    assert first == pytest.approx([float(x) for x in direct], abs=1e-5)


def test_text_scores_bundle(sim):
    out = text_scores([HYP], [REF], sim)
    assert set(out) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "sim"}
    assert all(0 <= v <= 1.0001 for v in out.values())


def test_sim_model_dir_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a sentence-transformers directory"):
        Similarity(str(tmp_path))
