"""Hardening of the OT core (issue 12): checkpoints that never unpickle and resume where a fit was
killed, conditioning of far-off targets, convergence always told, arguments and saved models
validated."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from brenier import ConvergenceWarning, CorruptRunError, SemiDiscreteOT
from brenier._io import write_manifest
from brenier.ot import fused
from brenier.ot.exact import solve_exact
from brenier.sources import Polygon, UniformBall, UniformBox

ROOT = Path(__file__).resolve().parents[1]


def _normal(n, d, seed=0, scale=1.0):
    return np.random.default_rng(seed).normal(size=(n, d)) * scale


def _ckpt_meta(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["brenier"])


def _quiet_fit(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*args, **kwargs)


# ------------------------------------------------------------------ checkpoints: no pickle
class _Evil:
    """Unpickling this object would create the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_planted_pickle_checkpoint_is_refused_unread(tmp_path, writer):
    marker = tmp_path / "pwned"
    ck = tmp_path / "checkpoint.pt"
    if writer == "torch.save":
        torch.save({"fingerprint": _Evil(marker)}, ck)
    else:
        ck.write_bytes(pickle.dumps(_Evil(marker)))
    model = SemiDiscreteOT(UniformBall(3), seed=0, max_iter=2, device="cpu")
    with pytest.raises(ValueError, match=r"checkpoint: .*checkpoint\.pt.*pickle.*never"):
        model.fit(_normal(30, 3), checkpoint=ck)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage that is not a checkpoint", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"])
def test_an_unreadable_checkpoint_names_the_file(tmp_path, content):
    ck = tmp_path / "ck.safetensors"
    ck.write_bytes(content)
    with pytest.raises(ValueError, match=r"checkpoint: .*ck\.safetensors"):
        SemiDiscreteOT(UniformBall(3), seed=0, max_iter=2, device="cpu").fit(_normal(30, 3), checkpoint=ck)


