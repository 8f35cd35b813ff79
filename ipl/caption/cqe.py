"""Caption quality evaluation (CQE): does a caption help, decided by a vote of independent judges.

CASLIE keeps a caption only when a majority of several judge LLMs answer "yes" to "will the
information extracted from the image help to ...?". Here the judges look at the caption from
different sides, so one model's mistake is not repeated by the others:

* ``encoder`` (:class:`EncoderJudge`): the image-text similarity in the CLIP between the photos
  and the caption, against a threshold (by default set by ``ipl index``: a low quantile of the
  cosine between held-out photos and their sellers' own texts, ``encoder_quantile``);
* ``evidence`` (:class:`EvidenceJudge`): the values the caption states (the category's known
  values, matched like everywhere else by :class:`ipl.extract.matcher.AttributeMatcher`) against
  the retrieval evidence: yes when at least one agrees with a candidate and none contradicts
  one (a key whose evidence has candidates, stated with a value that is none of them);
* ``llm`` (:class:`LLMJudge`): a yes/no answer of the LLM backend to the CQE prompt
  (:func:`ipl.caption.prompts.cqe_prompt`); a reply that is neither counts as no.

:func:`vote` asks every judge and keeps the caption when more than half say yes; the votes
(judge, yes/no, score, reason) and the verdict are returned for the record. At least three
judges (:class:`CQEConfig`), so a tie cannot happen with the default odd count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Optional, Protocol, Sequence

import numpy as np
from pydantic import Field, field_validator

from ipl.caption.prompts import cqe_prompt, parse_yes_no
from ipl.config import Strict
from ipl.extract.matcher import AttributeMatcher, value_key

JUDGES = ("encoder", "evidence", "llm")


class CQEConfig(Strict):
    """Which judges vote on a caption and how."""

    judges: list[str] = Field(default_factory=lambda: list(JUDGES), description="Judges that vote (at least 3, "
                              f"distinct, of {', '.join(JUDGES)}); a majority keeps the caption.")
    encoder_threshold: Optional[float] = Field(None, ge=-1, le=1, description="Image-caption cosine from which the "
                                               "encoder judge says yes (null: set by ipl index, "
                                               "see encoder_quantile).")
    encoder_quantile: float = Field(0.1, ge=0, le=1, description="With encoder_threshold null: the threshold is "
                                    "this quantile of the cosine between held-out photos and their own listing text "
                                    "(set by ipl index; serving reads it from the manifest).")
    min_agreeing: int = Field(1, ge=1, description="Values the caption must state that agree with the evidence for "
                              "the evidence judge to say yes (and none may contradict it).")

    @field_validator("judges")
    @classmethod
    def _judges(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(JUDGES))
        if unknown:
            raise ValueError(f"unknown judges {unknown}: choose from {list(JUDGES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"judges {v}: each judge votes once")
        if len(v) < 3:
            raise ValueError(f"judges {v}: CQE needs at least 3 independent judges")
        return v


@dataclass
class CaptionCase:
    """What the judges see: the caption, its photos' mean image embedding, and the evidence."""

    caption: str
    category: Optional[str] = None
    image_vector: Optional[np.ndarray] = None  # normalised mean embedding of the photos
    candidates: Mapping[str, Sequence[str]] = field(default_factory=dict)  # key -> evidence's candidate values
    vocabulary: Mapping[str, Sequence[str]] = field(default_factory=dict)  # key -> the category's known values
    photos: Sequence[bytes] = ()
    language: str = "en"
    image_caption_cosine: Optional[float] = None  # already computed (serving: Perception.read_caption)


@dataclass(frozen=True)
class Vote:
    judge: str
    keep: bool
    score: Optional[float]
    reason: str


@dataclass(frozen=True)
class Verdict:
    keep: bool
    votes: tuple[Vote, ...]

    @property
    def yes(self) -> int:
        return sum(v.keep for v in self.votes)

    def to_dict(self) -> dict:
        return {"keep": self.keep, "yes": self.yes, "judges": len(self.votes),
                "votes": [asdict(v) for v in self.votes]}


class Judge(Protocol):
    name: str

    def __call__(self, case: CaptionCase) -> Vote: ...


