"""Instruction rows with real JPEG photos (the training tests and the GPU tests)."""
import io
import json

import numpy as np
from PIL import Image

from ipl.generate.prompts import description_messages


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def instruction_row(answer: str, n_photos: int = 1, rid: str = "r") -> dict:
    msgs = description_messages(n_photos, "Write a short listing description.", "en", answer)
    return {"id": rid, "messages": json.dumps(msgs), "photos": [photo(i) for i in range(n_photos)]}


def write_drawn(run, n_train=400, n_val=20):
    """Instruction splits of desc_reference rows with their `draw` (the data.fraction tests)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ipl.data.instructions import unit_hash

    for split, n in (("train", n_train), ("validation", n_val)):
        d = run / "instructions" / f"split={split}"
        d.mkdir(parents=True)
        ids = [f"L{i}:desc_reference" for i in range(n)]
        pq.write_table(pa.table({"id": ids, "task": ["desc_reference"] * n, "messages": ["[]"] * n,
                                 "photos": [[]] * n, "draw": [unit_hash("draw", i) for i in ids]}),
                       d / "part-0.parquet")
