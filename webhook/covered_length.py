"""Covered length of a multiset of intervals under add and remove: a segment tree over edges.

The edges are fixed when the tree is built (every interval it will be given), so positions are
computed once per interval (`leaves`) and reused for each add and remove. Add and remove are
O(log n); the covered length is read in O(1). Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

Interval = tuple[int, int]


class Coverage:
    """Covered length of a multiset of intervals under range add/remove (a segment tree).

    Leaves are the elementary intervals between the given edges; a node's count says how many
    added ranges span it whole, and its covered length is its full length when the count is
    positive, else its children's sum. Add and remove are O(log n), the covered length O(1).
    """

    __slots__ = ("_count", "_covered", "_index", "_length", "_size")

    def __init__(self, ranges: Sequence[Interval], universe: int) -> None:
        edges = sorted({0, universe, *(s for s, _ in ranges), *(e + 1 for _, e in ranges)})
        self._index = {edge: i for i, edge in enumerate(edges)}
        leaves = len(edges) - 1
        size = 1
        while size < leaves:
            size *= 2
        self._size = size
        lengths = [0] * (2 * size)
        for i in range(leaves):
            lengths[size + i] = edges[i + 1] - edges[i]
        for node in range(size - 1, 0, -1):
            lengths[node] = lengths[2 * node] + lengths[2 * node + 1]
        self._length = lengths
        self._count = [0] * (2 * size)
        self._covered = [0] * (2 * size)

    @property
    def covered(self) -> int:
        return self._covered[1]

    def leaves(self, ranges: Sequence[Interval]) -> list[tuple[int, int]]:
        """The tree positions of `ranges` (each given at construction), for `add`."""
        index, size = self._index, self._size
        return [(index[start] + size, index[end + 1] + size) for start, end in ranges]

    def add(self, positions: list[tuple[int, int]], delta: int) -> None:
        """Add (delta 1) or remove (delta -1) every range of `positions` (from `leaves`) once."""
        size = self._size
        count, covered, lengths = self._count, self._covered, self._length
        for first, after in positions:
            left, right = first, after
            low, high = left >> 1, (right - 1) >> 1
            while left < right:
                if left & 1:
                    count[left] += delta
                    if count[left]:
                        covered[left] = lengths[left]
                    elif left < size:
                        covered[left] = covered[2 * left] + covered[2 * left + 1]
                    else:
                        covered[left] = 0
                    left += 1
                if right & 1:
                    right -= 1
                    count[right] += delta
                    if count[right]:
                        covered[right] = lengths[right]
                    elif right < size:
                        covered[right] = covered[2 * right] + covered[2 * right + 1]
                    else:
                        covered[right] = 0
                left >>= 1
                right >>= 1
            # Recompute every ancestor of the two ends, bottom up.
            while low:
                if not count[low]:
                    covered[low] = covered[2 * low] + covered[2 * low + 1]
                if high != low and not count[high]:
                    covered[high] = covered[2 * high] + covered[2 * high + 1]
                low >>= 1
                high >>= 1
