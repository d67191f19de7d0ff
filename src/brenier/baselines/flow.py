"""``fm`` / ``sdfm``: flow matching on the codes, with the independent and the semi-discrete OT coupling.

Both learn a velocity field v_θ(x, t) whose ODE dx/dt = v_θ(x, t), t ∈ [0, 1], carries the base
measure (t = 0) onto the codes (t = 1), by the conditional flow-matching regression, written out
here (no extra dependency):

* Lipman et al., "Flow Matching for Generative Modeling", ICLR 2023; Liu, Gong & Liu, "Flow
  Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow", ICLR 2023.
  For pairs (x0, y) drawn from a coupling π of the base μ and the codes ν, and t ~ U[0, 1],
  x_t = (1 − t) x0 + t y, and the loss is E |v_θ(x_t, t) − (y − x0)|². Its minimiser is
  v(x, t) = E[y − x0 | x_t = x], whose flow pushes μ onto ν for any coupling.
* ``fm``: the independent coupling π = μ ⊗ ν (x0 and y drawn separately).
* ``sdfm``: the semi-discrete OT coupling (semi-discrete flow matching, SD-FM, 2025): x0 ~ μ
  paired with its image under our fitted Brenier map, T(x0) = y_{argmax_i <x0, y_i> + h_i}
  (``SemiDiscreteOT.transport``). Then x_t moves along straight lines that do not cross (the
  OT displacement), and v is the network's continuous approximation of exactly the map that
  ``ot`` samples with: where T tears (the singular set), a continuous v has to blend.

The base measure is by default the OT map's own source, the uniform unit ball in d dimensions
(``brenier.sources.UniformBall``), on the codes standardised as ``OTBaseline`` does (centred,
divided by their RMS radius): ``fm`` and ``sdfm`` then differ only in the coupling, and a
sample's base point x0 lives in the OT map's source frame (``sample_with_sources``).
``fm`` also takes ``base="gaussian"``, the usual N(0, I).

The velocity network is ddpm's MLP (``ddpm.Denoiser``: residual SiLU MLP, sinusoidal time
embedding) fed with 1000 t. Training: Adam at a constant learning rate on minibatches, an
exponential moving average (EMA) of the weights that samples, and a held-out loss on fixed
draws every ``eval_every`` steps (optional early stop: ``patience``). Sampling integrates the
ODE with the explicit midpoint rule (default) or RK4 on ``sample_steps`` equal steps.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from .._array import resolve_device
from .base import Baseline, _check_seed
from .ddpm import _Bar, seeded_with_ema

#: t is fed to the time embedding as TIME_SCALE · t (ddpm's embedding expects steps in [0, 1000))
TIME_SCALE = 1000.0
#: number of fixed (x0, t) pairs the held-out loss is measured on
VAL_PAIRS = 4096
SOLVERS = ("euler", "midpoint", "rk4")


def _seed_of(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream (seed, *keys), independent across keys."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class FlowMatching(Baseline):
    """Conditional flow matching (rectified flow) with the independent coupling.

    Parameters
    ----------
    base : "ball" (the uniform unit ball, the OT map's source; default) or "gaussian" (N(0, I)).
    steps : training iterations (the most, when ``patience`` stops earlier).
    batch_size : pairs per minibatch (codes drawn with replacement, fresh x0 and t each step).
    hidden, depth : width and number of hidden layers of the velocity MLP.
    lr : Adam learning rate (constant).
    ema : EMA decay of the weights used for sampling and for the held-out loss.
    sample_steps, solver : ODE steps from t = 0 to 1 and the rule ("midpoint", "rk4", "euler").
    val_fraction : share of the codes held out for the validation loss (0: none; ``sdfm`` holds
        out no codes, its validation pairs are fresh x0 with their partners T(x0)).
    eval_every : steps between two held-out loss evaluations.
    patience : None (train all ``steps``) or a number of evaluations: stop when the held-out
        loss has stayed above 99 % of its value at the last such improvement for that many
        evaluations in a row (a slow steady decrease of 1 % per ``patience`` evaluations continues).
    ot : ``fm``: an ``OTBaseline`` (fitted) whose frame (shift_, scale_) to use, or a fitted
        ``SemiDiscreteOT`` whose targets are the codes in its own frame; its source is then the
        base. ``sdfm``: the map whose coupling to use (see ``SemiDiscreteFlowMatching``).
    method, tol : the OT solver's settings when ``sdfm`` fits its own map (as ``OTBaseline``).
    device : "auto" | "cpu" | "cuda".
    progress : show a Rich progress bar.

    Attributes (after ``fit``): net_ (the EMA velocity network), shift_, scale_ (the frame),
    base_ (the base ``Source``), loss_history_ (list of [step, mean training loss since the last
    evaluation, held-out loss or None]), final_loss_, val_loss_ (last held-out loss),
    best_val_loss_, stopped_early_, steps_run_, train_time_, device_.
    """

    name = "fm"
    description = "flow matching, independent coupling, MLP velocity, ODE sampling"
    coupling = "independent"

    def __init__(self, *, seed: int = 0, base: str = "ball", steps: int = 6000, batch_size: int = 512,
                 hidden: int = 256, depth: int = 3, lr: float = 1e-3, ema: float = 0.999, sample_steps: int = 32,
                 solver: str = "midpoint", val_fraction: float = 0.05, eval_every: int = 250,
                 patience: int | None = None, ot=None, method: str = "auto", tol: float | None = None,
                 device: str = "auto", progress: bool = False):
        super().__init__(seed=seed)
        self.base = base
        self.steps = steps
        self.batch_size = batch_size
        self.hidden = hidden
        self.depth = depth
        self.lr = lr
        self.ema = ema
        self.sample_steps = sample_steps
        self.solver = solver
        self.val_fraction = val_fraction
        self.eval_every = eval_every
        self.patience = patience
        self.ot = ot
        self.method = method
        self.tol = tol
        self.device = device
        self.progress = progress

    # ---------------------------------------------------------------- checks
    def _check_params(self) -> None:
        if self.base not in ("ball", "gaussian"):
            raise ValueError(f"base: expected 'ball' or 'gaussian', got {self.base!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {', '.join(SOLVERS)}, got {self.solver!r}")
        for name in ("steps", "batch_size", "hidden", "depth", "sample_steps", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, (int, np.integer))
                                          or self.patience < 1):
            raise ValueError(f"patience: expected None or a positive integer, got {self.patience!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not (0.0 <= self.ema < 1.0):
            raise ValueError(f"ema: expected a decay in [0, 1), got {self.ema!r}")
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not (0.0 <= vf < 0.5):
            raise ValueError(f"val_fraction: expected a number in [0, 0.5), got {vf!r}")
        if self.patience is not None and vf == 0:
            raise ValueError("patience: early stopping needs a held-out set (val_fraction > 0)")

    def _frame(self, codes: np.ndarray):
        """(shift (d,), scale, fitted SemiDiscreteOT or None) from ``ot`` or from the codes."""
        from ..ot import SemiDiscreteOT
        from .ot import OTBaseline

        d = codes.shape[1]
        if self.ot is None:
            shift = codes.mean(axis=0)
            scale = float(np.sqrt(np.mean(np.sum((codes - shift) ** 2, axis=1)))) or 1.0
            return shift, scale, None
        if isinstance(self.ot, OTBaseline):
            if not hasattr(self.ot, "ot_"):
                raise ValueError("ot: this OTBaseline is not fitted yet: call fit(codes) first")
            shift, scale, sd = np.asarray(self.ot.shift_, dtype=np.float64), float(self.ot.scale_), self.ot.ot_
        elif isinstance(self.ot, SemiDiscreteOT):
            shift, scale, sd = np.zeros(d), 1.0, self.ot  # its targets are the codes in its own frame
        else:
            raise ValueError(f"ot: expected a fitted SemiDiscreteOT or OTBaseline, got {type(self.ot).__name__}")
        if not hasattr(sd, "_potential"):
            raise ValueError("ot: this SemiDiscreteOT is not fitted yet: call fit(targets) first")
        if sd.targets_.shape[1] != d:
            raise ValueError(f"ot: fitted on {sd.targets_.shape[1]}-D targets, the codes are {d}-D")
        return shift, scale, sd

    # ---------------------------------------------------------------- fit
    def _fit(self, codes: np.ndarray) -> None:
        from ..sources import Gaussian, UniformBall

        self._check_params()
        dev = resolve_device(self.device)
        self.device_ = dev
        d = codes.shape[1]
        self.shift_, self.scale_, sd = self._frame(codes)
        self.ot_ = sd
        if self.base == "gaussian":
            self.base_ = Gaussian(d)
        else:
            self.base_ = sd.source_ if sd is not None else UniformBall(d)
        y = (codes - self.shift_) / self.scale_
        self._prepare(y)
        self._train(dev)

    def _prepare(self, y: np.ndarray) -> None:
        """Split the standardised codes y (N, d) into training codes and fixed validation pairs."""
        n = len(y)
        rng = np.random.default_rng(_seed_of(self.seed, 1))
        n_val = int(round(self.val_fraction * n)) if self.val_fraction > 0 else 0
        n_val = min(n_val, n - 1)
        perm = rng.permutation(n)
        self._train_codes = torch.as_tensor(y[perm[n_val:]], dtype=torch.float32)
        self.n_val_codes_ = n_val
        if n_val == 0:
            self._val = None
            return
        x0 = self._draw_base(VAL_PAIRS, _seed_of(self.seed, 2))
        yv = torch.as_tensor(y[perm[:n_val]][np.arange(VAL_PAIRS) % n_val], dtype=torch.float32)
        t = torch.rand(VAL_PAIRS, generator=torch.Generator().manual_seed(_seed_of(self.seed, 3)))
        self._val = (x0, yv, t)

    def _draw_base(self, n: int, seed: int) -> torch.Tensor:
        """(n, d) float32 CPU draws from the base measure (i.i.d., seeded)."""
        return self.base_.sample(n, seed=seed, quasi=False, dtype=torch.float64).float().cpu()

    def _pairs(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One minibatch of coupled pairs (x0 (B, d), y (B, d)): the independent coupling."""
        idx = torch.randint(0, len(self._train_codes), (self.batch_size,), generator=gen)
        return self._draw_base(self.batch_size, _seed_of(self.seed, 10, step)), self._train_codes[idx]

    def _train(self, dev: torch.device) -> None:
        d = self._train_codes.shape[1]
        gen = torch.Generator(device="cpu").manual_seed(_seed_of(self.seed, 4))
        net, ema = seeded_with_ema(d, self.hidden, self.depth, self.seed, dev)
        opt = torch.optim.Adam(net.parameters(), lr=float(self.lr))
        val = None if self._val is None else tuple(v.to(dev) for v in self._val)
        history: list[list] = []
        window: list[float] = []
        best, ref, since_best, stopped = math.inf, math.inf, 0, False
        t0 = time.perf_counter()
        step = 0
        with _Bar(self.progress, f"{self.name} train (seed {self.seed})", self.steps) as bar:
            for step in range(1, self.steps + 1):
                x0, y = self._pairs(step, gen)
                x0, y = x0.to(dev), y.to(dev)
                t = torch.rand(self.batch_size, generator=gen).to(dev)
                loss = _fm_loss(net, x0, y, t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                decay = min(self.ema, (1.0 + step) / (10.0 + step))  # EMA warm-up, as ddpm
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), net.parameters()):
                        pe.lerp_(p, 1.0 - decay)
                window.append(loss.item())
                if step % self.eval_every == 0 or step == self.steps:
                    vl = None
                    if val is not None:
                        with torch.no_grad():
                            vl = float(_fm_loss(ema, *val))
                        if vl < ref * (1.0 - 0.01):  # improved by 1 % on the loss at the last improvement
                            ref, since_best = vl, 0
                        else:
                            since_best += 1
                        best = min(best, vl)
                    history.append([step, float(np.mean(window)), vl])
                    window = []
                    bar(step, f"loss {history[-1][1]:.4f}" + (f" val {vl:.4f}" if vl is not None else ""))
                    if self.patience is not None and since_best >= self.patience:
                        stopped = True
                        break
        self.train_time_ = time.perf_counter() - t0
        self.net_ = ema.eval()
        self.loss_history_ = history
        self.steps_run_ = step
        self.stopped_early_ = stopped
        tail = [h[1] for h in history[-max(1, len(history) // 10):]]
        self.final_loss_ = float(np.mean(tail))
        self.val_loss_ = history[-1][2] if history else None
        self.best_val_loss_ = None if best == math.inf else float(best)

    # ---------------------------------------------------------------- sample
    @torch.no_grad()
    def integrate(self, x0: Any, steps: int | None = None, solver: str | None = None) -> np.ndarray:
        """Carry base points x0 (n, d) (base frame) along the learned ODE from t = 0 to 1 with
        ``steps`` (default ``sample_steps``) steps of ``solver`` (default ``self.solver``).
        Returns the end points (n, d) float64 in the base frame (standardised codes)."""
        self._check_fitted()
        steps = self.sample_steps if steps is None else steps
        solver = self.solver if solver is None else solver
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {steps!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {', '.join(SOLVERS)}, got {solver!r}")
        from .._array import as_points

        x = as_points(x0, "x0", dim=self.dim_, dtype=torch.float64).to(self.device_, torch.float32)
        n, h = len(x), 1.0 / steps

        def v(z, s):
            return self.net_(z, torch.full((n,), s * TIME_SCALE, device=self.device_))

        for k in range(steps):
            s = k * h
            if solver == "euler":
                x = x + h * v(x, s)
            elif solver == "midpoint":
                x = x + h * v(x + 0.5 * h * v(x, s), s + 0.5 * h)
            else:
                k1 = v(x, s)
                k2 = v(x + 0.5 * h * k1, s + 0.5 * h)
                k3 = v(x + 0.5 * h * k2, s + 0.5 * h)
                k4 = v(x + h * k3, s + h)
                x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x.double().cpu().numpy()

    def sample_with_sources(self, n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(codes (n, d) float64 in the caller's frame, x0 (n, d) float64): the samples and the
        base points they started from, in the base frame; with the default ``base="ball"`` that
        is the OT map's source frame (the frame of ``OTBaseline.ot_`` on the same codes), so
        ``brenier.singular.boundary_distance(ot, x0, S)`` says how near the singular set each
        sample started. The same (n, seed) as ``sample`` gives the same codes."""
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected a positive integer, got {n!r}")
        seed = self.seed if seed is None else seed
        _check_seed(seed, "seed")
        x0 = self._draw_base(int(n), _seed_of(seed, 20)).double().numpy()
        z = self.integrate(x0)
        return z * self.scale_ + self.shift_, x0

    def _sample(self, n: int, seed: int) -> np.ndarray:
        return self.sample_with_sources(n, seed)[0]

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(
            coupling=self.coupling, base=self.base, train_steps=self.steps, steps_run=getattr(self, "steps_run_", None),
            stopped_early=getattr(self, "stopped_early_", None), patience=self.patience, batch_size=self.batch_size,
            hidden=self.hidden, depth=self.depth, lr=self.lr, ema=self.ema, sample_steps=self.sample_steps,
            solver=self.solver, val_fraction=self.val_fraction, eval_every=self.eval_every,
            device=str(getattr(self, "device_", self.device)),
            train_time_s=round(getattr(self, "train_time_", float("nan")), 3),
            final_loss=getattr(self, "final_loss_", None), val_loss=getattr(self, "val_loss_", None),
            best_val_loss=getattr(self, "best_val_loss_", None),
            loss_history=[[s, round(a, 5), None if b is None else round(b, 5)] for s, a, b in getattr(self, "loss_history_", [])],
        )
        return out


def _fm_loss(net, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and coordinates of |v(x_t, t) − (y − x0)|², x_t = (1 − t) x0 + t y."""
    tt = t[:, None]
    xt = (1.0 - tt) * x0 + tt * y
    return torch.mean((net(xt, t * TIME_SCALE) - (y - x0)) ** 2)


class SemiDiscreteFlowMatching(FlowMatching):
    """Flow matching on the semi-discrete OT coupling (SD-FM): pairs (x0, T(x0)), x0 from the OT
    map's source, T our fitted Brenier map.

    ``ot``: None (fit a ``SemiDiscreteOT`` on the codes exactly as ``OTBaseline`` does, with
    ``method``, ``tol``, ``device`` and ``seed``), a fitted ``OTBaseline`` (its map and its frame
    shift_/scale_ are shared; the codes given to ``fit`` must be the ones it was fitted on), or a
    fitted ``SemiDiscreteOT`` whose targets are the codes in its own frame. Fresh x0 are drawn
    every minibatch and assigned by the potential's argmax (``SemiDiscreteOT.transport``). No
    codes are held out (every target is part of the map); the held-out loss is measured on
    ``VAL_PAIRS`` fixed fresh x0 with their partners T(x0) and fixed t, unless
    ``val_fraction`` is 0. Other parameters as ``FlowMatching``; ``base`` must be "ball" (the
    map's own source).

    Attributes, besides ``FlowMatching``'s: ot_ (the SemiDiscreteOT used), ot_baseline_ (the
    OTBaseline, when one was fitted or given), ot_fit_time_s_ (0 when reused).
    """

    name = "sdfm"
    description = "flow matching on the semi-discrete OT coupling (x0, T(x0)) (SD-FM)"
    coupling = "semi-discrete OT"

    def _check_params(self) -> None:
        super()._check_params()
        if self.base != "ball":
            raise ValueError(f"base: sdfm pairs x0 from its OT map's source (the unit ball); expected 'ball', got {self.base!r}")

    def _frame(self, codes: np.ndarray):
        from .ot import OTBaseline

        if self.ot is not None:
            shift, scale, sd = super()._frame(codes)
            self.ot_baseline_ = self.ot if isinstance(self.ot, OTBaseline) else None
            self.ot_fit_time_s_ = 0.0
            return shift, scale, sd
        ob = OTBaseline(seed=self.seed, method=self.method, tol=self.tol, device=self.device, progress=self.progress)
        ob.fit(codes)
        self.ot_baseline_, self.ot_fit_time_s_ = ob, float(ob.fit_time_)
        return ob.shift_, ob.scale_, ob.ot_

    def _prepare(self, y: np.ndarray) -> None:
        self._train_codes = torch.as_tensor(y, dtype=torch.float32)
        self.n_val_codes_ = 0
        if self.val_fraction == 0:
            self._val = None
            return
        x0 = self._draw_base(VAL_PAIRS, _seed_of(self.seed, 2))
        t = torch.rand(VAL_PAIRS, generator=torch.Generator().manual_seed(_seed_of(self.seed, 3)))
        self._val = (x0, self.partners(x0), t)

    def partners(self, x0: Any) -> torch.Tensor:
        """T(x0) (n, d) float32 CPU: the OT map's target of each source point x0 (n, d) (OT frame)."""
        x = torch.as_tensor(x0, dtype=torch.float64)
        return torch.as_tensor(self.ot_.transport(x), dtype=torch.float64).float().cpu()

    def _pairs(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self._draw_base(self.batch_size, _seed_of(self.seed, 10, step))
        return x0, self.partners(x0)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(ot_reused=self.ot is not None, ot_fit_time_s=round(getattr(self, "ot_fit_time_s_", float("nan")), 3))
        return out
