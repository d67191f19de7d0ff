"""Benchmark of the semi-discrete OT solvers: time and score evaluations to reach a TV target.

For each problem size N and dimension d (targets: N standard normal points; source: the
uniform unit ball), every method solves to the same total-variation target with the same
stopping rule (its own debiased Monte Carlo estimate ≤ target), then an INDEPENDENT estimate
from ``--check-samples`` fresh i.i.d. samples checks the result (its own noise floor,
≈ 0.40·sqrt(N / M), is printed beside it). All methods run in this one process, one after the
other, so their times are comparable as ratios.

Methods: ``newton`` (our default), ``adam`` (the AE-OT baseline), ``exact`` (2-D only: exact
power diagram on the disk as a 1024-gon), and POT's ``ot.stochastic.solve_semi_dual_entropic``
on a sampled source (only where its cost matrix fits ``--pot-bytes``).

    python benchmarks/ot_solver.py --quick            # N=1000, d in {2, 16}: a few minutes
    python benchmarks/ot_solver.py --sizes 10000 --dims 16 --methods newton,adam --adam-time-factor 2
                                                          # the issue's bar (adam capped at 2x newton)
    python benchmarks/ot_solver.py                    # the full grid (hours on a 2-core CPU)
    python benchmarks/ot_solver.py --data mnist --sizes 60000 --dims 16 --methods newton,newton-classic \
        --tol 0.03 --solver-tol 0.028 --reference-cap 600 --check-samples 1e7 --out benchmarks/results/ot_solver_mnist60k.json
                                                          # all 60,000 MNIST codes (benchmarks/mnist_codes.py);
                                                          # newton-classic: the solver before the line search, capped

Methods ``newton`` / ``adam`` use ``BrenierPotential``'s default exact search (``"auto"``: pruned
where it pays); ``newton-brute`` is the same Newton solver with the brute-force reference search,
``newton-fresh`` the Newton solver without sample reuse (``reuse=False``: a fresh sample every
iteration, the solver before reuse), ``newton-classic`` the Newton solver without the energy line
search and with the top-8 Hessian from max(32 N, 2^20) samples (the solver of 2026-11); the reference columns are capped at
``--reference-cap`` s, and a capped ``-classic`` run still above twice the target skips the check.
The independent check's own noise floor is removed ("reached": debiased TV ≤ target); the raw
estimate, its floor and the debiased value are all printed.

Writes JSON (``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from brenier import SemiDiscreteOT
from brenier.ot.montecarlo import noise_floor
from brenier.ot.potential import BrenierPotential
from brenier.sources import UniformBall

ROOT = Path(__file__).resolve().parent


class PeakMemory:
    """Peak extra resident memory (CPU, sampled from /proc) or peak CUDA allocation during a block."""

    def __init__(self, device: torch.device):
        self.device = device

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # pragma: no cover - non-Linux
            return 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = self._rss()
            self.peak = self.base
            self._stop = threading.Event()
            self._t = threading.Thread(target=self._watch, daemon=True)
            self._t.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        else:
            self._stop.set()
            self._t.join()
            self.peak = max(self.peak, self._rss())
            self.mb = (self.peak - self.base) / 2**20
        return False


def independent_tv(targets: torch.Tensor, heights: torch.Tensor, source, n_samples: int, seed: int, device) -> dict:
    """TV between the cell masses of ``heights`` (from fresh i.i.d. samples) and uniform weights."""
    pot = BrenierPotential(targets.to(device), heights.to(device))
    n = targets.shape[0]
    counts = torch.zeros(n, dtype=torch.int64, device=device)
    for xb in source.stream(n_samples, min(pot.block_rows, 1 << 16), seed=seed, quasi=False, device=device):
        _, idx = pot.argmax(xb)
        counts += torch.bincount(idx, minlength=n)
    nu = torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    mu = counts.double() / n_samples
    tv = float(0.5 * (mu - nu).abs().sum())
    floor = noise_floor(nu, n_samples)
    return {"tv": tv, "floor": floor, "tv_debiased": math.sqrt(max(tv * tv - floor * floor, 0.0)),
            "max_rel": float(((mu - nu).abs() / nu).max())}


def run_ours(method, y, source, tol, device, seed, opts, trace: bool):
    """Fit with our solver; with ``trace``, also keep (evaluations, time, heights) snapshots."""
    snaps = []
    search = "auto"
    if method.endswith("-brute"):  # the same solver with the brute-force reference search
        method, search = method[: -len("-brute")], "brute"
    if method.endswith("-fresh"):  # Newton without sample reuse: a fresh sample every iteration
        method = method[: -len("-fresh")]
        opts = {**(opts or {}), "reuse": False}
    if method.endswith("-classic"):  # the Newton solver of 2026-11: no energy line search, a top-8
        method = method[: -len("-classic")]  # Hessian from max(32 N, 2^20) samples of each batch
        opts = {**(opts or {}), "line_search": False, "hessian_k": 8, "hessian_samples": max(32 * y.shape[0], 1 << 20)}
    if method.endswith("-reuse"):  # Newton with the nested, reused sample (opt-in)
        method = method[: -len("-reuse")]
        opts = {**(opts or {}), "reuse": True}

    def keep(rec):
        # one line per iteration: a long fit is visible while it runs
        print(f"      it {rec['iteration']} M={rec['samples']:.2e} tv {rec['tv_estimate']:.4f} floor {rec['noise_floor']:.4f} "
              f"fresh {rec.get('tv_fresh_debiased', float('nan')):.4f} reused {rec.get('reused_share', float('nan')):.2f} "
              f"hessian {rec.get('hessian', '-')} t {rec['time']:.0f}s", flush=True)
        if trace and "heights" in rec and (not snaps or rec["evaluations"] >= 1.3 * snaps[-1][0]):
            snaps.append((rec["evaluations"], rec["time"], rec["heights"].detach().cpu().clone()))

    extra = {} if search == "auto" else {"search": search}
    ot = SemiDiscreteOT(source, method=method, tol=tol, device=device, seed=seed, solver_options=opts, **extra)
    t0, c0 = time.perf_counter(), time.process_time()
    ot.fit(y, callback=keep)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU seconds of this process (all its threads): far less sensitive than wall time to other
    # jobs on a shared machine, so the ratios of both are reported
    out = {"time_s": wall, "cpu_s": cpu, "evaluations": ot.n_evaluations_, "iterations": ot.n_iter_, "converged": ot.converged_,
           "internal_tv": ot.tv_error_, "stop_reason": getattr(ot, "stop_reason_", None),
           # the path: each evaluation's batch, its debiased TV and what the plan predicted for the next
           "history": [{k: r[k] for k in ("iteration", "samples", "tv_estimate", "noise_floor", "tv_debiased",
                                          "predicted_tv", "time") if k in r} for r in ot.history_]}
    if method == "exact":
        out["max_rel_error"] = ot.max_rel_error_
    return out, torch.as_tensor(ot._unique_heights), snaps


def first_passing(snaps, check, target):
    """Binary search for the first snapshot whose independent TV, less its noise floor (the
    "reached" rule), is ≤ target (TV falls ~monotonically). (Until 2026-12 it compared the raw
    estimate, which at 60,000 targets sits above 0.03 on its floor alone: it checked every probe
    and found none.)"""
    lo, hi, found = 0, len(snaps) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        c = check(snaps[mid][2])
        if c["tv_debiased"] <= target:
            found, hi = (mid, c), mid - 1
        else:
            lo = mid + 1
    if found is None:
        return None
    i, c = found
    return {"evaluations": snaps[i][0], "time_s": snaps[i][1], "check": c}


def run_pot(y, source, tol, device, seed, pot_bytes):
    """POT's stochastic semi-dual (entropic) solver on a sampled source of n_s points."""
    import ot as pot_lib

    n = y.shape[0]
    ns = int(min(10 * n, pot_bytes // (8 * n)))
    if ns < n:
        return {"skipped": f"cost matrix {10 * n}x{n} exceeds --pot-bytes"}, None
    x = source.sample(ns, seed=seed, quasi=True, dtype=torch.float64).numpy()
    yn = y.numpy()
    t0, c0 = time.perf_counter(), time.process_time()
    M = 0.5 * ((x[:, None, :] - yn[None, :, :]) ** 2).sum(-1) if ns * n * yn.shape[1] < 2e8 else \
        0.5 * ((x**2).sum(1)[:, None] + (yn**2).sum(1)[None, :] - 2 * x @ yn.T)
    a = np.full(ns, 1.0 / ns)
    b = np.full(n, 1.0 / n)
    reg = 1e-3 * float(np.median(M))
    iters = 20 * ns
    _, log = pot_lib.stochastic.solve_semi_dual_entropic(a, b, M, reg, method="ASGD", numItermax=iters, log=True)
    v = log["beta"]  # the dual potential of the targets
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # c(x, y) = |x - y|^2 / 2 and dual v: T(x) = argmin_j c(x, y_j) - v_j = argmax <x, y_j> + v_j - |y_j|^2 / 2
    h = torch.from_numpy(np.asarray(v, dtype=np.float64) - 0.5 * (yn**2).sum(1))
    return {"time_s": wall, "cpu_s": cpu, "evaluations": int(ns * n + iters * n), "iterations": iters, "converged": None,
            "sampled_source": ns, "reg": reg}, h


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("gaussian", "mnist"), default="gaussian",
                    help="targets: N standard normal points, or the first N of MNIST's 60,000 codes "
                         "(benchmarks/mnist_codes.py, latent = d, normalised as AEOT does)")
    ap.add_argument("--reference-cap", type=float, default=None,
                    help="wall-clock cap (s) of the newton-brute reference column")
    ap.add_argument("--sizes", default="1000,10000,60000")
    ap.add_argument("--dims", default="2,16,64")
    ap.add_argument("--methods", default="newton,adam,exact,pot")
    ap.add_argument("--tol", type=float, default=0.02, help="target for the independent TV check")
    ap.add_argument("--solver-tol", type=float, default=0.0175,
                    help="tolerance given to every solver (true TV; below --tol so the check's own noise fits)")
    ap.add_argument("--max-time", type=float, default=None, help="wall-clock cap (s) per Monte Carlo fit")
    ap.add_argument("--trace", action="store_true",
                    help="also find the first iterate that passes the check (extra independent checks)")
    ap.add_argument("--check-samples", type=float, default=2e7, help="fresh samples for the independent check")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adam-lr", type=float, default=None, help="absolute Adam learning rate (default: relative rule)")
    ap.add_argument("--adam-time-factor", type=float, default=None,
                    help="cap adam's wall time at this multiple of newton's in the same run (newton must run first)")
    ap.add_argument("--pot-bytes", type=float, default=1e9)
    ap.add_argument("--quick", action="store_true", help="N=1000, d in {2,16}, 4e6 check samples")
    ap.add_argument("--out", default=str(ROOT / "results" / "ot_solver.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.dims, args.check_samples = "1000", "2,16", 4e6
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else
                          ("cpu" if args.device == "auto" else args.device))
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(s) for s in args.dims.split(",")]
    methods = args.methods.split(",")
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda" else
               f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    rows = []
    for d in dims:
        for n in sizes:
            if args.data == "mnist":
                sys.path.insert(0, str(ROOT))
                from mnist_codes import mnist_codes

                codes, _ = mnist_codes(d)
                y = torch.from_numpy(np.unique(codes[:n], axis=0))  # identical codes would be merged anyway
            else:
                rng = np.random.default_rng(args.seed)
                y = torch.from_numpy(rng.normal(size=(n, d)))
            source = UniformBall(d)
            check_m = int(args.check_samples)
            for method in methods:
                if method == "exact" and d != 2:
                    continue
                print(f"[d={d} N={n}] {method} ...", flush=True)
                with PeakMemory(device) as mem:
                    if method == "pot":
                        res, h = run_pot(y, source, args.tol, device, args.seed, args.pot_bytes)
                    else:
                        opts = {"lr": args.adam_lr} if (method == "adam" and args.adam_lr) else {}
                        if args.max_time and method != "exact":
                            opts["max_time"] = args.max_time
                        if method.endswith(("-brute", "-fresh", "-classic")) and args.reference_cap:
                            opts["max_time"] = args.reference_cap
                        ref = next((r for r in rows if (r["d"], r["N"], r["method"]) == (d, n, "newton")), None)
                        if method == "adam" and args.adam_time_factor and ref is not None:
                            # cap the baseline at a multiple of our default's time in this same run
                            opts["max_time"] = args.adam_time_factor * ref["time_s"]
                        tol = None if method == "exact" else args.solver_tol
                        res, h, snaps = run_ours(method, y, source, tol, device, args.seed, opts or None, args.trace)
                res["peak_mem_mb"] = mem.mb
                capped = res.get("stop_reason") == "max_time" and method.endswith("-classic")
                if capped and (res.get("internal_tv") or math.inf) > 2 * args.tol:
                    # a capped reference still far from the target: its own estimate says so, and an
                    # independent check (minutes of work at this size) would only confirm it
                    res["check"] = None
                    res["reached"] = res["reached_raw"] = False
                elif h is not None:
                    def check(hh):
                        return independent_tv(y, hh, source, check_m, seed=10_000 + args.seed, device=device)
                    res["check"] = check(h)
                    # the check's own noise floor is removed (as the solvers do): "reached" means
                    # the debiased independent estimate is within the target; the raw one is kept too
                    res["reached"] = res["check"]["tv_debiased"] <= args.tol
                    res["reached_raw"] = res["check"]["tv"] <= args.tol
                    if args.trace and method in ("newton", "adam") and res["reached"]:
                        res["first_reached"] = first_passing(snaps, check, args.tol)
                rows.append({"d": d, "N": n, "method": method, **res})
                print("   ", json.dumps({k: v for k, v in rows[-1].items() if k not in ("d", "N", "method")}), flush=True)
    meta = {"machine": machine, "device": str(device), "torch": torch.__version__, "python": sys.version.split()[0],
            "data": args.data, "tol": args.tol, "solver_tol": args.solver_tol, "max_time": args.max_time, "check_samples": int(args.check_samples), "date": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nmachine: {machine}; target TV ≤ {args.tol}; independent check with {int(args.check_samples):.2g} i.i.d. samples\n")
    print(markdown_table(rows))
    print(f"\nwrote {args.out}")


def markdown_table(rows) -> str:
    head = ("| d | N | method | time to target (s) | CPU (s) | score evaluations to target | baseline / this (evals) "
            "| baseline / this (time) | independent TV (its floor) | reached | peak mem (MB) |")
    out = [head, "|" + "---|" * 11]
    def cost(r):  # evaluations and time to the target: the first passing iterate when traced
        f = r.get("first_reached")
        return (f["evaluations"], f["time_s"]) if f else (r["evaluations"], r["time_s"])

    # the baseline of a (d, N): adam (the AE-OT recipe) where it ran, else newton-brute (today's search)
    base = {(r["d"], r["N"]): r for r in rows if r["method"] in ("newton-brute", "newton-fresh")}
    base.update({(r["d"], r["N"]): r for r in rows if r["method"] == "adam"})
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['d']} | {r['N']} | {r['method']} | – | – | – | – | – | {r['skipped']} | – | – |")
            continue
        b = base.get((r["d"], r["N"]))
        (ev, ti), (bev, bti) = cost(r), (cost(b) if b else (None, None))
        # a baseline that did not reach the target within its cap only bounds the ratio from below
        lower = "≥" if b is not None and not b.get("reached") else ""
        ok = b is not None and r.get("reached") and r is not b
        ratio_e = f"{lower}{bev / ev:.1f}×" if ok and ev else "–"
        ratio_t = f"{lower}{bti / ti:.1f}×" if ok else "–"
        c = r.get("check", {})
        tv = f"{c['tv']:.4f} ({c['floor']:.4f}) → {c['tv_debiased']:.4f}" if c else "–"
        extra = f", max rel {r['max_rel_error']:.1e}" if "max_rel_error" in r else ""
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else "–"
        out.append(f"| {r['d']} | {r['N']} | {r['method']} | {ti:.1f} | {cpu} | {ev:.3g} | {ratio_e} | "
                   f"{ratio_t} | {tv}{extra} | {'yes' if r.get('reached') else 'no'} | {r['peak_mem_mb']:.0f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
