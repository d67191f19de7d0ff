"""Image data: bundled digits, MNIST from the optional package, user .npz files and folders, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from brenier.datasets import load
from brenier.datasets.images import mnist_file


def test_digits_shape_range_labels():
    X, y = load("digits")
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.shape == (1797,) and set(np.unique(y)) == set(range(10))
    X5, y5 = load("digits", limit=5)
    np.testing.assert_array_equal(X5, X[:5])
    np.testing.assert_array_equal(y5, y[:5])


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limit(limit):
    with pytest.raises(ValueError, match="limit"):
        load("digits", limit=limit)


def test_unknown_name():
    with pytest.raises(FileNotFoundError, match="not a built-in data set"):
        load("no-such-data")
    with pytest.raises(TypeError, match="name_or_path"):
        load(3)


def test_mnist_ships_in_package():
    pytest.importorskip("mnist", reason="optional extra brenier[mnist] not installed")
    f = mnist_file()
    assert f.name == "mnist.pkl.gz" and f.stat().st_size > 15_000_000  # the data itself, not a downloader


@pytest.mark.slow
def test_mnist_load():
    pytest.importorskip("mnist")
    X, y = load("mnist")
    assert X.shape == (60000, 1, 28, 28) and y.shape == (60000,)
    assert 0 <= X.min() and X.max() <= 1 and np.bincount(y).min() > 5000


# ---------------------------------------------------------------- .npz
@pytest.mark.parametrize("shape,expected", [
    ((6, 8, 8), (6, 1, 8, 8)),          # (n, H, W)
    ((6, 1, 8, 8), (6, 1, 8, 8)),       # (n, C, H, W)
    ((6, 8, 8, 3), (6, 3, 8, 8)),       # channels last
    ((6, 64), (6, 1, 8, 8)),            # flat, square
])
def test_npz_shapes(tmp_path, shape, expected):
    x = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(6))
    X, y = load(tmp_path / "d.npz")
    assert X.shape == expected and X.dtype == np.float32
    assert X.max() <= 1.0 and abs(X.max() - x.max() / 255) < 1e-6
    np.testing.assert_array_equal(y, np.arange(6))


def test_npz_float_255_scaled_and_no_labels(tmp_path):
    x = np.full((3, 8, 8), 127.5, dtype=np.float64)
    np.savez(tmp_path / "d.npz", x=x)
    X, y = load(str(tmp_path / "d.npz"))
    assert y is None and np.allclose(X, 0.5)


@pytest.mark.parametrize("arrays,needle", [
    ({"images": np.zeros((3, 8, 8))}, "no array named 'x'"),
    ({"x": np.zeros((3, 8, 8)) + np.nan}, "NaN"),
    ({"x": -np.ones((3, 8, 8))}, "pixel values"),
    ({"x": np.zeros((3, 65))}, "square number"),
    ({"x": np.zeros((1, 8, 8))}, "at least 2"),
    ({"x": np.zeros((3, 8, 8)), "y": np.arange(4)}, "expected 3 labels"),
    ({"x": np.zeros((3, 8, 8)), "y": np.array([0.5, 1, 2])}, "integer labels"),
    ({"x": np.zeros((3, 8, 8), dtype=np.int32) + 300}, "0..255"),
])
def test_npz_bad(tmp_path, arrays, needle):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=needle):
        load(tmp_path / "bad.npz")


def test_npz_corrupt_and_wrong_type(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="c.npz"):
        load(tmp_path / "c.npz")
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        load(tmp_path / "a.txt")


def test_npz_pickled_objects_refused(tmp_path):
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load(tmp_path / "p.npz")


# ---------------------------------------------------------------- folders
def _png(path, arr, mode="L"):
    from PIL import Image

    Image.fromarray(arr.astype(np.uint8), mode=mode).save(path)


def test_folder_flat_and_classes(tmp_path):
    rng = np.random.default_rng(1)
    flat = tmp_path / "flat"
    flat.mkdir()
    imgs = rng.integers(0, 256, size=(3, 10, 12))
    for k, a in enumerate(imgs):
        _png(flat / f"{k}.png", a)
    X, y = load(flat)
    assert X.shape == (3, 1, 10, 12) and y is None
    np.testing.assert_allclose(X[:, 0], imgs / 255.0, atol=1e-6)

    cls = tmp_path / "cls"
    for name, n in (("cat", 2), ("dog", 3)):
        (cls / name).mkdir(parents=True)
        for k in range(n):
            _png(cls / name / f"{k}.png", rng.integers(0, 256, size=(8, 8, 3)), mode="RGB")
    X, y = load(cls)
    assert X.shape == (5, 3, 8, 8)
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 1])


def test_folder_errors_name_the_file(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    _png(d / "a.png", np.zeros((8, 8)))
    _png(d / "b.png", np.zeros((9, 8)))
    with pytest.raises(ValueError, match=r"b\.png.*one size"):
        load(d)
    d2 = tmp_path / "corrupt"
    d2.mkdir()
    _png(d2 / "a.png", np.zeros((8, 8)))
    (d2 / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load(d2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="need at least 2"):
        load(empty)