def test_a_checkpoint_with_nan_heights_is_refused(tmp_path):
    y = _normal(30, 3)
    ck = tmp_path / "ck.safetensors"
    _quiet_fit(SemiDiscreteOT(UniformBall(3), seed=0, max_iter=2, device="cpu"), y, checkpoint=ck)
    with safe_open(str(ck), "pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["heights"][3] = float("nan")
    save_file(tensors, str(ck), metadata=header)
    with pytest.raises(CorruptRunError, match="checkpoint: .*heights"):
        SemiDiscreteOT(UniformBall(3), seed=0, max_iter=4, device="cpu").fit(y, checkpoint=ck)


@pytest.mark.parametrize("method", ["newton", "adam"])
def test_checkpoint_holds_the_current_iterate_and_resumes_bit_exactly(tmp_path, method):
    """Every iteration writes the state to continue from; 3 + 3 resumed iterations give exactly the
    heights and counters of 6 uninterrupted ones."""
    y = _normal(60, 4)
    kw = dict(method=method, tol=0.005, seed=0, device="cpu")
    straight = _quiet_fit(SemiDiscreteOT(UniformBall(4), max_iter=6, **kw), y)
    ck = tmp_path / "fit.safetensors"
    _quiet_fit(SemiDiscreteOT(UniformBall(4), max_iter=3, **kw), y, checkpoint=ck)
    meta = _ckpt_meta(ck)
    assert meta["iteration"] == 3 and meta["evaluations"] > 0 and meta["elapsed"] > 0
    resumed = _quiet_fit(SemiDiscreteOT(UniformBall(4), max_iter=6, **kw), y, checkpoint=ck)
    np.testing.assert_array_equal(resumed.heights_, straight.heights_)
    assert resumed.n_iter_ == 6 and resumed.n_evaluations_ == straight.n_evaluations_
    assert [r["iteration"] for r in resumed.history_] == list(range(6))


_CHILD = """
import sys, time, warnings
import numpy as np
from brenier import SemiDiscreteOT
from brenier.sources import UniformBall
warnings.simplefilter("ignore")
y = np.random.default_rng(0).normal(size=(60, 4))

def slow(rec):
    print(rec["iteration"], flush=True)
    time.sleep(0.15)  # leaves the parent time to kill it mid-run; changes no number

SemiDiscreteOT(UniformBall(4), tol=0.01, seed=0, device="cpu").fit(y, checkpoint=sys.argv[1], callback=slow)
print("finished", flush=True)
"""


@pytest.mark.parametrize("kill_after", [2, 4])
def test_a_killed_fit_resumes_within_one_iteration_and_converges(tmp_path, kill_after):
    """SIGKILL a fit once its checkpoint passes ``kill_after`` iterations; the rerun starts at most
    one iteration before the last one the killed process reported, and ends converged with the
    heights of an uninterrupted fit."""
    ck = tmp_path / "ck.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    out = tmp_path / "child.out"
    with open(out, "w") as fh:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(ck)], stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if ck.exists():
                try:
                    if _ckpt_meta(ck)["iteration"] >= kill_after:
                        break
                except Exception:  # noqa: BLE001 - the file is replaced atomically; retry on a race
                    pass
            time.sleep(0.02)
        assert child.poll() is None, "the fit finished before it could be killed: " + out.read_text()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    reported = [int(line) for line in out.read_text().split() if line.isdigit()]
    assert reported and "finished" not in out.read_text()
    killed_at = _ckpt_meta(ck)["iteration"]
    # the checkpoint is written after the step that follows each reported iteration
    assert reported[-1] <= killed_at <= reported[-1] + 1

    y = np.random.default_rng(0).normal(size=(60, 4))
    new = []
    resumed = SemiDiscreteOT(UniformBall(4), tol=0.01, seed=0, device="cpu").fit(
        y, checkpoint=ck, callback=lambda r: new.append(r["iteration"]))
    assert new[0] == killed_at and resumed.converged_ and resumed.tv_error_ <= 0.01
    straight = SemiDiscreteOT(UniformBall(4), tol=0.01, seed=0, device="cpu").fit(y)
    np.testing.assert_array_equal(resumed.heights_, straight.heights_)
    assert resumed.n_iter_ == straight.n_iter_


# ------------------------------------------------------------------ conditioning (float32 scores)
def _brute(x, y, h):
    return np.argmax(x @ y.T + h, axis=1)


def test_offset_targets_exact_2d_agree_with_float64_argmax():
    """N(0, 1) + 1e5 in 2-D: assign, transport, potential and the masses all follow a float64 argmax."""
    y = _normal(300, 2) + 1e5
    ot = SemiDiscreteOT(UniformBox(2), method="exact").fit(y)
    assert ot.converged_
    x = UniformBox(2).sample(20_000, seed=1).double().numpy()
    ref = _brute(x, y, ot.heights_)
    np.testing.assert_array_equal(ot.assign(x), ref)
    np.testing.assert_array_equal(ot.transport(x), y[ref])
    np.testing.assert_allclose(ot.potential(x), np.max(x @ y.T + ot.heights_, axis=1), rtol=1e-12)
    counts = np.bincount(ref, minlength=len(y)) / len(x)
    assert 0.5 * np.abs(counts - 1 / len(y)).sum() < 0.4 * np.sqrt(len(y) / len(x)) * 1.5
    np.testing.assert_allclose(ot.cell_masses(), 1 / len(y), rtol=1e-6)
    s = ot.sample(200, seed=0)
    assert np.isfinite(s).all() and (s >= y.min(0) - 1e-9).all() and (s <= y.max(0) + 1e-9).all()


