"""The autoencoder's training checkpoint: safetensors for the tensors, JSON for the rest — never pickle.

A checkpoint at ``path`` is two files:

* ``path`` itself, JSON (the commit point, written last and atomically): format, the run's
  fingerprint, epoch, counters, history, and the name and sha256 of the tensor file;
* ``<path>.e<epoch>.safetensors`` beside it: the model weights (``model.*``), the best weights so
  far (``best.*``) and Adam's per-parameter state, flattened to named tensors
  (``optimizer.<param index>.<key>``: ``step``, ``exp_avg``, ``exp_avg_sq``).

The tensor file carries the epoch in its name so that a kill between the two writes leaves the
previous JSON pointing at the previous (intact) tensor file: the run resumes from the last
completed epoch. Older tensor files are removed once the new JSON is in place.

Reading never unpickles: a file at ``path`` that is not this JSON (an old ``torch.save`` pickle,
a planted one, a truncated file) is refused with ``CorruptRunError`` naming the file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._io import CorruptRunError, atomic_write, sha256_file, write_json

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "brenier.AutoencoderCheckpoint/1"
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.e[0-9]+\.safetensors$")


@dataclass
class Checkpoint:
    """A loaded checkpoint: state dicts on the CPU and the training counters."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[int, dict[str, Any]]
    best_state: dict[str, torch.Tensor] | None
    bad_epochs: int
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    finished: bool


def _tensor_file(path: Path, epoch: int) -> Path:
    return path.with_name(f"{path.name}.e{epoch}.safetensors")


def save_checkpoint(
    path: str | Path,
    *,
    fingerprint: str,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, torch.Tensor] | None,
    bad_epochs: int,
    history: list[dict[str, float]],
    best_epoch: int,
    best_val_loss: float,
    stopped_early: bool,
    finished: bool,
) -> Path:
    """Write the checkpoint at ``path`` (tensor file first, then the JSON that names it). Returns ``path``."""
    path = Path(path)
    # clone: safetensors refuses tensors that share storage (tied or viewed weights)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous().clone() for k, v in best_state.items()})
    scalars: dict[str, Any] = {}
    for idx, st in optimizer.state_dict()["state"].items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{key}"] = v
    tfile = _tensor_file(path, epoch)
    atomic_write(tfile, lambda tmp: save_file(tensors, tmp))
    meta = {
        "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": int(epoch),
        "tensors": tfile.name, "sha256": sha256_file(tfile), "has_best": best_state is not None,
        "bad_epochs": int(bad_epochs), "best_epoch": int(best_epoch), "best_val_loss": float(best_val_loss),
        "stopped_early": bool(stopped_early), "finished": bool(finished), "history": history,
        "optimizer_scalars": scalars,
    }
    write_json(path, {**meta, "meta_sha256": _meta_digest(meta)})
    for old in path.parent.glob(f"{glob.escape(path.name)}.e*.safetensors"):
        if old.name != tfile.name:
            old.unlink(missing_ok=True)  # superseded: the JSON now names the new file
    return path


def _meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of the JSON fields themselves (canonical form; floats round-trip exactly through JSON):
    a changed digit in the history or a counter is caught like a changed byte in the tensor file."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _bad(path: Path, what: str) -> CorruptRunError:
    return CorruptRunError(f"checkpoint: {path}: {what}")


def _int(meta: dict, key: str, path: Path, lo: int = 0) -> int:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _bad(path, f"'{key}' must be an integer ≥ {lo}, got {v!r}")
    return v


def _bool(meta: dict, key: str, path: Path) -> bool:
    v = meta.get(key)
    if not isinstance(v, bool):
        raise _bad(path, f"'{key}' must be true or false, got {v!r}")
    return v


