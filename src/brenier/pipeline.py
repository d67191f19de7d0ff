"""``AEOT``: the generative model end to end — autoencoder + latent semi-discrete OT + boundary-aware sampler.

The pipeline (An, Lei, Su, Gu et al., *AE-OT: a new generative model based on extended
semi-discrete optimal transport*, ICLR 2020; Lei, Su, Cui, Yau, Gu, *A geometric view of optimal
transportation and generative model*, CAGD 2019):

1. an autoencoder (``brenier.nets``) learns the chart maps ``encode: images (n, C, H, W) → R^d`` and
   ``decode: R^d → images`` of the data manifold;
2. the training codes z_i = encode(x_i) are **normalised** (below) to y_i ∈ the closed unit ball;
3. the semi-discrete OT map from the uniform measure on the unit ball B^d (the source, of the
   latent dimension d) onto ν = (1/N) Σ δ_{y_i} is the gradient of the Brenier potential
   u_h(x) = max_i <x, y_i> + h_i (``SemiDiscreteOT``, Monte Carlo damped Newton);
4. its singular set (facets between neighbouring cells whose targets lie in different modes) is
   detected (``SemiDiscreteOT.singular_set``);
5. to generate: x ~ Uniform(B^d) → ``SemiDiscreteOT.sample`` (a piecewise-linear extension of the
   map that interpolates the targets of the cells around x, never across the singular set when
   ``boundary="respect"``) → denormalise → decode.

Latent normalisation (``normalise`` / ``denormalise``): an isotropic similarity,

    y = (z − m) / s,    m = mean_i z_i  (d,),    s = max_i ‖z_i − m‖  (a scalar),

so the normalised training codes fill the unit ball (the farthest one on its sphere) and share the
source's support and scale. An isotropic similarity φ(y) = s·y + m commutes with optimal transport
for the quadratic cost: if T = ∇u is the Brenier map onto ν, then φ∘T = ∇(s·u + ⟨m, ·⟩) is the
gradient of a convex function pushing the source onto φ#ν, hence the Brenier map onto φ#ν (Brenier
1991; uniqueness). The normalisation therefore changes only the numerics, not the map.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ._array import is_torch, real_array, resolve_device, to_caller
from ._io import atomic_write, write_json
from .nets.autoencoder import KINDS, autoencoder_from_config, build_autoencoder, train_autoencoder
from .ot import SemiDiscreteOT
from .sources import UniformBall, UniformBox

__all__ = ["AEOT", "BOUNDARY_MODES"]

BOUNDARY_MODES = ("respect", "ignore")
SOURCES = ("ball", "box")
FORMAT = "brenier.AEOT/1"


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    return int(v)


class AEOT:
    """Autoencoder + semi-discrete OT generative model for images (n, C, H, W) with values in [0, 1].

    Parameters
    ----------
    latent_dim : int
        d, the dimension of the codes and of the source measure (default 16).
    autoencoder : {"auto", "mlp", "conv"}
        "auto": the convolutional net for sides that are multiples of 4 and ≥ 16 (MNIST 28 × 28,
        frames 32 × 32), the MLP otherwise (digits 8 × 8).
    source : {"ball", "box"}
        The source measure: uniform on the unit ball B^d (default) or on the box [-1, 1]^d.
    device : "auto" | "cpu" | "cuda"
        Where the autoencoder trains and the OT scores are computed ("auto": CUDA if available).
    seed : int
        Seeds the weights, the split, the shuffles, the OT solver and (by default) the sampler.
    epochs, batch_size, lr, patience, val_fraction, max_train_time :
        Autoencoder training (Adam on per-pixel binary cross-entropy, early stopping on a held-out
        ``val_fraction`` of the images after ``patience`` epochs without improvement, at most
        ``epochs`` epochs or ``max_train_time`` seconds).
    ot_tol : float
        Total-variation tolerance of the OT solver (default 0.02: ½ Σ|μ(W_i) − ν_i| ≤ 2 %).
    ot_max_iter : int, optional
        Iteration cap of the Newton solver.
    ae_options : dict, optional
        Extra constructor arguments of the network (``hidden``, ``channels``).
    max_codes : int, optional
        Fit the OT map onto a seeded random subset of at most this many training codes (for large
        data sets: the Monte Carlo solver's cost grows like N² at a fixed tolerance). Default: all.

    Attributes (after ``fit``)
    --------------------------
    autoencoder_ : the trained ``brenier.nets.Autoencoder`` (on ``device_``).
    train_history_ : list of per-epoch dicts (epoch, train_loss, val_loss, val_mse, time).
    codes_ : (N, d) float64 normalised training codes (the OT targets), NumPy; code_index_ (N,): their rows in X.
    center_ : (d,) m, scale_ : float s — the normalisation.
    ot_ : the fitted ``SemiDiscreteOT`` on ``codes_``.
    singular_set_ : ``ot_.singular_set()`` (``.modes (N,)``, ``.n_modes``, ``.facets``), or None when
        the OT layer does not provide it.
    image_shape_ : (C, H, W). timings_ : seconds per stage. device_ : torch.device.
    """

    def __init__(
        self,
        latent_dim: int = 16,
        *,
        autoencoder: str = "auto",
        source: str = "ball",
        device: str | torch.device = "auto",
        seed: int = 0,
        epochs: int = 300,
        batch_size: int = 128,
        lr: float = 1e-3,
        patience: int = 20,
        val_fraction: float = 0.1,
        max_train_time: float | None = None,
        ot_tol: float = 0.02,
        ot_max_iter: int | None = None,
        ae_options: dict[str, Any] | None = None,
        max_codes: int | None = None,
    ):
        self.latent_dim = latent_dim
        self.autoencoder = autoencoder
        self.source = source
        self.device = device
        self.seed = seed
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.val_fraction = val_fraction
        self.max_train_time = max_train_time
        self.ot_tol = ot_tol
        self.ot_max_iter = ot_max_iter
        self.ae_options = ae_options
        self.max_codes = max_codes

    # ------------------------------------------------------------------ params
    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "latent_dim", "autoencoder", "source", "seed", "epochs", "batch_size", "lr", "patience",
            "val_fraction", "max_train_time", "ot_tol", "ot_max_iter", "ae_options", "max_codes")} | {"device": str(self.device)}

    def _validate_params(self) -> None:
        _positive_int(self.latent_dim, "latent_dim")
        if self.autoencoder not in KINDS:
            raise ValueError(f"autoencoder: expected one of {KINDS}, got {self.autoencoder!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source: expected one of {SOURCES}, got {self.source!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")
        for name in ("epochs", "batch_size", "patience"):
            _positive_int(getattr(self, name), name)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1):
            raise ValueError(f"val_fraction: expected a number in (0, 1), got {self.val_fraction!r}")
        if not (isinstance(self.ot_tol, (int, float)) and math.isfinite(self.ot_tol) and self.ot_tol > 0):
            raise ValueError(f"ot_tol: expected a positive number, got {self.ot_tol!r}")
        if self.ot_max_iter is not None:
            _positive_int(self.ot_max_iter, "ot_max_iter")
        if self.max_codes is not None and _positive_int(self.max_codes, "max_codes") < 2:
            raise ValueError(f"max_codes: expected at least 2, got {self.max_codes!r}")
        if self.max_train_time is not None and not (isinstance(self.max_train_time, (int, float)) and self.max_train_time > 0):
            raise ValueError(f"max_train_time: expected a positive number of seconds, got {self.max_train_time!r}")

    def _make_source(self):
        return (UniformBall if self.source == "ball" else UniformBox)(int(self.latent_dim))

    # ------------------------------------------------------------------ fit
    def fit(self, X, *, checkpoint_dir: str | Path | None = None, progress: bool = False) -> "AEOT":
        """Train the autoencoder on X (n, C, H, W) in [0, 1], encode, normalise, fit the OT map, find
        the singular set. Returns ``self``.

        ``checkpoint_dir``: the autoencoder (every epoch) and the OT solver (every iteration) write
        checkpoints there atomically; rerunning ``fit`` with the same data, settings and folder
        resumes from them. ``progress``: Rich progress bars.
        """
        self._validate_params()
        x = self._images(X, "X", min_rows=4)
        self._like_torch = is_torch(X)
        self.device_ = resolve_device(self.device)
        self.image_shape_ = tuple(int(s) for s in x.shape[1:])
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}

        t = time.perf_counter()
        ae = build_autoencoder(self.autoencoder, self.image_shape_, int(self.latent_dim), seed=int(self.seed),
                               **(self.ae_options or {}))
        res = train_autoencoder(
            ae, x, epochs=self.epochs, batch_size=self.batch_size, lr=float(self.lr), val_fraction=float(self.val_fraction),
            patience=self.patience, seed=int(self.seed), device=self.device_, progress=progress,
            max_time=self.max_train_time, checkpoint=None if ckpt is None else ckpt / "autoencoder.ckpt",
        )
        self.autoencoder_ = ae.eval()
        self.train_history_ = res.history
        self.train_info_ = {"best_epoch": res.best_epoch, "best_val_loss": res.best_val_loss,
                            "stopped_early": res.stopped_early, "resumed_from": res.resumed_from,
                            "epochs_run": len(res.history), "kind": ae.kind}
        self.val_index_ = res.val_index.cpu().numpy()
        timings["autoencoder_s"] = time.perf_counter() - t

        t = time.perf_counter()
        z = self._encode_tensor(x).double().cpu()
        self.center_ = z.mean(0).numpy()
        self.scale_ = float((z - z.mean(0)).norm(dim=1).max())
        if not (math.isfinite(self.scale_) and self.scale_ > 0):
            raise ValueError("X: the autoencoder maps all images to one code (are the images all equal?)")
        if self.max_codes is not None and len(z) > self.max_codes:
            keep = np.sort(np.random.default_rng(int(self.seed)).choice(len(z), int(self.max_codes), replace=False))
        else:
            keep = np.arange(len(z))
        self.code_index_ = keep
        self.codes_ = self.normalise(z.numpy()[keep])
        timings["encode_s"] = time.perf_counter() - t

        t = time.perf_counter()
        self.ot_ = SemiDiscreteOT(self._make_source(), method="newton", tol=float(self.ot_tol), device=self.device_,
                                  seed=int(self.seed), max_iter=self.ot_max_iter)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
            self.ot_.fit(self.codes_, checkpoint=None if ckpt is None else ckpt / "ot.ckpt", progress=progress)
        timings["ot_s"] = time.perf_counter() - t

        t = time.perf_counter()
        self.singular_set_ = self.ot_.singular_set() if hasattr(self.ot_, "singular_set") else None
        timings["singular_set_s"] = time.perf_counter() - t
        self.timings_ = timings
        return self

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self) -> None:
        if not hasattr(self, "ot_"):
            from .ot import NotFittedError

            raise NotFittedError("this AEOT is not fitted yet: call fit(X) first")

    def _images(self, X, name: str, min_rows: int = 1) -> torch.Tensor:
        if isinstance(X, torch.Tensor):
            t = X.detach().cpu()
        else:
            t = torch.from_numpy(np.ascontiguousarray(real_array(X, name)))
        if t.is_complex():
            raise TypeError(f"{name}: expected real numbers, got a complex array")
        if t.ndim != 4:
            raise ValueError(f"{name}: expected images of shape (n, C, H, W), got shape {tuple(t.shape)}")
        if t.shape[0] < min_rows:
            raise ValueError(f"{name}: expected at least {min_rows} images, got {t.shape[0]}")
        if hasattr(self, "image_shape_") and tuple(t.shape[1:]) != tuple(self.image_shape_):
            raise ValueError(f"{name}: expected images of shape (n, {', '.join(map(str, self.image_shape_))}) like the "
                             f"training data, got {tuple(t.shape)}")
        t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: contains NaN or infinite values")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"{name}: pixel values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
        return t

    def _codes(self, z, name: str) -> torch.Tensor:
        from ._array import as_points

        return as_points(z, name, dim=int(self.latent_dim), device="cpu", dtype=torch.float64)

    @torch.no_grad()
    def _encode_tensor(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        ae = self.autoencoder_.eval()
        out = [ae.encode(x[b:b + batch].to(self.device_)).cpu() for b in range(0, len(x), batch)]
        return torch.cat(out)

    @torch.no_grad()
    def _decode_tensor(self, z: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        ae = self.autoencoder_.eval()
        out = [ae.decode(z[b:b + batch].to(self.device_, torch.float32)).cpu() for b in range(0, len(z), batch)]
        return torch.cat(out) if out else torch.empty(0, *self.image_shape_)

    # ------------------------------------------------------------------ public maps
    def normalise(self, z):
        """Latent codes z (M, d) → normalised codes y = (z − center_) / scale_ (M, d), same kind as z."""
        self._check_fitted_norm()
        t = self._codes(z, "z")
        y = (t - torch.from_numpy(np.asarray(self.center_))) / self.scale_
        return to_caller(y, is_torch(z))

    def denormalise(self, y):
        """Normalised codes y (M, d) → latent codes z = center_ + scale_ · y (M, d), same kind as y."""
        self._check_fitted_norm()
        t = self._codes(y, "y")
        z = t * self.scale_ + torch.from_numpy(np.asarray(self.center_))
        return to_caller(z, is_torch(y))

    def _check_fitted_norm(self) -> None:
        if not hasattr(self, "center_"):
            self._check_fitted()

    def encode(self, X):
        """Images X (n, C, H, W) in [0, 1] → latent codes z (n, d) (not normalised), X's kind."""
        self._check_fitted()
        z = self._encode_tensor(self._images(X, "X")).double()
        return to_caller(z, is_torch(X))

    def decode(self, z):
        """Latent codes z (n, d) (not normalised) → images (n, C, H, W) in [0, 1], z's kind."""
        self._check_fitted()
        return to_caller(self._decode_tensor(self._codes(z, "z")), is_torch(z))

    def sample_codes(self, n: int, *, seed: int | None = None, boundary: str = "respect"):
        """n new normalised codes (n, d) from ``ot_.sample`` (source sample → piecewise-linear OT extension).

        boundary="respect": the extension never interpolates across the singular set (no mode
        mixture); "ignore": it interpolates across it (the map without the singular-set rule).
        seed: default the model's seed. NumPy unless the model was fitted on a tensor.
        """
        self._check_fitted()
        n = _positive_int(n, "n")
        if boundary not in BOUNDARY_MODES:
            raise ValueError(f"boundary: expected one of {BOUNDARY_MODES}, got {boundary!r}")
        s = int(self.seed) if seed is None else int(seed)
        y = self.ot_.sample(n, seed=s, boundary=boundary)
        return to_caller(torch.as_tensor(np.asarray(y) if not is_torch(y) else y).double().cpu(), self._like_torch)

    def sample(self, n: int, *, seed: int | None = None, boundary: str = "respect", return_codes: bool = False):
        """n new images (n, C, H, W) in [0, 1]: decode(denormalise(sample_codes(n, seed, boundary))).

        With ``return_codes=True`` returns (images, normalised codes (n, d)).
        """
        y = torch.as_tensor(self.sample_codes(n, seed=seed, boundary=boundary)).double()
        z = y * self.scale_ + torch.from_numpy(np.asarray(self.center_))
        imgs = to_caller(self._decode_tensor(z), self._like_torch)
        return (imgs, to_caller(y, self._like_torch)) if return_codes else imgs

    @property
    def modes_(self) -> np.ndarray | None:
        """Mode index (N,) of each training code (from the singular set), or None."""
        ss = getattr(self, "singular_set_", None)
        return None if ss is None else np.asarray(ss.modes)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``path/aeot.json`` (settings, normalisation, history), ``path/autoencoder.safetensors``
        and the OT model in ``path/ot/`` — each file atomically."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.autoencoder_.state_dict().items()}
        atomic_write(path / "autoencoder.safetensors", lambda tmp: save_file(state, tmp))
        self.ot_.save(path / "ot")
        meta = {
            "format": FORMAT,
            "params": self.get_params(),
            "autoencoder": self.autoencoder_.config(),
            "image_shape": list(self.image_shape_),
            "center": np.asarray(self.center_, dtype=np.float64).tolist(),
            "scale": float(self.scale_),
            "train_history": self.train_history_,
            "train_info": self.train_info_,
            "timings": self.timings_,
            "val_index": np.asarray(self.val_index_).tolist(),
            "code_index": np.asarray(self.code_index_).tolist(),
            "like_torch": bool(self._like_torch),
        }
        write_json(path / "aeot.json", meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "AEOT":
        """Read a model written by ``save`` (no refit); the singular set is recomputed if available."""
        path = Path(path)
        if not (path / "aeot.json").is_file() or not (path / "autoencoder.safetensors").is_file():
            raise FileNotFoundError(f"path: {path} does not hold a saved AEOT (aeot.json + autoencoder.safetensors)")
        meta = json.loads((path / "aeot.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"path: {path}/aeot.json has format {meta.get('format')!r}, expected {FORMAT!r}")
        params = dict(meta["params"])
        params["device"] = device
        obj = cls(**params)
        obj.device_ = resolve_device(device)
        ae = autoencoder_from_config(meta["autoencoder"])
        ae.load_state_dict(load_file(str(path / "autoencoder.safetensors")))
        obj.autoencoder_ = ae.to(obj.device_).eval()
        obj.ot_ = SemiDiscreteOT.load(path / "ot", device=device)
        obj.image_shape_ = tuple(meta["image_shape"])
        obj.center_ = np.asarray(meta["center"], dtype=np.float64)
        obj.scale_ = float(meta["scale"])
        obj.codes_ = np.asarray(obj.ot_.targets_.cpu().numpy() if is_torch(obj.ot_.targets_) else obj.ot_.targets_, dtype=np.float64)
        obj.train_history_ = meta["train_history"]
        obj.train_info_ = meta["train_info"]
        obj.timings_ = meta["timings"]
        obj.val_index_ = np.asarray(meta.get("val_index", []), dtype=np.int64)
        obj.code_index_ = np.asarray(meta.get("code_index", np.arange(len(obj.codes_))), dtype=np.int64)
        obj._like_torch = bool(meta.get("like_torch", False))
        obj.singular_set_ = obj.ot_.singular_set() if hasattr(obj.ot_, "singular_set") else None
        return obj

    def __repr__(self) -> str:
        state = (f"fitted: N={len(self.codes_)}, image {self.image_shape_}, OT TV={self.ot_.tv_error_:.3g}"
                 if hasattr(self, "ot_") else "not fitted")
        return f"AEOT(latent_dim={self.latent_dim!r}, autoencoder={self.autoencoder!r}, source={self.source!r}; {state})"
