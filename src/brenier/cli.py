"""The ``brenier`` command line: semi-discrete optimal transport from the shell.

Commands
--------
``brenier ot TARGETS --out DIR``   fit the OT map from a source measure onto the points in a
                                   .npy/.npz file and save the model, heights and a summary.
``brenier demo``                   the main job: fit AEOT (autoencoder + latent OT + boundary-aware
                                   sampler) on the bundled digits, sample, evaluate, write
                                   report.html + metrics.json + PNGs.
``brenier fit / sample / report``  the same in steps: fit and save a run, generate images from it,
                                   evaluate it and write its HTML report.

User errors (a missing or unreadable file, a wrong shape, NaN values, an impossible option)
are printed as one red line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import math
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__

app = typer.Typer(
    name="brenier",
    help="Geometric optimal-transport generative modelling: semi-discrete OT, Brenier potentials, power diagrams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: exit status of a user error (bad input file, bad option value): the same as click's usage errors
EXIT_USAGE = 2
#: exit status after Ctrl-C stopped a fit (the partial result is saved)
EXIT_INTERRUPTED = 130

_TARGET_KEYS = ("x", "targets")
_DEFAULT_WEIGHTS_KEY = "weights"


class SourceKind(str, Enum):
    ball = "ball"
    box = "box"
    gaussian = "gaussian"


class MethodKind(str, Enum):
    auto = "auto"
    newton = "newton"
    adam = "adam"
    exact = "exact"


class DeviceKind(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# ------------------------------------------------------------------ output helpers
def _out() -> Console:
    # Created per call so that the console follows sys.stdout (CliRunner swaps it).
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` in red on stderr (one line, no markup parsing) and exit."""
    _err().print(Text(f"error: {message}", style="bold red"), soft_wrap=True)
    raise typer.Exit(code)


def _warn(message: str) -> None:
    _err().print(Text(f"warning: {message}", style="yellow"), soft_wrap=True)


def _user_errors(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; turn the library's input errors into a red line and exit status 2."""
    try:
        return fn()
    except (ValueError, TypeError, FileNotFoundError) as exc:
        msg = str(exc) or type(exc).__name__
        if msg.startswith("checkpoint:"):
            msg += " — delete it, pick another --out, or pass --no-checkpoint"
        _fail(msg)


def _finite_or_none(x: Any) -> Any:
    """JSON has no NaN/inf: report them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


# ------------------------------------------------------------------ input loading
def load_targets(path: Path, weights_key: Optional[str] = None) -> tuple[np.ndarray, Optional[np.ndarray], str]:
    """Read targets (N, d) and optional weights (N,) from a .npy or .npz file.

    A .npz must hold the points under ``x`` or ``targets``; its weights are read from
    ``weights_key`` (default: ``weights`` when present, else uniform). Returns
    (targets, weights or None, a description of where the weights came from). Raises
    FileNotFoundError / ValueError with a one-line message naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a .npy or .npz file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; expected a .npy array (N, d) or a .npz archive with 'x' or 'targets'")

    weights = None
    weights_from = "uniform"
    if suffix == ".npy":
        if weights_key is not None:
            raise ValueError(f"{path}: --weights-key needs a .npz archive (a .npy file holds a single array)")
        x = _np_load(path)
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{path}: holds an .npz archive, not a single array; rename it to .npz")
    else:
        archive = _np_load(path)
        if not hasattr(archive, "files"):
            raise ValueError(f"{path}: is not a .npz archive (it holds a single array); rename it to .npy")
        with archive:
            keys = list(archive.files)
            key = next((k for k in _TARGET_KEYS if k in keys), None)
            if key is None:
                raise ValueError(f"{path}: no array named 'x' or 'targets' (found: {', '.join(keys) or 'none'})")
            x = _np_array(archive, key, path)
            wkey = weights_key if weights_key is not None else _DEFAULT_WEIGHTS_KEY
            if wkey in keys:
                weights = _np_array(archive, wkey, path)
                weights_from = f"{path.name}[{wkey}]"
            elif weights_key is not None:
                raise ValueError(f"{path}: no array named {weights_key!r} for the weights (found: {', '.join(keys)})")

    where = path.name if suffix == ".npy" else f"{path.name}[{key}]"
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{where}: expected an array of numbers, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise ValueError(f"{where}: expected real numbers, got a complex array")
    if x.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D array of shape (N, d), got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"{where}: the points have dimension 0 (shape {x.shape})")
    if x.shape[0] < 2:
        raise ValueError(f"{where}: need at least 2 points, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{where}: {bad} row(s) contain NaN or infinite values")
    if weights is not None:
        weights = _check_weights(weights, x.shape[0], weights_from)
    return x, weights, weights_from


