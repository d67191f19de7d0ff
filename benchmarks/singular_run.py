"""The singular set of a fitted run, recomputed with today's defaults, stage by stage.

Loads a saved `brenier fit` run (e.g. all 60,000 MNIST codes: ``python benchmarks/fit_mnist.py
--out runs/mnist``), runs ``ot.singular_set()`` exactly as ``brenier fit`` does, and times each
stage through the real code path (the module's functions are wrapped with timers): the sampled
adjacency, the hop graph, the approximate detours (local search to 2.5, landmark bounds), the
searches ``auto_kappa`` needs to count modes exactly, the searches the chosen kappa's labels need.
Prints a table, writes JSON; ``--save`` writes the new set into the run (``AEOT.save``), so that
``sample``, ``report`` and ``compare --model`` use it.

    python benchmarks/singular_run.py runs/mnist --save \\
        --json benchmarks/results/singular_run_mnist.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from brenier import singular as sg
from brenier._io import write_json
from brenier.pipeline import AEOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--save", action="store_true", help="write the new singular set into the run")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = AEOT.load(args.run, device="cpu")
    ot = model.ot_
    old = model.singular_set_
    times: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    searched_pairs: dict[str, int] = defaultdict(int)
    phase = ["detours"]

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[name] += time.perf_counter() - t
                calls[name] += 1
        return wrapper

    refine = sg.refine_detours

    def refine_counted(*a, **k):
        n = refine(*a, **k)
        searched_pairs[phase[0]] += n
        return n

    auto = sg.auto_kappa

    def auto_phased(*a, **k):
        phase[0] = "auto_kappa"
        try:
            return auto(*a, **k)
        finally:
            phase[0] = "labels"

    sg.sampled_adjacency = timed("adjacency", sg.sampled_adjacency)
    sg.hop_graph = timed("hop_graph", sg.hop_graph)
    sg.detour_ratios = timed("approx_detours", sg.detour_ratios)
    sg.auto_kappa = timed("auto_kappa", auto_phased)
    sg.refine_detours = timed("refine_" + "searches", refine_counted)

    t0 = time.perf_counter()
    S = ot.singular_set()
    wall = time.perf_counter() - t0
    n = len(S.modes)
    deg = np.bincount(S.adjacency.reshape(-1), minlength=n)
    sizes = np.bincount(S.modes)
    finite = np.isfinite(S.detour)
    exact = S.detour <= S.searched
    row = {
        "N": int(n), "d": int(S.targets.shape[1]), "wall_s": round(wall, 1),
        "stages_s": {k: round(v, 1) for k, v in times.items()},
        "facets": int(len(S.adjacency)), "median_degree": float(np.median(deg)), "isolated_cells": int((deg == 0).sum()),
        "kappa": float(S.threshold), "singular_facets": int(S.n_facets), "singular_share": float(S.singular.mean()),
        "n_modes": int(S.n_modes), "largest_mode": int(sizes.max()), "modes_of_k_or_more": int((sizes >= sg.hop_k(S.targets.shape[1])).sum()),
        "trusted": bool(S.trusted),
        "pairs_searched_for_auto_kappa": int(searched_pairs["auto_kappa"]),
        "pairs_searched_for_labels": int(searched_pairs["labels"]),
        "detour_exact_share": float(exact.mean()),
        "detour_quantiles_exact": {q: float(np.quantile(S.detour[exact & finite], q)) for q in (0.5, 0.9, 0.99)}
        if (exact & finite).any() else {},
        "before": None if old is None else {"facets": int(len(old.adjacency)), "singular_facets": int(old.n_facets),
                                            "n_modes": int(old.n_modes), "kappa": float(old.threshold)},
    }
    print("| N | facets | median degree | isolated | kappa | singular facets | modes (largest) | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    if old is not None:
        print(f"| {n} (saved) | {len(old.adjacency)} | | | {old.threshold:.3g} | {old.n_facets} | {old.n_modes} | |")
    print(f"| {n} | {row['facets']} | {row['median_degree']:.0f} | {row['isolated_cells']} | {S.threshold:.3g} | "
          f"{S.n_facets} ({100 * S.singular.mean():.1f} %) | {S.n_modes} ({sizes.max()}) | {wall:.0f} |")
    print("stages (s):", row["stages_s"], "| pairs searched for auto kappa:", row["pairs_searched_for_auto_kappa"],
          "for the labels:", row["pairs_searched_for_labels"])
    if args.save:
        t = time.perf_counter()
        model.singular_set_ = ot.singular_set_ = S
        model.save(args.run)
        row["save_s"] = round(time.perf_counter() - t, 1)
        print(f"saved into {args.run}")
    if args.json:
        write_result(args.json, "singular_run", args.run, row)


def write_result(path: Path, benchmark: str, run: Path, row: dict) -> None:
    """JSON of one benchmark row on a saved run, with the command, machine and date."""
    meta = {"benchmark": benchmark, "run": str(run), "command": " ".join(["python"] + sys.argv),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d %H:%M")}
    write_json(path, {"meta": meta, **row})


if __name__ == "__main__":
    main()
