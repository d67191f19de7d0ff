"""Every metric of brenier.metrics on a case with a known answer."""

import math

import numpy as np
import pytest
import torch

from brenier import metrics as M
from brenier.datasets import toy


def _grid(n=10):
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n)), -1).reshape(-1, 2).astype(float)
    return g


# ------------------------------------------------------------------ frequencies / toy metrics
def test_kl_frequencies_known_values():
    assert M.kl_frequencies([0.5, 0.5], [50, 50], alpha=0) == pytest.approx(0.0, abs=1e-15)
    # one empty class, Jeffreys pseudo-count 1/2: q = (100.5, 0.5) / 101
    q = np.array([100.5, 0.5]) / 101
    want = 0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1])
    assert M.kl_frequencies([0.5, 0.5], [100, 0]) == pytest.approx(want, rel=1e-12)
    # p_k = 0 terms contribute nothing
    assert M.kl_frequencies([1.0, 0.0], [10, 30], alpha=0) == pytest.approx(math.log(4.0), rel=1e-12)
    with pytest.raises(ValueError, match="counts"):
        M.kl_frequencies([0.5, 0.5], [-1, 3])
    with pytest.raises(ValueError, match="p_true"):
        M.kl_frequencies([0.5, 0.5, 0.0], [1, 3])


def test_off_support_modes_hit_and_mode_kl():
    comp = np.array([0] * 50 + [1] * 5 + [-1] * 45)
    assert M.off_support_rate(comp) == pytest.approx(0.45)
    assert M.mode_counts(comp, 2).tolist() == [50, 5]
    # fair share of each mode is 100 * 0.5 = 50 samples; a tenth of it is 5
    assert M.modes_hit(comp, [0.5, 0.5]) == 2
    four = np.r_[comp[:54], comp[55:]]  # mode 1 now has 4 of 99 samples < 0.1 * 99 * 0.5
    assert M.modes_hit(four, [0.5, 0.5]) == 1
    assert M.mode_kl(comp, [0.5, 0.5], alpha=0) == pytest.approx(
        0.5 * math.log(0.5 / (50 / 55)) + 0.5 * math.log(0.5 / (5 / 55)), rel=1e-12)
    assert M.mode_kl(np.array([0, 1] * 20), [0.5, 0.5]) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="components"):
        M.mode_counts(np.array([0, 3]), 2)
    with pytest.raises(ValueError, match="components"):
        M.off_support_rate(np.array([0.5, 1.0]))


def test_novelty_copies_and_new_points():
    train = _grid()  # nearest-neighbour distance 1 -> default tol 0.1
    assert M.novelty(train, train) == 0.0
    assert M.novelty(train + 0.05, train) == 0.0  # within a tenth of the spacing: copies
    assert M.novelty(train + 0.5, train) == 1.0
    mixed = np.r_[train[:25], train[:75] + 0.5]
    assert M.novelty(mixed, train) == pytest.approx(0.75)
    assert M.novelty(train + 0.05, train, tol=0.01) == 1.0
    with pytest.raises(ValueError, match="train"):
        M.novelty(train, train[:, :1])
    with pytest.raises(ValueError, match="samples"):
        M.novelty(np.array([[np.nan, 0.0]]), train)


def test_energy_distance_known_values():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(0.5, 2.0, size=200)
    assert M.energy_distance(a[:, None], b[:, None]) == pytest.approx(scipy_stats.energy_distance(a, b), rel=1e-9)
    x = rng.normal(size=(100, 3))
    assert M.energy_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # two point masses at distance 1: sqrt(2 * 1 - 0 - 0)
    assert M.energy_distance([[0.0, 0.0]], [[1.0, 0.0]]) == pytest.approx(math.sqrt(2.0))
    # torch input accepted
    assert M.energy_distance(torch.zeros(2, 2), torch.ones(2, 2)) == pytest.approx(math.sqrt(2 * math.sqrt(2)))


def test_sliced_wasserstein_known_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 1))
    # in 1-D the projections are ±1, so SW2 = W2 = the shift exactly
    assert M.sliced_wasserstein(x, x + 0.7) == pytest.approx(0.7, rel=1e-9)
    y = rng.normal(size=(400, 4))
    assert M.sliced_wasserstein(y, y) == 0.0
    v = np.array([1.0, -2.0, 0.5, 1.5])
    # translation: SW2^2 = E <theta, v>^2 = |v|^2 / d (Monte Carlo over 4096 directions)
    sw = M.sliced_wasserstein(y, y + v, n_projections=4096)
    assert sw == pytest.approx(np.linalg.norm(v) / 2.0, rel=0.05)
    # unequal sizes: the quantile grid
    assert M.sliced_wasserstein(x[:250], x + 0.3) == pytest.approx(0.3, abs=0.1)


