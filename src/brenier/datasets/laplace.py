"""Steady-state temperatures: solutions of the discrete Laplace equation on an n × n grid.

The manifold distribution principle in its simplest exact form. The unknowns are the n × n
interior temperatures u_ij (0 <= i, j < n); around them lies a ring of fixed boundary
temperatures g (the 4n nodes next to the interior: n on each side; the 4 corner nodes of the
(n+2) × (n+2) grid touch no interior node and play no part). At steady state every interior
value is the mean of its four neighbours,

    4 u_ij - u_(i-1)j - u_(i+1)j - u_i(j-1) - u_i(j+1) = 0,

with the boundary values substituted where a neighbour is on the ring. That is a sparse linear
system ``A u = B g``: A is the (n² × n²) five-point Laplacian with Dirichlet conditions
(symmetric positive definite), and B (n² × 4n) adds each boundary value to the interior node
next to it. So every solution is ``u = A⁻¹ B g``: n² numbers fixed by the boundary alone, and
the set of all solutions is the linear subspace ``range(A⁻¹ B)`` of R^(n²).

Its dimension is ``rank(B) = 4n - 4``, not 4n: each of the four interior corner nodes has *two*
boundary neighbours, and the equation sees only their sum, so four directions of boundary data
(``+1`` on one neighbour of a corner, ``-1`` on the other) leave the interior unchanged. That
number, ``boundary_dim``, is the dimension of the data manifold; the ambient dimension is n².

Random boundary values. The 4n boundary nodes are walked once around the ring (top row left to
right, right column top to bottom, bottom row right to left, left column bottom to top) and
given a random periodic function of the position k on that loop, written in the real discrete
Fourier basis of the loop:

    g_k = sum_{m=0}^{2n} sigma_m (a_m cos(2 pi m k / 4n) + b_m sin(2 pi m k / 4n)),
    a_m, b_m ~ N(0, 1),   sigma_m = (1 + m)^(-smoothness)

(no sine term for m = 0 and m = 2n, where it vanishes). These are exactly 4n independent
Gaussian coordinates, every one with positive variance: the boundary values are smooth in the
sense that their spectrum decays (``smoothness`` = 1: roughly a Brownian loop; 2: once
differentiable), yet *every* boundary degree of freedom is excited, so the solutions fill the
whole (4n - 4)-dimensional subspace rather than the few directions of the lowest frequencies. A
boundary that drew only a handful of low-frequency modes would make the data's dimension that
handful, not the boundary's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .toy import _check_seed

__all__ = ["laplace", "LaplaceData", "laplace_operator"]


class LaplaceData(NamedTuple):
    """``fields``: (count, n, n) float64 interior temperatures; ``boundary_dim``: 4n - 4."""

    fields: np.ndarray
    boundary_dim: int


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def laplace_operator(n: int):
    """The sparse system of the n × n grid: ``(A, B)``, A (n², n²) CSC, B (n², 4n) CSR.

    Interior node (i, j) has index i·n + j (row-major, matching ``fields.reshape(count, n²)``);
    boundary node k follows the loop described in the module docstring.
    """
    import scipy.sparse as sp

    n = _check_int(n, "n", 2)
    eye = sp.identity(n, format="csr")
    t = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="csr")
    A = (sp.kron(eye, t) + sp.kron(t, eye)).tocsc()
    # boundary node k → the interior node next to it, walking the ring clockwise from the top-left
    idx = np.arange(n)
    interior = np.concatenate([
        0 * n + idx,                  # top row, left to right      (boundary row -1)
        idx * n + (n - 1),            # right column, top to bottom (boundary column n)
        (n - 1) * n + idx[::-1],      # bottom row, right to left   (boundary row n)
        idx[::-1] * n + 0,            # left column, bottom to top  (boundary column -1)
    ])
    B = sp.csr_matrix((np.ones(4 * n), (interior, np.arange(4 * n))), shape=(n * n, 4 * n))
    return A, B


def _boundary_values(n: int, count: int, smoothness: float, rng: np.random.Generator) -> np.ndarray:
    """(4n, count) random loop functions with all 4n real Fourier coordinates excited."""
    L = 4 * n
    k = np.arange(L)
    cols, sig = [], []
    for m in range(0, L // 2 + 1):
        s = (1.0 + m) ** (-smoothness)
        cols.append(np.cos(2 * np.pi * m * k / L))
        sig.append(s)
        if 0 < m < L // 2:
            cols.append(np.sin(2 * np.pi * m * k / L))
            sig.append(s)
    basis = np.stack(cols, axis=1)                      # (L, L): orthogonal columns
    basis /= np.linalg.norm(basis, axis=0)              # orthonormal: sigma_m is the real amplitude
    coef = rng.standard_normal((L, count)) * np.asarray(sig)[:, None]
    return basis @ coef * np.sqrt(L)                    # O(1) values per node


def laplace(n: int, count: int, seed: int = 0, *, smoothness: float = 1.0) -> LaplaceData:
    """``count`` steady-state temperature fields on an n × n grid with random boundary values.

    Returns ``LaplaceData(fields, boundary_dim)`` (a named tuple: ``X, dim = laplace(...)``
    works): ``fields`` (count, n, n) float64, the interior solutions of the discrete Laplace
    equation, solved with SciPy's sparse LU (one factorisation, all right-hand sides at once);
    ``boundary_dim`` = 4n - 4, the dimension of the linear subspace they span (see the module
    docstring for why it is not 4n). ``smoothness`` >= 0 sets the decay of the boundary values'
    spectrum, sigma_m = (1 + m)^(-smoothness); every Fourier mode is drawn, so the fields fill
    the whole subspace whatever the value (it only makes the high-frequency directions weaker).
    """
    from scipy.sparse.linalg import splu

    n = _check_int(n, "n", 2)
    count = _check_int(count, "count", 1)
    seed = _check_seed(seed)
    if isinstance(smoothness, bool) or not isinstance(smoothness, (int, float)) or not np.isfinite(smoothness) or smoothness < 0:
        raise ValueError(f"smoothness: expected a finite number >= 0, got {smoothness!r}")
    rng = np.random.default_rng(seed)
    A, B = laplace_operator(n)
    g = _boundary_values(n, count, float(smoothness), rng)
    u = splu(A).solve(np.asarray(B @ g))               # (n², count)
    return LaplaceData(np.ascontiguousarray(u.T.reshape(count, n, n)), 4 * n - 4)
