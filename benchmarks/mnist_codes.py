"""Real latent codes for the scale benchmarks: MNIST's 60,000 training images through an autoencoder.

Trains brenier's MNIST autoencoder (the settings of ``benchmarks/aeot_mnist.py``: conv, batch 256,
lr 2e-3, early stopping on a 10 % split, at most ``--train-minutes``), encodes every training
image and normalises the codes as ``AEOT`` does (centred, max norm 1), so they are the targets an
``AEOT`` fit on MNIST would hand the OT solver. Cached: ``runs/codes/mnist_l{latent}.npz`` with
``codes`` (60000, latent) float64 and ``labels`` (60000,).

    python benchmarks/mnist_codes.py --latent 16
    from mnist_codes import mnist_codes; Y, labels = mnist_codes(16)   # (benchmarks/ on sys.path)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

CACHE = Path("runs/codes")


def mnist_codes(latent: int = 16, *, train_minutes: float = 10.0, seed: int = 0, threads: int | None = None):
    """(codes (60000, latent) float64 normalised as AEOT's, labels (60000,) int64); cached on disk."""
    path = CACHE / f"mnist_l{latent}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            return f["codes"], f["labels"]
    from brenier.datasets import load
    from brenier.nets.autoencoder import build_autoencoder, train_autoencoder

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    X, y = load("mnist")
    x = torch.as_tensor(X, dtype=torch.float32)
    ae = build_autoencoder("conv", tuple(x.shape[1:]), latent, seed=seed)
    res = train_autoencoder(ae, x, epochs=30, batch_size=256, lr=2e-3, val_fraction=0.1, patience=3, seed=seed,
                            device=torch.device("cpu"), progress=True, max_time=60 * train_minutes)
    ae.eval()
    with torch.no_grad():
        z = torch.cat([ae.encode(xb) for xb in x.split(4096)]).double()
    z = z - z.mean(0)
    z = z / z.norm(dim=1).max()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, codes=z.numpy(), labels=np.asarray(y, dtype=np.int64))
    info = {"latent": latent, "n": len(z), "train_s": time.perf_counter() - t0, "epochs_run": len(res.history),
            "best_val_loss": res.best_val_loss}
    (CACHE / f"mnist_l{latent}.json").write_text(json.dumps(info, indent=2))
    return z.numpy(), np.asarray(y, dtype=np.int64)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--train-minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    Y, lab = mnist_codes(a.latent, train_minutes=a.train_minutes, threads=a.threads)
    print(Y.shape, lab.shape)
