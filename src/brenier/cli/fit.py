"""``brenier fit`` (fit AEOT on images, save the run) and ``brenier demo`` (fit, sample, evaluate, report)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer
from rich.text import Text

from .. import __version__
from ..ot.distributed import is_main_process
from ._common import (
    DeviceKind,
    FitWarnings,
    allow_unconverged_option,
    app,
    command,
    console,
    fail,
    fmt,
    load_images,
    prepare_out,
    set_threads,
    table,
    user_errors,
    write_outputs,
)

#: which data a run was fitted on (``brenier report`` reloads it)
RUN_FILE = "run.json"


def fit_aeot(X, out: Path, fits: FitWarnings, *, latent_dim: int, epochs: int, seed: int, device: str,
             max_codes: Optional[int], ot_tol: Optional[float], checkpoint: bool, max_train_minutes: Optional[float]):
    """AEOT.fit with progress bars and checkpoints in OUT/checkpoints (resumed when rerun), then saved in OUT;
    the library's warnings go to ``fits``."""
    import shutil

    from ..pipeline import AEOT

    model = AEOT(latent_dim=latent_dim, epochs=epochs, seed=seed, device=device, max_codes=max_codes,
                 ot_tol="auto" if ot_tol is None else ot_tol,
                 max_train_time=None if max_train_minutes is None else 60.0 * max_train_minutes)
    ckpt = out / "checkpoints" if checkpoint else None
    with fits.watch():
        user_errors(lambda: model.fit(X, checkpoint_dir=ckpt, progress=is_main_process()))
    if not is_main_process():  # under torchrun: every rank fits, rank 0 alone writes the run
        return model
    write_outputs(f"--out {out}", lambda: model.save(out))
    if ckpt is not None and not model.ot_.interrupted_:
        shutil.rmtree(ckpt, ignore_errors=True)  # the saved model holds the result
    return model


def write_run_info(out: Path, data: str, limit: Optional[int], n_images: int) -> None:
    from .._io import write_json

    write_outputs(f"--out {out}", lambda: write_json(out / RUN_FILE, {"data": data, "limit": limit, "n_images": int(n_images),
                                                                       "brenier_version": __version__}))


def fit_rows(model) -> list[tuple[str, str | Text]]:
    info = model.train_info_
    ss = model.singular_set_
    return [
        ("autoencoder", f"{info['kind']}, {info['epochs_run']} epochs (best {info['best_epoch']}), held-out BCE {info['best_val_loss']:.4f}"
                        + (", stopped early" if info["stopped_early"] else "")),
        ("latent OT", f"N={len(model.codes_):,} codes in d={model.latent_dim} ← uniform unit {model.source}, "
                      f"TV {fmt(float(model.ot_.tv_error_))} after {model.ot_.n_iter_} Newton steps"),
        ("singular set", "n/a" if ss is None else f"{ss.n_modes} mode(s), {len(np.asarray(ss.facets))} singular facets"),
        ("fit time", ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in model.timings_.items())),
    ]


def score_rows(m: dict[str, Any]) -> list[tuple[str, str | Text]]:
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


def evaluate_and_report(model, X, y, out: Path, n_samples: int, seed: int, data: str, fits: FitWarnings,
                        compare_models: str = ""):
    """Evaluate the run (samples, scores, figures), optionally compare with the baselines, write report.html."""
    from ..report import build_report, evaluate_run

    con = console()
    with fits.watch():
        m = user_errors(lambda: evaluate_run(model, X, y, out, n_samples=n_samples, seed=seed, data_name=data,
                                             log=lambda s: con.print(Text(f"  {s}", style="dim"))))
    if compare_models and y is None:
        con.print(Text("  comparison skipped: these images have no labels to score blends with", style="yellow"))
    elif compare_models:
        _demo_compare(model, X, y, out / "compare", compare_models, seed, data, fits)
    html = user_errors(lambda: build_report(out))
    return m, html


def _demo_compare(model, X, y, out: Path, models: str, seed: int, data: str, fits: FitWarnings) -> None:
    """The other generators fitted to this run's own codes (one seed), for the report's section 6."""
    from ..compare import compare

    con = console()
    t0 = time.perf_counter()
    con.print(Text(f"  comparing with {models.replace(',', ', ')} on the same codes (seed {seed}) ...", style="dim"))
    with fits.watch():
        res = user_errors(lambda: compare(data, models=models, seeds=[seed], out=out, aeot=model, images=(X, y),
                                          n_samples=1000, device=str(model.device_) if hasattr(model, "device_") else "auto",
                                          progress=False))
    s = res["summary"]
    parts = [f"{k} {s[k]['mode_mixture']['mean']:.3f}" for k in res["models"] if "mode_mixture" in s.get(k, {})]
    con.print(Text(f"  mode-mixture rate: {', '.join(parts)}  ({time.perf_counter() - t0:.0f} s)", style="dim"))


