"""Side-by-side comparison of generative models of the same latent codes (``brenier compare``).

For each seed s in ``seeds`` every model (``brenier.baselines``: ``ot``, ``ot-ignore``, ``ddpm``,
``gmm``, ``gaussian``, ...) is fitted with ``seed = s`` to the *same* codes and draws
``n_samples`` new codes with ``seed = s``; the samples are scored by ``brenier.metrics``:

* 2-D toy data (``ring8``, ``grid25``, ``moons``, ...; ``brenier.datasets.toy``): the codes are
  the points themselves, ``n_train`` drawn with seed s, and ``n_heldout`` held-out points with
  seed 10 000 + s. Metrics: ``toy_metrics`` (off-support rate, modes hit, KL of mode
  frequencies, novelty, energy distance and sliced W2 to held-out data).
* images (``digits`` or any ``brenier.datasets.load`` name): a stratified train / held-out split
  (seed 0, 20% held out), one ``AEOT`` per seed fitted on the training images; every model fits
  ``aeot.codes_`` (the normalised training codes; ``ot`` and ``ot-ignore`` reuse ``aeot.ot_``),
  and samples are decoded by the same decoder. Metrics: ``image_metrics`` with one
  ``FeatureClassifier`` trained on the training images (seed 0, saved with the run), plus the
  novelty of the generated codes against the training codes. A ``real (held-out)`` row scores
  held-out real images the same way: the floor each metric can reach.

``compare`` returns a JSON-ready dict and, with ``out``, writes ``compare.json``, ``compare.md``
(mean ± std over seeds), ``samples.png`` (2-D: one scatter panel per model with the support
outlined; images: one grid per model), ``samples_seed0.npz`` (the seed-0 samples shown) and
``ddpm_loss.png`` (the diffusion model's training loss per seed). All files are written atomically.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._io import atomic_write, write_json

__all__ = ["compare", "DEFAULT_MODELS", "mixture_origins", "summarise", "markdown_table", "verdict", "render_markdown", "TOY_COLUMNS",
           "IMAGE_COLUMNS"]

DEFAULT_MODELS = ("ot", "ot-ignore", "ddpm", "gmm", "gaussian")
#: ``compare("mnist")``'s default: the seven models of the full-scale comparison (docs/compare.md),
#: with the diffusion model trained to convergence (``ddpm.converged_settings``)
MNIST_MODELS = ("ot", "ot-ignore", "ddpm", "fm", "sdfm", "gmm", "gaussian")

#: (metric key, column header, format, "lower" | "higher" | "" is better)
TOY_COLUMNS = [
    ("off_support", "off-support ↓", ".3f", "lower"),
    ("modes_hit", "modes hit ↑", ".1f", "higher"),
    ("mode_kl", "mode KL ↓", ".4f", "lower"),
    ("novelty", "novelty ↑", ".3f", "higher"),
    ("energy", "energy dist ↓", ".4f", "lower"),
    ("sliced_w2", "sliced W2 ↓", ".4f", "lower"),
    ("fit_time_s", "fit s", ".1f", ""),
    ("sample_time_s", "sample s", ".1f", ""),
]
IMAGE_COLUMNS = [
    ("mode_mixture", "mode mixture ↓", ".3f", "lower"),
    ("confident", "confident ≥0.9 ↑", ".3f", "higher"),
    ("class_kl", "class KL ↓", ".4f", "lower"),
    ("frechet", "Fréchet ↓", ".2f", "lower"),
    ("precision", "precision ↑", ".3f", "higher"),
    ("recall", "recall ↑", ".3f", "higher"),
    ("density", "density", ".3f", ""),
    ("coverage", "coverage ↑", ".3f", "higher"),
    ("memorisation", "memorisation", ".3f", ""),
    ("novelty", "novelty (codes) ↑", ".3f", "higher"),
    ("mixed_near_singular", "mixed from near S", ".2f", ""),
    ("fit_time_s", "fit s", ".1f", ""),
    ("sample_time_s", "sample s", ".1f", ""),
]

#: the band around the singular set in ``mixture_origins``: the distance below which this share
#: of the source measure lies (so a generator whose mixtures came from anywhere scores ~this)
NEAR_SINGULAR_SHARE = 0.10

#: settings of the diffusion baseline used by ``compare`` (see docs/compare.md). Tuned on ring8,
#: seed 0: width 128, 3000 steps gave 5.3 % off-support samples, 8000 steps 1.2 % (the loss is
#: flat from ~2000 steps on, the samples keep improving); 5000 keeps `compare` within budget.
#: On images, width 128 and batch 256 keep 3 seeds of training within the 10-minute budget.
DDPM_TOY = dict(hidden=128, depth=3, steps=5000, batch_size=512, lr=2e-3, timesteps=1000)
DDPM_IMAGES = dict(hidden=128, depth=3, steps=4000, batch_size=256, lr=1e-3, timesteps=1000)


# ------------------------------------------------------------------ validation
def _check_models(models: Sequence[str] | str) -> list[str]:
    from .baselines import BASELINES

    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    models = list(models)
    if not models:
        raise ValueError("models: expected at least one model name")
    for m in models:
        if m not in BASELINES:
            raise ValueError(f"models: unknown model {m!r}; expected some of {', '.join(BASELINES)}")
    if len(set(models)) != len(models):
        raise ValueError(f"models: duplicate names in {models}")
    return models


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
        raise ValueError(f"seeds: expected a non-empty list of non-negative integers, got {seeds!r}")
    return [int(s) for s in seeds]


def _check_count(n: Any, name: str, lo: int = 2) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < lo:
        raise ValueError(f"{name}: expected an integer ≥ {lo}, got {n!r}")
    return int(n)


# ------------------------------------------------------------------ summaries
def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and (population) std over seeds: {model: {metric: {"mean", "std", "n"}}} from rows
    {"model", "seed", metric: value, ...}; non-numeric entries are skipped."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in runs:
        for k, v in row.items():
            if k in ("model", "seed") or isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                continue
            out.setdefault(row["model"], {}).setdefault(k, []).append(float(v))  # type: ignore[arg-type]
    return {m: {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for k, v in d.items()}
            for m, d in out.items()}


def markdown_table(summary: dict[str, dict[str, dict[str, float]]], columns, models: Sequence[str] | None = None) -> str:
    """A Markdown table: one row per model, one column per metric, "mean ± std" (best in bold
    among the generated models, where a direction is given)."""
    models = list(models or summary)
    header = "| model | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---|" + "|".join("---:" for _ in columns) + "|"
    best: dict[str, float] = {}
    for key, _, _, direction in columns:
        vals = [summary[m][key]["mean"] for m in models if key in summary.get(m, {}) and not m.startswith("real")]
        if direction and vals:
            best[key] = min(vals) if direction == "lower" else max(vals)
    lines = [header, sep]
    for m in models:
        cells = []
        for key, _, fmt, _ in columns:
            s = summary.get(m, {}).get(key)
            if s is None:
                cells.append("–")
                continue
            txt = f"{s['mean']:{fmt}} ± {s['std']:{fmt}}" if s["n"] > 1 else f"{s['mean']:{fmt}}"
            if key in best and not m.startswith("real") and math.isclose(s["mean"], best[key], rel_tol=1e-9, abs_tol=1e-12):
                txt = f"**{txt}**"
            cells.append(txt)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------ fitting one model
def _make(name: str, seed: int, device: str, progress: bool, params: dict[str, Any]):
    from .baselines import make_baseline

    kw: dict[str, Any] = {"seed": seed}
    if name in ("ddpm", "ddim", "ot", "ot-ignore", "fm", "sdfm"):
        kw.update(device=device, progress=progress)
    kw.update(params.get(name, {}))
    return make_baseline(name, **kw)


def _reuse_fit(name: str, seed: int, trained: dict[str, Any], params: dict[str, Any]):
    """``ddim`` and ``ddpm`` with the same training settings share one trained denoiser, ``ot``
    and ``ot-ignore`` one OT map: the second one only samples (its fit time is the first one's)."""
    other = {"ddpm": "ddim", "ddim": "ddpm", "ot": "ot-ignore", "ot-ignore": "ot"}.get(name)
    if other is None or other not in trained:
        return None
    if name.startswith("ot"):
        if params.get(name, {}) != params.get(other, {}):
            return None
        return trained[other].with_boundary("respect" if name == "ot" else "ignore")
    keys = ("steps", "batch_size", "hidden", "depth", "lr", "timesteps", "ema", "weight_decay")
    a, b = params.get(name, {}), params.get(other, {})
    if any(a.get(k) != b.get(k) for k in keys):
        return None
    base = trained[other]
    return base.with_sampler("ddim" if name == "ddim" else "ancestral", a.get("sample_steps", base.sample_steps))


def _fit_sample(model, codes: np.ndarray, n: int, seed: int, fitted: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
        t0 = time.perf_counter()
        if not fitted:
            model.fit(codes)
        t1 = time.perf_counter()
        if hasattr(model, "sample_with_sources"):  # the same samples, and where each one started
            s, src = model.sample_with_sources(n, seed=seed)
        else:
            s, src = model.sample(n, seed=seed), None
        t2 = time.perf_counter()
    fit_time = float(getattr(model, "fit_time_", t1 - t0)) if fitted else t1 - t0
    return s, {"fit_time_s": fit_time, "sample_time_s": t2 - t1, "sources": src}


def mixture_origins(ot, sources: np.ndarray, mixed: np.ndarray, *, seed: int = 0,
                    share: float = NEAR_SINGULAR_SHARE) -> dict[str, float]:
    """Where a generator's mode mixtures come from, seen from the OT map ``ot``'s singular set S.

    sources (M, d): the source points (in ``ot``'s source frame) the samples started from;
    mixed (M,) bool: which samples the classifier calls mixed. δ is the distance to S below
    which ``share`` of the source measure lies (from 20,000 source points drawn with ``seed``).
    Returns ``mixed_near_singular``, the share of the mixed samples that started within δ of S
    (NaN when none is mixed), ``near_singular`` the same share among all samples, and δ (all NaN
    when S has no facet: then the question has no answer). A
    generator that blends where the map tears (``ot-ignore``, ``sdfm``, the seed's claim) scores
    far above ``share``; one whose mixtures have another origin scores about ``share``."""
    import torch

    from .singular import boundary_distance

    mixed = np.asarray(mixed, dtype=bool)
    S = ot.singular_set_ if getattr(ot, "singular_set_", None) is not None else ot.singular_set()
    if S.n_facets == 0:  # no S to be near: every distance is inf, and "0 % near S" would be a false answer
        return {"mixed_near_singular": float("nan"), "near_singular": float("nan"), "near_singular_delta": float("nan")}
    ref = ot.source_.sample(20_000, seed=seed, quasi=False, device="cpu", dtype=torch.float64)
    delta = float(np.quantile(boundary_distance(ot, ref, S), share))
    near = boundary_distance(ot, sources, S) <= delta
    return {"mixed_near_singular": float(near[mixed].mean()) if mixed.any() else float("nan"),
            "near_singular": float(near.mean()), "near_singular_delta": delta}


def _bar(progress: bool, total: int):
    """A Rich progress bar over (model, seed) jobs, or a no-op."""
    if not progress:
        class _Nop:
            def __enter__(self):
                return lambda msg: None

            def __exit__(self, *a):
                return False
        return _Nop()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class _B:
        def __enter__(self):
            self.p = Progress(TextColumn("[bold]compare"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[msg]}"), TimeElapsedColumn())
            self.p.__enter__()
            self.t = self.p.add_task("compare", total=total, msg="")
            self.started = False

            def step(msg: str) -> None:
                if self.started:
                    self.p.advance(self.t)
                self.started = True
                self.p.update(self.t, msg=msg)
            return step

        def __exit__(self, *a):
            self.p.advance(self.t)
            self.p.__exit__(*a)
            return False
    return _B()


# ------------------------------------------------------------------ 2-D toy data
def _compare_toy(data, models, seeds, n_train, n_heldout, n_samples, device, progress, params):
    from .datasets import toy
    from .metrics import toy_metrics

    runs, infos, shown, losses = [], {}, {}, {}
    with _bar(progress, len(models) * len(seeds)) as step:
        for s in seeds:
            train = toy(data, n_train, seed=s)
            held = toy(data, n_heldout, seed=10_000 + s)
            trained: dict[str, Any] = {}
            for name in models:
                step(f"{name} seed {s}")
                model = _reuse_fit(name, s, trained, params)
                reused = model is not None
                model = model if reused else _make(name, s, device, False, params)
                samples, times = _fit_sample(model, train.points, n_samples, s, fitted=reused)
                times.pop("sources")
                trained[name] = model
                row = {"model": name, "seed": s, **toy_metrics(samples, train, train.points, held.points, seed=s), **times}
                runs.append(row)
                infos.setdefault(name, []).append(model.info())
                if s == seeds[0]:
                    shown[name] = samples
                if hasattr(model, "loss_curve_") and not reused:
                    losses.setdefault(name, {})[s] = model.loss_curve_
    ref = toy(data, n_train, seed=seeds[0])
    return runs, infos, {"samples": shown, "support": ref, "losses": losses}


# ------------------------------------------------------------------ images
def _stratified_split(y: np.ndarray | None, n: int, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if y is None:
        perm = rng.permutation(n)
        k = max(1, int(round(frac * n)))
        return np.sort(perm[k:]), np.sort(perm[:k])
    held = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        held.extend(rng.choice(idx, max(1, int(round(frac * len(idx)))), replace=False))
    held = np.sort(np.array(held))
    return np.setdiff1d(np.arange(n), held), held


def _fit_aeot(X: np.ndarray, seed: int, device: str, progress: bool, aeot_params: dict[str, Any]):
    from .pipeline import AEOT

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
        return AEOT(seed=seed, device=device, **aeot_params).fit(X, **({"progress": progress} if progress else {}))


def _decode(aeot, codes: np.ndarray) -> np.ndarray:
    import torch

    z = aeot.denormalise(codes) if hasattr(aeot, "denormalise") else codes
    z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
    with torch.no_grad():
        imgs = aeot.decode(z)
    imgs = imgs.detach().cpu().numpy() if hasattr(imgs, "detach") else np.asarray(imgs)
    return imgs.astype(np.float64)


def _compare_images(data, models, seeds, n_samples, device, progress, params, aeot_params, out, given=None, images=None):
    from .datasets import load
    from .metrics import FeatureClassifier, image_metrics, novelty

    X, y = load(data) if images is None else images
    if y is None:
        raise ValueError(f"data: {data!r} has no labels; image metrics need a labelled data set")
    if data == "mnist" and images is None:
        # MNIST has its own held-out set: all 60,000 training images train, the 10,000 test
        # images (never seen by the autoencoder, the codes or the judge) are the reference
        Xte, yte = load("mnist-test")
        X, y = np.concatenate([X, Xte]), np.concatenate([y, yte])
        tr, ho = np.arange(len(X) - len(Xte)), np.arange(len(X) - len(Xte), len(X))
    else:
        tr, ho = _stratified_split(y, len(X), 0.2, 0)
    Xtr, Xho = X[tr], X[ho]
    ftr, fho = Xtr.reshape(len(Xtr), -1).astype(np.float64), Xho.reshape(len(Xho), -1).astype(np.float64)
    clf = FeatureClassifier(seed=0).fit(ftr, y[tr])
    clf_info = {"train_accuracy": clf.train_accuracy_, "heldout_accuracy": clf.accuracy(fho, y[ho]),
                "hidden": list(clf.hidden), "n_iter": clf.n_iter_}
    if out is not None:
        clf.save(Path(out) / "classifier")
    runs, infos, shown, losses = [], {}, {}, {}
    runs.append({"model": "real (held-out)", "seed": 0, **image_metrics(fho, clf, ftr, fho, y[tr])})
    with _bar(progress, (len(models) + 1) * len(seeds)) as step:
        for s in seeds:
            step(f"AEOT seed {s}")
            t0 = time.perf_counter()
            aeot = given if given is not None else _fit_aeot(Xtr, s, device, False, aeot_params)
            aeot_time = time.perf_counter() - t0
            codes = np.asarray(aeot.codes_.detach().cpu().numpy() if hasattr(aeot.codes_, "detach") else aeot.codes_,
                               dtype=np.float64)
            trained: dict[str, Any] = {}
            for name in models:
                step(f"{name} seed {s}")
                p = dict(params)
                if name in ("ot", "ot-ignore", "sdfm", "fm"):
                    # the AEOT's own map (fitted once, on these codes): ot/ot-ignore sample it, sdfm
                    # learns its coupling, fm shares its source frame (so both are measured against S)
                    p[name] = {**p.get(name, {}), "ot": aeot.ot_}
                model = _reuse_fit(name, s, trained, params)
                reused = model is not None
                model = model if reused else _make(name, s, device, False, p)
                z, times = _fit_sample(model, codes, n_samples, s, fitted=reused)
                trained[name] = model
                if name in ("ot", "ot-ignore"):
                    times["fit_time_s"] = float(getattr(aeot.ot_, "fit_time_", times["fit_time_s"]))
                imgs = _decode(aeot, z)
                flat = imgs.reshape(len(imgs), -1)
                m = image_metrics(flat, clf, ftr, fho, y[tr])
                m["novelty"] = novelty(z, codes)
                src = times.pop("sources")
                if src is not None:
                    mixed = clf.predict_proba(flat).max(axis=1) < 0.5  # mode_mixture_rate's rule
                    m.update(mixture_origins(aeot.ot_, src, mixed, seed=s))
                runs.append({"model": name, "seed": s, **m, **times})
                info = model.info()
                info["aeot_fit_time_s"] = round(aeot_time, 2)
                infos.setdefault(name, []).append(info)
                if s == seeds[0]:
                    shown[name] = imgs[:100]
                if hasattr(model, "loss_curve_") and not reused:
                    losses.setdefault(name, {})[s] = model.loss_curve_
    return runs, infos, {"images": shown, "losses": losses, "classifier": clf_info, "real": Xho[:100]}


# ------------------------------------------------------------------ figures
def _savez(tmp: str, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a path
        np.savez_compressed(f, **arrays)


def _savefig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight"))
    plt.close(fig)
    return path


def _scatter_panel(samples: dict[str, np.ndarray], support, runs, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(samples)
    cols = min(3, len(names) + 1)
    rows = math.ceil((len(names) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 4.0 * rows), squeeze=False)
    pts = support.points
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.25 * (hi - lo)
    panels = [("data (train)", pts)] + [(n, samples[n]) for n in names]
    for ax, (title, s) in zip(axes.ravel(), panels):
        for ring in support.outline():
            ax.plot(ring[:, 0], ring[:, 1], color="black", lw=0.8)
        off = support.component(s) < 0
        ax.scatter(s[~off, 0], s[~off, 1], s=2, color="tab:blue", alpha=0.5, linewidths=0)
        ax.scatter(s[off, 0], s[off, 1], s=4, color="tab:red", alpha=0.8, linewidths=0)
        ax.set_title(f"{title}: {100 * off.mean():.1f}% off support", fontsize=10)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{support.name}: {len(next(iter(samples.values())))} samples per model (seed 0); "
                 "black = support outline, red = off support", fontsize=11)
    return _savefig(fig, path)


def _image_grids(images: dict[str, np.ndarray], real: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("real (held-out)", real)] + list(images.items())
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.5 * rows), squeeze=False)
    for ax, (title, imgs) in zip(axes.ravel(), panels):
        imgs = np.asarray(imgs)[:100]
        k = int(math.ceil(math.sqrt(len(imgs))))
        c, h, w = imgs.shape[1:]
        grid = np.full((k * (h + 1) - 1, k * (w + 1) - 1), 0.25)  # light grey gaps between images
        for i, im in enumerate(imgs):
            r, q = divmod(i, k)
            grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = im.mean(axis=0)
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    return _savefig(fig, path)


def _loss_plot(losses: dict[str, dict[int, list]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for name, per_seed in losses.items():
        for s, curve in per_seed.items():
            c = np.asarray(curve, dtype=np.float64)
            ax.plot(c[:, 0], c[:, 1], lw=1.0, label=f"{name} seed {s}")
    ax.set_xlabel("training step")
    ax.set_ylabel("ε-prediction MSE (mean over 50 steps)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _savefig(fig, path)


# ------------------------------------------------------------------ entry point
def compare(
    data: str,
    *,
    models: Sequence[str] | str | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    out: str | Path | None = None,
    n_train: int = 2000,
    n_heldout: int = 2000,
    n_samples: int = 2000,
    device: str = "auto",
    progress: bool = True,
    params: dict[str, dict[str, Any]] | None = None,
    aeot_params: dict[str, Any] | None = None,
    aeot: Any = None,
    images: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Fit every model in ``models`` to the same codes for each seed and score its samples.

    data : a toy name (``brenier.datasets.TOY_NAMES``: 2-D, exact ground truth) or an image data
        set for ``brenier.datasets.load`` (``"digits"``).
    n_train, n_heldout : toy data only: training and held-out points per seed.
    models : registry names (default ``DEFAULT_MODELS``; for ``"mnist"`` ``MNIST_MODELS``, with the
        diffusion model trained to convergence unless ``params["ddpm"]`` says otherwise).
    n_samples : generated samples per (model, seed) (images: decoded images).
    params : per-model constructor overrides, e.g. ``{"ddpm": {"steps": 2000}}``; defaults for the
        diffusion model: ``DDPM_TOY`` / ``DDPM_IMAGES``.
    aeot_params : images only: keyword arguments for ``AEOT`` (e.g. ``latent_dim``).
    aeot : images only: an already fitted ``AEOT`` whose codes, OT map and decoder every seed
        reuses (no autoencoder is trained; ``brenier demo`` compares on its own model). It was
        then trained on the held-out images too, which only makes its own scores kinder.
    images : images only: (X (n, C, H, W), y (n,) int labels) instead of ``load(data)``.

    Returns {"data", "kind", "models", "seeds", "runs" (one row per model and seed), "summary"
    (mean/std per model and metric), "settings" (each model's ``info()`` per seed), "table"
    (Markdown), "time_s", "files"}.
    """
    from .datasets import TOY_NAMES

    if not isinstance(data, str) or not data:
        raise ValueError(f"data: expected a data set name, got {data!r}")
    full_mnist = data == "mnist" and models is None
    models = _check_models(MNIST_MODELS if full_mnist else DEFAULT_MODELS if models is None else models)
    seeds = _check_seeds(seeds)
    n_train, n_heldout, n_samples = (_check_count(n_train, "n_train", 10), _check_count(n_heldout, "n_heldout", 10),
                                     _check_count(n_samples, "n_samples", 10))
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params: expected a dict {{model: {{param: value}}}}, got {type(params).__name__}")
    kind = "toy" if data in TOY_NAMES else "images"
    params = {k: dict(v) for k, v in (params or {}).items()}
    for ddpm in ("ddpm", "ddim"):
        if full_mnist and not params.get(ddpm):  # the strongest fair baseline, not the quick one
            from .baselines.ddpm import converged_settings

            params[ddpm] = converged_settings(60_000, int((aeot_params or {}).get("latent_dim", 16)))
            continue
        params[ddpm] = {**(DDPM_TOY if kind == "toy" else DDPM_IMAGES), **params.get(ddpm, {})}
    outp = Path(out) if out is not None else None
    if outp is not None:
        outp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if kind == "toy":
        runs, infos, extra = _compare_toy(data, models, seeds, n_train, n_heldout, n_samples, device, progress, params)
        columns = TOY_COLUMNS
    else:
        if aeot is not None and not all(hasattr(aeot, a) for a in ("codes_", "ot_", "decode")):
            raise TypeError(f"aeot: expected a fitted brenier.pipeline.AEOT, got {type(aeot).__name__}")
        if images is not None:
            if not (isinstance(images, (tuple, list)) and len(images) == 2):
                raise TypeError("images: expected a pair (X, y)")
            images = (np.asarray(images[0]), None if images[1] is None else np.asarray(images[1]))
            if images[1] is not None and len(images[0]) != len(images[1]):
                raise ValueError(f"images: X has {len(images[0])} rows but y has {len(images[1])}")
        runs, infos, extra = _compare_images(data, models, seeds, n_samples, device, progress, params,
                                             dict(aeot_params or {}), outp, given=aeot, images=images)
        columns = IMAGE_COLUMNS
    summary = summarise(runs)
    order = [m for m in summary if m.startswith("real")] + models
    table = markdown_table(summary, columns, order)
    result: dict[str, Any] = {
        "data": data, "kind": kind, "models": models, "seeds": seeds, "n_samples": n_samples,
        "n_train": n_train if kind == "toy" else None, "runs": runs, "summary": summary,
        "settings": infos, "table": table, "time_s": round(time.perf_counter() - t0, 1), "files": {},
    }
    if kind == "images":
        result["classifier"] = extra["classifier"]
        result["aeot"] = ("one per seed, fitted on the training split" if aeot is None else
                          "given (fitted on MNIST's training images; the test images held out)" if data == "mnist" and images is None
                          else "given (fitted on all images)")
    if outp is not None:
        files = result["files"]
        if kind == "toy":
            files["samples"] = str(_scatter_panel(extra["samples"], extra["support"], runs, outp / "samples.png"))
        else:
            files["samples"] = str(_image_grids(extra["images"], extra["real"], outp / "samples.png"))
        shown = extra["samples"] if kind == "toy" else extra["images"]
        arrays = {k.replace("-", "_"): np.asarray(v, dtype=np.float32) for k, v in shown.items()}
        files["samples_npz"] = str(atomic_write(outp / "samples_seed0.npz", lambda tmp: _savez(tmp, arrays)))
        if extra["losses"]:
            files["ddpm_loss"] = str(_loss_plot(extra["losses"], outp / "ddpm_loss.png",
                                                f"{data}: diffusion training loss, per seed"))
        files["json"] = str(outp / "compare.json")
        files["md"] = str(outp / "compare.md")
        write_json(outp / "compare.json", result)
        atomic_write(outp / "compare.md", lambda tmp: Path(tmp).write_text(_markdown(result)))
    return result


def verdict(result: dict[str, Any], min_novelty: float = 0.95) -> str:
    """One sentence: which model has the lowest off-support (2-D) or mode-mixture (images) rate
    among those whose mean novelty is at least ``min_novelty``, and where ``ot`` stands."""
    key = "off_support" if result["kind"] == "toy" else "mode_mixture"
    s = {m: v for m, v in result["summary"].items() if not m.startswith("real")}
    ok = {m: v[key]["mean"] for m, v in s.items() if key in v and v.get("novelty", {}).get("mean", 0.0) >= min_novelty}
    if not ok:
        return f"No model reaches novelty ≥ {min_novelty:.2f}."
    best = min(ok.values())
    winners = sorted(m for m, v in ok.items() if v == best)
    txt = (f"Lowest {key.replace('_', '-')} rate among models with novelty ≥ {min_novelty:.2f}: "
           f"{', '.join(winners)} ({best:.4f}).")
    if "ot" in s:
        o = s["ot"]
        nov = o.get("novelty", {}).get("mean", float("nan"))
        if "ot" in winners:
            txt += " `ot` has it" + (" (tied)." if len(winners) > 1 else ".")
        elif "ot" not in ok:
            txt += f" `ot` is excluded: its novelty is {nov:.3f} < {min_novelty:.2f}."
        else:
            txt += f" `ot` does not: {o[key]['mean']:.4f} ± {o[key]['std']:.4f}."
    return txt


def render_markdown(out: str | Path) -> Path:
    """Rewrite ``out/compare.md`` (and ``ddpm_loss.png``, from the stored loss curves) from
    ``out/compare.json``."""
    out = Path(out)
    result = json.loads((out / "compare.json").read_text())
    for name in ("ddpm", "ddim"):
        curves = {i["seed"]: i["loss_curve"] for i in result["settings"].get(name, []) if i.get("loss_curve")}
        if curves:
            _loss_plot({name: curves}, out / "ddpm_loss.png", f"{result['data']}: diffusion training loss, per seed")
            break
    return atomic_write(out / "compare.md", lambda tmp: Path(tmp).write_text(_markdown(result)))


def _markdown(result: dict[str, Any]) -> str:
    k = len(result["seeds"])
    seeds = (f"{k} seeds ({', '.join(map(str, result['seeds']))}), mean ± std over seeds; " if k > 1
             else f"one seed ({result['seeds'][0]}); ")
    lines = [f"# brenier compare: {result['data']}", "",
             f"{seeds}{result['n_samples']} samples per model and seed; total time {result['time_s']} s.", "",
             result["table"], "", verdict(result), ""]
    if result.get("aeot", "").startswith("given (fitted on all"):
        lines += ["All models fit the codes of this run's autoencoder (trained on all images, the held-out "
                  "reference included).", ""]
    elif result.get("aeot", "").startswith("given"):
        lines += ["All models fit the codes of one `brenier fit` run (its autoencoder and OT map, shared by every "
                  "seed; the seeds vary the baselines' training and every model's samples). The autoencoder never "
                  "saw the held-out test images.", ""]
    if "classifier" in result:
        c = result["classifier"]
        lines += [f"Scoring classifier: MLP {c['hidden']}, train accuracy {c['train_accuracy']:.3f}, "
                  f"held-out accuracy {c['heldout_accuracy']:.3f}.", ""]
    captions = {"samples": ("Samples of every model (first seed): scatter panels with the support outlined, off-support "
                            "points in red" if result["kind"] == "toy" else
                            "100 decoded samples per model (first seed) beside held-out real images"),
                "ddpm_loss": "The diffusion model's training loss (ε-prediction MSE) per seed"}
    for f in ("samples", "ddpm_loss"):
        if f in result["files"]:
            lines.append(f"![{captions[f]}]({Path(result['files'][f]).name})")
    return "\n".join(lines) + "\n"