def test_offset_targets_monte_carlo_3d_agree_with_float64_argmax():
    """N(0, 1) + 1e8 in 3-D (was: TV 0.98, 197 empty cells, no warning)."""
    y = _normal(200, 3) + 1e8
    ot = SemiDiscreteOT(UniformBall(3), method="newton", device="cpu").fit(y)
    assert ot.converged_ and ot.tv_error_ <= 0.02
    x = UniformBall(3).sample(20_000, seed=1).double().numpy()
    np.testing.assert_array_equal(ot.assign(x), _brute(x, y, ot.heights_))
    m = ot.cell_masses(n_samples=100_000)
    assert (m > 0).all() and m.sum() == pytest.approx(1.0)
    # the same problem without the offset: the same cells (translation equivariance)
    ref = SemiDiscreteOT(UniformBall(3), method="newton", device="cpu").fit(y - 1e8)
    assert (ot.assign(x) == ref.assign(x)).mean() > 0.99


def test_an_offset_source_switches_the_scores_to_float64():
    src = UniformBox(2, low=1e5, high=1e5 + 2)
    y = _normal(80, 2)
    ot = SemiDiscreteOT(src, method="newton", device="cpu").fit(y)
    assert ot.score_dtype_ == torch.float64 and ot.converged_
    x = src.sample(10_000, seed=1).double().numpy()
    np.testing.assert_array_equal(ot.assign(x), _brute(x, y, ot.heights_))


def test_ordinary_problems_keep_float32_scores(tmp_path):
    ot = SemiDiscreteOT(UniformBall(3), method="newton", device="cpu", max_iter=1)
    _quiet_fit(ot, _normal(100, 3))
    assert ot.score_dtype_ == torch.float32


def test_a_query_too_large_for_float32_is_named():
    ot = _quiet_fit(SemiDiscreteOT(UniformBall(2), method="newton", device="cpu", max_iter=1), _normal(20, 2))
    with pytest.raises(ValueError, match="x: .*too large for float32"):
        ot.assign(np.array([[1e35, 0.0]]))


def test_targets_too_large_for_float32_are_fitted_not_called_infinite():
    y = _normal(50, 2) * 1e38 * 5  # finite in float64, beyond float32
    ot = SemiDiscreteOT(UniformBox(2), method="exact").fit(y)
    assert ot.converged_


# ------------------------------------------------------------------ convergence always told
def test_monte_carlo_max_iter_is_told():
    with pytest.warns(ConvergenceWarning, match=r"stopped before tol = 0.01.*2 iterations.*max_iter"):
        ot = SemiDiscreteOT(UniformBall(3), tol=0.01, max_iter=2, device="cpu").fit(_normal(50, 3))
    assert ot.stop_reason_ == "max_iter" and not ot.converged_


def test_a_tolerance_below_the_sample_budget_is_told_at_the_start():
    seen = []
    with pytest.warns(ConvergenceWarning) as record:
        SemiDiscreteOT(UniformBall(3), tol=0.01, device="cpu", solver_options={"max_samples": 20_000}).fit(
            _normal(200, 3), callback=lambda r: seen.append(r["iteration"]))
    first = str(record[0].message)
    assert "noise floor" in first and "max_samples = 20000" in first
    # said before the first iteration, and the end says why it stopped
    assert any("max_samples" in str(w.message) and "stopped" in str(w.message) for w in record[1:])


def _exact_degenerate(case):
    rng = np.random.default_rng(0)
    if case == "cluster":  # a 1e-3-wide cluster beside a unit one
        return np.r_[rng.normal(size=(150, 2)), [3, 0] + 1e-3 * rng.normal(size=(150, 2))]
    y = rng.normal(size=(300, 2))  # one outlier at 1e4
    y[0] = 1e4
    return y


@pytest.mark.parametrize("case", ["cluster", "outlier"])
def test_exact_degenerate_targets_now_converge(case):
    """Was: stalled at step 0 with 129-289 empty cells, blaming 'float64 roundoff'. The weight
    homotopy from the start's own masses carries the tiny cells through."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ot = SemiDiscreteOT(UniformBox(2), method="exact").fit(_exact_degenerate(case))
    assert ot.converged_ and ot.max_rel_error_ <= 1e-9 and (ot.cell_masses() > 0).all()


def test_exact_degenerate_stop_is_told_with_its_reason():
    """Cut short, the warning says what was reached and why, not 'roundoff'."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ot = SemiDiscreteOT(UniformBox(2), method="exact", max_iter=5).fit(_exact_degenerate("cluster"))
    msgs = [str(w.message) for w in record if issubclass(w.category, ConvergenceWarning)]
    assert not ot.converged_ and len(msgs) == 1 and "roundoff" not in msgs[0]
    assert "max relative error" in msgs[0] and "empty cell" in msgs[0] and "max_iter = 5" in msgs[0]


