"""What the models do on real listings and photos (``../shared/realdata``, never trained on).

* Mercari (text): brand extraction precision/recall against ``brand_name``, measured by
  ``ipl prepare --config jobs/configs/prepare_mercari.yaml`` (run here when its summary is
  missing) on the half of the rows whose brands it did not learn from.
* Fashion (photos): zero-shot category (``articleType``) and colour (``baseColour``) top-1 of
  the run's CLIP against the chance of always answering the commonest class, and leave-one-out
  nearest-neighbour top-1 over the photos (``knn_top1``: the run's CLIP embeddings; for colour
  also the photo-colour head's features, ``knn_top1_colour_features``); and the VLM's
  image-only descriptions scored for the true brand and colour.
* ABO (photos): same-product ranking of the run's CLIP (identical-item retrieval).
* Out of domain (``ood``): the fashion and ABO photos sent through the Serve graph's own
  pre-generation path against the run's (synthetic) index: the share of drafts that state
  no product-level value (brand, model) as a fact, ``no_product_fact`` (goal >= 0.95).
* Safety (``safety``): the SafetyGate's Open-NSFW screen over every real photo (fashion + ABO,
  none explicit): ``false_positives`` at the serve config's threshold, with the score spread.

The demo's models are tiny and trained only on synthetic drawings: on real photos they are
expected near chance, and the report says so next to the numbers.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ipl.eval.config import EvalConfig

log = logging.getLogger("ipl.eval")


def start_mercari(cfg: EvalConfig) -> Callable[[], dict]:
    """The Mercari figures begun now: when their prepare has to run (its summary is missing), it
    runs in a background thread (Ray Data's cleaning of 2,000 rows, 30-40 s alone on 2 cores,
    then takes the core time the evaluation's single-threaded scoring and photo figures leave:
    2-15 s off an evaluation here); the returned function waits for it, prints the prepare's
    report in one piece and gives the result (a failure raises there)."""
    from ipl.config import REPO_ROOT, load_config
    from ipl.data.config import PrepareConfig

    if not cfg.realdata.mercari_config:
        return lambda: {"skipped": "realdata.mercari_config is null"}
    rel = Path(cfg.realdata.mercari_config)
    path = rel if rel.is_file() else REPO_ROOT / rel
    if not path.is_file():
        return lambda: {"skipped": f"{cfg.realdata.mercari_config}: no such prepare config"}
    pcfg = load_config(PrepareConfig, path, [])
    source = Path(pcfg.input.path)
    summary_path = pcfg.run.dir / "clean" / "summary.json"

    def result() -> dict:
        summary = json.loads(summary_path.read_text())
        return {"source": str(source), "rows_in": summary.get("rows_in"), "kept": summary.get("kept"),
                "extraction": summary.get("eval") or {}, "command": f"ipl prepare --config {cfg.realdata.mercari_config}"}

    if summary_path.is_file():
        return result
    if not source.exists():
        return lambda: {"skipped": f"{source}: the Mercari listings are not on this machine"}
    if not cfg.realdata.run_mercari_prepare:
        return lambda: {"skipped": f"{summary_path} missing (run `ipl prepare --config {cfg.realdata.mercari_config}`)"}
    from ipl.data.pipeline import run_prepare
    from ipl.data.stage import report
    from ipl.runtime import ensure_ray

    pcfg = pcfg.model_copy(update={"ray": cfg.ray})
    ensure_ray(pcfg.ray)  # here, not in the thread: ray.init belongs in the main thread
    log.info("real data: cleaning + extracting the Mercari listings (%s), beside the rest of the evaluation",
             source)
    done: Future = Future()
    started = time.monotonic()

    def work() -> None:
        try:
            text = report(run_prepare(pcfg))
            done.set_result((text, time.monotonic() - started))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter, which raises it
            done.set_exception(exc)

    threading.Thread(target=work, name="mercari-prepare", daemon=True).start()

    def wait() -> dict:
        if not done.done():
            log.info("real data: waiting for the Mercari cleaning")
        text, seconds = done.result()
        print(text)
        log.info("real data: the Mercari listings cleaned and extracted in %.0fs", seconds)
        return result()

    return wait


def _fashion_rows(root: Path, n: int) -> list[dict]:
    styles = root / "fashion" / "styles.jsonl"
    rows = []
    with open(styles, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if (root / "fashion" / r["image"]).is_file():
                rows.append(r)
    return rows[:n]


def zero_shot(clip, images: list, labels: list[str], prompt: str) -> dict:
    """Top-1 of CLIP zero-shot over the distinct labels, and the commonest label's share."""
    classes = sorted(set(labels))
    img = clip.encode_images(images).numpy()
    txt = clip.encode_texts([prompt.format(c.lower()) for c in classes]).numpy()
    pred = (img @ txt.T).argmax(axis=1)  # the top class of the zero-shot softmax
    truth = np.array([classes.index(lab) for lab in labels])
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    return {"photos": len(labels), "classes": len(classes), "top1": float((pred == truth).mean()),
            "majority_baseline": float(majority)}


