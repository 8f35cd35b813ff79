"""Micro-batches regrouped by length (``data.group_by_length``): less padding, ranks in step."""
import json
import random

import numpy as np

from ipl.train.loop import _length, micro_batches


def _big_batches(lengths, size, start=0):
    """Ray Data numpy batches of ``size`` rows whose messages are ``lengths`` characters long."""
    rows = [{"id": f"r{start + i}", "messages": "x" * n, "photos": None} for i, n in enumerate(lengths)]
    for i in range(0, len(rows), size):
        part = rows[i: i + size]
        yield {"id": np.array([r["id"] for r in part]), "messages": np.array([r["messages"] for r in part], dtype=object),
               "photos": np.array([None] * len(part), dtype=object)}


def _padded(chunks):
    return sum(len(c) * max(_length(r) for r in c) for c in chunks)


def test_without_grouping_the_stream_is_cut_in_order_and_a_short_tail_dropped():
    chunks = list(micro_batches(_big_batches(range(1, 20), 4), micro=4, group=1, seed=0))
    assert [[r["id"] for r in c] for c in chunks] == [[f"r{i}" for i in range(j, j + 4)] for j in (0, 4, 8, 12)]


def test_grouped_micro_batches_hold_every_row_once_with_far_less_padding():
    rnd = random.Random(1)
    lengths = [rnd.randint(20, 400) for _ in range(8 * 8 * 5 + 3)]
    plain = list(micro_batches(_big_batches(lengths, 8), micro=8, group=1, seed=0))
    grouped = list(micro_batches(_big_batches(lengths, 64), micro=8, group=8, seed=0))
    assert len(grouped) == len(plain) and all(len(c) == 8 for c in grouped)
    ids = [r["id"] for c in grouped for r in c]
    assert len(ids) == len(set(ids)) == 320  # the 3 rows of the last, short micro-batch are dropped
    real = sum(lengths[:320])
    assert real / _padded(grouped) > 0.9 > real / _padded(plain)
    assert json.dumps(ids) != json.dumps([r["id"] for c in plain for r in c])  # regrouped, not in stream order


def test_every_rank_takes_its_groups_micro_batches_in_one_order():
    """Two ranks with different rows of one distribution: at each step both take the micro-batch
    of the same length rank in their group, so neither waits long for the other."""
    rnd = random.Random(2)
    a, b = ([rnd.randint(20, 400) for _ in range(256)] for _ in range(2))
    ra = list(micro_batches(_big_batches(a, 64), micro=8, group=8, seed=7))
    rb = list(micro_batches(_big_batches(b, 64, start=1000), micro=8, group=8, seed=7))
    wait = sum(abs(max(map(_length, x)) - max(map(_length, y))) for x, y in zip(ra, rb))
    other = list(micro_batches(_big_batches(b, 64, start=1000), micro=8, group=8, seed=8))  # another order
    assert wait < 0.5 * sum(abs(max(map(_length, x)) - max(map(_length, y))) for x, y in zip(ra, other))
    again = list(micro_batches(_big_batches(a, 64), micro=8, group=8, seed=7))
    assert [[r["id"] for r in c] for c in again] == [[r["id"] for r in c] for c in ra]  # resumable: the same order
