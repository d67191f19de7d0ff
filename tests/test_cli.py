"""The ``brenier`` command line (Typer): help, ``ot`` on .npy/.npz files, input errors, ``demo``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brenier import SemiDiscreteOT
from brenier.cli import app
from brenier.ot import montecarlo

runner = CliRunner()

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def read_summary(path):
    return json.loads((path / "summary.json").read_text())


def assert_user_error(result, *needles):
    """Exit status 2, one readable red 'error:' line naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---------------------------------------------------------------- help
def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert "ot" in result.output and "demo" in result.output
    assert "Fit the OT map" in result.output and "Built-in example" in result.output


@pytest.mark.parametrize("command", ["ot", "demo"])
def test_command_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "--out" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and "brenier" in result.output


# ---------------------------------------------------------------- brenier ot
def test_ot_npy(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 3))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    # --max-iter bounds the test's run time whatever the solver's tuning
    result = invoke("ot", tmp_path / "x.npy", "--out", out, "--device", "cpu", "--max-iter", "6", "--allow-unconverged")
    assert result.exit_code == 0, result.output
    for name in ("ot.json", "ot.safetensors", "heights.npy", "summary.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.pt").exists()  # removed once the fit completed
    s = read_summary(out)
    assert (s["N"], s["d"]) == (200, 3)
    assert s["method"] == "newton" and isinstance(s["converged"], bool) and s["interrupted"] is False
    for key in ("tv_error", "max_rel_error", "iterations", "score_evaluations", "time_s"):
        assert key in s
    assert 1 <= s["iterations"] <= 6 and s["score_evaluations"] > 0 and 0 <= s["tv_error"] < 1
    h = np.load(out / "heights.npy")
    assert h.shape == (200,) and np.all(np.isfinite(h))
    model = SemiDiscreteOT.load(out, device="cpu")
    np.testing.assert_allclose(model.heights_, h)
    assert "Semi-discrete OT" in result.output  # the summary table

    # a figure needs a 2-D polygonal source
    from brenier.figures import plot_transport_2d

    with pytest.raises(ValueError, match="2-D"):
        plot_transport_2d(model, tmp_path / "no.png")


def test_ot_npz_with_weights(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 2))
    w = rng.uniform(1.0, 3.0, size=120)
    np.savez(tmp_path / "data.npz", targets=x, weights=w / w.sum())
    out = tmp_path / "run"
    result = invoke("ot", tmp_path / "data.npz", "--out", out, "--source", "box", "--method", "exact")
    assert result.exit_code == 0, result.output
    s = read_summary(out)
    assert (s["N"], s["d"], s["method"]) == (120, 2, "exact")
    assert s["weights"] == "data.npz[weights]" and s["converged"] and s["max_rel_error"] < 1e-6
    model = SemiDiscreteOT.load(out, device="cpu")
    np.testing.assert_allclose(model.weights_.numpy(), w / w.sum())

    # unnormalised weights under another key: normalised with a warning
    np.savez(tmp_path / "counts.npz", x=x, counts=np.round(w * 10))
    result = invoke("ot", tmp_path / "counts.npz", "--out", tmp_path / "run2", "--source", "box", "--method", "exact", "--weights-key", "counts")
    assert result.exit_code == 0, result.output
    assert "normalised" in result.output
    assert read_summary(tmp_path / "run2")["weights"] == "counts.npz[counts]"


