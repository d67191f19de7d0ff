"""Re-run the adversarial probes of the hardening issue (issue 12) and count: acceptable / defect.

Each probe is one thing the issue found broken (untrusted checkpoints, resume, float32 scores,
half-written and tampered runs, silent non-convergence, unvalidated arguments, CLI tracebacks,
block-size dependence), tried again on the current code. A probe is *acceptable* when brenier
now does the right thing: refuses with a clear error (ValueError/TypeError/CorruptRunError naming
the argument or file; exit 2 and one line for the CLI), converges, or says it did not (a
``ConvergenceWarning``). Prints a table and writes ``benchmarks/results/hardening_probes.json``.

    python benchmarks/hardening_probes.py          # ~2-4 min on 2 CPU cores
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from brenier import AEOT, ConvergenceWarning, CorruptRunError, SemiDiscreteOT
from brenier.datasets import load
from brenier.sources import Polygon, UniformBall, UniformBox

ROOT = Path(__file__).resolve().parent
TMP = Path(tempfile.mkdtemp(prefix="brenier_probes_"))
PROBES: list[tuple[str, str, object]] = []


def probe(group: str):
    def deco(fn):
        PROBES.append((group, fn.__name__, fn))
        return fn
    return deco


def refused(fn, *kinds, match: str | None = None) -> tuple[bool, str]:
    """Acceptable when fn raises one of ``kinds`` (and its message contains ``match``)."""
    try:
        fn()
    except kinds as exc:
        msg = f"{type(exc).__name__}: {exc}"
        return (match is None or match in str(exc)), msg[:160]
    except Exception as exc:  # a different error type: a traceback from deep inside
        return False, f"unexpected {type(exc).__name__}: {str(exc)[:140]}"
    return False, "accepted silently"


def converged_or_warned(fit) -> tuple[bool, str]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        model = fit()
    conv = [x for x in w if issubclass(x.category, ConvergenceWarning)]
    if model.converged_:
        return True, f"converged (TV {model.tv_error_:.3g}, {model.n_iter_} it)"
    if conv:
        return True, f"ConvergenceWarning: {str(conv[0].message)[:130]}"
    return False, f"not converged and no warning (TV {model.tv_error_:.3g})"


def _evil_pickle(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    path.write_bytes(pickle.dumps(Evil()))


def _cli(*args, cwd=None) -> tuple[bool, str]:
    r = subprocess.run([sys.executable, "-m", "brenier", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                       timeout=600, env={**os.environ, "COLUMNS": "200"})
    out = r.stdout + r.stderr
    ok = r.returncode == 2 and "Traceback" not in out and "error:" in out
    line = next((ln.strip() for ln in out.splitlines() if "error" in ln.lower()), out.strip()[-120:])
    return ok, f"exit {r.returncode}: {line[:150]}"


# ------------------------------------------------------------------ 1. untrusted files run no code
@probe("1 untrusted checkpoint")
def planted_pickle_ot_checkpoint():
    marker, ck = TMP / "pwned_ot", TMP / "planted_ot.ckpt"
    _evil_pickle(ck, marker)
    ok, msg = refused(lambda: SemiDiscreteOT(tol=0.1).fit(np.random.default_rng(0).normal(size=(50, 3)), checkpoint=ck),
                      ValueError)
    return ok and not marker.exists(), msg + ("" if not marker.exists() else " -- CODE RAN")


@probe("1 untrusted checkpoint")
def planted_pickle_cli_ot():
    marker = TMP / "pwned_cli"
    out = TMP / "cli_ot"
    out.mkdir()
    np.save(TMP / "t.npy", np.random.default_rng(0).normal(size=(50, 3)))
    _evil_pickle(out / "checkpoint.pt", marker)
    ok, msg = _cli("ot", TMP / "t.npy", "--out", out)
    return ok and not marker.exists(), msg


@probe("1 untrusted checkpoint")
def planted_pickle_autoencoder_checkpoint():
    from brenier.nets.autoencoder import build_autoencoder, train_autoencoder

    marker, ck = TMP / "pwned_ae", TMP / "ae.ckpt"
    _evil_pickle(ck, marker)
    X = torch.rand(40, 1, 8, 8)
    ok, msg = refused(lambda: train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 2, seed=0), X, epochs=1, checkpoint=ck),
                      ValueError)
    return ok and not marker.exists(), msg


# ------------------------------------------------------------------ 2. resume resumes
@probe("2 resume")
def resume_continues_with_counters():
    y = np.random.default_rng(1).normal(size=(400, 4))
    ck = TMP / "resume.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = SemiDiscreteOT(tol=0.01, seed=0, max_iter=3).fit(y, checkpoint=ck)
    b = SemiDiscreteOT(tol=0.01, seed=0, max_iter=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        b.fit(y, checkpoint=ck)
    ok = b.n_iter_ == 6 and b.n_evaluations_ > a.n_evaluations_ > 0 and b.history_[3]["iteration"] == 3
    return ok, f"first {a.n_iter_} it / {a.n_evaluations_:.3g} evals; resumed to {b.n_iter_} it / {b.n_evaluations_:.3g} evals"


# ------------------------------------------------------------------ 3. float32 scores
@probe("3 float32")
def offset_1e5_exact_assign_agrees_with_float64():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 2)) + 1e5
    ot = SemiDiscreteOT(UniformBox(2), seed=0).fit(y)
    x = rng.uniform(-1, 1, size=(20000, 2))
    ref = np.argmax(x @ y.T + ot.heights_[None, :], axis=1)
    dis = float(np.mean(ot.assign(x) != ref))
    return dis == 0.0, f"{dis:.2%} disagree with a float64 argmax (score dtype {ot.score_dtype_})"


@probe("3 float32")
def offset_1e8_montecarlo_d3():
    y = np.random.default_rng(0).normal(size=(200, 3)) + 1e8
    ok, msg = converged_or_warned(lambda: SemiDiscreteOT(UniformBall(3), seed=0, tol=0.03).fit(y))
    return ok, msg


# ------------------------------------------------------------------ 4-5. runs: a unit, validated
def _tiny_aeot() -> Path:
    path = TMP / "aeot"
    if not (path / "manifest.json").exists():
        X, _ = load("digits", limit=120)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            AEOT(latent_dim=2, epochs=2, batch_size=32, ot_tol=0.3, ot_max_iter=5, device="cpu", seed=0).fit(X).save(path)
    return path


def _copy(src: Path, name: str) -> Path:
    import shutil

    dst = TMP / name
    shutil.copytree(src, dst)
    return dst


def _tiny_ot() -> Path:
    path = TMP / "ot_saved"
    if not (path / "manifest.json").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SemiDiscreteOT(tol=0.2, max_iter=3, seed=0).fit(np.random.default_rng(0).normal(size=(40, 3))).save(path)
    return path


@probe("4 half-written run")
def save_killed_between_files():
    run = _copy(_tiny_aeot(), "half")
    (run / "manifest.json").unlink()  # a save that died before its last write
    (run / "autoencoder.safetensors").write_bytes((run / "autoencoder.safetensors").read_bytes()[:100])
    return refused(lambda: AEOT.load(run, device="cpu"), CorruptRunError)


@probe("4 half-written run")
def two_models_mixed():
    a = _copy(_tiny_aeot(), "mix")
    X, _ = load("digits", limit=120)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = AEOT(latent_dim=2, epochs=2, batch_size=32, ot_tol=0.3, ot_max_iter=5, device="cpu", seed=5).fit(X)
    other.save(TMP / "other")
    import shutil

    shutil.copy(TMP / "other" / "aeot.json", a / "aeot.json")  # one model's normalisation, another's networks
    return refused(lambda: AEOT.load(a, device="cpu"), CorruptRunError)


def _edit_ot_json(name: str, edit) -> Path:
    run = _copy(_tiny_ot(), name)
    meta = json.loads((run / "ot.json").read_text())
    edit(meta)
    (run / "ot.json").write_text(json.dumps(meta))
    return run


@probe("5 tampered files")
def flipped_byte_in_ot_safetensors():
    run = _copy(_tiny_ot(), "flip")
    b = bytearray((run / "ot.safetensors").read_bytes())
    b[len(b) - 5] ^= 0x10
    (run / "ot.safetensors").write_bytes(bytes(b))
    return refused(lambda: SemiDiscreteOT.load(run, device="cpu"), CorruptRunError)


def _resign(run: Path) -> None:
    """Rewrite the manifest after an edit: an adversary who also forges checksums; the field checks must catch it."""
    from brenier._io import write_manifest

    files = json.loads((run / "manifest.json").read_text())["files"]
    write_manifest(run, list(files), "SemiDiscreteOT")


def _tensor_edit(name: str, key: str, fn) -> Path:
    from safetensors.torch import load_file, save_file

    run = _copy(_tiny_ot(), name)
    t = load_file(str(run / "ot.safetensors"))
    t[key] = fn(t[key])
    save_file(t, str(run / "ot.safetensors"))
    _resign(run)
    return run


@probe("5 tampered files")
def nan_heights_resigned():
    run = _tensor_edit("nanh", "unique_heights", lambda h: h.clone().fill_(float("nan")))
    return refused(lambda: SemiDiscreteOT.load(run, device="cpu"), CorruptRunError)


@probe("5 tampered files")
def inf_targets_resigned():
    def f(y):
        y = y.clone()
        y[0, 0] = float("inf")
        return y
    run = _tensor_edit("inft", "targets", f)
    return refused(lambda: SemiDiscreteOT.load(run, device="cpu"), CorruptRunError)


@probe("5 tampered files")
def negative_weights_resigned():
    run = _tensor_edit("negw", "weights", lambda w: -w)
    return refused(lambda: SemiDiscreteOT.load(run, device="cpu"), CorruptRunError)


@probe("5 tampered files")
def unknown_format_resigned():
    run = _edit_ot_json("fmt", lambda m: m.__setitem__("format", "brenier.SemiDiscreteOT/99"))
    _resign(run)
    return refused(lambda: SemiDiscreteOT.load(run, device="cpu"), CorruptRunError)


@probe("5 tampered files")
def tampered_latent_dim():
    run = _copy(_tiny_aeot(), "latent")
    meta = json.loads((run / "aeot.json").read_text())
    meta["params"]["latent_dim"] = 7
    (run / "aeot.json").write_text(json.dumps(meta))
    return refused(lambda: AEOT.load(run, device="cpu"), CorruptRunError)


@probe("5 tampered files")
def cli_sample_on_nan_weights():
    from safetensors.torch import load_file, save_file

    run = _copy(_tiny_aeot(), "nanae")
    t = load_file(str(run / "autoencoder.safetensors"))
    k = next(iter(t))
    t[k] = torch.full_like(t[k], float("nan"))
    save_file(t, str(run / "autoencoder.safetensors"))
    return _cli("sample", run, "--n", 4, "--out", TMP / "nan.png")


# ------------------------------------------------------------------ 6. convergence always told
def _mc(y, **kw):
    return lambda: SemiDiscreteOT(UniformBall(y.shape[1]), method="newton", seed=0, max_iter=kw.pop("max_iter", 40), **kw).fit(y)


@probe("6 convergence")
def collinear_300_d3():
    t = np.linspace(-1, 1, 300)[:, None]
    return converged_or_warned(_mc(np.hstack([t, 2 * t, -t])))


@probe("6 convergence")
def outlier_at_1e4():
    y = np.random.default_rng(0).normal(size=(200, 3))
    y[0] = 1e4
    return converged_or_warned(_mc(y))


@probe("6 convergence")
def clusters_scale_1_and_1e4():
    rng = np.random.default_rng(0)
    y = np.vstack([rng.normal(size=(150, 3)), 3 + 1e-4 * rng.normal(size=(150, 3))])
    return converged_or_warned(_mc(y))


@probe("6 convergence")
def exact_tight_cluster_beside_unit():
    rng = np.random.default_rng(0)
    y = np.vstack([rng.normal(size=(150, 2)), 2 + 1e-3 * rng.normal(size=(150, 2))])
    return converged_or_warned(lambda: SemiDiscreteOT(UniformBox(2), method="exact").fit(y))


@probe("6 convergence")
def exact_outlier():
    y = np.random.default_rng(0).normal(size=(200, 2))
    y[0] = 1e4
    return converged_or_warned(lambda: SemiDiscreteOT(UniformBox(2), method="exact").fit(y))


@probe("6 convergence")
def exact_nonconvex_source_far_targets():
    poly = Polygon([(0, 0), (2, 0), (2, 2), (1.2, 2), (1.2, 0.8), (0.8, 0.8), (0.8, 2), (0, 2)])
    y = np.random.default_rng(0).normal(size=(120, 2)) + 50
    return converged_or_warned(lambda: SemiDiscreteOT(poly, method="exact").fit(y))


@probe("6 convergence")
def exact_nonconvex_source_separated_clusters():
    poly = Polygon([(0, 0), (2, 0), (2, 2), (1.2, 2), (1.2, 0.8), (0.8, 0.8), (0.8, 2), (0, 2)])
    rng = np.random.default_rng(0)
    y = np.vstack([rng.normal(size=(60, 2)) * 0.1 - 5, rng.normal(size=(60, 2)) * 0.1 + 5])
    return converged_or_warned(lambda: SemiDiscreteOT(poly, method="exact").fit(y))


@probe("6 convergence")
def tolerance_below_sample_budget_said_at_start():
    y = np.random.default_rng(0).normal(size=(2000, 8))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            SemiDiscreteOT(tol=1e-4, seed=0, max_iter=1, solver_options={"max_samples": 10**5}).fit(y)
        except ValueError as exc:
            return True, f"ValueError at start: {str(exc)[:120]}"
    first = next((x for x in w if issubclass(x.category, ConvergenceWarning)), None)
    return first is not None, (f"ConvergenceWarning: {str(first.message)[:120]}" if first else "no warning") + f" ({time.perf_counter() - t0:.1f} s)"


@probe("6 convergence")
def cli_unconverged_exits_nonzero():
    np.save(TMP / "u.npy", np.random.default_rng(0).normal(size=(300, 4)))
    r = subprocess.run([sys.executable, "-m", "brenier", "ot", str(TMP / "u.npy"), "--out", str(TMP / "u"), "--max-iter", "1"],
                       capture_output=True, text=True, timeout=600)
    return r.returncode == 3 and "Traceback" not in r.stdout + r.stderr, f"exit {r.returncode}"


# ------------------------------------------------------------------ 7. arguments
Y = np.random.default_rng(0).normal(size=(30, 3))
for _name, _kw, _kinds in [
    ("max_iter_0", {"max_iter": 0}, (ValueError,)), ("max_iter_neg", {"max_iter": -1}, (ValueError,)),
    ("max_iter_float", {"max_iter": 2.5}, (ValueError, TypeError)), ("max_iter_str", {"max_iter": "3"}, (ValueError, TypeError)),
    ("memory_budget_0", {"memory_budget": 0}, (ValueError,)), ("memory_budget_neg", {"memory_budget": -5}, (ValueError,)),
    ("memory_budget_none", {"memory_budget": None}, (ValueError, TypeError)), ("quasi_str", {"quasi": "no"}, (ValueError, TypeError)),
    ("seed_2_70", {"seed": 2**70}, (ValueError,)),
]:
    def _p(kw=_kw, kinds=_kinds, name=_name):
        return refused(lambda: SemiDiscreteOT(**kw).fit(Y), *kinds, match=next(iter(kw)))
    _p.__name__ = _name
    probe("7 arguments")(_p)


@probe("7 arguments")
def cell_masses_negative_samples():
    ot = SemiDiscreteOT.load(_tiny_ot(), device="cpu")
    return refused(lambda: ot.cell_masses(n_samples=-5), ValueError, match="n_samples")


@probe("7 arguments")
def aeot_sample_float_seed():
    m = AEOT.load(_tiny_aeot(), device="cpu")
    return refused(lambda: m.sample(3, seed=1.7), TypeError, ValueError, match="seed")


@probe("7 arguments")
def weights_as_strings():
    return refused(lambda: SemiDiscreteOT().fit(Y, np.array(["0.5"] * 30)), TypeError, ValueError, match="weights")


@probe("7 arguments")
def target_1e39_not_called_nan():
    """A finite float64 value of 1e39 is a number: refused with a true message, or fitted (and a
    fit it throws off says so with a ConvergenceWarning) -- never reported as "NaN or infinite"."""
    y = Y.copy()
    y[0, 0] = 1e39
    try:
        return converged_or_warned(lambda: SemiDiscreteOT(max_iter=20).fit(y))
    except ValueError as exc:
        return "NaN or infinite" not in str(exc), f"ValueError: {str(exc)[:140]}"


@probe("7 arguments")
def query_1e39_named_correctly():
    ot = SemiDiscreteOT.load(_tiny_ot(), device="cpu")
    x = np.zeros((2, 3))
    x[0, 0] = 1e39
    ok, msg = refused(lambda: ot.assign(x), ValueError, match="x")
    return ok and "NaN or infinite" not in msg, msg


# ------------------------------------------------------------------ 8. the CLI never shows a traceback
def _cli_run_damage(name: str, damage) -> tuple[bool, str]:
    run = _copy(_tiny_aeot(), name)
    damage(run)
    return _cli("sample", run, "--n", 4, "--out", TMP / f"{name}.png")


@probe("8 CLI")
def cli_truncated_safetensors():
    return _cli_run_damage("trunc", lambda r: (r / "autoencoder.safetensors").write_bytes((r / "autoencoder.safetensors").read_bytes()[:64]))


@probe("8 CLI")
def cli_aeot_json_is_a_list():
    return _cli_run_damage("list", lambda r: (r / "aeot.json").write_text("[1, 2]"))


@probe("8 CLI")
def cli_aeot_json_lacks_key():
    def d(r):
        m = json.loads((r / "aeot.json").read_text())
        del m["scale"]
        (r / "aeot.json").write_text(json.dumps(m))
    return _cli_run_damage("nokey", d)


@probe("8 CLI")
def cli_missing_weight_file():
    return _cli_run_damage("noweights", lambda r: (r / "autoencoder.safetensors").unlink())


def _cli_ot_with_checkpoint(name: str, content: bytes) -> tuple[bool, str]:
    """``brenier ot`` into a folder whose checkpoint.pt holds ``content``."""
    out = TMP / name
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(content)
    return _cli("ot", TMP / "t.npy", "--out", out)


@probe("8 CLI")
def cli_truncated_checkpoint():
    return _cli_ot_with_checkpoint("trunc_ck", b"\x80\x04\x95")


@probe("8 CLI")
def cli_empty_checkpoint():
    return _cli_ot_with_checkpoint("empty_ck", b"")


@probe("8 CLI")
def cli_failed_start_leaves_no_out():
    out = TMP / "never"
    ok, msg = _cli("ot", TMP / "missing.npy", "--out", out)
    return ok and not out.exists(), msg + ("" if not out.exists() else " -- left an empty --out")


# ------------------------------------------------------------------ 9. same seed, same heights
@probe("9 block size")
def heights_independent_of_memory_budget():
    y = np.random.default_rng(2).normal(size=(600, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = SemiDiscreteOT(tol=0.05, seed=0, max_iter=5, memory_budget=2**20).fit(y).heights_
        b = SemiDiscreteOT(tol=0.05, seed=0, max_iter=5, memory_budget=2**28).fit(y).heights_
    rel = float(np.abs(a - b).max() / np.abs(b).max())
    return rel < 1e-12, f"max relative difference {rel:.1e}"


def main() -> None:
    rows = []
    for group, name, fn in PROBES:
        t0 = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as exc:
            ok, detail = False, f"probe crashed: {type(exc).__name__}: {str(exc)[:120]} {traceback.format_exc(limit=2)[-200:]}"
        rows.append({"group": group, "probe": name, "acceptable": bool(ok), "detail": detail, "s": round(time.perf_counter() - t0, 2)})
        print(f"{'ok ' if ok else 'DEFECT'} {group:22s} {name:45s} {detail}", flush=True)
    n_ok = sum(r["acceptable"] for r in rows)
    print(f"\n{len(rows)} probes re-run: {n_ok} acceptable, {len(rows) - n_ok} defects")
    out = ROOT / "results" / "hardening_probes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "acceptable": n_ok, "defects": len(rows) - n_ok,
                               "probes": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
