import numpy as np
import pytest

from brenier.datasets import laplace
from brenier.datasets.laplace import laplace_operator


def test_fields_solve_the_discrete_laplace_equation():
    n = 6
    X, dim = laplace(n, 5, seed=1)
    assert X.shape == (5, n, n) and X.dtype == np.float64 and dim == 4 * n - 4
    # rebuild the padded grid from the boundary values: A u = B g means each interior node is the
    # mean of its four neighbours; check it on the interior nodes not touching the ring
    inner = X[:, 1:-1, 1:-1]
    mean4 = (X[:, :-2, 1:-1] + X[:, 2:, 1:-1] + X[:, 1:-1, :-2] + X[:, 1:-1, 2:]) / 4
    np.testing.assert_allclose(inner, mean4, atol=1e-10)


def test_operator_shapes_and_rank():
    A, B = laplace_operator(5)
    assert A.shape == (25, 25) and B.shape == (25, 20)
    assert np.linalg.matrix_rank(B.toarray()) == 16  # 4n - 4: the corner pairs collapse


def test_seed_reproducible_and_distinct():
    a, _ = laplace(4, 3, seed=0)
    b, _ = laplace(4, 3, seed=0)
    c, _ = laplace(4, 3, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("kw, arg", [({"n": 1}, "n"), ({"count": 0}, "count"), ({"seed": -1}, "seed"),
                                     ({"smoothness": -1.0}, "smoothness"), ({"n": 2.5}, "n")])
def test_bad_input(kw, arg):
    args = {"n": 4, "count": 2, "seed": 0} | kw
    smooth = args.pop("smoothness", 1.0)
    with pytest.raises(ValueError, match=arg):
        laplace(args["n"], args["count"], args["seed"], smoothness=smooth)
