"""Benchmark: strong scaling of the Monte Carlo Newton fit over torch.distributed ranks.

The same problem (N Gaussian targets in R^d, uniform-ball source, seed 0) is fitted for a fixed
number of Newton iterations (tol out of reach) by 1 and by P processes launched with
``torchrun --standalone``, each process with ``--threads`` threads (1 by default). The sample
stream does not depend on P, so every run does the same work and must end with the same heights
(checked). Per iteration (iterations 1 .. K−1; iteration 0 also holds the start-up: the
neighbour search, the score-precision check) we measure on every rank:

* the wall time of an iteration (one Monte Carlo batch: scores, counts, near-tie pairs, the
  collectives, and the Newton step solved on every rank);
* the time inside collectives (``brenier.ot.distributed.PROCESS_STATS``) and its share of the
  iteration (it includes waiting for a slower rank);
* the bytes each rank puts into collectives (its input tensors: the all-reduce of counts, the
  all-gather of near-tie pairs, the ε broadcast); those scale linearly with N at a fixed number
  of samples per target, which gives the extrapolation to ``--bytes-n`` targets.

    python benchmarks/distributed.py                        # N = 20,000, d = 16, P = 1, 2 (CPU)
    python benchmarks/distributed.py --n 2000 --iters 3     # a quick check
    python benchmarks/distributed.py --device cuda --procs 1 2   # NCCL: one GPU per process
    python benchmarks/distributed.py --shard                # targets sharded too

Prints a table and writes ``benchmarks/results/distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
WORKER_ENV = "BRENIER_BENCH_DISTRIBUTED"  # set for the ranks torchrun starts: run as one rank


def worker(a: argparse.Namespace) -> None:
    """One rank: fit, and write this rank's timeline to ``a.part``.<rank>.json."""
    from brenier import SemiDiscreteOT
    from brenier.ot import distributed as D
    from brenier.sources import UniformBall

    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(a.n, a.d, generator=g, dtype=torch.float64)
    marks: list[dict] = []

    def cb(rec: dict) -> None:
        marks.append({"t": time.perf_counter(), "iteration": rec["iteration"], "samples": rec["samples"],
                      "comm": D.PROCESS_STATS.snapshot()})

    ot = SemiDiscreteOT(UniformBall(a.d), method="newton", tol=1e-4, seed=0, device=a.device, max_iter=a.iters,
                        solver_options={"batch0": a.batch or 16 * a.n})
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol is out of reach on purpose: ConvergenceWarning
        ot.fit(y, callback=cb, distributed=True, shard_targets=a.shard)
    rank = int(os.environ.get("RANK", "0"))
    out = {"rank": rank, "world": ot.world_size_, "t0": t0, "marks": marks, "fit_time": ot.fit_time_}
    if rank == 0:
        out["heights"] = torch.as_tensor(ot.heights_).tolist()
    Path(f"{a.part}.{rank}.json").write_text(json.dumps(out))


