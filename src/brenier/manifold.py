"""Intrinsic dimension of a data set: how many numbers really describe each observation.

The manifold distribution principle says natural data fill a low-dimensional manifold of the
ambient (pixel) space. ``intrinsic_dimension(X, method=...)`` measures it three ways:

``"pca"`` — the spectrum of the centred data matrix. Let ``s_1 >= s_2 >= ...`` be the singular
    values of ``X - mean(X)`` (X flattened to (N, D)). Two readings of the same spectrum:

    * *rank* (``variance=None``, the default): the number of ``s_k > rtol · s_1``, with
      ``rtol = max(N, D) · eps`` of the input's float type unless given (the rule of
      ``numpy.linalg.matrix_rank``). Exact for data on a linear subspace, such as solutions of
      a linear PDE (``brenier.datasets.laplace``): every direction the data move in counts,
      however little variance it carries.
    * *share of variance* (``variance=q`` in (0, 1]): the smallest k with
      ``sum_{j<=k} s_j² >= q · sum_j s_j²``. The right reading for noisy data (images), whose
      spectrum has no exact zeros.

    PCA sees only *linear* dimension: a curved manifold of dimension m can need many more than m
    principal directions.

``"twonn"`` — TwoNN (Facco, d'Errico, Rodriguez & Laio, *Sci. Rep.* 7, 12140, 2017). For each
    point, ``mu_i = r_2(i) / r_1(i)``, the ratio of its second to first nearest-neighbour
    distance. If the density is locally constant on an m-dimensional manifold, mu is Pareto
    distributed, ``P(mu > t) = t^(-m)``; so ``-log(1 - F(mu))`` is a line through the origin of
    slope m in ``log mu``. We fit that slope by least squares on the empirical CDF after
    discarding the largest 10 % of the ratios (as in the paper).

``"mle"`` — Levina & Bickel's maximum-likelihood estimator (*NIPS* 17, 2005) with the
    averaging of MacKay & Ghahramani (2005). With ``T_j(x)`` the distance from x to its j-th
    neighbour, the local estimate from k neighbours is
    ``m_k(x) = [ (1 / (k - 1)) sum_{j<k} log(T_k(x) / T_j(x)) ]^(-1)``; the global estimate
    averages the *inverses*, ``m_k = [ mean_x 1 / m_k(x) ]^(-1)``, then averages m_k over
    k = k1..k2.

Both neighbour estimators assume that at the scale of the k-th neighbour the data look like a
uniformly filled m-dimensional ball. With a few thousand points in m ≳ 10 dimensions the
neighbours are far away, and an anisotropic distribution (a few directions of large variance,
many of small variance, as for the Laplace fields) looks lower-dimensional at that scale: they
*underestimate* high dimensions, badly (see ``docs/manifold.md``). They see curved manifolds,
which PCA does not.

``scikit-dimension`` (skdim) implements these and more, but pulls in numba and llvmlite (a JIT
compiler, ~150 MB) for two estimators of a dozen lines each, so they are written out here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._array import real_array, resolve_device

__all__ = ["intrinsic_dimension", "DimensionEstimate", "pca_spectrum", "METHODS"]

METHODS = ("pca", "twonn", "mle")


@dataclass
class DimensionEstimate:
    """Result of ``intrinsic_dimension``.

    ``dimension``: the estimate (an integer for PCA, a real number for the neighbour
    estimators); ``method``; ``ambient_dim`` D and ``n_points`` N of the data used;
    ``details``: method-specific numbers (the variance spectrum, the k range, ...).
    """

    dimension: float
    method: str
    ambient_dim: int
    n_points: int
    details: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.dimension)


def _as_matrix(X: Any, name: str = "X") -> tuple[np.ndarray, float]:
    """Flatten (N, ...) to (N, D) float64; also return the eps of the caller's float type."""
    arr = real_array(X, name)
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected an array of shape (N, ...) with N points, got shape {arr.shape}")
    eps = float(np.finfo(arr.dtype).eps) if np.issubdtype(arr.dtype, np.floating) else float(np.finfo(np.float64).eps)
    M = arr.reshape(arr.shape[0], -1).astype(np.float64)
    if M.shape[1] < 1:
        raise ValueError(f"{name}: the points have dimension 0 (shape {arr.shape})")
    if not np.all(np.isfinite(M)):
        bad = int((~np.isfinite(M)).any(axis=1).sum())
        raise ValueError(f"{name}: {bad} point(s) contain NaN or infinite values")
    return M, eps


def pca_spectrum(X: Any) -> np.ndarray:
    """Singular values (min(N, D),) of the centred data ``X`` (N, ...) flattened to (N, D)."""
    M, _ = _as_matrix(X)
    if M.shape[0] < 2:
        raise ValueError(f"X: need at least 2 points, got {M.shape[0]}")
    return np.linalg.svd(M - M.mean(axis=0), compute_uv=False)


def _pca(M: np.ndarray, eps: float, variance: float | None, rtol: float | None) -> tuple[int, dict]:
    s = np.linalg.svd(M - M.mean(axis=0), compute_uv=False)
    var = s**2
    share = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    if rtol is None:
        rtol = max(M.shape) * eps
    rank = int(np.sum(s > rtol * s[0])) if s[0] > 0 else 0
    cum = np.cumsum(share)
    counts = {q: int(min(np.searchsorted(cum, q - 1e-12) + 1, len(s))) for q in (0.9, 0.95, 0.99)}
    details = {"rank": rank, "rtol": rtol, "variance_share": share, "components_for_share": counts}
    if variance is None:
        return rank, details
    k = int(min(np.searchsorted(cum, variance - 1e-12) + 1, len(s))) if rank > 0 else 0
    details["variance"] = variance
    return k, details


