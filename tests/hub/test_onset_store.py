"""The onset store equals per-node sorted lists under any sequence of updates; the node grid finds every
node within a distance."""

from __future__ import annotations

import bisect
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shotline.hub.onset_store import NodeGrid, OnsetStore

NODES = [f"N{i}" for i in range(5)]
ops = st.lists(
    st.tuples(st.sampled_from(["add", "hold", "release", "trim"]), st.sampled_from(NODES),
              st.integers(0, 400).map(lambda k: k / 100.0)),
    max_size=200,
)


@given(ops)
@settings(max_examples=200, deadline=None)
def test_store_equals_sorted_lists(sequence):
    store = OnsetStore(cap=2)  # tiny rows: growth is exercised
    recent: dict[str, list[float]] = {}
    held: dict[str, list[float]] = {}
    for op, node, t in sequence:
        if op == "add":
            store.add(node, t)
            bisect.insort(recent.setdefault(node, []), t)
        elif op == "hold":
            store.hold(node, t)
            bisect.insort(held.setdefault(node, []), t)
            recent.setdefault(node, [])
        elif op == "release":
            store.release(node, t)
            times = held.get(node, [])
            k = bisect.bisect_left(times, t)
            if k < len(times) and times[k] == t:
                del times[k]
        else:
            store.trim(t)
            for lst in (*recent.values(), *held.values()):
                del lst[: bisect.bisect_left(lst, t)]
    assert set(store.ids) == set(recent)
    for node in recent:
        assert store.times(node).tolist() == recent[node]
        assert store.held_times(node).tolist() == held.get(node, [])
        r = store.row[node]
        assert store.n[r] == len(recent[node]) and store.n_held[r] == len(held.get(node, []))


@given(st.integers(0, 2**31 - 1), st.floats(50.0, 3000.0))
@settings(max_examples=100, deadline=None)
def test_node_grid_finds_every_node_in_range(seed, radius):
    rng = np.random.default_rng(seed)
    xyz = np.c_[rng.uniform(-5000, 5000, (300, 2)), rng.uniform(0, 20, 300)]
    grid = NodeGrid(xyz, cell_m=700.0)
    for _ in range(10):
        x, y = rng.uniform(-6000, 6000, 2)
        got = grid.near(x, y, radius)
        want = np.flatnonzero(np.hypot(xyz[:, 0] - x, xyz[:, 1] - y) <= radius)
        assert set(want.tolist()) <= set(got.tolist())
        assert np.all(np.diff(got) > 0)  # sorted, each row once


@given(st.integers(0, 2**31 - 1), st.lists(st.integers(1, 40), min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_node_grid_grown_in_steps_equals_one_built_at_once(seed, steps):
    """Nodes reporting for the first time are appended (NodeGrid.extend): the index then holds
    exactly the buckets of a plain grouping of all positions, and answers as one built at once (also
    between steps, where it keeps its answers until rows are added)."""
    rng = np.random.default_rng(seed)
    xyz = np.c_[rng.uniform(-5000, 5000, (sum(steps), 2)), rng.uniform(0, 20, sum(steps))]
    grown = NodeGrid(xyz[:0], cell_m=700.0)
    n = 0
    x0, y0 = rng.uniform(-3000, 3000, 2)
    for k in steps:
        n += k
        grown.extend(xyz[:n])
        # asked again around one point as nodes come: answers kept between extensions are not stale
        np.testing.assert_array_equal(grown.near(x0, y0, 1500.0), NodeGrid(xyz[:n], cell_m=700.0).near(x0, y0, 1500.0))
    plain: dict[tuple[int, int], list[int]] = {}
    for r, (x, y, _) in enumerate(xyz.tolist()):
        plain.setdefault((math.floor(x / 700.0), math.floor(y / 700.0)), []).append(r)
    assert grown.buckets.keys() == plain.keys()
    for key, rows in plain.items():
        np.testing.assert_array_equal(grown.buckets[key], rows)
    whole = NodeGrid(xyz, cell_m=700.0)
    for _ in range(10):
        x, y = rng.uniform(-6000, 6000, 2)
        np.testing.assert_array_equal(grown.near(x, y, 1500.0), whole.near(x, y, 1500.0))


row_ops = st.lists(
    st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 12).map(lambda k: k / 4.0), st.integers(0, 40)),
    max_size=120,
)


@given(row_ops)
@settings(max_examples=200, deadline=None)
def test_row_insert_and_delete_equal_sorted_lists(sequence):
    """The compiled row updates (onset_store.insert and delete, which the onset store and the pick pool's
    padded rows use) keep each row equal to a sorted list under any mix of insertions (with ties, out of
    order, past a full row) and deletions at any position."""
    from shotline.hub.onset_store import delete, insert

    arr, counts = np.full((3, 2), np.nan), np.zeros(3, dtype=np.int64)  # tiny rows: growth is exercised
    lists: list[list[float]] = [[], [], []]
    for is_insert, r, t, at in sequence:
        if is_insert or not lists[r]:
            arr = insert(arr, counts, r, t)
            bisect.insort_right(lists[r], t)
        else:
            k = at % len(lists[r])
            delete(arr, counts, r, k)
            del lists[r][k]
        for row, want in enumerate(lists):
            assert counts[row] == len(want)
            assert arr[row, : counts[row]].tolist() == want
