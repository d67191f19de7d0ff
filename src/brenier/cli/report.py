"""``brenier report RUN``: evaluate a fitted run (samples, classifier scores, figures) and write RUN/report.html."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import DeviceKind, FitWarnings, app, command, console, fail, load_images, table, user_errors
from .fit import RUN_FILE, evaluate_and_report, score_rows


def read_run_info(run: Path) -> dict[str, Any]:
    """RUN/run.json (which data the run was fitted on), validated: one-line errors naming the file."""
    path = run / RUN_FILE
    if not path.is_file():
        fail(f"RUN {run}: no {RUN_FILE} (which data the model was fit on); fit it with brenier fit")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"{path}: not valid JSON ({exc})")
    if not isinstance(info, dict) or not isinstance(info.get("data"), str):
        fail(f"{path}: expected an object with 'data' (the data set's name or path)")
    limit = info.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        fail(f"{path}: 'limit' must be null or an integer ≥ 2, got {limit!r}")
    return info


@command(app, "report")
def report_command(
    run: Path = typer.Argument(..., metavar="RUN", help="A run directory written by brenier fit / demo.", show_default=False),
    n_samples: int = typer.Option(1000, "--n-samples", "-n", min=100, help="Images generated per boundary rule for the scores."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the samples and the judge."),
    evaluate: Optional[bool] = typer.Option(None, "--evaluate/--html-only", help="Re-run the evaluation (default: only when RUN has no metrics.json, or one older than the run).", show_default=False),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="auto: CUDA if available."),
) -> None:
    """Evaluate a fitted run (samples, classifier scores, figures) and write RUN/report.html."""
    from ..pipeline import AEOT
    from ..report import build_report

    if not run.is_dir():
        fail(f"RUN {run}: no such directory")
    t0 = time.perf_counter()
    con = console()
    if evaluate is None:
        # evaluate when there are no scores, or when the run was saved again after them (e.g. its
        # singular set recomputed): scores of an older model must not be shown as this one's
        mfile, manifest = run / "metrics.json", run / "manifest.json"
        evaluate = not mfile.is_file() or (manifest.is_file() and manifest.stat().st_mtime > mfile.stat().st_mtime)
        if evaluate and mfile.is_file():
            con.print(f"{mfile} is older than the run's manifest (the run was saved again): re-evaluating")
    rows = []
    if evaluate:
        info = read_run_info(run)
        model = user_errors(lambda: AEOT.load(run, device=device.value))
        X, y = load_images(info["data"], info.get("limit"))
        fits = FitWarnings()
        m, html = evaluate_and_report(model, X, y, run, n_samples, seed, info["data"], fits)
        fits.finish(allow_unconverged=True)  # nothing is fitted here: no convergence to fail
        rows = score_rows(m)
    else:
        html = user_errors(lambda: build_report(run))
    con.print(table("AEOT report", [*rows, ("report", str(html)), ("time", f"{time.perf_counter() - t0:.1f} s")]))
