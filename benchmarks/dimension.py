"""Benchmark: intrinsic dimension of the Laplace fields — PCA rank vs the neighbour estimators, and why.

For n in --sizes: ``laplace(n, --count, seed)`` (true dimension 4n - 4); PCA rank, TwoNN and the
Levina–Bickel MLE on the raw fields, and TwoNN / MLE on the *whitened* fields (projected on the
4n - 4 principal directions, each scaled to unit variance), with --count and --count/4 points.
Whitening removes the anisotropy; what error remains is the neighbour estimators' sample size.

    python benchmarks/dimension.py                   # n in {8, 16, 32}, 2000 fields: ~1 min
Prints a Markdown table and writes JSON to benchmarks/results/dimension.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from brenier._io import write_json
from brenier.datasets import laplace
from brenier.manifold import intrinsic_dimension

ROOT = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="8,16,32")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "dimension.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        X, dim = laplace(n, a.count, a.seed)
        M = X.reshape(len(X), -1)
        M = M - M.mean(0)
        U, _, _ = np.linalg.svd(M, full_matrices=False)
        W = U[:, :dim] * np.sqrt(len(M))
        row = {"n": n, "ambient": n * n, "true": dim, "pca": int(intrinsic_dimension(X, "pca").dimension)}
        for N in (a.count // 4, a.count):
            row[f"twonn_{N}"] = intrinsic_dimension(X[:N], "twonn", seed=a.seed).dimension
            row[f"mle_{N}"] = intrinsic_dimension(X[:N], "mle", seed=a.seed).dimension
            row[f"twonn_white_{N}"] = intrinsic_dimension(W[:N], "twonn", seed=a.seed).dimension
            row[f"mle_white_{N}"] = intrinsic_dimension(W[:N], "mle", seed=a.seed).dimension
        rows.append(row)
    write_json(a.out, {"benchmark": "dimension", "count": a.count, "seed": a.seed, "rows": rows})
    N1, N2 = a.count // 4, a.count
    print(f"| n | ambient | true 4n-4 | PCA rank | TwoNN raw ({N2}) | MLE raw ({N2}) | TwoNN whitened ({N1} / {N2}) | MLE whitened ({N1} / {N2}) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']} | {r['ambient']} | {r['true']} | {r['pca']} | {r[f'twonn_{N2}']:.2f} | {r[f'mle_{N2}']:.2f} | "
              f"{r[f'twonn_white_{N1}']:.1f} / {r[f'twonn_white_{N2}']:.1f} | {r[f'mle_white_{N1}']:.1f} / {r[f'mle_white_{N2}']:.1f} |")
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
