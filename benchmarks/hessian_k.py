"""How much of the sampled Hessian's entropic weight the best k scores carry (why hessian_k = 4).

Each sample adds p_best p_j / ε to the pair (best, j), p = softmax over its best scores (see
``brenier.ot.montecarlo``). Over the best 8, this prints the share of that weight at each rank
2..8, on the first 20,000 MNIST codes (latent 16) at the contracted-Voronoi start (the solver's
first step), 50,000 Sobol points of the unit ball, ε the solver's 0.15 quantile of the top-2 gaps;
and the rate of an argmax, a top-4 and a top-8 pass over all 60,000 codes (100,000 points, one
process, torch's default threads; noisy on a shared machine: compare them as ratios).

    python benchmarks/hessian_k.py      # writes benchmarks/results/hessian_k.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from brenier.ot.potential import BrenierPotential, voronoi_heights
from brenier.sources import UniformBall

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from mnist_codes import mnist_codes  # noqa: E402


def main() -> None:
    codes, _ = mnist_codes(16)
    y = torch.from_numpy(codes[:20_000])
    src = UniformBall(16)
    pot = BrenierPotential(y, voronoi_heights(y, *src.inscribed_ball()))
    v, _ = pot.topk(src.sample(50_000, seed=1, quasi=True), 8)
    gap = (v[:, 0] - v[:, 1]).double()
    eps = float(torch.quantile(gap, 0.15))
    p = torch.softmax((v - v[:, :1]).double() / eps, 1)
    w = (p[:, :1] * p[:, 1:] / eps).sum(0)
    share = (w / w.sum()).tolist()
    out = {"n": 20_000, "d": 16, "samples": 50_000, "eps": eps, "share_by_rank_2_to_8": share,
           "share_top4": sum(share[:3]), "share_top2": share[0]}
    big = BrenierPotential(torch.from_numpy(codes), torch.zeros(len(codes), dtype=torch.float64))
    x = src.sample(100_000, seed=2, quasi=True)
    rates = {}
    for name, f in (("argmax", lambda: big.argmax(x)), ("top4", lambda: big.topk(x, 4)), ("top8", lambda: big.topk(x, 8))):
        f()
        t = time.perf_counter()
        f()
        rates[name] = len(x) * len(codes) / (time.perf_counter() - t) / 1e9
    out["g_pairs_per_s_at_60000"] = rates
    (ROOT / "results" / "hessian_k.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
