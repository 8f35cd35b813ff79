"""Nulls in Ray's numpy batches: None and NaN are null; strings, numbers and arrays are not."""
import numpy as np

from ipl.data.arrow import to_table
from ipl.data.contract import is_null


def test_is_null():
    assert is_null(None) and is_null(float("nan")) and is_null(np.float32("nan")) and is_null(np.float64("nan"))
    assert not any(is_null(v) for v in ("", "x", 0, 1.5, np.array([1, 2]), [1], np.int64(3)))


def test_a_column_of_arrays_is_written_as_lists():
    sigs = np.empty(2, dtype=object)
    sigs[0], sigs[1] = np.array([1, 2]), np.array([3, 4])
    t = to_table({"minhash": sigs, "listing_id": np.array(["a", None], dtype=object)})
    assert t.column("minhash").to_pylist() == [[1, 2], [3, 4]] and t.column("listing_id").to_pylist() == ["a", None]


def test_list_columns_leave_a_stage_with_a_proper_arrow_type():
    """Ray hands an Arrow list<string> column to a numpy-format stage as numpy arrays per row and cannot
    convert those back (it pickles the column with a warning); plain_lists gives list<string> again."""
    import pyarrow as pa
    from ray.data._internal.arrow_block import ArrowBlockAccessor
    from ray.data._internal.tensor_extensions.arrow import convert_to_pyarrow_array

    from ipl.data.arrow import plain_lists
    from ipl.data.clean import CleanConfig
    from ipl.data.pipeline import decide, drop_columns, text_filter_batch, where

    text = "Personal used Huawei Mate 10 Pro, 128GB, Blue. Condition as shown in the pictures."
    table = pa.table({"listing_id": ["a", "b", "c"], "status": ["kept", "kept", "dropped"],
                      "category": ["phone"] * 3, "drop_reason": [None, None, "pii"], "drop_detail": [None] * 3,
                      "description": [text] * 3, "quality_score": [0.9] * 3,
                      "error": pa.array([None, None, None], type=pa.string()),
                      "risk_flags": pa.array([["x"], [], None], type=pa.list_(pa.string())),
                      "pii": pa.array([[], [], ["phone"]], type=pa.list_(pa.string())),
                      "photos": pa.array([[b"\xff\xd8a"], [b"\xff\xd8b", b"c"], []], type=pa.list_(pa.binary()))})
    batch = ArrowBlockAccessor(table).to_numpy()
    for col in ("risk_flags", "photos"):
        pickled = convert_to_pyarrow_array(batch[col], col).type
        assert not pa.types.is_list(pickled)  # what Ray does without it
    filtered = text_filter_batch(dict(batch), CleanConfig())  # the prepare's first stage passes photos on
    for out in (plain_lists(dict(batch)), where(dict(batch), "status", ("kept",)),
                drop_columns(dict(batch), ("status",)), decide(dict(batch), {}, {}, 0), filtered):
        for col in ("risk_flags", "pii", "photos"):
            assert pa.types.is_list(convert_to_pyarrow_array(out[col], col).type), (col, out[col])
    assert convert_to_pyarrow_array(filtered["photos"], "photos").to_pylist()[1] == [b"\xff\xd8b", b"c"]
