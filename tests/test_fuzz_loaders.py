"""Fuzz every file loader and the CLI on damaged files: truncated, emptied, bit-flipped (seeded
offsets), wrong-typed JSON. Each must fail cleanly — the library with ValueError (CorruptRunError) /
FileNotFoundError naming the file, the CLI with exit status 2 and one line, no traceback — never
load corrupted input as valid, and never unpickle anything."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brenier import CorruptRunError
from brenier.cli import app
from brenier.datasets import load
from brenier.metrics import FeatureClassifier
from brenier.nets import build_autoencoder, train_autoencoder
from brenier.ot import SemiDiscreteOT
from brenier.pipeline import AEOT
from brenier.sources import UniformBall

torch.set_num_threads(1)
runner = CliRunner()
CLEAN = (ValueError, FileNotFoundError)  # CorruptRunError is a ValueError
N_FLIPS = 4


# ------------------------------------------------------------------ damage
def _damages(path: Path, seed: int) -> list[tuple[str, bytes]]:
    """(name, new bytes) for the file at ``path``: truncated to half and to a few bytes, emptied,
    and N_FLIPS single-bit flips at seeded offsets spread over the file."""
    raw = path.read_bytes()
    rng = np.random.default_rng(seed)
    out = [("half", raw[: len(raw) // 2]), ("7 bytes", raw[:7]), ("empty", b"")]
    for off in rng.choice(len(raw), size=min(N_FLIPS, len(raw)), replace=False):
        b = bytearray(raw)
        b[off] ^= 1 << int(rng.integers(8))
        out.append((f"bit flip at {off}", bytes(b)))
    return out


WRONG = ([], "x", None, {}, -1, 1e308)


def _json_mutations(obj: dict, seed: int, k: int = 6) -> list[tuple[str, dict]]:
    """Copies of a JSON object with one field (top level or one level down) of a wrong type or value."""
    paths = [(key,) for key in obj] + [(key, sub) for key, v in obj.items() if isinstance(v, dict) for sub in v]
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(paths), size=min(k, len(paths)), replace=False):
        p = paths[int(i)]
        wrong = WRONG[int(rng.integers(len(WRONG)))]
        new = json.loads(json.dumps(obj))
        (new[p[0]] if len(p) == 2 else new)[p[-1]] = wrong
        out.append((f"{'.'.join(p)} = {wrong!r}", new))
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _resign(folder: Path, kind: str) -> None:
    """Rewrite a folder's manifest over its current files (a consistent tamper)."""
    from brenier._io import write_manifest

    write_manifest(folder, list(json.loads((folder / "manifest.json").read_text())["files"]), kind)


def _assert_clean(exc: BaseException, folder: Path) -> None:
    assert isinstance(exc, CLEAN), f"{type(exc).__name__}: {exc}"
    assert str(folder) in str(exc) or "path" in str(exc), str(exc)  # names the file (or the folder argument)


# ------------------------------------------------------------------ saved models (built once, tiny)
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    X, y = load("digits", limit=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny settings: convergence is not the point here
        aeot = AEOT(latent_dim=2, epochs=2, batch_size=32, ot_tol=0.3, ot_max_iter=5, device="cpu", seed=0).fit(X)
        ot = SemiDiscreteOT(UniformBall(2), method="newton", tol=0.3, max_iter=3, device="cpu", seed=0).fit(
            np.random.default_rng(0).normal(size=(30, 2)))
    aeot.save(root / "aeot")
    ot.save(root / "ot")
    ae = build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,))
    kw = dict(epochs=1, batch_size=32, seed=0)
    train_autoencoder(ae, torch.from_numpy(X[:40]), checkpoint=root / "ckpt" / "ae.ckpt", **kw)
    clf = FeatureClassifier(hidden=(8,), seed=0, max_iter=20).fit(X.reshape(len(X), -1), y)
    clf.save(root / "clf")
    loaders = {
        "aeot": lambda p: AEOT.load(p, device="cpu").sample(2, seed=0),
        "ot": lambda p: SemiDiscreteOT.load(p, device="cpu").transport(np.zeros((2, 2))),
        "clf": lambda p: FeatureClassifier.load(p).predict(np.zeros((1, 64))),
        "ckpt": lambda p: train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,)),
                                            torch.from_numpy(X[:40]), checkpoint=p / "ae.ckpt", **kw),
    }
    return root, loaders


