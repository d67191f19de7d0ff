"""The run report and the CLI commands demo / fit / sample / report on a small slice of digits."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brenier.cli import app
from brenier.report import FIGURES, Section, build_report, save_grid

torch.set_num_threads(1)
runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--limit", "200", "--epochs", "5", "--ot-tol", "0.1", "--latent-dim", "4", "--seed", "0", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # the comparison without the diffusion model (its 4,000 training steps are for benchmarks)
    result = invoke("demo", "--out", out, "--n-samples", "100", "--compare-models", "ot,ot-ignore,gmm,gaussian", *TINY)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_writes_everything(demo_run):
    out, text = demo_run
    for f in FIGURES:
        assert (out / f).read_bytes().startswith(PNG), f
    for f in ("report.html", "metrics.json", "aeot.json", "autoencoder.safetensors", "ot/ot.json", "run.json"):
        assert (out / f).is_file(), f
    assert not (out / "checkpoints").exists() and not list(out.rglob("*.tmp"))
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_samples"] == 100 and m["latent_dim"] == 4 and m["n_train"] == 200
    for b in ("respect", "ignore"):
        s = m[b]
        assert 0 <= s["confident_share"] <= 1 and abs(sum(s["class_shares"].values()) - 1) < 1e-9
        assert s["nn_distance_median"] > 0 and s["n"] == 100
    assert m["classifier"]["held_out_accuracy"] > 0.8      # the judge knows digits
    assert "AEOT demo" in text and 'boundary="respect"' in text and "report.html" in text
    # the comparison on the run's own codes: one seed, the four models asked for, image metrics
    c = json.loads((out / "compare" / "compare.json").read_text())
    assert c["models"] == ["ot", "ot-ignore", "gmm", "gaussian"] and c["seeds"] == [0]
    assert c["aeot"].startswith("given")
    for mname in c["models"]:
        assert 0 <= c["summary"][mname]["mode_mixture"]["mean"] <= 1
    assert "mode-mixture rate" in text


def test_report_html_is_self_contained(demo_run):
    out, _ = demo_run
    html = (out / "report.html").read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == len(FIGURES) + 1  # + the comparison's sample grids
    assert all(base64.b64decode(i).startswith(PNG) for i in imgs)
    # nothing fetched from elsewhere: no external src/href, no script
    assert not re.search(r'(src|href)="(?!data:)', html) and "<script" not in html
    for heading in ("Training curves", "Latent codes", "respecting vs ignoring", "Nearest training", "Metrics",
                    "Comparison with other generators"):
        assert heading in html


def test_report_sections_from_compare_md_and_extra(demo_run, tmp_path):
    out, _ = demo_run
    (out / "compare.md").write_text("# Baselines\n\n| model | off-support |\n|---|---|\n| ot | 0.01 |\n| ddpm | 0.2 |\n\n"
                                    "Some **bold** text.\n\n![grid](samples.png)\n")
    extra = Section("Extra", "<p>hello extra</p>", images=[(out / "neighbours.png", "again")])
    path = build_report(out, extra_sections=[extra], out=tmp_path / "r.html")
    html = path.read_text()
    assert "<th>model</th>" in html and "<td>ddpm</td>" in html and "<b>bold</b>" in html
    assert "hello extra" in html and html.count("data:image/png;base64") == len(FIGURES) + 2
    (out / "compare.md").unlink()
    with pytest.raises(TypeError, match="extra_sections"):
        build_report(out, extra_sections=["nope"])
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        build_report(tmp_path)


def test_sample_command(demo_run, tmp_path):
    out, _ = demo_run
    r = invoke("sample", out, "-n", "16", "--out", tmp_path / "g.png", "--npz", tmp_path / "s.npz", "--boundary", "ignore", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").read_bytes().startswith(PNG)
    z = np.load(tmp_path / "s.npz")
    assert z["x"].shape == (16, 1, 8, 8) and z["codes"].shape == (16, 4)
    bad = invoke("sample", out, "--boundary", "sideways")
    assert bad.exit_code == 2 and "boundary" in bad.output
    missing = invoke("sample", tmp_path / "nope")
    assert missing.exit_code == 2 and "saved AEOT" in missing.output


def test_report_command_html_only(demo_run):
    out, _ = demo_run
    before = (out / "report.html").stat().st_mtime_ns
    r = invoke("report", out, "--html-only")
    assert r.exit_code == 0, r.output
    assert (out / "report.html").stat().st_mtime_ns >= before


def test_report_re_evaluates_scores_older_than_the_run(demo_run):
    # a run saved again after its scores (e.g. its singular set recomputed) is evaluated anew:
    # the report must not show an older model's scores as this one's
    import os

    out, _ = demo_run
    if not (out / "manifest.json").is_file():
        pytest.skip("the demo folder holds no saved run")
    m = out / "metrics.json"
    old = (out / "manifest.json").stat().st_mtime - 60
    os.utime(m, (old, old))
    r = invoke("report", out, "-n", "100")
    assert r.exit_code == 0, r.output
    assert "re-evaluating" in r.output
    assert m.stat().st_mtime > (out / "manifest.json").stat().st_mtime


def test_fit_command_and_errors(tmp_path):
    r = invoke("fit", "--data", "digits", "--out", tmp_path / "run", "--limit", "120", "--epochs", "3", "-d", "3", "--ot-tol", "0.1", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "aeot.json").is_file() and json.loads((tmp_path / "run" / "run.json").read_text())["data"] == "digits"
    r = invoke("fit", "--data", tmp_path / "missing.npz", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "missing.npz" in r.output and "Traceback" not in r.output


def test_save_grid(tmp_path):
    p = save_grid(np.random.default_rng(0).random((10, 3, 8, 8)), tmp_path / "g.png")
    assert p.read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match="imgs"):
        save_grid(np.zeros((4, 8)), tmp_path / "h.png")


def test_evaluate_unlabelled_data(demo_run, tmp_path):
    """Without labels: no judge scores, still samples, neighbours, figures and a report."""
    from brenier.datasets import load
    from brenier.pipeline import AEOT
    from brenier.report import evaluate_run

    out, _ = demo_run
    model = AEOT.load(out, device="cpu")
    X, _ = load("digits", limit=200)
    m = evaluate_run(model, X, None, tmp_path, n_samples=100, seed=1)
    assert "classifier" not in m and m["respect"]["nn_distance_median"] > 0
    html = build_report(tmp_path).read_text()
    assert html.count("data:image/png;base64") == len(FIGURES) and "passes the digits bar" not in html
    with pytest.raises(ValueError, match="n_samples"):
        evaluate_run(model, X, None, tmp_path, n_samples=10)


def test_latent_figure_at_20000_codes_draws_a_bounded_subset(tmp_path, monkeypatch):
    # the report at the scale of a whole data set: the PCA scatter draws at most MAX_DRAWN codes
    # (seeded), whatever N; the projection and the mode labels still use every code
    import time
    from types import SimpleNamespace

    import matplotlib.axes

    from brenier import report

    rng = np.random.default_rng(0)
    n = 20_000
    codes = rng.normal(size=(n, 16))
    model = SimpleNamespace(codes_=codes, modes_=rng.integers(0, 3, n), seed=0, code_index_=np.arange(n))
    drawn = []
    scatter = matplotlib.axes.Axes.scatter
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", lambda self, x, y, *a, **k: (drawn.append(len(x)), scatter(self, x, y, *a, **k))[1])
    t = time.perf_counter()
    report._fig_latent(model, None, rng.integers(0, 10, n), tmp_path / "latent.png")
    assert time.perf_counter() - t < 10.0
    assert (tmp_path / "latent.png").read_bytes().startswith(PNG)
    assert drawn == [report.MAX_DRAWN, report.MAX_DRAWN]
    np.testing.assert_array_equal(report.drawn_subset(n, seed=0), report.drawn_subset(n, seed=0))   # seeded
    assert len(report.drawn_subset(300)) == 300
