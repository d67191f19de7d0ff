"""Boundary-aware generation and the reflected walk (brenier.sampling)."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

from brenier.datasets import toy
from brenier.ot import SemiDiscreteOT
from brenier.sampling import reflect_walk
from brenier.sources import UniformBall

warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")


@pytest.fixture(scope="module")
def ring():
    d = toy("ring8", 500, seed=5)
    ot = SemiDiscreteOT(UniformBall(2), method="exact").fit(d.points)
    ot.singular_set()
    return d, ot


def _mode_kl(d, X) -> float:
    comp = d.component(X)
    f = np.bincount(comp[comp >= 0], minlength=d.n_components) / max(int((comp >= 0).sum()), 1)
    p = d.component_weights
    nz = f > 0
    return float(np.sum(f[nz] * np.log(f[nz] / p[nz])))


def test_sample_respects_the_support(ring):
    d, ot = ring
    X = ot.sample(4000, seed=0)
    assert isinstance(X, np.ndarray) and X.shape == (4000, 2) and np.isfinite(X).all()
    off = float(np.mean(~d.contains(X)))
    assert off <= 0.002
    assert _mode_kl(d, X) < 0.05
    assert len(np.unique(d.component(X))) == 8
    # new points: almost none within 1e-3 * scale of a target
    dist = np.min(np.linalg.norm(X[:, None, :] - d.points[None], axis=2), axis=1)
    assert np.mean(dist > 1e-3 * d.scale) > 0.9
    # and they are not the plain map: they differ from T(x)
    Y, x, cells = ot.sample(500, seed=1, return_source=True)
    np.testing.assert_array_equal(cells, ot.assign(x))
    assert np.median(np.linalg.norm(Y - ot.transport(x), axis=1)) > 0


def test_ignore_mixes_modes_respect_does_not(ring):
    d, ot = ring
    off_r = np.mean(~d.contains(ot.sample(4000, seed=2, boundary="respect")))
    off_i = np.mean(~d.contains(ot.sample(4000, seed=2, boundary="ignore")))
    assert off_i > off_r
    assert off_i > 0.002


def test_same_seed_same_points_and_caller_kind(ring):
    d, ot = ring
    np.testing.assert_array_equal(ot.sample(100, seed=7), ot.sample(100, seed=7))
    assert not np.array_equal(ot.sample(100, seed=7), ot.sample(100, seed=8))
    ot_t = SemiDiscreteOT(UniformBall(2), method="exact").fit(torch.tensor(d.points))
    Z = ot_t.sample(50, seed=0)
    assert isinstance(Z, torch.Tensor) and Z.shape == (50, 2)
    assert ot.sample(0, seed=0).shape == (0, 2)


@pytest.mark.slow  # ~1 s alone, but tens of seconds on a loaded 2-core box
def test_barycentric_rule_2d(ring):
    d, ot = ring
    X = ot.sample(1500, seed=3, method="barycentric")
    assert X.shape == (1500, 2)
    assert np.mean(~d.contains(X)) <= 0.01


def test_sample_in_16d_is_fast():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    lab = rng.integers(0, 4, 1500)
    Y = (centres[lab] + 0.3 * rng.normal(size=(1500, 16))) / 4
    ot = SemiDiscreteOT(UniformBall(16), method="newton", max_iter=2, seed=0).fit(Y)
    t = time.perf_counter()
    S = ot.singular_set()
    X = ot.sample(4000, seed=0, boundary="respect")
    Xi = ot.sample(4000, seed=0, boundary="ignore")
    elapsed = time.perf_counter() - t
    assert X.shape == (4000, 16) and np.isfinite(X).all() and np.isfinite(Xi).all()
    assert S.adjacency.shape[1] == 2 and len(S.modes) == 1500
    assert elapsed < 40, elapsed
    # the four Gaussians are the four largest modes (a 2-iteration fit may leave a few tiny
    # spurious ones), and every facet between them is singular
    sizes = np.bincount(S.modes)
    assert S.n_modes >= 4 and sizes[:4].sum() >= 0.97 * len(Y)
    big = S.modes < 4
    assert all(len(np.unique(lab[big & (S.modes == m)])) == 1 for m in range(4))
    cross = lab[S.adjacency[:, 0]] != lab[S.adjacency[:, 1]]
    assert np.all(S.singular[cross])
    # respect: each generated point is a blend of one Gaussian's targets only
    own = np.argmin(np.linalg.norm(X[:, None] - centres[None] / 4, axis=2), axis=1)
    assert len(np.unique(own)) == 4


def test_reflect_walk_never_changes_mode(ring):
    d, ot = ring
    S = ot.singular_set_
    path = reflect_walk(ot, 300, 0.08, seed=0)
    assert path.shape == (301, 2)
    assert np.all(np.linalg.norm(path, axis=1) <= 1 + 1e-9)
    assert len(ot.crossings(path)) == 0
    modes = S.modes[ot.assign(path)]
    assert np.all(modes == modes[0])
    assert np.ptp(path, axis=0).max() > 0.05            # it does move
    # the same walk without reflection would cross: a straight line across the ring does
    assert len(ot.crossings(np.array([[-0.8, 0.0], [0.8, 0.0]]))) >= 1
    np.testing.assert_array_equal(path, reflect_walk(ot, 300, 0.08, seed=0))


def test_bad_input(ring):
    _, ot = ring
    with pytest.raises(ValueError, match="boundary"):
        ot.sample(10, boundary="maybe")
    with pytest.raises(ValueError, match="n"):
        ot.sample(-1)
    with pytest.raises(ValueError, match="seed"):
        ot.sample(10, seed=-3)
    with pytest.raises(ValueError, match="method"):
        ot.sample(10, method="magic")
    with pytest.raises(ValueError, match="step"):
        reflect_walk(ot, 10, 0.0, seed=0)
    with pytest.raises(ValueError, match="n_steps"):
        reflect_walk(ot, 0, 0.1, seed=0)
    with pytest.raises(ValueError, match="x0"):
        reflect_walk(ot, 5, 0.1, seed=0, x0=[3.0, 3.0])
    with pytest.raises(ValueError, match="fit"):
        SemiDiscreteOT().sample(5)
