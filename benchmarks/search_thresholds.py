"""Where ``search="auto"`` switches paths: the measurements behind its thresholds.

``BrenierPotential(search="auto")`` picks a path by three constants; each comes from one table here
(the same inputs for every path in one process; timings are the fastest of ``--repeats`` runs, 5 by
default: the small-N cases take milliseconds):

1. ``brute`` vs ``fused`` at small N (``potential.AUTO_BRUTE_MAX_FUSED``): 16,384 Gaussian samples,
   d = 8, Gaussian targets and heights, N in {4, ..., 1024}; argmax, top-2 and top-8 (k <= N).
2. the fused kernel with and without its bfloat16 screen by N (``fused.SCREEN_MIN_TARGETS``;
   only on CPUs with AVX512-BF16): 20,000 samples from the unit ball, targets Gaussian with max
   norm 1 and heights ``-|y|^2 / 2`` plus noise, N in {512, ..., 8192}, d in {16, 64}; argmax and
   top-4, with the share of pairs the screen sent to an exact rescore.
3. ``pruned`` vs ``fused`` by how well the targets cluster (``potential.PRUNE_PAYS_FUSED``):
   60,000 targets in 64 Gaussian clusters of spread 0.005-0.2 (max norm 1), d = 16, Voronoi heights,
   20,000 samples from the unit ball; argmax and top-4, with the share of the pairs the pruned
   search computed -- pruning pays below some share, which is the threshold.

    python benchmarks/search_thresholds.py            # ~3 min on the 2-core CPU
    python benchmarks/search_thresholds.py --only screen

Prints three Markdown tables and writes ``benchmarks/results/search_thresholds.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from brenier._io import write_json  # noqa: E402
from brenier.ot import fused  # noqa: E402
from brenier.ot.potential import BrenierPotential, voronoi_heights  # noqa: E402
from brenier.sources import UniformBall  # noqa: E402


def fastest(f, repeats: int) -> tuple[float, object]:
    f()  # warm-up (allocator, kernel load, pools)
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t0)
    return best, out


def query(p: BrenierPotential, x: torch.Tensor, k: int):
    return p.argmax(x) if k == 1 else p.topk(x, k)


def small_n(args) -> list[dict]:
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(16384, 8, generator=g)
    rows = []
    for n in (4, 8, 16, 32, 64, 128, 256, 512, 1024):
        y = torch.randn(n, 8, generator=g)
        h = torch.randn(n, generator=g).double()
        for k in (v for v in (1, 2, 8) if v <= n):
            row = {"n": n, "k": k}
            for s in ("brute", "fused"):
                p = BrenierPotential(y, h, search=s)
                row[f"{s}_ms"] = 1e3 * fastest(lambda p=p: query(p, x, k), args.repeats)[0]
            row["brute_over_fused"] = row["brute_ms"] / row["fused_ms"]
            rows.append(row)
    return rows


def screen(args) -> list[dict]:
    rows = []
    for d in (16, 64):
        g = torch.Generator().manual_seed(args.seed + d)
        x = UniformBall(d).sample(20000, seed=args.seed + 1).float()
        for n in (512, 1024, 2048, 4096, 8192):
            y = torch.randn(n, d, generator=g)
            y = y / y.norm(dim=1).max()
            h = -0.5 * (y * y).sum(1) + 0.002 * torch.randn(n, generator=g)
            packs = {}
            for scr in (False, True):
                packs[scr] = fused.PackedTargets(y, screen=scr)
                packs[scr].set_heights(h)
            for k in (1, 4):
                t32, out32 = fastest(lambda: fused.topk(x, packs[False], k), args.repeats)
                t16, out16 = fastest(lambda: fused.topk(x, packs[True], k), args.repeats)
                rows.append({"d": d, "n": n, "k": k, "f32_ms": 1e3 * t32, "screen_ms": 1e3 * t16,
                             "f32_over_screen": t32 / t16, "rescored_share": out16[2] / (x.shape[0] * n),
                             "identical": bool(torch.equal(out32[0], out16[0]) and torch.equal(out32[1], out16[1]))})
    return rows


def clustered(args) -> list[dict]:
    d, n = 16, 60000
    x = UniformBall(d).sample(20000, seed=args.seed + 1).float()
    rows = []
    for spread in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
        g = torch.Generator().manual_seed(args.seed)
        c = torch.randn(64, d, generator=g)
        c = c / c.norm(dim=1, keepdim=True).max()
        y = c[torch.randint(0, 64, (n,), generator=g)] + spread * torch.randn(n, d, generator=g)
        y = y / y.norm(dim=1).max()
        h = voronoi_heights(y, torch.zeros(d), 1.0)
        for k in (1, 4):
            row = {"spread": spread, "k": k}
            for s in ("pruned", "fused"):
                p = BrenierPotential(y, h, search=s, seed=args.seed)
                query(p, x[:2000], k)  # builds the pruned search's index outside the timing
                p.reset_count()
                t, _ = fastest(lambda p=p: query(p, x, k), args.repeats)
                row[f"{s}_s"] = t
                row[f"{s}_share"] = p.evaluations / ((args.repeats + 1) * x.shape[0] * n)
            row["pruned_over_fused"] = row["pruned_s"] / row["fused_s"]
            rows.append(row)
    return rows


def _table(title: str, rows: list[dict], cols: list[tuple[str, str, str]]) -> None:
    """A Markdown table: cols are (header, key, format spec)."""
    print(f"\n{title}\n")
    print("| " + " | ".join(h for h, _, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(format(r[key], spec) for _, key, spec in cols) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["small", "screen", "clustered"], help="run one table")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per case; the fastest counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/search_thresholds.json")
    args = ap.parse_args(argv)
    if not fused.available():
        raise SystemExit(f"the fused kernel is unavailable here: {fused.unavailable_reason()}")
    out = {"meta": {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "bf16_screen": fused.bf16_available(), "repeats": args.repeats,
                    "argv": sys.argv[1:], "when": time.strftime("%Y-%m-%d %H:%M")}}
    if args.only in (None, "small"):
        out["small_n"] = small_n(args)
        _table("brute vs fused, 16,384 samples, d = 8 (ms)", out["small_n"],
               [("N", "n", ""), ("k", "k", ""), ("brute", "brute_ms", ".1f"), ("fused", "fused_ms", ".1f"),
                ("brute / fused", "brute_over_fused", ".2f")])
    if args.only in (None, "screen") and fused.bf16_available():
        out["screen"] = screen(args)
        _table("fused kernel: float32 vs bfloat16 screen, 20,000 samples (ms)", out["screen"],
               [("d", "d", ""), ("N", "n", ""), ("k", "k", ""), ("float32", "f32_ms", ".1f"),
                ("screen", "screen_ms", ".1f"), ("float32 / screen", "f32_over_screen", ".2f"),
                ("rescored", "rescored_share", ".4f"), ("same bits", "identical", "")])
    if args.only in (None, "clustered"):
        out["clustered"] = clustered(args)
        _table("pruned vs fused, 60,000 clustered targets, d = 16, 20,000 samples (s)", out["clustered"],
               [("spread", "spread", ""), ("k", "k", ""), ("pruned", "pruned_s", ".3f"),
                ("share computed", "pruned_share", ".3f"), ("fused", "fused_s", ".3f"),
                ("pruned / fused", "pruned_over_fused", ".2f")])
    write_json(args.out, out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
