"""``gaussian``: one Gaussian N(mean, covariance) fitted to the codes (maximum likelihood)."""

from __future__ import annotations

import numpy as np

from .base import Baseline


class GaussianBaseline(Baseline):
    """One Gaussian fitted to the codes: sample mean and covariance (ddof = 1).

    The simplest density model: unimodal, so it puts mass between modes by construction.
    Attributes: mean_ (d,), covariance_ (d, d).
    """

    name = "gaussian"
    description = "one Gaussian (sample mean and covariance)"

    def _fit(self, codes: np.ndarray) -> None:
        self.mean_ = codes.mean(axis=0)
        self.covariance_ = np.atleast_2d(np.cov(codes, rowvar=False))
        self._chol = _cholesky(self.covariance_)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        z = np.random.default_rng(seed).standard_normal((n, self.dim_))
        return self.mean_ + z @ self._chol.T


def _cholesky(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor, with a tiny diagonal jitter if the covariance is singular."""
    jitter = 0.0
    scale = float(np.trace(cov)) / len(cov) or 1.0
    for _ in range(8):
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter = max(jitter * 10, 1e-10 * scale)
    raise ValueError("codes: covariance is not positive definite even with jitter")