def load_checkpoint(path: str | Path, model: torch.nn.Module, *, fingerprint: str) -> Checkpoint:
    """Read and validate the checkpoint at ``path`` for ``model`` (keys, shapes and dtypes must match).

    Raises ``ValueError`` ("belongs to another training run") when the fingerprint differs and
    ``CorruptRunError`` (a ValueError) naming the file for anything else wrong. Never unpickles.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _bad(path, f"could not be read ({exc.strerror or exc})") from None
    if not raw.lstrip()[:1] == b"{":
        kind = "empty" if not raw else "not a brenier checkpoint (an old pickle checkpoint or another file; it is never unpickled)"
        raise _bad(path, f"the file is {kind}")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise _bad(path, f"format {got!r}, expected {CHECKPOINT_FORMAT!r}")
    digest = meta.pop("meta_sha256", None)
    if digest != _meta_digest(meta):
        raise _bad(path, "checksum mismatch (the file was changed or corrupted after it was saved)")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(f"checkpoint: {path} belongs to another training run (data or settings differ)")
    epoch = _int(meta, "epoch", path, 1)
    bad_epochs, best_epoch = _int(meta, "bad_epochs", path), _int(meta, "best_epoch", path)
    has_best, stopped_early, finished = (_bool(meta, k, path) for k in ("has_best", "stopped_early", "finished"))
    best_val_loss = meta.get("best_val_loss")
    if isinstance(best_val_loss, bool) or not isinstance(best_val_loss, (int, float)) or math.isnan(best_val_loss):
        raise _bad(path, f"'best_val_loss' must be a number, got {best_val_loss!r}")
    history = meta.get("history")
    if not isinstance(history, list) or len(history) != epoch or not all(isinstance(r, dict) for r in history):
        raise _bad(path, f"'history' must be a list of {epoch} per-epoch records")
    if best_epoch > epoch or bad_epochs > epoch:
        raise _bad(path, f"counters past the epoch (best_epoch {best_epoch}, bad_epochs {bad_epochs}, epoch {epoch})")
    scalars = meta.get("optimizer_scalars", {})
    if not isinstance(scalars, dict):
        raise _bad(path, "'optimizer_scalars' must be an object")

    tname = meta.get("tensors")
    if not isinstance(tname, str) or not _TENSOR_NAME.match(tname) or not tname.startswith(path.name + "."):
        raise _bad(path, f"bad tensor file name {tname!r}")
    tfile = path.parent / tname
    if not tfile.is_file():
        raise _bad(tfile, "missing (named by the checkpoint)")
    if sha256_file(tfile) != meta.get("sha256"):
        raise _bad(tfile, "checksum mismatch (the file was changed or corrupted after it was saved)")
    try:
        tensors = load_file(str(tfile))
    except Exception as exc:  # safetensors raises its own SafetensorError on a malformed header
        raise _bad(tfile, f"not a readable safetensors file ({exc})") from None

    expected = {k: v for k, v in model.state_dict().items()}
    state = _section(tensors, "model.", expected, tfile)
    best = _section(tensors, "best.", expected, tfile) if has_best else None
    params = list(model.parameters())
    opt: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if not k.startswith("optimizer."):
            if not (k.startswith("model.") or (has_best and k.startswith("best."))):
                raise _bad(tfile, f"unexpected tensor {k!r}")
            continue
        idx_s, _, key = k.removeprefix("optimizer.").partition(".")
        if not idx_s.isdigit() or int(idx_s) >= len(params) or key not in ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            raise _bad(tfile, f"unexpected optimizer tensor {k!r}")
        idx = int(idx_s)
        want = () if key == "step" else tuple(params[idx].shape)
        if tuple(v.shape) != want or not v.dtype.is_floating_point or not bool(torch.isfinite(v).all()):
            raise _bad(tfile, f"optimizer tensor {k!r} has shape {tuple(v.shape)} / dtype {v.dtype}, "
                              f"expected finite floats of shape {want}")
        opt.setdefault(idx, {})[key] = v
    for k, v in scalars.items():
        idx_s, _, key = str(k).partition(".")
        if not idx_s.isdigit() or int(idx_s) >= len(params) or isinstance(v, (dict, list)):
            raise _bad(path, f"unexpected optimizer entry {k!r}")
        opt.setdefault(int(idx_s), {})[key] = v
    for idx, st in opt.items():
        if not {"step", "exp_avg", "exp_avg_sq"} <= set(st):
            raise _bad(tfile, f"optimizer state of parameter {idx} is incomplete ({', '.join(sorted(st))})")
    return Checkpoint(epoch=epoch, model=state, optimizer=opt, best_state=best, bad_epochs=bad_epochs,
                      history=history, best_epoch=best_epoch, best_val_loss=float(best_val_loss),
                      stopped_early=stopped_early, finished=finished)


def _section(tensors: dict[str, torch.Tensor], prefix: str, expected: dict[str, torch.Tensor], tfile: Path) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, checked against the model's state dict (same keys, shapes, dtypes, finite)."""
    got = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    if set(got) != set(expected):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        raise _bad(tfile, f"'{prefix}*' tensors do not match the network (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in got.items():
        e = expected[k]
        if v.shape != e.shape or v.dtype != e.dtype:
            raise _bad(tfile, f"tensor {prefix}{k} has shape {tuple(v.shape)} / {v.dtype}, expected {tuple(e.shape)} / {e.dtype}")
        if v.dtype.is_floating_point and not bool(torch.isfinite(v).all()):
            raise _bad(tfile, f"tensor {prefix}{k} contains NaN or infinite values")
    return got
