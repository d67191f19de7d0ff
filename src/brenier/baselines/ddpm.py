"""``ddpm`` / ``ddim``: a denoising diffusion model on latent vectors.

The schedule and samplers follow the papers, written out here (no extra dependency):

* Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (DDPM).
  Linear β_t from 1e-4 to 0.02 over T = 1000 steps, α_t = 1 − β_t, ᾱ_t = Π_{s≤t} α_s.
  Forward: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε. Training loss (the "simple" objective):
  E_{t, x_0, ε} |ε − ε_θ(x_t, t)|². Ancestral sampling (Algorithm 2):
  x_{t−1} = (x_t − β_t / sqrt(1 − ᾱ_t) ε_θ(x_t, t)) / sqrt(α_t) + σ_t z, with the posterior
  variance σ_t² = β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) (Ho et al. report β_t and β̃_t give
  similar results; β̃_t is the right one for data that is not itself Gaussian).
* Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021 (DDIM), η = 0: on a
  subsequence τ_1 < ... < τ_S of the T steps,
  x̂_0 = (x_τ − sqrt(1 − ᾱ_τ) ε_θ) / sqrt(ᾱ_τ),  x_τ' = sqrt(ᾱ_τ') x̂_0 + sqrt(1 − ᾱ_τ') ε_θ.

The denoiser ε_θ is an MLP on (x, sinusoidal embedding of t) (Vaswani et al. 2017 / Ho et
al.). Codes are standardised per dimension before training (and un-standardised after
sampling), the usual practice for latent diffusion. Training uses AdamW with a cosine learning
rate decay and an exponential moving average (EMA) of the weights, which is what samples.

Convergence mode (``converge=True``, opt-in; the fixed-step default above is unchanged): a
seeded share ``val_fraction`` of the codes is held out; every ``eval_every`` steps the held-out
denoising loss is computed on FIXED draws of (t, ε) (``val_draws`` per held-out code, t on a
stratified grid of [0, T), so the curve moves only because the weights do), for the raw and the
EMA weights; the best weights seen are kept; the learning rate (constant after warm-up) is cut by
``decay_factor`` when the loss has not improved by more than ``min_improvement`` (relative) over
``patience`` evaluations, at most ``max_decays`` times, and training stops at the next such
plateau (or at ``max_steps``). ``converged_settings(n, d)`` is the preset sized for codes.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from .._array import resolve_device
from .base import Baseline


# ------------------------------------------------------------------ schedule
class Schedule:
    """The DDPM noise schedule: betas (T,), alphas, alpha_bars (float64 tensors on CPU)."""

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if not isinstance(timesteps, int) or timesteps < 2:
            raise ValueError(f"timesteps: expected an integer ≥ 2, got {timesteps!r}")
        self.T = timesteps
        # Ho et al. use 1e-4..0.02 for T = 1000; scale so that other T keep the same total noise
        scale = 1000.0 / timesteps
        self.betas = torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        self.posterior_var = self.betas * (1.0 - prev) / (1.0 - self.alpha_bars)

    def noise(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε for integer steps t (B,) in [0, T)."""
        ab = self.alpha_bars.to(x0.device, x0.dtype)[t][:, None]
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of integer steps t (B,): [cos(t ω_k), sin(t ω_k)],
    ω_k = max_period^(−k / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class Denoiser(nn.Module):
    """ε_θ(x, t): an MLP with ``depth`` hidden layers of width ``hidden`` (SiLU), the time
    embedding added (after a small MLP) to the first hidden layer and re-injected in each."""

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, temb_dim: int = 128):
        super().__init__()
        self.temb_dim = temb_dim
        self.time_mlp = nn.Sequential(nn.Linear(temb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth - 1)])
        self.time_proj = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth - 1)])
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.temb_dim))
        h = nn.functional.silu(self.inp(x) + temb)
        for lin, tp in zip(self.layers, self.time_proj):
            h = h + nn.functional.silu(lin(h) + tp(temb))  # residual: stable for deeper nets
        return self.out(h)


