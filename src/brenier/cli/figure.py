"""``brenier figure seahorse | toy NAME``: the singular-set figure of the OT map from the unit disk onto a 2-D toy set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from ._common import FitWarnings, allow_unconverged_option, app, command, console, fail, user_errors, write_outputs

figure_app = typer.Typer(help="Figures of the singular set: the OT map from the unit disk onto a 2-D toy set.", no_args_is_help=True)
app.add_typer(figure_app, name="figure")


def _singular_figure(name: str, out: Path, n: int, n_gen: int, seed: int, boundary: str, allow_unconverged: bool) -> None:
    from ..datasets import TOY_NAMES, toy
    from ..figures_singular import plot_singular_2d
    from ..ot import SemiDiscreteOT
    from ..sources import UniformBall

    if name not in TOY_NAMES:
        fail(f"NAME: unknown toy set {name!r}; expected one of {', '.join(TOY_NAMES)}")
    if boundary not in ("respect", "ignore"):
        fail(f"--boundary: expected 'respect' or 'ignore', got {boundary!r}")
    t0 = time.perf_counter()
    data = user_errors(lambda: toy(name, n, seed))
    model = SemiDiscreteOT(UniformBall(2), method="exact", device="cpu", seed=seed)
    fits = FitWarnings()
    with fits.watch():
        user_errors(lambda: model.fit(data.points))
    S = model.singular_set()
    rule = "respects" if boundary == "respect" else "ignores"
    write_outputs(f"--out {out}", lambda: plot_singular_2d(
        model, out, outline=data.outline(), n_generated=n_gen, seed=seed, boundary=boundary,
        title=f"OT map from the uniform disk onto {name} (N = {n:,}); generation {rule} the singular set"))
    console().print(Text(f"{out}: {S.n_modes} mode(s) (true {data.n_components}), {S.n_facets} singular facets, "
                         f"{time.perf_counter() - t0:.1f} s"))
    fits.finish(allow_unconverged)


@command(figure_app, "seahorse")
def figure_seahorse(
    out: Path = typer.Option(Path("seahorse.png"), "--out", "-o", help="PNG to write."),
    n: int = typer.Option(2000, "--n", min=3, help="Number of seahorse points (targets)."),
    n_gen: int = typer.Option(5000, "--n-gen", min=1, help="Generated points drawn on the right."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data and of the generated points."),
    boundary: str = typer.Option("respect", "--boundary", help="Generation rule: respect or ignore the singular set."),
    allow_unconverged: bool = allow_unconverged_option(),
) -> None:
    """The unit disk with its power diagram and singular set (left); the seahorse with generated points (right)."""
    _singular_figure("seahorse", out, n, n_gen, seed, boundary, allow_unconverged)


@command(figure_app, "toy")
def figure_toy(
    name: str = typer.Argument(..., metavar="NAME", help="ring8, grid25, moons, circles, spiral, seahorse or square.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default NAME.png).", show_default=False),
    n: int = typer.Option(2000, "--n", min=3, help="Number of data points (targets)."),
    n_gen: int = typer.Option(5000, "--n-gen", min=1, help="Generated points drawn on the right."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the data and of the generated points."),
    boundary: str = typer.Option("respect", "--boundary", help="Generation rule: respect or ignore the singular set."),
    allow_unconverged: bool = allow_unconverged_option(),
) -> None:
    """The singular-set figure for any toy set."""
    _singular_figure(name, out if out is not None else Path(f"{name}.png"), n, n_gen, seed, boundary, allow_unconverged)

