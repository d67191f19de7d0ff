"""Certified reuse of sample assignments across Newton iterations (exact, no new pass over N).

A Monte Carlo Newton fit evaluates the same source samples at a sequence of heights h⁰, h¹, …
(``montecarlo.solve_newton`` keeps one nested sample stream for the whole fit). Between two
evaluations every score s_j(x) = <x, y_j> + h_j changes by exactly δ_j = h'_j − h_j. So if at h
a sample's best k targets scored s_(1) ≥ … ≥ s_(k) and every other target at most b (the
(k+1)-th score), then at h' every other target scores at most b + max_j δ_j, while the k cached
ones score exactly <x, y_i> + h'_i. When the lowest of those still beats b + max δ, the cached k
are the top k at h' — without touching the other N − k targets. Near convergence δ is small next
to most samples' gaps, so most samples need no new pass (the issue's "a sample whose cached
top-k beats every other score by more than twice the largest height change").

The largest change is a poor bound: a Newton step moves a few cells (nearly empty ones, outliers)
far more than the rest. So the s = max(32, N / 64) targets that rose most since a row was cached
are scored exactly for it (s dot products), and only the others are bounded by b + their largest
rise: the certificate then rests on the bulk of the step, not its tail.

Exactness against a fresh pass in floating point: the stored scores carry the rounding error e
of one score evaluation (≈ (d + 2) u (|x||y| + |h|)). A reuse is accepted only with a margin of
8 (d + 2) u (max|x| max|y| + max|h|) ≥ 4 e, wide enough that the fresh float32 pass would rank
the same targets first; for top-k lists the best must also beat the second by that margin (the
cell that a sample is counted in must be exact). Everything else is recomputed and re-cached.

The cache holds, per sample, k target indices (int32), their scores minus heights (float64, the
part that does not change), the bound b and the version of the heights it was taken at:
≈ 12 k + 12 bytes per sample (24 MB per million samples for k = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .potential import BrenierPotential


@dataclass
class _Entry:
    idx: torch.Tensor  # (b, k) int32: the cached best targets, best first
    dots: torch.Tensor  # (b, k) float64: their scores minus their heights, <x, y_i>
    bound: torch.Tensor  # (b,) float64: the (k+1)-th score at the caching heights
    version: torch.Tensor  # (b,) int64: which heights the bound was taken at
    scale: float  # max |x| of the chunk (for the rounding margin)


class AssignmentCache:
    """Per-chunk cache of each sample's top-k targets with a certificate against height changes.

    Keys are hashable chunk names (e.g. ``(half, chunk index)``); a chunk's rows must be the same
    points every time it is queried (a longer query may append rows: they are computed fresh).
    Call ``set_heights(h)`` whenever the potential's heights change, before querying.

    ``hits`` / ``misses`` count the rows answered from the cache / recomputed since creation.
    """

    def __init__(self, pot: BrenierPotential):
        self.pot = pot
        self._entries: dict = {}
        self._heights: list[torch.Tensor] = []  # by version
        self._drift: torch.Tensor | None = None  # (V,) max_j (h_now − h_v)_j per version v
        self._ynorm = float(pot.targets.double().norm(dim=1).max()) if pot.n_targets else 0.0
        eps = torch.finfo(pot.compute_dtype).eps
        self._unit = 8.0 * (pot.dim + 2) * eps
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return sum(e.idx.shape[0] for e in self._entries.values())

    def set_heights(self, h: torch.Tensor) -> None:
        """Register the potential's current heights (N,) (a new version when they changed)."""
        h = h.to(device=self.pot.device, dtype=torch.float64)
        if self._heights and torch.equal(self._heights[-1], h):
            return
        # every version is kept (one per Newton iteration: N float64 each), so a row cached at
        # any iteration is certified against the total change since then, not a sum of steps
        self._heights.append(h.clone())
        n = h.shape[0]
        s = min(n, max(32, n // 64))
        self._lift, self._drift = [], []
        for hv in self._heights:
            rise = h - hv
            if s < n:  # the s largest rises are scored exactly; the rest bounded by the (s+1)-th
                top = rise.topk(s + 1)
                self._lift.append(top.indices[:s])
                self._drift.append(float(top.values[s]))
            else:
                self._lift.append(torch.arange(n, device=h.device))
                self._drift.append(-float("inf"))

    def _margin(self, scale: float) -> float:
        hmax = float(self._heights[-1].abs().max()) if self._heights else 0.0
        return self._unit * (scale * self._ynorm + hmax)

    def query(self, key, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The top-k of x (b, d) at the current heights: (values (b, k) float64, indices (b, k) int64),
        best first; identical targets to a fresh ``pot.topk(x, k)`` (``pot.argmax`` for k = 1) except
        at near-ties closer than the rounding margin, which are always recomputed.

        Rows answered from the cache add k score evaluations to ``pot.evaluations``; recomputed
        rows cost a full pass (counted by the potential)."""
        if not self._heights:
            raise RuntimeError("AssignmentCache.set_heights(h) must be called before query")
        pot = self.pot
        b = x.shape[0]
        k = min(int(k), pot.n_targets)
        h = self._heights[-1]
        version = len(self._heights) - 1
        e = self._entries.get(key)
        if e is not None and (e.idx.shape[1] != k or e.idx.shape[0] > b):
            e = None  # a different question about this chunk: start over
        if e is None:
            vals, idx, entry = self._compute(x, k, h, version, float(x.norm(dim=1).max()) if b else 0.0)
            self._entries[key] = entry
            self.misses += b
            return vals, idx
        m = e.idx.shape[0]
        cached_idx = e.idx.long()
        vals = e.dots + h[cached_idx]  # (m, k): exact new scores of the cached targets, float64
        if k > 1:  # re-sort by the new scores (ties: ascending index, as the fresh paths)
            o = torch.sort(cached_idx, dim=1).indices
            vals, cached_idx = vals.gather(1, o), cached_idx.gather(1, o)
            o = torch.sort(vals, dim=1, descending=True, stable=True).indices
            vals, cached_idx = vals.gather(1, o), cached_idx.gather(1, o)
        margin = self._margin(e.scale)
        others = self._others(x[:m], e, cached_idx, h)
        ok = vals[:, -1] > others + margin
        if k > 1:
            ok &= vals[:, 0] > vals[:, 1] + margin
        redo = (~ok).nonzero().squeeze(1)
        n_ok = m - redo.numel()
        pot.evaluations += n_ok * k
        self.hits += n_ok
        out_v = torch.empty(b, k, dtype=torch.float64, device=x.device)
        out_i = torch.empty(b, k, dtype=torch.int64, device=x.device)
        out_v[:m], out_i[:m] = vals, cached_idx
        # rows to recompute: the uncertified ones, and rows the chunk gained since it was cached
        rows = torch.cat([redo, torch.arange(m, b, device=x.device)])
        if rows.numel():
            if b > m:
                e.scale = max(e.scale, float(x[m:].norm(dim=1).max()))
            rv, ri, fresh = self._compute(x[rows], k, h, version, e.scale)
            out_v[rows], out_i[rows] = rv, ri
            self.misses += rows.numel()
            nr = redo.numel()
            if nr:  # re-cache the recomputed rows at the current heights
                e.idx[redo], e.dots[redo] = fresh.idx[:nr], fresh.dots[:nr]
                e.bound[redo], e.version[redo] = fresh.bound[:nr], fresh.version[:nr]
            if b > m:  # the chunk grew: append its new rows
                e.idx, e.dots = torch.cat([e.idx, fresh.idx[nr:]]), torch.cat([e.dots, fresh.dots[nr:]])
                e.bound, e.version = torch.cat([e.bound, fresh.bound[nr:]]), torch.cat([e.version, fresh.version[nr:]])
        return out_v, out_i

    def _others(self, x: torch.Tensor, e: _Entry, cached: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(m,) an upper bound on every non-cached target's score at the current heights h."""
        out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
        for v in torch.unique(e.version).tolist():
            rows = (e.version == v).nonzero().squeeze(1)
            lift = self._lift[v]
            # the targets that rose most since version v, scored exactly (cached ones excluded:
            # they are not "others"); the rest rose by at most drift[v]
            sc = x[rows].double() @ self.pot.targets[lift].double().T + h[lift]
            sc = sc.masked_fill((cached[rows][:, :, None] == lift[None, None, :]).any(dim=1), -float("inf"))
            out[rows] = torch.maximum(e.bound[rows] + self._drift[v], sc.amax(dim=1))
        return out

    def _compute(self, x: torch.Tensor, k: int, h: torch.Tensor, version: int, scale: float):
        """A fresh top-k of x and the entry that certifies it: (values, indices, _Entry)."""
        pot = self.pot
        n = pot.n_targets
        if k == 1:
            v, i, s = pot.runner_up(x)
            v, i, bound = v.double()[:, None], i[:, None], s.double()
        elif k < n:
            vv, ii = pot.topk(x, k + 1)
            v, i, bound = vv[:, :k].double(), ii[:, :k], vv[:, k].double()
        else:
            vv, ii = pot.topk(x, k)
            v, i, bound = vv.double(), ii, torch.full((x.shape[0],), -float("inf"), dtype=torch.float64, device=x.device)
        entry = _Entry(idx=i.to(torch.int32), dots=v - h[i], bound=bound,
                       version=torch.full((x.shape[0],), version, dtype=torch.int64, device=x.device), scale=scale)
        return v, i, entry
