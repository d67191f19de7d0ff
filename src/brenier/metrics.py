"""Metrics for generative models: mode mixture, coverage, fidelity, novelty, memorisation.

Pure functions on NumPy arrays (a torch tensor is accepted and converted). Each function's
docstring states its definition; ``tests/test_metrics.py`` checks every one on a case with a
known answer.

2-D toy data (exact ground truth, see ``brenier.datasets.toy``): the component label of each
sample, ``ToyData.component(samples)`` (-1 off the support), is all the mode metrics need.

* ``off_support_rate``  share of samples outside the support.
* ``mode_counts`` / ``modes_hit``  samples per component / components that get their share.
* ``mode_kl``  KL(true component weights || the model's component frequencies).
* ``novelty``  share of samples that are not copies of a training point.
* ``energy_distance``, ``sliced_wasserstein``  distance to held-out data (fidelity).
* ``toy_metrics``  all of the above in one dict.

Images (scored in the space of a small classifier trained on the real training set,
``FeatureClassifier``):

* ``mode_mixture_rate``  share of samples whose top class probability is below 0.5.
* ``confident_share``  share whose top class probability is at least 0.9.
* ``class_histogram_kl``  KL(real class histogram || generated class histogram).
* ``frechet_distance``  Fréchet distance between Gaussians fitted to two feature sets.
* ``prdc``  precision, recall, density, coverage (Naeem et al. 2020).
* ``memorisation_score``  share of samples closer to a training point than that point's own
  nearest training neighbour.
* ``image_metrics``  all of the above in one dict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ._array import as_points

__all__ = [
    "off_support_rate", "mode_counts", "modes_hit", "mode_kl", "novelty", "energy_distance",
    "sliced_wasserstein", "toy_metrics", "mode_mixture_rate", "confident_share", "class_histogram_kl",
    "frechet_distance", "prdc", "memorisation_score", "image_metrics", "kl_frequencies",
    "FeatureClassifier",
]

#: rows × columns of one block of pairwise distances (float64: 8 bytes each)
_BLOCK = 4_000_000


# ------------------------------------------------------------------ input helpers
def _points(x: Any, name: str, dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """Finite (M, d) float64 points: the package's shared check (``_array.as_points``), as NumPy."""
    if np.ndim(x) != 2:  # as_points would take a single (d,) point; metrics want a set of points
        raise ValueError(f"{name}: expected a 2-D array (M, d), got shape {np.shape(x)}")
    return as_points(x, name, dim=dim, min_rows=min_rows).cpu().numpy()


def _labels(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: expected a 1-D integer array of labels, got shape {a.shape} dtype {a.dtype}")
    return a.astype(np.int64)


def _probabilities(p: Any, name: str = "probs") -> np.ndarray:
    a = _points(p, name)
    if (a < -1e-9).any() or not np.allclose(a.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"{name}: expected rows of class probabilities (non-negative, summing to 1)")
    return a


def _weights(w: Any, k: int, name: str = "weights") -> np.ndarray:
    a = np.asarray(w, dtype=np.float64).reshape(-1)
    if a.shape != (k,) or not np.isfinite(a).all() or (a < 0).any() or a.sum() <= 0:
        raise ValueError(f"{name}: expected {k} non-negative finite weights, got shape {a.shape}")
    return a / a.sum()


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _row_blocks(m: int, n: int):
    step = max(1, _BLOCK // max(n, 1))
    for s in range(0, m, step):
        yield slice(s, min(m, s + step))


def _knn_dist(a: np.ndarray, b: np.ndarray, k: int = 1, exclude_self: bool = False) -> np.ndarray:
    """Distance (M,) from each row of a to its k-th nearest row of b (skipping a_i itself when
    ``exclude_self`` and a is b). Chunked: never holds more than ``_BLOCK`` distances."""
    out = np.empty(len(a))
    kk = k + 1 if exclude_self else k
    if kk > len(b):
        raise ValueError(f"k: need at least {kk} reference points, got {len(b)}")
    for sl in _row_blocks(len(a), len(b)):
        d = _sq_dists(a[sl], b)
        if exclude_self:
            # the point itself sits at distance 0: drop exactly one zero per row
            d[np.arange(d.shape[0]), np.arange(sl.start, sl.stop)] = -1.0
        part = np.partition(d, kk - 1, axis=1)[:, kk - 1]
        out[sl] = np.sqrt(np.maximum(part, 0.0))
    return out


def _mean_dist(a: np.ndarray, b: np.ndarray) -> float:
    total = 0.0
    for sl in _row_blocks(len(a), len(b)):
        total += float(np.sqrt(_sq_dists(a[sl], b)).sum())
    return total / (len(a) * len(b))


# ------------------------------------------------------------------ frequencies
def kl_frequencies(p_true: Any, counts: Any, alpha: float = 0.5) -> float:
    """KL(p || q̂) = Σ_k p_k log(p_k / q̂_k) between a reference distribution p (K,) and the
    smoothed frequencies q̂_k = (c_k + alpha) / (Σ c + K alpha) of observed counts c (K,).

    The pseudo-count ``alpha`` (default 1/2, Jeffreys) keeps the value finite when a class gets
    no sample. Terms with p_k = 0 contribute 0. In nats.
    """
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    p = _weights(p_true, len(c), "p_true")
    if (c < 0).any():
        raise ValueError("counts: expected non-negative counts")
    if alpha < 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha: expected a non-negative number, got {alpha!r}")
    q = (c + alpha) / (c.sum() + len(c) * alpha) if (c.sum() + len(c) * alpha) > 0 else np.full(len(c), 1.0 / len(c))
    nz = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[nz] * (np.log(p[nz]) - np.log(q[nz]))))