def _np_load(path: Path):
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise ValueError(f"{path}: could not be read ({exc.strerror or exc})") from None
    if head[:2] == b"PK":
        pass  # a zip archive: np.load returns an NpzFile
    elif head != b"\x93NUMPY":
        kind = "empty" if not head else "not a NumPy file (no .npy header)"
        raise ValueError(f"{path}: could not be read as a NumPy array: the file is {kind}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(f"{path}: holds pickled Python objects, not a numeric array (refusing to unpickle)") from None
        raise ValueError(f"{path}: could not be read as a NumPy file ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError, ...
        raise ValueError(f"{path}: could not be read as a NumPy file ({type(exc).__name__}: {exc})") from None


def _np_array(archive, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(f"{path}[{key}]: holds pickled Python objects, not a numeric array") from None
        raise ValueError(f"{path}[{key}]: could not be read ({exc})") from None


def _check_weights(w: np.ndarray, n: int, where: str) -> np.ndarray:
    if w.dtype == object or not np.issubdtype(w.dtype, np.number) or np.iscomplexobj(w):
        raise ValueError(f"{where}: expected weights as real numbers, got dtype {w.dtype}")
    w = w.astype(np.float64).reshape(-1) if w.ndim == 2 and 1 in w.shape else w.astype(np.float64)
    if w.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D array of {n} weights, got shape {w.shape}")
    if w.shape[0] != n:
        raise ValueError(f"{where}: expected {n} weights (one per target), got {w.shape[0]}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{where}: {int((~np.isfinite(w)).sum())} weight(s) are NaN or infinite")
    if np.any(w < 0):
        raise ValueError(f"{where}: {int((w < 0).sum())} negative weight(s); weights must be positive")
    if np.any(w == 0):
        raise ValueError(f"{where}: {int((w == 0).sum())} zero weight(s); drop those targets instead")
    return w


def _make_source(kind: SourceKind, d: int):
    from .sources import Gaussian, UniformBall, UniformBox

    return {SourceKind.ball: UniformBall, SourceKind.box: UniformBox, SourceKind.gaussian: Gaussian}[kind](d)


def _describe_source(kind: SourceKind, d: int) -> str:
    return {
        SourceKind.ball: f"uniform unit ball in R^{d}",
        SourceKind.box: f"uniform box [-1, 1]^{d}",
        SourceKind.gaussian: f"standard Gaussian in R^{d}",
    }[kind]


def _summary(ot, **extra: Any) -> dict[str, Any]:
    n, d = (int(s) for s in ot.targets_.shape)
    out = {
        "N": n,
        "d": d,
        "n_unique": int(len(ot._unique_targets)),
        "source": ot.source_.to_dict(),
        "method": ot.method_,
        "tol": ot.tol_,
        "device": str(ot.device_),
        "seed": ot.seed,
        "tv_error": _finite_or_none(float(ot.tv_error_)),
        "max_rel_error": _finite_or_none(float(ot.max_rel_error_)),
        "iterations": int(ot.n_iter_),
        "score_evaluations": int(ot.n_evaluations_),
        "time_s": round(float(ot.fit_time_), 4),
        "converged": bool(ot.converged_),
        "interrupted": bool(ot.interrupted_),
        "brenier_version": __version__,
    }
    out.update(extra)
    return out


def _fit(ot, x, weights, **kw):
    """``ot.fit`` with the library's warnings shown as yellow lines instead of Python warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # torch's notice about its own beta sparse tensors is noise for a CLI user
        warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
        _user_errors(lambda: ot.fit(x, weights, **kw))
    for w in caught:
        _warn(str(w.message))
    return ot


def _write_heights(path: Path, h: np.ndarray) -> None:
    from ._io import atomic_write

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a str path
            np.save(f, np.asarray(h, dtype=np.float64))

    atomic_write(path, _w)


def _prepare_out(out: Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        _fail(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"--out {out}: cannot create the directory ({exc.strerror or exc})")
    return out


def _table(title: str, rows: list[tuple[str, str | Text]]) -> Table:
    """A two-column key/value table; plain strings are shown verbatim (no markup parsing)."""
    t = Table(title=title, show_header=False, title_justify="left", title_style="bold", box=None, padding=(0, 2))
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column()
    for k, v in rows:
        t.add_row(k, v if isinstance(v, Text) else Text(str(v)))
    return t


def _status(summary: dict[str, Any]) -> Text:
    if summary["interrupted"]:
        return Text.from_markup("[yellow]interrupted[/yellow] (best iterate kept)")
    if summary["converged"]:
        return Text.from_markup("[green]yes[/green]")
    return Text.from_markup("[yellow]no[/yellow] (iteration or sample cap reached)")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"brenier {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", help="Show the version and exit.", callback=_version_callback, is_eager=True),
) -> None:
    """Geometric optimal-transport generative modelling: semi-discrete OT, Brenier potentials, power diagrams."""


# ------------------------------------------------------------------ brenier ot
@app.command("ot")
def ot_command(
    targets: Path = typer.Argument(..., metavar="TARGETS", help="A .npy array (N, d), or a .npz with 'x' or 'targets' (+ optional 'weights').", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Output directory (created if needed).", show_default=False, rich_help_panel="Input / output"),
    source: SourceKind = typer.Option(SourceKind.ball, "--source", help="Source measure: unit ball, box [-1, 1]^d, or standard Gaussian.", rich_help_panel="Solver"),
    method: MethodKind = typer.Option(MethodKind.auto, "--method", help="Monte Carlo 'newton' or 'adam' (any d); 'exact' (2-D ball/box).", rich_help_panel="Solver"),
    tol: Optional[float] = typer.Option(None, "--tol", help="Stop at this TV gap (newton/adam, default 0.02) or max relative mass error (exact, 1e-9).", show_default=False, rich_help_panel="Solver"),
    max_iter: Optional[int] = typer.Option(None, "--max-iter", min=1, help="Cap on solver iterations (default: the solver's own, 200 for newton, 50 for exact).", show_default=False, rich_help_panel="Solver"),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="Where the scores are computed (auto: CUDA if available).", rich_help_panel="Run"),
    seed: int = typer.Option(0, "--seed", help="Seed of every random draw.", rich_help_panel="Run"),
    weights_key: Optional[str] = typer.Option(None, "--weights-key", "-w", metavar="KEY", help="Weights array in a .npz (default: 'weights' if present, else uniform).", show_default=False, rich_help_panel="Input / output"),
    checkpoint: bool = typer.Option(True, "--checkpoint/--no-checkpoint", help="Keep DIR/checkpoint.pt so that an interrupted fit resumes when rerun.", rich_help_panel="Run"),
) -> None:
    """Fit the OT map from a source measure onto the points in a .npy/.npz."""
    from ._io import write_json
    from .ot import SemiDiscreteOT

    t_start = time.perf_counter()
    x, weights, weights_from = _user_errors(lambda: load_targets(targets, weights_key))
    if weights is not None and abs(float(weights.sum()) - 1.0) > 1e-6:
        _warn(f"{weights_from}: weights sum to {float(weights.sum()):.6g}; normalised to sum to 1")
        weights = weights / weights.sum()
    n, d = x.shape
    if tol is not None and not (math.isfinite(tol) and tol > 0):
        _fail(f"--tol: expected a positive number, got {tol}")
    if method is MethodKind.exact and (d != 2 or source is SourceKind.gaussian):
        _fail(f"--method exact: needs 2-D targets and a uniform source (--source ball or box); got d={d}, --source {source.value}")
    from ._array import resolve_device

    _user_errors(lambda: resolve_device(device.value))
    src = _user_errors(lambda: _make_source(source, d))
    out = _prepare_out(out)
    ckpt = out / "checkpoint.pt" if checkpoint else None

    con = _out()
    con.print(Text.assemble(("brenier ot", "bold"), f": {n:,} targets in dimension {d} from {targets} ← {_describe_source(source, d)}, method {method.value}"))
    model = SemiDiscreteOT(src, method=method.value, tol=tol, device=device.value, seed=seed, max_iter=max_iter)
    _fit(model, x, weights, checkpoint=ckpt, progress=True)

    summary = _summary(model, targets=str(targets), weights=weights_from)
    try:
        model.save(out)
        _write_heights(out / "heights.npy", model.heights_)
        write_json(out / "summary.json", summary)
    except OSError as exc:
        _fail(f"--out {out}: could not write the results ({exc})", code=1)
    if ckpt is not None and ckpt.exists() and not model.interrupted_:
        ckpt.unlink()  # the saved model holds the result; a stale checkpoint would block a new problem

    rows = [
        ("targets", f"{targets}  (N={n}, d={d}, weights: {weights_from})"),
        ("source", _describe_source(source, d)),
        ("method", f"{model.method_}  on {model.device_}"),
        ("converged", _status(summary)),
        ("TV error", _fmt(summary["tv_error"]) + ("" if model.method_ == "exact" else "  (debiased Monte Carlo estimate)")),
        ("max rel. error", _fmt(summary["max_rel_error"]) + ("" if model.method_ == "exact" else "  (raw estimate from the last batch, noisy)")),
        ("iterations", str(summary["iterations"])),
        ("score evaluations", "n/a (exact power diagram)" if model.method_ == "exact" else f"{summary['score_evaluations']:.3g}"),
        ("fit time", f"{summary['time_s']:.2f} s  (total {time.perf_counter() - t_start:.2f} s)"),
        ("saved", f"{out}/  ot.json, ot.safetensors, heights.npy, summary.json"),
    ]
    con.print(_table("Semi-discrete OT", rows))
    if model.interrupted_:
        _warn(f"the fit was interrupted; the best heights so far are saved. Rerun the same command to resume from {ckpt}" if ckpt else "the fit was interrupted; the best heights so far are saved")
        raise typer.Exit(EXIT_INTERRUPTED)


# ------------------------------------------------------------------ brenier demo / fit / sample / report
_RUN_FILE = "run.json"


def _set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _load_images(data: str, limit: Optional[int]):
    """(X, y) from a built-in name or a path; user errors and a missing optional package as one red line."""
    from .datasets import load

    try:
        return _user_errors(lambda: load(data, limit=limit))
    except ImportError as exc:
        _fail(str(exc))


def _fit_aeot(X, out: Path, *, latent_dim: int, epochs: int, seed: int, device: str, max_codes: Optional[int],
              ot_tol: float, checkpoint: bool, max_train_minutes: Optional[float]):
    """AEOT.fit with progress bars, checkpoints in OUT/checkpoints (resumed when rerun), library warnings as yellow lines."""
    import shutil

    from .pipeline import AEOT

    model = AEOT(latent_dim=latent_dim, epochs=epochs, seed=seed, device=device, max_codes=max_codes, ot_tol=ot_tol,
                 max_train_time=None if max_train_minutes is None else 60.0 * max_train_minutes)
    ckpt = out / "checkpoints" if checkpoint else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
        _user_errors(lambda: model.fit(X, checkpoint_dir=ckpt, progress=True))
    for w in caught:
        _warn(str(w.message))
    try:
        model.save(out)
    except OSError as exc:
        _fail(f"--out {out}: could not write the model ({exc})", code=1)
    if ckpt is not None and not model.ot_.interrupted_:
        shutil.rmtree(ckpt, ignore_errors=True)  # the saved model holds the result
    return model


def _fit_rows(model) -> list[tuple[str, str | Text]]:
    info = model.train_info_
    ss = model.singular_set_
    return [
        ("autoencoder", f"{info['kind']}, {info['epochs_run']} epochs (best {info['best_epoch']}), held-out BCE {info['best_val_loss']:.4f}"
                        + (", stopped early" if info["stopped_early"] else "")),
        ("latent OT", f"N={len(model.codes_):,} codes in d={model.latent_dim} ← uniform unit {model.source}, "
                      f"TV {_fmt(float(model.ot_.tv_error_))} after {model.ot_.n_iter_} Newton steps"),
        ("singular set", "n/a" if ss is None else f"{ss.n_modes} mode(s), {len(np.asarray(ss.facets))} singular facets"),
        ("fit time", ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in model.timings_.items())),
    ]


def _score_rows(m: dict[str, Any]) -> list[tuple[str, str | Text]]:
    rows: list[tuple[str, str | Text]] = []
    if "classifier" in m:
        rows.append(("judge", f"MLP classifier on real images, held-out accuracy {m['classifier']['held_out_accuracy']:.3f}"))
        for b in ("respect", "ignore"):
            s = m[b]
            ok = Text.from_markup("[green]passes[/green]" if s["passes_bar"] else "[yellow]misses[/yellow]")
            rows.append((f'boundary="{b}"', Text.assemble(
                f"{100 * s['confident_share']:.1f} % confident ≥ 0.9, classes {100 * s['min_class_share']:.1f}–{100 * s['max_class_share']:.1f} %, "
                f"NN distance {s['nn_distance_median']:.3g}: ", ok, " the bar (≥ 90 %, 5–15 %)")))
    else:
        for b in ("respect", "ignore"):
            rows.append((f'boundary="{b}"', f"median distance to nearest training image {m[b]['nn_distance_median']:.3g}"))
    return rows


def _evaluate_and_report(model, X, y, out: Path, n_samples: int, seed: int, data: str, compare_models: str = ""):
    from .report import build_report, evaluate_run

    con = _out()
    m = _user_errors(lambda: evaluate_run(model, X, y, out, n_samples=n_samples, seed=seed, data_name=data,
                                          log=lambda s: con.print(Text(f"  {s}", style="dim"))))
    if compare_models and y is None:
        con.print(Text("  comparison skipped: these images have no labels to score blends with", style="yellow"))
    elif compare_models:
        _demo_compare(model, X, y, out / "compare", compare_models, seed, data)
    html = _user_errors(lambda: build_report(out))
    return m, html


def _demo_compare(model, X, y, out: Path, models: str, seed: int, data: str) -> None:
    """The other generators fitted to this run's own codes (one seed), for the report's section 6."""
    from .compare import compare

    con = _out()
    t0 = time.perf_counter()
    con.print(Text(f"  comparing with {models.replace(',', ', ')} on the same codes (seed {seed}) ...", style="dim"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
        res = _user_errors(lambda: compare(data, models=models, seeds=[seed], out=out, aeot=model, images=(X, y),
                                           n_samples=1000, device=str(model.device_) if hasattr(model, "device_") else "auto",
                                           progress=False))
    s = res["summary"]
    parts = [f"{k} {s[k]['mode_mixture']['mean']:.3f}" for k in res["models"] if "mode_mixture" in s.get(k, {})]
    con.print(Text(f"  mode-mixture rate: {', '.join(parts)}  ({time.perf_counter() - t0:.0f} s)", style="dim"))


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output directory (model, report.html, metrics.json, PNGs)."),
    data: str = typer.Option("digits", "--data", help="Built-in data set (digits, mnist) or a .npz / image folder."),
    latent_dim: int = typer.Option(8, "--latent-dim", "-d", min=1, help="Latent dimension d (= the source's dimension); 8 suits the 8 × 8 digits."),
    epochs: int = typer.Option(300, "--epochs", min=1, help="Autoencoder epochs at most (early stopping on a held-out split)."),
    n_samples: int = typer.Option(1000, "--n-samples", "-n", min=100, help="Images generated per boundary rule for the scores."),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="Use only the first LIMIT images.", show_default=False),
    max_codes: Optional[int] = typer.Option(None, "--max-codes", min=2, help="Fit the OT map onto a random subset of this many codes.", show_default=False),
    ot_tol: float = typer.Option(0.02, "--ot-tol", min=1e-6, help="OT total-variation tolerance."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random draw."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="auto: CUDA if available."),
    threads: int = typer.Option(1, "--threads", min=0, help="CPU threads for torch (0: torch's default). The digits nets are tiny: 1 thread is as fast, and far faster on a busy machine."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Also fit the baselines (diffusion, GMM, Gaussian, OT without the singular-set rule) to the same codes and add the comparison to the report (about a minute)."),
    compare_models: str = typer.Option("ot,ot-ignore,ddpm,gmm,gaussian", "--compare-models", help="Models of the comparison."),
) -> None:
    """Built-in example, the main job: fit AEOT (autoencoder + latent OT) on digits, sample, evaluate, write report.html."""
    _set_threads(threads)
    _run_job(out, data, latent_dim, epochs, n_samples, limit, max_codes, ot_tol, seed, device, title="brenier demo",
             compare_models=compare_models if compare else "")


@app.command("fit")
def fit_command(
    data: str = typer.Option(..., "--data", help="Built-in data set (digits, mnist) or a .npz (x, y) / folder of PNG/JPEG images.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", metavar="RUN", help="Run directory (created if needed).", show_default=False),
    latent_dim: int = typer.Option(16, "--latent-dim", "-d", min=1, help="Latent dimension d (= the source's dimension)."),
    epochs: int = typer.Option(300, "--epochs", min=1, help="Autoencoder epochs at most (early stopping on a held-out split)."),
    max_train_minutes: Optional[float] = typer.Option(None, "--max-train-minutes", min=0.01, help="Stop autoencoder training after this long.", show_default=False),
    ot_tol: float = typer.Option(0.02, "--ot-tol", min=1e-6, help="OT total-variation tolerance."),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="Use only the first LIMIT images.", show_default=False),
    max_codes: Optional[int] = typer.Option(None, "--max-codes", min=2, help="Fit the OT map onto a random subset of this many codes.", show_default=False),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random draw."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="auto: CUDA if available."),
    checkpoint: bool = typer.Option(True, "--checkpoint/--no-checkpoint", help="Keep RUN/checkpoints so that an interrupted fit resumes when rerun."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for torch (0: torch's default; 1 is faster on a busy machine)."),
) -> None:
    """Fit AEOT on images and save the model in RUN (then: brenier sample RUN, brenier report RUN)."""
    from ._io import write_json

    _set_threads(threads)

    t0 = time.perf_counter()
    out = _prepare_out(out)
    X, y = _load_images(data, limit)
    con = _out()
    con.print(Text.assemble(("brenier fit", "bold"), f": AEOT on {data} ({len(X):,} images {tuple(X.shape[1:])}), latent d={latent_dim}"))
    model = _fit_aeot(X, out, latent_dim=latent_dim, epochs=epochs, seed=seed, device=device.value, max_codes=max_codes,
                      ot_tol=ot_tol, checkpoint=checkpoint, max_train_minutes=max_train_minutes)
    write_json(out / _RUN_FILE, {"data": data, "limit": limit, "n_images": int(len(X)), "brenier_version": __version__})
    rows = [("data", f"{data}: {len(X):,} images {tuple(X.shape[1:])}"), *_fit_rows(model),
            ("saved", f"{out}/  aeot.json, autoencoder.safetensors, ot/  (total {time.perf_counter() - t0:.1f} s)")]
    con.print(_table("AEOT fit", rows))


def _run_job(out, data, latent_dim, epochs, n_samples, limit, max_codes, ot_tol, seed, device, title, compare_models="") -> None:
    from ._io import write_json

    t0 = time.perf_counter()
    out = _prepare_out(out)
    X, y = _load_images(data, limit)
    con = _out()
    con.print(Text.assemble((title, "bold"), f": AEOT on {data} ({len(X):,} images {tuple(X.shape[1:])}), latent d={latent_dim}, seed {seed}"))
    model = _fit_aeot(X, out, latent_dim=latent_dim, epochs=epochs, seed=seed, device=device.value, max_codes=max_codes,
                      ot_tol=ot_tol, checkpoint=True, max_train_minutes=None)
    write_json(out / _RUN_FILE, {"data": data, "limit": limit, "n_images": int(len(X)), "brenier_version": __version__})
    m, html = _evaluate_and_report(model, X, y, out, n_samples, seed, data, compare_models)
    total = time.perf_counter() - t0
    rows = [("data", f"{data}: {len(X):,} images {tuple(X.shape[1:])}"), *_fit_rows(model), *_score_rows(m),
            ("time", f"total {total:.1f} s"),
            ("saved", f"{out}/  report.html, metrics.json, training_curves.png, latent_pca.png, samples.png, neighbours.png, model" + (", compare/" if compare_models else ""))]
    con.print(_table("AEOT demo" if title == "brenier demo" else "AEOT", rows))
    con.print(Text.assemble("open ", (str(html), "bold"), " in a browser"))


@app.command("sample")
def sample_command(
    run: Path = typer.Argument(..., metavar="RUN", help="A run directory written by brenier fit / demo.", show_default=False),
    n: int = typer.Option(64, "-n", "--n", min=1, help="Number of images."),
    out: Path = typer.Option(Path("samples.png"), "--out", "-o", help="PNG grid of the images."),
    npz: Optional[Path] = typer.Option(None, "--npz", help="Also write the images (x) and normalised codes (codes) to this .npz.", show_default=False),
    boundary: str = typer.Option("respect", "--boundary", help="respect: never interpolate across the singular set; ignore: do."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the source sample."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="auto: CUDA if available."),
) -> None:
    """Generate N images from a fitted run: a PNG grid (and optionally an .npz)."""
    from ._io import atomic_write
    from .pipeline import AEOT
    from .report import save_grid

    if boundary not in ("respect", "ignore"):
        _fail(f"--boundary: expected 'respect' or 'ignore', got {boundary!r}")
    if out.suffix.lower() != ".png":
        _fail(f"--out {out}: expected a .png file name")
    if npz is not None and npz.suffix.lower() != ".npz":
        _fail(f"--npz {npz}: expected a .npz file name")
    t0 = time.perf_counter()
    model = _user_errors(lambda: AEOT.load(run, device=device.value))
    imgs, codes = _user_errors(lambda: model.sample(n, seed=seed, boundary=boundary, return_codes=True))
    imgs, codes = np.asarray(imgs), np.asarray(codes)
    try:
        save_grid(imgs, out)
        if npz is not None:
            def _w(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, x=imgs, codes=codes)

            atomic_write(npz, _w)
    except OSError as exc:
        _fail(f"could not write the output ({exc})", code=1)
    _out().print(_table("AEOT samples", [
        ("run", str(run)), ("images", f"{n} × {tuple(imgs.shape[1:])}, boundary={boundary}, seed {seed}"),
        ("saved", f"{out}" + (f", {npz}" if npz is not None else "")), ("time", f"{time.perf_counter() - t0:.1f} s")]))


@app.command("report")
def report_command(
    run: Path = typer.Argument(..., metavar="RUN", help="A run directory written by brenier fit / demo.", show_default=False),
    n_samples: int = typer.Option(1000, "--n-samples", "-n", min=100, help="Images generated per boundary rule for the scores."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the samples and the judge."),
    evaluate: Optional[bool] = typer.Option(None, "--evaluate/--html-only", help="Re-run the evaluation (default: only when RUN has no metrics.json).", show_default=False),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="auto: CUDA if available."),
) -> None:
    """Evaluate a fitted run (samples, classifier scores, figures) and write RUN/report.html."""
    import json

    from .pipeline import AEOT
    from .report import build_report

    if not run.is_dir():
        _fail(f"RUN {run}: no such directory")
    t0 = time.perf_counter()
    if evaluate is None:
        evaluate = not (run / "metrics.json").is_file()
    con = _out()
    if evaluate:
        if not (run / _RUN_FILE).is_file():
            _fail(f"RUN {run}: no {_RUN_FILE} (which data the model was fit on); fit it with brenier fit")
        info = json.loads((run / _RUN_FILE).read_text())
        model = _user_errors(lambda: AEOT.load(run, device=device.value))
        X, y = _load_images(info["data"], info.get("limit"))
        m, html = _evaluate_and_report(model, X, y, run, n_samples, seed, info["data"])
        rows = _score_rows(m)
    else:
        html = _user_errors(lambda: build_report(run))
        rows = []
    con.print(_table("AEOT report", [*rows, ("report", str(html)), ("time", f"{time.perf_counter() - t0:.1f} s")]))


# ------------------------------------------------------------------ brenier dimension
def _dimension_data(data: str, n: int, count: int, seed: int, limit: Optional[int]) -> tuple[np.ndarray, Optional[int], str]:
    """(X (N, ...), the true dimension or None, a description) for ``brenier dimension --data``."""
    from .datasets import IMAGE_NAMES, load
    from .datasets.laplace import laplace

    if data == "laplace":
        X, true_dim = laplace(n, count, seed)
        return X, true_dim, f"laplace: {count} solutions on a {n}×{n} grid (seed {seed})"
    path = Path(data)
    if data not in IMAGE_NAMES and path.is_dir() and (path / "aeot.json").exists():
        from .pipeline import AEOT

        codes = np.asarray(AEOT.load(path, device="cpu").codes_)  # a saved AEOT run: its (normalised) latent codes
        codes = codes[:limit] if limit else codes
        return codes, None, f"latent codes of the run {path} ({codes.shape[0]} codes)"
    if data not in IMAGE_NAMES and path.is_dir() and (path / "codes.npy").exists():
        path = path / "codes.npy"  # a folder with saved codes
    if data not in IMAGE_NAMES and path.suffix.lower() == ".npy":
        if not path.exists():
            raise FileNotFoundError(f"--data {data}: no such file")
        X = np.asarray(_np_load(path))
        if X.ndim < 2:
            raise ValueError(f"--data {data}: expected an array (N, ...) of points, got shape {X.shape}")
        X = X[:limit] if limit else X
        return X, None, f"{path} ({X.shape[0]} points)"
    if data not in IMAGE_NAMES and not path.exists():
        raise ValueError(f"--data {data}: expected 'laplace', one of {', '.join(IMAGE_NAMES)}, a .npy/.npz file, an image folder or a saved AEOT run folder")
    X, _ = load(data, limit=limit)
    return X, None, f"{data} ({X.shape[0]} images {'×'.join(map(str, X.shape[1:]))})"


@app.command("dimension")
def dimension_command(
    data: str = typer.Option("laplace", "--data", "-d", help="'laplace', 'digits', 'mnist', a .npy/.npz file, an image folder, or a saved AEOT run (its latent codes)."),
    n: int = typer.Option(16, "--n", min=2, help="Grid size of the laplace data (n × n)."),
    count: int = typer.Option(2000, "--count", min=2, help="Number of laplace fields."),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="Use only the first LIMIT images / points.", show_default=False),
    variance: Optional[float] = typer.Option(None, "--variance", help="PCA: count the components holding this share of the variance (default: numerical rank).", show_default=False),
    max_points: int = typer.Option(5000, "--max-points", min=3, help="Neighbour estimators: use a random subset of this many points."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data and of the subset."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="Where neighbour distances are computed."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the estimates to this JSON file.", show_default=False),
) -> None:
    """Intrinsic dimension: PCA spectrum, TwoNN and Levina–Bickel MLE (with the truth for laplace)."""
    from ._io import write_json
    from .manifold import intrinsic_dimension

    if variance is not None and not (0 < variance <= 1):
        _fail(f"--variance: expected a share in (0, 1], got {variance}")
    t0 = time.perf_counter()
    X, true_dim, what = _user_errors(lambda: _dimension_data(data, n, count, seed, limit))
    est = {}
    for m in ("pca", "twonn", "mle"):
        est[m] = _user_errors(lambda: intrinsic_dimension(X, m, variance=variance, max_points=max_points, seed=seed, device=device.value))
    pca = est["pca"]
    shares = pca.details["components_for_share"]
    def _off(v: float) -> str:
        return "" if true_dim is None else f"   (error {v - true_dim:+.1f}, {100 * (v - true_dim) / true_dim:+.0f} %)"
    rows = [
        ("data", what),
        ("ambient dimension", str(pca.ambient_dim)),
        ("PCA " + ("rank" if variance is None else f"{variance:g} of variance"), f"{int(pca.dimension)}{_off(pca.dimension)}"),
        ("PCA 90/95/99 %", f"{shares[0.9]} / {shares[0.95]} / {shares[0.99]} components"),
        ("TwoNN", f"{est['twonn'].dimension:.2f}{_off(est['twonn'].dimension)}   on {est['twonn'].n_points} points"),
        ("MLE (k=10..20)", f"{est['mle'].dimension:.2f}{_off(est['mle'].dimension)}   on {est['mle'].n_points} points"),
    ]
    if true_dim is not None:
        rows.insert(2, ("true dimension", f"{true_dim}  (boundary values: 4n - 4)"))
    rows.append(("time", f"{time.perf_counter() - t0:.2f} s"))
    _out().print(_table("Intrinsic dimension", rows))
    if json_out is not None:
        summary = {
            "data": what, "ambient_dim": pca.ambient_dim, "n_points": pca.n_points, "true_dim": true_dim,
            "pca": int(pca.dimension), "pca_components_for_share": {str(k): v for k, v in shares.items()},
            "twonn": est["twonn"].dimension, "mle": est["mle"].dimension, "seed": seed,
        }
        try:
            write_json(json_out, summary)
        except OSError as exc:
            _fail(f"--json {json_out}: could not write ({exc})", code=1)


@app.command("compare")
def compare_command(
    data: str = typer.Option("ring8", "--data", "-d", help="A 2-D toy set (ring8, grid25, moons, ...) or an image set (digits)."),
    models: str = typer.Option("ot,ot-ignore,ddpm,gmm,gaussian", "--models", "-m", help="Comma-separated models (also: ddim)."),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o", help="Output directory: compare.json, compare.md, PNGs."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Number of seeds (0, 1, ..., SEEDS-1)."),
    n_samples: int = typer.Option(2000, "--n-samples", min=10, help="Generated samples per model and seed (images: 1000 is plenty)."),
    n_train: int = typer.Option(2000, "--n-train", min=10, help="2-D toy data: training points per seed."),
    ddpm_steps: Optional[int] = typer.Option(None, "--ddpm-steps", min=1, help="Training steps of the diffusion model (default 5000 on 2-D data, 4000 on images).", show_default=False),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="Where torch computes (auto: CUDA if available)."),
    threads: int = typer.Option(1, "--threads", min=0, help="torch CPU threads (0: torch's default). The networks are small: on a busy machine a second thread mostly spins."),
) -> None:
    """Fit OT and the baselines to the same codes; score off-support / mode mixture, coverage, fidelity, novelty."""
    from .compare import IMAGE_COLUMNS, TOY_COLUMNS, compare

    _set_threads(threads)
    out = _prepare_out(out)
    params = {m: {"steps": ddpm_steps} for m in ("ddpm", "ddim")} if ddpm_steps else None
    res = _user_errors(lambda: compare(data, models=models, seeds=list(range(seeds)), out=out, n_train=n_train,
                                       n_samples=n_samples, device=device.value, progress=True, params=params))
    # the main columns, mean over seeds (compare.md has them all, with ± std)
    keys = ("off_support", "modes_hit", "mode_kl", "novelty", "energy") if res["kind"] == "toy" else \
        ("mode_mixture", "confident", "class_kl", "frechet", "coverage", "novelty")
    cols = [c for c in (TOY_COLUMNS if res["kind"] == "toy" else IMAGE_COLUMNS) if c[0] in keys]
    table = Table(title=f"brenier compare: {data} (mean over {seeds} seed{'s' * (seeds > 1)})", title_justify="left")
    table.add_column("model", style="bold cyan", no_wrap=True)
    for _, head, _, _ in cols:
        table.add_column(head, justify="right")
    for m, row in res["summary"].items():
        table.add_row(m, *[Text("–" if k not in row else f"{row[k]['mean']:{f}}") for k, _, f, _ in cols])
    con = _out()
    con.print(table)
    con.print(f"wrote {', '.join(Path(p).name for p in res['files'].values())} to {out}  ({res['time_s']:.0f} s)")


# ------------------------------------------------------------------ brenier critical
class ProcessKind(str, Enum):
    occlusion = "occlusion"
    glass = "glass"
    tipping = "tipping"


def _process(kind: ProcessKind, n: int, seed: int):
    from .datasets.scenes import occlusion_scenes, tilting_glass, tipping_glass

    if kind is ProcessKind.occlusion:
        s = occlusion_scenes(n, 32, seed=seed)
        return s, s.count
    s = (tilting_glass if kind is ProcessKind.glass else tipping_glass)(n, 48, seed=seed)
    return s, s.state


@app.command("critical")
def critical_command(
    data: ProcessKind = typer.Option(ProcessKind.occlusion, "--data", "-d", help="The process: occluding discs, a glass tilting past its spill angle, or a glass pushed over (tipping)."),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Output directory (created if needed).", show_default=False),
    model_dir: Optional[Path] = typer.Option(None, "--model", metavar="RUN", help="Reuse a saved AEOT (default: fit one on the stable frames and save it in DIR/model).", show_default=False),
    train: int = typer.Option(80, "--train", min=2, help="Training trajectories (only their stable frames are used)."),
    latent: Optional[int] = typer.Option(None, "--latent", min=1, help="Latent dimension of a new model. Default 8; 3 for tipping (its frames have intrinsic dimension about 2.2-2.7, and the OT solver is much faster near it).", show_default=False),
    epochs: int = typer.Option(40, "--epochs", min=1, help="Autoencoder epochs of a new model."),
    max_train_time: float = typer.Option(150.0, "--max-train-time", help="Cap on the autoencoder's training time (s)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Score above which a frame is critical. Default 1.0 with --scale local (distance to the nearest stable code / the local 8-NN radius there), 3.0 with --scale global (/ the median neighbour distance).", show_default=False),
    scale: str = typer.Option("local", "--scale", help="local: distances in units of the local density of the stable codes; global: one unit for all."),
    diffusion_steps: int = typer.Option(2000, "--diffusion-steps", min=1, help="Training steps of the DDPM whose latent interpolation is shown beside the walk."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data, the model and the walk."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="Where the model computes."),
) -> None:
    """Critical frames of a process: fit AEOT on its stable frames, find where held-out paths cross the singular set."""
    from ._array import first_unique_rows
    from ._io import write_json
    from .critical import critical_codes, match_events, mode_of, plot_filmstrip, plot_paths, plot_scores, step_size_frames
    from .datasets.scenes import count_discs
    from .pipeline import AEOT

    if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
        _fail(f"--threshold: expected a positive number, got {threshold}")
    if scale not in ("local", "global"):
        _fail(f"--scale: expected local or global, got {scale!r}")
    latent = latent or (3 if data is ProcessKind.tipping else 8)
    t0 = time.perf_counter()
    out = _prepare_out(out)
    con = _out()
    tr, truth = _process(data, train, 3 * seed + 1)
    te, state = _process(data, 6, 3 * seed + 2)
    stable, stable_truth = tr.stable_frames(), truth[~tr.critical]
    # identical stable frames (the glass once its puddle has stopped spreading) are one state:
    # fitted once, as in benchmarks/critical.py (the OT would merge their codes anyway)
    first = first_unique_rows(stable)
    n_stable, stable, stable_truth = len(stable), stable[first], stable_truth[first]
    if model_dir is not None:
        model = _user_errors(lambda: AEOT.load(model_dir, device=device.value))
        if tuple(model.image_shape_) != tuple(stable.shape[1:]):
            _fail(f"--model {model_dir}: fitted on images of shape {tuple(model.image_shape_)}, but --data {data.value} "
                  f"frames are {tuple(stable.shape[1:])} (a run fitted on other data)")
        con.print(Text(f"brenier critical: reusing the model in {model_dir} (latent dimension {model.latent_dim})"))
    else:
        con.print(Text.assemble(("brenier critical", "bold"), f": fitting AEOT (latent {latent}) on the {len(stable):,} distinct stable frames "
                                f"({n_stable:,} in all) of {train} {data.value} trajectories"))
        model = AEOT(latent, device=device.value, seed=seed, epochs=epochs, patience=8, max_train_time=max_train_time,
                     ae_options={"channels": (16, 32), "hidden": 128})
        _user_errors(lambda: model.fit(stable, progress=True))
        model.save(out / "model")
    fit_s = time.perf_counter() - t0

    T, F = te.frames.shape[:2]
    z = np.asarray(model.encode(te.frames.reshape(T * F, *te.frames.shape[2:]))).reshape(T, F, -1)
    results = [_user_errors(lambda zz=zz: critical_codes(model, zz, threshold=threshold, scale=scale)) for zz in z]
    threshold = float(results[0].threshold)  # the default of the scale when none was given
    tot = {"tp": 0, "n_detected": 0, "events_hit": 0, "n_events": 0}
    alt = dict(tot)
    for r, zz, crit in zip(results, z, te.critical):
        for k, v in match_events(r.indices, crit).items():
            if k in tot:
                tot[k] += v
        for k, v in match_events(step_size_frames(r.codes, 1.5)[0], crit).items():
            if k in alt:
                alt[k] += v
    def _pr(m):
        return (m["tp"] / m["n_detected"] if m["n_detected"] else 1.0, m["events_hit"] / m["n_events"] if m["n_events"] else 1.0)
    prec, rec = _pr(tot)
    aprec, arec = _pr(alt)
    r0 = results[0]
    plot_filmstrip(out / "filmstrip.png", te.frames[0], r0, te.critical[0],
                   title=f"held-out {data.value} trajectory — red: reported critical (score > {threshold:g} or mode change); orange: ground truth")
    plot_scores(out / "score.png", r0, te.critical[0], 1.5, title=f"critical-frame score along held-out trajectory 0 ({data.value})")

    # a generated path that stays in one mode (reflect_walk in the source, mapped by the OT map) beside a
    # straight latent interpolation between two modes
    from .sampling import reflect_walk

    ot = model.ot_
    S = model.singular_set_ or ot.singular_set()
    n_frames = 16
    xs = np.asarray(reflect_walk(ot, n_frames - 1, 0.5, seed=seed))
    y_walk = np.asarray(ot.transport(xs))
    labels = lambda y: mode_of(model, y)[0]  # the modes critical_frames uses
    m_walk = labels(y_walk)
    codes = np.asarray(model.codes_)
    modes = labels(codes)
    a = int(np.flatnonzero(modes == m_walk[0])[0])
    others = np.flatnonzero(modes != m_walk[0])
    if model_dir is None:
        # a model fitted here: its codes are these stable frames, whose ground truth (visible count,
        # glass state) is known; end at the nearest code of another mode *and* another state, so
        # that the interpolations cross between two physical states, not two pieces of one
        state = stable_truth[np.asarray(model.code_index_)]
        differ = others[state[others] != state[a]]
        others = differ if len(differ) else others
    b = int(others[np.argmin(np.linalg.norm(codes[others] - codes[a], axis=1))]) if len(others) else a
    s = np.linspace(0.0, 1.0, n_frames)[:, None]
    y_line = (1 - s) * codes[a] + s * codes[b]
    m_line = labels(y_line)
    # the diffusion model's own interpolation between the same two codes: a DDPM fitted to the
    # codes, both ends inverted to its Gaussian latent by DDIM, slerp there, decoded by DDIM
    from .baselines.ddpm import DDPMBaseline

    t_dm = time.perf_counter()
    con.print(Text(f"  fitting a DDPM on the {len(codes):,} codes for the diffusion-latent interpolation ({diffusion_steps} steps)", style="dim"))
    ddpm = DDPMBaseline(seed=seed, steps=diffusion_steps, hidden=128, batch_size=256, device=device.value).fit(codes)
    y_diff = ddpm.interpolate(codes[a], codes[b], n_frames)
    m_diff = labels(y_diff)
    dm_s = time.perf_counter() - t_dm
    dec = lambda y: np.asarray(model.decode(np.asarray(model.denormalise(y))))
    f_walk, f_line, f_diff = dec(y_walk), dec(y_line), dec(y_diff)
    cap = (lambda f, m: [f"m{mm} n{c}" + ("!" if k and (mm != m[k - 1]) else "") for k, (mm, c) in enumerate(zip(m, count_discs(f)))]) \
        if data is ProcessKind.occlusion else (lambda f, m: [f"m{mm}" + ("!" if k and mm != m[k - 1] else "") for k, mm in enumerate(m)])
    plot_paths(out / "walk.png", [("reflect_walk\n(OT, respects\nthe singular set)", f_walk, cap(f_walk, m_walk)),
                                  ("diffusion-latent\ninterpolation\n(DDIM slerp)", f_diff, cap(f_diff, m_diff)),
                                  ("straight latent\ninterpolation", f_line, cap(f_line, m_line))],
               title="generated paths, decoded — m: mode of the code" + (", n: visible discs read off the pixels" if data is ProcessKind.occlusion else "")
               + ", !: mode jump")
    summary = {
        "data": data.value, "n_train_trajectories": train, "n_stable_frames": int(len(stable)), "latent_dim": int(model.latent_dim),
        "threshold": threshold, "scale": scale, "modes_from": r0.modes_from, "n_modes": int(modes.max() + 1), "singular_set_modes": int(S.n_modes),
        "heldout": {"trajectories": T, **tot, "precision": prec, "recall": rec},
        "step_size_alternative": {"threshold": 1.5, **alt, "precision": aprec, "recall": arec},
        "trajectory0": {"reported": r0.indices.tolist(), "truth": np.flatnonzero(te.critical[0]).tolist(), "score": r0.score.tolist()},
        "reflect_walk_modes": m_walk.tolist(), "interpolation_modes": m_line.tolist(),
        "diffusion_interpolation_modes": m_diff.tolist(), "diffusion": {"train_steps": diffusion_steps, "time_s": round(dm_s, 2),
                                                                          "final_loss": ddpm.final_loss_},
        "time_s": round(time.perf_counter() - t0, 2), "fit_or_load_s": round(fit_s, 2), "seed": seed,
    }
    write_json(out / "summary.json", summary)
    rows = [
        ("data", f"{data.value}: model on {len(stable):,} distinct stable frames; {T} held-out trajectories, {tot['n_events']} critical events"),
        ("modes", f"{int(modes.max() + 1)} from the {r0.modes_from} rule (the singular set has {S.n_modes} mode(s), {S.n_facets} singular facets)"),
        ("critical_frames", f"precision {prec:.2f}, recall {rec:.2f} (±2 frames; {tot['n_detected']} frames reported)"),
        ("latent step > 1.5× median", f"precision {_fmt(aprec if alt['n_detected'] else None, '.2f')}, recall {arec:.2f} ({alt['n_detected']} frames reported)"),
        ("reflect_walk", f"{len(set(m_walk.tolist()))} mode(s) along {n_frames} frames"),
        ("diffusion interpolation", f"{int((m_diff[1:] != m_diff[:-1]).sum())} mode jump(s) (DDIM inversion + slerp, DDPM fit {dm_s:.0f} s)"),
        ("straight interpolation", f"{int((m_line[1:] != m_line[:-1]).sum())} mode jump(s)"),
        ("time", f"{summary['time_s']:.1f} s"),
        ("saved", f"{out}/  filmstrip.png, score.png, walk.png, summary.json" + ("" if model_dir else ", model/")),
    ]
    con.print(_table("Critical frames", rows))


# ------------------------------------------------------------------ brenier figure
figure_app = typer.Typer(help="Figures of the singular set: the OT map from the unit disk onto a 2-D toy set.", no_args_is_help=True)
app.add_typer(figure_app, name="figure")


def _singular_figure(name: str, out: Path, n: int, n_gen: int, seed: int, boundary: str) -> None:
    from .datasets import TOY_NAMES, toy
    from .figures_singular import plot_singular_2d
    from .ot import SemiDiscreteOT
    from .sources import UniformBall

    if name not in TOY_NAMES:
        _fail(f"NAME: unknown toy set {name!r}; expected one of {', '.join(TOY_NAMES)}")
    if boundary not in ("respect", "ignore"):
        _fail(f"--boundary: expected 'respect' or 'ignore', got {boundary!r}")
    t0 = time.perf_counter()
    data = _user_errors(lambda: toy(name, n, seed))
    model = SemiDiscreteOT(UniformBall(2), method="exact", device="cpu", seed=seed)
    _fit(model, data.points, None)
    S = model.singular_set()
    rule = "respects" if boundary == "respect" else "ignores"
    try:
        plot_singular_2d(model, out, outline=data.outline(), n_generated=n_gen, seed=seed, boundary=boundary,
                         title=f"OT map from the uniform disk onto {name} (N = {n:,}); generation {rule} the singular set")
    except OSError as exc:
        _fail(f"--out {out}: could not write the figure ({exc})", code=1)
    _out().print(Text(f"{out}: {S.n_modes} mode(s) (true {data.n_components}), {S.n_facets} singular facets, "
                      f"{time.perf_counter() - t0:.1f} s"))


@figure_app.command("seahorse")
def figure_seahorse(
    out: Path = typer.Option(Path("seahorse.png"), "--out", "-o", help="PNG to write."),
    n: int = typer.Option(2000, "--n", min=3, help="Number of seahorse points (targets)."),
    n_gen: int = typer.Option(5000, "--n-gen", min=1, help="Generated points drawn on the right."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data and of the generated points."),
    boundary: str = typer.Option("respect", "--boundary", help="Generation rule: respect or ignore the singular set."),
) -> None:
    """The unit disk with its power diagram and singular set (left); the seahorse with generated points (right)."""
    _singular_figure("seahorse", out, n, n_gen, seed, boundary)


@figure_app.command("toy")
def figure_toy(
    name: str = typer.Argument(..., metavar="NAME", help="ring8, grid25, moons, circles, spiral, seahorse or square.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default NAME.png).", show_default=False),
    n: int = typer.Option(2000, "--n", min=3, help="Number of data points (targets)."),
    n_gen: int = typer.Option(5000, "--n-gen", min=1, help="Generated points drawn on the right."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data and of the generated points."),
    boundary: str = typer.Option("respect", "--boundary", help="Generation rule: respect or ignore the singular set."),
) -> None:
    """The singular-set figure for any toy set."""
    _singular_figure(name, out if out is not None else Path(f"{name}.png"), n, n_gen, seed, boundary)


if __name__ == "__main__":  # pragma: no cover
    app()
