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
