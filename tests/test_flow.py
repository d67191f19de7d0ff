"""Flow matching baselines ``fm`` and ``sdfm``: registry, inputs, determinism, the OT coupling, quality on ring8."""

import json

import numpy as np
import pytest
import torch

from brenier import NotFittedError
from brenier.baselines import BASELINES, make_baseline
from brenier.baselines.flow import FlowMatching, SemiDiscreteFlowMatching, _fm_loss
from brenier.baselines.ot import OTBaseline
from brenier.datasets import toy
from brenier.ot import SemiDiscreteOT

TINY = dict(steps=60, hidden=32, depth=2, batch_size=64, eval_every=20, device="cpu")


@pytest.fixture(scope="module")
def ring():
    return toy("ring8", 300, seed=0)


@pytest.fixture(scope="module")
def ot_ring(ring):
    return OTBaseline(seed=0, device="cpu").fit(ring.points)


def test_registered_after_ddim():
    names = list(BASELINES)
    assert BASELINES["fm"] is FlowMatching and BASELINES["sdfm"] is SemiDiscreteFlowMatching
    assert names.index("fm") < names.index("sdfm")  # after the six older models (test_baselines pins their order)


@pytest.mark.parametrize("name,kwargs,match", [
    ("fm", dict(base="uniform"), "base"),
    ("fm", dict(solver="heun"), "solver"),
    ("fm", dict(steps=0), "steps"),
    ("fm", dict(batch_size=2.5), "batch_size"),
    ("fm", dict(sample_steps=True), "sample_steps"),
    ("fm", dict(patience=0), "patience"),
    ("fm", dict(patience=3, val_fraction=0.0), "patience"),
    ("fm", dict(val_fraction=0.6), "val_fraction"),
    ("fm", dict(lr=-1.0), "lr"),
    ("fm", dict(ema=1.0), "ema"),
    ("fm", dict(ot="map"), "ot"),
    ("sdfm", dict(base="gaussian"), "base"),
    ("sdfm", dict(patience=2, val_fraction=0.0), "patience"),
    ("sdfm", dict(ot=OTBaseline()), "ot"),  # not fitted
])
def test_bad_arguments_are_refused_by_name(ring, name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_baseline(name, **{**TINY, **kwargs}).fit(ring.points)


def test_sampling_inputs(ring):
    m = make_baseline("fm", **TINY)
    with pytest.raises(NotFittedError):
        m.sample(3)
    m.fit(ring.points)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="n:"):
            m.sample_with_sources(bad)
    with pytest.raises(ValueError, match="seed"):
        m.sample_with_sources(3, seed=-1)
    with pytest.raises(ValueError, match="steps"):
        m.integrate(np.zeros((2, 2)), steps=0)
    with pytest.raises(ValueError, match="x0"):
        m.integrate(np.zeros((2, 3)))


@pytest.mark.parametrize("name", ["fm", "sdfm"])
def test_shapes_determinism_and_sources(ring, ot_ring, name):
    kw = dict(TINY, ot=ot_ring) if name == "sdfm" else TINY
    a = make_baseline(name, seed=1, **kw).fit(ring.points)
    b = make_baseline(name, seed=1, **kw).fit(ring.points)
    s, x0 = a.sample_with_sources(50, seed=3)
    assert s.shape == (50, 2) and x0.shape == (50, 2) and s.dtype == np.float64 and x0.dtype == np.float64
    assert np.array_equal(s, a.sample(50, seed=3)) and np.array_equal(s, b.sample(50, seed=3))
    assert not np.array_equal(s, a.sample(50, seed=4))
    assert a.loss_history_ == b.loss_history_ and len(a.loss_history_) == 3
    assert np.linalg.norm(x0, axis=1).max() <= 1.0  # the OT map's source, the unit ball
    assert np.allclose(a.shift_, ot_ring.shift_) and a.scale_ == pytest.approx(ot_ring.scale_)
    # the samples are the ODE images of their sources, in the caller's frame
    assert np.allclose(a.integrate(x0) * a.scale_ + a.shift_, s)
    info = a.info()
    json.dumps(info)
    assert info["coupling"] == a.coupling and info["loss_history"][-1][0] == TINY["steps"]
    assert all(h[2] is not None for h in a.loss_history_)


def test_gaussian_base_and_frame_from_codes(ring):
    m = make_baseline("fm", base="gaussian", **TINY).fit(ring.points)
    _, x0 = m.sample_with_sources(400, seed=0)
    assert np.linalg.norm(x0, axis=1).max() > 1.5  # N(0, I), not the ball
    c = ring.points - ring.points.mean(0)
    assert m.scale_ == pytest.approx(np.sqrt(np.mean(np.sum(c**2, axis=1))))


