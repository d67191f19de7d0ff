"""Scoring generated images with a classifier trained on the real ones, and their nearest neighbours.

* ``train_image_classifier(X, y)`` — a scikit-learn MLP (one hidden layer of 128 ReLU units, Adam,
  fixed seed) on the flattened real images: the judge of generated images.
* ``classifier_scores(probs)`` — from its class probabilities (M, C) on M generated images: the
  share labelled with confidence ≥ ``threshold`` (a sharp image of one class), the share of each
  class among the predicted labels, and whether the digits bar holds (≥ 90 % confident, every
  class between 5 % and 15 %).
* ``nearest_neighbours(samples, train)`` — index and Euclidean distance of each sample's nearest
  training image in pixel space (a generated image that is new sits away from all of them).

Small pure functions on arrays, so that ``brenier.metrics`` and the benchmarks can reuse them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["train_image_classifier", "classifier_scores", "nearest_neighbours", "BAR_CONFIDENT", "BAR_CLASS_SHARE"]

#: the digits bar: share of generated images labelled with confidence ≥ 0.9
BAR_CONFIDENT = 0.90
#: the digits bar: every class gets a share of the generated images in this range
BAR_CLASS_SHARE = (0.05, 0.15)


def _flat(X: Any, name: str) -> np.ndarray:
    a = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"{name}: expected images (M, ...) with at least 2 dimensions, got shape {a.shape}")
    return a.reshape(len(a), -1)


def train_image_classifier(X: Any, y: Any, *, seed: int = 0, hidden: tuple[int, ...] = (128,), max_iter: int = 300):
    """A fitted scikit-learn ``MLPClassifier`` on images X (N, C, H, W) (or (N, p)) with labels y (N,).

    ``predict_proba`` of the result takes flattened images (M, p).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x = _flat(X, "X")
    lab = np.asarray(y).reshape(-1)
    if len(lab) != len(x):
        raise ValueError(f"y: expected {len(x)} labels, got {len(lab)}")
    clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=max_iter, random_state=seed, early_stopping=False)
    # small matrices: BLAS threads only add overhead (10x slower on a busy 2-core machine)
    with warnings.catch_warnings(), _one_blas_thread():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, lab)
    return clf


def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def classify(clf, images: Any) -> np.ndarray:
    """Class probabilities (M, C) of images (M, C, H, W) by a classifier from ``train_image_classifier``."""
    with _one_blas_thread():
        return clf.predict_proba(_flat(images, "images"))


def classifier_scores(probs: Any, *, threshold: float = 0.9, classes: Any = None) -> dict[str, Any]:
    """Scores of M generated images from class probabilities ``probs`` (M, C).

    Returns confident_share (share with max probability ≥ threshold), mode_mixture (share with max
    probability < 0.5: blends, ``metrics.mode_mixture_rate``), class_shares (C,) (share of
    each predicted class), min_class_share, max_class_share, mean_confidence, and passes_bar (the
    digits bar: confident_share ≥ 0.9 and every class share in [0.05, 0.15]).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"probs: expected (M, C) class probabilities, got shape {p.shape}")
    conf = p.max(axis=1)
    pred = p.argmax(axis=1)
    shares = np.bincount(pred, minlength=p.shape[1]) / len(p)
    confident = float(np.mean(conf >= threshold))
    lo, hi = BAR_CLASS_SHARE
    return {
        "n": int(len(p)),
        "threshold": float(threshold),
        "confident_share": confident,
        "mode_mixture": float(np.mean(conf < 0.5)),
        "mean_confidence": float(conf.mean()),
        "class_shares": {str(c): float(s) for c, s in zip(range(p.shape[1]) if classes is None else classes, shares)},
        "min_class_share": float(shares.min()),
        "max_class_share": float(shares.max()),
        "passes_bar": bool(confident >= BAR_CONFIDENT and shares.min() >= lo and shares.max() <= hi),
    }


def nearest_neighbours(samples: Any, train: Any, *, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For samples (M, ...) and training images (N, ...) of the same size: (index (M,), distance (M,))
    of each sample's nearest training image in Euclidean pixel distance (computed in row blocks)."""
    s = _flat(samples, "samples").astype(np.float32)
    t = _flat(train, "train").astype(np.float32)
    if s.shape[1] != t.shape[1]:
        raise ValueError(f"samples: {s.shape[1]} pixels per image, but train has {t.shape[1]}")
    tn = (t * t).sum(axis=1)
    idx = np.empty(len(s), dtype=np.int64)
    dist = np.empty(len(s), dtype=np.float64)
    for b in range(0, len(s), block):
        sb = s[b:b + block]
        d2 = (sb * sb).sum(axis=1)[:, None] - 2.0 * sb @ t.T + tn[None, :]
        k = d2.argmin(axis=1)
        idx[b:b + block] = k
        dist[b:b + block] = np.sqrt(np.maximum(d2[np.arange(len(sb)), k], 0.0))
    return idx, dist
