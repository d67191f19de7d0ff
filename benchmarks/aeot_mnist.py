"""AEOT on MNIST's 60,000 training images within 30 minutes on a 2-core CPU (one torch thread).

Settings (documented in docs/pipeline.md): conv autoencoder, latent_dim 16, batch 256, lr 2e-3, at most
``--epochs`` epochs or ``--train-minutes`` minutes, early stopping (patience 3) on a 10 % held-out
split; the OT map onto a seeded subset of ``--max-codes`` codes with TV tolerance ``--ot-tol``.
Writes the saved model to ``--out`` and the timings to benchmarks/results/aeot_mnist.json.

    nice -n 10 python benchmarks/aeot_mnist.py --out runs/mnist
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from brenier.datasets import load
from brenier.pipeline import AEOT


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/mnist")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--train-minutes", type=float, default=15.0)
    ap.add_argument("--max-codes", type=int, default=10_000)
    ap.add_argument("--ot-tol", type=float, default=0.05)
    ap.add_argument("--ot-max-iter", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    X, y = load("mnist")
    t_load = time.perf_counter() - t0
    model = AEOT(latent_dim=16, device="cpu", seed=0, epochs=args.epochs, batch_size=256, lr=2e-3, patience=3,
                 max_train_time=60 * args.train_minutes, ot_tol=args.ot_tol, ot_max_iter=args.ot_max_iter,
                 max_codes=args.max_codes)
    model.fit(X, checkpoint_dir=Path(args.out) / "checkpoints", progress=True)
    model.save(args.out)
    # run.json: lets `brenier report RUN` reload the data for the evaluation
    (Path(args.out) / "run.json").write_text(json.dumps({"data": "mnist", "limit": None, "n_images": int(len(X))}))
    total = time.perf_counter() - t0
    res = {"n_images": int(len(X)), "load_s": t_load, **model.timings_, "total_s": total,
           "epochs_run": model.train_info_["epochs_run"], "best_val_loss": model.train_info_["best_val_loss"],
           "val_mse": model.train_history_[-1]["val_mse"], "ot_tv": model.ot_.tv_error_, "ot_iter": model.ot_.n_iter_,
           "ot_converged": model.ot_.converged_, "settings": {**vars(args)}}
    print(json.dumps(res, indent=2, default=str))
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/aeot_mnist.json").write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
