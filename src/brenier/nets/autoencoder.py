"""Autoencoders: the chart maps between image space and a low-dimensional latent space.

Two small networks, both ending in a sigmoid so that decoded pixels lie in [0, 1]:

* ``MLPAutoencoder`` — fully connected, for small images (the 8 × 8 digits): the flattened image
  (C·H·W) → hidden layers → latent (d) and back.
* ``ConvAutoencoder`` — two stride-2 convolutions (H × W → H/4 × W/4), one hidden linear
  layer, the latent code; the decoder mirrors it with transposed convolutions. For images whose
  sides are multiples of 4 and at least 16 (MNIST's 28 × 28).

``build_autoencoder("auto", shape, d)`` picks the convolutional one when it applies, else the MLP.
``train_autoencoder`` fits either one by Adam on the per-pixel binary cross-entropy, with a
held-out split, early stopping on the held-out loss (the best weights are kept), a fixed seed,
and a checkpoint written atomically after every epoch: a later call with the same data and
settings resumes from it (and reproduces the uninterrupted run: each epoch's shuffle is seeded
by (seed, epoch)).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["Autoencoder", "MLPAutoencoder", "ConvAutoencoder", "build_autoencoder", "autoencoder_from_config",
           "train_autoencoder", "TrainResult"]


class Autoencoder(nn.Module):
    """Base class: ``encode`` (n, C, H, W) → (n, d), ``decode`` (n, d) → (n, C, H, W) in [0, 1]."""

    kind = "base"

    def __init__(self, shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.latent_dim = int(latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits (n, C, H, W)."""
        return self.decode_logits(self.encode(x))

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "latent_dim": self.latent_dim}


class MLPAutoencoder(Autoencoder):
    """Fully connected autoencoder: C·H·W → hidden… → d → …hidden → C·H·W (ReLU between)."""

    kind = "mlp"

    def __init__(self, shape, latent_dim: int, hidden: tuple[int, ...] = (256, 128)):
        super().__init__(shape, latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        p = math.prod(self.shape)
        sizes = [p, *self.hidden, self.latent_dim]
        self.encoder = _mlp(sizes)
        self.decoder = _mlp(sizes[::-1])

    def encode(self, x):
        return self.encoder(x.flatten(1))

    def decode_logits(self, z):
        return self.decoder(z).view(-1, *self.shape)

    def config(self):
        return {**super().config(), "hidden": list(self.hidden)}


class ConvAutoencoder(Autoencoder):
    """Convolutional autoencoder for H, W multiples of 4: two stride-2 convolutions, a hidden
    linear layer, the code; transposed convolutions back."""

    kind = "conv"

    def __init__(self, shape, latent_dim: int, channels: tuple[int, int] = (32, 64), hidden: int = 256):
        super().__init__(shape, latent_dim)
        c, h, w = self.shape
        if h % 4 or w % 4:
            raise ValueError(f"shape: ConvAutoencoder needs image sides that are multiples of 4, got {h} × {w}")
        self.channels = tuple(int(k) for k in channels)
        self.hidden = int(hidden)
        c1, c2 = self.channels
        self._grid = (c2, h // 4, w // 4)
        flat = math.prod(self._grid)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(flat, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.latent_dim),
        )
        self.decoder_fc = nn.Sequential(nn.Linear(self.latent_dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, flat), nn.ReLU())
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c1, c, 4, 2, 1),
        )

    def encode(self, x):
        return self.encoder(x)

    def decode_logits(self, z):
        return self.decoder_conv(self.decoder_fc(z).view(-1, *self._grid))

    def config(self):
        return {**super().config(), "channels": list(self.channels), "hidden": self.hidden}


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


KINDS = ("auto", "mlp", "conv")


