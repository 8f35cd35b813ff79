import numpy as np

from ipl.data.dedup import DedupConfig, band_keys, estimated_jaccard, mark_duplicates, minhash

A = "Personal used Huawei Mate 10 Pro, 128GB, Blue, no scratches. Condition as shown in the pictures. Contact me."
B = "Selling my Nikon D750 body only, shutter count around 5k, mint condition. Ask me anything, shipping included."


def test_near_duplicates_score_high_and_others_low():
    cfg = DedupConfig()
    a, a2, b = minhash(A, cfg), minhash(A.replace(",", " ,") + " thanks!!", cfg), minhash(B, cfg)
    assert estimated_jaccard(a, a2) >= cfg.threshold
    assert estimated_jaccard(a, b) < 0.3
    assert set(band_keys(a, cfg)) & set(band_keys(a2, cfg))
    assert minhash(A, cfg).tolist() == minhash(A.upper(), cfg).tolist()  # case and punctuation do not matter


def test_mark_duplicates_keeps_earliest_per_cluster():
    cfg = DedupConfig()
    sigs = [minhash(t, cfg).astype(np.int64) for t in (A + " x", A, B, A + " thanks")]
    group = {"listing_id": np.array(["L3", "L1", "L2", "L4"], dtype=object), "minhash": sigs}
    out = mark_duplicates(group, cfg.threshold)
    assert sorted(out["listing_id"]) == ["L3", "L4"]
    assert set(out["duplicate_of"]) == {"L1"}


def test_singleton_bucket():
    out = mark_duplicates({"listing_id": np.array(["L1"], dtype=object), "minhash": [np.zeros(32)]}, 0.8)
    assert len(out["listing_id"]) == 0
