"""Worker launched by tests/test_distributed.py under torchrun (one process per rank).

usage: _dist_worker.py OUT [--shard] [--max-iter K] [--checkpoint PATH] [--kill-at I] [--stop-at I] [--topk PATH]
Fits the shared test problem (tests/_dist_problem.py); rank 0 writes heights, history and split
cell masses to OUT (JSON). --topk: also the merged top-k of a ShardedPotential on tie-laden
points, written by rank 0 to PATH (safetensors).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dist_problem import problem, query_points, tie_problem  # noqa: E402

from brenier.ot import SemiDiscreteOT  # noqa: E402
from brenier.ot import distributed as D  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--shard", action="store_true")
    ap.add_argument("--max-iter", type=int, default=4)
    ap.add_argument("--checkpoint")
    ap.add_argument("--kill-at", type=int, default=-1, help="rank 1 SIGKILLs itself when this iteration is evaluated")
    ap.add_argument("--stop-at", type=int, default=-1, help="rank 1 SIGSTOPs itself (hangs) when this iteration is evaluated")
    ap.add_argument("--topk")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    y, kw = problem()
    ot = SemiDiscreteOT(max_iter=a.max_iter, **kw)

    def cb(rec):
        if rec["iteration"] == a.kill_at and int(os.environ["RANK"]) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        if rec["iteration"] == a.stop_at and int(os.environ["RANK"]) == 1:
            os.kill(os.getpid(), signal.SIGSTOP)

    ot.fit(y, checkpoint=a.checkpoint, callback=cb, distributed=True, shard_targets=a.shard)
    masses = ot.cell_masses(n_samples=40_000, distributed=True)  # collectives: every rank joins
    cells = ot.assign(query_points(y.shape[1]), distributed=True)
    if D.is_main_process():
        hist = [{k: v for k, v in r.items() if isinstance(v, (int, float, str))} for r in ot.history_]
        out.write_text(json.dumps({"heights": ot.heights_.tolist(), "history": hist, "world": ot.world_size_,
                                   "masses": masses.tolist(), "cells": cells.tolist()}))
    if a.topk:
        comm = D.setup(True)
        y, h, x = tie_problem()
        pot = D.ShardedPotential(y, h, comm)
        v, i = pot.topk(x, 5)
        va, ia = pot.argmax(x)
        if comm.is_main:
            save_file({"v": v, "i": i, "va": va, "ia": ia}, a.topk)


if __name__ == "__main__":
    main()