# ------------------------------------------------------------------ 2-D toy metrics
def off_support_rate(components: Any) -> float:
    """Share of samples off the support: mean(components < 0).

    ``components`` (M,) int: the true component of each sample, -1 off the support
    (``ToyData.component(samples)``).
    """
    c = _labels(components, "components")
    return float(np.mean(c < 0)) if len(c) else math.nan


def mode_counts(components: Any, n_components: int) -> np.ndarray:
    """Number of samples in each component (n_components,) (off-support samples not counted)."""
    c = _labels(components, "components")
    if (c >= n_components).any():
        raise ValueError(f"components: label {int(c.max())} ≥ n_components = {n_components}")
    return np.bincount(c[c >= 0], minlength=n_components)


def modes_hit(components: Any, weights: Any, min_fraction: float = 0.1) -> int:
    """Number of components k that receive at least ``min_fraction`` of their expected count:
    #{k : c_k ≥ min_fraction · M · w_k}, where c_k counts the samples in component k, M is the
    number of samples (on or off the support) and w_k the true weight of component k.

    With the default 0.1, a mode is "hit" when it gets at least a tenth of its fair share; a
    component the model drops (or visits only by accident) is missed.
    """
    c = _labels(components, "components")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    w = _weights(w, len(w))
    counts = mode_counts(c, len(w))
    return int(np.sum(counts >= min_fraction * len(c) * w))