def _knn(M: np.ndarray, k: int, device: torch.device, block: int = 1024) -> np.ndarray:
    """Distances (N, k) from each point to its k nearest *other* points, computed in blocks."""
    P = torch.from_numpy(M).to(device)
    sq = (P * P).sum(1)
    out = []
    for a in range(0, P.shape[0], block):
        Q = P[a:a + block]
        d2 = (sq[a:a + block, None] + sq[None, :] - 2.0 * Q @ P.T).clamp_min_(0.0)
        d2[torch.arange(Q.shape[0], device=device), torch.arange(a, a + Q.shape[0], device=device)] = float("inf")
        out.append(torch.topk(d2, k, dim=1, largest=False).values.sqrt())
    return torch.cat(out).cpu().numpy()


def _twonn(M: np.ndarray, device: torch.device, discard: float = 0.1) -> tuple[float, dict]:
    r = _knn(M, 2, device)
    keep = r[:, 0] > 0  # duplicates have r1 = 0: no ratio
    mu = np.sort(r[keep, 1] / r[keep, 0])
    n = len(mu)
    if n < 3:
        raise ValueError("X: fewer than 3 distinct points; TwoNN needs more")
    F = np.arange(1, n + 1) / n
    m = max(int(np.floor(n * (1.0 - discard))), 2)
    x = np.log(mu[:m])
    y = -np.log1p(-F[:m])
    d = float((x @ y) / (x @ x)) if (x @ x) > 0 else float("inf")
    return d, {"n_ratios": n, "discarded_fraction": discard, "mle": float((n - 1) / np.log(mu).sum()) if np.log(mu).sum() > 0 else float("inf")}


def _mle(M: np.ndarray, k1: int, k2: int, device: torch.device) -> tuple[float, dict]:
    T = _knn(M, k2, device)
    T = T[T[:, 0] > 0]
    if len(T) < 2:
        raise ValueError("X: fewer than 2 distinct points; the MLE needs more")
    logT = np.log(T)
    per_k = {}
    for k in range(k1, k2 + 1):
        # 1 / m_k(x) = mean_{j<k} log(T_k / T_j); MacKay–Ghahramani: average the inverses
        inv = (logT[:, k - 1:k] - logT[:, :k - 1]).mean(axis=1)
        per_k[k] = float(1.0 / inv.mean())
    return float(np.mean(list(per_k.values()))), {"k1": k1, "k2": k2, "per_k": per_k}


def intrinsic_dimension(
    X: Any,
    method: str = "pca",
    *,
    variance: float | None = None,
    rtol: float | None = None,
    k: tuple[int, int] = (10, 20),
    max_points: int | None = 5000,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> DimensionEstimate:
    """Estimate the intrinsic dimension of ``X`` (N, ...) — each point flattened to D numbers.

    ``method``: ``"pca"`` (numerical rank of the centred data, or with ``variance=q`` the number
    of principal components holding a share q of the variance), ``"twonn"`` (Facco et al. 2017)
    or ``"mle"`` (Levina–Bickel 2005 with MacKay–Ghahramani averaging over ``k = (k1, k2)``
    neighbours). See the module docstring for the formulas. ``max_points``: the neighbour
    estimators use a random subset of that many points (drawn with ``seed``; None: all);
    PCA always uses every point. ``device``: where the neighbour distances are computed
    (``"auto"``: CUDA if available). Returns a ``DimensionEstimate``.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if variance is not None and (isinstance(variance, bool) or not isinstance(variance, (int, float)) or not 0 < variance <= 1):
        raise ValueError(f"variance: expected a share in (0, 1], got {variance!r}")
    if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1):
        raise ValueError(f"rtol: expected a number in (0, 1), got {rtol!r}")
    try:
        k1, k2 = (int(v) for v in k)
    except (TypeError, ValueError):
        raise ValueError(f"k: expected a pair (k1, k2) of integers, got {k!r}") from None
    if not 2 <= k1 <= k2:
        raise ValueError(f"k: expected 2 <= k1 <= k2, got {k!r}")
    if max_points is not None and (isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 3):
        raise ValueError(f"max_points: expected an integer >= 3 or None, got {max_points!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    dev = resolve_device(device)
    M, eps = _as_matrix(X)
    N, D = M.shape
    if N < 2:
        raise ValueError(f"X: need at least 2 points, got {N}")

    if method == "pca":
        dim, details = _pca(M, eps, variance, rtol)
        return DimensionEstimate(float(dim), method, D, N, details)

    if max_points is not None and N > max_points:
        M = M[np.sort(np.random.default_rng(seed).choice(N, max_points, replace=False))]
    need = 3 if method == "twonn" else k2 + 1
    if M.shape[0] < need:
        raise ValueError(f"X: method {method!r} needs at least {need} points, got {M.shape[0]}")
    if method == "twonn":
        dim, details = _twonn(M, dev)
    else:
        dim, details = _mle(M, k1, k2, dev)
    return DimensionEstimate(dim, method, D, M.shape[0], details)
