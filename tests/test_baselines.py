"""Baselines: the registry, each model on a case with a known answer, DDPM/DDIM formulas, inputs."""

import json
import math

import numpy as np
import pytest
import torch

from brenier import NotFittedError
from brenier.baselines import BASELINES, Baseline, make_baseline
from brenier.baselines.ddpm import Schedule, timestep_embedding
from brenier.datasets import toy


def test_registry_and_unknown_name():
    assert list(BASELINES)[:6] == ["ot", "ot-ignore", "ddpm", "ddim", "gmm", "gaussian"]
    assert all(issubclass(c, Baseline) for c in BASELINES.values())
    with pytest.raises(ValueError, match="model: unknown baseline 'vae'"):
        make_baseline("vae")


def test_inputs_are_validated():
    g = make_baseline("gaussian")
    with pytest.raises(NotFittedError):
        g.sample(3)
    with pytest.raises(ValueError, match="codes"):
        g.fit(np.array([[0.0, np.nan], [1.0, 2.0]]))
    g.fit(np.random.default_rng(0).normal(size=(20, 2)))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n:"):
            g.sample(bad)
    with pytest.raises(ValueError, match="seed"):
        g.sample(3, seed=-1)
    with pytest.raises(ValueError, match="sampler"):
        make_baseline("ddpm", sampler="euler").fit(np.zeros((4, 2)) + np.arange(4)[:, None])
    with pytest.raises(ValueError, match="boundary"):
        make_baseline("ot", boundary="maybe").fit(toy("ring8", 50, seed=0).points)


def test_gaussian_moments_and_determinism():
    rng = np.random.default_rng(1)
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    x = rng.multivariate_normal([1.0, -2.0], cov, size=4000)
    g = make_baseline("gaussian", seed=3).fit(torch.as_tensor(x))
    assert np.allclose(g.mean_, x.mean(0)) and np.allclose(g.covariance_, np.cov(x, rowvar=False))
    s = g.sample(20000, seed=5)
    assert s.shape == (20000, 2) and s.dtype == np.float64
    assert np.allclose(s.mean(0), [1.0, -2.0], atol=0.05)
    assert np.allclose(np.cov(s, rowvar=False), cov, atol=0.08)
    assert np.array_equal(s, g.sample(20000, seed=5)) and not np.array_equal(s, g.sample(20000, seed=6))
    json.dumps(g.info())


def test_gmm_picks_the_true_number_of_blobs_by_bic():
    rng = np.random.default_rng(2)
    centers = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    x = np.concatenate([c + 0.3 * rng.normal(size=(200, 2)) for c in centers])
    gm = make_baseline("gmm", seed=0, max_components=6, patience=2).fit(x)
    assert gm.n_components_ == 3
    s = gm.sample(3000, seed=0)
    d = np.linalg.norm(s[:, None, :] - centers[None], axis=2).min(1)
    assert np.mean(d < 1.5) > 0.99
    info = gm.info()
    assert info["n_components"] == 3 and min(info["bic"], key=info["bic"].get) == "3"
    json.dumps(info)


def test_ot_respects_the_support_and_reuses_a_fitted_map():
    data = toy("ring8", 200, seed=0)
    ot = make_baseline("ot", seed=0, device="cpu").fit(data.points)
    s = ot.sample(2000, seed=1)
    assert s.shape == (2000, 2)
    assert np.mean(data.component(s) < 0) == 0.0  # never between the disks
    assert np.array_equal(s, ot.sample(2000, seed=1))
    info = ot.info()
    assert info["method"] == "exact" and info["converged"] and info["boundary"] == "respect"
    json.dumps(info)
    # ot-ignore reusing the same fitted map (in its own, standardised frame)
    y = (data.points - ot.shift_) / ot.scale_
    ign = make_baseline("ot-ignore", seed=0, ot=ot.ot_).fit(y)
    assert ign.ot_ is ot.ot_ and ign.boundary == "ignore"
    assert ign.sample(10, seed=0).shape == (10, 2)
    # one fit, two boundary rules: the copy keeps the frame (shift, scale) and the map
    ign2 = ot.with_boundary("ignore")
    assert ign2.name == "ot-ignore" and ign2.ot_ is ot.ot_ and ot.boundary == "respect"
    assert np.allclose(ign2.sample(10, seed=0), ign.sample(10, seed=0) * ot.scale_ + ot.shift_)
    with pytest.raises(ValueError, match="boundary"):
        ot.with_boundary("sometimes")


