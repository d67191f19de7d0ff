"""The interface every baseline follows: ``fit(codes)`` then ``sample(n, seed)``.

A baseline is a generative model of latent codes (N, d) (2-D toy points, or an autoencoder's
latent vectors). ``fit`` returns ``self`` and stores what it learned in attributes ending in
``_``; ``sample(n, seed)`` returns (n, d) float64 NumPy codes and is deterministic in ``seed``;
``info()`` returns the settings and fit diagnostics as a JSON-ready dict (``compare.json``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .._array import as_points


class Baseline:
    """Base class: validates inputs, times ``fit``, stores ``dim_`` and ``n_train_``."""

    #: registry name (``brenier.baselines.BASELINES``)
    name: str = "baseline"
    #: one line for tables and figures
    description: str = ""

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    # subclasses implement these two
    def _fit(self, codes: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample(self, n: int, seed: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, codes: Any) -> "Baseline":
        """Fit to codes (N, d), NumPy or torch. Returns self."""
        x = as_points(codes, "codes", min_rows=2).numpy()
        _check_seed(self.seed, "seed")
        self.dim_, self.n_train_ = int(x.shape[1]), int(x.shape[0])
        t0 = time.perf_counter()
        self._fit(x)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "dim_"):
            from ..ot import NotFittedError

            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(codes) first")

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """Draw n codes (n, d) as float64 NumPy; the same seed gives the same codes."""
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        seed = self.seed if seed is None else seed
        _check_seed(seed, "seed")
        out = np.asarray(self._sample(int(n), int(seed)), dtype=np.float64)
        assert out.shape == (n, self.dim_), out.shape
        return out

    def info(self) -> dict[str, Any]:
        """Settings and fit diagnostics (JSON-ready)."""
        return {"name": self.name, "seed": self.seed, "fit_time_s": round(getattr(self, "fit_time_", float("nan")), 3)}

    def __repr__(self) -> str:
        state = f"fitted: N={self.n_train_}, d={self.dim_}" if hasattr(self, "dim_") else "not fitted"
        return f"{type(self).__name__}(seed={self.seed}; {state})"


def _check_seed(seed, name: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {seed!r}")
