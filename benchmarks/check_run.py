"""Independent TV check of a saved run's OT map: cell masses from fresh i.i.d. source samples.

The fit's own verdict uses its last batch (quasi-random, split-half noise floor); this draws new
i.i.d. samples with another seed, counts the cells of the saved heights, and reports the TV to
the target weights, its noise floor and the debiased value (as ``benchmarks/ot_solver.py``'s
check does).

    python benchmarks/check_run.py runs/mnist_e2e --samples 1e7 \\
        --json benchmarks/results/check_run_mnist_e2e.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from brenier.ot.montecarlo import noise_floor
from brenier.ot.potential import BrenierPotential
from brenier.pipeline import AEOT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from singular_run import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--samples", type=float, default=1e7)
    ap.add_argument("--seed", type=int, default=987_654)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    ot = AEOT.load(args.run, device="cpu").ot_
    y, h, nu = ot._unique_targets, ot._unique_heights, ot._unique_weights.double()
    pot = BrenierPotential(y, h)
    n, m = len(y), int(args.samples)
    counts = torch.zeros(n, dtype=torch.int64)
    t = time.perf_counter()
    for xb in ot.source_.stream(m, min(pot.block_rows, 1 << 16), seed=args.seed, quasi=False, device="cpu"):
        _, idx = pot.argmax(xb)
        counts += torch.bincount(idx, minlength=n)
    tv = float(0.5 * (counts.double() / m - nu).abs().sum())
    floor = noise_floor(nu, m)
    row = {"N": n, "samples": m, "tv": tv, "floor": floor, "tv_debiased": math.sqrt(max(tv * tv - floor * floor, 0.0)),
           "fit_tv_error": float(ot.tv_error_), "fit_time_s": float(getattr(ot, "fit_time_", float("nan"))),
           "check_s": round(time.perf_counter() - t, 1)}
    print(f"N={n}: independent TV {tv:.4f} (floor {floor:.4f}) -> debiased {row['tv_debiased']:.4f}; "
          f"the fit's own estimate {ot.tv_error_:.4f}; check {row['check_s']} s")
    if args.json:
        write_result(args.json, "check_run", args.run, row)


if __name__ == "__main__":
    main()
