"""The ``ipl synth`` stage: synthetic marketplace (Ray Data) then the tiny local models.

Run as ``ipl synth [--config jobs/configs/synth_local.yaml] [key=value ...]`` or
``ray job submit --working-dir . -- python jobs/synth.py --config ...``.
"""
from __future__ import annotations

import logging
from functools import partial

from ipl.models.tiny import build_tiny_models
from ipl.synth.vocab import catalogue_corpus
from ipl.synth.config import SynthConfig
from ipl.synth.pipeline import run_synth_data

log = logging.getLogger("ipl.synth")


def summarize(manifest: dict) -> str:
    lines = [f"raw listings: {manifest['rows']} rows in {manifest['shards']} shards "
             f"({manifest['bytes'] / 1e6:.1f} MB, {manifest['shards_reused']} shards reused)"]
    lines.append("  by dirty reason: " + ", ".join(f"{k}={v}" for k, v in manifest["dirty_reasons"].items()))
    lines.append("  by category:     " + ", ".join(f"{k}={v}" for k, v in manifest["categories"].items()))
    return "\n".join(lines)


def clip_corpus(cfg: SynthConfig, n: int) -> list[dict]:
    """Clean listings from another seed of the same catalogue: the tiny CLIP's pretraining data
    (the marketplace's own rows, dirty ones included, stay unseen by it)."""
    from ipl.synth.dirty import REASONS
    from ipl.synth.generate import ListingFactory

    other = cfg.model_copy(update={"seed": cfg.seed + 1_000_003, "rows": n,
                                   "dirty": cfg.dirty.model_copy(update={r: 0.0 for r in REASONS})})
    return ListingFactory(other).table(0, n).to_pylist()


SYNONYMS = "_synonyms.json"


def write_synonyms(cfg: SynthConfig) -> None:
    """The catalogue's English/Chinese value pairs beside the raw listings (the eval's matcher reads
    them from the run, so no library module imports the synthetic catalogue)."""
    from ipl.runtime import write_json_atomic
    from ipl.synth.catalogue import Catalogue, synonym_groups

    c = cfg.catalogue
    cat = Catalogue.build(c.path, c.categories, c.brands_per_category, c.models_per_brand, c.colors_per_spu,
                          c.variants_per_spu)
    write_json_atomic(cfg.run.dir / "raw" / SYNONYMS, synonym_groups(cat))


def run(cfg: SynthConfig) -> dict:
    """Synthesize ``<run>/raw`` and (if configured) build the tiny models; returns a summary."""
    manifest = run_synth_data(cfg)
    write_synonyms(cfg)
    out = {"raw": manifest}
    if cfg.models.build:
        out["models"] = build_tiny_models(cfg.models, cfg.run.dir, cfg.data_fingerprint(),
                                          clip_corpus=partial(clip_corpus, cfg), vocabulary=catalogue_corpus)
    return out


def main(cfg: SynthConfig) -> int:
    out = run(cfg)
    print(summarize(out["raw"]))
    if "models" in out:
        m = out["models"]
        print(f"tokenizer: {m['tokenizer']['vocab']} tokens   -> {m['tokenizer']['path']}")
        print(f"tiny VLM:  {m['vlm']['parameters'] / 1e6:.2f}M parameters (Qwen2-VL) -> {m['vlm']['path']}")
        if m["vlm"].get("pretrain"):
            pre = m["vlm"]["pretrain"]
            print(f"           copy pretraining {pre['steps']} steps: recall of fresh facts "
                  f"{pre['copy_recall_before']:.2f} -> {pre['copy_recall_after']:.2f}")
        c = m["clip"]
        kind = "packaged CLIP (EfficientNet-Lite + MiniLM)" if c.get("model") == "packaged" else "tiny CLIP"
        print(f"{kind}: {c['parameters'] / 1e6:.2f}M parameters ({c.get('trainable', c['parameters']) / 1e6:.2f}M "
              f"trained), dim {c['dim']} -> {c['path']}")
        if (c.get("pretrain") or {}).get("steps"):
            print(f"           aligned on a separate corpus, {c['pretrain']['steps']} steps: photo -> caption top-1 "
                  f"{c['pretrain']['heldout_top1_before']:.2f} -> {c['pretrain']['heldout_top1_after']:.2f}")
    return 0
