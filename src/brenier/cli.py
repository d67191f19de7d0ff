"""The ``brenier`` command line: semi-discrete optimal transport from the shell.

Commands
--------
``brenier ot TARGETS --out DIR``   fit the OT map from a source measure onto the points in a
                                   .npy/.npz file and save the model, heights and a summary.
``brenier demo``                   the built-in example: the exact 2-D map from the unit disk onto
                                   the ``seahorse`` toy set, with a figure of the power diagram.

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


# ------------------------------------------------------------------ brenier demo
@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output directory."),
    n: int = typer.Option(2000, "--n", min=2, help="Number of seahorse points."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the toy data."),
) -> None:
    """Built-in example: exact OT from the unit disk onto the seahorse set."""
    from ._io import write_json
    from .datasets import toy
    from .figures import plot_transport_2d
    from .ot import SemiDiscreteOT
    from .sources import UniformBall

    t_start = time.perf_counter()
    out = _prepare_out(out)
    data = _user_errors(lambda: toy("seahorse", n, seed))
    con = _out()
    con.print(Text.assemble(("brenier demo", "bold"), f": exact OT from the uniform unit disk onto {n:,} seahorse points (seed {seed})"))
    model = SemiDiscreteOT(UniformBall(2), method="exact", device="cpu", seed=seed)
    _fit(model, data.points, None, progress=True)

    t_fig = time.perf_counter()
    png = out / "transport.png"
    try:
        plot_transport_2d(model, png, title=f"Semi-discrete OT: uniform disk → seahorse (N = {n})", outline=data.outline())
        model.save(out)
    except OSError as exc:
        _fail(f"--out {out}: could not write the results ({exc})", code=1)
    fig_time = time.perf_counter() - t_fig
    n_empty = int(np.sum(model.power_diagram().masses <= 0))
    summary = _summary(
        model, dataset="seahorse", newton_steps=int(model.n_iter_), empty_cells=n_empty,
        figure="transport.png", figure_time_s=round(fig_time, 4),
        total_time_s=round(time.perf_counter() - t_start, 4),
    )
    try:
        write_json(out / "summary.json", summary)
    except OSError as exc:
        _fail(f"--out {out}: could not write the results ({exc})", code=1)

    rows = [
        ("data", f"seahorse, N={n}, seed {seed}"),
        ("source", "uniform unit disk (exact power diagram)"),
        ("converged", _status(summary)),
        ("Newton steps", str(summary["newton_steps"])),
        ("max rel. mass error", _fmt(summary["max_rel_error"], ".2e")),
        ("TV error", _fmt(summary["tv_error"], ".2e")),
        ("empty cells", str(n_empty)),
        ("time", f"fit {summary['time_s']:.2f} s, figure {fig_time:.2f} s, total {summary['total_time_s']:.2f} s"),
        ("saved", f"{out}/  transport.png, summary.json, ot.json, ot.safetensors"),
    ]
    con.print(_table("Demo", rows))
    if model.interrupted_:
        raise typer.Exit(EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    app()
