"""``ot`` / ``ot-ignore``: the semi-discrete OT map (ours), with and without the singular-set rule.

Both fit ``SemiDiscreteOT`` from a uniform ball onto the codes (the exact power-diagram solver
in 2-D, Monte Carlo Newton otherwise) and generate with ``SemiDiscreteOT.sample``: new codes
from the piecewise-linear extension of the map, which with ``boundary="respect"`` never
interpolates across the singular set and with ``boundary="ignore"`` does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .base import Baseline


class OTBaseline(Baseline):
    """Semi-discrete OT from the uniform unit ball onto the (standardised) codes.

    Parameters
    ----------
    boundary : "respect" (ours: the extension never crosses the singular set) or "ignore".
    method : SemiDiscreteOT method; "auto" = exact in 2-D, Monte Carlo Newton otherwise.
    tol : solver tolerance (None: the solver's default).
    device : "auto" | "cpu" | "cuda".
    ot : an already fitted ``SemiDiscreteOT`` on these codes (e.g. the one inside a fitted
        AEOT model) to reuse instead of fitting again; ``fit`` then only checks the codes.

    The codes are centred and scaled by one number (their RMS radius) so that the unit ball
    source suits them; a similarity transform keeps the OT map's geometry (cells, singular
    set) unchanged up to that scale.

    Attributes: ot_ (the fitted SemiDiscreteOT), shift_, scale_.
    """

    name = "ot"
    description = "semi-discrete OT, extension respects the singular set (ours)"
    boundary_default = "respect"

    def __init__(self, *, seed: int = 0, boundary: str | None = None, method: str = "auto", tol: float | None = None,
                 device: str = "auto", progress: bool = False, ot=None, standardise: bool = True):
        super().__init__(seed=seed)
        self.boundary = boundary or self.boundary_default
        self.method = method
        self.tol = tol
        self.device = device
        self.progress = progress
        self.ot = ot
        self.standardise = standardise

    def _fit(self, codes: np.ndarray) -> None:
        from ..ot import SemiDiscreteOT
        from ..sources import UniformBall

        if self.boundary not in ("respect", "ignore"):
            raise ValueError(f"boundary: expected 'respect' or 'ignore', got {self.boundary!r}")
        if self.ot is not None:  # reuse a fitted map: its targets are the codes in its own frame
            self.ot_, self.shift_, self.scale_ = self.ot, np.zeros(codes.shape[1]), 1.0
            return
        d = codes.shape[1]
        if self.standardise:
            self.shift_ = codes.mean(axis=0)
            self.scale_ = float(np.sqrt(np.mean(np.sum((codes - self.shift_) ** 2, axis=1)))) or 1.0
        else:
            self.shift_, self.scale_ = np.zeros(d), 1.0
        y = (codes - self.shift_) / self.scale_
        method = self.method
        if method == "auto":
            method = "exact" if d == 2 else "newton"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
            self.ot_ = SemiDiscreteOT(UniformBall(d), method=method, tol=self.tol, device=self.device,
                                      seed=self.seed).fit(y, progress=self.progress)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        if hasattr(self.ot_, "sample"):
            z = self.ot_.sample(n, seed=seed, boundary=self.boundary)
        else:  # the same extension, as the function in brenier.sampling
            from ..sampling import sample as extension_sample

            z = extension_sample(self.ot_, n, seed=seed, boundary=self.boundary)
        z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
        return z.astype(np.float64) * self.scale_ + self.shift_

    def sample_with_sources(self, n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(codes (n, d) float64 as ``sample(n, seed)``, x (n, d) float64): the samples and the
        source points they came from, in the map's source frame (for ``mixture_origins``)."""
        from ..sampling import sample as extension_sample

        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        seed = self.seed if seed is None else seed
        z, x, _ = extension_sample(self.ot_, int(n), seed=seed, boundary=self.boundary, return_source=True)
        z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return z.astype(np.float64) * self.scale_ + self.shift_, x.astype(np.float64)

    def with_boundary(self, boundary: str) -> "OTBaseline":
        """A copy sharing this fitted map (and its frame) that samples with another ``boundary``
        rule: ``ot`` and ``ot-ignore`` from one OT fit."""
        import copy

        if not hasattr(self, "ot_"):
            from ..ot import NotFittedError

            raise NotFittedError("this OT baseline is not fitted yet: call fit(codes) first")
        if boundary not in ("respect", "ignore"):
            raise ValueError(f"boundary: expected 'respect' or 'ignore', got {boundary!r}")
        other = copy.copy(self)
        other.__class__ = OTBaseline if boundary == "respect" else OTIgnoreBaseline
        other.boundary = boundary
        return other

    def info(self) -> dict[str, Any]:
        out = super().info()
        ot = getattr(self, "ot_", None)
        out.update(boundary=self.boundary, sampler="piecewise-linear extension (brenier.sampling.sample)")
        if ot is not None:
            out.update(method=ot.method_, converged=bool(ot.converged_), tv_error=float(ot.tv_error_),
                       ot_iterations=int(ot.n_iter_), ot_fit_time_s=round(float(ot.fit_time_), 3))
        return out


class OTIgnoreBaseline(OTBaseline):
    """The same OT map; its piecewise-linear extension ignores the singular set."""

    name = "ot-ignore"
    description = "semi-discrete OT, extension ignores the singular set"
    boundary_default = "ignore"

