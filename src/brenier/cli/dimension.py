"""``brenier dimension``: intrinsic dimension of a data set (PCA spectrum, TwoNN, Levina–Bickel MLE)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ._common import DeviceKind, app, command, console, fail, np_load, table, user_errors, write_outputs


def _dimension_data(data: str, n: int, count: int, seed: int, limit: Optional[int]) -> tuple[np.ndarray, Optional[int], str]:
    """(X (N, ...), the true dimension or None, a description) for ``brenier dimension --data``."""
    from ..datasets import IMAGE_NAMES, load
    from ..datasets.laplace import laplace

    if data == "laplace":
        X, true_dim = laplace(n, count, seed)
        return X, true_dim, f"laplace: {count} solutions on a {n}×{n} grid (seed {seed})"
    path = Path(data)
    if data not in IMAGE_NAMES and path.is_dir() and (path / "aeot.json").exists():
        from ..pipeline import AEOT

        codes = np.asarray(AEOT.load(path, device="cpu").codes_)  # a saved AEOT run: its (normalised) latent codes
        codes = codes[:limit] if limit else codes
        return codes, None, f"latent codes of the run {path} ({codes.shape[0]} codes)"
    if data not in IMAGE_NAMES and path.is_dir() and (path / "codes.npy").exists():
        path = path / "codes.npy"  # a folder with saved codes
    if data not in IMAGE_NAMES and path.suffix.lower() == ".npy":
        if not path.exists():
            raise FileNotFoundError(f"--data {data}: no such file")
        X = np.asarray(np_load(path))
        if X.ndim < 2:
            raise ValueError(f"--data {data}: expected an array (N, ...) of points, got shape {X.shape}")
        X = X[:limit] if limit else X
        return X, None, f"{path} ({X.shape[0]} points)"
    if data not in IMAGE_NAMES and not path.exists():
        raise ValueError(f"--data {data}: expected 'laplace', one of {', '.join(IMAGE_NAMES)}, a .npy/.npz file, an image folder or a saved AEOT run folder")
    X, _ = load(data, limit=limit)
    return X, None, f"{data} ({X.shape[0]} images {'×'.join(map(str, X.shape[1:]))})"


@command(app, "dimension")
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
    from .._io import write_json
    from ..manifold import intrinsic_dimension

    if variance is not None and not (0 < variance <= 1):
        fail(f"--variance: expected a share in (0, 1], got {variance}")
    t0 = time.perf_counter()
    X, true_dim, what = user_errors(lambda: _dimension_data(data, n, count, seed, limit))
    est = {}
    for m in ("pca", "twonn", "mle"):
        est[m] = user_errors(lambda: intrinsic_dimension(X, m, variance=variance, max_points=max_points, seed=seed, device=device.value))
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
    console().print(table("Intrinsic dimension", rows))
    if json_out is not None:
        summary = {
            "data": what, "ambient_dim": pca.ambient_dim, "n_points": pca.n_points, "true_dim": true_dim,
            "pca": int(pca.dimension), "pca_components_for_share": {str(k): v for k, v in shares.items()},
            "twonn": est["twonn"].dimension, "mle": est["mle"].dimension, "seed": seed,
        }
        write_outputs(f"--json {json_out}", lambda: write_json(json_out, summary))

