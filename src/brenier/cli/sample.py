"""``brenier sample RUN``: generate images from a fitted run (a PNG grid, optionally an .npz)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ._common import DeviceKind, app, command, console, fail, table, user_errors, write_outputs


@command(app, "sample")
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
    from .._io import atomic_write
    from ..pipeline import AEOT
    from ..report import save_grid

    if boundary not in ("respect", "ignore"):
        fail(f"--boundary: expected 'respect' or 'ignore', got {boundary!r}")
    if out.suffix.lower() != ".png":
        fail(f"--out {out}: expected a .png file name")
    if npz is not None and npz.suffix.lower() != ".npz":
        fail(f"--npz {npz}: expected a .npz file name")
    t0 = time.perf_counter()
    model = user_errors(lambda: AEOT.load(run, device=device.value))
    # AEOT.sample refuses to return non-finite pixels (a PNG of NaNs would look like a result)
    imgs, codes = user_errors(lambda: model.sample(n, seed=seed, boundary=boundary, return_codes=True))
    imgs, codes = np.asarray(imgs), np.asarray(codes)

    def _write() -> None:
        save_grid(imgs, out)
        if npz is not None:
            def _w(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, x=imgs, codes=codes)

            atomic_write(npz, _w)

    write_outputs("the samples", _write)
    console().print(table("AEOT samples", [
        ("run", str(run)), ("images", f"{n} × {tuple(imgs.shape[1:])}, boundary={boundary}, seed {seed}"),
        ("saved", f"{out}" + (f", {npz}" if npz is not None else "")), ("time", f"{time.perf_counter() - t0:.1f} s")]))