def test_solve_exact_roundoff_is_still_called_roundoff():
    """The true roundoff floor (a tolerance below float64 resolution) keeps its name."""
    y = _normal(200, 2, seed=3)
    with pytest.warns(ConvergenceWarning, match="roundoff"):
        _, info = solve_exact(y, np.full(200, 1 / 200), UniformBox(2).as_polygon(), tol=1e-30)
    assert info["stop_reason"] == "roundoff"


def test_exact_max_iter_is_told():
    with pytest.warns(ConvergenceWarning, match="max_iter = 2"):
        ot = SemiDiscreteOT(UniformBox(2), method="exact", max_iter=2).fit(_normal(200, 2))
    assert ot.stop_reason_ == "max_iter"


@pytest.mark.parametrize("case", ["far", "clusters"])
def test_exact_non_convex_source_with_far_or_clustered_targets(case):
    """A C-shaped polygon source, targets far outside it or in two separated clusters."""
    src = Polygon([(0, 0), (3, 0), (3, 1), (1, 1), (1, 2), (3, 2), (3, 3), (0, 3)])
    rng = np.random.default_rng(0)
    if case == "far":
        y = rng.normal(size=(120, 2)) * 0.3 + [20, 20]
    else:
        y = np.r_[rng.normal(size=(60, 2)) * 0.1 + [-5, 0], rng.normal(size=(60, 2)) * 0.1 + [5, 5]]
    ot = SemiDiscreteOT(src, method="exact").fit(y)
    assert ot.converged_ and ot.max_rel_error_ <= 1e-9


@pytest.mark.parametrize("case", ["collinear", "outlier", "two_scales"])
def test_monte_carlo_degenerate_targets_converge_or_say_why(case):
    """Points on a line in 3-D, one outlier at 1e4, clusters of scale 1 and 1e-4: either the fit
    converges or a ConvergenceWarning names the stop and the empty cells (was: silent)."""
    rng = np.random.default_rng(0)
    if case == "collinear":
        t = rng.uniform(-1, 1, 60)
        y = np.c_[t, 0.5 * t, -t]
    elif case == "outlier":
        y = rng.normal(size=(60, 3))
        y[0] = 1e4
    else:
        y = np.r_[rng.normal(size=(30, 3)), 5 + 1e-4 * rng.normal(size=(30, 3))]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ot = SemiDiscreteOT(UniformBall(3), method="newton", tol=0.05, max_iter=30, device="cpu").fit(y)
    msgs = [str(w.message) for w in record if issubclass(w.category, ConvergenceWarning)]
    if ot.converged_:
        assert ot.tv_error_ <= 0.05 and not msgs
    else:
        assert len(msgs) == 1 and "stopped because" in msgs[0] and "empty cell" in msgs[0]
        assert ot.stop_reason_ in msgs[0]


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_iter": 0}, ValueError, r"max_iter: expected an integer >= 1"),
        ({"max_iter": -1}, ValueError, r"max_iter: expected an integer >= 1"),
        ({"max_iter": 2.5}, TypeError, r"max_iter: expected an integer"),
        ({"max_iter": "3"}, TypeError, r"max_iter: expected an integer"),
        ({"memory_budget": 0}, ValueError, r"memory_budget: expected an integer >= 1"),
        ({"memory_budget": -5}, ValueError, r"memory_budget"),
        ({"memory_budget": None}, TypeError, r"memory_budget"),
        ({"quasi": "no"}, TypeError, r"quasi: expected True or False"),
        ({"seed": 2**70}, ValueError, r"seed: expected an integer in \[0, 4294967295\]"),
        ({"seed": 1.5}, TypeError, r"seed"),
        ({"tol": True}, ValueError, r"tol"),
        ({"solver_options": {"max_sample": 10}}, ValueError, r"solver_options: unknown option.*max_sample"),
        ({"solver_options": {"max_samples": -10}}, ValueError, r"max_samples.*>= 1"),
        ({"solver_options": [1]}, TypeError, r"solver_options: expected a dict"),
        ({"method": 3}, ValueError, r"method"),
    ],
)
def test_bad_parameters_name_the_argument_and_range(kwargs, error, match):
    with pytest.raises(error, match=match):
        SemiDiscreteOT(UniformBall(2), device="cpu", **{"method": "newton", **kwargs}).fit(_normal(10, 2))