# ------------------------------------------------------------------ the preset for codes
def seeded_with_ema(dim: int, hidden: int, depth: int, seed: int, dev) -> tuple[nn.Module, nn.Module]:
    """A ``Denoiser`` initialised from ``seed`` (the global RNG left untouched) and its frozen EMA
    copy, both on ``dev`` (the denoiser of ``DDPMBaseline``, the velocity net of the flows)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Denoiser(dim, hidden, depth).to(dev)
    ema = Denoiser(dim, hidden, depth).to(dev)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    return net, ema


def converged_settings(n: int, d: int) -> dict[str, Any]:
    """``DDPMBaseline`` keyword arguments for a denoiser trained to convergence on n codes of
    dimension d (the quick-run defaults stay in ``brenier.compare``): convergence mode, a width
    256 × depth 4 denoiser, DDIM (η = 0) sampling in 250 steps. Use as
    ``make_baseline("ddpm", **converged_settings(n, d))``.

    Chosen on the 57,000 training codes of MNIST at d = 16 (``benchmarks/ddpm_converge.py``,
    ``benchmarks/results/ddpm_converge_mnist16.json``): loss on 3,000 test codes (fixed draws)
    128 × 3: 0.2106, 256 × 3: 0.2044, 256 × 4: 0.2026 (the default 4,000-step 128 × 3: 0.2356);
    each stopped on its plateau after 19,000-22,000 steps. DDIM in 250 steps matched or beat
    ancestral sampling (T = 1000) in energy distance and sliced W2 to the test codes at a quarter
    of the steps; DDIM 50 was worse. Batch size (512), learning rate (1e-3) and the plateau rule
    were not swept; widths for d > 16 grow with d (not measured)."""
    for name, v in (("n", n), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    hidden = 256 * max(1, math.ceil(d / 16))
    return dict(converge=True, hidden=hidden, depth=4, batch_size=512, lr=1e-3, max_steps=60_000,
                eval_every=int(min(1000, max(100, n // 20))), patience=3, min_improvement=0.01,
                val_fraction=0.05, val_draws=16, lr_decay="plateau", decay_factor=0.3, max_decays=2,
                sampler="ddim", sample_steps=250)


# ------------------------------------------------------------------ the baseline
class DDPMBaseline(Baseline):
    """A DDPM on the codes: MLP denoiser, T = 1000 linear schedule, EMA weights.

    Parameters
    ----------
    sampler : "ancestral" (DDPM, all T steps) or "ddim" (η = 0, ``sample_steps`` steps).
    steps : training iterations (minibatches of ``batch_size`` codes drawn with replacement).
    hidden, depth : width and number of hidden layers of the denoiser.
    lr : peak AdamW learning rate (linear warm-up over 2% of the steps, cosine decay to 1%).
    ema : EMA decay of the weights used for sampling.
    device : "auto" | "cpu" | "cuda".
    progress : show a Rich progress bar while training and sampling.
    converge : train until the held-out denoising loss is flat instead of ``steps`` steps
        (opt-in; the parameters below are used only then).
    max_steps : upper bound on the training steps in convergence mode.
    eval_every : steps between held-out evaluations.
    patience : evaluations without a relative improvement above ``min_improvement`` that count
        as a plateau.
    min_improvement : relative improvement of the held-out loss that resets the patience (0.01).
    val_fraction : share of the codes held out (seeded by ``seed``) for the stopping rule.
    val_draws : fixed (t, ε) draws per held-out code (t stratified over [0, T)).
    lr_decay : "plateau" (multiply the learning rate by ``decay_factor`` at a plateau, up to
        ``max_decays`` times, then stop at the next plateau) or "none" (stop at the first).
    decay_factor, max_decays : see ``lr_decay``.

    Attributes (after ``fit``): net_ (the EMA denoiser), loss_curve_ (list of
    (step, mean training loss over the last ``log_every`` steps)), final_loss_,
    loss_change_ (relative change of the mean loss between the last two tenths of training:
    near 0 once converged), mean_, std_ (standardisation), device_, steps_run_, stop_reason_
    ("steps", "plateau" or "max_steps"). In convergence mode also val_history_ (list of
    [step, held-out loss of the raw weights, of the EMA weights, learning rate]),
    train_history_ (list of [step, mean training loss since the previous evaluation]),
    best_step_, best_val_loss_, best_weights_ ("raw" or "ema": which ``net_`` holds).
    """

    name = "ddpm"
    description = "DDPM, MLP denoiser, ancestral sampling (T = 1000)"

    def __init__(self, *, seed: int = 0, sampler: str = "ancestral", timesteps: int = 1000, sample_steps: int = 100,
                 steps: int = 6000, batch_size: int = 512, hidden: int = 256, depth: int = 3, lr: float = 2e-3,
                 weight_decay: float = 0.0, ema: float = 0.999, log_every: int = 50, device: str = "auto",
                 progress: bool = False, converge: bool = False, max_steps: int = 100_000, eval_every: int = 500,
                 patience: int = 4, min_improvement: float = 0.01, val_fraction: float = 0.05, val_draws: int = 16,
                 lr_decay: str = "plateau", decay_factor: float = 0.3, max_decays: int = 2):
        super().__init__(seed=seed)
        self.sampler = sampler
        self.timesteps = timesteps
        self.sample_steps = sample_steps
        self.steps = steps
        self.batch_size = batch_size
        self.hidden = hidden
        self.depth = depth
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema = ema
        self.log_every = log_every
        self.device = device
        self.progress = progress
        self.converge = converge
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.patience = patience
        self.min_improvement = min_improvement
        self.val_fraction = val_fraction
        self.val_draws = val_draws
        self.lr_decay = lr_decay
        self.decay_factor = decay_factor
        self.max_decays = max_decays

    # ---------------------------------------------------------------- fit
    def _check_params(self) -> None:
        if self.sampler not in ("ancestral", "ddim"):
            raise ValueError(f"sampler: expected 'ancestral' or 'ddim', got {self.sampler!r}")
        for name in ("steps", "batch_size", "hidden", "depth", "sample_steps", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if not (0.0 <= self.ema < 1.0):
            raise ValueError(f"ema: expected a decay in [0, 1), got {self.ema!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not isinstance(self.converge, bool):
            raise ValueError(f"converge: expected True or False, got {self.converge!r}")
        if not self.converge:
            return
        for name in ("max_steps", "eval_every", "patience", "val_draws"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if isinstance(self.max_decays, bool) or not isinstance(self.max_decays, int) or self.max_decays < 0:
            raise ValueError(f"max_decays: expected a non-negative integer, got {self.max_decays!r}")
        if not _real_in(self.min_improvement, 0.0, 1.0, lo_open=False):
            raise ValueError(f"min_improvement: expected a relative improvement in [0, 1), got {self.min_improvement!r}")
        if not _real_in(self.val_fraction, 0.0, 0.5, hi_open=False):
            raise ValueError(f"val_fraction: expected a share in (0, 0.5], got {self.val_fraction!r}")
        if self.lr_decay not in ("plateau", "none"):
            raise ValueError(f"lr_decay: expected 'plateau' or 'none', got {self.lr_decay!r}")
        if not _real_in(self.decay_factor, 0.0, 1.0):
            raise ValueError(f"decay_factor: expected a factor in (0, 1), got {self.decay_factor!r}")

    def _fit(self, codes: np.ndarray) -> None:
        self._check_params()
        if self.converge:
            self._fit_converge(codes)
            return
        dev = resolve_device(self.device)
        self.device_ = dev
        self.schedule_ = Schedule(self.timesteps)
        self.mean_ = codes.mean(axis=0)
        self.std_ = codes.std(axis=0) + 1e-8
        x = torch.as_tensor((codes - self.mean_) / self.std_, dtype=torch.float32, device=dev)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        net, ema, opt = self._networks(codes.shape[1], dev)
        warm = max(1, self.steps // 50)

        def lr_at(step: int) -> float:
            if step < warm:
                return self.lr * (step + 1) / warm
            p = (step - warm) / max(1, self.steps - warm)
            return self.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * p)))

        ab = self.schedule_.alpha_bars.to(dev, torch.float32)
        curve, window = [], []
        t0 = time.perf_counter()
        with _Bar(self.progress, f"ddpm train (seed {self.seed})", self.steps) as bar:
            for step in range(self.steps):
                loss = self._train_step(net, ema, opt, x, ab, gen, dev, step, lr_at(step))
                window.append(loss.item())
                if len(window) == self.log_every or step == self.steps - 1:
                    curve.append((step + 1, float(np.mean(window))))
                    window = []
                    bar(step + 1, f"loss {curve[-1][1]:.4f}")
        self.train_time_ = time.perf_counter() - t0
        self.net_ = ema.eval()
        self.loss_curve_ = curve
        losses = np.array([c[1] for c in curve])
        tenth = max(1, len(losses) // 10)
        self.final_loss_ = float(losses[-tenth:].mean())
        prev = float(losses[-2 * tenth:-tenth].mean()) if len(losses) >= 2 * tenth + 1 else float("nan")
        self.loss_change_ = (self.final_loss_ - prev) / prev if prev == prev and prev > 0 else float("nan")
        self.steps_run_, self.stop_reason_ = self.steps, "steps"

    def _networks(self, dim: int, dev) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
        """The seeded denoiser, its EMA copy (frozen) and the optimiser, on ``dev``."""
        net, ema = seeded_with_ema(dim, self.hidden, self.depth, self.seed, dev)
        return net, ema, torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _train_step(self, net, ema, opt, x, ab, gen, dev, step: int, lr: float) -> torch.Tensor:
        """One denoising step at learning rate ``lr`` on a minibatch of x (draws from ``gen``),
        then the EMA update (warm-up decay); returns the minibatch loss."""
        idx = torch.randint(0, len(x), (self.batch_size,), generator=gen).to(dev)
        t = torch.randint(0, self.timesteps, (self.batch_size,), generator=gen).to(dev)
        eps = torch.randn(self.batch_size, x.shape[1], generator=gen).to(dev)
        a = ab[t][:, None]
        xt = a.sqrt() * x[idx] + (1.0 - a).sqrt() * eps
        loss = torch.mean((net(xt, t) - eps) ** 2)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(self.ema, (1.0 + step) / (10.0 + step))  # EMA warm-up
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1.0 - decay)
        return loss

    def _fit_converge(self, codes: np.ndarray) -> None:
        """Train until the held-out denoising loss is flat (see the module docstring)."""
        dev = resolve_device(self.device)
        self.device_ = dev
        self.schedule_ = Schedule(self.timesteps)
        n = len(codes)
        n_val = min(n - 1, max(1, int(round(self.val_fraction * n))))
        perm = np.random.default_rng([self.seed, 15]).permutation(n)
        train, val = codes[perm[n_val:]], codes[perm[:n_val]]
        self.n_val_ = n_val
        self.mean_ = train.mean(axis=0)
        self.std_ = train.std(axis=0) + 1e-8
        x = torch.as_tensor((train - self.mean_) / self.std_, dtype=torch.float32, device=dev)
        xv = torch.as_tensor((val - self.mean_) / self.std_, dtype=torch.float32, device=dev)
        tv, ev = fixed_draws(n_val, codes.shape[1], self.val_draws, self.timesteps, seed=self.seed)
        tv, ev = tv.to(dev), ev.to(dev)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        net, ema, opt = self._networks(codes.shape[1], dev)
        warm = max(1, min(self.max_steps // 50, 1000))
        ab = self.schedule_.alpha_bars.to(dev, torch.float32)
        lr = self.lr
        best, ref, stale, decays = math.inf, math.inf, 0, 0
        best_state, best_step, best_kind = None, 0, "ema"
        curve, window, train_hist, val_hist, since = [], [], [], [], []
        reason = "max_steps"
        step = 0
        t0 = time.perf_counter()
        with _Bar(self.progress, f"ddpm train to convergence (seed {self.seed})", self.max_steps) as bar:
            while step < self.max_steps:
                loss = self._train_step(net, ema, opt, x, ab, gen, dev, step, lr * min(1.0, (step + 1) / warm))
                step += 1
                window.append(loss.item())
                since.append(window[-1])
                if len(window) == self.log_every:
                    curve.append((step, float(np.mean(window))))
                    window = []
                if step % self.eval_every and step != self.max_steps:
                    continue
                raw_l = _denoising_loss(net, xv, tv, ev, ab)
                ema_l = _denoising_loss(ema, xv, tv, ev, ab)
                val_hist.append([step, raw_l, ema_l, lr])
                train_hist.append([step, float(np.mean(since))])
                since = []
                bar(step, f"held-out {min(raw_l, ema_l):.4f}")
                cur, kind = (ema_l, "ema") if ema_l <= raw_l else (raw_l, "raw")
                if cur < best:
                    best, best_step, best_kind = cur, step, kind
                    best_state = {k: v.detach().clone() for k, v in (ema if kind == "ema" else net).state_dict().items()}
                if cur < ref * (1.0 - self.min_improvement):
                    ref, stale = cur, 0
                else:
                    stale += 1
                if stale >= self.patience:
                    if self.lr_decay == "plateau" and decays < self.max_decays:
                        lr, decays, stale = lr * self.decay_factor, decays + 1, 0
                        ref = best
                    else:
                        reason = "plateau"
                        break
        if window:
            curve.append((step, float(np.mean(window))))
        self.train_time_ = time.perf_counter() - t0
        ema.load_state_dict(best_state)
        self.net_ = ema.eval()
        self.loss_curve_ = curve
        self.val_history_, self.train_history_ = val_hist, train_hist
        self.steps_run_, self.stop_reason_ = step, reason
        self.best_step_, self.best_val_loss_, self.best_weights_ = best_step, best, best_kind
        self.lr_decays_ = decays
        self.final_loss_ = train_hist[-1][1]
        self.loss_change_ = (val_hist[-1][1 if best_kind == "raw" else 2] - best) / best

    @torch.no_grad()
    def heldout_loss(self, codes: Any, draws: int = 16, seed: int = 0) -> float:
        """The denoising loss E |ε − ε_θ(x_t, t)|² of the sampling weights ``net_`` on codes
        (n, d) (standardised as in training), on fixed draws: ``draws`` per code, t stratified
        over [0, T), ε seeded by ``seed``. Two models scored with the same codes, draws and seed
        see the same (t, ε)."""
        self._check_fitted()
        from .._array import as_points

        c = as_points(codes, "codes").numpy()
        if c.shape[1] != self.dim_:
            raise ValueError(f"codes: expected {self.dim_} columns, got {c.shape[1]}")
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws: expected a positive integer, got {draws!r}")
        from .base import _check_seed

        _check_seed(seed, "seed")
        xv = torch.as_tensor((c - self.mean_) / self.std_, dtype=torch.float32, device=self.device_)
        tv, ev = fixed_draws(len(c), self.dim_, draws, self.schedule_.T, seed=seed)
        ab = self.schedule_.alpha_bars.to(self.device_, torch.float32)
        return _denoising_loss(self.net_, xv, tv.to(self.device_), ev.to(self.device_), ab)

    # ---------------------------------------------------------------- sample
    @torch.no_grad()
    def _sample(self, n: int, seed: int) -> np.ndarray:
        dev = self.device_
        gen = torch.Generator(device="cpu").manual_seed(seed)
        s = self.schedule_
        x = torch.randn(n, self.dim_, generator=gen).to(dev)
        if self.sampler == "ancestral":
            steps = list(range(s.T - 1, -1, -1))
        else:
            steps = self._ddim_grid(None)[::-1]
        alphas, ab, pv = (v.to(dev, torch.float32) for v in (s.alphas, s.alpha_bars, s.posterior_var))
        betas = s.betas.to(dev, torch.float32)
        with _Bar(self.progress, f"{self.name} sample (seed {seed})", len(steps)) as bar:
            for i, t in enumerate(steps):
                tt = torch.full((n,), t, dtype=torch.int64, device=dev)
                eps = self.net_(x, tt)
                if self.sampler == "ancestral":
                    x = (x - betas[t] / (1.0 - ab[t]).sqrt() * eps) / alphas[t].sqrt()
                    if t > 0:
                        x = x + pv[t].sqrt() * torch.randn(n, self.dim_, generator=gen).to(dev)
                else:
                    x = self._ddim_step(x, eps, t, steps[i + 1] if i + 1 < len(steps) else None, ab)
                bar(i + 1)
        return x.double().cpu().numpy() * self.std_ + self.mean_

    @staticmethod
    def _ddim_step(x: torch.Tensor, eps: torch.Tensor, t: int, t_next: int | None, ab: torch.Tensor) -> torch.Tensor:
        """One η = 0 DDIM move from step t to step t_next (earlier or later; None: to x̂_0)."""
        x0 = (x - (1.0 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        return x0 if t_next is None else ab[t_next].sqrt() * x0 + (1.0 - ab[t_next]).sqrt() * eps

    def _ddim_grid(self, steps: int | None) -> list[int]:
        """The DDIM subsequence of ``steps`` (default ``sample_steps``) steps in [0, T), increasing."""
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 2):
            raise ValueError(f"steps: expected an integer ≥ 2, got {steps!r}")
        k = self.sample_steps if steps is None else steps
        return np.unique(np.linspace(0, self.schedule_.T - 1, k).round().astype(int)).tolist()

    @torch.no_grad()
    def invert(self, codes: Any, steps: int | None = None) -> np.ndarray:
        """DDIM inversion (Song et al. 2021, §4.3/5.4): the deterministic η = 0 ODE run from the
        codes (n, d) up to step T − 1; returns the diffusion latents x_T (n, d), standardised
        space. ``decode_latents`` maps them back (up to discretisation error)."""
        self._check_fitted()
        x = torch.as_tensor((np.asarray(codes, dtype=np.float64) - self.mean_) / self.std_, dtype=torch.float32,
                            device=self.device_)
        grid = self._ddim_grid(steps)
        ab = self.schedule_.alpha_bars.to(self.device_, torch.float32)
        for t, t_next in zip(grid[:-1], grid[1:]):
            eps = self.net_(x, torch.full((len(x),), t, dtype=torch.int64, device=self.device_))
            x = self._ddim_step(x, eps, t, t_next, ab)
        return x.double().cpu().numpy()

    @torch.no_grad()
    def decode_latents(self, xT: Any, steps: int | None = None) -> np.ndarray:
        """η = 0 DDIM sampling from given diffusion latents x_T (n, d) → codes (n, d)."""
        self._check_fitted()
        x = torch.as_tensor(np.asarray(xT, dtype=np.float64), dtype=torch.float32, device=self.device_)
        grid = self._ddim_grid(steps)[::-1]
        ab = self.schedule_.alpha_bars.to(self.device_, torch.float32)
        for i, t in enumerate(grid):
            eps = self.net_(x, torch.full((len(x),), t, dtype=torch.int64, device=self.device_))
            x = self._ddim_step(x, eps, t, grid[i + 1] if i + 1 < len(grid) else None, ab)
        return x.double().cpu().numpy() * self.std_ + self.mean_

    def interpolate(self, a: Any, b: Any, n: int, steps: int | None = None) -> np.ndarray:
        """The diffusion model's own interpolation between codes a (d,) and b (d,): invert both
        to x_T, walk the great circle between them (spherical interpolation, as Song et al. 2021
        §5.3 do, since x_T is Gaussian) and decode each point with DDIM. Returns (n, d) codes."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"n: expected an integer ≥ 2, got {n!r}")
        ends = np.stack([np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)])
        za, zb = self.invert(ends, steps)
        cos = float(np.dot(za, zb) / max(np.linalg.norm(za) * np.linalg.norm(zb), 1e-300))
        theta = math.acos(min(1.0, max(-1.0, cos)))
        s = np.linspace(0.0, 1.0, n)[:, None]
        if theta < 1e-6:
            z = (1 - s) * za + s * zb
        else:
            z = (np.sin((1 - s) * theta) * za + np.sin(s * theta) * zb) / math.sin(theta)
        return self.decode_latents(z, steps)

    def with_sampler(self, sampler: str, sample_steps: int | None = None) -> "DDPMBaseline":
        """A copy that shares this fitted denoiser but samples with ``sampler`` ("ancestral" or
        "ddim", ``sample_steps`` steps): DDPM and DDIM from one training run (Song et al. 2021
        sample a DDPM-trained ε_θ unchanged)."""
        import copy

        self._check_fitted()
        other = copy.copy(self)
        other.__class__ = DDIMBaseline if sampler == "ddim" else DDPMBaseline
        other.sampler = sampler
        if sample_steps is not None:
            other.sample_steps = sample_steps
        other._check_params()
        return other

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(
            sampler=self.sampler, timesteps=self.timesteps,
            sample_steps=self.timesteps if self.sampler == "ancestral" else self.sample_steps,
            train_steps=self.steps, batch_size=self.batch_size, hidden=self.hidden, depth=self.depth, lr=self.lr,
            ema=self.ema, schedule="linear beta 1e-4..0.02 (Ho et al. 2020)", device=str(getattr(self, "device_", self.device)),
            final_loss=getattr(self, "final_loss_", None), loss_change_last_tenth=getattr(self, "loss_change_", None),
            loss_curve=[[s, round(v, 5)] for s, v in getattr(self, "loss_curve_", [])],
            steps_run=getattr(self, "steps_run_", None), stop_reason=getattr(self, "stop_reason_", None),
        )
        if self.converge:
            out.update(
                train_steps=getattr(self, "steps_run_", None), max_steps=self.max_steps, eval_every=self.eval_every,
                patience=self.patience, min_improvement=self.min_improvement, val_fraction=self.val_fraction,
                val_draws=self.val_draws, lr_decay=self.lr_decay, decay_factor=self.decay_factor,
                max_decays=self.max_decays, lr_decays=getattr(self, "lr_decays_", None),
                best_step=getattr(self, "best_step_", None), best_val_loss=getattr(self, "best_val_loss_", None),
                best_weights=getattr(self, "best_weights_", None),
                val_history=[[s, round(r, 6), round(e, 6), lr] for s, r, e, lr in getattr(self, "val_history_", [])],
                train_history=[[s, round(v, 6)] for s, v in getattr(self, "train_history_", [])],
            )
        return out