def test_toy_metrics_on_real_data_and_in_the_hole():
    tr, ho = toy("ring8", 1000, seed=0), toy("ring8", 1000, seed=1)
    m = M.toy_metrics(ho.points, tr, tr.points, ho.points)
    assert m["off_support"] == 0.0 and m["modes_hit"] == 8 and m["n_modes"] == 8
    # fresh real points are new, up to the few that land by chance within a tenth of the
    # median spacing of a training point (0.7% here: the floor novelty can reach)
    assert m["novelty"] > 0.98 and m["energy"] == pytest.approx(0.0, abs=1e-6)
    assert m["mode_kl"] < 0.01
    center = np.zeros((500, 2))  # every sample in the hole of the ring
    m2 = M.toy_metrics(center, tr, tr.points, ho.points)
    assert m2["off_support"] == 1.0 and m2["modes_hit"] == 0


# ------------------------------------------------------------------ image metrics
def test_mode_mixture_and_confident_share():
    p = np.array([[0.45, 0.45, 0.10], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    assert M.mode_mixture_rate(p) == pytest.approx(0.25)  # only the first row: max 0.45 < 0.5
    assert M.confident_share(p) == pytest.approx(0.25)  # only the second row: 0.9 >= 0.9
    assert M.confident_share(p, threshold=0.5) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="probs"):
        M.mode_mixture_rate(np.array([[0.3, 0.3]]))
    # the report's per-rule scores carry the same two numbers
    from brenier.evaluate import classifier_scores

    sc = classifier_scores(p)
    assert sc["mode_mixture"] == pytest.approx(0.25) and sc["confident_share"] == pytest.approx(0.25)


def test_class_histogram_kl():
    ref = np.array([0, 1, 2, 3] * 25)
    assert M.class_histogram_kl(np.array([3, 2, 1, 0] * 10), ref, 4, alpha=0) == pytest.approx(0.0, abs=1e-15)
    # all samples in class 0, no smoothing of the others would be infinite: alpha = 1/2
    q = np.array([40.5, 0.5, 0.5, 0.5]) / 42
    want = float(np.sum(0.25 * np.log(0.25 / q)))
    assert M.class_histogram_kl(np.zeros(40, dtype=int), ref, 4) == pytest.approx(want, rel=1e-12)
    probs = np.eye(4)[np.array([3, 2, 1, 0] * 10)]
    assert M.class_histogram_kl(probs, ref, 4, alpha=0) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="pred/reference"):
        M.class_histogram_kl(np.array([5]), ref, 4)


def test_frechet_distance_known_values():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3))
    v = np.array([1.0, 2.0, -2.0])
    # same covariance: only the mean term |v|^2 = 9 remains
    assert M.frechet_distance(x, x + v) == pytest.approx(9.0, rel=1e-6)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # 1-D scaling: (sigma - 2 sigma)^2 = sigma^2
    z = rng.normal(size=(400, 1))
    z -= z.mean()
    assert M.frechet_distance(z, 2 * z) == pytest.approx(float(np.var(z, ddof=1)), rel=1e-6)


def test_prdc_known_values():
    x = _grid(8) + np.random.default_rng(3).uniform(-0.01, 0.01, size=(64, 2))  # no exact ties
    k = 3
    r = M.prdc(x, x, k=k)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0
    # each real ball B(x_i, NND_k(x_i)) holds x_i and its k neighbours: density (k + 1) / k
    assert r["density"] == pytest.approx((k + 1) / k)
    far = M.prdc(x, x + 100.0, k=k)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # half the fakes on the data, half far: precision 1/2
    half = np.r_[x[:32], x[32:] + 100.0]
    assert M.prdc(x, half, k=k)["precision"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fake"):
        M.prdc(x, x[:3], k=k)


def test_memorisation_score():
    train = _grid()
    assert M.memorisation_score(train, train) == 1.0
    assert M.memorisation_score(train + 50.0, train) == 0.0
    # a point at distance 0.4 from a training point whose nearest neighbour is at 1 counts
    s = np.array([[0.4, 0.0], [0.5, 0.5], [-3.0, -3.0]])
    # (0.5, 0.5) is at distance 0.707 < 1 from (0, 0): also memorised
    assert M.memorisation_score(s, train) == pytest.approx(2 / 3)


def test_feature_classifier_fit_save_load(tmp_path):
    rng = np.random.default_rng(4)
    centers = np.eye(3) * 6.0
    y = np.repeat(np.arange(3), 60)
    X = centers[y] + rng.normal(size=(180, 3))
    clf = M.FeatureClassifier(hidden=(16, 8), seed=0, max_iter=300).fit(X, y)
    assert clf.n_classes_ == 3 and clf.train_accuracy_ >= 0.98
    p = clf.predict_proba(X)
    assert p.shape == (180, 3) and np.allclose(p.sum(1), 1.0)
    assert clf.features(X).shape == (180, 8)
    back = M.FeatureClassifier.load(clf.save(tmp_path / "clf"))
    assert np.allclose(back.predict_proba(X), p)
    m = M.image_metrics(X[::2], clf, X[1::2], X[::2], y[1::2], k=3)
    assert m["mode_mixture"] < 0.05 and m["class_kl"] < 0.01 and m["coverage"] == 1.0
    with pytest.raises(ValueError, match="y"):
        M.FeatureClassifier().fit(X, y[:10])
    with pytest.raises(Exception, match="not fitted"):
        M.FeatureClassifier().features(X)
