"""What the singular set separates (brenier.singular_classes): facet class table, mode purity, kappa sweep."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from brenier.ot import SemiDiscreteOT
from brenier.singular_classes import facet_class_table, kappa_sweep, mode_purity, rethreshold, target_labels
from brenier.sources import UniformBall

warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")


@pytest.fixture(scope="module")
def two():
    rng = np.random.default_rng(0)
    lab = np.repeat([0, 1], 150)
    y = rng.normal(size=(300, 2)) * 0.08 + np.where(lab[:, None] == 0, -0.5, 0.5) * np.array([1.0, 0.0])
    ot = SemiDiscreteOT(UniformBall(2), method="exact").fit(y)
    return lab, ot, ot.singular_set()


def test_two_clusters_singular_facets_are_between_classes(two):
    lab, ot, S = two
    lab = target_labels(ot, lab)
    t = facet_class_table(S, lab)
    assert t["singular"]["count"] > 0
    assert t["singular"]["share_different"] == 1.0          # every tear lies between the clusters
    assert t["regular"]["different"] == 0                   # no regular facet joins them
    assert t["adjacent"]["count"] == t["regular"]["count"] + t["singular"]["count"]
    assert t["enrichment"] > 1.0 and t["chance"] == pytest.approx(0.5)
    conf = np.array(t["singular_classes"])
    assert conf.shape == (2, 2) and conf[0, 1] == t["singular"]["different"] and conf[1, 0] == 0
    assert t["detour_auc"] > 0.95
    p = mode_purity(S.modes, lab)
    assert p["n_modes"] == 2 and p["purity"] == 1.0 and p["nmi"] == pytest.approx(1.0) and p["n_pure_modes"] == 2


def test_ring8_modes_are_pure_and_facets_cross_classes(ring):
    d, ot, S = ring
    lab = target_labels(ot, d.labels)
    t = facet_class_table(S, lab, n_classes=8)
    assert t["singular"]["share_different"] > 0.9 > t["adjacent"]["share_different"]
    assert t["regular"]["share_different"] == 0.0
    assert np.array(t["singular_classes"]).shape == (8, 8)
    p = mode_purity(S.modes, lab)
    assert p["n_modes"] == 8 and p["purity"] == 1.0 and p["nmi"] == pytest.approx(1.0) and p["ari"] == pytest.approx(1.0)


def test_rethreshold_and_sweep(ring):
    d, ot, S = ring
    same = rethreshold(S, S.threshold)
    np.testing.assert_array_equal(same.singular, S.singular)
    np.testing.assert_array_equal(same.modes, S.modes)
    rows = kappa_sweep(S, d.labels, [2.0, 4.0, 8.0])
    assert [r["kappa"] for r in rows] == [2.0, 4.0, 8.0]
    nf = [r["n_facets"] for r in rows]
    assert nf == sorted(nf, reverse=True)                   # more facets regular as kappa grows
    assert all(r["purity"] == 1.0 for r in rows)            # the gaps have no path at all


def test_one_mode_scores():
    p = mode_purity(np.zeros(10, dtype=int), np.r_[np.zeros(7, int), np.ones(3, int)])
    assert p["n_modes"] == 1 and p["largest_share"] == 1.0 and p["purity"] == pytest.approx(0.7)
    assert p["nmi"] == pytest.approx(0.0, abs=1e-12) and p["n_pure_modes"] == 0


def test_bad_input_refused_by_name(ring):
    d, ot, S = ring
    with pytest.raises(ValueError, match="labels"):
        facet_class_table(S, d.labels[:-1])
    with pytest.raises(ValueError, match="labels"):
        facet_class_table(S, np.full(len(S.modes), 0.5))
    with pytest.raises(ValueError, match="labels"):
        facet_class_table(S, -np.ones(len(S.modes), int))
    with pytest.raises(ValueError, match="n_classes"):
        facet_class_table(S, d.labels, n_classes=3)
    with pytest.raises(ValueError, match="^S:"):
        facet_class_table(object(), d.labels)
    with pytest.raises(ValueError, match="modes"):
        mode_purity(np.zeros((3, 2), int), np.zeros(3, int))
    with pytest.raises(ValueError, match="labels"):
        mode_purity(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="kappa"):
        rethreshold(S, 1.0)
    with pytest.raises(ValueError, match="kappa"):
        rethreshold(S, 9.0)
    with pytest.raises(ValueError, match="kappas"):
        kappa_sweep(S, d.labels, [])
    with pytest.raises(ValueError, match="kappas"):
        kappa_sweep(S, d.labels, [2.0, "x"])
    with pytest.raises(ValueError, match="labels"):
        target_labels(ot, d.labels[:5])


def test_length_matched_share():
    from brenier.singular_classes import length_matched_share

    class _S:   # a stand-in is refused: the function takes a SingularSet only
        pass

    with pytest.raises(ValueError, match="^S:"):
        length_matched_share(_S(), np.zeros(3, int))


def test_length_control_on_ring(ring):
    from brenier.singular_classes import length_matched_share

    d, ot, S = ring
    t = facet_class_table(S, d.labels)
    assert 0.5 < t["detour_auc"] <= 1.0 and 0.0 <= t["length_auc"] <= 1.0
    # the regular facets of ring8 are all inside one Gaussian: none joins two classes at any length
    assert length_matched_share(S, d.labels) == 0.0
    with pytest.raises(ValueError, match="bins"):
        length_matched_share(S, d.labels, bins=0)
