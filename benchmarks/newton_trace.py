"""Per-iteration trace of the Monte Carlo Newton solver on real MNIST codes.

One line per Newton iteration (batch size, TV estimate, its noise floor, the debiased TV, the step
length that led there, κ, wall time), so that a change to the solver can be read step by step:
where the overshoot is, when the batch grows, what the last steps cost.

    python benchmarks/newton_trace.py 20000                                  # the default solver
    python benchmarks/newton_trace.py 20000 '{"line_search": false, "hessian_k": 8}'   # the 2026-11 solver
    python benchmarks/newton_trace.py 20000 '{"tol": 0.028}' --json out.json

Codes: ``benchmarks/mnist_codes.py`` (latent 16, cached in runs/codes/); source: the unit ball.
The second argument is ``solver_options`` as JSON (plus ``tol``, default 0.028).
Recorded: benchmarks/results/newton_trace_mnist20k.json (before / after the line search).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from brenier import SemiDiscreteOT
from brenier.sources import UniformBall

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_codes import mnist_codes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, help="the first N MNIST codes")
    ap.add_argument("options", nargs="?", default="{}", help="solver_options as JSON (and tol)")
    ap.add_argument("--json", default=None, help="write the trace here")
    args = ap.parse_args()
    opts = json.loads(args.options)
    tol = float(opts.pop("tol", 0.028))
    codes, _ = mnist_codes(16)
    y = torch.from_numpy(codes[: args.n])
    t0 = time.perf_counter()
    rows = []

    def line(rec):
        row = {k: rec.get(k) for k in ("iteration", "samples", "tv_estimate", "noise_floor", "tv_debiased", "step", "kappa")}
        row["time_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"it {row['iteration']} M={row['samples']:.2e} tv {row['tv_estimate']:.4f} floor {row['noise_floor']:.4f} "
              f"deb {row['tv_debiased']:.4f} step {row['step']:.3f} kappa {row['kappa']:.2f} t {row['time_s']:.0f}s", flush=True)

    ot = SemiDiscreteOT(UniformBall(16), method="newton", tol=tol, device="cpu", seed=0, solver_options=opts or None)
    ot.fit(y, callback=line)
    summary = {"n": args.n, "options": opts, "tol": tol, "time_s": round(time.perf_counter() - t0, 1), "iterations": ot.n_iter_,
               "converged": ot.converged_, "tv": ot.tv_error_, "evaluations": ot.n_evaluations_}
    print("done", json.dumps(summary), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "history": rows}, indent=1))


if __name__ == "__main__":
    main()