def run(p: int, a: argparse.Namespace, tmp: Path) -> dict:
    """Launch P ranks under torchrun and summarise their timelines."""
    part = tmp / f"p{p}"
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc_per_node={p}", __file__]
    # the ranks' settings travel in the environment: torchrun's parser would take --n for its own --nnodes
    conf = {"part": str(part), "n": a.n, "d": a.d, "iters": a.iters, "threads": a.threads, "device": a.device,
            "batch": a.batch, "shard": a.shard}
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads), "PYTHONWARNINGS": "ignore",
           WORKER_ENV: json.dumps(conf)}
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"P = {p}: torchrun failed (exit {res.returncode}):\n{res.stderr[-4000:]}")
    ranks = [json.loads(Path(f"{part}.{r}.json").read_text()) for r in range(p)]
    per_rank = []
    for r in ranks:
        m = r["marks"][1:]  # iteration 0 holds the start-up
        if len(m) < 2:
            sys.exit("need --iters >= 3 to time at least two iterations after the first")
        dt = m[-1]["t"] - m[0]["t"]
        k = len(m) - 1
        c0, c1 = m[0]["comm"], m[-1]["comm"]
        per_rank.append({
            "rank": r["rank"], "iteration_s": dt / k, "comm_s": (c1["seconds"] - c0["seconds"]) / k,
            "bytes_per_iteration": (c1["bytes"] - c0["bytes"]) / k,
            "bytes_by_op_per_iteration": {op: (c1["bytes_by_op"].get(op, 0) - c0["bytes_by_op"].get(op, 0)) / k
                                          for op in c1["bytes_by_op"]},
            "calls_per_iteration": (c1["calls"] - c0["calls"]) / k,
        })
    it = max(x["iteration_s"] for x in per_rank)
    return {
        "procs": p, "iteration_s": it,
        "comm_share": max(x["comm_s"] / x["iteration_s"] for x in per_rank),
        "bytes_per_iteration": max(x["bytes_per_iteration"] for x in per_rank),
        "samples_per_iteration": ranks[0]["marks"][-1]["samples"],
        "per_rank": per_rank, "heights": ranks[0]["heights"], "wall_s": time.perf_counter() - t,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--iters", type=int, default=4, help="Newton iterations (the first is not timed)")
    ap.add_argument("--batch", type=int, default=0, help="samples per iteration (default 16 N)")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per process")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shard", action="store_true", help="shard the targets too (shard_targets=True)")
    ap.add_argument("--bytes-n", type=float, default=1e6, help="extrapolate the bytes per iteration to this N")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "distributed.json")
    if WORKER_ENV in os.environ:
        worker(argparse.Namespace(**json.loads(os.environ[WORKER_ENV])))
        return
    a = ap.parse_args()
    if a.iters < 3:
        ap.error("--iters: at least 3 (iteration 0 is start-up; two more give one timed interval)")
    from brenier._io import write_json

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(p, a, Path(tmp)) for p in a.procs]
    # other jobs on the machine skew the speedup (P processes need P idle cores): say how busy it was
    load = {"before": load_before, "after": os.getloadavg()}
    base = rows[0]
    h0 = torch.tensor(base["heights"], dtype=torch.float64)
    print(f"N = {a.n}, d = {a.d}, {rows[0]['samples_per_iteration']} samples per iteration, {a.threads} thread(s) per "
          f"process, device {a.device}{', targets sharded' if a.shard else ''}")
    print(f"{'P':>3} {'s/iteration':>12} {'speedup':>8} {'comm share':>11} {'MB/iteration/rank':>18} {'same heights':>13}")
    for r in rows:
        h = torch.tensor(r.pop("heights"), dtype=torch.float64)
        r["speedup"] = base["iteration_s"] / r["iteration_s"] * base["procs"]
        r["max_rel_height_diff"] = float((h - h0).abs().max() / h0.abs().max())
        scale = a.bytes_n / a.n
        r["bytes_per_iteration_extrapolated"] = {"n": a.bytes_n, "bytes": r["bytes_per_iteration"] * scale,
                                                 "rule": "linear in N at a fixed number of samples per target"}
        print(f"{r['procs']:>3} {r['iteration_s']:>12.3f} {r['speedup']:>8.2f} {100 * r['comm_share']:>10.1f}% "
              f"{r['bytes_per_iteration'] / 2**20:>18.2f} {r['max_rel_height_diff']:>13.1e}")
    for r in rows:
        if r["procs"] > 1:
            b = r["bytes_per_iteration_extrapolated"]["bytes"]
            print(f"P = {r['procs']}: about {b / 2**20:.0f} MB per rank per iteration at N = {a.bytes_n:.0e} (extrapolated "
                  f"linearly from N = {a.n}); by operation at N = {a.n}: "
                  + ", ".join(f"{op} {v / 2**20:.2f} MB" for op, v in r["per_rank"][0]["bytes_by_op_per_iteration"].items()))
    write_json(a.out, {
        "benchmark": "distributed", "n": a.n, "d": a.d, "iters": a.iters, "threads": a.threads, "device": a.device,
        "shard_targets": a.shard, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "torch": torch.__version__, "load_average_1_5_15min": load, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "rows": rows,
    })
    print(f"load average (1 min) {load['before'][0]:.1f} before, {load['after'][0]:.1f} after, on {os.cpu_count()} CPUs")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