@pytest.mark.parametrize("kind", ["aeot", "ot", "clf", "ckpt"])
def test_damaged_files_never_load(saved, tmp_path, kind):
    """Every file of every saved folder, truncated / emptied / bit-flipped: a clean error naming it."""
    root, loaders = saved
    loaders[kind](root / kind)  # the intact folder loads
    n = 0
    for f in _files(root / kind):
        rel = f.relative_to(root / kind)
        for name, data in _damages(f, seed=len(str(rel))):
            work = tmp_path / f"{kind}-{n}"
            shutil.copytree(root / kind, work)
            (work / rel).write_bytes(data)
            with pytest.raises(BaseException) as exc:
                loaders[kind](work)
            assert isinstance(exc.value, CLEAN), f"{rel} {name}: {type(exc.value).__name__}: {exc.value}"
            assert str(work) in str(exc.value), f"{rel} {name}: {exc.value}"
            n += 1
            shutil.rmtree(work)
    assert n >= 2 * (3 + N_FLIPS)


@pytest.mark.parametrize("kind,jname,manifest", [
    ("aeot", "aeot.json", "AEOT"), ("ot", "ot.json", "SemiDiscreteOT"), ("clf", "classifier.json", "FeatureClassifier"),
])
def test_wrong_typed_json_fails_cleanly(saved, tmp_path, kind, jname, manifest):
    """Lists, strings, nulls, huge numbers in place of fields — with the manifest re-signed, so that
    only field validation stands between them and the model: a clean error, or (for a value that
    happens to be valid) a model that still works; never a crash from deep inside."""
    root, loaders = saved
    meta = json.loads((root / kind / jname).read_text())
    refused = 0
    for i, (what, new) in enumerate(_json_mutations(meta, seed=len(jname), k=8)):
        work = tmp_path / f"{kind}-{i}"
        shutil.copytree(root / kind, work)
        (work / jname).write_text(json.dumps(new))
        with pytest.raises(CorruptRunError, match="checksum"):
            loaders[kind](work)          # unsigned: the manifest catches it
        _resign(work, manifest)
        try:
            loaders[kind](work)
        except CLEAN + (TypeError,) as exc:
            assert jname in str(exc) or str(work) in str(exc), f"{what}: {exc}"
            refused += 1
        shutil.rmtree(work)
    assert refused >= 4
    whole = tmp_path / "list"
    shutil.copytree(root / kind, whole)
    (whole / jname).write_text("[1, 2, 3]")
    _resign(whole, manifest)
    with pytest.raises(CorruptRunError, match=jname):
        loaders[kind](whole)


def test_checkpoint_json_wrong_types(saved, tmp_path):
    root, loaders = saved
    meta = json.loads((root / "ckpt" / "ae.ckpt").read_text())
    for i, (what, new) in enumerate(_json_mutations(meta, seed=3, k=8)):
        work = tmp_path / f"c{i}"
        shutil.copytree(root / "ckpt", work)
        (work / "ae.ckpt").write_text(json.dumps(new))
        with pytest.raises(CLEAN, match="checkpoint"):
            loaders["ckpt"](work)


class _Plant:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_nothing_is_unpickled(saved, tmp_path):
    """A pickle planted in place of every file brenier reads is refused; the marker never appears."""
    root, loaders = saved
    marker = tmp_path / "PWNED"
    for kind in ("aeot", "ot", "clf", "ckpt"):
        for f in _files(root / kind):
            work = tmp_path / "w"
            shutil.copytree(root / kind, work)
            (work / f.relative_to(root / kind)).write_bytes(pickle.dumps(_Plant(marker)))
            if kind != "ckpt" and f.name != "manifest.json":
                _resign(work, {"aeot": "AEOT", "ot": "SemiDiscreteOT", "clf": "FeatureClassifier"}[kind])
            with pytest.raises(CLEAN):
                loaders[kind](work)
            shutil.rmtree(work)
    assert not marker.exists()


# ------------------------------------------------------------------ the CLI
def _cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    return r, r.output


