"""The singular set of a Brenier potential: where the semi-discrete OT map tears.

For targets y_i and heights h_i the Brenier potential u_h(x) = max_i <x, y_i> + h_i is affine
on each power cell W_i, with gradient y_i. Two cells W_i, W_j that share a facet are glued
along the hyperplane <x, y_i - y_j> + h_i - h_j = 0; the map T = ∇u_h jumps there from y_i to
y_j. Inside one connected piece of a data manifold the jump is of the order of the local target
spacing and shrinks as N grows: the map is continuous in the limit. Where the support of the data
has a gap (disconnected modes) or a concavity (a non-convex mode), the jump stays finite: the
facet belongs to the *singular set* of the limit potential (Figalli 2010; Chen, Figalli 2017), the
pre-image of the boundary of the data manifold (An, Lei, Su, Gu et al., ICLR 2020).

Which facets are singular
-------------------------
A facet (i, j) is **regular** when y_i and y_j are joined *through the data*: the shortest path
from y_i to y_j along the target graph (mutual k-nearest neighbours, k = max(16, 2d), plus each
target's d + 1 nearest neighbours, less the edges that bridge a persistent gap: see below) is at
most ``kappa`` times the straight distance |y_i - y_j|.
Otherwise (no such path, or a detour longer than kappa |y_i - y_j|) the straight segment between
the two targets leaves the data: the facet is **singular**. The scale of a "short hop" is taken
from the data themselves (the local target spacing), so the rule needs no tuning to the size or
density of a data set. ``threshold="auto"`` reads kappa off the data (``auto_kappa``): the
smallest kappa in [2, 8] of the longest-lived number of modes (kappa = 2 on every 2-D toy set).

Gaps narrower than the k-NN radius
----------------------------------
A k-NN graph cannot see a gap narrower than its own radius: the sparse targets on either side
of the gap are among each other's k nearest neighbours, a single edge bridges it, and every facet
across the gap gets a detour near 1. This happens when the targets sample pieces of low
intrinsic dimension (latent codes of a process sampled along trajectories: the 16-th neighbour
lies 7 spacings away, farther than the gap between two stable states). So the graph first loses
its **gap bridges** (``gap_pieces``), read off the graph's own single-linkage hierarchy:

* Kruskal on the k-NN graph (its minimum spanning forest). A piece is *born* at the length
  ``b`` of the edge that first gives it k targets (one full neighbourhood); when two pieces of
  >= k targets meet at length ``l``, the merge has **persistence** ``p = l / max(b_1, b_2)``
  (how many times its birth scale the younger piece stays apart).
* Sort the persistences p_1 >= p_2 >= ... >= p_M, append p_(M+1) = 1, take the largest drop
  p_i / p_(i+1). If it is at least 2 (the same "twice as far" as kappa = 2) the merges
  p_1..p_i cross gaps (``gap_cut``: cut = sqrt(p_i p_(i+1))); otherwise there is none.
* A second Kruskal pass keeps apart pieces whose merge has p >= cut; the k-NN edges between
  different pieces are removed from the hop graph (``hop_graph``).

Inside one connected piece the persistences decay smoothly (measured on the 2-D toy sets,
N = 2,000: largest 1.4-2.7, no drop of 2: nothing removed, results unchanged); across real gaps
they stand apart (occlusion latent codes, d = 8: 5.1, 5.0, 4.5, 3.4, then 1.5). No constant is
fitted to a data set: k is the graph's own, 2 is kappa's.

Alternatively ``criterion="angle"`` flags facets whose supporting planes, with normals
(y_i, -1) and (y_j, -1) in R^{d+1}, meet at an angle above ``threshold`` (radians), the
dihedral-angle rule of An et al. (2020); it depends on the targets' position and scale, so it
has no automatic threshold.

**Modes** are the connected components of the graph of regular facets; a target set with one
convex mode has an empty singular set and one mode. ``SingularSet.trusted`` says whether they
describe the data rather than the sampling of the adjacency: more than one mode, each of >= k
targets, no mode boundary through a connected piece of the hop graph.

Cost: a pair that is itself a hop edge has ratio 1 and a pair across two components of the hop
graph has none, without a search; the rest run Dijkstra from the targets of a greedy vertex
cover of the pairs. ``method="exact"`` searches to kappa_max = 8 times the pair's length, which
in d = 16 is nearly the whole graph: (sources) x N work, N^2. ``method="approx"`` (the default
above 20,000 targets) searches to 2.5 times the pair's length (exact for every pair whose detour
is at most 2.5) and bounds the rest by landmarks (the length of a real path, so never below the
exact ratio). Pairs are then searched further only where a label needs it (``_detours_at``):
with a given threshold, the pairs whose bound lies above it; with threshold="auto", the pairs
that would join two components at some kappa of ``auto_kappa``'s grid (only those can change a
mode count), then those still unknown at the chosen kappa. The labels and the modes are the
exact test's; a detour is exact where it is at most ``SingularSet.searched``. See
``detour_ratios`` and ``docs/singular_set.md`` (agreement with the exact test on N = 10,000
subsets, cost at N = 60,000 MNIST codes).
The searches of one call run in forked worker processes from ``PARALLEL_SOURCES`` = 4,096 sources
on (SciPy's Dijkstra holds the GIL; ``detour_jobs``: the usable CPUs, at most 8, or the environment
variable BRENIER_JOBS), with the same result as one process.
The k-NN graph comes from a KD-tree (``scipy.spatial.cKDTree``); nothing builds an N x N array.

Adjacency: exact (``PowerDiagram.adjacency``) for a uniform 2-D polygonal source, otherwise
estimated from source samples: the best and second-best cells of any point x are always
neighbours in the power diagram (the order-2 power cell of x is an edge of the regular
triangulation), so the pairs of top-2 cells over many samples are true facets, and every facet
with enough mass near it is found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["SingularSet", "singular_set", "sampled_adjacency", "facet_angles", "detour_ratios", "refine_detours",
           "landmark_bounds",
           "boundary_distance", "crossings", "cell_walk", "DEFAULT_KAPPA"]

#: detour ratio above which a facet is singular when threshold="auto"
DEFAULT_KAPPA = 2.0
#: the largest detour searched for (and the top of the grid of ``auto_kappa``)
KAPPA_MAX = 8.0
CRITERIA = ("detour", "angle")


@dataclass(eq=False)
class SingularSet:
    """Cell adjacency of a fitted ``SemiDiscreteOT`` split into regular and singular facets.

    Indices refer to the unique targets (``ot.unique_targets_``; the same as the targets when
    there are no duplicates).

    adjacency : (E, 2) int64 pairs i < j of targets whose power cells share a facet.
    angles : (E,) float64 angle (radians) between the normals (y_i, -1), (y_j, -1) of the two
        supporting planes of u_h.
    detour : (E,) float64 kNN-graph path length from y_i to y_j over |y_i - y_j| (inf when no path).
        Exact where it is at most ``searched``; above it an upper bound (see ``refine_detours``).
    searched : (E,) float64 or None, the ratio up to which each detour was searched (inf: known
        without a search); None: exact up to ``KAPPA_MAX`` (a set saved before 2026-12).
    singular : (E,) bool, which adjacency pairs are singular.
    facets : (K, 2) int64, the singular pairs (``adjacency[singular]``).
    modes : (N,) int64 label of each target: connected components of the regular-facet graph,
        numbered by decreasing size.
    criterion, threshold : the rule used ("detour" with kappa, or "angle" with radians).
    exact : whether the adjacency is exact (2-D power diagram) or sampled.
    """

    adjacency: np.ndarray
    angles: np.ndarray
    detour: np.ndarray
    singular: np.ndarray
    modes: np.ndarray
    targets: np.ndarray = field(repr=False)
    criterion: str = "detour"
    threshold: float = DEFAULT_KAPPA
    exact: bool = False
    searched: np.ndarray | None = field(default=None, repr=False)
    _graph: object = field(default=None, repr=False)
    # the singular pair keys, built on the first ``separates`` (reflect_walk and crossings ask it
    # once per segment); init=False, so that dataclasses.replace starts a fresh cache
    _facet_keys: object = field(default=None, init=False, repr=False)
    _tree: object = field(default=None, init=False, repr=False)   # KD-tree of the targets (mode_of)

    @property
    def facets(self) -> np.ndarray:
        return self.adjacency[self.singular]

    @property
    def n_modes(self) -> int:
        return int(self.modes.max()) + 1 if len(self.modes) else 0

    @property
    def n_facets(self) -> int:
        return int(self.singular.sum())

    @property
    def trusted(self) -> bool:
        """Whether the modes describe the data rather than the sampling of the adjacency: more
        than one mode, each holding at least one full neighbourhood (k = max(16, 2d) targets),
        and every connected piece of the hop graph (``hop_graph``: paths through the data) inside
        a single mode. A mode boundary that cuts a connected piece hangs on which facets the
        sampled adjacency happened to find, and can change with its seed."""
        from scipy.sparse.csgraph import connected_components

        if self.n_modes < 2 or np.bincount(self.modes).min() < hop_k(self.targets.shape[1]):
            return False
        if self._graph is None:
            self._graph = hop_graph(self.targets)
        _, piece = connected_components(self._graph, directed=False)
        n = len(self.modes)
        pairs = np.unique(piece.astype(np.int64) * n + self.modes)
        return len(np.unique(pairs // n)) == len(pairs)

    def mode_of(self, y) -> np.ndarray:
        """(M,) int64 mode label of points y (M, d): the mode of the nearest target."""
        from ._array import as_points

        from scipy.spatial import cKDTree

        pts = as_points(y, "y", dim=self.targets.shape[1], dtype=torch.float64)
        if self._tree is None:
            # a KD-tree, not an (M, N) distance block: 60,000 targets x 4,096 points is 2 GB
            self._tree = cKDTree(self.targets)
        _, near = self._tree.query(pts.numpy(), k=1)
        return self.modes[np.asarray(near, dtype=np.int64).reshape(-1)]

    def pair_keys(self, regular: bool = True) -> np.ndarray:
        """Sorted int64 keys i * N + j (both orders) of the regular (or singular) pairs."""
        a = self.adjacency[~self.singular] if regular else self.facets
        n = len(self.modes)
        return np.unique(np.r_[a[:, 0] * n + a[:, 1], a[:, 1] * n + a[:, 0]]).astype(np.int64)

    def separates(self, a, b) -> np.ndarray:
        """(P,) bool: is the facet between the cells of targets a[p] and b[p] singular? True for
        the sampled singular facets and for any two cells of different modes: the modes are the
        pieces of the regular pairs, so a facet between two of them is singular even where the
        sampled adjacency missed it."""
        a = np.asarray(a, dtype=np.int64).reshape(-1)
        b = np.asarray(b, dtype=np.int64).reshape(-1)
        if self._facet_keys is None:
            self._facet_keys = self.pair_keys(regular=False)
        n = len(self.modes)
        return (self.modes[a] != self.modes[b]) | np.isin(a * n + b, self._facet_keys)

    def compatible(self, a, b) -> np.ndarray:
        """(P,) bool: may targets a[p] and b[p] be blended? True when a == b, else when they are
        in the same mode and the pair passes the facet rule (detour <= kappa, or angle <= threshold),
        whether or not their cells are adjacent."""
        a = np.asarray(a, dtype=np.int64).reshape(-1)
        b = np.asarray(b, dtype=np.int64).reshape(-1)
        ok = a == b
        need = (~ok) & (self.modes[a] == self.modes[b])
        if not need.any():
            return ok
        n = len(self.modes)
        keys, inv = np.unique(a[need] * n + b[need], return_inverse=True)
        pairs = np.stack([keys // n, keys % n], axis=1)
        if self.criterion == "angle":
            good = facet_angles(self.targets, pairs) <= self.threshold
        else:
            if self._graph is None:
                self._graph = hop_graph(self.targets)
            good = detour_ratios(self.targets, pairs, kappa_max=self.threshold, graph=self._graph) <= self.threshold
        ok[need] = good[inv]
        return ok

    def __repr__(self) -> str:
        return (f"SingularSet(E={len(self.adjacency)}, singular facets={self.n_facets}, n_modes={self.n_modes}, "
                f"criterion={self.criterion!r}, threshold={self.threshold:.4g}, exact={self.exact})")


# --------------------------------------------------------------------------------- adjacency
def sampled_adjacency(potential, source, n_samples: int, seed: int) -> np.ndarray:
    """(E, 2) int64 pairs i < j that are the best two cells of some of ``n_samples`` source points.

    potential : a ``BrenierPotential``; source : a ``brenier.sources.Source``. Chunked: no
    (M, N) matrix beyond the potential's memory budget.
    """
    n = potential.n_targets
    keys = []
    for xb in source.stream(n_samples, 65536, seed=seed, quasi=False, device=potential.device):
        _, idx = potential.topk(xb, 2)
        a, b = idx[:, 0].cpu().numpy(), idx[:, 1].cpu().numpy()
        keys.append(np.unique(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)))
    k = np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    return np.stack([k // n, k % n], axis=1).astype(np.int64)


def facet_angles(y: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """(E,) angle between the normals (y_i, -1) and (y_j, -1) of the supporting planes."""
    a, b = y[adjacency[:, 0]], y[adjacency[:, 1]]
    cos = (np.sum(a * b, axis=1) + 1.0) / np.sqrt((np.sum(a * a, axis=1) + 1.0) * (np.sum(b * b, axis=1) + 1.0))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def knn_graph(y: np.ndarray, k: int):
    """Sparse (N, N) graph of *mutual* k-nearest neighbours (i among j's k nearest and j among
    i's) plus every target's d + 1 nearest neighbours, weighted by length. y: (N, d) float64.

    Mutual neighbours do not bridge a gap from a sparse end of a piece (whose k-th neighbour can
    lie across the gap) to a dense piece; the d + 1 nearest neighbours keep a sparse tail
    linked to its piece (one nearest neighbour is not enough: two tail points can be each other's).

    The neighbours are exact, from a KD-tree (``scipy.spatial.cKDTree``): O(N log N) work for
    data of low intrinsic dimension, and O(N k) memory, where the row-blocked all-pairs distances
    it replaces cost N^2 (``docs/singular_set.md``: 60,000 MNIST codes, d = 16).
    """
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    n = len(y)
    k = min(k, n - 1)
    if k < 1:
        return sp.csr_matrix((n, n))
    # k + 1: each target is its own nearest neighbour (the targets are unique)
    v, i = cKDTree(y).query(y, k=k + 1)
    # a duplicate target can rank before a row's own index: drop the own index wherever it is
    cols = _drop_self(i, n, k)
    r = np.repeat(np.arange(n), k)
    c = cols.reshape(-1).astype(np.int64)
    a = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)).tocsr()
    mutual = a.multiply(a.T)                                   # 1 where both directions exist
    near = (np.arange(len(r)) % k) < min(y.shape[1] + 1, k)    # each row's d + 1 nearest
    nn = sp.coo_matrix((np.ones(int(near.sum())), (r[near], c[near])), shape=(n, n)).tocsr()
    g = (mutual + nn + nn.T).tocsr()
    g.sum_duplicates()
    g.data = np.linalg.norm(y[np.repeat(np.arange(n), np.diff(g.indptr))] - y[g.indices], axis=1)
    g.data = np.maximum(g.data, 1e-300)  # a zero weight would be read as "no edge"
    return g


def _drop_self(i: np.ndarray, n: int, k: int) -> np.ndarray:
    """(n, k) neighbour indices of a (n, k + 1) query result, each row without its own index
    (or without its last entry when the own index is not among them)."""
    keep = i != np.arange(n)[:, None]
    keep[keep.sum(axis=1) > k, -1] = False
    return i[keep].reshape(n, k)


def hop_k(d: int) -> int:
    """The neighbour count of the hop graph, k = max(16, 2d); also the fewest targets a piece of
    the data needs to count as a piece (one full neighbourhood)."""
    return max(16, 2 * int(d))


def knn_hop_graph(y: np.ndarray):
    """The kNN graph (k = max(16, 2d)) before its gap bridges are removed (see ``hop_graph``)."""
    return knn_graph(y, hop_k(y.shape[1]))


def _merge_events(g, k: int, cut: float = math.inf):
    """Single linkage on the edges of ``g`` (Kruskal, on its minimum spanning forest).

    A piece is *born* at the length of the edge that first gives it k targets; when two pieces
    of >= k targets meet at length l, the event's persistence is p = l / (the later birth).
    Merges with p >= ``cut`` are skipped (the pieces stay apart). Returns (persistences (M,)
    of the events met, labels (N,) of the pieces, the MST edges (E, 2) that were skipped).
    """
    from scipy.sparse.csgraph import minimum_spanning_tree

    n = g.shape[0]
    t = minimum_spanning_tree(g).tocoo()
    order = np.argsort(t.data, kind="stable")
    rows, cols, lens = t.row[order], t.col[order], t.data[order]
    parent = np.arange(n)
    size = np.ones(n, dtype=np.int64)
    birth = np.full(n, math.inf)

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    events, skipped = [], []
    for a, b, ln in zip(rows.tolist(), cols.tolist(), lens.tolist()):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        if size[ra] >= k and size[rb] >= k:
            p = ln / max(birth[ra], birth[rb], 1e-300)
            events.append(p)
            if p >= cut:
                skipped.append((a, b))
                continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        first = min(birth[ra], birth[rb])
        birth[ra] = first if math.isfinite(first) else (ln if size[ra] >= k else math.inf)
    labels = np.fromiter((find(i) for i in range(n)), dtype=np.int64, count=n)
    return np.asarray(events), labels, np.asarray(skipped, dtype=np.int64).reshape(-1, 2)


def gap_cut(persistence: np.ndarray, ratio: float = DEFAULT_KAPPA) -> float:
    """The persistence above which a merge of two pieces crosses a gap (inf: no gap).

    Sort the persistences p_1 >= p_2 >= ... >= p_M of the merge events, append p_(M+1) = 1 (a
    merge at the very scale the pieces were born), and find the largest drop p_i / p_(i+1). If
    that drop is at least ``ratio`` (2: the same "twice as far" as the detour rule), the events
    above it are gaps and the cut is the geometric mean sqrt(p_i p_(i+1)); otherwise there is no
    gap (inside one connected piece the persistences decay smoothly).
    """
    if len(persistence) == 0:
        return math.inf
    p = np.r_[np.sort(np.asarray(persistence, dtype=np.float64))[::-1], 1.0]
    drop = p[:-1] / np.maximum(p[1:], 1e-300)
    i = int(np.argmax(drop))
    return float(math.sqrt(p[i] * p[i + 1])) if drop[i] >= ratio else math.inf


def gap_pieces(y: np.ndarray, graph=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), bridges (B, 2)): the pieces of the targets separated by persistent gaps.

    Single linkage on the kNN graph (``_merge_events``) gives, for every merge of two pieces
    that each hold >= k targets, its persistence p = merge length / birth length of the younger
    piece; ``gap_cut`` reads the threshold off the sorted p; a second pass keeps apart the
    pieces whose merge is at least that persistent. ``bridges`` are the kNN-graph edges that
    join different pieces.
    """
    import scipy.sparse as sp

    g = knn_hop_graph(y) if graph is None else graph
    k = hop_k(y.shape[1])
    events, _, _ = _merge_events(g, k)
    cut = gap_cut(events)
    if not math.isfinite(cut):
        return np.zeros(len(y), dtype=np.int64), np.empty((0, 2), dtype=np.int64)
    _, labels, _ = _merge_events(g, k, cut)
    c = sp.triu(g).tocoo()
    cross = labels[c.row] != labels[c.col]
    return labels, np.stack([c.row[cross], c.col[cross]], axis=1).astype(np.int64)


def hop_graph(y: np.ndarray):
    """The graph along which "paths through the data" are measured: the kNN graph (k = max(16,
    2d), ``knn_graph``) without the edges that bridge a persistent gap (``gap_pieces``)."""
    import scipy.sparse as sp

    g = knn_hop_graph(y)
    pieces, bridges = gap_pieces(y, g)
    if len(bridges):
        c = g.tocoo()
        keep = pieces[c.row] == pieces[c.col]
        g = sp.csr_matrix((c.data[keep], (c.row[keep], c.col[keep])), shape=g.shape)
    return g


def _pair_cover(n: int, pairs: np.ndarray) -> np.ndarray:
    """(P,) bool: True where pairs[p, 0] is the endpoint to search from, False for pairs[p, 1].

    A greedy vertex cover of the pair graph (repeatedly take the target with the most pairs not
    yet covered): every pair gets one covering endpoint, and far fewer Dijkstra sources are
    needed than one per pair's first endpoint (in 16-D about 30 % fewer).
    """
    import heapq

    import scipy.sparse as sp

    m = len(pairs)
    rows = np.r_[pairs[:, 0], pairs[:, 1]]
    ids = np.r_[np.arange(m), np.arange(m)]
    inc = sp.csr_matrix((ids + 1, (rows, ids)), shape=(n, m))   # target -> its pairs (+1: keep zeros)
    deg = np.diff(inc.indptr).astype(np.int64)
    done = np.zeros(m, dtype=bool)
    first = np.zeros(m, dtype=bool)
    heap = [(-int(c), int(i)) for i, c in enumerate(deg) if c > 0]
    heapq.heapify(heap)
    while heap:
        c, i = heapq.heappop(heap)
        if -c != deg[i]:
            if deg[i] > 0:
                heapq.heappush(heap, (-int(deg[i]), i))
            continue
        if deg[i] == 0:
            continue
        mine = inc.data[inc.indptr[i]:inc.indptr[i + 1]] - 1
        mine = mine[~done[mine]]
        done[mine] = True
        first[mine] = pairs[mine, 0] == i
        other = np.where(pairs[mine, 0] == i, pairs[mine, 1], pairs[mine, 0])
        np.subtract.at(deg, other, 1)
        deg[i] = 0
    return first


#: Dijkstra runs of one search spread over worker processes from this many sources (SciPy's
#: dijkstra holds the GIL, so threads would not help); below it one process
PARALLEL_SOURCES = 4096


def detour_jobs() -> int:
    """Worker processes for the graph searches: the CPUs this process may use (at most 8), or the
    environment variable BRENIER_JOBS (1: never start a worker). Workers are forked (POSIX);
    where fork is not available the searches run in this process."""
    import os

    env = os.environ.get("BRENIER_JOBS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"BRENIER_JOBS: expected a positive integer, got {env!r}")
        return int(env)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


_WORKER_GRAPH = None


def _can_fork() -> bool:
    import multiprocessing as mp

    return "fork" in mp.get_all_start_methods()


def _set_worker_graph(g) -> None:
    global _WORKER_GRAPH
    _WORKER_GRAPH = g


def _chunk_ratios(task, g=None) -> np.ndarray:
    """Ratios of the pairs of one chunk of sources: (srcs (S,), limit, offsets (S+1,) into the
    chunk's pairs, dst (P,), length (P,)) -> (P,) path / length (inf beyond the limit)."""
    from scipy.sparse.csgraph import dijkstra

    srcs, limit, offs, dst, length = task
    dist = dijkstra(_WORKER_GRAPH if g is None else g, directed=False, indices=srcs, limit=limit)
    rows = np.repeat(np.arange(len(srcs)), np.diff(offs))
    return dist[rows, dst] / np.maximum(length, 1e-300)


def _search_pairs(g, pairs: np.ndarray, length: np.ndarray, kappa: float,
                  max_sources: int | None = None, n_jobs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bounded Dijkstra for pairs (P, 2) of the graph ``g``: (ratio (P,), searched (P,) bool).

    ratio[p] = path length / length[p] when the path is at most kappa * length[p] (found inside
    the search radius), else inf. Sources: the endpoints of a greedy vertex cover of the pairs
    (``_pair_cover``), each searched with the radius kappa times its longest pair, in chunks of
    sources of similar radii (at most 32 MB of distances at a time: never an N x N matrix).
    ``max_sources``: search only that many sources (the smallest radii first); the pairs of the
    others come back with searched = False. n_jobs: worker processes (default ``detour_jobs()``;
    used from ``PARALLEL_SOURCES`` sources on, each worker holding one copy of the graph).
    """
    n = g.shape[0]
    ratio = np.full(len(pairs), np.inf)
    searched = np.zeros(len(pairs), dtype=bool)
    if len(pairs) == 0:
        return ratio, searched
    first = _pair_cover(n, pairs)
    src = np.where(first, pairs[:, 0], pairs[:, 1])
    dst = np.where(first, pairs[:, 1], pairs[:, 0])
    order = np.argsort(src, kind="stable")
    s_sorted = src[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    bounds = np.r_[starts, len(s_sorted)]
    srcs = s_sorted[starts]
    reach = np.maximum.reduceat(length[order], starts) * kappa
    by_reach = np.argsort(reach, kind="stable")  # chunks of sources with similar search radii
    if max_sources is not None:
        by_reach = by_reach[:max(int(max_sources), 0)]
    chunk = max(1, (32 * 2**20) // (8 * n))
    tasks, members = [], []
    for c in range(0, len(by_reach), chunk):
        sel = by_reach[c:c + chunk]
        e = np.concatenate([order[bounds[s_]:bounds[s_ + 1]] for s_ in sel])
        offs = np.r_[0, np.cumsum(bounds[sel + 1] - bounds[sel])]
        tasks.append((srcs[sel], float(reach[sel].max()), offs, dst[e], length[e]))
        members.append(e)
    jobs = detour_jobs() if n_jobs is None else max(1, int(n_jobs))
    if jobs > 1 and len(by_reach) >= PARALLEL_SOURCES and len(tasks) > 1 and _can_fork():
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork: the workers share the graph copy-on-write and re-import nothing (spawn would
        # re-run an unguarded user script); they only run SciPy's Dijkstra, never torch, so the
        # parent's torch thread pools do not matter
        _set_worker_graph(g)
        try:
            with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=mp.get_context("fork")) as ex:
                results = list(ex.map(_chunk_ratios, tasks, chunksize=max(1, len(tasks) // (8 * jobs))))
        finally:
            _set_worker_graph(None)
    else:
        results = [_chunk_ratios(t, g) for t in tasks]
    for e, r in zip(members, results):
        ratio[e] = r
        searched[e] = True
    ratio[ratio > kappa] = np.inf
    return ratio, searched


def landmark_bounds(g, pairs: np.ndarray, n_landmarks: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(lower (P,), upper (P,)) bounds on the graph distance between the two ends of each pair (P, 2).

    g: sparse (N, N) weighted graph. ALT bounds (Goldberg, Harrelson 2005): for landmarks l with
    exact distances d_l (one full Dijkstra each), |d_l(i) - d_l(j)| <= d(i, j) <= d_l(i) + d_l(j);
    the upper bound is the length of a real path (i -> l -> j). Landmarks by farthest-point
    sampling in the graph metric from a seeded random start (a new component counts as
    farthest, so every component gets one). Memory: (n_landmarks, N) distances, never N x N.
    """
    from scipy.sparse.csgraph import dijkstra

    n = g.shape[0]
    m = int(min(max(n_landmarks, 1), n))
    rng = np.random.default_rng(seed)
    marks = [int(rng.integers(n))]
    dl = np.empty((m, n))
    near = np.full(n, np.inf)
    for t in range(m):
        dl[t] = dijkstra(g, directed=False, indices=marks[t])
        near = np.minimum(near, dl[t])
        if t + 1 < m:
            marks.append(int(np.argmax(near)))       # inf (another component) ranks first
    lower = np.zeros(len(pairs))
    upper = np.full(len(pairs), np.inf)
    step = max(1, (32 * 2**20) // (8 * m))
    for s in range(0, len(pairs), step):
        a, b = dl[:, pairs[s:s + step, 0]], dl[:, pairs[s:s + step, 1]]
        with np.errstate(invalid="ignore"):
            gap = np.abs(a - b)
        gap[~np.isfinite(gap)] = 0.0                # a landmark in another component says nothing
        lower[s:s + step] = gap.max(axis=0)
        upper[s:s + step] = (a + b).min(axis=0)
    return lower, upper


#: path tests of ``detour_ratios`` / ``singular_set``
DETOUR_METHODS = ("auto", "exact", "approx")
#: above this many targets ``method="auto"`` takes the approximate path test
APPROX_ABOVE = 20_000
#: radius (in units of the pair's length) of the local search of the approximate test
KAPPA_LOCAL = 2.5


def _check_method(method) -> str:
    if not isinstance(method, str) or method not in DETOUR_METHODS:
        raise ValueError(f"method: expected one of {DETOUR_METHODS}, got {method!r}")
    return method


def detour_ratios(y: np.ndarray, adjacency: np.ndarray, kappa_max: float = 8.0, graph=None, *,
                  method: str = "exact", seed: int = 0, return_searched: bool = False):
    """(E,) graph shortest path from y_i to y_j divided by |y_i - y_j| (inf if longer than kappa_max).

    y: (N, d) targets; adjacency: (E, 2) any pairs; graph: the hop graph (default ``hop_graph(y)``).
    A pair that is itself an edge of the graph has ratio 1 (no path is shorter than the straight
    segment), a pair in two components of the graph has none (inf), both without a search.

    method="exact": the rest are measured by Dijkstra from the endpoints of a greedy vertex cover
    of the pairs (``_pair_cover``) with a search radius of kappa_max times the source's longest
    pair. In d = 16 that radius holds nearly every target: the cost is (sources) x N, i.e. N^2.

    method="approx" (the approximate path test): the same search with the radius
    ``KAPPA_LOCAL`` (2.5) times the pair's length, exact for every pair whose detour is at most
    2.5 (most pairs), with a search ball that stops growing with N; every pair left gets the
    landmark upper bound (``landmark_bounds``: the length of a real path through a landmark)
    when it is within kappa_max, else inf. An approximate ratio is never below the exact one.
    ``refine_detours`` then makes the ratios exact up to any kappa (``singular_set`` does so at
    its threshold, so its labels are those of the exact test at that threshold).
    method="auto": "approx" above ``APPROX_ABOVE`` targets, else "exact". seed: the landmarks'.

    return_searched: also return (E,) float64, the ratio up to which each entry is exact (a pair
    whose true ratio is at most that value has it in the output): kappa_max for "exact"; inf for
    hop edges and pairs across components.
    """
    from scipy.sparse.csgraph import connected_components

    _check_method(method)
    n, d = y.shape
    if method == "auto":
        method = "approx" if n > APPROX_ABOVE else "exact"
    if len(adjacency) == 0:
        return (np.empty(0), np.empty(0)) if return_searched else np.empty(0)
    g = hop_graph(y) if graph is None else graph
    adjacency = np.asarray(adjacency, dtype=np.int64)
    length = np.linalg.norm(y[adjacency[:, 0]] - y[adjacency[:, 1]], axis=1)
    out = np.full(len(adjacency), np.inf)
    searched = np.full(len(adjacency), np.inf)
    _, comp = connected_components(g, directed=False)
    edge = np.asarray(g[adjacency[:, 0], adjacency[:, 1]]).ravel() > 0
    out[edge] = 1.0
    todo = np.flatnonzero(~edge & (comp[adjacency[:, 0]] == comp[adjacency[:, 1]]))
    radius = kappa_max if method == "exact" else min(KAPPA_LOCAL, kappa_max)
    out[todo], _ = _search_pairs(g, adjacency[todo], length[todo], radius)
    searched[todo] = radius
    rest = todo[~np.isfinite(out[todo])]
    if radius < kappa_max and len(rest):
        _, upper = landmark_bounds(g, adjacency[rest], seed=seed)
        ratio = upper / np.maximum(length[rest], 1e-300)
        out[rest] = np.where(ratio <= kappa_max, ratio, np.inf)
    return (out, searched) if return_searched else out


def refine_detours(y: np.ndarray, adjacency: np.ndarray, detour: np.ndarray, searched: np.ndarray,
                   kappa: float, graph, *, labels_only: bool = False, mask: np.ndarray | None = None) -> int:
    """Make ``detour`` (E,) exact up to ``kappa``, in place: every pair not yet known exactly that
    far (``searched`` (E,) < kappa, from ``detour_ratios(..., return_searched=True)``, and its
    ratio not already found inside that radius) is searched with the radius kappa times its
    length. Afterwards every ratio at most kappa is the exact one, and a ratio above kappa means
    the exact one is too: the regular/singular labels at kappa, and at any threshold below it,
    are the exact test's. Updates ``searched``; returns the number of pairs searched.

    labels_only: skip the pairs whose ratio is already an upper bound at most kappa (a real path:
    regular at kappa whatever the exact value): afterwards the labels at kappa are exact, and a
    ratio is exact wherever it is at most ``searched``. mask: (E,) bool, only these pairs.

    Invariant (kept by every function here): a ratio at most ``searched`` is exact; a ratio above
    it is an upper bound (a real path, or inf) of an exact ratio that is itself above ``searched``.
    """
    todo = (searched < kappa) & (detour > searched)
    if labels_only:
        todo &= detour > kappa
    if mask is not None:
        todo &= mask
    need = np.flatnonzero(todo)
    if len(need) == 0:
        return 0
    length = np.linalg.norm(y[adjacency[need, 0]] - y[adjacency[need, 1]], axis=1)
    found, _ = _search_pairs(graph, np.asarray(adjacency, dtype=np.int64)[need], length, kappa)
    detour[need] = np.where(np.isfinite(found), found, detour[need])   # the landmark bound stays above kappa
    searched[need] = kappa
    return int(len(need))


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component labels (N,), numbered by decreasing component size."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    g = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    sizes = np.bincount(lab)
    rank = np.empty_like(sizes)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    return rank[lab].astype(np.int64)


def _nearest_with_facets(y: np.ndarray, adj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lonely (L,) int64, near (L,) int64): the targets with no facet at all and, for each, the
    nearest target that has facets (KD-tree: no L x N matrix). Both empty when no target, or
    every target, is lonely."""
    from scipy.spatial import cKDTree

    n = len(y)
    lonely = np.ones(n, dtype=bool)
    lonely[adj.reshape(-1)] = False
    if not lonely.any() or lonely.all():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    rest = np.flatnonzero(~lonely)
    _, near = cKDTree(y[rest]).query(y[lonely], k=1)
    return np.flatnonzero(lonely), rest[np.asarray(near, dtype=np.int64)]


def _attach_isolated(y: np.ndarray, adj: np.ndarray, modes: np.ndarray, nearest=None) -> np.ndarray:
    """Targets with no facet at all (an empty cell, or one no sample fell next to) carry no mass:
    give each the mode of its nearest target that has facets, then renumber by size.
    nearest: ``_nearest_with_facets(y, adj)`` when the caller already has it (``auto_kappa``)."""
    lonely, near = _nearest_with_facets(y, adj) if nearest is None else nearest
    if len(lonely) == 0:
        return modes
    modes = modes.copy()
    modes[lonely] = modes[near]
    _, lab = np.unique(modes, return_inverse=True)
    sizes = np.bincount(lab)
    rank = np.empty_like(sizes)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    return rank[lab].astype(np.int64)


def _longest_run_start(grid: np.ndarray, counts: list[int]) -> float:
    best, best_len, start = 0, 0, 0
    for i in range(1, len(grid) + 1):
        if i == len(grid) or counts[i] != counts[start]:
            if i - start > best_len:
                best, best_len = start, i - start
            start = i
    return float(grid[best])


def _kappa_grid() -> np.ndarray:
    """The grid of ``auto_kappa``: 13 thresholds, geometric from DEFAULT_KAPPA to KAPPA_MAX."""
    return np.geomspace(DEFAULT_KAPPA, KAPPA_MAX, 13)


def auto_kappa(y: np.ndarray, adj: np.ndarray, detour: np.ndarray, searched: np.ndarray | None = None,
               graph=None) -> float:
    """The detour threshold read off the data: the start of the longest-lived number of modes.

    y: (N, d) targets, adj: (E, 2) facet pairs, detour: (E,) their detour ratios.
    For kappa on a geometric grid from 2 to ``KAPPA_MAX`` the number of modes m(kappa) can only
    fall as kappa grows (more facets count as regular). A true gap between modes has an infinite
    detour (no path through the data at all), so the true mode count persists over a long range
    of kappa, while the merging of spurious pieces (in high dimension, k-NN paths inside one
    mode are longer than in 2-D) happens early. We take the smallest kappa of the longest run of
    equal m (in 2-D toy sets m is constant and kappa = 2).

    searched, graph: for detours known exactly only up to ``searched`` (E,) (``detour_ratios``
    with return_searched=True; the invariant of ``refine_detours``), updated in place. m(kappa)
    is then computed exactly with few searches (Kruskal's argument): the facets known regular
    at kappa (exact ratio, or a real path, at most kappa) give components; an unknown facet
    whose two ends are already in one component cannot change m(kappa), so only the unknown
    facets that bridge two components are searched, to kappa. The counts, hence kappa, are
    those of fully exact detours. Without ``searched`` the detours are taken as exact.
    """
    grid = _kappa_grid()
    n = len(y)
    nearest = _nearest_with_facets(y, adj)   # once, not once per kappa
    counts = []
    for k in grid:
        comp = _components(n, adj[detour <= k])
        unknown = None if searched is None else (detour > k) & (searched < k)
        if unknown is not None and unknown.any():
            bridge = unknown & (comp[adj[:, 0]] != comp[adj[:, 1]])
            if bridge.any():
                if graph is None:
                    graph = hop_graph(y)
                refine_detours(y, adj, detour, searched, float(k), graph, labels_only=True, mask=bridge)
                comp = _components(n, adj[detour <= k])   # the bridges found regular join pieces
        counts.append(int(_attach_isolated(y, adj, comp, nearest).max()))
    return _longest_run_start(grid, counts)


def _detours_at(y: np.ndarray, adj: np.ndarray, graph, threshold, t: float, method: str, seed: int):
    """(detour (E,), searched (E,), kappa): the detours of the pairs, how far each is exact (the
    invariant of ``refine_detours``) and the threshold of the detour rule ("auto":
    ``auto_kappa``); the labels at kappa are the exact test's whatever the method.

    Approximate detours (exact up to 2.5, landmark bounds above) are searched further only where
    a label needs it: with a number, the pairs not known to be on one side of it; with "auto",
    the pairs ``auto_kappa`` needs to count modes exactly (those bridging two components), then
    those left unknown at the chosen kappa. (Searching every pair the local search left to
    KAPPA_MAX, as before 2026-12, cost ~15,000 whole-graph Dijkstra runs, ~10 min, at 60,000
    MNIST codes.) ``rethreshold`` searches further when asked for another kappa.
    """
    detour, searched = detour_ratios(y, adj, kappa_max=max(KAPPA_MAX, t), graph=graph, method=method, seed=seed,
                                     return_searched=True)
    if threshold == "auto":
        t = auto_kappa(y, adj, detour, searched, graph)
    refine_detours(y, adj, detour, searched, t, graph, labels_only=True)
    return detour, searched, t


def _check_threshold(threshold, criterion: str) -> float:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if isinstance(threshold, str):
        if threshold != "auto":
            raise ValueError(f"threshold: expected 'auto' or a number, got {threshold!r}")
        if criterion == "angle":
            raise ValueError("threshold: criterion='angle' has no automatic threshold; give an angle in radians in (0, pi)")
        return DEFAULT_KAPPA
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise TypeError(f"threshold: expected 'auto' or a number, got {type(threshold).__name__}")
    t = float(threshold)
    if criterion == "detour" and not (t > 1.0 and math.isfinite(t)):
        raise ValueError(f"threshold: a detour ratio must be a finite number > 1 (the path over the straight distance), got {threshold!r}")
    if criterion == "angle" and not (0.0 < t < math.pi):
        raise ValueError(f"threshold: an angle must lie in (0, pi) radians, got {threshold!r}")
    return t


def singular_set(ot, threshold="auto", *, criterion: str = "detour", adjacency: str = "auto",
                 n_samples: int | None = None, seed: int | None = None, method: str = "auto") -> SingularSet:
    """Detect the singular set of a fitted ``SemiDiscreteOT`` (see the module docstring).

    threshold : "auto" (kappa read off the data, ``auto_kappa``) or a number: a detour ratio > 1,
        or an angle in (0, pi) radians for ``criterion="angle"``.
    adjacency : "auto" (exact for a uniform 2-D polygonal source, else sampled), "exact", "sampled".
    n_samples : source samples for the sampled adjacency (default 10 N, at least 2e4).
    method : the path test of the detours (``detour_ratios``): "exact", "approx" (bounded local
        search and landmark upper bounds, then searches only where a label or a mode count
        needs one: ``_detours_at``; the same labels and modes) or "auto" ("approx" above
        ``APPROX_ABOVE`` = 20,000 targets). The angle criterion measures no paths.
    """
    ot._check_fitted()
    _check_method(method)
    t = _check_threshold(threshold, criterion)
    if adjacency not in ("auto", "exact", "sampled"):
        raise ValueError(f"adjacency: expected 'auto', 'exact' or 'sampled', got {adjacency!r}")
    y = ot._unique_targets.numpy().astype(np.float64)
    n, d = y.shape
    src = ot.source_
    can_exact = d == 2 and src.uniform and src.as_polygon() is not None
    if adjacency == "exact" and not can_exact:
        raise ValueError("adjacency: 'exact' needs a uniform 2-D polygonal source (Polygon, UniformBox(2), UniformBall(2))")
    exact = can_exact and adjacency != "sampled"
    if exact:
        adj = np.asarray(ot.power_diagram().adjacency, dtype=np.int64).reshape(-1, 2)
    else:
        if n_samples is None:
            # ~10 samples a cell: with the former cap of 10^5, 60,000 MNIST codes got 1.7 a cell,
            # a median of 3 facets per cell and 2,209 cells with none (then no singular facet at
            # all); 6·10^5 samples give 17 and 4 (and 518,048 facets; the top-2 pass takes ~23 s)
            n_samples = int(max(10 * n, 20_000))
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples: expected a positive integer, got {n_samples!r}")
        s = ot.seed + 12_345 if seed is None else int(seed)
        adj = sampled_adjacency(ot._potential, src, int(n_samples), s)
    angles = facet_angles(y, adj)
    graph = hop_graph(y)
    s_ = int(ot.seed or 0) if seed is None else int(seed)
    if criterion == "detour":
        detour, searched, t = _detours_at(y, adj, graph, threshold, t, method, s_)
    else:
        detour, searched = detour_ratios(y, adj, kappa_max=KAPPA_MAX, graph=graph, method=method, seed=s_,
                                         return_searched=True)
    sing = detour > t if criterion == "detour" else angles > t
    modes = _attach_isolated(y, adj, _components(n, adj[~sing]))
    return SingularSet(adjacency=adj, angles=angles, detour=detour, singular=sing, modes=modes, targets=y,
                       criterion=criterion, threshold=t, exact=exact, searched=searched, _graph=graph)


# ----------------------------------------------------------------- geometry in the source
def _scores(ot, x: torch.Tensor) -> torch.Tensor:
    """(M, N) float64 scores; only for small M (path walks)."""
    y = ot._unique_targets.to(x.device)
    return x @ y.T + ot._unique_heights.to(x.device)


def cell_walk(ot, a: torch.Tensor, b: torch.Tensor, max_cells: int = 100_000) -> tuple[list[int], list[float]]:
    """The power cells met by the straight segment x(t) = a + t (b - a), t in [0, 1]; a, b: (d,) float64.

    Returns (cells, entries): the cells in order and the parameter t at which each is entered
    (0 for the first).

    Exact: from the current cell i at parameter t, the exit is the smallest t' > t where some
    score s_j(x(t')) reaches s_i(x(t')); both are affine in t.
    """
    y = ot._unique_targets.double()
    h = ot._unique_heights.double()
    s0 = y @ a + h                      # scores at t = 0
    ds = y @ (b - a)                    # their slope in t
    i = int(torch.argmax(s0))
    cells, entries, t = [i], [0.0], 0.0
    for _ in range(max_cells):
        num = s0[i] - s0                # s_i - s_j at t = 0
        den = ds - ds[i]                # how fast s_j - s_i grows
        with np.errstate(all="ignore"):
            tj = num / den
        ok = (den > 1e-15) & (tj > t + 1e-13)
        ok[i] = False
        if not bool(ok.any()):
            break
        tj = torch.where(ok, tj, torch.full_like(tj, math.inf))
        t_next = float(tj.min())
        if t_next >= 1.0:
            break
        # ties: among cells reached at t_next, the best just after it
        cand = torch.nonzero(tj <= t_next + 1e-12).reshape(-1)
        j = int(cand[torch.argmax(ds[cand])]) if len(cand) > 1 else int(cand[0])
        cells.append(j)
        entries.append(t_next)
        i, t = j, t_next
    return cells, entries


def crossings(ot, path, S: SingularSet) -> np.ndarray:
    """int64 indices k where the segment path[k] -> path[k+1] crosses a singular facet of S.

    path : (T, d), T >= 2. Exact: the segment's cell walk is followed and each consecutive pair
    of cells is checked with ``S.separates`` (a singular facet, or a change of mode).
    """
    from ._array import as_points

    ot._check_fitted()
    d = ot.targets_.shape[1]
    p = as_points(path, "path", dim=d, dtype=torch.float64, min_rows=2)
    out = []
    for k in range(len(p) - 1):
        cells, _ = cell_walk(ot, p[k], p[k + 1])
        if len(cells) > 1:
            c = np.asarray(cells, dtype=np.int64)
            if S.separates(c[:-1], c[1:]).any():
                out.append(k)
    return np.asarray(out, dtype=np.int64)


def boundary_distance(ot, x, S: SingularSet, k: int = 32) -> np.ndarray:
    """(M,) distance from each source point x (M, d) to the nearest singular facet (0 on it).

    Exact in 2-D with an exact adjacency: the Euclidean distance to the union of the singular
    power edges (segments, clipped to the source domain). Otherwise: the distance to the nearest
    singular facet of x's own cell among its k best neighbours, measured to the facet's
    hyperplane, (s_i(x) - s_j(x)) / |y_i - y_j| (exact when the foot of the perpendicular lies on
    the facet and no other cell's singular facet is nearer). inf when no such facet.
    """
    from ._array import as_points

    ot._check_fitted()
    d = ot.targets_.shape[1]
    pts = as_points(x, "x", dim=d, dtype=torch.float64)
    if S.n_facets == 0:
        return np.full(len(pts), np.inf)
    if S.exact:
        import shapely

        pd = ot.power_diagram()
        keys = S.pair_keys(regular=False)
        adj = np.asarray(pd.adjacency, dtype=np.int64)
        sel = np.isin(adj[:, 0] * len(S.modes) + adj[:, 1], keys)
        lines = shapely.multilinestrings(list(pd.facet_segments[sel]))
        lines = shapely.intersection(lines, pd.domain.buffer(1e-9))
        return shapely.distance(shapely.points(pts.numpy()), lines)
    y = ot._unique_targets.double()
    keys = torch.from_numpy(S.pair_keys(regular=False))
    n = len(S.modes)
    out = []
    kk = min(k, n)
    for s in range(0, len(pts), 8192):
        xb = pts[s:s + 8192]
        _, idx = ot._potential.topk(xb.to(ot.device_), kk)
        idx = idx.cpu()
        vals = (xb[:, None, :] * y[idx]).sum(dim=2) + ot._unique_heights.double()[idx]  # float64 scores
        own = idx[:, :1]
        gap = vals[:, :1] - vals
        dist = gap / torch.linalg.norm(y[idx] - y[own], dim=2).clamp_min(1e-300)
        pair = own * n + idx
        is_sing = torch.isin(pair, keys)
        dist = torch.where(is_sing, dist, torch.full_like(dist, math.inf))
        out.append(dist.min(dim=1).values)
    return torch.cat(out).numpy()
