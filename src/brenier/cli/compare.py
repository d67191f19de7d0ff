"""``brenier compare``: fit OT and the baselines to the same codes and score them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from ._common import DeviceKind, FitWarnings, allow_unconverged_option, app, command, console, prepare_out, set_threads, user_errors


@command(app, "compare")
def compare_command(
    data: str = typer.Option("ring8", "--data", "-d", help="A 2-D toy set (ring8, grid25, moons, ...) or an image set (digits, mnist)."),
    models: str = typer.Option("", "--models", "-m", help="Comma-separated models (also: ddim, fm, sdfm). Default: ot,ot-ignore,ddpm,gmm,gaussian; on mnist all seven of the full comparison (ddpm trained to convergence, fm, sdfm).", show_default=False),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o", help="Output directory: compare.json, compare.md, PNGs."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Number of seeds (0, 1, ..., SEEDS-1)."),
    n_samples: int = typer.Option(2000, "--n-samples", min=10, help="Generated samples per model and seed (images: 1000 is plenty)."),
    n_train: int = typer.Option(2000, "--n-train", min=10, help="2-D toy data: training points per seed."),
    ddpm_steps: Optional[int] = typer.Option(None, "--ddpm-steps", min=1, help="Training steps of the diffusion model (default 5000 on 2-D data, 4000 on images).", show_default=False),
    ddpm_converge: bool = typer.Option(False, "--ddpm-converge", help="Train the diffusion model until its held-out loss is flat (ddpm.converged_settings; the default on mnist)."),
    device: DeviceKind = typer.Option(DeviceKind.auto, "--device", help="Where torch computes (auto: CUDA if available)."),
    run: Optional[Path] = typer.Option(None, "--model", metavar="RUN", help="Image sets: a run of `brenier fit --data DATA` whose autoencoder, codes and OT map every seed reuses (no autoencoder or OT fit per seed; the baselines still train per seed).", show_default=False),
    threads: int = typer.Option(1, "--threads", min=0, help="torch CPU threads (0: torch's default). The networks are small: on a busy machine a second thread mostly spins."),
    allow_unconverged: bool = allow_unconverged_option(),
) -> None:
    """Fit OT and the baselines to the same codes; score off-support / mode mixture, coverage, fidelity, novelty."""
    from ..compare import IMAGE_COLUMNS, TOY_COLUMNS, compare

    set_threads(threads)
    out = prepare_out(out)
    params = {m: {"steps": ddpm_steps} for m in ("ddpm", "ddim")} if ddpm_steps else None
    if ddpm_converge:
        from ..baselines.ddpm import converged_settings

        params = {m: converged_settings(60_000, 16) for m in ("ddpm", "ddim")}
    aeot = _load_run(run, data, device.value) if run is not None else None
    fits = FitWarnings()
    with fits.watch():
        res = user_errors(lambda: compare(data, models=models or None, seeds=list(range(seeds)), out=out, n_train=n_train,
                                          n_samples=n_samples, device=device.value, progress=True, params=params, aeot=aeot))
    # the main columns, mean over seeds (compare.md has them all, with ± std)
    keys = ("off_support", "modes_hit", "mode_kl", "novelty", "energy") if res["kind"] == "toy" else \
        ("mode_mixture", "confident", "class_kl", "frechet", "coverage", "novelty")
    cols = [c for c in (TOY_COLUMNS if res["kind"] == "toy" else IMAGE_COLUMNS) if c[0] in keys]
    t = Table(title=f"brenier compare: {data} (mean over {seeds} seed{'s' * (seeds > 1)})", title_justify="left")
    t.add_column("model", style="bold cyan", no_wrap=True)
    for _, head, _, _ in cols:
        t.add_column(head, justify="right")
    for m, row in res["summary"].items():
        t.add_row(m, *[Text("–" if k not in row else f"{row[k]['mean']:{f}}") for k, _, f, _ in cols])
    con = console()
    con.print(t)
    con.print(f"wrote {', '.join(Path(p).name for p in res['files'].values())} to {out}  ({res['time_s']:.0f} s)")
    fits.finish(allow_unconverged)


def _load_run(run: Path, data: str, device: str):
    """The fitted AEOT of ``run`` (checked: a saved run of ``brenier fit`` on ``data``)."""
    import json

    from ..datasets import TOY_NAMES
    from ..pipeline import AEOT
    from ._common import fail
    from .fit import RUN_FILE

    if data in TOY_NAMES:
        fail(f"--model: only for image sets; {data!r} is a 2-D toy set (its models are fitted per seed)")
    info_path = Path(run) / RUN_FILE
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        fail(f"--model {run}: no {RUN_FILE} there; expected a run written by `brenier fit --out {run}`")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"--model {run}: {RUN_FILE} is not valid JSON ({exc})")
    if not isinstance(info, dict) or info.get("data") != data:
        fail(f"--model {run}: fitted on {info.get('data') if isinstance(info, dict) else '?'!r}, not on {data!r}: "
             f"its codes and decoder belong to other images")
    if info.get("limit") is not None:
        console().print(Text(f"note: {run} was fitted on the first {info['limit']} images only", style="yellow"))
    with console().status(f"loading {run} ..."):
        return user_errors(lambda: AEOT.load(run, device=device))
