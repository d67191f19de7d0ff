"""The Brenier potential u_h(x) = max_i <x, y_i> + h_i and its chunked evaluation.

Every solver and sampler in brenier spends its time here: an argmax (or top-k) over the
scores ``<x, y_i> + h_i`` of M points against N targets. The scores are produced one block of
rows at a time by a single ``addmm`` and reduced at once, so no (M, N) matrix larger than
``memory_budget`` bytes ever exists, and everything stays on the targets' device.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

#: default bound on the bytes of one block of scores (rows x N x 4 bytes)
DEFAULT_MEMORY_BUDGET = 256 * 2**20


class BrenierPotential:
    """u_h(x) = max_i <x, y_i> + h_i, a convex piecewise-affine function.

    targets: (N, d) tensor y_i; heights: (N,) tensor h_i (float64 master copy).
    Scores are computed in ``compute_dtype`` (float32 by default: the Monte Carlo noise is far
    above its rounding) on the targets' device. ``evaluations`` counts score evaluations
    (sample-target pairs) since construction or the last ``reset_count``.
    """

    def __init__(
        self,
        targets: torch.Tensor,
        heights: torch.Tensor,
        *,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        compute_dtype: torch.dtype = torch.float32,
    ):
        if targets.ndim != 2 or heights.shape != (targets.shape[0],):
            raise ValueError(f"targets (N, d) and heights (N,) expected, got {tuple(targets.shape)} and {tuple(heights.shape)}")
        self.targets = targets
        self.device = targets.device
        self.compute_dtype = compute_dtype
        self.memory_budget = int(memory_budget)
        self._yt = targets.to(compute_dtype).T.contiguous()  # (d, N)
        self.evaluations = 0
        self.set_heights(heights)

    @property
    def n_targets(self) -> int:
        return self.targets.shape[0]

    @property
    def dim(self) -> int:
        return self.targets.shape[1]

    def set_heights(self, heights: torch.Tensor) -> None:
        self.heights = heights.to(device=self.device, dtype=torch.float64)
        self._h = self.heights.to(self.compute_dtype)[None, :]

    def reset_count(self) -> None:
        self.evaluations = 0

    @property
    def block_rows(self) -> int:
        """Rows of one score block under the memory budget (at least 1)."""
        per_row = self.n_targets * torch.finfo(self.compute_dtype).bits // 8
        return max(1, self.memory_budget // max(per_row, 1))

    def score_blocks(self, x: torch.Tensor | Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x_block, scores_block)`` with scores (b, N) = x_block @ Y^T + h.

        ``x`` is one (M, d) tensor or an iterable of such blocks (e.g. a source stream).
        """
        blocks = (x,) if isinstance(x, torch.Tensor) else x
        step = self.block_rows
        for xb in blocks:
            xb = xb.to(device=self.device, dtype=self.compute_dtype)
            for s in range(0, xb.shape[0], step):
                xc = xb[s : s + step]
                self.evaluations += xc.shape[0] * self.n_targets
                yield xc, torch.addmm(self._h, xc, self._yt)

    def argmax(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (M,), indices (M,) int64): u_h(x) and the power cell holding each x."""
        vals, idx = [], []
        for _, s in self.score_blocks(x):
            v, i = s.max(dim=1)
            vals.append(v)
            idx.append(i)
        return _cat(vals, self.compute_dtype, self.device), _cat(idx, torch.int64, self.device)

    def topk(self, x, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(values (M, k), indices (M, k)): the k largest scores of each x, best first."""
        k = min(int(k), self.n_targets)
        vals, idx = [], []
        for _, s in self.score_blocks(x):
            v, i = torch.topk(s, k, dim=1)
            vals.append(v)
            idx.append(i)
        if not vals:
            return (torch.empty(0, k, dtype=self.compute_dtype, device=self.device),
                    torch.empty(0, k, dtype=torch.int64, device=self.device))
        return torch.cat(vals), torch.cat(idx)


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
