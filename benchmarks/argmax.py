"""Benchmark of the exact argmax behind ``BrenierPotential``: brute force vs tiled vs pruned vs fused (vs KeOps).

On the same inputs, in one process (timings on a shared machine are noisy: compare the ratios):

* ``mm``      — ``torch.mm`` alone into a cache-sized output tile, no reduction: the matmul rate
               (the ceiling of any path that computes every score);
* ``brute``   — today's path: ``addmm`` + ``max`` on blocks of ``memory_budget`` bytes
               (``search="brute"``, the reference);
* ``tiled``   — cache-sized tiles, ``amax`` per strip, index only on improvement (``search="tiled"``);
* ``pruned``  — exact search over k-means groups of targets with bounds (``search="pruned"``); its
               index build (k-means) is timed apart (``index_s``) and the time column excludes it;
* ``auto``    — the default, in its steady state within a fit (index built; heights just set, so
               one probe of the pruned search, then pruned or tiled), probe included in its time;
* ``fused``   — the fused CPU kernel (``search="fused"``, ``brenier.ot.fused``): scores kept in
               registers; with its bfloat16 screen where the CPU has AVX512-BF16, and then also
               ``fused-f32``, the same kernel without the screen, and, where the default screen
               has two levels (targets near a subspace), ``fused-1level`` with one;
* ``keops``   — ``pykeops`` ``LazyTensor.argmax`` when importable (an optional extra; compiled at
               first use, that compile time is excluded), on at most ``--keops-rows`` samples.

For each: pairs/s as brute-force equivalents (M·N / time), the score evaluations actually computed
per M·N (pairs + group bounds), the speedup over ``brute``, and the share of samples whose argmax is
identical to ``brute``'s (float32 scores: a pair can round differently in a differently-shaped
block, so near-ties may legitimately differ; the count is printed).

Targets: N standard normal points (``gaussian``) or real MNIST autoencoder codes
(``benchmarks/mnist_codes.py``; a seeded random subset when N < 60,000), normalised as ``AEOT``
does (centred, max norm 1). Heights: the contracted-Voronoi start every fit begins from
(``voronoi_heights``), then ``--steps`` damped mass-balancing steps (each height moves by at most
one median best-vs-second score gap toward its target mass, masses from ``--step-samples``
samples) so the heights are no longer exactly a Voronoi diagram's. Samples: ``UniformBall(d)``,
the source ``AEOT`` uses.

    python benchmarks/argmax.py --quick             # N = 10^4, d = 16, both data sets: ~1 min
    python benchmarks/argmax.py                     # N in {10^4, 6·10^4}, d in {16, 64}: ~10 min
    python benchmarks/argmax.py --device cuda       # on a GPU (pruned/tiled stay exact; no KeOps CPU)

Prints a Markdown table and writes ``benchmarks/results/argmax.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from brenier._io import write_json  # noqa: E402
from brenier.ot import fused  # noqa: E402
from brenier.ot.potential import PROBE_ROWS, TILE_COLUMNS, TILE_ELEMENTS, BrenierPotential, voronoi_heights  # noqa: E402
from brenier.sources import UniformBall  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device, f):
    _sync(device)
    t0 = time.perf_counter()
    out = f()
    _sync(device)
    return time.perf_counter() - t0, out


def targets(data: str, n: int, d: int, seed: int) -> np.ndarray | None:
    """(n, d) float64 targets, centred, max norm 1; None when the MNIST codes are not cached."""
    if data == "gaussian":
        y = np.random.default_rng(seed).standard_normal((n, d))
    else:
        from mnist_codes import CACHE

        if not (CACHE / f"mnist_l{d}.npz").is_file():
            return None  # training them takes ~10 min: run benchmarks/mnist_codes.py --latent d
        from mnist_codes import mnist_codes

        y, _ = mnist_codes(d)
        if n < len(y):
            y = y[np.sort(np.random.default_rng(seed).choice(len(y), n, replace=False))]
        elif n > len(y):
            raise SystemExit(f"--sizes: MNIST has {len(y)} codes, asked for {n}")
    y = y - y.mean(0)
    return y / np.linalg.norm(y, axis=1).max()


def fitted_heights(y: torch.Tensor, steps: int, n_samples: int, seed: int, device) -> torch.Tensor:
    """The Voronoi start, then ``steps`` damped mass-balancing steps (see the module docstring)."""
    n, d = y.shape
    h = voronoi_heights(y, torch.zeros(d), 1.0).to(device)
    src = UniformBall(d)
    nu = 1.0 / n
    for s in range(steps):
        pot = BrenierPotential(y, h, search="auto", seed=seed)
        x = src.sample(n_samples, seed=seed + 1000 + s, device=device)
        v, i = pot.topk(x, 2)
        gap = float((v[:, 0] - v[:, 1]).double().median())
        mass = torch.bincount(i[:, 0], minlength=n).double() / n_samples
        h = h + gap * ((nu - mass) / nu).clamp(-1.0, 1.0)
    return h


def keops_argmax(x: torch.Tensor, y: torch.Tensor, h: torch.Tensor):
    from pykeops.torch import LazyTensor

    xi = LazyTensor(x[:, None, :].contiguous())
    yj = LazyTensor(y[None, :, :].contiguous())
    hj = LazyTensor(h[None, :, None].contiguous())
    return ((xi | yj) + hj).argmax(dim=1).view(-1)


def matmul_rate(x: torch.Tensor, yt: torch.Tensor) -> float:
    """Pairs/s of ``torch.mm`` alone, into one cache-sized output tile (no reduction)."""
    n = yt.shape[1]
    cols = min(n, TILE_COLUMNS)
    rows = max(1, TILE_ELEMENTS // cols)
    buf = torch.empty(rows, cols, dtype=x.dtype, device=x.device)
    m = min(x.shape[0], 8 * rows)

    def run():
        for s in range(0, m, rows):
            xb = x[s : s + rows]
            for c in range(0, n, cols):
                w = min(cols, n - c)
                torch.mm(xb, yt[:, c : c + w], out=buf[: xb.shape[0], :w])

    run()  # warm-up
    # best of 3: on a shared machine a single short run is at the mercy of the other processes
    t = min(_timed(x.device, run)[0] for _ in range(3))
    return m * n / t


def bench_case(data, n, d, args, device) -> dict | None:
    y_np = targets(data, n, d, args.seed)
    if y_np is None:
        print(f"  (skip {data} d={d}: no cached MNIST codes; run benchmarks/mnist_codes.py --latent {d})")
        return None
    y = torch.as_tensor(y_np, dtype=torch.float32, device=device)
    t_h, h = _timed(device, lambda: fitted_heights(y, args.steps, args.step_samples, args.seed, device))
    m = args.samples
    x = UniformBall(d).sample(m, seed=args.seed + 7, device=device).to(torch.float32)
    row = {"data": data, "n": n, "d": d, "m": m, "steps": args.steps, "heights_s": t_h}
    names = ["brute", "tiled", "pruned"] + (["fused"] if fused.available() and device.type == "cpu" else []) + ["auto"]
    pots = {s: BrenierPotential(y, h, search=s, seed=args.seed) for s in names}
    if "fused" in names and fused.bf16_available() and n >= fused.SCREEN_MIN_TARGETS:

        def packed_as(name: str, packed: fused.PackedTargets) -> None:
            """A fused potential on the given packing, timed beside "fused" (same answers, bit for bit)."""
            if name != "fused":
                names.insert(names.index("fused"), name)
                pots[name] = BrenierPotential(y, h, search="fused", seed=args.seed)
            pots[name]._packed = packed
            packed.set_heights(pots[name]._h[0])

        default = fused.PackedTargets(y)  # what "fused" builds itself: built once here
        packed_as("fused", default)
        packed_as("fused-f32", fused.PackedTargets(y, screen=False))  # without the bfloat16 screen
        if default.rot is not None:  # targets near a subspace: two levels by default; one beside it
            packed_as("fused-1level", fused.PackedTargets(y, screen=True, rank=d))
    row["mm_pairs_per_s"] = matmul_rate(x, pots["brute"]._yt)
    # warm-up (allocator, BLAS init; for auto also its index and a first decision), then the timed
    # runs on all M; auto is timed in its steady state within a fit: index built, heights just set,
    # so its time includes one probe
    for name, p in pots.items():
        p.argmax(x[: (PROBE_ROWS + 256) if name == "auto" else 256])
        p.reset_count()
    row["index_s"] = _index_time(y, h, args.seed, device)
    results = {}
    for name in names:
        p = pots[name]
        t = math.inf
        for _ in range(args.repeats):  # the fastest of a few runs: the machine is shared, its noise one-sided
            if name == "auto":
                p.set_heights(h)  # forget the last decision: the probe is part of the timed call
            p.reset_count()
            ti, (_, idx) = _timed(device, lambda p=p: p.argmax(x))
            t = min(t, ti)
        results[name] = {"s": t, "pairs_per_s": m * n / t, "evals_per_mn": p.evaluations / (m * n),
                         "bounds_per_mn": p.bound_evaluations / (m * n)}
        if name == "auto":
            results[name]["choice"] = p._choice or "tiled"
            results[name]["probe"] = p.last_probe
        results[name]["idx"] = idx
    if args.keops and device.type == "cpu":
        try:
            mk = min(m, args.keops_rows)
            keops_argmax(x[:64], y, h.float())  # compile (cached on disk after the first run)
            t, idx = _timed(device, lambda: keops_argmax(x[:mk], y, h.float()))
            results["keops"] = {"s": t * m / mk, "pairs_per_s": mk * n / t, "evals_per_mn": 1.0, "rows": mk,
                                "idx": torch.cat([idx, results["brute"]["idx"][mk:]])}
        except Exception as e:  # optional: not installed, or its compile failed
            row["keops_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    ref = results["brute"]["idx"]
    for name, r in results.items():
        idx = r.pop("idx")
        r["identical"] = float((idx == ref).double().mean())
        r["n_different"] = int((idx != ref).sum())
        r["speedup"] = results["brute"]["s"] / r["s"]
    row["methods"] = results
    if args.topk > 1:  # the Newton Hessian's query: a top-k per sample
        tops, ref_idx = {}, None
        for name in [v for v in names if v != "pruned"]:
            p = pots[name]
            p.topk(x[:256], args.topk)  # warm-up
            t = math.inf
            for _ in range(args.repeats):
                if name == "auto":
                    p.set_heights(h)
                ti, (_, idx) = _timed(device, lambda p=p: p.topk(x, args.topk))
                t = min(t, ti)
            ref_idx = idx if ref_idx is None else ref_idx  # brute comes first
            tops[name] = {"s": t, "pairs_per_s": m * n / t, "speedup": tops["brute"]["s"] / t if tops else 1.0,
                          "identical_rows": float((idx == ref_idx).all(1).double().mean())}
        row["topk"] = {"k": args.topk, "methods": tops}
    return row


def _index_time(y, h, seed, device) -> float:
    p = BrenierPotential(y, h, search="pruned", seed=seed)
    t, _ = _timed(device, p._ensure_index)
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,60000", help="comma-separated N")
    ap.add_argument("--dims", default="16,64", help="comma-separated d")
    ap.add_argument("--data", default="gaussian,mnist", help="comma-separated: gaussian, mnist")
    ap.add_argument("--samples", type=int, default=20000, help="M samples per case")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per method; the fastest counts")
    ap.add_argument("--steps", type=int, default=2, help="mass-balancing steps after the Voronoi start")
    ap.add_argument("--step-samples", type=int, default=100000)
    ap.add_argument("--topk", type=int, default=4, help="also time a top-k (the Newton Hessian's query); 0: skip")
    ap.add_argument("--keops", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--keops-rows", type=int, default=2000, help="samples KeOps runs on (it is slow on CPU)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="N = 10^4, d = 16, M = 10^4, one step")
    ap.add_argument("--out", default="benchmarks/results/argmax.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.dims, args.samples, args.steps, args.step_samples = "10000", "16", 10000, 1, 50000
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for data in args.data.split(","):
        for d in (int(v) for v in args.dims.split(",")):
            for n in (int(v) for v in args.sizes.split(",")):
                print(f"{data} N={n} d={d} ...", flush=True)
                row = bench_case(data, n, d, args, device)
                if row is not None:
                    rows.append(row)
                    _print_rows([row])
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
            "machine": platform.processor() or platform.machine(), "argv": sys.argv[1:],
            "tile_elements": TILE_ELEMENTS, "tile_columns": TILE_COLUMNS}
    write_json(args.out, {"meta": meta, "rows": rows})
    print()
    _print_rows(rows)
    print(f"\nwrote {args.out}")
    return 0


def _print_rows(rows) -> None:
    print("| data | N | d | method | G pairs/s (brute-eq.) | vs mm | evals / MN | speedup vs brute | identical argmax |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        mm = r["mm_pairs_per_s"]
        print(f"| {r['data']} | {r['n']} | {r['d']} | mm | {mm / 1e9:.2f} | 1.00 | 1 | | |")
        for name, s in r["methods"].items():
            label = name + (f" → {s['choice']}" if name == "auto" else "")
            if name == "pruned":
                label += f" (index {r['index_s']:.1f} s)"
            diff = f" ({s['n_different']} differ)" if s["n_different"] else ""
            print(f"| {r['data']} | {r['n']} | {r['d']} | {label} | {s['pairs_per_s'] / 1e9:.2f} | "
                  f"{s['pairs_per_s'] / mm:.2f} | {s['evals_per_mn']:.3g} | {s['speedup']:.2f}× | "
                  f"{100 * s['identical']:.3f} %{diff} |")
        top = r.get("topk")
        for name, s in (top["methods"].items() if top else ()):
            print(f"| {r['data']} | {r['n']} | {r['d']} | top-{top['k']} {name} | {s['pairs_per_s'] / 1e9:.2f} | "
                  f"{s['pairs_per_s'] / mm:.2f} | 1 | {s['speedup']:.2f}× | {100 * s['identical_rows']:.3f} % of rows |")


if __name__ == "__main__":
    raise SystemExit(main())