def mode_kl(components: Any, weights: Any, alpha: float = 0.5) -> float:
    """KL(w || q̂) of the component frequencies: w (K,) the true component weights, q̂ the
    frequencies of the on-support samples across components, smoothed with pseudo-count
    ``alpha`` (see ``kl_frequencies``). 0 for a perfect balance; log K-ish for a single mode.
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    return kl_frequencies(w, mode_counts(components, len(w)), alpha)


def novelty(samples: Any, train: Any, tol: float | None = None) -> float:
    """Share of samples that are not copies of a training point: mean_j [min_i |s_j − x_i| > tol].

    ``tol`` default: a tenth of the median nearest-neighbour distance within ``train``, so a
    sample counts as a copy when it sits much closer to a training point than training points
    sit to each other. samples (M, d), train (N, d).
    """
    s = _points(samples, "samples")
    x = _points(train, "train", dim=s.shape[1], min_rows=2 if tol is None else 1)
    if tol is None:
        tol = 0.1 * float(np.median(_knn_dist(x, x, 1, exclude_self=True)))
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol: expected a non-negative number, got {tol!r}")
    return float(np.mean(_knn_dist(s, x, 1) > tol))


def _subsample(a: np.ndarray, m: int | None, rng: np.random.Generator) -> np.ndarray:
    if m is None or len(a) <= m:
        return a
    return a[rng.choice(len(a), m, replace=False)]


def energy_distance(x: Any, y: Any, max_points: int | None = 4000, seed: int = 0) -> float:
    """Energy distance D(X, Y) = sqrt(2 E|X − Y| − E|X − X'| − E|Y − Y'|) (Székely & Rizzo 2013)
    between the empirical measures of x (M, d) and y (N, d), Euclidean norm, V-statistics (so
    D(X, X) = 0; in 1-D the same value as ``scipy.stats.energy_distance``).

    Sets larger than ``max_points`` are first subsampled without replacement (``seed``).
    """
    a = _points(x, "x")
    b = _points(y, "y", dim=a.shape[1])
    rng = np.random.default_rng(seed)
    a, b = _subsample(a, max_points, rng), _subsample(b, max_points, rng)
    d2 = 2.0 * _mean_dist(a, b) - _mean_dist(a, a) - _mean_dist(b, b)
    return float(math.sqrt(max(d2, 0.0)))


def sliced_wasserstein(x: Any, y: Any, n_projections: int = 512, p: int = 2, seed: int = 0) -> float:
    """Sliced Wasserstein distance SW_p = (E_θ W_p^p(θ#X, θ#Y))^{1/p}, θ uniform on the sphere,
    estimated with ``n_projections`` random directions (``seed``). Each 1-D W_p compares the
    two empirical quantile functions on a common grid of max(M, N) levels (exact when M = N).
    For y = x + v, SW_2 = |v| / sqrt(d) in expectation over θ.
    """
    a = _points(x, "x")
    b = _points(y, "y", dim=a.shape[1])
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n_projections, a.shape[1]))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    pa, pb = np.sort(a @ theta.T, axis=0), np.sort(b @ theta.T, axis=0)
    m = max(len(a), len(b))
    levels = (np.arange(m) + 0.5) / m

    def quantiles(s):
        idx = np.minimum((levels * len(s)).astype(np.int64), len(s) - 1)
        return s[idx]

    qa, qb = (pa, pb) if len(a) == len(b) else (quantiles(pa), quantiles(pb))
    return float(np.mean(np.abs(qa - qb) ** p) ** (1.0 / p))


def toy_metrics(samples: Any, data: Any, train: Any, heldout: Any, seed: int = 0) -> dict[str, float]:
    """All 2-D toy metrics of ``samples`` (M, 2) against a ``ToyData`` ``data`` (for the support and
    the true component weights), the training points ``train`` (N, 2) (novelty) and held-out
    points ``heldout`` (K, 2) (energy distance, sliced Wasserstein)."""
    s = _points(samples, "samples", dim=2)
    comp = data.component(s)
    return {
        "off_support": off_support_rate(comp),
        "modes_hit": modes_hit(comp, data.component_weights),
        "n_modes": int(data.n_components),
        "mode_kl": mode_kl(comp, data.component_weights),
        "novelty": novelty(s, train),
        "energy": energy_distance(s, heldout, seed=seed),
        "sliced_w2": sliced_wasserstein(s, heldout, seed=seed),
    }


# ------------------------------------------------------------------ image metrics
def mode_mixture_rate(probs: Any, threshold: float = 0.5) -> float:
    """Share of samples whose top class probability is below ``threshold`` (0.5): the classifier
    cannot name one class for them, i.e. they look like a blend of classes. probs (M, C)."""
    p = _probabilities(probs)
    return float(np.mean(p.max(axis=1) < threshold))


def confident_share(probs: Any, threshold: float = 0.9) -> float:
    """Share of samples whose top class probability is at least ``threshold`` (0.9). probs (M, C)."""
    p = _probabilities(probs)
    return float(np.mean(p.max(axis=1) >= threshold))


def class_histogram_kl(pred: Any, reference: Any, n_classes: int, alpha: float = 0.5) -> float:
    """KL(h_ref || ĥ) between the class histogram of the real data, h_ref, and that of the
    generated samples, ĥ (smoothed with pseudo-count ``alpha``, see ``kl_frequencies``).

    ``pred``: (M,) predicted classes of the samples (or (M, C) probabilities: argmax is taken);
    ``reference``: (N,) classes of the real data.
    """
    pr = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
    if pr.ndim == 2:
        pr = _probabilities(pr).argmax(axis=1)
    pr = _labels(pr, "pred")
    ref = _labels(reference, "reference")
    if len(ref) == 0 or (ref < 0).any() or (ref >= n_classes).any() or (pr < 0).any() or (pr >= n_classes).any():
        raise ValueError(f"pred/reference: expected labels in [0, {n_classes})")
    h_ref = np.bincount(ref, minlength=n_classes).astype(np.float64)
    return kl_frequencies(h_ref / h_ref.sum(), np.bincount(pr, minlength=n_classes), alpha)


def frechet_distance(x: Any, y: Any) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (as in FID, Heusel et
    al. 2017): |μ_x − μ_y|² + Tr(Σ_x + Σ_y − 2 (Σ_x Σ_y)^{1/2}), sample means and covariances
    (ddof = 1). x (M, d), y (N, d), M, N ≥ 2.

    The trace of the matrix square root is computed as Σ_k sqrt(λ_k) over the eigenvalues of the
    symmetric positive semi-definite Σ_x^{1/2} Σ_y Σ_x^{1/2} (which has the same spectrum as
    Σ_x Σ_y): stable when a covariance is singular (dead ReLU features), no complex round-off.
    """
    a = _points(x, "x", min_rows=2)
    b = _points(y, "y", dim=a.shape[1], min_rows=2)
    mu = a.mean(0) - b.mean(0)
    sa = np.atleast_2d(np.cov(a, rowvar=False))
    sb = np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(sa)
    ra = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    lam = np.linalg.eigvalsh(ra @ sb @ ra)
    tr_covmean = float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))
    return float(max(mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * tr_covmean, 0.0))