def test_bad_weights_and_query_arguments():
    with pytest.raises(TypeError, match="weights: expected an array of numbers"):
        SemiDiscreteOT(UniformBox(2), method="exact").fit(_normal(2, 2), ["0.5", "0.5"])
    ot = _quiet_fit(SemiDiscreteOT(UniformBall(3), device="cpu", max_iter=1), _normal(20, 3))
    with pytest.raises(ValueError, match=r"n_samples: expected an integer >= 1, got -5"):
        ot.cell_masses(n_samples=-5)
    with pytest.raises(TypeError, match="n_samples"):
        ot.cell_masses(n_samples=1e4)
    with pytest.raises(ValueError, match="seed"):
        ot.cell_masses(seed=-1)


def test_the_largest_seed_works():
    ot = _quiet_fit(SemiDiscreteOT(UniformBall(3), device="cpu", max_iter=2, seed=2**32 - 1), _normal(20, 3))
    assert np.isfinite(ot.heights_).all() and np.isfinite(ot.cell_masses(n_samples=1000)).all()


# ------------------------------------------------------------------ saved models
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ot") / "model"
    ot = SemiDiscreteOT(UniformBox(2), method="exact").fit(_normal(40, 2))
    ot.save(path)
    return ot, path


def _copy(path, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


def test_save_writes_a_manifest_and_loads_bit_identically(saved):
    ot, path = saved
    assert (path / "manifest.json").is_file()
    back = SemiDiscreteOT.load(path, device="cpu")
    np.testing.assert_array_equal(back.heights_, ot.heights_)
    x = UniformBox(2).sample(1000, seed=2).numpy()
    np.testing.assert_array_equal(back.assign(x), ot.assign(x))


def test_a_flipped_byte_is_caught_by_the_manifest(saved, tmp_path):
    _, path = saved
    dst = _copy(path, tmp_path)
    raw = bytearray((dst / "ot.safetensors").read_bytes())
    raw[-5] ^= 0x01
    (dst / "ot.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptRunError, match=r"ot\.safetensors.*checksum"):
        SemiDiscreteOT.load(dst, device="cpu")


def test_a_folder_without_manifest_does_not_load(saved, tmp_path):
    _, path = saved
    dst = _copy(path, tmp_path)
    (dst / "manifest.json").unlink()
    with pytest.raises(CorruptRunError, match="manifest.json: missing"):
        SemiDiscreteOT.load(dst, device="cpu")


def _tamper_tensors(dst, change):
    t = load_file(str(dst / "ot.safetensors"))
    change(t)
    save_file(t, str(dst / "ot.safetensors"))
    write_manifest(dst, ["ot.safetensors", "ot.json"], "SemiDiscreteOT")  # a consistent, wrong save


def _tamper_json(dst, change):
    meta = json.loads((dst / "ot.json").read_text())
    meta = change(meta) or meta
    (dst / "ot.json").write_text(json.dumps(meta))
    write_manifest(dst, ["ot.safetensors", "ot.json"], "SemiDiscreteOT")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda t: t["unique_heights"].__setitem__(0, float("nan")), r"ot\.safetensors: unique_heights contains NaN"),
        (lambda t: t["targets"].__setitem__((1, 0), float("inf")), r"ot\.safetensors: targets contains NaN or infinite"),
        (lambda t: t["weights"].__setitem__(0, -0.5), r"ot\.safetensors: weights must be positive"),
        (lambda t: t.__setitem__("unique_heights", t["unique_heights"][:-1].clone()), r"unique_heights has shape"),
        (lambda t: t.__setitem__("weights", t["weights"].float()), r"weights must be a 1-D float64"),
        (lambda t: t.pop("weights"), r"holds .*expected targets, weights, unique_heights"),
    ],
)
def test_tampered_tensors_are_named(saved, tmp_path, change, match):
    _, path = saved
    dst = _copy(path, tmp_path)
    _tamper_tensors(dst, change)
    with pytest.raises(CorruptRunError, match=match):
        SemiDiscreteOT.load(dst, device="cpu")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda m: m.__setitem__("format", "brenier.SemiDiscreteOT/99"), r"ot\.json: unknown format"),
        (lambda m: [1, 2], r"ot\.json: expected a JSON object"),
        (lambda m: m.pop("fitted") and None, r"'fitted' missing"),
        (lambda m: m["fitted"].__setitem__("method", "magic"), r"fitted\.method must be"),
        (lambda m: m["params"].__setitem__("seed", -1), r"params\.seed must be"),
        (lambda m: m["params"].__setitem__("memory_budget", "big"), r"params\.memory_budget"),
        (lambda m: m["fitted"].__setitem__("n_iter", "7"), r"fitted\.n_iter"),
        (lambda m: m.__setitem__("source", {"kind": "nonsense"}), r"'source' does not describe a source"),
        (lambda m: m.__setitem__("source", {"kind": "UniformBall", "dim": 3, "radius": 1.0, "center": [0, 0, 0]}),
         r"dimension 3 does not match"),
    ],
)
def test_tampered_json_is_named(saved, tmp_path, change, match):
    _, path = saved
    dst = _copy(path, tmp_path)
    _tamper_json(dst, change)
    with pytest.raises(CorruptRunError, match=match):
        SemiDiscreteOT.load(dst, device="cpu")


