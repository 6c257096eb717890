"""Duplicate groups: links between rows (sha256, phash, embedding) merged by union-find.

Each group keeps one row (the largest, or the best scored) and every other row is explained by the
link that reached it in a breadth-first walk from the keeper, preferring the strongest evidence
(identical bytes, then perceptual hash, then embedding); a row whose bytes are identical to another
member's is always explained by those bytes (``sha256``), whatever path the walk took.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import numpy as np

METHODS = ("sha256", "phash", "embedding")
PRIORITY = {m: i for i, m in enumerate(METHODS)}


@dataclasses.dataclass
class Links:
    """Undirected links between rows: endpoints, kind (index into METHODS) and evidence value."""

    i: np.ndarray  # (E,) int64
    j: np.ndarray  # (E,) int64
    kind: np.ndarray  # (E,) int8
    value: np.ndarray  # (E,) float64: Hamming bits for phash, cosine for embedding, 0 for sha256

    @staticmethod
    def concat(parts: list[Links]) -> Links:
        if not parts:
            e = np.zeros(0, np.int64)
            return Links(e, e, np.zeros(0, np.int8), np.zeros(0, np.float64))
        return Links(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in "i j kind value".split())
        )


def sha_links(shas: list[str | None]) -> Links:
    """Star links from every row to the first row with the same sha256."""
    first: dict[str, int] = {}
    ii, jj = [], []
    for k, h in enumerate(shas):
        if not h:
            continue
        if h in first:
            ii.append(first[h])
            jj.append(k)
        else:
            first[h] = k
    i, j = np.asarray(ii, np.int64), np.asarray(jj, np.int64)
    return Links(i, j, np.full(len(i), PRIORITY["sha256"], np.int8), np.zeros(len(i)))


def group_rows(
    n: int, links: Links, sizes: np.ndarray, scores: np.ndarray, keep: str
) -> dict[str, Any]:
    """Connected components of the link graph (union-find) and each group's keeper.

    sizes: (N,) pixel areas; scores: (N,) quality scores (NaN when unknown). ``keep="largest"`` ranks
    by area, then score; ``"best"`` by score, then area; ties go to the earlier row. Returns ``labels``
    (N,) component ids, ``keeper`` (N,) the kept row of each row's group, and ``reached`` (N, 3): for
    each dropped row, the neighbour that reached it in a breadth-first walk from the keeper over links
    ordered sha256 < phash < embedding, the link kind, and its value; a row byte-identical to other
    members is reported ``sha256`` via the first of them the walk met (the keeper when identical).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(links.i), np.int8), (links.i, links.j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    score = np.where(np.isnan(scores), -np.inf, scores)
    primary, secondary = (sizes, score) if keep == "largest" else (score, sizes)
    # lexsort: last key is primary; row index last tie-break (earlier row wins)
    order = np.lexsort((np.arange(n), -secondary, -primary, labels))
    first_in_group = np.ones(n, bool)
    first_in_group[1:] = labels[order][1:] != labels[order][:-1]
    keeper_of_label = np.empty(labels.max() + 1 if n else 0, np.int64)
    keeper_of_label[labels[order][first_in_group]] = order[first_in_group]
    keeper = keeper_of_label[labels] if n else np.zeros(0, np.int64)
    adj: dict[int, list[tuple[int, int, int, float]]] = {}
    for a, b, k, v in zip(
        links.i.tolist(), links.j.tolist(), links.kind.tolist(), links.value.tolist()
    ):
        adj.setdefault(a, []).append((k, b, a, v))
        adj.setdefault(b, []).append((k, a, b, v))
    reached: dict[int, tuple[int, int, float]] = {}
    visit: dict[int, int] = {}  # row -> its place in its group's walk (the keeper: 0)
    for root in sorted({int(keeper[a]) for a in adj}):
        visit[root] = 0
        queue = deque([root])
        while queue:
            u = queue.popleft()
            for k, w, _, v in sorted(adj.get(u, [])):
                if w not in visit:
                    visit[w] = len(visit)
                    reached[w] = (u, k, v)
                    queue.append(w)
    _identical_bytes_first(links, visit, reached)
    return {"labels": labels, "keeper": keeper, "reached": reached}


def _identical_bytes_first(
    links: Links, visit: dict[int, int], reached: dict[int, tuple[int, int, float]]
) -> None:
    """A row with the same bytes as another member of its group is explained by those bytes.

    The walk explains each row by its shortest path from the keeper, which may be a perceptual hash
    (distance 0 to an enlarged keeper) although the row is a byte copy of another member. Within
    each set of byte-identical rows (sha256 links), the one the walk met first (the keeper, when it
    is in the set) keeps its own link; every other row of the set becomes ``sha256`` via that one.
    """
    sha = links.kind == PRIORITY["sha256"]
    if not sha.any():
        return
    parent: dict[int, int] = {}

    def find(a: int) -> int:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(links.i[sha].tolist(), links.j[sha].tolist()):
        parent[find(a)] = find(b)
    same: dict[int, list[int]] = {}
    for a in list(parent):
        same.setdefault(find(a), []).append(a)
    for rows in same.values():
        first = min(rows, key=lambda r: visit[r])
        for r in rows:
            if r != first:
                reached[r] = (first, PRIORITY["sha256"], 0.0)
