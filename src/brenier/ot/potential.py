"""The Brenier potential u_h(x) = max_i <x, y_i> + h_i and its chunked, exact search.

Every solver and sampler in brenier spends its time here: an argmax (or top-k) over the
scores ``<x, y_i> + h_i`` of M points against N targets. Four exact paths, one tie rule
(argmax: the lowest target index among equal scores, as ``torch.max``; top-k: best first, equal
scores by ascending index, and at the k-th place the lowest indices kept):

* ``"brute"`` — the reference: one ``addmm`` per block of rows against all N targets, reduced at
  once (the scores of a block are bounded by ``memory_budget`` bytes).
* ``"tiled"`` — the same scores, one cache-sized tile (rows x 2048 target columns, 2 MiB) at a
  time, reduced into a running (max, argmax) / top-k. Measured on this CPU: torch's
  max-with-index kernel runs at ~0.5 G elements/s whatever the block size, ``amax`` at 7-10; so
  each tile is reduced to strip maxima by ``amax`` and a row's index is looked up, inside one strip
  of a tile still in cache, only when the tile improves that row.
* ``"pruned"`` — skips targets that provably cannot win. Targets are grouped (k-means on y_i, about
  sqrt(N) groups); each group's best score for a sample x is bounded from above (``_TargetGroups``:
  a linear bound ``<x, c_g> + max_i (h_i + |x| |y_i - c_g|)`` and a nearest-ball bound after
  fitting the heights by a quadratic, tight near a Voronoi start). The group with the best bound is
  evaluated exactly, which gives a lower bound on the sample's best (its k-th best for top-k);
  only groups whose bound reaches it (minus a rounding allowance) are evaluated, as dense
  sub-blocks (samples routed per group). The grouping depends on the targets only;
  ``set_heights`` refreshes the height parts of the bounds in O(N d).
* ``"fused"`` — CPU, float32: every score, but none written to memory. A small C kernel
  (``brenier.ot.fused``, compiled at first use with the machine's compiler) keeps an 8 x 32 score
  block in vector registers and compares it with each row's k-th best; on AVX512-BF16 CPUs
  (N >= 4096) it first screens each block in bfloat16 and rescores in float32 only the panels
  that could enter a row's list (exact: the float32 kernel's bits). Measured on this 2-core CPU,
  all 60,000 MNIST codes (``benchmarks/results/argmax_fused.json``), G pairs/s: d = 16 argmax
  3.5 in float32, 9.2 screened (tiled 2.3, matmul alone 2.7), top-4 3.3 / 7.7 (tiled 1.2);
  d = 64 argmax 1.43 (the float32 FMA peak) / 4.7 (a two-level screen: these codes lie near a
  32-dimensional subspace; 3.2 with one level).

``"auto"`` (the default) uses ``"brute"`` for small N; otherwise the dense path -- ``"fused"``
where it is available (CPU, float32 scores, a C compiler), else ``"tiled"`` -- except that for
N >= 8192 it probes ``"pruned"`` on one block after each change of heights (its bounds and first
pass: enough to know the pairs the full search would compute) and keeps pruning if that is under
35 % of the pairs (2.5 % against the fused kernel, which a top-k never prunes against). Pruning
does not pay at low N, in high dimension, or for targets without well-separated clusters:
measured, on real MNIST codes (d = 16, 60,000) the ball bounds still leave ~60 % of the pairs.

Rounding: scores are computed in ``compute_dtype``; BLAS rounds one pair's score differently
depending on its place in a block (measured with MKL: column alignment, tiny blocks), so two paths
may return different targets where the two best scores are within float32 rounding of each other
(values then agree to that rounding). The fused kernel rounds a pair the same way wherever it
sits (h, then d multiply-adds in order). Where the arithmetic is exact (e.g. small integers) all
paths agree bitwise. KeOps' ``LazyTensor.argmax`` (pykeops 2.3) compiled here in ~11 s but ran at
~0.02 G pairs/s on this CPU, far below ``"tiled"``: not used. On CUDA the tiled path runs (device
agnostic); a fused CUDA kernel (Triton or KeOps) is the natural next step there.
Everything stays on the targets' device; no (M, N) matrix larger than ``memory_budget`` exists.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from brenier.ot import fused as _fused_kernel

#: default bound on the bytes of one block of scores (rows x N x 4 bytes)
DEFAULT_MEMORY_BUDGET = 256 * 2**20

#: score-tile size of the tiled path, in elements (4 bytes each in float32): 2**20 = 4 MiB; measured
#: (benchmarks/argmax.py) far faster than the 256 MiB blocks of "brute".
TILE_ELEMENTS = 2**20
#: target columns of one tile (rows = TILE_ELEMENTS // columns). Swept on the idle 2-core CPU, one
#: thread, all 60,000 MNIST codes at d = 16 (G pairs/s, argmax / top-8): 2^19 x 2048 1.49 / 0.34,
#: 2^20 x 4096 1.64 / 0.43, 2^20 x 8192 1.48 / 0.52; the tile outgrows L2 but stays in L3.
TILE_COLUMNS = 4096
#: below this many targets "auto" does not build an index (pruning's overhead would not pay)
AUTO_MIN_TARGETS = 8192
#: at most this many targets, "auto" runs the brute-force path: a whole score block is small, and
#: the tiled path's per-tile work costs more than it saves (measured, 16,384 x N, d = 8, one thread:
#: N = 100: argmax 3.6 ms brute vs 23 ms tiled, top-8 42 vs 79 ms; N = 1,000: top-8 equal, argmax
#: tiled 2.6x faster). k <= 1 (argmax) switches earlier than a top-k.
AUTO_BRUTE_MAX = {"argmax": 256, "topk": 1024}
#: the same against the fused kernel. Measured (benchmarks/search_thresholds.py, JSON
#: benchmarks/results/search_thresholds.json: 16,384 x N, d = 8, 2 threads, brute / fused time):
#: argmax 0.84 at N = 128, 1.33 at 256 (0.86-0.97 in earlier runs), 2.7 at 512; a top-k is faster
#: fused at every N measured (top-2 and top-8 1.3-2.1x at N = 4-16), so it never runs brute here
AUTO_BRUTE_MAX_FUSED = {"argmax": 256, "topk": 0}
#: rows of the probe block on which "auto" measures the pruned search's share of the work
PROBE_ROWS = 2048
#: the same when the alternative is the fused kernel: pruning must then skip ~97 % of the pairs to
#: pay, which 512 rows tell as well (a probe that ran the whole pruned search on 2,048 rows cost
#: ~20 % of a 20,000-row argmax at N = 60,000; it now stops before the second pass)
PROBE_ROWS_FUSED = 512
#: "auto" keeps pruning when it computes less than this share of the brute-force pairs (pairs +
#: bounds): measured on this CPU, a pruned pair costs ~2x a tiled one (gathers, small blocks,
#: per-group merges), so 0.35 leaves a margin (benchmarks/argmax.py)
PRUNE_PAYS = 0.35
#: the same threshold against the fused kernel (``brenier.ot.fused``), for argmax; a top-k (k >= 2)
#: never prunes against it. Measured (benchmarks/search_thresholds.py, JSON
#: benchmarks/results/search_thresholds.json: 60,000 targets in 64 clusters, d = 16, 20,000 samples;
#: pruned / fused time at the pruned search's share of the pairs): argmax 0.84 at 0.024, 1.02 at
#: 0.029, 1.34 at 0.043, 1.56 at 0.14; top-4 0.99 at 0.025, 1.55 at 0.033.
PRUNE_PAYS_FUSED = 0.025

#: above this k a top-k runs on the tiled path: the pruned search's per-group merges of k-long
#: lists cost more than they save (the bound of the k-th best also prunes little)
PRUNED_MAX_K = 32

SEARCHES = ("auto", "brute", "tiled", "pruned", "fused")


class BrenierPotential:
    """u_h(x) = max_i <x, y_i> + h_i, a convex piecewise-affine function.

    targets: (N, d) tensor y_i; heights: (N,) tensor h_i (float64 master copy).
    Scores are computed in ``compute_dtype`` (float32 by default: the Monte Carlo noise is far
    above its rounding) on the targets' device.

    search : ``"auto"`` (default), ``"brute"`` (the reference), ``"tiled"``, ``"pruned"`` or
        ``"fused"`` (CPU float32; RuntimeError where its kernel cannot be compiled); all
        give the same argmax / top-k under one tie rule, up to float rounding at near-ties (see
        the module docstring). ``n_groups`` (default ~sqrt(N)) and ``seed`` set the k-means
        grouping of the pruned search (built at its first query, kept across ``set_heights``).

    ``evaluations`` counts score evaluations since construction or the last ``reset_count``:
    sample-target pairs actually computed, plus one per sample-group bound (a d-dimensional dot
    product, like a pair); ``bound_evaluations`` is the part of it spent on bounds.
    """

    def __init__(
        self,
        targets: torch.Tensor,
        heights: torch.Tensor,
        *,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        compute_dtype: torch.dtype = torch.float32,
        search: str = "auto",
        n_groups: int | None = None,
        seed: int = 0,
    ):
        if not isinstance(targets, torch.Tensor) or not isinstance(heights, torch.Tensor):
            raise TypeError(f"targets and heights must be torch tensors, got {type(targets).__name__} and {type(heights).__name__}")
        if targets.ndim != 2 or heights.shape != (targets.shape[0],):
            raise ValueError(f"targets (N, d) and heights (N,) expected, got {tuple(targets.shape)} and {tuple(heights.shape)}")
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if search == "fused" and not _fused_possible(targets.device, compute_dtype):
            raise RuntimeError(f"search='fused' needs float32 scores on the CPU and a compiled kernel "
                               f"(device {targets.device}, compute_dtype {compute_dtype}): "
                               f"{_fused_kernel.unavailable_reason() or 'not a CPU float32 potential'}")
        if n_groups is not None and (int(n_groups) < 1 or int(n_groups) > targets.shape[0]):
            raise ValueError(f"n_groups must be in [1, N={targets.shape[0]}], got {n_groups}")
        if int(memory_budget) < 1:
            raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
        self.targets = targets
        self.device = targets.device
        self.compute_dtype = compute_dtype
        self.memory_budget = int(memory_budget)
        self.search = search
        self.n_groups = None if n_groups is None else int(n_groups)
        self.seed = int(seed)
        self._yt = targets.to(compute_dtype).T.contiguous()  # (d, N)
        self.evaluations = 0
        self.bound_evaluations = 0
        self._index: _TargetGroups | None = None
        self._packed: _fused_kernel.PackedTargets | None = None  # the fused kernel's target panels
        self._choice: str | None = None  # what "auto" settled on for the current heights
        self.last_probe: dict | None = None  # timings of "auto"'s last probe (for benchmarks)
        self.set_heights(heights)

    @property
    def n_targets(self) -> int:
        return self.targets.shape[0]

    @property
    def dim(self) -> int:
        return self.targets.shape[1]

    def set_heights(self, heights: torch.Tensor) -> None:
        """Replace the heights h (N,); the target index stays, its height envelopes are refreshed."""
        if heights.shape != (self.n_targets,):
            raise ValueError(f"heights must have shape ({self.n_targets},), got {tuple(heights.shape)}")
        if not bool(torch.isfinite(heights).all()):
            raise ValueError("heights must be finite (no NaN or inf)")
        self.heights = heights.to(device=self.device, dtype=torch.float64)
        self._h = self.heights.to(self.compute_dtype)[None, :]
        if self._index is not None:
            self._index.set_heights(self._h[0])
        if self._packed is not None:
            self._packed.set_heights(self._h[0])
        if self.search == "auto" and self._choice is not None:
            self._choice = None  # pruning's yield depends on h: probe again at the next query

    def reset_count(self) -> None:
        self.evaluations = 0
        self.bound_evaluations = 0

    @property
    def block_rows(self) -> int:
        """Rows of one score block under the memory budget (at least 1)."""
        per_row = self.n_targets * torch.finfo(self.compute_dtype).bits // 8
        return max(1, self.memory_budget // max(per_row, 1))

    def score_blocks(self, x: torch.Tensor | Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x_block, scores_block)`` with scores (b, N) = x_block @ Y^T + h.

        ``x`` is one (M, d) tensor or an iterable of such blocks (e.g. a source stream).
        """
        step = self.block_rows
        for xb in self._blocks(x):
            for s in range(0, xb.shape[0], step):
                xc = xb[s : s + step]
                self.evaluations += xc.shape[0] * self.n_targets
                yield xc, torch.addmm(self._h, xc, self._yt)

    # ------------------------------------------------------------------ queries
    def argmax(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (M,), indices (M,) int64): u_h(x) and the power cell holding each x.

        ``x``: (M, d) tensor or an iterable of (b, d) blocks. Ties go to the lowest index.
        """
        vals, idx = [], []
        for xb in self._blocks(x):
            v, i = self._query(xb, None)
            vals.append(v)
            idx.append(i)
        return _cat(vals, self.compute_dtype, self.device), _cat(idx, torch.int64, self.device)

    def topk(self, x, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (M, k), indices (M, k)): the k largest scores of each x, best first.

        ``x``: (M, d) tensor or an iterable of (b, d) blocks; k is capped at N. Equal scores are
        ordered by ascending target index (and at the k-th place the lowest indices are kept).
        """
        if isinstance(k, bool) or not hasattr(k, "__index__"):
            raise TypeError(f"k must be an integer, got {type(k).__name__}")
        if operator.index(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(operator.index(k), self.n_targets)
        vals, idx = [], []
        for xb in self._blocks(x):
            v, i = self._query(xb, k)
            vals.append(v)
            idx.append(i)
        if not vals:
            return (torch.empty(0, k, dtype=self.compute_dtype, device=self.device),
                    torch.empty(0, k, dtype=torch.int64, device=self.device))
        return torch.cat(vals), torch.cat(idx)

    def runner_up(self, x) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(best (M,), index (M,) int64, second (M,)): u_h(x), its cell (ties to the lowest index,
        as ``argmax``) and the best score among the other targets.

        The gap best − second certifies the cell against later height changes
        (``brenier.ot.reuse``). The tiled path finds it at ~the cost of ``argmax`` (the strip
        maxima it reduces to are exact maxima of the other strips); the other paths use a top-2.
        With one target, ``second`` is −inf.
        """
        vals, idx, sec = [], [], []
        for xb in self._blocks(x):
            mode = self.search
            if mode == "auto":  # against the fused kernel a top-2 is the runner-up's cheapest path
                mode = self._auto(xb, 2 if _fused_possible(self.device, self.compute_dtype) else None)
            if mode == "tiled":
                v, i, s = self._tiled(xb, None, second=True)
            elif mode == "fused" and self.n_targets > 1:
                v2, i2 = self._fused(xb, 2)
                v, i, s = v2[:, 0], i2[:, 0], v2[:, 1]
            elif self.n_targets == 1:
                v, i = self._query(xb, None)
                s = torch.full_like(v, -math.inf)
            else:
                v2, i2 = self._brute(xb, 2) if mode == "brute" else self._pruned(xb, 2)
                v, i, s = v2[:, 0], i2[:, 0], v2[:, 1]
            vals.append(v)
            idx.append(i)
            sec.append(s)
        dt = self.compute_dtype
        return _cat(vals, dt, self.device), _cat(idx, torch.int64, self.device), _cat(sec, dt, self.device)

    # ------------------------------------------------------------------ internals
    def _blocks(self, x) -> Iterator[torch.Tensor]:
        blocks = (x,) if isinstance(x, torch.Tensor) else x
        for xb in blocks:
            if not isinstance(xb, torch.Tensor):
                raise TypeError(f"x must be a torch tensor or an iterable of tensors, got {type(xb).__name__}")
            if xb.ndim != 2 or xb.shape[1] != self.dim:
                raise ValueError(f"x must have shape (M, {self.dim}), got {tuple(xb.shape)}")
            if not bool(torch.isfinite(xb).all()):
                raise ValueError("x must be finite (no NaN or inf)")
            if xb.shape[0] == 0:
                continue
            yield xb.to(device=self.device, dtype=self.compute_dtype)

    def _query(self, xb: torch.Tensor, k: int | None):
        mode = self.search
        if mode == "auto":
            mode = self._auto(xb, k)
        if mode == "brute":
            return self._brute(xb, k)
        if mode == "fused" and (k is None or k <= _fused_kernel.MAX_K):
            v, i = self._fused(xb, 1 if k is None else k)
            return (v[:, 0], i[:, 0]) if k is None else (v, i)
        if mode in ("tiled", "fused") or (k is not None and k > PRUNED_MAX_K):
            return self._tiled(xb, k)
        return self._pruned(xb, k)

    def _auto(self, xb: torch.Tensor, k: int | None):
        """"brute", "tiled", "fused" or "pruned" for this query.

        The probe runs the pruned search on the first PROBE_ROWS rows (PROBE_ROWS_FUSED against
        the fused kernel) up to the point where its work is known -- bounds, first pass, the groups
        each row still needs (``_TargetGroups.search(predict=True)``) -- and skips the second pass;
        pruning is kept when the full search would compute under PRUNE_PAYS (PRUNE_PAYS_FUSED) of
        the brute-force pairs. A count, not a timing: deterministic and free of the machine's load.
        The probe's answers are discarded (the work it did is counted): every row is then
        answered by the chosen path alone, so a result does
        not depend on which rows happened to be probed -- the tiled and pruned paths can round one
        score differently in the last float32 bit, and without this a fit split over ranks (each
        probing its own first chunk) drifted from the one-process fit by 2.4e-7 at N = 20,000."""
        dense = "fused" if _fused_possible(self.device, self.compute_dtype) else "tiled"
        if self.n_targets <= (AUTO_BRUTE_MAX_FUSED if dense == "fused" else AUTO_BRUTE_MAX)["argmax" if k is None or k <= 1 else "topk"]:
            return "brute"
        if self.n_targets < AUTO_MIN_TARGETS or (k is not None and k > (1 if dense == "fused" else PRUNED_MAX_K)):
            return dense
        if self._choice is not None:
            return self._choice
        rows = min(PROBE_ROWS, PROBE_ROWS_FUSED) if dense == "fused" else PROBE_ROWS
        if xb.shape[0] < rows:
            return dense  # too few rows to judge: the safe path, decide on a bigger query
        probe = xb[:rows]
        _, _, pairs, bounds, total = self._ensure_index().search(probe, k, predict=True)
        self.evaluations += pairs + bounds
        self.bound_evaluations += bounds
        share = total / (probe.shape[0] * self.n_targets)
        self._choice = "pruned" if share < (PRUNE_PAYS_FUSED if dense == "fused" else PRUNE_PAYS) else dense
        self.last_probe = {"rows": probe.shape[0], "work_share": share, "choice": self._choice}
        return self._choice

    def _brute(self, xb: torch.Tensor, k: int | None):
        vals, idx = [], []
        step = self.block_rows
        for s in range(0, xb.shape[0], step):
            xc = xb[s : s + step]
            self.evaluations += xc.shape[0] * self.n_targets
            sc = torch.addmm(self._h, xc, self._yt)
            v, i = sc.max(dim=1) if k is None else _topk_lowest(sc, k)
            vals.append(v)
            idx.append(i)
        return _cat(vals, self.compute_dtype, self.device), _cat(idx, torch.int64, self.device)

    def _fused(self, xb: torch.Tensor, k: int):
        """The fused CPU kernel (``brenier.ot.fused``): values (b, k), indices (b, k)."""
        if self._packed is None:
            self._packed = _fused_kernel.PackedTargets(self.targets)
            self._packed.set_heights(self._h[0])
        v, i, rescored = _fused_kernel.topk(xb, self._packed, k)
        # every pair is scored once (in bfloat16 where the screen runs), and the screen's exact
        # float32 rescores come on top
        self.evaluations += xb.shape[0] * self.n_targets + rescored
        return v, i

    def _tile_shape(self) -> tuple[int, int]:
        cols = min(self.n_targets, TILE_COLUMNS)
        rows = max(1, min(TILE_ELEMENTS, self.memory_budget // 4) // cols)
        return rows, cols

    def _tiled(self, xb: torch.Tensor, k: int | None, second: bool = False):
        rows, _ = self._tile_shape()
        workers = min(torch.get_num_threads(), -(-xb.shape[0] // rows)) if self.device.type == "cpu" else 1
        if workers <= 1:
            return self._tiled_rows(xb, k, second)
        # On CPU, torch's own threads split each small tile's matmul and reduction, which here
        # ran *slower* with 2 threads than with 1 (1.08 vs 1.36 G pairs/s, 60,000 MNIST codes,
        # d = 16): instead each thread takes whole row blocks with one torch thread (2.25 G/s).
        # The parts start at multiples of the tile's rows, so every tile holds the rows it
        # holds on one thread: the answers do not depend on the number of threads.
        blocks = -(-xb.shape[0] // rows)
        cuts = [min(xb.shape[0], rows * (blocks * w // workers)) for w in range(workers + 1)]
        parts = [xb[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(len(parts)) as pool:
                outs = list(pool.map(lambda part: self._tiled_rows(part, k, second, count=False), parts))
        finally:
            torch.set_num_threads(prev)
        self.evaluations += xb.shape[0] * self.n_targets
        return tuple(torch.cat(o) for o in zip(*outs))

    def _tiled_rows(self, xb: torch.Tensor, k: int | None, second: bool = False, count: bool = True):
        rows, cols = self._tile_shape()
        n = self.n_targets
        vals, idx, sec = [], [], []
        buf = torch.empty(rows, cols, dtype=self.compute_dtype, device=self.device)
        for s in range(0, xb.shape[0], rows):
            xc = xb[s : s + rows]
            r = xc.shape[0]
            if k is None:
                out = _tiled_argmax(xc, self._yt, self._h, buf[:r], second=second)
                v, i = out[0], out[1]
                if second:
                    sec.append(out[2])
            else:
                v, i = _tiled_topk(xc, self._yt, self._h, buf[:r], k)
            if count:
                self.evaluations += r * n
            vals.append(v)
            idx.append(i)
        out = _cat(vals, self.compute_dtype, self.device), _cat(idx, torch.int64, self.device)
        return (*out, _cat(sec, self.compute_dtype, self.device)) if second else out

    def _ensure_index(self) -> _TargetGroups:
        if self._index is None:
            g = self.n_groups or max(1, min(self.n_targets, round(math.sqrt(self.n_targets))))
            self._index = _TargetGroups(self._yt.T, self._h[0], g, seed=self.seed)
        return self._index

    def _pruned(self, xb: torch.Tensor, k: int | None):
        index = self._ensure_index()
        # rows per chunk: the (b, G) bounds and masks, and the gathered sub-blocks, stay far below the budget
        step = max(1, min(16384, self.memory_budget // (16 * (index.n_groups + self.dim + 8))))
        vals, idx = [], []
        for s in range(0, xb.shape[0], step):
            v, i, pairs, bounds = index.search(xb[s : s + step], k)
            self.evaluations += pairs + bounds
            self.bound_evaluations += bounds
            vals.append(v)
            idx.append(i)
        return _cat(vals, self.compute_dtype, self.device), _cat(idx, torch.int64, self.device)


class _TargetGroups:
    """Targets grouped by k-means on y, sorted by group (and by index within a group), with the
    per-group data of the bounds below; ``set_heights`` refreshes their height parts in O(N d).

    Two upper bounds on a group's best score, both valid for any heights (the smaller is used):

    * linear: ``<x, c_g> + f_g(|x|)``, ``f_g(t) = max_{i in g} h_i + t r_i`` (r_i = |y_i - c_g|);
      f_g is convex in t, so its chords on a grid bound it.
    * quadratic: write ``h_i = -lam/2 |y_i|^2 + <b, y_i> + e_i`` (lam, b a least-squares fit, e_i
      the residual); then ``<x, y_i> + h_i = lam/2 |q|^2 - lam/2 |y_i - q|^2 + e_i`` with
      ``q = (x + b) / lam``, so the group's best is at most
      ``lam/2 |q|^2 - lam/2 (|q - c_g| - r_g)_+^2 + max_{i in g} e_i``: for heights close to a
      Voronoi / power start (h_i ~ -|y_i|^2 / (2 s)) this is the nearest-ball bound of a
      nearest-neighbour search, much tighter than the linear one.

    Bounds are computed in the compute dtype with a per-sample rounding allowance (slack).
    """

    #: points of the |x| grid on which f_g is tabulated (chords between them bound f_g, convex)
    GRID = 9

    def __init__(self, y: torch.Tensor, h: torch.Tensor, n_groups: int, *, seed: int):
        self.dtype = y.dtype
        n = y.shape[0]
        labels, centers = _kmeans(y, n_groups, seed=seed)
        counts = torch.bincount(labels, minlength=centers.shape[0])
        keep = counts > 0
        remap = torch.cumsum(keep.long(), 0) - 1
        labels, centers, counts = remap[labels], centers[keep], counts[keep]
        self.n_groups = centers.shape[0]
        # stable: within a group the targets stay in ascending index order, so a group's local
        # argmax (first maximum) is its lowest-index maximum
        self.perm = torch.sort(labels, stable=True).indices
        self.counts = counts.tolist()
        self.offsets = [0]
        for c in self.counts:
            self.offsets.append(self.offsets[-1] + c)
        self.min_count = min(self.counts)
        ys = y[self.perm]
        # one contiguous (d, n_g) block per group: a column slice of a (d, N) matrix would make
        # BLAS stride across N (measured ~2x slower at N = 60,000)
        self.yt_blocks = [ys[a:b].T.contiguous() for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]
        self.y64 = ys.double()  # (N, d) for the height fit
        c64 = centers.double()
        self.centers_t = c64.T.contiguous()  # (d, G) float64
        self.centers_t_c = self.centers_t.to(self.dtype)  # (d, G) compute dtype, for the bounds
        self.c_sq = (c64 * c64).sum(1)  # (G,)
        self.c_norm_max = float(self.c_sq.max().sqrt())
        self.group_of = labels[self.perm]  # (N,) group of each sorted target
        self.r = (self.y64 - c64[self.group_of]).norm(dim=1)  # (N,) distance to own center
        r_max = self._group_max(self.r)
        self.r_max64 = float(r_max.max())
        self.r_max = r_max.to(self.dtype)
        # scale of the rounding error of a score (see slack in search)
        self.y_scale = float(self.y64.norm(dim=1).max())
        self.n = n
        self.t_max: float | None = None  # |x| range of the grid, fixed at the first search
        self.set_heights(h)

    def _group_max(self, v: torch.Tensor) -> torch.Tensor:
        return torch.full((self.n_groups,), -math.inf, dtype=v.dtype, device=v.device).scatter_reduce(
            0, self.group_of, v, "amax")

    def set_heights(self, h: torch.Tensor) -> None:
        self.h = h[self.perm].contiguous()[None, :]  # (1, N) in group order, compute dtype
        self.h_blocks = [self.h[:, a:b].contiguous() for a, b in zip(self.offsets[:-1], self.offsets[1:], strict=True)]
        h64 = self.h[0].double()
        self.h_max = self._group_max(h64).to(self.dtype)
        self.h_abs = float(h64.abs().max())
        self._table = None  # f_g on the grid: rebuilt lazily (needs t_max)
        # quadratic model of the heights (see the class docstring); kept only when convex (lam > 0)
        ysq = (self.y64 * self.y64).sum(1)
        a = torch.cat([-0.5 * ysq[:, None], self.y64, torch.ones_like(ysq)[:, None]], 1)
        sol = torch.linalg.lstsq(a.cpu(), h64.cpu()[:, None]).solution[:, 0].to(h64.device)
        lam = float(sol[0])
        self.lam = lam if math.isfinite(lam) and lam > 1e-12 else None
        if self.lam is not None:
            bvec = sol[1:-1]
            e = h64 + 0.5 * lam * ysq - self.y64 @ bvec
            self.b = bvec.to(self.dtype)[None, :]  # (1, d)
            self.e_max = self._group_max(e).to(self.dtype)
            self.e_abs = float(e.abs().max())
            # per-group constant of |q - c_g|^2 = |q|^2 - 2/lam (<x, c_g> + <b, c_g>) + |c_g|^2
            self.qc_const = (self.c_sq - 2.0 / lam * (bvec @ self.centers_t)).to(self.dtype)[None, :]

    def bounds(self, x: torch.Tensor, tn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(bounds (b, G), slack (b,)): upper bounds on each group's best score for x (b, d) in the
        compute dtype (tn = |x| in float64), and per row the rounding allowance of those bounds.

        Computed in sub-blocks of rows whose (rows, G) temporaries stay in cache: the element-wise
        work here is ~20 passes over (b, G), memory-bound when the block is large."""
        b = x.shape[0]
        dt = self.dtype
        t_max = self.t_max
        if self._table is None:
            grid = torch.linspace(0.0, t_max, self.GRID, dtype=torch.float64, device=x.device)
            h64 = self.h[0].double()
            tab = torch.stack([self._group_max(h64 + tj * self.r) for tj in grid.tolist()])
            self._table = tab.to(dt)
            self._dtable = (tab[1:] - tab[:-1]).to(dt)  # chord slopes x grid step
            self._f_abs = float(tab.abs().max())
        step = t_max / (self.GRID - 1)
        u = (tn / step).clamp(max=self.GRID - 1 - 1e-9)
        j = u.floor().long()
        w = (u - j).to(dt)[:, None]
        t = tn.to(dt)[:, None]
        out = torch.empty(b, self.n_groups, dtype=dt, device=x.device)
        cr = float(self.c_norm_max + self.r_max64)
        # rounding allowance of the float bounds: a few units of roundoff of each term's magnitude
        mag = tn * cr + self._f_abs + self.h_abs + tn * float(self.r_max64)
        if self.lam is not None:
            q = (x.double() + self.b.double()) / self.lam
            q_sq64 = (q * q).sum(1)
            mag = mag + self.lam * (q_sq64 + cr * cr) + self.e_abs + 2 * float(self.b.norm()) * cr
            q_sq = q_sq64.to(dt)[:, None]
            half = 0.5 * self.lam
        slack = 32 * (x.shape[1] + 8) * torch.finfo(dt).eps * mag
        sub = max(1, 2**17 // self.n_groups)
        for s in range(0, b, sub):
            e = min(b, s + sub)
            xc = torch.mm(x[s:e], self.centers_t_c)  # (sb, G)
            # linear: chords of the tabulated convex f_g inside the grid, H_g + t r_g beyond it
            lin = torch.addcmul(self._table[j[s:e]], self._dtable[j[s:e].clamp(max=self.GRID - 2)], w[s:e])
            coarse = torch.addcmul(self.h_max[None, :], t[s:e], self.r_max[None, :])
            lin = torch.where(t[s:e] > t_max, coarse, torch.minimum(lin, coarse)).add_(xc)
            if self.lam is not None:
                # |q - c_g| from <x, c_g>, then the nearest-ball bound
                d2 = torch.add(self.qc_const, xc, alpha=-2.0 / self.lam).add_(q_sq[s:e])
                gap = d2.clamp_(min=0).sqrt_().sub_(self.r_max[None, :]).clamp_(min=0)
                quad = gap.square_().mul_(-half).add_(q_sq[s:e], alpha=half).add_(self.e_max[None, :])
                torch.minimum(lin, quad, out=out[s:e])
            else:
                out[s:e] = lin
        return out, slack

    def _eval(self, x, rows_per_group, best_v, best_i, k):
        """Evaluate exactly the groups listed in rows_per_group (group -> row indices into x) and
        merge into the running best; returns the pairs computed."""
        pairs = 0
        buf = self._buffer(x.device)
        for g, rows_g in rows_per_group:
            a, b = self.offsets[g], self.offsets[g + 1]
            yt, hg = self.yt_blocks[g], self.h_blocks[g]
            # rows in sub-blocks whose score tile stays in cache (as the tiled path)
            step = max(1, TILE_ELEMENTS // (b - a))
            for s in range(0, rows_g.shape[0], step):
                rows = rows_g[s : s + step]
                sc = torch.addmm(hg, x[rows], yt, out=buf[: rows.shape[0] * (b - a)].view(rows.shape[0], b - a))
                pairs += sc.numel()
                self._merge(sc, rows, a, b, best_v, best_i, k)
        return pairs

    def _buffer(self, device) -> torch.Tensor:
        if getattr(self, "_buf", None) is None or self._buf.device != device:
            self._buf = torch.empty(TILE_ELEMENTS + max(self.counts), dtype=self.dtype, device=device)
        return self._buf

    def _merge(self, sc, rows, a, b, best_v, best_i, k) -> None:
        """Merge the scores sc (m, b - a) of targets a:b (group order) of the given rows into the
        running best."""
        if k is None:
            # values first (amax is >10x faster than max-with-index on CPU); the index only for
            # the rows this group can change: better, or equal (then the lower index wins)
            v = sc.amax(dim=1)
            bv = best_v[rows]
            sel = (v >= bv).nonzero().squeeze(1)
            if sel.numel():
                r_sel = rows[sel]
                gi = self.perm[a + sc[sel].argmax(dim=1)]
                v_sel, bv_sel, bi_sel = v[sel], bv[sel], best_i[r_sel]
                upd = (v_sel > bv_sel) | (gi < bi_sel)
                best_v[r_sel] = torch.where(upd, v_sel, bv_sel)
                best_i[r_sel] = torch.where(upd, gi, bi_sel)
        else:
            v, li = _topk_lowest(sc, min(k, b - a), scratch=True)
            mv, mi = _merge_topk(best_v[rows], best_i[rows], v, self.perm[a + li], k)
            best_v[rows] = mv
            best_i[rows] = mi

    def search(self, x: torch.Tensor, k: int | None, *, predict: bool = False):
        """Exact (values, indices) of the best (k is None) or top-k scores of x (b, d); also the
        pairs and the bounds computed.

        ``predict``: stop before the second pass and return ``(None, None, pairs, bounds, total)``:
        the pairs and bounds computed so far, and ``total`` the pairs + bounds the full search
        would have computed (the second pass's pairs are known once its groups are) -- what
        ``"auto"`` needs to judge pruning, at a fraction of its cost."""
        b = x.shape[0]
        dev = x.device
        tn = x.double().norm(dim=1)
        if self.t_max is None:
            # the grid covers the |x| of the first block (sources are bounded); beyond it the
            # coarser bound H_g + |x| r_g still holds
            self.t_max = max(float(tn.max()) * 1.25, 1e-12)
        bounds, slack = self.bounds(x, tn)  # (b, G), (b,)
        # plus the float rounding of the scores (compute dtype, d products summed): a few units
        # of roundoff per term, scaled, and generous — it only costs a little pruning
        eps = torch.finfo(self.dtype).eps
        slack = slack + 4 * (x.shape[1] + 8) * eps * (tn * self.y_scale + self.h_abs + 1e-30)  # (b,)
        kk = 1 if k is None else k
        if k is None:
            best_v = torch.full((b,), -math.inf, dtype=self.dtype, device=dev)
            best_i = torch.full((b,), self.n, dtype=torch.int64, device=dev)
        else:
            best_v = torch.full((b, k), -math.inf, dtype=self.dtype, device=dev)
            best_i = torch.full((b, k), self.n, dtype=torch.int64, device=dev)
        # first pass: each sample's most promising groups (enough of them to hold k targets)
        n_first = min(self.n_groups, -(-kk // self.min_count))
        first = torch.topk(bounds, n_first, dim=1).indices if n_first > 1 else bounds.argmax(dim=1, keepdim=True)
        done = torch.zeros(b, self.n_groups, dtype=torch.bool, device=dev)
        done.scatter_(1, first, True)
        pairs = self._eval(x, _route(done), best_v, best_i, k)
        # lower bound on the sample's best (k-th best): only groups whose bound reaches it can matter
        low = best_v if k is None else best_v[:, -1]
        need = (bounds >= (low.double() - slack).to(self.dtype)[:, None]) & ~done
        if predict:
            sizes = torch.tensor(self.counts, dtype=torch.float64, device=dev)
            second = int((need.double() @ sizes).sum())
            return None, None, pairs, b * self.n_groups, pairs + second + b * self.n_groups
        pairs += self._eval(x, _route(need), best_v, best_i, k)
        return best_v, best_i, pairs, b * self.n_groups


#: width of the strips in which the tiled argmax localises a row's maximum before taking its index
STRIP = 256


def _tiled_argmax(x: torch.Tensor, yt: torch.Tensor, h: torch.Tensor, buf: torch.Tensor, second: bool = False):
    """(max (r,), first argmax (r,)) of x @ yt + h, x (r, d), yt (d, N), h (1, N), one tile of
    ``buf`` (r, C) at a time; with ``second``, also the best score among the other columns (r,).

    On CPU torch's max-with-index kernel runs at ~0.5 G elements/s while ``amax`` runs at ~7-10
    (measured here, benchmarks/argmax.py), so each tile is reduced to strip maxima with ``amax``;
    a row's index is searched (within one strip of the tile still in cache) only when the tile
    improves the row's best, about 1 + ln(N / C) times per row. Ties: the first strip, the first
    tile (strict '>') and the first column win, i.e. the lowest index, as torch.max.
    The runner-up comes almost free: every strip but the winning one contributes its maximum
    (exact), the winning strip its second value, and a tile that does not improve a row's best
    offers its maximum; an improved row's old best becomes a candidate.
    """
    r, cols = buf.shape
    n = yt.shape[1]
    best_v = torch.full((r,), -math.inf, dtype=buf.dtype, device=buf.device)
    best_i = torch.zeros(r, dtype=torch.int64, device=buf.device)
    sec_v = torch.full((r,), -math.inf, dtype=buf.dtype, device=buf.device)
    offs = torch.arange(STRIP, device=buf.device)
    for c in range(0, n, cols):
        w = min(cols, n - c)
        sc = torch.addmm(h[:, c : c + w], x, yt[:, c : c + w], out=buf[:, :w])
        smax = _strip_maxima(sc)
        if second and smax.shape[1] > 1:
            top2 = smax.topk(2, dim=1)
            v, j, v2 = top2.values[:, 0], top2.indices[:, 0], top2.values[:, 1]
            # topk's index at equal maxima is unspecified: the tie rule wants the first strip
            j = torch.where(v2 == v, (smax == v[:, None]).int().argmax(dim=1), j)
        else:
            v, j = smax.max(dim=1)  # (r, w / STRIP): small, the first strip wins a tie
            v2 = torch.full_like(v, -math.inf)
        if c == 0:  # the first tile sets every row: no comparison, no row selection
            upd, ju, vu = None, j, v
        else:
            better = v > best_v
            if second:  # rows the tile does not improve: its maximum may be their runner-up
                sec_v = torch.where(better, sec_v, torch.maximum(sec_v, v))
            upd = better.nonzero().squeeze(1)
            if not upd.numel():
                continue
            ju, vu = j[upd], v[upd]
        if w % STRIP == 0:
            # whole strips: pick each row's (row, strip) slice of STRIP contiguous values
            sc3 = sc.view(r, w // STRIP, STRIP)
            block = sc3[torch.arange(r, device=buf.device), ju] if upd is None else sc3[upd, ju]
            li = ju * STRIP + block.argmax(dim=1)
            inner = li - ju * STRIP
        else:
            cols_u = (ju * STRIP)[:, None] + offs[None, :]
            # past the tile's end: repeat its last column, which comes later, so a tie stays with the earlier one
            cols_u = cols_u.clamp(max=w - 1)
            block = sc.gather(1, cols_u) if upd is None else sc[upd[:, None], cols_u]
            inner = block.argmax(dim=1)
            li = cols_u.gather(1, inner[:, None]).squeeze(1)
            if second:  # the clamped repeats of the last column are not other columns
                block = block.masked_fill((ju * STRIP)[:, None] + offs[None, :] >= w, -math.inf)
        if second:
            # the winning strip's second value (the winner masked), the tile's other strips, the old best
            rest = block.scatter(1, inner[:, None], -math.inf).amax(dim=1) if block.shape[1] > 1 else torch.full_like(vu, -math.inf)
            cand = torch.maximum(rest, v2 if upd is None else v2[upd])
            if upd is None:
                sec_v = cand
            else:
                sec_v[upd] = torch.maximum(cand, best_v[upd])
        if upd is None:
            best_v, best_i = vu, c + li
        else:
            best_i[upd] = c + li
            best_v[upd] = vu
    return (best_v, best_i, sec_v) if second else (best_v, best_i)


def _topk_strip(k: int) -> int:
    """Strip width of the tiled top-k: the k strips looked into hold k * width candidates, so
    narrower strips for larger k (measured, N = 60,000, d = 16, k = 9: 2.7x brute force with
    64 columns, 1.5x with 256; 32 no better than 64)."""
    return STRIP if k <= 2 else 64


def _strip_maxima(sc: torch.Tensor, strip: int = STRIP) -> torch.Tensor:
    """(r, ceil(w / strip)) maxima of the column strips of sc (r, w), by ``amax``."""
    r, w = sc.shape
    full = w - w % strip
    parts = [sc[:, :full].view(r, full // strip, strip).amax(dim=2)] if full else []
    if full < w:
        parts.append(sc[:, full:].amax(dim=1, keepdim=True))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def _tiled_topk(x: torch.Tensor, yt: torch.Tensor, h: torch.Tensor, buf: torch.Tensor, k: int):
    """Top-k (values (r, k), indices (r, k)) of x @ yt + h, best first, ties by ascending index,
    one tile of ``buf`` (r, C) at a time.

    As ``_tiled_argmax``: strip maxima by ``amax``; only rows whose tile maximum beats their
    current k-th best look closer, and only into the k strips with the largest maxima (ties: the
    lower strip), which hold the tile's top k under the tie rule (a strip left out has k strips
    before it whose maxima beat, or tie at a lower index, everything in it).
    """
    r, cols = buf.shape
    n = yt.shape[1]
    strip = _topk_strip(k)
    best_v = torch.full((r, k), -math.inf, dtype=buf.dtype, device=buf.device)
    best_i = torch.full((r, k), n, dtype=torch.int64, device=buf.device)
    offs = torch.arange(strip, device=buf.device)
    for c in range(0, n, cols):
        w = min(cols, n - c)
        sc = torch.addmm(h[:, c : c + w], x, yt[:, c : c + w], out=buf[:, :w])
        smax = _strip_maxima(sc, strip)
        upd = (smax.amax(dim=1) > best_v[:, -1]).nonzero().squeeze(1)  # strict: earlier columns win ties
        if not upd.numel():
            continue
        every = upd.numel() == r  # e.g. the first tile: no row gathers
        ks = min(k, smax.shape[1])
        _, sj = _topk_lowest(smax if every else smax[upd], ks)
        sj = sj.sort(dim=1).values  # ascending strips: candidate order = column order, for the tie rule
        cand = ((sj * strip)[:, :, None] + offs).view(upd.numel(), ks * strip)
        rows = upd[:, None]  # gathers u x k strip values, not u whole rows
        if w % strip:  # the last strip is short: clamp, and mask the repeats
            vals = sc[rows, cand.clamp(max=w - 1)].masked_fill_(cand >= w, -math.inf)
        else:
            vals = sc[rows, cand]
        tv, tj = _topk_lowest(vals, min(k, ks * strip), scratch=True)
        if every:
            best_v, best_i = _merge_topk(best_v, best_i, tv, c + cand.gather(1, tj), k)
        else:
            mv, mi = _merge_topk(best_v[upd], best_i[upd], tv, c + cand.gather(1, tj), k)
            best_v[upd], best_i[upd] = mv, mi
    return best_v, best_i


def _fused_possible(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the fused CPU kernel serves this potential (CPU, float32 scores, kernel compiled)."""
    return torch.device(device).type == "cpu" and dtype == torch.float32 and _fused_kernel.available()


def _route(mask: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """(group, rows) for every group with rows set in mask (b, G): one nonzero, one split."""
    gr = mask.T.nonzero()  # sorted by group, then row
    if gr.shape[0] == 0:
        return []
    groups, counts = torch.unique_consecutive(gr[:, 0], return_counts=True)
    return list(zip(groups.tolist(), gr[:, 1].split(counts.tolist()), strict=True))


def _kmeans(y: torch.Tensor, g: int, *, seed: int, iters: int = 8, per_center: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on y (N, d) with g centers: (labels (N,), centers (g, d)), seeded.

    Lloyd runs on a random subset of ``per_center * g`` points, then every point is assigned once:
    any grouping keeps the search exact (tighter groups only prune more), so the index build
    stays a small fraction of one pass of queries. Chunked: no (N, g) matrix beyond 64 MiB.
    """
    n = y.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.randperm(n, generator=gen).to(y.device)
    sub = y[order[: min(n, per_center * g)]]
    centers = sub[:g].clone()
    for _ in range(iters):
        lab = _nearest(sub, centers)
        sums = torch.zeros_like(centers).index_add_(0, lab, sub)
        cnt = torch.bincount(lab, minlength=g).to(y.dtype)
        centers = torch.where((cnt > 0)[:, None], sums / cnt.clamp(min=1)[:, None], centers)
    labels = _nearest(y, centers)
    return labels, centers


def _nearest(y: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest center for each row of y, chunked."""
    g = centers.shape[0]
    cn = (centers * centers).sum(1)[None, :]
    step = max(1, (16 * 2**20) // max(g, 1))
    # |y - c|^2 = |y|^2 - 2 <y, c> + |c|^2, and |y|^2 is constant per row
    return torch.cat([torch.addmm(cn, y[s : s + step], centers.T, alpha=-2.0).argmin(1) for s in range(0, y.shape[0], step)])


def _topk_lowest(s: torch.Tensor, k: int, *, scratch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of s (m, n), best first, equal values in ascending column order, and at
    the k-th place the lowest columns kept (torch.topk leaves both unspecified).

    scratch=True lets a small k overwrite s: k passes of ``max`` (first maximum = lowest column),
    masking each winner, measured several times faster than torch.topk on CPU for k <= 8.
    """
    if scratch and k <= 8:
        vs, is_ = [], []
        for j in range(k):
            v, i = s.max(dim=1)
            vs.append(v)
            is_.append(i)
            if j + 1 < k:
                s.scatter_(1, i[:, None], -math.inf)
        return torch.stack(vs, 1), torch.stack(is_, 1)
    v, i = torch.topk(s, k, dim=1)
    kth = v[:, -1:]
    # rows where a value equal to the k-th one was left out: redo them with a stable full sort
    loose = (s == kth).sum(1) > (v == kth).sum(1)
    if bool(loose.any()):
        rows = loose.nonzero().squeeze(1)
        sv, si = torch.sort(s[rows], dim=1, descending=True, stable=True)
        v[rows], i[rows] = sv[:, :k], si[:, :k]
    return _canonical(v, i)


def _canonical(v: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row by value descending, equal values by ascending index."""
    o = torch.sort(i, dim=1).indices
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.sort(v, dim=1, descending=True, stable=True).indices
    return v.gather(1, o), i.gather(1, o)


def _merge_topk(v1, i1, v2, i2, k: int):
    """The k best of two canonical top lists with disjoint indices (rows aligned)."""
    v, i = _canonical(torch.cat([v1, v2], 1), torch.cat([i1, i2], 1))
    return v[:, :k], i[:, :k]


def _cat(parts: list[torch.Tensor], dtype, device) -> torch.Tensor:
    return torch.cat(parts) if parts else torch.empty(0, dtype=dtype, device=device)


def voronoi_heights(targets: torch.Tensor, center, radius: float, shrink: float = 0.9) -> torch.Tensor:
    """Heights whose power cells are the Voronoi cells of the targets contracted into a ball.

    With z_i = s (y_i − ȳ) + c, all z_i inside the ball B(c, shrink·radius), the choice
    h_i = −|z_i|² / (2 s) gives argmax_i <x, y_i> + h_i = argmin_i |x − z_i|, so every cell
    contains its own z_i and has positive mass whenever the ball lies in the source support:
    a safe start for every solver.  targets: (N, d) → heights (N,) float64.
    """
    y = targets.double()
    c = torch.as_tensor(center, dtype=torch.float64, device=y.device)
    yc = y - y.mean(dim=0)
    spread = float(yc.norm(dim=1).max()) or 1.0
    s = shrink * float(radius) / spread
    z = s * yc + c
    return -(z * z).sum(dim=1) / (2 * s)
