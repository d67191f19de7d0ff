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

    Attributes (after ``fit``): net_ (the EMA denoiser), loss_curve_ (list of
    (step, mean training loss over the last ``log_every`` steps)), final_loss_,
    loss_change_ (relative change of the mean loss between the last two tenths of training:
    near 0 once converged), mean_, std_ (standardisation), device_.
    """

    name = "ddpm"
    description = "DDPM, MLP denoiser, ancestral sampling (T = 1000)"

    def __init__(self, *, seed: int = 0, sampler: str = "ancestral", timesteps: int = 1000, sample_steps: int = 100,
                 steps: int = 6000, batch_size: int = 512, hidden: int = 256, depth: int = 3, lr: float = 2e-3,
                 weight_decay: float = 0.0, ema: float = 0.999, log_every: int = 50, device: str = "auto",
                 progress: bool = False):
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

    def _fit(self, codes: np.ndarray) -> None:
        self._check_params()
        dev = resolve_device(self.device)
        self.device_ = dev
        self.schedule_ = Schedule(self.timesteps)
        self.mean_ = codes.mean(axis=0)
        self.std_ = codes.std(axis=0) + 1e-8
        x = torch.as_tensor((codes - self.mean_) / self.std_, dtype=torch.float32, device=dev)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = Denoiser(codes.shape[1], self.hidden, self.depth).to(dev)
        ema = Denoiser(codes.shape[1], self.hidden, self.depth).to(dev)
        ema.load_state_dict(net.state_dict())
        ema.requires_grad_(False)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
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
                idx = torch.randint(0, len(x), (self.batch_size,), generator=gen).to(dev)
                t = torch.randint(0, self.timesteps, (self.batch_size,), generator=gen).to(dev)
                eps = torch.randn(self.batch_size, x.shape[1], generator=gen).to(dev)
                a = ab[t][:, None]
                xt = a.sqrt() * x[idx] + (1.0 - a).sqrt() * eps
                loss = torch.mean((net(xt, t) - eps) ** 2)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                decay = min(self.ema, (1.0 + step) / (10.0 + step))  # EMA warm-up
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), net.parameters()):
                        pe.lerp_(p, 1.0 - decay)
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
        )
        return out


class DDIMBaseline(DDPMBaseline):
    """The same DDPM training, sampled with DDIM (η = 0) in ``sample_steps`` (100) steps."""

    name = "ddim"
    description = "the DDPM above, DDIM sampling (η = 0, 100 steps)"

    def __init__(self, **kwargs):
        kwargs.setdefault("sampler", "ddim")
        super().__init__(**kwargs)


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
