"""brenier.compare and `brenier compare`: tables, files, known outcomes on toy data, image path."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brenier import compare as C
from brenier.cli import app


def test_summarise_and_markdown_table_known_values():
    runs = [{"model": "a", "seed": 0, "x": 1.0, "y": 2, "note": "s"}, {"model": "a", "seed": 1, "x": 3.0, "y": 2},
            {"model": "b", "seed": 0, "x": 0.5, "y": 4}]
    s = C.summarise(runs)
    assert s["a"]["x"] == {"mean": 2.0, "std": 1.0, "n": 2}
    assert s["b"]["y"] == {"mean": 4.0, "std": 0.0, "n": 1} and "note" not in s["a"]
    cols = [("x", "x ↓", ".2f", "lower"), ("y", "y ↑", ".1f", "higher")]
    t = C.markdown_table(s, cols)
    lines = t.splitlines()
    assert lines[0] == "| model | x ↓ | y ↑ |" and len(lines) == 4
    assert lines[2] == "| a | 2.00 ± 1.00 | 2.0 ± 0.0 |"
    assert lines[3] == "| b | **0.50** | **4.0** |"


def test_inputs_are_validated(tmp_path):
    with pytest.raises(ValueError, match="models: unknown model 'vae'"):
        C.compare("ring8", models="ot,vae")
    with pytest.raises(ValueError, match="models: duplicate"):
        C.compare("ring8", models=["ot", "ot"])
    with pytest.raises(ValueError, match="seeds"):
        C.compare("ring8", seeds=[-1])
    with pytest.raises(ValueError, match="n_samples"):
        C.compare("ring8", n_samples=3)
    with pytest.raises(FileNotFoundError):
        C.compare("no-such-data-set", models="gaussian", seeds=[0])
    with pytest.raises(TypeError, match="aeot: expected a fitted"):
        C.compare("digits", models="gaussian", seeds=[0], aeot=object())
    with pytest.raises(ValueError, match="images: X has 3 rows but y has 2"):
        C.compare("digits", models="gaussian", seeds=[0], images=(np.zeros((3, 1, 8, 8)), np.zeros(2)))


def test_toy_comparison_writes_files_and_finds_the_known_ordering(tmp_path):
    torch.set_num_threads(1)
    r = C.compare("ring8", models="ot,gaussian", seeds=[0, 1], n_train=300, n_heldout=300, n_samples=400,
                  out=tmp_path, progress=False, device="cpu")
    for f in ("compare.json", "compare.md", "samples.png", "samples_seed0.npz"):
        assert (tmp_path / f).stat().st_size > 0
    assert np.load(tmp_path / "samples_seed0.npz")["ot"].shape == (400, 2)
    j = json.loads((tmp_path / "compare.json").read_text())
    assert j["models"] == ["ot", "gaussian"] and j["seeds"] == [0, 1] and len(j["runs"]) == 4
    s = r["summary"]
    # OT never leaves the 8 disks; one Gaussian puts almost everything in the hole of the ring
    assert s["ot"]["off_support"]["mean"] == 0.0 and s["ot"]["modes_hit"]["mean"] == 8
    assert s["gaussian"]["off_support"]["mean"] > 0.8
    assert s["ot"]["energy"]["mean"] < s["gaussian"]["energy"]["mean"]
    assert s["ot"]["off_support"]["n"] == 2
    assert "`ot` has it" in C.verdict(r)
    assert C.verdict(r, min_novelty=1.01) == "No model reaches novelty ≥ 1.01."
    (tmp_path / "compare.md").unlink()
    C.render_markdown(tmp_path)
    md = (tmp_path / "compare.md").read_text()
    assert "| ot |" in md and "| gaussian |" in md and "(samples.png)" in md and "off-support points in red" in md


class _LinearAE:
    """A stand-in for AEOT (PCA to 2-D + exact OT) so that the image path runs in seconds."""

    def __init__(self, X, seed):
        from brenier import SemiDiscreteOT
        from brenier.sources import UniformBall

        f = X.reshape(len(X), -1).astype(np.float64)
        self.shape, self.mu = X.shape[1:], f.mean(0)
        _, _, vt = np.linalg.svd(f - self.mu, full_matrices=False)
        self.V = vt[:2]
        z = (f - self.mu) @ self.V.T
        self.center_, self.scale_ = z.mean(0), float(np.linalg.norm(z - z.mean(0), axis=1).max())
        self.codes_ = (z - self.center_) / self.scale_
        self.ot_ = SemiDiscreteOT(UniformBall(2), method="exact", seed=seed, device="cpu").fit(self.codes_)

    def denormalise(self, y):
        return np.asarray(y) * self.scale_ + self.center_

    def decode(self, z):
        f = np.clip(np.asarray(z, dtype=np.float64) @ self.V + self.mu, 0, 1)
        return torch.as_tensor(f.reshape(len(f), *self.shape))


def test_image_comparison_path(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    templates = np.zeros((3, 1, 4, 4), dtype=np.float32)
    templates[0, 0, :, 0] = templates[1, 0, 0, :] = templates[2, 0, np.arange(4), np.arange(4)] = 1.0
    y = np.repeat(np.arange(3), 60)
    X = np.clip(templates[y] + 0.1 * rng.normal(size=(180, 1, 4, 4)), 0, 1).astype(np.float32)
    import brenier.datasets

    monkeypatch.setattr(brenier.datasets, "load", lambda name: (X, y))
    monkeypatch.setattr(C, "_fit_aeot", lambda X, s, device, progress, params: _LinearAE(X, s))
    r = C.compare("toy-images", models="ot,gaussian", seeds=[0], n_samples=200, out=tmp_path, progress=False)
    s = r["summary"]
    assert set(s) == {"real (held-out)", "ot", "gaussian"}
    assert r["classifier"]["heldout_accuracy"] > 0.95
    assert s["real (held-out)"]["mode_mixture"]["mean"] < 0.05
    # decoded OT codes are near the 3 templates; a single Gaussian over 3 clusters blends them
    assert s["ot"]["mode_mixture"]["mean"] <= s["gaussian"]["mode_mixture"]["mean"]
    assert 0.0 <= s["ot"]["novelty"]["mean"] <= 1.0
    assert (tmp_path / "classifier" / "classifier.json").exists() and (tmp_path / "samples.png").exists()
    assert "real (held-out)" in (tmp_path / "compare.md").read_text()


def test_cli_compare(tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", "--data", "moons", "--models", "gaussian,gmm", "--seeds", "1",
                                   "--n-samples", "200", "--n-train", "200", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "gaussian" in res.output and "off-support" in res.output
    assert json.loads((out / "compare.json").read_text())["data"] == "moons"
    bad = CliRunner().invoke(app, ["compare", "--data", "ring8", "--models", "vae", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown model" in bad.output


def test_mixture_origins_finds_blends_at_the_singular_set():
    """ot-ignore blends across the singular set: its off-support samples start next to it (the
    seed's claim), far more often than the band's share of the source (10 %)."""
    import warnings

    from brenier.baselines import make_baseline
    from brenier.compare import NEAR_SINGULAR_SHARE, mixture_origins
    from brenier.datasets import toy

    data = toy("ring8", 600, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_baseline("ot-ignore", seed=0).fit(data.points)
        z, x = model.sample_with_sources(2000, seed=1)
    off = data.component(z) < 0
    assert off.sum() >= 5
    out = mixture_origins(model.ot_, x, off, seed=0)
    assert out["near_singular"] == pytest.approx(NEAR_SINGULAR_SHARE, abs=0.04)
    assert out["mixed_near_singular"] > 0.8
    none = mixture_origins(model.ot_, x, np.zeros(len(x), bool), seed=0)
    assert np.isnan(none["mixed_near_singular"])


def test_cli_compare_reuses_a_fitted_run(tmp_path):
    run, out = tmp_path / "run", tmp_path / "cmp"
    fit = CliRunner().invoke(app, ["fit", "--data", "digits", "--out", str(run), "--limit", "120", "--epochs", "3", "-d", "3",
                                   "--ot-tol", "0.1", "--device", "cpu"])
    assert fit.exit_code == 0, fit.output
    res = CliRunner().invoke(app, ["compare", "--data", "digits", "--models", "ot,gaussian", "--seeds", "1", "--n-samples", "50",
                                   "--model", str(run), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "compare.json").read_text())
    assert r["aeot"].startswith("given") and set(r["models"]) == {"ot", "gaussian"}
    assert "first 120 images" in res.output
    # the wrong data set, a toy set, a folder without a run: refused before any work, exit 2
    for args, msg in ((["--data", "mnist", "--model", str(run)], "not on 'mnist'"),
                      (["--data", "ring8", "--model", str(run)], "only for image sets"),
                      (["--data", "digits", "--model", str(tmp_path)], "no run.json")):
        bad = CliRunner().invoke(app, ["compare", *args, "--models", "gaussian", "--out", str(out)])
        assert bad.exit_code == 2 and msg in bad.output, bad.output


def test_mixture_origins_has_no_answer_without_a_singular_set():
    from types import SimpleNamespace

    from brenier.compare import mixture_origins

    ot = SimpleNamespace(singular_set_=SimpleNamespace(n_facets=0))
    out = mixture_origins(ot, np.zeros((4, 2)), np.array([True, False, True, False]))
    assert all(np.isnan(v) for v in out.values()), out  # not "0 % near S"


def test_benchmark_merge_replaces_rerun_rows_and_needs_every_seed(tmp_path):
    # benchmarks/compare.py --merge: parts on other seeds join; a later part's rows replace an
    # earlier part's for the same model and seed (ot rerun after its singular set changed)
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_compare", Path(__file__).parents[1] / "benchmarks" / "compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def part(name, models, seeds, value):
        runs = [{"model": "real (held-out)", "seed": 0, "mode_mixture": 0.0}]
        runs += [{"model": m, "seed": s, "mode_mixture": value} for m in models for s in seeds]
        (tmp_path / name).mkdir()
        (tmp_path / name / "compare.json").write_text(json.dumps({
            "data": "mnist", "kind": "images", "models": models, "seeds": seeds, "n_samples": 10, "runs": runs,
            "settings": {m: [{}] for m in models}, "time_s": 1.0, "files": {}}))

    part("a", ["ot", "ddpm"], [0], 0.5)
    part("b", ["ot", "ddpm"], [1], 0.5)
    part("c", ["ot"], [0, 1], 0.1)
    m = bench.merge(tmp_path, "all", ["a", "b", "c"])
    assert m["models"] == ["ot", "ddpm"] and m["seeds"] == [0, 1]
    assert m["summary"]["ot"]["mode_mixture"]["mean"] == pytest.approx(0.1)      # replaced on both seeds
    assert m["summary"]["ddpm"]["mode_mixture"]["mean"] == pytest.approx(0.5)
    assert m["summary"]["real (held-out)"]["mode_mixture"]["n"] == 1             # the reference row once
    assert sorted((r["model"], r["seed"]) for r in m["replaced"]) == [("ot", 0), ("ot", 1)]
    with pytest.raises(SystemExit, match="every model needs every seed"):
        bench.merge(tmp_path, "bad", ["a", "c"])   # ddpm has no seed 1