def _assert_cli_error(r, out: str, *needles: str) -> None:
    assert r.exit_code == 2, out
    assert "Traceback" not in out and isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_cli_sample_on_damaged_runs(saved, tmp_path):
    """brenier sample on a damaged run folder: exit 2, one line naming the file, no PNG written."""
    root, _ = saved
    png = tmp_path / "s.png"
    r, out = _cli("sample", root / "aeot", "-n", "4", "--out", png, "--device", "cpu")
    assert r.exit_code == 0 and png.is_file(), out
    png.unlink()
    for i, f in enumerate(_files(root / "aeot")):
        rel = f.relative_to(root / "aeot")
        for name, data in _damages(f, seed=i)[::3]:  # half, and two bit flips
            work = tmp_path / "run"
            shutil.copytree(root / "aeot", work)
            (work / rel).write_bytes(data)
            r, out = _cli("sample", work, "-n", "4", "--out", png, "--device", "cpu")
            _assert_cli_error(r, out, str(work))
            assert not png.exists(), f"{rel} {name}"
            shutil.rmtree(work)
    # tampered consistently (manifest re-signed): aeot.json a list / without a key, a missing weight file
    for edit, needle in ((lambda m: [m], "list"), (lambda m: {k: v for k, v in m.items() if k != "scale"}, "'scale'")):
        work = tmp_path / "run"
        shutil.copytree(root / "aeot", work)
        (work / "aeot.json").write_text(json.dumps(edit(json.loads((work / "aeot.json").read_text()))))
        _resign(work, "AEOT")
        r, out = _cli("sample", work, "-n", "4", "--out", png, "--device", "cpu")
        _assert_cli_error(r, out, "aeot.json", needle)
        shutil.rmtree(work)
    work = tmp_path / "run"
    shutil.copytree(root / "aeot", work)
    (work / "autoencoder.safetensors").unlink()
    r, out = _cli("sample", work, "-n", "4", "--out", png, "--device", "cpu")
    _assert_cli_error(r, out, "autoencoder.safetensors", "missing")


def test_cli_ot_inputs(tmp_path):
    """brenier ot on damaged .npy / .npz targets: truncated or emptied → exit 2; any bit flip → never a
    traceback (a flip inside the numbers of a .npy is just other numbers: exit 0 / 3 is allowed there)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x, weights=np.full(40, 1 / 40))
    for src in ("x.npy", "x.npz"):
        for i, (name, data) in enumerate(_damages(tmp_path / src, seed=len(src))):
            bad = tmp_path / f"bad{i}{Path(src).suffix}"
            bad.write_bytes(data)
            out_dir = tmp_path / f"out{i}"
            r, out = _cli("ot", bad, "--out", out_dir, "--device", "cpu", "--method", "exact", "--max-iter", "3",
                          "--allow-unconverged")
            assert "Traceback" not in out and r.exit_code in (0, 2, 3), f"{src} {name}: {out}"
            if name in ("half", "7 bytes", "empty"):
                _assert_cli_error(r, out, bad.name)
                assert not out_dir.exists(), "a failed start left its --out folder behind"
    # a wrong-typed archive: strings and an object array
    np.savez(tmp_path / "s.npz", x=np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    for f, needle in (("s.npz", "numbers"), ("o.npy", "pickle")):
        r, out = _cli("ot", tmp_path / f, "--out", tmp_path / "o", "--device", "cpu")
        _assert_cli_error(r, out, f, needle)


def test_cli_planted_checkpoints(saved, tmp_path):
    """A pickle, garbage or an empty file where `brenier ot` / `brenier fit` expect a checkpoint: exit 2, never unpickled."""
    marker = tmp_path / "PWNED"
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(30, 3)))
    for i, data in enumerate((pickle.dumps(_Plant(marker)), b"\x00garbage", b"")):
        out = tmp_path / f"ot{i}"
        out.mkdir()
        (out / "checkpoint.pt").write_bytes(data)
        r, o = _cli("ot", tmp_path / "x.npy", "--out", out, "--device", "cpu", "--max-iter", "2")
        _assert_cli_error(r, o, "checkpoint")
        run = tmp_path / f"fit{i}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "autoencoder.ckpt").write_bytes(data)
        r, o = _cli("fit", "--data", "digits", "--limit", "40", "--epochs", "1", "--out", run, "--device", "cpu")
        _assert_cli_error(r, o, "autoencoder.ckpt")
    assert not marker.exists()