class DDIMBaseline(DDPMBaseline):
    """The same DDPM training, sampled with DDIM (η = 0) in ``sample_steps`` (100) steps."""

    name = "ddim"
    description = "the DDPM above, DDIM sampling (η = 0, 100 steps)"

    def __init__(self, **kwargs):
        kwargs.setdefault("sampler", "ddim")
        super().__init__(**kwargs)


def fixed_draws(n: int, dim: int, draws: int, timesteps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed (t, ε) for a held-out denoising loss: for each of n codes, ``draws`` steps t, one in
    each of ``draws`` equal strata of [0, T) (uniform inside its stratum), and standard normal ε.
    Returns t (n · draws,) int64 and ε (n · draws, dim) float32, row i·draws + k for code i;
    the same arguments give the same draws."""
    g = torch.Generator(device="cpu").manual_seed(int(seed) + 1_000_003)
    u = torch.rand(n, draws, generator=g, dtype=torch.float64)
    k = torch.arange(draws, dtype=torch.float64)[None, :]
    t = ((k + u) * timesteps / draws).floor().clamp_(0, timesteps - 1).to(torch.int64).reshape(-1)
    eps = torch.randn(n * draws, dim, generator=g)
    return t, eps


@torch.no_grad()
def _denoising_loss(net: nn.Module, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor,
                    chunk: int = 65_536) -> float:
    """Mean |ε − ε_θ(x_t, t)|² over the fixed draws (x0 (n, d) repeated ``len(t) / n`` times)."""
    reps = len(t) // len(x0)
    total = 0.0
    for i in range(0, len(t), chunk):
        j = slice(i, min(i + chunk, len(t)))
        x = x0[torch.arange(j.start, j.stop, device=x0.device) // reps]
        a = ab[t[j]][:, None]
        xt = a.sqrt() * x + (1.0 - a).sqrt() * eps[j]
        total += float(((net(xt, t[j]) - eps[j]) ** 2).sum())
    return total / (len(t) * x0.shape[1])


def _real_in(v: Any, lo: float, hi: float, lo_open: bool = True, hi_open: bool = True) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


class _Bar:
    """A Rich progress bar when enabled; a no-op callable otherwise."""

    def __init__(self, enabled: bool, title: str, total: int):
        self.enabled, self.title, self.total = enabled, title, total

    def __enter__(self):
        if not self.enabled:
            return lambda *a, **k: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[msg]}"),
                           TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
        self._p.__enter__()
        task = self._p.add_task(self.title, total=self.total, msg="")
        last = [0.0]

        def update(done: int, msg: str | None = None) -> None:
            now = time.perf_counter()
            if msg is not None or now - last[0] > 0.2 or done == self.total:
                last[0] = now
                self._p.update(task, completed=done, **({"msg": msg} if msg is not None else {}))

        return update

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False
