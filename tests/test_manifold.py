import numpy as np
import pytest
import torch

from brenier.datasets import laplace
from brenier.manifold import intrinsic_dimension, pca_spectrum


@pytest.mark.parametrize("n", [8, 16])
def test_pca_equals_boundary_dimension_on_laplace(n):
    X, dim = laplace(n, 400, seed=0)
    assert intrinsic_dimension(X, "pca").dimension == dim


def test_pca_rank_32_grid():
    X, dim = laplace(32, 130, seed=0)  # 130 >= 4n - 4 + 1 = 125 fields: enough to span the subspace
    assert dim == 124 and intrinsic_dimension(X, "pca").dimension == dim
    assert intrinsic_dimension(X[:100], "pca").dimension == 99  # fewer fields cap the rank: N - 1


def test_neighbour_estimators_on_a_flat_gaussian():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((2000, 4)) @ rng.standard_normal((4, 30))
    assert intrinsic_dimension(Z, "pca").dimension == 4
    assert abs(intrinsic_dimension(Z, "twonn").dimension - 4) < 0.4
    assert abs(intrinsic_dimension(Z, "mle").dimension - 4) < 0.4


def test_neighbour_estimators_see_a_curved_surface():
    rng = np.random.default_rng(1)
    t, h = rng.uniform(1.5 * np.pi, 4.5 * np.pi, 2000), rng.uniform(0, 20, 2000)
    roll = np.c_[t * np.cos(t), h, t * np.sin(t)]          # a 2-D swiss roll in R^3
    assert intrinsic_dimension(roll, "pca").dimension == 3  # linear: sees the span
    assert abs(intrinsic_dimension(roll, "twonn").dimension - 2) < 0.3
    assert abs(intrinsic_dimension(roll, "mle").dimension - 2) < 0.3


def test_variance_share_and_spectrum():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((500, 3)) * np.array([10.0, 1.0, 0.1])
    est = intrinsic_dimension(X, "pca", variance=0.9)
    assert est.dimension == 1 and est.details["rank"] == 3
    s = pca_spectrum(X)
    assert s.shape == (3,) and np.all(np.diff(s) <= 0)


def test_torch_input_and_images_flattened():
    X = torch.rand(50, 1, 4, 4)
    est = intrinsic_dimension(X, "pca")
    assert est.ambient_dim == 16 and est.n_points == 50


def test_bad_input():
    with pytest.raises(ValueError, match="method"):
        intrinsic_dimension(np.zeros((10, 2)), "foo")
    with pytest.raises(ValueError, match="X"):
        intrinsic_dimension(np.array([1.0, np.nan, 2.0])[:, None], "pca")
    with pytest.raises(ValueError, match="X"):
        intrinsic_dimension(np.ones(5), "pca")
    with pytest.raises(TypeError, match="X"):
        intrinsic_dimension(np.array([["a", "b"]]), "pca")
    with pytest.raises(ValueError, match="k"):
        intrinsic_dimension(np.zeros((10, 2)), "mle", k=(5, 2))
    with pytest.raises(ValueError, match="variance"):
        intrinsic_dimension(np.zeros((10, 2)), "pca", variance=1.5)
    with pytest.raises(ValueError, match="X"):
        intrinsic_dimension(np.random.default_rng(0).random((8, 2)), "mle", k=(10, 20))


def test_cli_dimension_laplace(tmp_path):
    import json

    from typer.testing import CliRunner

    from brenier.cli import app

    out = tmp_path / "dim.json"
    r = CliRunner().invoke(app, ["dimension", "--data", "laplace", "--n", "8", "--count", "300", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "true dimension" in r.output and "28" in r.output
    summary = json.loads(out.read_text())
    assert summary["pca"] == summary["true_dim"] == 28 and summary["ambient_dim"] == 64
    assert 0 < summary["twonn"] < 28 and 0 < summary["mle"] < 28


def test_cli_dimension_bad_data():
    from typer.testing import CliRunner

    from brenier.cli import app

    r = CliRunner().invoke(app, ["dimension", "--data", "no-such-thing"])
    assert r.exit_code == 2 and "--data" in r.output