def knn_top1(vectors: np.ndarray, labels: list[str]) -> float:
    """Leave-one-out 1-nearest-neighbour (cosine) top-1 over the photos themselves."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    return float(np.mean([labels[j] == labels[i] for i, j in enumerate(nearest)]))


def fashion(cfg: EvalConfig, clip, colour_head: Optional[dict] = None) -> dict:
    """Article type and colour of the real catalogue photos: CLIP zero-shot, leave-one-out nearest
    neighbour, and for colour the evidence's photo-colour head (``colour_head``: its predictor and
    calibrated tier), whose classes are the catalogue's colour names: a label no class names
    (by the eval's synonyms) counts as a miss."""
    from PIL import Image

    from ipl.index.colour import colour_features

    root = Path(cfg.realdata.root)
    rows = _fashion_rows(root, cfg.realdata.fashion_photos)
    if not rows:
        return {"skipped": f"{root / 'fashion'}: no photos"}
    images = [Image.open(root / "fashion" / r["image"]).convert("RGB") for r in rows]
    types, colours = [r["articleType"] for r in rows], [r["baseColour"] for r in rows]
    emb = clip.encode_images(images).numpy()
    hist = np.stack([colour_features(im) for im in images])
    category = {**zero_shot(clip, images, types, "a photo of {}"), "knn_top1": knn_top1(emb, types)}
    z = zero_shot(clip, images, colours, "a photo of a {} item")
    colour = {**z, "zero_shot_top1": z["top1"], "method": "zero-shot", "knn_top1": knn_top1(emb, colours),
              "knn_top1_colour_features": knn_top1(hist, colours)}
    if colour_head is not None:
        colour.update(photo_colour(colour_head, hist, colours, cfg.metrics.synonyms))
    return {"category": category, "colour": colour}


def photo_colour(colour_head: dict, features: np.ndarray, labels: list[str], synonyms) -> dict:
    """Top-1 of the index's photo-colour head on real photos, and the precision of what its
    calibrated tier (``photo:sku``) would state."""
    from ipl.extract.matcher import AttributeMatcher

    matcher = AttributeMatcher(synonyms)
    head, tier = colour_head["predictor"], colour_head.get("tier") or {}
    truth = [next((c for c in head.classes if matcher.same(lab, c)), None) for lab in labels]
    top = [p[0] for p in head.predict_features(features, 1)]
    right = np.array([t is not None and p["value"] == t for p, t in zip(top, truth)])
    out = {"top1": float(right.mean()), "method": f"photo-colour head ({len(head.classes)} catalogue colours)",
           "labels_named": float(np.mean([t is not None for t in truth]))}
    if tier.get("enabled") and tier.get("threshold") is not None:
        stated = np.array([p["score"] >= tier["threshold"] for p in top])
        out["stated"] = {"threshold": tier["threshold"], "coverage": float(stated.mean()),
                         "precision": float(right[stated].mean()) if stated.any() else None}
    return out


def index_colour_head(cfg: EvalConfig) -> Optional[dict]:
    """The current index version's photo-colour head and its calibrated tier (None: no head)."""
    from ipl.index.colour import ColourPredictor
    from ipl.index.manifest import MANIFEST
    from ipl.index.search import resolve_version_dir
    from ipl.runtime import read_json

    try:
        version = resolve_version_dir(cfg.serve_config().index_root)
    except (FileNotFoundError, ValueError):
        return None
    head = ColourPredictor.load(version)
    if head is None:
        return None
    manifest = read_json(version / MANIFEST)  # resolve_version_dir found it
    from ipl.evidence.assess import tier_for

    tiers = ((manifest.get("evidence") or {}).get("tiers") or {})
    return {"predictor": head, "tier": tier_for(tiers, "photo", "sku", head.key)}


def _vlm_photos(cfg: EvalConfig, n: int) -> tuple[Path, list[dict], object]:
    """(root, up to ``n`` fashion rows, serve config) for a VLM check; no rows without a VLM."""
    root = Path(cfg.realdata.root)
    scfg = cfg.serve_config()
    rows = _fashion_rows(root, n) if (scfg.vlm_dir / "config.json").is_file() else []
    return root, rows, scfg


def fashion_descriptions(cfg: EvalConfig) -> dict:
    """Image-only VLM descriptions of real catalogue photos: is the true brand / colour stated?"""
    import ray

    from ipl.eval.ablation import vlm_actor
    from ipl.eval.match import AttributeMatcher

    root, rows, scfg = _vlm_photos(cfg, cfg.realdata.fashion_descriptions)
    if not rows:
        return {"skipped": "no fashion photos or no VLM"}
    from ipl.generate.prompts import description_prompt

    t = time.monotonic()
    worker = vlm_actor(cfg)
    items = [{"prompt": description_prompt(None, None, None, "en"), "language": "en",
              "photos": [(root / "fashion" / r["image"]).read_bytes()]} for r in rows]
    texts, _ = ray.get(worker.generate.remote(items, cfg.generation.max_new_tokens, cfg.generation.batch_size))
    ray.kill(worker)
    log.info("real data: %d fashion photos described in %.0fs", len(rows), time.monotonic() - t)
    from ipl.generate.repetition import clean_repeats

    edits = [clean_repeats(t) for t in texts]  # what the Serve pipeline would send: repeats out, a loop ended
    matcher = AttributeMatcher(cfg.metrics.synonyms)
    brand = sum(matcher.states(r["brandName"], t) for r, (t, _) in zip(rows, edits)) / len(rows)
    colour = sum(matcher.states(r["baseColour"], t) for r, (t, _) in zip(rows, edits)) / len(rows)
    return {"photos": len(rows), "brand_stated": brand, "colour_stated": colour,
            "repeats_edited": sum(bool(e["removed"] or e["collapsed"]) for _, e in edits) / len(rows),
            "repetition_ended": sum(e["ended"] for _, e in edits) / len(rows),
            "example": {"truth": {"brand": rows[0]["brandName"], "colour": rows[0]["baseColour"],
                                  "type": rows[0]["articleType"]}, "generated": edits[0][0],
                        "generated_raw": texts[0]}}


def fashion_captions(cfg: EvalConfig) -> dict:
    """CASLIE captions of real catalogue photos (the caption prompt without a category: the run's
    categories are not these): is the article type named, and the colour a caption states right?"""
    from ipl.caption.cqe import caption_values
    from ipl.caption.prompts import caption_prompt, clean_caption
    import ray

    from ipl.eval.ablation import vlm_actor
    from ipl.eval.match import AttributeMatcher

    root, rows, scfg = _vlm_photos(cfg, cfg.realdata.fashion_captions)
    if not rows:
        return {"skipped": "no fashion photos or no VLM"}
    prompt = caption_prompt(None, ["Color"], "en")
    items = [{"caption": True, "prompt": prompt, "language": "en",
              "photos": [(root / "fashion" / r["image"]).read_bytes()]} for r in rows]
    t = time.monotonic()
    worker = vlm_actor(cfg)
    texts, _ = ray.get(worker.generate.remote(items, 48, cfg.generation.batch_size))
    ray.kill(worker)
    log.info("real data: %d fashion photos captioned in %.0fs", len(rows), time.monotonic() - t)
    texts = [clean_caption(t) for t in texts]
    matcher = AttributeMatcher(cfg.metrics.synonyms)
    colours = sorted({r["baseColour"] for r in rows if r.get("baseColour")})
    typed = sum(matcher.states(r["articleType"], t) for r, t in zip(rows, texts))
    stated = [caption_values(t, {"Color": colours}, matcher).get("Color") for t in texts]
    said = [(v, r["baseColour"]) for v, r in zip(stated, rows) if v]
    right = sum(matcher.same(v, truth) for v, truth in said)
    return {"photos": len(rows), "article_type_named": round(typed / len(rows), 4),
            "colour": {"stated": len(said), "correct": right,
                       "precision": round(right / len(said), 4) if said else None,
                       "recall": round(right / len(rows), 4),
                       "majority_baseline": round(max(Counter(r["baseColour"] for r in rows).values()) / len(rows), 4)},
            "example": {"truth": {"type": rows[0]["articleType"], "colour": rows[0]["baseColour"]},
                        "caption": texts[0]}}


def out_of_domain(cfg: EvalConfig, root: Path) -> dict:
    """Real photos far from the synthetic index (fashion + ABO) through the Serve graph's own
    pre-generation path: in how many does the draft state a product-level value as a fact?"""
    import asyncio

    from ipl.eval.ablation import build_graph
    from ipl.serve.errors import ApiError
    from ipl.serve.pipeline import DraftRequest

    paths = [root / "fashion" / r["image"] for r in _fashion_rows(root, cfg.realdata.fashion_photos)]
    if (root / "abo").is_dir():
        paths += sorted((root / "abo").glob("*/*.jpg"))
    if not paths:
        return {"skipped": f"{root}: no fashion or ABO photos"}
    _, pipelines, levels = build_graph(cfg)

    async def go():
        out = []
        for p in paths:
            try:
                draft = await pipelines["system"].prepare(DraftRequest(photos=[p.read_bytes()]))
            except ApiError as exc:
                out.append({"photo": str(p.relative_to(root)), "refused": exc.code})
                continue
            stated = {a["key"]: a["value"] for a in draft.meta["attributes"]
                      if a["status"] == "stated" and a["level"] == "product"}
            out.append({"photo": str(p.relative_to(root)), "category": draft.meta["category"]["name"],
                        "in_domain": draft.meta["evidence"]["in_domain"], "stated": stated})
        return out

    rows = asyncio.run(go())
    answered = [r for r in rows if "refused" not in r]
    clean = [r for r in answered if not r["stated"]]
    return {"photos": len(rows), "answered": len(answered), "refused": len(rows) - len(answered),
            "no_product_fact": len(clean) / len(answered) if answered else None,
            "out_of_domain": sum(not r["in_domain"] for r in answered) / len(answered) if answered else None,
            "with_category": sum(r["category"] is not None for r in answered) / len(answered) if answered else None,
            "stated_examples": [r for r in answered if r["stated"]][:5]}


def safety_screen(cfg: EvalConfig, root: Path) -> dict:
    """The SafetyGate's Open-NSFW screen over every real photo (none is explicit): false positives."""
    from ipl.serve.deployments import load_nsfw

    scfg = cfg.serve_config().safety
    paths = sorted((root / "fashion" / "images").glob("*.jpg")) + sorted((root / "abo").glob("*/*.jpg"))
    if not paths:
        return {"skipped": f"{root}: no photos"}
    from PIL import Image

    scores = load_nsfw(scfg).score_images([Image.open(p).convert("RGB") for p in paths])
    flagged = [str(p.relative_to(root)) for p, s_ in zip(paths, scores) if s_ >= scfg.nsfw_threshold]
    return {"photos": len(paths), "threshold": scfg.nsfw_threshold, "false_positives": len(flagged),
            "flagged": flagged[:10], "max_score": round(float(scores.max()), 4),
            "p95_score": round(float(np.quantile(scores, 0.95)), 4)}


def compare_dir(cfg: EvalConfig, path: str) -> Path:
    """A ``compare_clips`` entry: as given when it exists (or is absolute), else under the run."""
    where = Path(path)
    return where if where.is_absolute() or where.exists() else cfg.run.dir / where


def run(cfg: EvalConfig, mercari_result: Optional[Callable[[], dict]] = None) -> dict:
    """Every real-data figure; ``mercari_result``: the waiter of a :func:`start_mercari` begun
    earlier (None: it runs here)."""
    from ipl.index.stage import same_product_ranking
    from ipl.models.clip import load_clip

    root = Path(cfg.realdata.root)
    if not root.is_dir():
        return {"skipped": f"{root}: no real-data fixtures on this machine"}
    mercari_result = mercari_result or start_mercari(cfg)
    out: dict = {"root": str(root), "mercari": None}  # filled last: its prepare runs beside the figures below
    clip = load_clip(cfg.serve_config().clip_dir)
    head = index_colour_head(cfg)
    log.info("real data: fashion photos through the run's CLIP and colour head")
    out["fashion"] = fashion(cfg, clip, head) if cfg.realdata.fashion_photos else {"skipped": "fashion_photos=0"}
    log.info("real data: fashion photos described and captioned by the VLM")
    out["fashion_descriptions"] = (fashion_descriptions(cfg) if cfg.realdata.fashion_descriptions
                                   else {"skipped": "fashion_descriptions=0"})
    out["fashion_captions"] = (fashion_captions(cfg) if cfg.realdata.fashion_captions
                               else {"skipped": "fashion_captions=0"})
    abo = root / "abo"
    out["abo"] = same_product_ranking(clip, abo) if abo.is_dir() else {"skipped": f"{abo}: missing"}
    out["compare"] = {}
    for name, path in cfg.realdata.compare_clips.items():  # the same figures for another encoder
        where = compare_dir(cfg, path)
        if not where.is_dir():
            out["compare"][name] = {"clip": str(path), "skipped": f"{where}: no such CLIP directory (the demo "
                                    "builds models/clip-tiny with synth.models.compare_tiny_clip: true)"}
            continue
        log.info("real data: the same figures for the %s encoder", name)
        other = load_clip(where)
        out["compare"][name] = {"clip": str(where), "fingerprint": other.fingerprint,
                                "fashion": fashion(cfg, other, head) if cfg.realdata.fashion_photos else {},
                                "abo": same_product_ranking(other, abo) if abo.is_dir() else {}}
    log.info("real data: real photos through the Serve graph's evidence, and the photo-safety screen")
    out["ood"] = out_of_domain(cfg, root)
    out["safety"] = safety_screen(cfg, root)
    out["mercari"] = mercari_result()
    return out