def _bad_inputs(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "x.txt").write_text("1 2\n3 4\n")
    np.save(tmp_path / "flat.npy", rng.normal(size=50))
    nan = rng.normal(size=(20, 2))
    nan[5, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savez(tmp_path / "nokey.npz", y=rng.normal(size=(20, 2)))
    np.savez(tmp_path / "badw.npz", x=rng.normal(size=(20, 2)), weights=np.full(19, 1 / 19))
    np.savez(tmp_path / "negw.npz", x=rng.normal(size=(20, 2)), weights=np.r_[-0.05, np.full(19, 1.05 / 19)])
    np.save(tmp_path / "ok.npy", rng.normal(size=(20, 2)))
    np.save(tmp_path / "one.npy", rng.normal(size=(1, 2)))
    np.save(tmp_path / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file")
    (tmp_path / "empty.npy").write_bytes(b"")


BAD_CASES = {
    "missing": (["missing.npy"], ["missing.npy", "no such file"]),
    "txt": (["x.txt"], ["x.txt", ".txt", ".npy"]),
    "1-D array": (["flat.npy"], ["flat.npy", "2-D array", "(50,)"]),
    "NaN": (["nan.npy"], ["nan.npy", "NaN"]),
    "npz without x": (["nokey.npz"], ["nokey.npz", "'x' or 'targets'", "found: y"]),
    "weights length": (["badw.npz"], ["badw.npz[weights]", "20 weights", "19"]),
    "negative weights": (["negw.npz"], ["negative"]),
    "missing weights key": (["ok.npy", "--weights-key", "w"], [".npz"]),
    "single point": (["one.npy"], ["at least 2 points"]),
    "strings": (["strings.npy"], ["numbers"]),
    "not numpy": (["junk.npy"], ["junk.npy", "not a NumPy file"]),
    "empty file": (["empty.npy"], ["empty.npy", "empty"]),
    "bad tol": (["ok.npy", "--tol", "-1"], ["--tol"]),
    "exact in 3-D": (["flat.npy"], ["flat.npy"]),  # the shape error comes first
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_ot_bad_inputs(tmp_path, case):
    _bad_inputs(tmp_path)
    args, needles = BAD_CASES[case]
    args = [tmp_path / args[0], *args[1:]]
    result = invoke("ot", *args, "--out", tmp_path / "run", "--device", "cpu")
    assert_user_error(result, *needles)
    assert not (tmp_path / "run").exists()  # a failed start leaves no empty --out folder behind


def test_ot_unconverged_exits_3_unless_allowed(tmp_path):
    """A fit that stops short of its tolerance: one warning line, outputs written, exit 3; --allow-unconverged: exit 0."""
    np.save(tmp_path / "x.npy", np.random.default_rng(8).normal(size=(200, 5)))
    out = tmp_path / "run"
    result = invoke("ot", tmp_path / "x.npy", "--out", out, "--device", "cpu", "--max-iter", "1")
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and not read_summary(out)["converged"]
    warns = [ln for ln in result.output.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "tol" in warns[0] and "--allow-unconverged" in warns[0], result.output
    assert (out / "ot.safetensors").is_file() and (out / "heights.npy").is_file()
    result = invoke("ot", tmp_path / "x.npy", "--out", out, "--device", "cpu", "--max-iter", "1",
                    "--allow-unconverged", "--no-checkpoint")
    assert result.exit_code == 0, result.output
    assert len([ln for ln in result.output.splitlines() if ln.startswith("warning:")]) == 1


def test_failed_start_removes_only_the_folders_it_created(tmp_path):
    (tmp_path / "keep").mkdir()
    np.save(tmp_path / "nan.npy", np.full((5, 2), np.nan))
    result = invoke("fit", "--data", tmp_path / "nothing.npz", "--out", tmp_path / "a" / "b" / "run")
    assert_user_error(result, "nothing.npz")
    assert not (tmp_path / "a").exists()
    result = invoke("fit", "--data", tmp_path / "nothing.npz", "--out", tmp_path / "keep")
    assert result.exit_code == 2 and (tmp_path / "keep").is_dir()  # it existed before: kept


def test_ot_exact_needs_2d_uniform_source(tmp_path):
    np.save(tmp_path / "x3.npy", np.random.default_rng(3).normal(size=(30, 3)))
    result = invoke("ot", tmp_path / "x3.npy", "--out", tmp_path / "run", "--method", "exact")
    assert_user_error(result, "exact", "2-D")
    np.save(tmp_path / "x2.npy", np.random.default_rng(3).normal(size=(30, 2)))
    result = invoke("ot", tmp_path / "x2.npy", "--out", tmp_path / "run", "--method", "exact", "--source", "gaussian")
    assert_user_error(result, "exact", "gaussian")


def test_ot_bad_choice_is_a_usage_error(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    result = invoke("ot", tmp_path / "x.npy", "--out", tmp_path / "run", "--source", "sphere")
    assert result.exit_code == 2 and "sphere" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_ot_cuda_unavailable(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(4).normal(size=(30, 2)))
    result = invoke("ot", tmp_path / "x.npy", "--out", tmp_path / "run", "--device", "cuda")
    assert_user_error(result, "CUDA")


def _stop_after(iterations: int, starts: list):
    """A stand-in for montecarlo.solve_newton that records where it starts and hits Ctrl-C."""
    real = montecarlo.solve_newton

    def solver(pot, source, nu, state, *, callback=None, **kw):
        if callback is None:  # the coarse levels of the low-dimensional multiscale start
            return real(pot, source, nu, state, **kw)
        starts.append(state.iteration)
        stop_at = state.iteration + iterations

        def cb(rec, h):
            callback(rec, h)
            if rec["iteration"] + 1 >= stop_at:
                raise KeyboardInterrupt

        return real(pot, source, nu, state, callback=cb, **kw)

    return solver


def test_ot_interrupt_then_resume(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.random.default_rng(5).normal(size=(100, 3)))
    out = tmp_path / "run"
    args = ("ot", tmp_path / "x.npy", "--out", out, "--device", "cpu")
    starts: list[int] = []
    monkeypatch.setattr(montecarlo, "solve_newton", _stop_after(2, starts))

    result = invoke(*args)
    assert result.exit_code == 130, result.output
    assert (out / "checkpoint.pt").is_file()  # kept for the next run
    s = read_summary(out)
    assert s["interrupted"] is True and s["iterations"] == 2
    assert (out / "ot.safetensors").is_file() and (out / "heights.npy").is_file()  # best heights so far
    assert "resume" in result.output

    result = invoke(*args)  # the same command again: continues where it stopped
    assert result.exit_code == 130, result.output
    assert starts == [0, 2]
    assert read_summary(out)["iterations"] == 4

    result = invoke(*args, "--no-checkpoint")  # ignores the checkpoint: starts from scratch
    assert starts[-1] == 0


def test_ot_checkpoint_of_another_problem(tmp_path):
    import torch as _torch

    out = tmp_path / "run"
    out.mkdir()
    _torch.save({"fingerprint": "something else"}, out / "checkpoint.pt")
    np.save(tmp_path / "x.npy", np.random.default_rng(6).normal(size=(50, 3)))
    result = invoke("ot", tmp_path / "x.npy", "--out", out, "--device", "cpu")
    assert_user_error(result, "checkpoint", "--no-checkpoint")


# ---------------------------------------------------------------- brenier demo
def test_figure_seahorse(tmp_path):
    """The issue's explanatory picture: the disk's power diagram with the singular set, and the seahorse."""
    out = tmp_path / "fig" / "seahorse.png"
    result = invoke("figure", "seahorse", "--out", out, "--n", "300", "--n-gen", "1000")
    assert result.exit_code == 0, result.output
    png = out.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes left no debris


# ---------------------------------------------------------------- figures
def test_plot_transport_2d_polygon_with_hole(tmp_path):
    """Cells of a source with a hole are drawn as compound paths; outline may be a shapely geometry."""
    import shapely

    from brenier.figures import plot_transport_2d, position_colors
    from brenier.sources import Polygon

    annulus = shapely.Point(0, 0).buffer(1.0, 32).difference(shapely.Point(0, 0).buffer(0.4, 32))
    y = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    model = SemiDiscreteOT(Polygon(annulus), method="exact").fit(y, np.array([0.8, 0.05, 0.05, 0.05, 0.05]))
    assert len(model.power_diagram().cells()[0].interiors) == 1  # the heavy central cell wraps the hole
    png = plot_transport_2d(model, tmp_path / "fig" / "t.png", title="annulus", outline=shapely.box(-1, -1, 1, 1))
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in png.parent.iterdir()] == ["t.png"]

    y = np.random.default_rng(7).normal(size=(40, 2))
    c = position_colors(y)
    assert c.shape == (40, 3) and c.min() >= 0 and c.max() <= 1
    # continuous: close points, close colours
    d = position_colors(y + 1e-6, reference=y)
    assert np.abs(c - d).max() < 1e-3


# ---------------------------------------------------------------- brenier critical
@pytest.mark.parametrize("data, latent", [("occlusion", ["--latent", "2"]), ("tipping", [])])
def test_critical_command_end_to_end(tmp_path, data, latent):
    """A deliberately tiny fit: every output is written, the walk stays in one mode, and the
    three decoded paths (walk, diffusion-latent interpolation, straight interpolation) are recorded."""
    out = tmp_path / "crit"
    result = invoke("critical", "--data", data, "--train", "4", "--epochs", "2", *latent,
                    "--diffusion-steps", "20", "--out", out, "--device", "cpu", "--allow-unconverged")
    assert result.exit_code == 0, result.output
    for f in ("filmstrip.png", "score.png", "walk.png"):
        assert (out / f).read_bytes().startswith(PNG_MAGIC), f
    s = json.loads((out / "summary.json").read_text())
    assert len(set(s["reflect_walk_modes"])) == 1
    assert len(s["diffusion_interpolation_modes"]) == len(s["interpolation_modes"]) == 16
    assert s["diffusion"]["train_steps"] == 20 and 0 <= s["heldout"]["precision"] <= 1
    assert "diffusion interpolation" in result.output
    assert s["latent_dim"] == (2 if data == "occlusion" else 3)   # tipping: latent 3 by default


def test_fit_interrupted_then_resumed(tmp_path, monkeypatch):
    """Ctrl-C during `brenier fit`: one warning line and exit 130 (not a bare "Aborted!"); the same
    command resumes the autoencoder from its last completed epoch."""
    import brenier.nets.autoencoder as ae_mod

    real = ae_mod.save_checkpoint

    def save_then_stop(path, **kw):
        real(path, **kw)
        if kw["epoch"] == 2:
            raise KeyboardInterrupt

    args = ("fit", "--data", "digits", "--limit", "80", "--epochs", "3", "-d", "2", "--ot-tol", "0.3",
            "--out", tmp_path / "run", "--device", "cpu", "--allow-unconverged")
    monkeypatch.setattr(ae_mod, "save_checkpoint", save_then_stop)
    result = invoke(*args)
    assert result.exit_code == 130, result.output
    assert "Aborted" not in result.output and "Traceback" not in result.output
    assert [ln for ln in result.output.splitlines() if ln.startswith("warning:")][0].count("resume") == 1
    assert (tmp_path / "run" / "checkpoints" / "autoencoder.ckpt").is_file()
    monkeypatch.setattr(ae_mod, "save_checkpoint", real)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run" / "aeot.json").read_text())["train_info"]
    assert info["resumed_from"] == 2 and info["epochs_run"] == 3
