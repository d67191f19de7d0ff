"""Benchmark: the Monte Carlo Newton solver with and without the local diagonal floor.

The sampled Hessian of the Kantorovich functional is a graph Laplacian whose entries scale like
|facet| / |y_i - y_j|. A cell that no near-tie sample touches (an empty cell) has no entries, and
its diagonal is floored. ``local_floor=False`` floors it at half the global median diagonal;
``local_floor=True`` (the default) at half the median over its 8 nearest targets. The two
differ where targets are packed far tighter in one place than elsewhere — the latent codes of a
process whose stable states include a tight cluster (``tipping_glass``'s lying glass: 235 codes
within 0.02 of each other beside a sheet of 1 165). Both variants run here on the same problems in
one process:

* ``gauss`` — N standard-normal targets in d = 2, 4, 16 (uniform-ball source): the usual case;
* ``ring8`` — the 2-D toy set (multiscale start);
* ``tipping3``, ``tipping8`` — the normalised codes of an autoencoder (latent 3 or 8, 40
  epochs, seed 0; no OT fit) of the 1 770 distinct stable frames of ``tipping_glass(80, seed=1)``;
* ``sheet3``, ``sheet8`` — a synthetic stress case: 1 165 points on a 2-D sheet (0.005 noise) and
  235 in a far tighter 2-D patch (0.02 × 0.006, 1e-4 noise) beside it, in R^3 or R^8;
* ``codes`` — with ``--codes FILE.npy``, any saved codes.

Each run stops at the solver's own rule (debiased TV ≤ tol) or at ``--max-time`` CPU-seconds of
solver time; the result is checked by an independent estimate from ``--check-samples`` fresh
i.i.d. samples.

    python benchmarks/newton_floor.py                      # ≈ 30 min on 2 CPU cores
    python benchmarks/newton_floor.py --problems tipping3 --max-time 300

Prints a table and writes ``benchmarks/results/newton_floor.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from brenier import SemiDiscreteOT
from brenier._array import first_unique_rows
from brenier._io import write_json
from brenier.sources import UniformBall

ROOT = Path(__file__).resolve().parent


def sheet_and_cluster(d: int, seed: int = 0, n_sheet: int = 1165, n_cluster: int = 235) -> np.ndarray:
    """(n_sheet + n_cluster, d): a noisy 2-D sheet and a tight patch beside it, in R^d."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, 3)))
    u = rng.uniform(-1, 1, (n_sheet, 2))
    sheet = u @ basis[:, :2].T + 0.005 * rng.standard_normal((n_sheet, d))
    t = rng.uniform(0, 1, (n_cluster, 2)) * [0.02, 0.006]
    patch = (np.array([0.0, 1.6]) + t) @ basis[:, :2].T + 0.3 * basis[:, 2] + 1e-4 * rng.standard_normal((n_cluster, d))
    return np.vstack([sheet, patch])


def tipping_codes(latent: int) -> np.ndarray:
    """Normalised codes (1 770, latent) of the distinct stable frames of tipping_glass(80, seed=1)."""
    from brenier.datasets import tipping_glass
    from brenier.pipeline import AEOT

    st = tipping_glass(80, 48, seed=1).stable_frames()
    m = AEOT(latent, device="cpu", seed=0, epochs=40, patience=8, max_train_time=150.0, ot_max_iter=1,
             ae_options={"channels": (16, 32), "hidden": 128})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(st[first_unique_rows(st)])
    return np.asarray(m.codes_)


def problems(names: list[str], n: int, codes: Path | None) -> dict[str, np.ndarray]:
    from brenier.datasets import toy

    rng = np.random.default_rng(0)
    out = {}
    for name in names:
        if name.startswith("gauss"):
            d = int(name[5:])
            out[name] = rng.standard_normal((n, d))
        elif name == "ring8":
            out[name] = toy("ring8", n, seed=0).points
        elif name.startswith("tipping"):
            out[name] = tipping_codes(int(name[7:]))
        elif name.startswith("sheet"):
            out[name] = sheet_and_cluster(int(name[5:]))
        elif name == "codes":
            if codes is None:
                raise SystemExit("--problems codes needs --codes FILE.npy")
            out[f"codes ({codes.name})"] = np.load(codes)
        else:
            raise SystemExit(f"unknown problem {name!r}")
    return out


def run(y: np.ndarray, local_floor: bool, tol: float, max_time: float, check: int) -> dict:
    d = y.shape[1]
    ot = SemiDiscreteOT(UniformBall(d), method="newton", tol=tol, device="cpu", seed=0,
                        solver_options={"local_floor": local_floor, "max_time": max_time})
    c0 = time.process_time()
    ot.fit(y)
    cpu = time.process_time() - c0
    last = ot.history_[-1] if getattr(ot, "history_", None) else {}
    mu = np.asarray(ot.cell_masses(n_samples=check, seed=12345))
    nu = 1.0 / len(np.unique(y, axis=0))
    tv = 0.5 * float(np.abs(mu - nu).sum())
    floor = 0.5 * np.sqrt(2 / np.pi) * len(mu) * np.sqrt(nu * (1 - nu) / check)
    return {"local_floor": local_floor, "cpu_s": cpu, "iterations": last.get("iteration", -1) + 1,
            "evaluations": last.get("evaluations"), "tv_estimate_debiased": last.get("tv_debiased"),
            "converged": bool(getattr(ot, "converged_", False)), "check_tv": tv, "check_floor": float(floor),
            "empty_cells_check": int((mu == 0).sum())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default="gauss2,gauss4,gauss16,ring8,tipping3,tipping8,sheet3")
    ap.add_argument("--n", type=int, default=1000, help="targets of the gauss and ring8 problems")
    ap.add_argument("--codes", type=Path, default=None)
    ap.add_argument("--tol", type=float, default=0.02)
    ap.add_argument("--max-time", type=float, default=240.0)
    ap.add_argument("--check-samples", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "newton_floor.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for name, y in problems([p for p in a.problems.split(",") if p], a.n, a.codes).items():
        for lf in (False, True):
            r = run(y, lf, a.tol, a.max_time, a.check_samples)
            r.update(problem=name, n=int(len(y)), d=int(y.shape[1]))
            rows.append(r)
            print(f"{name:24s} local_floor={lf!s:5s}  {r['iterations']:3d} steps  {r['cpu_s']:7.1f} CPU-s  "
                  f"converged {r['converged']!s:5s}  check TV {r['check_tv']:.4f} (floor {r['check_floor']:.4f})  "
                  f"empty {r['empty_cells_check']}", flush=True)
    print("\n| problem | N | d | floor | steps | CPU s | converged | check TV (noise floor) | empty cells |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['problem']} | {r['n']} | {r['d']} | {'local' if r['local_floor'] else 'global'} | {r['iterations']} | "
              f"{r['cpu_s']:.1f} | {'yes' if r['converged'] else 'no'} | {r['check_tv']:.4f} ({r['check_floor']:.4f}) | {r['empty_cells_check']} |")
    write_json(a.out, {"benchmark": "newton_floor", "tol": a.tol, "max_time": a.max_time, "check_samples": a.check_samples,
                       "rows": rows, "platform": platform.platform(), "torch": torch.__version__, "threads": a.threads})
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