def test_ddpm_schedule_formulas():
    s = Schedule(1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    ab = torch.cumprod(1 - s.betas, 0)
    assert torch.allclose(s.alpha_bars, ab)
    assert s.posterior_var[0].item() == 0.0  # beta~_1 = beta_1 (1 - 1) / (1 - abar_1)
    t = 500
    assert s.posterior_var[t].item() == pytest.approx((s.betas[t] * (1 - ab[t - 1]) / (1 - ab[t])).item())
    x0, eps = torch.ones(2, 3, dtype=torch.float64), torch.full((2, 3), 2.0, dtype=torch.float64)
    xt = s.noise(x0, torch.tensor([0, t]), eps)
    assert torch.allclose(xt[1], ab[t].sqrt() + 2 * (1 - ab[t]).sqrt())
    # fewer steps keep the same total noise level: abar_T is about as small
    assert Schedule(200).alpha_bars[-1].item() < 1e-3 and s.alpha_bars[-1].item() < 1e-3
    e = timestep_embedding(torch.tensor([0, 7]), 8)
    assert e.shape == (2, 8) and torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    with pytest.raises(ValueError, match="timesteps"):
        Schedule(1)


def test_ddpm_and_ddim_learn_a_one_dimensional_gaussian():
    """Codes ~ N(3, 0.5^2): the standardised data is N(0, 1), which a DDPM reproduces exactly
    with ε_θ = x_t·sqrt(1 − ᾱ_t) (learnable by the MLP); samples must have mean 3, std 0.5,
    with ancestral sampling and with DDIM on the same trained denoiser."""
    torch.set_num_threads(1)
    x = 3.0 + 0.5 * np.random.default_rng(3).normal(size=(2000, 1))
    m = make_baseline("ddpm", seed=0, steps=300, batch_size=256, hidden=32, depth=2,
                      timesteps=100, device="cpu").fit(x)
    ddim = m.with_sampler("ddim", 20)
    assert ddim.name == "ddim" and ddim.net_ is m.net_ and m.sampler == "ancestral"
    for model, steps in ((m, 100), (ddim, 20)):
        s = model.sample(2000, seed=0)
        assert abs(s.mean() - 3.0) < 0.08 and abs(s.std() - 0.5) < 0.08
        assert np.array_equal(s[:5], model.sample(2000, seed=0)[:5])
        info = model.info()
        assert info["sample_steps"] == steps
        json.dumps(info)
    losses = [v for _, v in m.loss_curve_]
    assert losses[-1] < losses[0] and math.isfinite(m.final_loss_)
    with pytest.raises(NotFittedError):
        make_baseline("ddpm").with_sampler("ddim")


def test_ddim_inversion_round_trip_and_interpolation():
    """DDIM inversion then η = 0 decoding returns the codes (an ODE run there and back), and the
    diffusion interpolation starts and ends at the two codes; on Gaussian data (where the DDIM
    map is the identity up to scale) the path stays inside the data."""
    torch.set_num_threads(1)
    x = 3.0 + 0.5 * np.random.default_rng(3).normal(size=(2000, 2))
    m = make_baseline("ddpm", seed=0, steps=300, batch_size=256, hidden=32, depth=2, timesteps=100, device="cpu").fit(x)
    z = m.invert(x[:20], 100)
    assert z.shape == (20, 2) and 0.5 < z.std() < 2.0          # standard-normal-like latents
    back = m.decode_latents(z, 100)
    assert np.median(np.linalg.norm(back - x[:20], axis=1)) < 0.05   # data std is 0.5
    path = m.interpolate(x[0], x[1], 7, 100)
    assert path.shape == (7, 2)
    assert np.linalg.norm(path[0] - x[0]) < 0.1 and np.linalg.norm(path[-1] - x[1]) < 0.1
    with pytest.raises(ValueError, match="n: expected an integer"):
        m.interpolate(x[0], x[1], 1)
    with pytest.raises(ValueError, match="steps"):
        m.invert(x[:2], 1)
    with pytest.raises(NotFittedError):
        make_baseline("ddpm").invert(x[:2])


# ------------------------------------------------------------------ ddpm: convergence mode
def _gaussian_codes(n=2000, d=1, seed=3):
    return 3.0 + 0.5 * np.random.default_rng(seed).normal(size=(n, d))


_TINY = dict(batch_size=128, hidden=32, depth=2, timesteps=100, device="cpu", converge=True)


def test_ddpm_converge_stops_on_a_flat_loss_and_records_its_history():
    """On N(3, 0.5²) the held-out loss flattens within a few hundred steps: the run stops on the
    plateau long before max_steps, keeps its best weights and still samples the Gaussian."""
    torch.set_num_threads(1)
    x = _gaussian_codes()
    m = make_baseline("ddpm", seed=0, max_steps=20_000, eval_every=50, patience=2, max_decays=1, **_TINY).fit(x)
    assert m.stop_reason_ == "plateau" and m.steps_run_ < 2000 and m.steps_run_ % 50 == 0
    h = np.array(m.val_history_)
    assert h.shape == (m.steps_run_ // 50, 4) and np.array_equal(h[:, 0], 50 * np.arange(1, len(h) + 1))
    assert m.best_val_loss_ == pytest.approx(h[:, 1:3].min()) and m.best_step_ in h[:, 0]
    assert m.best_weights_ in ("raw", "ema") and m.lr_decays_ == 1
    assert h[-1, 3] == pytest.approx(0.3 * h[0, 3])            # one cut by decay_factor
    assert len(m.train_history_) == len(h) and m.n_val_ == 100
    # net_ holds the best weights: its held-out loss on the internal draws is the best one
    assert 0.2 < m.best_val_loss_ < 0.4
    s = m.sample(2000, seed=0)
    assert abs(s.mean() - 3.0) < 0.08 and abs(s.std() - 0.5) < 0.08
    info = m.info()
    assert info["stop_reason"] == "plateau" and info["train_steps"] == m.steps_run_ and len(info["val_history"]) == len(h)
    json.dumps(info)
    # the fixed-step default records its steps too
    assert make_baseline("ddpm", seed=0, steps=20, hidden=8, depth=1, timesteps=10, device="cpu").fit(x).stop_reason_ == "steps"


def test_ddpm_converge_patience_counts_evaluations():
    """With an improvement threshold no step can meet, the run stops after the first evaluation
    plus ``patience`` (no schedule), or plus ``patience`` per cut and one more plateau."""
    torch.set_num_threads(1)
    x = _gaussian_codes(400)
    kw = dict(max_steps=10_000, eval_every=10, patience=3, min_improvement=0.99, **_TINY)
    m = make_baseline("ddpm", seed=0, lr_decay="none", **kw).fit(x)
    assert m.stop_reason_ == "plateau" and m.steps_run_ == 10 * (1 + 3)
    m = make_baseline("ddpm", seed=0, lr_decay="plateau", max_decays=2, **kw).fit(x)
    assert m.steps_run_ == 10 * (1 + 3 * 3) and m.lr_decays_ == 2
    m = make_baseline("ddpm", seed=0, max_steps=25, eval_every=10, patience=50, **{k: v for k, v in _TINY.items()}).fit(x)
    assert m.stop_reason_ == "max_steps" and [r[0] for r in m.val_history_] == [10, 20, 25]


def test_ddpm_converge_is_deterministic_under_the_seed():
    torch.set_num_threads(1)
    x = _gaussian_codes(600, 2)
    kw = dict(max_steps=120, eval_every=40, patience=2, **_TINY)
    a = make_baseline("ddpm", seed=1, **kw).fit(x)
    b = make_baseline("ddpm", seed=1, **kw).fit(x)
    c = make_baseline("ddpm", seed=2, **kw).fit(x)
    assert a.val_history_ == b.val_history_ and a.train_history_ == b.train_history_
    assert np.array_equal(a.sample(50, seed=0), b.sample(50, seed=0))
    assert a.val_history_ != c.val_history_
    assert a.heldout_loss(x[:100]) == b.heldout_loss(x[:100]) != a.heldout_loss(x[:100], seed=1)


def test_fixed_draws_are_stratified_and_seeded():
    from brenier.baselines.ddpm import fixed_draws

    t, eps = fixed_draws(5, 3, 16, 1000, seed=0)
    assert t.shape == (80,) and eps.shape == (80, 3)
    grid = t.reshape(5, 16)
    assert np.array_equal((grid * 16 // 1000).numpy(), np.tile(np.arange(16), (5, 1)))  # one t per stratum
    t2, eps2 = fixed_draws(5, 3, 16, 1000, seed=0)
    assert torch.equal(t, t2) and torch.equal(eps, eps2)
    assert not torch.equal(eps, fixed_draws(5, 3, 16, 1000, seed=1)[1])


def test_ddpm_converge_refuses_bad_arguments_by_name():
    from brenier.baselines.ddpm import converged_settings

    x = _gaussian_codes(50)
    bad = [("converge", "yes"), ("max_steps", 0), ("eval_every", 2.5), ("patience", True), ("val_draws", -1),
           ("max_decays", -1), ("min_improvement", 1.0), ("min_improvement", -0.1), ("val_fraction", 0.0),
           ("val_fraction", 0.6), ("lr_decay", "cosine"), ("decay_factor", 1.0), ("decay_factor", float("nan"))]
    for name, v in bad:
        kw = {**_TINY, name: v}
        with pytest.raises(ValueError, match=f"^{name}:"):
            make_baseline("ddpm", **kw).fit(x)
    m = make_baseline("ddpm", seed=0, max_steps=5, eval_every=5, **_TINY).fit(x)
    with pytest.raises(ValueError, match="draws"):
        m.heldout_loss(x, draws=0)
    with pytest.raises(ValueError, match="codes"):
        m.heldout_loss(np.zeros((3, 2)))
    with pytest.raises(NotFittedError):
        make_baseline("ddpm").heldout_loss(x)
    s = converged_settings(57_000, 16)
    assert s["converge"] is True and s["eval_every"] == 1000
    make_baseline("ddpm", **s)._check_params()
    for name, args in (("n", (0, 16)), ("d", (100, 1.5))):
        with pytest.raises(ValueError, match=f"^{name}:"):
            converged_settings(*args)