def test_fm_loss_is_zero_for_the_exact_velocity():
    x0, y, t = torch.randn(10, 3), torch.randn(10, 3), torch.rand(10)

    def exact(xt, tt):
        return y - x0

    assert float(_fm_loss(exact, x0, y, t)) == 0.0


def test_sdfm_pairs_are_the_ot_assignment(ring, ot_ring):
    m = make_baseline("sdfm", ot=ot_ring, **TINY).fit(ring.points)
    targets = np.asarray(ot_ring.ot_.targets_)
    x0 = m._draw_base(500, 7)
    y = m.partners(x0).double().numpy()
    idx = np.asarray(ot_ring.ot_.assign(x0.double()))
    assert np.allclose(y, targets[idx], atol=1e-6)
    # a training minibatch and the validation pairs are coupled the same way
    xb, yb = m._pairs(5, torch.Generator().manual_seed(0))
    assert np.allclose(yb.numpy(), targets[np.asarray(ot_ring.ot_.assign(xb.double()))], atol=1e-6)
    xv, yv, _ = m._val
    assert np.allclose(yv.numpy(), targets[np.asarray(ot_ring.ot_.assign(xv.double()))], atol=1e-6)
    # the training targets are the standardised codes: every one is some code's image
    codes = (ring.points - ot_ring.shift_) / ot_ring.scale_
    assert np.abs(codes[idx] - targets[idx]).max() < 1e-12


def test_sdfm_reuses_a_given_map_without_refitting(ring, ot_ring, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("SemiDiscreteOT.fit was called")

    monkeypatch.setattr(SemiDiscreteOT, "fit", refuse)
    m = make_baseline("sdfm", ot=ot_ring, **TINY).fit(ring.points)
    assert m.ot_ is ot_ring.ot_ and m.ot_baseline_ is ot_ring and m.info()["ot_reused"] is True
    assert m.ot_fit_time_s_ == 0.0
    # a bare SemiDiscreteOT: its own frame (the codes given are its targets)
    y = (ring.points - ot_ring.shift_) / ot_ring.scale_
    m2 = make_baseline("sdfm", ot=ot_ring.ot_, **TINY).fit(y)
    assert m2.ot_ is ot_ring.ot_ and m2.scale_ == 1.0 and np.all(m2.shift_ == 0)
    with pytest.raises(ValueError, match="ot"):
        make_baseline("sdfm", ot=ot_ring, **TINY).fit(np.zeros((10, 3)) + np.arange(10)[:, None])


def test_sdfm_fits_its_own_map_like_ot(ring, ot_ring):
    m = make_baseline("sdfm", **TINY).fit(ring.points)
    assert m.ot_fit_time_s_ > 0 and m.info()["ot_reused"] is False
    assert np.allclose(np.asarray(m.ot_.heights_), np.asarray(ot_ring.ot_.heights_))


def test_early_stopping_on_a_flat_held_out_loss(ring):
    m = make_baseline("fm", **{**TINY, "steps": 2000, "eval_every": 10, "patience": 2, "lr": 1e-9}).fit(ring.points)
    assert m.stopped_early_ and m.steps_run_ < 2000 and m.info()["stopped_early"] is True


def _far_share(m, ring):
    """Share of 1000 samples farther than 0.1 from the ring's support (its 8 disks)."""
    return float(np.mean(ring.support_distance(m.fit(ring.points).sample(1000, seed=0)) > 0.1))


def test_both_put_most_samples_near_the_ring(ring, ot_ring):
    # measured on 300 ring8 points, seed 0: untrained (v = 0, the ball itself) 0.764 of the samples
    # lie farther than 0.1 from the support; after these 400 steps fm 0.370, sdfm 0.369
    kw = dict(steps=400, hidden=64, depth=3, batch_size=128, eval_every=100, device="cpu", lr=4e-3, ema=0.99)
    for m in (make_baseline("fm", **kw), make_baseline("sdfm", ot=ot_ring, **kw)):
        far = _far_share(m, ring)
        assert far < 0.5, (m.name, far)


@pytest.mark.slow
def test_both_fit_the_ring_well_with_a_real_budget(ring, ot_ring):
    # measured: 1500 steps of batch 256 put fm 0.061, sdfm 0.046 of the samples farther than 0.1
    kw = dict(steps=1500, hidden=64, depth=3, batch_size=256, eval_every=500, device="cpu", lr=2e-3, ema=0.99)
    for m in (make_baseline("fm", **kw), make_baseline("sdfm", ot=ot_ring, **kw)):
        far = _far_share(m, ring)
        assert far < 0.15, (m.name, far)
