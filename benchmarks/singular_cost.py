"""Cost of ``singular_set()`` in high dimension (issue 3): how long the exact detour test takes.

Targets: a mixture of 4 Gaussians in R^d scaled into the unit ball (seeded), the map from the
uniform ball fitted with one Monte Carlo Newton step (the singular set needs a power diagram,
not a converged one). Times ``singular_set(threshold="auto")`` (sampled adjacency, hop graph
with its gap test, exact detours, auto kappa) and reports E (sampled adjacency pairs) and
n_modes. This measures cost only: after one Newton step many cells are still empty, so the
mode count of this unconverged map says nothing about the data.

    python benchmarks/singular_cost.py                        # N = 10,000, d = 16
    python benchmarks/singular_cost.py --sizes 3000,10000 --dims 8,16
Writes benchmarks/results/singular_cost.json.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from brenier._io import write_json
from brenier.ot import SemiDiscreteOT
from brenier.sources import UniformBall

warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")


def targets(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d)) * 2.0
    y = centres[rng.integers(0, 4, n)] + rng.normal(size=(n, d))
    y -= y.mean(axis=0)
    return y / np.linalg.norm(y, axis=1).max()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--dims", default="16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "singular_cost.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"{'N':>7} {'d':>3} {'fit s':>7} {'singular s':>11} {'CPU s':>7} {'E':>8} {'modes':>6}")
    for d in map(int, args.dims.split(",")):
        for n in map(int, args.sizes.split(",")):
            y = targets(n, d, args.seed)
            t = time.perf_counter()
            ot = SemiDiscreteOT(UniformBall(d), method="newton", max_iter=1, seed=args.seed, device="cpu").fit(y)
            fit_s = time.perf_counter() - t
            t, c = time.perf_counter(), time.process_time()
            S = ot.singular_set(threshold="auto")
            row = {"n": n, "d": d, "fit_s": round(fit_s, 2), "singular_s": round(time.perf_counter() - t, 2),
                   "singular_cpu_s": round(time.process_time() - c, 2), "n_adjacency": int(len(S.adjacency)),
                   "n_facets": S.n_facets, "n_modes": S.n_modes, "kappa": S.threshold}
            rows.append(row)
            print(f"{n:>7} {d:>3} {row['fit_s']:>7} {row['singular_s']:>11} {row['singular_cpu_s']:>7} "
                  f"{row['n_adjacency']:>8} {row['n_modes']:>6}")
            write_json(args.out, {"benchmark": "singular_cost", "seed": args.seed, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
