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
from ._io import MANIFEST, CorruptRunError, atomic_write, verify_manifest, write_json, write_manifest
from .nets.autoencoder import KINDS, autoencoder_from_config, build_autoencoder, train_autoencoder
from .ot import SemiDiscreteOT
from .ot.distributed import is_main_process
from .sources import UniformBall, UniformBox

__all__ = ["AEOT", "BOUNDARY_MODES"]

BOUNDARY_MODES = ("respect", "ignore")
SOURCES = ("ball", "box")
FORMAT = "brenier.AEOT/1"


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    return int(v)


#: seeds go to torch.manual_seed and NumPy's generators; both take 64-bit integers
_MAX_SEED = 2**63 - 1


def _seed(v: Any, name: str = "seed") -> int:
    """A seed: an integer in [0, 2**63 - 1] (a float such as 1.7 is refused, not truncated)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer in [0, 2**63 - 1], got {type(v).__name__} {v!r}")
    if not 0 <= v <= _MAX_SEED:
        raise ValueError(f"{name}: expected an integer in [0, 2**63 - 1], got {v!r}")
    return int(v)


def _positive_number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
    return float(v)


#: ``AEOT(ot_tol="auto")``: the default tolerance is 0.02 up to this many codes, 0.03 above
AUTO_TOL_CODES = 20_000


def auto_ot_tol(n_codes: int) -> float:
    """The OT tolerance ``ot_tol="auto"`` picks for ``n_codes`` codes: 0.02, or 0.03 above 20,000."""
    return 0.02 if n_codes <= AUTO_TOL_CODES else 0.03


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
    ot_tol : float or "auto"
        Total-variation tolerance of the OT solver, ½ Σ|μ(W_i) − ν_i|. ``"auto"`` (default): 0.02
        for at most 20,000 codes, 0.03 above (the Monte Carlo fit costs about N / tol² samples:
        on all 60,000 MNIST codes 0.02 would cost 2.25× the 0.03 fit). Resolved in ``ot_tol_``.
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
        ot_tol: float | str = "auto",
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
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed <= _MAX_SEED:
            raise ValueError(f"seed: expected an integer in [0, 2**63 - 1], got {self.seed!r}")
        for name in ("epochs", "batch_size", "patience"):
            _positive_int(getattr(self, name), name)
        _positive_number(self.lr, "lr")
        if isinstance(self.val_fraction, bool) or not (isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1):
            raise ValueError(f"val_fraction: expected a number in (0, 1), got {self.val_fraction!r}")
        if not (isinstance(self.ot_tol, str) and self.ot_tol == "auto"):
            _positive_number(self.ot_tol, "ot_tol")
        if self.ot_max_iter is not None:
            _positive_int(self.ot_max_iter, "ot_max_iter")
        if self.max_codes is not None and _positive_int(self.max_codes, "max_codes") < 2:
            raise ValueError(f"max_codes: expected at least 2, got {self.max_codes!r}")
        if self.max_train_time is not None:
            _positive_number(self.max_train_time, "max_train_time")
        if self.ae_options is not None and not (isinstance(self.ae_options, dict)
                                                and set(self.ae_options) <= {"hidden", "channels"}):
            raise ValueError(f"ae_options: expected None or a dict with 'hidden' and/or 'channels', got {self.ae_options!r}")
        resolve_device(self.device)

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
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, Path)):
            raise TypeError(f"checkpoint_dir: expected a folder path or None, got {type(checkpoint_dir).__name__}")
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
            # under torchrun every rank trains the same network (same seed, same batches); the OT fit
            # below is what the ranks share. Rank 0 alone writes the checkpoint, every rank reads it.
            write_checkpoint=is_main_process(),
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
        self.ot_tol_ = auto_ot_tol(len(self.codes_)) if isinstance(self.ot_tol, str) else float(self.ot_tol)
        self.ot_ = SemiDiscreteOT(self._make_source(), method="newton", tol=self.ot_tol_, device=self.device_,
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
        imgs = torch.cat(out) if out else torch.empty(0, *self.image_shape_)
        if not bool(torch.isfinite(imgs).all()):
            # validated weights and normalisation decode finite codes to finite pixels; never hand
            # NaN images on (a PNG of NaNs looks like a result)
            raise ValueError("the decoder produced NaN or infinite pixels (are the model's weights or normalisation "
                             "corrupted, or the codes far outside the training range?)")
        return imgs

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
        if not isinstance(boundary, str) or boundary not in BOUNDARY_MODES:
            raise ValueError(f"boundary: expected one of {BOUNDARY_MODES}, got {boundary!r}")
        s = int(self.seed) if seed is None else _seed(seed)
        y = self.ot_.sample(n, seed=s, boundary=boundary)
        return to_caller(torch.as_tensor(np.asarray(y) if not is_torch(y) else y).double().cpu(), self._like_torch)

    def sample(self, n: int, *, seed: int | None = None, boundary: str = "respect", return_codes: bool = False):
        """n new images (n, C, H, W) in [0, 1]: decode(denormalise(sample_codes(n, seed, boundary))).

        With ``return_codes=True`` returns (images, normalised codes (n, d)). ``seed``: an integer in
        [0, 2**63 - 1] or None (the model's seed); a float is refused (TypeError), not truncated.
        """
        if not isinstance(return_codes, (bool, np.bool_)):
            raise TypeError(f"return_codes: expected True or False, got {return_codes!r}")
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
        """Write the run as a unit: ``path/autoencoder.safetensors``, the OT model in ``path/ot/``,
        ``path/aeot.json`` (settings, normalisation, history) — each atomically — and last
        ``path/manifest.json`` with the sha256 of every one of them. A save that dies part-way
        leaves no manifest, so the folder refuses to load; saving over an existing run first
        removes its manifest, so a mixture of old and new files never loads as valid."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / MANIFEST).unlink(missing_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.autoencoder_.state_dict().items()}
        atomic_write(path / "autoencoder.safetensors", lambda tmp: save_file(state, tmp))
        self.ot_.save(path / "ot")
        # the singular set is saved with the run: recomputing it on every load costs minutes at
        # 60,000 codes (graph detours), and `report`, `sample` and `compare --model` all load
        ss = getattr(self, "singular_set_", None)
        files = ["aeot.json", "autoencoder.safetensors"]
        if ss is not None:
            arrays = {"adjacency": np.asarray(ss.adjacency, dtype=np.int64).reshape(-1, 2),
                      "angles": np.asarray(ss.angles, dtype=np.float64), "detour": np.asarray(ss.detour, dtype=np.float64),
                      "singular": np.asarray(ss.singular, dtype=np.uint8), "modes": np.asarray(ss.modes, dtype=np.int64)}
            if ss.searched is not None:
                arrays["searched"] = np.asarray(ss.searched, dtype=np.float64)
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
            atomic_write(path / SINGULAR_FILE, lambda tmp: save_file(tensors, tmp))
            files.append(SINGULAR_FILE)
        else:
            (path / SINGULAR_FILE).unlink(missing_ok=True)
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
            "singular_set": None if ss is None else {"criterion": ss.criterion, "threshold": float(ss.threshold),
                                                     "exact": bool(ss.exact)},
        }
        write_json(path / "aeot.json", meta)
        # every file of the OT model too (its own manifest included), whatever names it uses;
        # temporaries of an interrupted atomic write (".name.XXXX.tmp") are not part of the run
        ot_files = sorted(p.relative_to(path).as_posix() for p in (path / "ot").rglob("*")
                          if p.is_file() and not p.name.startswith("."))
        write_manifest(path, [*files, *ot_files], MANIFEST_KIND)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "AEOT":
        """Read a run written by ``save`` (no refit). The singular set saved with the run is read
        back and checked against the OT map (a run saved before it was saved is recomputed).

        The manifest is verified first (every file present, unchanged), then every field of
        ``aeot.json`` and every weight is validated against the others. Raises
        ``FileNotFoundError`` when ``path`` holds no saved AEOT and ``CorruptRunError`` (a
        ValueError) naming the file and what is wrong when it holds a damaged one.
        """
        if not isinstance(path, (str, Path)):
            raise TypeError(f"path: expected a folder path, got {type(path).__name__}")
        path = Path(path)
        if not path.is_dir() or not ((path / "aeot.json").exists() or _manifest_kind(path) == MANIFEST_KIND):
            raise FileNotFoundError(f"path: {path} does not hold a saved AEOT (aeot.json + autoencoder.safetensors + ot/)")
        dev = resolve_device(device)
        verify_manifest(path, MANIFEST_KIND)
        jpath = path / "aeot.json"
        meta = _read_meta(jpath)
        try:
            obj = cls(**meta["params"])
            obj._validate_params_loaded()
        except (TypeError, ValueError) as exc:
            raise CorruptRunError(f"{jpath}: bad 'params' ({exc})") from None
        obj.device = device
        obj.device_ = dev
        d = int(obj.latent_dim)
        obj.image_shape_ = _shape(meta["image_shape"], jpath)
        ae = _autoencoder(meta["autoencoder"], obj.image_shape_, d, jpath, path / "autoencoder.safetensors")
        ae.load_state_dict(_weights(path / "autoencoder.safetensors", ae))
        obj.autoencoder_ = ae.to(dev).eval()
        obj.center_ = _finite_vector(meta["center"], d, "center", jpath)
        obj.scale_ = meta["scale"]
        if isinstance(obj.scale_, bool) or not isinstance(obj.scale_, (int, float)) or not (math.isfinite(obj.scale_) and obj.scale_ > 0):
            raise CorruptRunError(f"{jpath}: 'scale' must be a positive finite number, got {obj.scale_!r}")
        obj.scale_ = float(obj.scale_)
        try:
            obj.ot_ = SemiDiscreteOT.load(path / "ot", device=device)
        except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
            raise CorruptRunError(f"{path / 'ot'}: not a readable SemiDiscreteOT ({type(exc).__name__}: {exc})") from None
        targets = obj.ot_.targets_
        obj.codes_ = np.asarray(targets.cpu().numpy() if is_torch(targets) else targets, dtype=np.float64)
        if obj.codes_.ndim != 2 or obj.codes_.shape[1] != d:
            raise CorruptRunError(f"{path / 'ot'}: targets of shape {obj.codes_.shape}, expected (N, {d}) (latent_dim in {jpath})")
        if obj.ot_.source_.dim != d:
            raise CorruptRunError(f"{path / 'ot'}: source of dimension {obj.ot_.source_.dim}, expected {d} (latent_dim in {jpath})")
        obj.train_history_ = _records(meta["train_history"], jpath)
        obj.train_info_ = _train_info(meta["train_info"], jpath)
        obj.timings_ = _numbers(meta["timings"], "timings", jpath)
        obj.val_index_ = _index(meta["val_index"], "val_index", jpath)
        obj.code_index_ = _index(meta["code_index"], "code_index", jpath)
        if len(obj.code_index_) != len(obj.codes_):
            raise CorruptRunError(f"{jpath}: 'code_index' has {len(obj.code_index_)} entries for {len(obj.codes_)} codes")
        obj._like_torch = meta["like_torch"]
        if "singular_set" not in meta:  # a run saved before the singular set was saved with it
            obj.singular_set_ = obj.ot_.singular_set() if hasattr(obj.ot_, "singular_set") else None
        elif meta["singular_set"] is None:
            obj.singular_set_ = None
        else:
            obj.singular_set_ = _read_singular(path / SINGULAR_FILE, meta["singular_set"], obj.ot_, jpath)
            obj.ot_.singular_set_ = obj.singular_set_
        return obj

    def _validate_params_loaded(self) -> None:
        # a saved run's device is the machine's it was fitted on; the caller picks the device
        device, self.device = self.device, "cpu"
        try:
            self._validate_params()
        finally:
            self.device = device

    def __repr__(self) -> str:
        state = (f"fitted: N={len(self.codes_)}, image {self.image_shape_}, OT TV={self.ot_.tv_error_:.3g}"
                 if hasattr(self, "ot_") else "not fitted")
        return f"AEOT(latent_dim={self.latent_dim!r}, autoencoder={self.autoencoder!r}, source={self.source!r}; {state})"