@command(app, "demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output directory (model, report.html, metrics.json, PNGs)."),
    data: str = typer.Option("digits", "--data", help="Built-in data set (digits, mnist) or a .npz / image folder."),
    latent_dim: int = typer.Option(8, "--latent-dim", "-d", min=1, help="Latent dimension d (= the source's dimension); 8 suits the 8 × 8 digits."),
    epochs: int = typer.Option(300, "--epochs", min=1, help="Autoencoder epochs at most (early stopping on a held-out split)."),
    n_samples: int = typer.Option(1000, "--n-samples", "-n", min=100, help="Images generated per boundary rule for the scores."),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="Use only the first LIMIT images.", show_default=False),
    max_codes: Optional[int] = typer.Option(None, "--max-codes", min=2, help="Fit the OT map onto a random subset of this many codes.", show_default=False),
    ot_tol: Optional[float] = typer.Option(None, "--ot-tol", min=1e-6, help="OT total-variation tolerance (default: 0.02; 0.03 above 20,000 codes).", show_default=False),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random draw."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="auto: CUDA if available."),
    threads: int = typer.Option(1, "--threads", min=0, help="CPU threads for torch (0: torch's default). The digits nets are tiny: 1 thread is as fast, and far faster on a busy machine."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Also fit the baselines (diffusion, GMM, Gaussian, OT without the singular-set rule) to the same codes and add the comparison to the report (about a minute)."),
    compare_models: str = typer.Option("ot,ot-ignore,ddpm,gmm,gaussian", "--compare-models", help="Models of the comparison."),
    allow_unconverged: bool = allow_unconverged_option(),
) -> None:
    """Built-in example, the main job: fit AEOT (autoencoder + latent OT) on digits, sample, evaluate, write report.html."""
    set_threads(threads)
    compare_models = compare_models if compare else ""
    t0 = time.perf_counter()
    X, y = load_images(data, limit)
    out = prepare_out(out)
    con = console()
    con.print(Text.assemble(("brenier demo", "bold"), f": AEOT on {data} ({len(X):,} images {tuple(X.shape[1:])}), latent d={latent_dim}, seed {seed}"))
    fits = FitWarnings()
    model = fit_aeot(X, out, fits, latent_dim=latent_dim, epochs=epochs, seed=seed, device=device.value, max_codes=max_codes,
                     ot_tol=ot_tol, checkpoint=True, max_train_minutes=None)
    write_run_info(out, data, limit, len(X))
    m, html = evaluate_and_report(model, X, y, out, n_samples, seed, data, fits, compare_models)
    rows = [("data", f"{data}: {len(X):,} images {tuple(X.shape[1:])}"), *fit_rows(model), *score_rows(m),
            ("time", f"total {time.perf_counter() - t0:.1f} s"),
            ("saved", f"{out}/  report.html, metrics.json, training_curves.png, latent_pca.png, samples.png, neighbours.png, model" + (", compare/" if compare_models else ""))]
    con.print(table("AEOT demo", rows))
    con.print(Text.assemble("open ", (str(html), "bold"), " in a browser"))
    fits.finish(allow_unconverged)


@command(app, "fit")
def fit_command(
    data: str = typer.Option(..., "--data", help="Built-in data set (digits, mnist) or a .npz (x, y) / folder of PNG/JPEG images.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", metavar="RUN", help="Run directory (created if needed).", show_default=False),
    latent_dim: int = typer.Option(16, "--latent-dim", "-d", min=1, help="Latent dimension d (= the source's dimension)."),
    epochs: int = typer.Option(300, "--epochs", min=1, help="Autoencoder epochs at most (early stopping on a held-out split)."),
    max_train_minutes: Optional[float] = typer.Option(None, "--max-train-minutes", min=0.01, help="Stop autoencoder training after this long.", show_default=False),
    ot_tol: Optional[float] = typer.Option(None, "--ot-tol", min=1e-6, help="OT total-variation tolerance (default: 0.02; 0.03 above 20,000 codes).", show_default=False),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="Use only the first LIMIT images.", show_default=False),
    max_codes: Optional[int] = typer.Option(None, "--max-codes", min=2, help="Fit the OT map onto a random subset of this many codes.", show_default=False),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random draw."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="auto: CUDA if available."),
    checkpoint: bool = typer.Option(True, "--checkpoint/--no-checkpoint", help="Keep RUN/checkpoints so that an interrupted fit resumes when rerun."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for torch (0: torch's default; 1 is faster on a busy machine)."),
    allow_unconverged: bool = allow_unconverged_option(),
) -> None:
    """Fit AEOT on images and save the model in RUN (then: brenier sample RUN, brenier report RUN)."""
    set_threads(threads)
    t0 = time.perf_counter()
    X, y = load_images(data, limit)
    # Under torchrun every rank fits (the OT fit splits its samples across them); rank 0 alone
    # creates RUN, prints and writes. --max-train-minutes would let ranks stop at different epochs.
    main = is_main_process()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and max_train_minutes is not None:
        fail("--max-train-minutes: not with several ranks (they could stop training at different epochs); use --epochs")
    out = prepare_out(out) if main else out
    con = console()
    if main:
        con.print(Text.assemble(("brenier fit", "bold"), f": AEOT on {data} ({len(X):,} images {tuple(X.shape[1:])}), latent d={latent_dim}"))
    fits = FitWarnings()
    model = fit_aeot(X, out, fits, latent_dim=latent_dim, epochs=epochs, seed=seed, device=device.value, max_codes=max_codes,
                     ot_tol=ot_tol, checkpoint=checkpoint, max_train_minutes=max_train_minutes)
    if not main:
        fits.finish(allow_unconverged)  # the same exit status as rank 0
        return
    write_run_info(out, data, limit, len(X))
    rows = [("data", f"{data}: {len(X):,} images {tuple(X.shape[1:])}"), *fit_rows(model),
            ("saved", f"{out}/  aeot.json, autoencoder.safetensors, ot/, manifest.json  (total {time.perf_counter() - t0:.1f} s)")]
    con.print(table("AEOT fit", rows))
    fits.finish(allow_unconverged)