def caption_values(caption: str, vocabulary: Mapping[str, Sequence[str]],
                   matcher: Optional[AttributeMatcher] = None) -> dict[str, str]:
    """key -> the longest known value of the key the caption states (ties: the first listed)."""
    matcher = matcher or AttributeMatcher()
    out = {}
    for key, values in vocabulary.items():
        best = None
        for v in values:
            if v and matcher.states(str(v), caption) and (best is None or len(value_key(v)) > len(value_key(best))):
                best = str(v)
        if best is not None:
            out[key] = best
    return out


class EncoderJudge:
    """Yes when the caption's text embedding is close enough to the photos' image embedding."""

    name = "encoder"

    def __init__(self, encode_text: Optional[Callable[[str], np.ndarray]], threshold: Optional[float]):
        self.encode_text = encode_text
        self.threshold = None if threshold is None else float(threshold)

    def __call__(self, case: CaptionCase) -> Vote:
        if self.threshold is None:
            return Vote(self.name, False, None, "no calibrated threshold (index built without captions)")
        if case.image_caption_cosine is not None:
            score = float(case.image_caption_cosine)
        elif case.image_vector is None:
            return Vote(self.name, False, None, "no image embedding")
        else:
            t = np.asarray(self.encode_text(case.caption), np.float32).ravel()
            v = np.asarray(case.image_vector, np.float32).ravel()
            if t.shape != v.shape:
                raise ValueError(f"encoder judge: caption embedding {t.shape} and image embedding {v.shape} differ "
                                 "(not the same CLIP?)")
            score = float(t @ v / max(float(np.linalg.norm(t) * np.linalg.norm(v)), 1e-12))
        ok = score >= self.threshold
        return Vote(self.name, ok, round(score, 4),
                    f"image-caption cosine {score:.3f} {'>=' if ok else '<'} {self.threshold:.3f}")


class EvidenceJudge:
    """Yes when the caption's values agree with the retrieval evidence and contradict none of it."""

    name = "evidence"

    def __init__(self, matcher: Optional[AttributeMatcher] = None, min_agreeing: int = 1):
        self.matcher, self.min_agreeing = matcher or AttributeMatcher(), int(min_agreeing)

    def __call__(self, case: CaptionCase) -> Vote:
        stated = caption_values(case.caption, case.vocabulary, self.matcher)
        agree, contradict = [], []
        for key, value in stated.items():
            cands = [c for c in case.candidates.get(key, ()) if c]
            if not cands:
                continue  # nothing to check it against: neither for nor against
            (agree if any(self.matcher.same(value, c) for c in cands) else contradict).append(f"{key}={value}")
        ok = len(agree) >= self.min_agreeing and not contradict
        checked = len(agree) + len(contradict)
        if contradict:
            reason = f"contradicts the evidence: {', '.join(contradict)}"
        elif not checked:
            reason = "states no value the evidence can check"
        else:
            reason = f"agrees with the evidence: {', '.join(agree)}"
        return Vote(self.name, ok, round(len(agree) / checked, 4) if checked else None, reason)


class LLMJudge:
    """The LLM backend's yes/no answer to the CQE prompt (``answer(prompt, photos) -> text``)."""

    name = "llm"

    def __init__(self, answer: Callable[[str, Sequence[bytes]], str]):
        self.answer = answer

    def __call__(self, case: CaptionCase) -> Vote:
        reply = str(self.answer(cqe_prompt(case.caption, case.category, case.language), case.photos) or "")
        said = parse_yes_no(reply)
        short = " ".join(reply.split())[:40]
        if said is None:
            return Vote(self.name, False, None, f"neither yes nor no: {short!r}")
        return Vote(self.name, said, 1.0 if said else 0.0, f"answered {short!r}")


def vote(judges: Sequence[Judge], case: CaptionCase) -> Verdict:
    """Every judge votes; more than half saying yes keeps the caption. An empty caption is dropped
    without asking (each judge still records why)."""
    if len(judges) < 3:
        raise ValueError(f"CQE needs at least 3 judges, got {len(judges)}")
    if not str(case.caption or "").strip():
        return Verdict(False, tuple(Vote(j.name, False, None, "empty caption") for j in judges))
    votes = tuple(j(case) for j in judges)
    return Verdict(sum(v.keep for v in votes) * 2 > len(votes), votes)