# ------------------------------------------------------------------ validation of a saved run
MANIFEST_KIND = "AEOT"
#: the run's singular set (adjacency, angles, detour, singular, modes), beside aeot.json
SINGULAR_FILE = "singular.safetensors"
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "params": dict, "autoencoder": dict, "image_shape": list, "center": list, "scale": (int, float),
    "train_history": list, "train_info": dict, "timings": dict, "val_index": list, "code_index": list, "like_torch": bool,
}


def _manifest_kind(path: Path) -> str | None:
    """The kind a folder's manifest claims (None when it has none or it is unreadable): an aeot.json
    lost from a run folder is a damaged run, another model's folder is not a run at all."""
    try:
        meta = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        return meta.get("kind") if isinstance(meta, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _read_meta(jpath: Path) -> dict[str, Any]:
    try:
        meta = json.loads(jpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRunError(f"{jpath}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CorruptRunError(f"{jpath}: expected a JSON object, got a {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CorruptRunError(f"{jpath}: format {meta.get('format')!r}, expected {FORMAT!r}")
    for key, typ in _META_TYPES.items():
        if key not in meta:
            raise CorruptRunError(f"{jpath}: missing key {key!r}")
        v = meta[key]
        if not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
            raise CorruptRunError(f"{jpath}: {key!r} has type {type(v).__name__}, expected {getattr(typ, '__name__', 'a number')}")
    return meta


def _shape(v: list, jpath: Path) -> tuple[int, int, int]:
    if len(v) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v):
        raise CorruptRunError(f"{jpath}: 'image_shape' must be three positive integers (C, H, W), got {v!r}")
    return tuple(v)  # type: ignore[return-value]


def _finite_vector(v: list, d: int, key: str, jpath: Path) -> np.ndarray:
    if len(v) != d or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise CorruptRunError(f"{jpath}: {key!r} must be {d} numbers (latent_dim), got {len(v)} entries")
    a = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise CorruptRunError(f"{jpath}: {key!r} contains NaN or infinite values")
    return a


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(d: dict, key: str, jpath: Path) -> dict[str, float]:
    if not all(isinstance(k, str) and _is_number(v) for k, v in d.items()):
        raise CorruptRunError(f"{jpath}: {key!r} must map names to numbers")
    return d


def _records(history: list, jpath: Path) -> list[dict[str, float]]:
    """train_history: one record of numbers per epoch (the report plots them)."""
    for i, rec in enumerate(history):
        if not isinstance(rec, dict) or not all(_is_number(v) for v in rec.values()) or not _is_number(rec.get("epoch")):
            raise CorruptRunError(f"{jpath}: 'train_history' entry {i} must be a record of numbers with an 'epoch'")
    return history


_TRAIN_INFO = {"best_epoch": int, "best_val_loss": (int, float), "stopped_early": bool, "resumed_from": int,
               "epochs_run": int, "kind": str}


def _train_info(info: dict, jpath: Path) -> dict[str, Any]:
    for key, typ in _TRAIN_INFO.items():
        v = info.get(key)
        if not isinstance(v, typ) or (typ is not bool and isinstance(v, bool)):
            raise CorruptRunError(f"{jpath}: 'train_info.{key}' is missing or of type {type(v).__name__}")
    return info


def _index(v: list, key: str, jpath: Path) -> np.ndarray:
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise CorruptRunError(f"{jpath}: {key!r} must be a list of non-negative integers")
    return np.asarray(v, dtype=np.int64)


def _autoencoder(cfg: dict, shape: tuple[int, int, int], d: int, jpath: Path, wpath: Path):
    """The network described by ``cfg``, which must agree with image_shape and latent_dim."""
    if cfg.get("kind") not in ("mlp", "conv"):
        raise CorruptRunError(f"{jpath}: autoencoder kind {cfg.get('kind')!r}, expected 'mlp' or 'conv'")
    if cfg.get("shape") != list(shape) or cfg.get("latent_dim") != d:
        raise CorruptRunError(f"{jpath}: the autoencoder (shape {cfg.get('shape')!r}, latent_dim {cfg.get('latent_dim')!r}) "
                              f"does not match image_shape {list(shape)} and latent_dim {d}")
    for k in ("hidden", "channels"):
        v = cfg.get(k)
        ok = v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or (
            isinstance(v, list) and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v))
        if not ok:
            raise CorruptRunError(f"{jpath}: autoencoder {k!r} must be positive layer widths, got {v!r}")
    if set(cfg) - {"kind", "shape", "latent_dim", "hidden", "channels"}:
        raise CorruptRunError(f"{jpath}: unknown autoencoder settings {sorted(set(cfg) - {'kind', 'shape', 'latent_dim', 'hidden', 'channels'})}")
    try:
        # sized on the meta device first (no memory): tampered layer widths could otherwise
        # allocate gigabytes before the weight file is even compared
        with torch.device("meta"):
            probe = autoencoder_from_config(cfg)
        need = sum(v.numel() * v.element_size() for v in probe.state_dict().values())
        have = wpath.stat().st_size
        if need > have:
            raise CorruptRunError(f"{jpath}: the autoencoder settings describe {need:,} bytes of weights, but {wpath.name} "
                                  f"holds {have:,}")
        return autoencoder_from_config(cfg)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CorruptRunError):
            raise
        raise CorruptRunError(f"{jpath}: autoencoder settings cannot build a network ({exc})") from None


def _read_singular(fpath: Path, spec: Any, ot, jpath: Path):
    """The saved ``SingularSet`` of a run, every array checked against the others and the OT map."""
    from .singular import CRITERIA, SingularSet

    if not isinstance(spec, dict) or set(spec) != {"criterion", "threshold", "exact"}:
        raise CorruptRunError(f"{jpath}: 'singular_set' must be null or an object with criterion, threshold, exact")
    crit, t, exact = spec["criterion"], spec["threshold"], spec["exact"]
    if crit not in CRITERIA or not isinstance(exact, bool) or isinstance(t, bool) or not isinstance(t, (int, float)) \
            or not math.isfinite(t) or not (t > 1.0 if crit == "detour" else 0.0 < t < math.pi):
        raise CorruptRunError(f"{jpath}: 'singular_set' holds an invalid criterion / threshold / exact: {spec!r}")
    try:
        a = load_file(str(fpath))
    except FileNotFoundError:
        raise CorruptRunError(f"{fpath}: missing (aeot.json says the run has a singular set)") from None
    except Exception as exc:  # safetensors' SafetensorError on a malformed header or a short file
        raise CorruptRunError(f"{fpath}: not a readable safetensors file ({exc})") from None
    want = {"adjacency": torch.int64, "angles": torch.float64, "detour": torch.float64, "singular": torch.uint8, "modes": torch.int64}
    if "searched" in a:  # how far each detour is exact (since 2026-12; absent: exact to KAPPA_MAX)
        want["searched"] = torch.float64
    if set(a) != set(want) or any(a[k].dtype != dt for k, dt in want.items()):
        raise CorruptRunError(f"{fpath}: expected the tensors {sorted(want)} with dtypes int64 / float64 / uint8")
    y = ot._unique_targets.numpy().astype(np.float64)
    n = len(y)
    adj, ang, det, sing, modes = (a[k].numpy() for k in ("adjacency", "angles", "detour", "singular", "modes"))
    e = adj.shape[0] if adj.ndim else -1  # a 0-d tensor has no length: refused just below
    if adj.ndim != 2 or adj.shape[1] != 2 or any(v.shape != (e,) for v in (ang, det, sing)) or modes.shape != (n,):
        raise CorruptRunError(f"{fpath}: shapes do not fit: adjacency {adj.shape}, angles {ang.shape}, detour {det.shape}, "
                              f"singular {sing.shape}, modes {modes.shape} for {n} targets")
    if e and (adj.min() < 0 or adj.max() >= n or not (adj[:, 0] < adj[:, 1]).all()):
        raise CorruptRunError(f"{fpath}: adjacency must hold pairs i < j of target indices in [0, {n})")
    if n and (modes.min() < 0 or modes.max() >= n) or not np.isfinite(ang).all() or np.isnan(det).any() or sing.max(initial=0) > 1:
        raise CorruptRunError(f"{fpath}: modes out of range, angles not finite, detours NaN or singular not 0/1")
    sing = sing.astype(bool)
    if not np.array_equal(sing, (det if crit == "detour" else ang) > t):
        raise CorruptRunError(f"{fpath}: the singular flags disagree with the saved {crit}s and threshold {t:g}")
    searched = a["searched"].numpy() if "searched" in a else None
    if searched is not None and (searched.shape != (e,) or np.isnan(searched).any() or (searched < 1.0).any()):
        raise CorruptRunError(f"{fpath}: 'searched' must hold one ratio >= 1 per adjacency pair, got shape {searched.shape}")
    return SingularSet(adjacency=adj, angles=ang, detour=det, singular=sing, modes=modes, targets=y,
                       criterion=crit, threshold=float(t), exact=exact, searched=searched)


def _weights(wpath: Path, ae) -> dict[str, torch.Tensor]:
    """The tensors of ``wpath``, checked against ``ae``'s state dict: same names, shapes, dtypes, finite."""
    try:
        state = load_file(str(wpath))
    except Exception as exc:  # safetensors' SafetensorError on a malformed header or a short file
        raise CorruptRunError(f"{wpath}: not a readable safetensors file ({exc})") from None
    expected = ae.state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise CorruptRunError(f"{wpath}: the tensors do not match the network in aeot.json (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in state.items():
        e = expected[k]
        if v.shape != e.shape or v.dtype != e.dtype:
            raise CorruptRunError(f"{wpath}: tensor {k!r} has shape {tuple(v.shape)} / {v.dtype}, expected {tuple(e.shape)} / {e.dtype} "
                                  f"(from aeot.json's autoencoder and latent_dim)")
        if v.dtype.is_floating_point and not bool(torch.isfinite(v).all()):
            raise CorruptRunError(f"{wpath}: tensor {k!r} contains NaN or infinite values")
    return state
