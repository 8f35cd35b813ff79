"""A small published index on disk, built with the same functions the Ray tasks run."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ipl.index.embed import vectors_to_arrow
from ipl.index.faiss_index import normalize, trained_template
from ipl.index.manifest import MANIFEST, next_version, publish, staging_dir
from ipl.index.stage import build_shard
from ipl.runtime import write_json_atomic

DIM = 16


def embedding_files(tmp_path, vectors, skus, per_file=50):
    out = tmp_path / "emb"
    out.mkdir(exist_ok=True)
    files = []
    for f, a in enumerate(range(0, len(vectors), per_file)):
        b = min(len(vectors), a + per_file)
        t = pa.table({"listing_id": [f"L{i:05d}" for i in range(a, b)], "sku_id": skus[a:b],
                      "spu_id": [s.rsplit("/", 1)[0] for s in skus[a:b]], "category": [s.split("/")[0] for s in skus[a:b]],
                      "price": [float(i) for i in range(a, b)], "description": [f"listing {i}" for i in range(a, b)],
                      "extracted": ['{"Brand": "B%d"}' % i for i in range(a, b)],
                      "embedding": vectors_to_arrow(vectors[a:b]), "embed_error": pa.nulls(b - a, pa.string())})
        path = out / f"part-{f:03d}.parquet"
        pq.write_table(t, path)
        files.append(str(path))
    return files


def publish_version(root, vectors, skus, shards=2, spec="Flat", fingerprint="enc-A", threshold=0.9, tmp=None):
    files = embedding_files(tmp, vectors, skus)
    version = next_version(root)
    staged = staging_dir(root, version)
    template = trained_template(spec, vectors.shape[1], vectors)
    groups = np.array_split(np.arange(len(files)), shards)
    done, start = [], 0
    for s, g in enumerate(groups):
        info = build_shard(template, [(files[i], 0, 50) for i in g], set(), s, start, str(staged), 1)
        done.append(info)
        start = info["id_end"]
    manifest = {"version": version, "dimension": vectors.shape[1], "metric": "inner_product", "index_type": spec,
                "factory": spec, "ntotal": start, "shards": done, "search": {"nprobe": 4, "ef_search": 32},
                "encoder": {"source": "test", "fingerprint": fingerprint}, "thresholds": {"identical": threshold}}
    write_json_atomic(staged / MANIFEST, manifest)
    return publish(root, staged, manifest, keep=3)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    vectors = normalize(rng.normal(size=(200, DIM)).astype(np.float32))
    skus = [f"cat{i % 4}/spu{i % 20}/sku{i}" for i in range(200)]
    return vectors, skus
