"""``brenier ot TARGETS --out DIR``: fit the OT map from a source measure onto the points in a .npy/.npz."""

from __future__ import annotations

import math
import time
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer
from rich.text import Text

from .. import __version__
from ._common import (
    EXIT_INTERRUPTED,
    DeviceKind,
    FitWarnings,
    allow_unconverged_option,
    app,
    command,
    console,
    fail,
    finite_or_none,
    fmt,
    load_targets,
    prepare_out,
    table,
    user_errors,
    warn,
    write_outputs,
)


class SourceKind(str, Enum):
    ball = "ball"
    box = "box"
    gaussian = "gaussian"


class MethodKind(str, Enum):
    auto = "auto"
    newton = "newton"
    adam = "adam"
    exact = "exact"


def _make_source(kind: SourceKind, d: int):
    from ..sources import Gaussian, UniformBall, UniformBox

    return {SourceKind.ball: UniformBall, SourceKind.box: UniformBox, SourceKind.gaussian: Gaussian}[kind](d)


def _describe_source(kind: SourceKind, d: int) -> str:
    return {
        SourceKind.ball: f"uniform unit ball in R^{d}",
        SourceKind.box: f"uniform box [-1, 1]^{d}",
        SourceKind.gaussian: f"standard Gaussian in R^{d}",
    }[kind]


def summary_of(ot, **extra: Any) -> dict[str, Any]:
    """summary.json of a fitted ``SemiDiscreteOT``: sizes, solver, errors, counters, timing."""
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
        "tv_error": finite_or_none(float(ot.tv_error_)),
        "max_rel_error": finite_or_none(float(ot.max_rel_error_)),
        "iterations": int(ot.n_iter_),
        "score_evaluations": int(ot.n_evaluations_),
        "time_s": round(float(ot.fit_time_), 4),
        "converged": bool(ot.converged_),
        "interrupted": bool(ot.interrupted_),
        "world_size": int(getattr(ot, "world_size_", 1)),  # processes that fitted it (torchrun)
        "brenier_version": __version__,
    }
    out.update(extra)
    return out


def _write_heights(path: Path, h: np.ndarray) -> None:
    from .._io import atomic_write

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a str path
            np.save(f, np.asarray(h, dtype=np.float64))

    atomic_write(path, _w)


def _status(summary: dict[str, Any]) -> Text:
    if summary["interrupted"]:
        return Text.from_markup("[yellow]interrupted[/yellow] (best iterate kept)")
    if summary["converged"]:
        return Text.from_markup("[green]yes[/green]")
    return Text.from_markup("[yellow]no[/yellow] (iteration or sample cap reached)")


@command(app, "ot")
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
    allow_unconverged: bool = allow_unconverged_option(),
) -> None:
    """Fit the OT map from a source measure onto the points in a .npy/.npz."""
    from .._array import resolve_device
    from .._io import write_json
    from ..ot import SemiDiscreteOT
    from ..ot.distributed import is_main_process

    t_start = time.perf_counter()
    x, weights, weights_from = user_errors(lambda: load_targets(targets, weights_key))
    if weights is not None and abs(float(weights.sum()) - 1.0) > 1e-6:
        warn(f"{weights_from}: weights sum to {float(weights.sum()):.6g}; normalised to sum to 1")
        weights = weights / weights.sum()
    n, d = x.shape
    if tol is not None and not (math.isfinite(tol) and tol > 0):
        fail(f"--tol: expected a positive number, got {tol}")
    if method is MethodKind.exact and (d != 2 or source is SourceKind.gaussian):
        fail(f"--method exact: needs 2-D targets and a uniform source (--source ball or box); got d={d}, --source {source.value}")
    user_errors(lambda: resolve_device(device.value))
    src = user_errors(lambda: _make_source(source, d))
    # Under torchrun every rank fits (the ranks share the sample stream through collectives), but
    # only rank 0 creates the folder, prints and writes: two writers of one run folder would race.
    main = is_main_process()
    out = prepare_out(out) if main else out
    ckpt = out / "checkpoint.pt" if checkpoint else None

    con = console()
    if main:
        con.print(Text.assemble(("brenier ot", "bold"), f": {n:,} targets in dimension {d} from {targets} ← {_describe_source(source, d)}, method {method.value}"))
    model = SemiDiscreteOT(src, method=method.value, tol=tol, device=device.value, seed=seed, max_iter=max_iter)
    fits = FitWarnings()
    with fits.watch():
        user_errors(lambda: model.fit(x, weights, checkpoint=ckpt, progress=True))

    summary = summary_of(model, targets=str(targets), weights=weights_from)

    def _save() -> None:
        model.save(out)
        _write_heights(out / "heights.npy", model.heights_)
        write_json(out / "summary.json", summary)

    if not main:
        fits.finish(allow_unconverged)  # the same exit status as rank 0
        return
    write_outputs(f"--out {out}", _save)
    if ckpt is not None and ckpt.exists() and not model.interrupted_:
        ckpt.unlink()  # the saved model holds the result; a stale checkpoint would block a new problem

    rows = [
        ("targets", f"{targets}  (N={n}, d={d}, weights: {weights_from})"),
        ("source", _describe_source(source, d)),
        ("method", f"{model.method_}  on {model.device_}"),
        ("converged", _status(summary)),
        ("TV error", fmt(summary["tv_error"]) + ("" if model.method_ == "exact" else "  (debiased Monte Carlo estimate)")),
        ("max rel. error", fmt(summary["max_rel_error"]) + ("" if model.method_ == "exact" else "  (raw estimate from the last batch, noisy)")),
        ("iterations", str(summary["iterations"])),
        ("score evaluations", "n/a (exact power diagram)" if model.method_ == "exact" else f"{summary['score_evaluations']:.3g}"),
        ("fit time", f"{summary['time_s']:.2f} s  (total {time.perf_counter() - t_start:.2f} s)"),
        ("saved", f"{out}/  ot.json, ot.safetensors, manifest.json, heights.npy, summary.json"),
    ]
    con.print(table("Semi-discrete OT", rows))
    if model.interrupted_:
        warn(f"the fit was interrupted; the best heights so far are saved. Rerun the same command to resume from {ckpt}" if ckpt else "the fit was interrupted; the best heights so far are saved")
        raise typer.Exit(EXIT_INTERRUPTED)
    fits.finish(allow_unconverged)
