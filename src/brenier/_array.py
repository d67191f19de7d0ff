"""Array plumbing at the public edge: NumPy or torch in, the caller's kind out.

Everything inside brenier computes in torch on one device; these helpers convert inputs,
validate them with clear messages, and convert results back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ArrayLike = Any  # np.ndarray | torch.Tensor | sequence


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Map ``"auto"`` (or None) to CUDA when available, else CPU; validate anything else."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:K', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was requested but no CUDA device is available")
    return dev


def first_unique_rows(a: np.ndarray) -> np.ndarray:
    """Indices (n,) of the first occurrence of each distinct row of ``a`` (M, ...), increasing:
    identical frames (one state with one picture) kept once."""
    a = np.asarray(a)
    _, first = np.unique(a.reshape(len(a), -1), axis=0, return_index=True)
    return np.sort(first)


def is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def real_array(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a NumPy array of real numbers (booleans allowed); a torch tensor is copied to the
    host. Raises TypeError naming ``name`` for anything else (objects, strings, complex)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name}: expected an array of numbers, got {type(x).__name__}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name}: expected an array of numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name}: expected real numbers, got a complex array")
    return arr


def as_points(
    x: ArrayLike,
    name: str,
    *,
    dim: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    min_rows: int = 1,
) -> torch.Tensor:
    """Validate ``x`` as a finite (M, d) array of points and return it as a torch tensor.

    A single point of shape (d,) is accepted and returned as (1, d).
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()  # stays on its device until the final move
    else:
        t = torch.from_numpy(np.ascontiguousarray(real_array(x, name)))
    if t.is_complex():
        raise TypeError(f"{name}: expected real numbers, got a complex array")
    if t.ndim == 1 and dim is not None and t.shape[0] == dim:
        t = t[None, :]
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (M, d), got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} row(s), got {t.shape[0]}")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name}: expected points of dimension {dim}, got dimension {t.shape[1]}")
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise ValueError(f"{name}: contains {bad} row(s) with NaN or infinite values")
    t = t.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(t).all()):  # finite as given, but not in the requested precision
        raise ValueError(f"{name}: values up to {float(x_abs_max(x)):.3g} are too large for {dtype} "
                         f"(at most {torch.finfo(dtype).max:.3g})")
    return t


def x_abs_max(x: ArrayLike) -> float:
    """The largest |value| of an array or tensor, in float64 (for messages)."""
    t = x.detach().double() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    return float(t.abs().max()) if t.numel() else 0.0


def as_vector(x: ArrayLike, name: str, *, length: int | None = None, dtype=torch.float64) -> torch.Tensor:
    """Validate ``x`` as a finite 1-D array of numbers (optionally of a given length); strings or
    objects raise TypeError rather than being parsed."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(real_array(x, name).astype(np.float64)))
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(t.shape)}")
    if length is not None and t.shape[0] != length:
        raise ValueError(f"{name}: expected length {length}, got {t.shape[0]}")
    t = t.to(dtype=dtype)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return t


def to_caller(t: torch.Tensor, like_torch: bool) -> Any:
    """Return ``t`` as a torch tensor (on its device) or as a NumPy array (on the host)."""
    if like_torch:
        return t
    return t.detach().cpu().numpy()