def build_autoencoder(kind: str, shape, latent_dim: int, *, seed: int = 0, **options) -> Autoencoder:
    """A freshly initialised autoencoder (weights drawn from ``seed``, global RNG untouched).

    kind: "mlp", "conv", or "auto" (conv when the sides are multiples of 4 and at least 16).
    shape: (C, H, W) of the images; latent_dim: d.
    """
    if kind not in KINDS:
        raise ValueError(f"autoencoder: expected one of {KINDS}, got {kind!r}")
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim: expected a positive integer, got {latent_dim!r}")
    c, h, w = (int(s) for s in shape)
    if kind == "auto":
        kind = "conv" if min(h, w) >= 16 and h % 4 == 0 and w % 4 == 0 else "mlp"
    cls = {"mlp": MLPAutoencoder, "conv": ConvAutoencoder}[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls((c, h, w), latent_dim, **options)


def autoencoder_from_config(cfg: dict[str, Any]) -> Autoencoder:
    """Rebuild an (untrained) autoencoder from ``Autoencoder.config()``."""
    cfg = dict(cfg)
    kind = cfg.pop("kind")
    shape, d = cfg.pop("shape"), cfg.pop("latent_dim")
    cls = {"mlp": MLPAutoencoder, "conv": ConvAutoencoder}[kind]
    for k in ("hidden", "channels"):
        if isinstance(cfg.get(k), list):
            cfg[k] = tuple(cfg[k])
    return cls(tuple(shape), d, **cfg)


# ------------------------------------------------------------------ training
@dataclass
class TrainResult:
    """What ``train_autoencoder`` did. history: one dict per epoch (epoch, train_loss, val_loss,
    val_mse, time); train_index / val_index: the split (into the rows of X)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False
    resumed_from: int = 0
    time_s: float = 0.0
    train_index: torch.Tensor | None = None
    val_index: torch.Tensor | None = None


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of range(n): (train (n - k,), held-out (k,)), k = round(n · val_fraction) ≥ 1."""
    if not (0 < val_fraction < 1):
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    k = min(max(1, round(n * val_fraction)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


def train_autoencoder(
    model: Autoencoder,
    X: torch.Tensor,
    *,
    epochs: int = 200,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    patience: int = 15,
    seed: int = 0,
    device: torch.device | str = "cpu",
    checkpoint: str | Path | None = None,
    progress: bool = False,
    max_time: float | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
    write_checkpoint: bool = True,
) -> TrainResult:
    """Train ``model`` in place on images X (n, C, H, W) float32 in [0, 1]; returns a ``TrainResult``.

    Adam on the mean per-pixel binary cross-entropy; after every epoch the held-out loss is
    measured, the best weights so far are kept, and training stops after ``patience`` epochs
    without improvement (or at ``epochs``, or past ``max_time`` seconds). The model ends with
    the best weights. ``checkpoint``: a JSON file (+ a safetensors file beside it, see
    ``brenier.nets.checkpoint``) written atomically after every epoch; if it exists and belongs to
    the same data and settings, training resumes from the last completed epoch with its counters
    (a finished run — early stop, epoch cap or ``max_time`` reached — is not trained further: its
    best weights are loaded). A file there that is not such a checkpoint is refused
    (``CorruptRunError``), never unpickled. ``write_checkpoint=False`` resumes from the checkpoint
    but never writes it (the other ranks of a torchrun job, which train the same network from the
    same seed: rank 0 alone writes).
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a positive number, got {lr!r}")
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"X: need at least 2 images to hold some out, got {n}")
    dev = torch.device(device)
    train_idx, val_idx = split_indices(n, val_fraction, seed)
    model.to(dev)
    Xd = X.to(dev)
    Xtr, Xval = Xd[train_idx], Xd[val_idx]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                "val_fraction": val_fraction, "seed": seed, "model": model.config()}
    fp = _fingerprint(X, settings)
    res = TrainResult(train_index=train_idx, val_index=val_idx)
    start_epoch, best_state, bad, finished = 0, None, 0, False
    if checkpoint is not None and Path(checkpoint).exists():
        ck = load_checkpoint(checkpoint, model, fingerprint=fp)
        model.load_state_dict(ck.model)
        # param_groups come from this call's (fingerprinted, hence identical) settings; only the
        # per-parameter moments and step counts are restored
        opt.load_state_dict({"state": ck.optimizer, "param_groups": opt.state_dict()["param_groups"]})
        best_state, bad = ck.best_state, ck.bad_epochs
        res.history, res.best_epoch, res.best_val_loss = ck.history, ck.best_epoch, ck.best_val_loss
        res.stopped_early = ck.stopped_early
        finished = ck.finished  # ended by early stopping, the epoch cap or max_time
        start_epoch = res.resumed_from = ck.epoch

    t0 = time.perf_counter()
    done = res.stopped_early or finished or start_epoch >= epochs
    with _Bar(progress and not done, epochs, start_epoch) as bar:
        for epoch in range(start_epoch, epochs if not done else start_epoch):
            te = time.perf_counter()
            model.train()
            perm = torch.randperm(len(Xtr), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).to(dev)
            total = 0.0
            for b in range(0, len(Xtr), batch_size):
                xb = Xtr[perm[b:b + batch_size]]
                loss = F.binary_cross_entropy_with_logits(model(xb), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach().item() * len(xb)
            val_loss, val_mse = evaluate_loss(model, Xval, batch_size=1024)
            rec = {"epoch": epoch + 1, "train_loss": total / len(Xtr), "val_loss": val_loss, "val_mse": val_mse,
                   "time": time.perf_counter() - te}
            res.history.append(rec)
            if not math.isfinite(res.best_val_loss) or val_loss < res.best_val_loss - 1e-6 * abs(res.best_val_loss):
                res.best_val_loss, res.best_epoch, bad = val_loss, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            stop = bad >= patience or (max_time is not None and time.perf_counter() - t0 > max_time)
            res.stopped_early = bad >= patience
            if checkpoint is not None and write_checkpoint:
                save_checkpoint(checkpoint, fingerprint=fp, epoch=epoch + 1, model=model, optimizer=opt,
                                best_state=best_state, bad_epochs=bad, history=res.history, best_epoch=res.best_epoch,
                                best_val_loss=res.best_val_loss, stopped_early=res.stopped_early,
                                finished=bool(stop or epoch + 1 >= epochs))
            bar(epoch + 1, f"train {rec['train_loss']:.4f}  held-out {val_loss:.4f}  (best {res.best_val_loss:.4f} @ {res.best_epoch})")
            if callback is not None:
                callback(rec)
            if stop:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    res.time_s = time.perf_counter() - t0
    return res


@torch.no_grad()
def evaluate_loss(model: Autoencoder, X: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """(mean per-pixel binary cross-entropy, mean per-pixel squared error) of the reconstructions of X."""
    model.eval()
    bce = mse = 0.0
    for b in range(0, len(X), batch_size):
        xb = X[b:b + batch_size]
        logits = model(xb)
        bce += float(F.binary_cross_entropy_with_logits(logits, xb, reduction="sum"))
        mse += float(((torch.sigmoid(logits) - xb) ** 2).sum())
    m = X.numel()
    return bce / m, mse / m


def _fingerprint(X: torch.Tensor, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(str(tuple(X.shape)).encode())
    h.update(X.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


class _Bar:
    """A Rich progress bar over epochs when enabled; a no-op otherwise."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled, self.total, self.start = enabled, total, start

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(TextColumn("[bold]autoencoder"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[msg]}"),
                               TimeElapsedColumn())
            self._p.__enter__()
            self._task = self._p.add_task("train", total=self.total, completed=self.start,
                                          msg="resuming" if self.start else "")
        return self

    def __call__(self, epoch: int, msg: str) -> None:
        if self.enabled:
            self._p.update(self._task, completed=epoch, msg=msg)

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False