def test_truncated_json_is_named(saved, tmp_path):
    _, path = saved
    dst = _copy(path, tmp_path)
    (dst / "ot.json").write_text('{"format": ')
    write_manifest(dst, ["ot.safetensors", "ot.json"], "SemiDiscreteOT")
    with pytest.raises(CorruptRunError, match=r"ot\.json: not valid JSON"):
        SemiDiscreteOT.load(dst, device="cpu")


def test_search_choice_gives_the_same_fit_and_is_validated(tmp_path):
    """Every exact search path behind the potential gives the same fit; a bad name is refused.

    brute and tiled share the BLAS's rounding: bitwise the same heights. The fused kernel rounds a
    score by its own (fixed) order of multiply-adds, so its values differ in the last float32 bits;
    the cells found are the same (same mismatch at every step) and the heights agree to rounding."""
    y = np.random.default_rng(3).normal(size=(1500, 6))
    searches = ["brute", "tiled", "auto"] + (["fused"] if fused.available() else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 3 steps: the paths, not convergence, are compared
        fits = [SemiDiscreteOT(method="newton", tol=0.05, seed=0, max_iter=3, search=s).fit(y) for s in searches]
    assert np.array_equal(fits[1].heights_, fits[0].heights_)
    for f in fits[2:]:
        assert [r["tv_debiased"] for r in f.history_] == [r["tv_debiased"] for r in fits[0].history_]
        np.testing.assert_allclose(f.heights_, fits[0].heights_, rtol=0, atol=1e-4)
    fits[2].save(tmp_path / "m")
    assert SemiDiscreteOT.load(tmp_path / "m").search == "auto"
    with pytest.raises(ValueError, match="search"):
        SemiDiscreteOT(search="fast").fit(y)
