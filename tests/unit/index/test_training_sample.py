"""The coarse quantizer's training sample does not depend on how the embedding pass ordered its
files and rows (FAISS's k-means starts from the sample's order; another quantizer moves the
approximate hits that calibrate the evidence)."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ipl.index.stage import training_sample


def _write(path, ids, vecs, order):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"listing_id": [ids[i] for i in order], "embed_error": [None] * len(order),
                             "embedding": pa.array([vecs[i].tolist() for i in order],
                                                   type=pa.list_(pa.float32(), vecs.shape[1]))}), path)


def test_the_sample_is_the_same_for_the_same_listings_in_any_file_and_row_order(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"L{i:04d}" for i in range(300)]
    vecs = rng.standard_normal((300, 8)).astype(np.float32)
    one, two = rng.permutation(300), rng.permutation(300)
    _write(tmp_path / "a" / "0.parquet", ids, vecs, one[:150])
    _write(tmp_path / "a" / "1.parquet", ids, vecs, one[150:])
    _write(tmp_path / "b" / "x.parquet", ids, vecs, two[:100])
    _write(tmp_path / "b" / "y.parquet", ids, vecs, two[100:])
    first = training_sample(list((tmp_path / "a").glob("*.parquet")), {"L0001"}, 1000, 7)
    second = training_sample(list((tmp_path / "b").glob("*.parquet")), {"L0001"}, 1000, 7)
    assert first.shape == (299, 8) and np.array_equal(first, second)  # the held-out listing left out
    assert not np.array_equal(first, training_sample(list((tmp_path / "a").glob("*.parquet")), {"L0001"}, 1000, 8))