def prdc(real: Any, fake: Any, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al., ICML 2020).

    With B(z, r) the closed ball and NND_k(z) the distance from z to its k-th nearest neighbour
    in its own set (itself excluded), for real X = {x_i} (N, d) and fake Y = {y_j} (M, d):

    * precision = (1/M) Σ_j 1[∃ i: y_j ∈ B(x_i, NND_k(x_i))]
    * recall    = (1/N) Σ_i 1[∃ j: x_i ∈ B(y_j, NND_k(y_j))]
    * density   = (1/(kM)) Σ_j Σ_i 1[y_j ∈ B(x_i, NND_k(x_i))]
    * coverage  = (1/N) Σ_i 1[∃ j: y_j ∈ B(x_i, NND_k(x_i))]
    """
    x = _points(real, "real", min_rows=k + 1)
    y = _points(fake, "fake", dim=x.shape[1], min_rows=k + 1)
    rx = _knn_dist(x, x, k, exclude_self=True)
    ry = _knn_dist(y, y, k, exclude_self=True)
    in_any = np.zeros(len(y), dtype=bool)
    n_in = np.zeros(len(y))
    covered = np.zeros(len(x), dtype=bool)
    recalled = np.zeros(len(x), dtype=bool)
    for sl in _row_blocks(len(y), len(x)):
        d = np.sqrt(_sq_dists(y[sl], x))  # (m, N)
        inside = d <= rx[None, :]
        in_any[sl] = inside.any(axis=1)
        n_in[sl] = inside.sum(axis=1)
        covered |= inside.any(axis=0)
        recalled |= (d <= ry[sl, None]).any(axis=0)
    return {
        "precision": float(in_any.mean()),
        "recall": float(recalled.mean()),
        "density": float(n_in.sum() / (k * len(y))),
        "coverage": float(covered.mean()),
    }


def memorisation_score(samples: Any, train: Any) -> float:
    """Share of samples closer to some training point than that point is to its own nearest
    training neighbour: mean_j [∃ i: |s_j − x_i| < NND_1(x_i)], NND_1 within ``train`` (itself
    excluded). A copy of a training point always counts; compare with the score of held-out
    real data, which is not 0 (a fresh sample can land inside a training point's NN ball).
    samples (M, d), train (N, d), N ≥ 2.
    """
    s = _points(samples, "samples")
    x = _points(train, "train", dim=s.shape[1], min_rows=2)
    r = _knn_dist(x, x, 1, exclude_self=True)
    hit = np.zeros(len(s), dtype=bool)
    for sl in _row_blocks(len(s), len(x)):
        hit[sl] = (np.sqrt(_sq_dists(s[sl], x)) < r[None, :]).any(axis=1)
    return float(hit.mean())


def image_metrics(
    samples: Any, classifier: "FeatureClassifier", train: Any, heldout: Any, train_labels: Any, k: int = 5
) -> dict[str, float]:
    """All image metrics of generated ``samples`` (M, p) (flattened images in the data's scale),
    scored by a fitted ``FeatureClassifier`` against held-out real images ``heldout`` (K, p)
    (Fréchet distance, PRDC in the classifier's feature space), the class histogram of
    ``train_labels`` (N,), and the training images ``train`` (N, p) (memorisation, measured in
    feature space)."""
    probs = classifier.predict_proba(samples)
    f_s = classifier.features(samples)
    f_h = classifier.features(heldout)
    f_t = classifier.features(train)
    out = {
        "mode_mixture": mode_mixture_rate(probs),
        "confident": confident_share(probs),
        "class_kl": class_histogram_kl(probs, train_labels, classifier.n_classes_),
        "frechet": frechet_distance(f_s, f_h),
    }
    out.update(prdc(f_h, f_s, k=k))
    out["memorisation"] = memorisation_score(f_s, f_t)
    return out


# ------------------------------------------------------------------ the scoring classifier
_CLASSIFIER_FORMAT = "brenier.FeatureClassifier/1"


class FeatureClassifier:
    """A small MLP classifier trained on the real training images, kept fixed, used to score.

    ``predict_proba`` gives class probabilities (mode mixture, confidence, class histogram);
    ``features`` gives the last hidden layer's ReLU activations, the space in which Fréchet
    distance, PRDC and memorisation are measured. Trained with scikit-learn's
    ``MLPClassifier`` (Adam, early stopping off, ``seed``); saved as ``classifier.safetensors``
    + ``classifier.json`` so that a run's scores can be reproduced with the same network.

    Attributes (after ``fit``): weights_ (list of (in, out) arrays), biases_, n_classes_,
    train_accuracy_, n_iter_.
    """

    def __init__(self, hidden: tuple[int, ...] = (128, 64), seed: int = 0, max_iter: int = 400, alpha: float = 1e-3):
        self.hidden = tuple(hidden)
        self.seed = seed
        self.max_iter = max_iter
        self.alpha = alpha

    def fit(self, X: Any, y: Any) -> "FeatureClassifier":
        """X (N, p) images (flattened), y (N,) integer classes 0..C-1."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        x = _points(X, "X", min_rows=2)
        lab = _labels(y, "y")
        if len(lab) != len(x):
            raise ValueError(f"y: expected {len(x)} labels, got {len(lab)}")
        if lab.min() < 0:
            raise ValueError("y: labels must be 0..C-1")
        clf = MLPClassifier(hidden_layer_sizes=self.hidden, alpha=self.alpha, max_iter=self.max_iter,
                            random_state=self.seed, learning_rate_init=1e-3)
        from threadpoolctl import threadpool_limits

        # one BLAS thread: small matrices, and threads spin against each other on a busy machine
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, lab)
        self.n_classes_ = int(lab.max()) + 1
        if list(clf.classes_) != list(range(self.n_classes_)):
            raise ValueError("y: every class 0..C-1 must appear in the training labels")
        self.weights_ = [w.copy() for w in clf.coefs_]
        self.biases_ = [b.copy() for b in clf.intercepts_]
        self.n_iter_ = int(clf.n_iter_)
        self.train_accuracy_ = float(np.mean(self.predict(x) == lab))
        return self

    def _check(self) -> None:
        if not hasattr(self, "weights_"):
            from .ot import NotFittedError

            raise NotFittedError("this FeatureClassifier is not fitted yet: call fit(X, y) first")

    def features(self, X: Any) -> np.ndarray:
        """(M, hidden[-1]) last hidden layer activations of X (M, p)."""
        self._check()
        h = _points(X, "X", dim=self.weights_[0].shape[0])
        for w, b in zip(self.weights_[:-1], self.biases_[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return h

    def predict_proba(self, X: Any) -> np.ndarray:
        """(M, C) softmax class probabilities."""
        z = self.features(X) @ self.weights_[-1] + self.biases_[-1]
        if z.shape[1] == 1:  # scikit-learn's binary case: one logistic output
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p1, p1])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def accuracy(self, X: Any, y: Any) -> float:
        return float(np.mean(self.predict(X) == _labels(y, "y")))

    def save(self, path: str | Path) -> Path:
        """Write ``path/classifier.safetensors``, ``path/classifier.json`` and, last,
        ``path/manifest.json`` (their sha256: a save that dies part-way does not load)."""
        from safetensors.numpy import save_file

        from ._io import MANIFEST, atomic_write, write_json, write_manifest

        self._check()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / MANIFEST).unlink(missing_ok=True)  # never a valid-looking mixture of two saves
        tensors = {f"w{i}": np.ascontiguousarray(w) for i, w in enumerate(self.weights_)}
        tensors.update({f"b{i}": np.ascontiguousarray(b) for i, b in enumerate(self.biases_)})
        atomic_write(path / "classifier.safetensors", lambda tmp: save_file(tensors, tmp))
        write_json(path / "classifier.json", {
            "format": _CLASSIFIER_FORMAT, "hidden": list(self.hidden), "seed": self.seed,
            "max_iter": self.max_iter, "alpha": self.alpha, "n_classes": self.n_classes_,
            "n_layers": len(self.weights_), "train_accuracy": self.train_accuracy_, "n_iter": self.n_iter_,
        })
        write_manifest(path, ["classifier.json", "classifier.safetensors"], "FeatureClassifier")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureClassifier":
        """Read a classifier written by ``save``: the manifest is verified, every field and weight
        checked (layer shapes chain from the input to ``n_classes`` outputs, finite floats). Raises
        ``FileNotFoundError`` when ``path`` holds none and ``CorruptRunError`` (a ValueError) naming
        the file and what is wrong when it holds a damaged one."""
        from safetensors.numpy import load_file

        from ._io import CorruptRunError, verify_manifest

        path = Path(path)
        if not (path / "classifier.json").exists() and not (path / "manifest.json").exists():
            raise FileNotFoundError(f"path: {path} does not hold a saved FeatureClassifier")
        verify_manifest(path, "FeatureClassifier")
        jpath, wpath = path / "classifier.json", path / "classifier.safetensors"
        try:
            meta = json.loads(jpath.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptRunError(f"{jpath}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != _CLASSIFIER_FORMAT:
            raise CorruptRunError(f"{jpath}: not a {_CLASSIFIER_FORMAT} file")

        def _int(key: str, lo: int) -> int:
            v = meta.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise CorruptRunError(f"{jpath}: {key!r} must be an integer ≥ {lo}, got {v!r}")
            return v

        n_layers, n_classes, n_iter = _int("n_layers", 1), _int("n_classes", 2), _int("n_iter", 0)
        seed, max_iter = _int("seed", 0), _int("max_iter", 1)
        hidden = meta.get("hidden")
        if not isinstance(hidden, list) or len(hidden) != n_layers - 1 or not all(
                isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise CorruptRunError(f"{jpath}: 'hidden' must be {n_layers - 1} positive layer widths, got {hidden!r}")
        for key in ("alpha", "train_accuracy"):
            v = meta.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise CorruptRunError(f"{jpath}: {key!r} must be a non-negative number, got {v!r}")
        try:
            t = load_file(str(wpath))
        except Exception as exc:  # safetensors' SafetensorError on a malformed header or a short file
            raise CorruptRunError(f"{wpath}: not a readable safetensors file ({exc})") from None
        names = {f"{k}{i}" for i in range(n_layers) for k in "wb"}
        if set(t) != names:
            raise CorruptRunError(f"{wpath}: tensors {sorted(t)} do not match {n_layers} layers (w0, b0, ...)")
        outs = [*hidden, 1 if n_classes == 2 else n_classes]  # scikit-learn's binary case: one logistic output
        for i in range(n_layers):
            w, b = t[f"w{i}"], t[f"b{i}"]
            fan_in = w.shape[0] if i == 0 else outs[i - 1]
            if w.shape != (fan_in, outs[i]) or b.shape != (outs[i],):
                raise CorruptRunError(f"{wpath}: layer {i} has weights {w.shape} and bias {b.shape}, expected "
                                      f"({fan_in}, {outs[i]}) and ({outs[i]},)")
            for a, name in ((w, f"w{i}"), (b, f"b{i}")):
                if a.dtype.kind != "f" or not np.all(np.isfinite(a)):
                    raise CorruptRunError(f"{wpath}: {name} must hold finite floats (dtype {a.dtype})")
        obj = cls(tuple(hidden), seed, max_iter, float(meta["alpha"]))
        obj.weights_ = [t[f"w{i}"] for i in range(n_layers)]
        obj.biases_ = [t[f"b{i}"] for i in range(n_layers)]
        obj.n_classes_, obj.train_accuracy_, obj.n_iter_ = n_classes, float(meta["train_accuracy"]), n_iter
        return obj
