"""Every node's recent onsets, in place for the compiled evidence counts.

The negative evidence of a hypothesis (:func:`shotline.hub.grid_kernels.silent_counts`)
reads, for each node in range, its recent onset times and those that shots
hold. Kept as per-node Python lists, they had to be concatenated into one
array after every new pick: O(all recent onsets) per detection, most of the
cost on a 10,000-node network. Here each node owns a row of two 2-D arrays
(sorted onsets, sorted held onsets, with counts), so a pick costs one row
update and the kernels read the rows where they are.

Times are seconds in the associator's reference. A spatial index over the
rows answers "which nodes are within r of a point" without visiting all.
"""

from __future__ import annotations

import math

import numpy as np

from . import grid_kernels


class OnsetStore:
    """Sorted recent onsets (s) per node, and the onsets of them that shots hold, one row per node."""

    def __init__(self, cap: int = 16) -> None:
        self.row: dict[str, int] = {}
        """Row of each node that has reported an onset."""
        self.ids: list[str] = []
        """Node of each row."""
        self.onsets = np.zeros((8, cap))
        self.n = np.zeros(8, dtype=np.int64)
        self.held = np.zeros((8, cap))
        self.n_held = np.zeros(8, dtype=np.int64)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self.row

    def __len__(self) -> int:
        return len(self.ids)

    def times(self, node_id: str) -> np.ndarray:
        """A node's recent onsets (s), sorted (a view; empty if it never reported)."""
        r = self.row.get(node_id)
        return self.onsets[r, : self.n[r]] if r is not None else np.zeros(0)

    def held_times(self, node_id: str) -> np.ndarray:
        """A node's onsets that shots hold (s), sorted (a view)."""
        r = self.row.get(node_id)
        return self.held[r, : self.n_held[r]] if r is not None else np.zeros(0)

    def add(self, node_id: str, t_s: float) -> None:
        """Record an onset of a node."""
        r = self._row_of(node_id)
        self.onsets = insert(self.onsets, self.n, r, t_s)

    def hold(self, node_id: str, t_s: float) -> None:
        """Mark an onset as held by a shot."""
        r = self._row_of(node_id)
        self.held = insert(self.held, self.n_held, r, t_s)

    def release(self, node_id: str, t_s: float) -> None:
        """Unmark a held onset (no-op if it is not held)."""
        r = self.row.get(node_id)
        if r is None:
            return
        c = int(self.n_held[r])
        k = int(self.held[r, :c].searchsorted(t_s))
        if k < c and self.held[r, k] == t_s:
            delete(self.held, self.n_held, r, k)

    def trim(self, t_min_s: float) -> None:
        """Forget onsets (held or not) before ``t_min_s``."""
        # One compiled call per array (the associator trims at every tick; a Python loop over the rows
        # cost 5 ms a tick on 1,024 nodes, numpy over every slot of every row ~0.1 ms on the dense scene).
        for arr, cnt in ((self.onsets, self.n), (self.held, self.n_held)):
            grid_kernels.trim_rows(arr, cnt, len(self.ids), float(t_min_s))

    def _row_of(self, node_id: str) -> int:
        r = self.row.get(node_id)
        if r is None:
            r = self.row[node_id] = len(self.ids)
            self.ids.append(node_id)
            if r == len(self.n):
                self.onsets, self.held = doubled(self.onsets), doubled(self.held)
                self.n, self.n_held = doubled(self.n), doubled(self.n_held)
        return r


def doubled(arr: np.ndarray) -> np.ndarray:
    """``arr`` with as many rows again, zeros (room for more nodes)."""
    return np.concatenate([arr, np.zeros_like(arr)])


def delete(arr: np.ndarray, counts: np.ndarray, r: int, k: int) -> None:
    """Remove the onset at position ``k`` of row ``r`` of ``arr`` (the later ones move up)."""
    grid_kernels.delete_at(arr, counts, int(r), int(k))


def insert(arr: np.ndarray, counts: np.ndarray, r: int, t: float) -> np.ndarray:
    """Insert ``t`` into sorted row ``r`` of ``arr``, after any equal onsets (growing the columns when
    full); return the array. One compiled call (:func:`~shotline.hub.grid_kernels.insert_row`)."""
    if not grid_kernels.insert_row(arr, counts, int(r), float(t)):
        new = np.zeros((arr.shape[0], 2 * arr.shape[1]))
        new[:, : arr.shape[1]] = arr
        arr = new
        grid_kernels.insert_row(arr, counts, int(r), float(t))
    return arr


class NodeGrid:
    """Rows of an :class:`OnsetStore` bucketed by position: the rows within a distance of a point."""

    def __init__(self, xyz: np.ndarray, cell_m: float) -> None:
        """``xyz`` (R, 3) ENU positions (m) of the store's rows; ``cell_m`` the bucket size (m)."""
        self.cell = float(cell_m)
        self.xyz = xyz[:0]
        self.buckets: dict[tuple[int, int], np.ndarray] = {}
        self._near: dict[tuple[int, int, int], np.ndarray] = {}
        """Answers of :meth:`near` by (bucket east, bucket north, reach), until rows are added."""
        self.extend(xyz)

    def extend(self, xyz: np.ndarray) -> None:
        """Take the store's grown positions (the rows already indexed unchanged): bucket the new rows."""
        first = len(self.xyz)
        self.xyz = xyz
        if len(xyz) <= first:
            return
        self._near.clear()
        keys = np.floor(xyz[first:, :2] / self.cell).astype(np.int64)
        order = np.lexsort((keys[:, 1], keys[:, 0]))
        cut = np.flatnonzero(np.any(np.diff(keys[order], axis=0) != 0, axis=1)) + 1
        for part in np.split(order, cut):
            key = (int(keys[part[0], 0]), int(keys[part[0], 1]))
            old = self.buckets.get(key)
            # New rows come after every indexed one, so each bucket stays sorted.
            self.buckets[key] = first + part if old is None else np.concatenate([old, first + part])

    def near(self, x: float, y: float, radius_m: float) -> np.ndarray:
        """Rows (sorted) in the buckets that a disc of ``radius_m`` about (x, y) touches (a superset). The
        array may be shared with other calls: do not modify it. (Asked around the same points again and
        again, a search's seed node for one: its answer is kept until rows are added.)"""
        reach = int(math.ceil(radius_m / self.cell))
        ix, iy = int(math.floor(x / self.cell)), int(math.floor(y / self.cell))
        got = self._near.get((ix, iy, reach))
        if got is not None:
            return got
        if (2 * reach + 1) ** 2 > 4 * len(self.buckets):
            got = np.arange(len(self.xyz))  # the disc covers most of the network
        else:
            parts = [b for dx in range(-reach, reach + 1) for dy in range(-reach, reach + 1)
                     if (b := self.buckets.get((ix + dx, iy + dy))) is not None]
            got = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        if len(self._near) >= self.MAX_KEPT:
            self._near.clear()
        self._near[(ix, iy, reach)] = got
        return got

    #: Answers of :meth:`near` kept at most (then forgotten all at once).
    MAX_KEPT = 4096
