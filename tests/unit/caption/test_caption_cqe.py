"""Caption quality evaluation: each judge alone on hand-made cases, then the majority vote."""
import numpy as np
import pytest

from ipl.caption.cqe import (CaptionCase, CQEConfig, EncoderJudge, EvidenceJudge, LLMJudge, caption_values,
                             vote)
from ipl.extract.matcher import AttributeMatcher

VOCAB = {"Brand": ["Huawei", "Apple", "Sony"], "Model": ["Mate 40", "Mate 40 Pro", "iPhone 13"],
         "Color": ["Navy", "Black", "Grey"]}


def case(caption, **kw):
    return CaptionCase(caption=caption, category="phone", vocabulary=VOCAB, **kw)


def test_caption_values_take_the_longest_known_value_and_synonyms():
    m = AttributeMatcher([["Grey", "Gray"]])
    assert caption_values("A gray phone, logo Huawei, Mate 40 Pro", VOCAB, m) == \
        {"Brand": "Huawei", "Model": "Mate 40 Pro", "Color": "Grey"}
    assert caption_values("a phone", VOCAB) == {}


def test_the_evidence_judge_needs_agreement_and_no_contradiction():
    judge = EvidenceJudge()
    cands = {"Brand": ["Huawei"], "Color": ["Navy", "Black"]}
    yes = judge(case("A navy phone. Logo text: Huawei.", candidates=cands))
    assert yes.keep and yes.score == 1.0 and "Brand=Huawei" in yes.reason
    no = judge(case("A navy phone. Logo text: Apple.", candidates=cands))
    assert not no.keep and "Brand=Apple" in no.reason and no.score == 0.5
    # a value with no evidence to check is neither for nor against; nothing checkable is a no
    unchecked = judge(case("Model text: Mate 40.", candidates=cands))
    assert not unchecked.keep and unchecked.score is None and "no value" in unchecked.reason
    assert judge(case("A black phone, Mate 40.", candidates=cands)).keep


def test_the_encoder_judge_compares_the_cosine_with_its_threshold():
    text = {"close": np.array([1.0, 0.1, 0.0]), "far": np.array([0.0, 0.0, 1.0])}
    judge = EncoderJudge(lambda c: text[c], threshold=0.5)
    img = np.array([1.0, 0.0, 0.0])
    close, far = judge(case("close", image_vector=img)), judge(case("far", image_vector=img))
    assert close.keep and close.score > 0.99 and not far.keep and far.score == 0.0
    assert not judge(case("close")).keep  # no photos' embedding: cannot vouch for it
    with pytest.raises(ValueError, match="not the same CLIP"):
        judge(case("close", image_vector=np.ones(4)))


def test_the_llm_judge_asks_the_cqe_prompt_and_reads_yes_or_no():
    asked = []

    def answer(prompt, photos):
        asked.append((prompt, list(photos)))
        return {"A navy phone.": "Yes", "blurry": "No, it says nothing"}.get(prompt.split("<caption>")[1].split(
            "</caption>")[0], "I think the weather is nice")

    judge = LLMJudge(answer)
    assert judge(case("A navy phone.", photos=[b"jpeg"])).keep
    assert asked[0][1] == [b"jpeg"] and "<caption>A navy phone.</caption>" in asked[0][0]
    assert not judge(case("blurry")).keep
    odd = judge(case("something"))
    assert not odd.keep and "neither yes nor no" in odd.reason


class Fixed:
    def __init__(self, name, keep):
        self.name, self.keep = name, keep

    def __call__(self, c):
        from ipl.caption.cqe import Vote

        return Vote(self.name, self.keep, None, "fixed")


def test_the_majority_keeps_and_the_votes_are_recorded():
    kept = vote([Fixed("a", True), Fixed("b", True), Fixed("c", False)], case("x"))
    assert kept.keep and kept.yes == 2 and [v["judge"] for v in kept.to_dict()["votes"]] == ["a", "b", "c"]
    assert not vote([Fixed("a", True), Fixed("b", False), Fixed("c", False)], case("x")).keep
    assert not vote([Fixed("a", True), Fixed("b", True), Fixed("c", False), Fixed("d", False)], case("x")).keep
    empty = vote([Fixed("a", True)] * 3, case("  "))
    assert not empty.keep and all(v.reason == "empty caption" for v in empty.votes)
    with pytest.raises(ValueError, match="at least 3 judges"):
        vote([Fixed("a", True), Fixed("b", True)], case("x"))


def test_three_real_judges_vote_on_a_right_and_a_wrong_caption():
    text = {"A navy phone. Logo text: Huawei.": np.array([1.0, 0.0]), "A black phone. Logo text: Apple.":
            np.array([0.0, 1.0])}
    judges = [EncoderJudge(lambda c: text[c], 0.5), EvidenceJudge(),
              LLMJudge(lambda p, ph: "yes" if "Huawei" in p else "no")]
    cands = {"Brand": ["Huawei"], "Color": ["Navy"]}
    right = vote(judges, case("A navy phone. Logo text: Huawei.", image_vector=np.array([1.0, 0.0]), candidates=cands))
    wrong = vote(judges, case("A black phone. Logo text: Apple.", image_vector=np.array([1.0, 0.0]), candidates=cands))
    assert right.keep and right.yes == 3 and not wrong.keep and wrong.yes == 0


def test_the_config_needs_three_distinct_known_judges():
    assert CQEConfig().judges == ["encoder", "evidence", "llm"]
    for bad, msg in ((["encoder", "evidence"], "at least 3"), (["encoder", "evidence", "oracle"], "unknown judges"),
                     (["encoder", "encoder", "llm"], "votes once")):
        with pytest.raises(ValueError, match=msg):
            CQEConfig(judges=bad)


def test_the_encoder_judge_takes_a_cosine_computed_elsewhere_and_refuses_without_a_threshold():
    case = CaptionCase(caption="a red phone", image_caption_cosine=0.42)
    assert EncoderJudge(None, 0.4)(case).keep and not EncoderJudge(None, 0.5)(case).keep
    off = EncoderJudge(None, None)(case)
    assert not off.keep and "no calibrated threshold" in off.reason
