"""AEOT end to end on a small slice of digits: shapes, normalisation, sampling rules, persistence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brenier import NotFittedError
from brenier.datasets import load
from brenier.pipeline import AEOT

torch.set_num_threads(1)

SMALL = dict(latent_dim=4, epochs=15, batch_size=32, lr=1e-2, patience=5, ot_tol=0.1, device="cpu", seed=0)


@pytest.fixture(scope="module")
def data():
    return load("digits", limit=300)


@pytest.fixture(scope="module")
def model(data):
    return AEOT(**SMALL).fit(data[0])


def test_fit_attributes(model, data):
    X, _ = data
    assert model.image_shape_ == (1, 8, 8) and model.autoencoder_.kind == "mlp"
    assert model.codes_.shape == (300, 4) and model.codes_.dtype == np.float64
    # normalisation: centred, farthest code on the unit sphere, all inside the source's unit ball
    norms = np.linalg.norm(model.codes_, axis=1)
    assert norms.max() == pytest.approx(1.0) and np.allclose(model.codes_.mean(0), 0, atol=1e-9)
    assert model.ot_.source_.dim == 4 and model.ot_.converged_ and model.ot_.tv_error_ <= 0.1
    assert model.train_history_ and model.train_history_[-1]["val_loss"] < model.train_history_[0]["val_loss"]
    assert set(model.timings_) >= {"autoencoder_s", "ot_s"}
    ss = model.singular_set_
    assert ss is not None and len(np.asarray(ss.modes)) == 300 and ss.n_modes >= 1


def test_encode_normalise_round_trip(model, data):
    X, _ = data
    z = model.encode(X[:10])
    assert isinstance(z, np.ndarray) and z.shape == (10, 4)
    np.testing.assert_allclose(model.normalise(z), model.codes_[:10], atol=1e-5)
    np.testing.assert_allclose(model.denormalise(model.normalise(z)), z, atol=1e-9)
    Xr = model.decode(z)
    assert Xr.shape == (10, 1, 8, 8) and Xr.min() >= 0 and Xr.max() <= 1
    # the autoencoder reconstructs better than the mean image
    assert np.mean((Xr - X[:10]) ** 2) < 0.6 * np.mean((X.mean(0) - X[:10]) ** 2)
    zt = model.encode(torch.from_numpy(X[:3]))
    assert isinstance(zt, torch.Tensor) and isinstance(model.decode(zt), torch.Tensor)


def test_sample_rules_and_seed(model):
    a, ya = model.sample(50, seed=3, return_codes=True)
    assert a.shape == (50, 1, 8, 8) and a.min() >= 0 and a.max() <= 1 and ya.shape == (50, 4)
    np.testing.assert_array_equal(a, model.sample(50, seed=3))              # same seed, same images
    assert not np.array_equal(a, model.sample(50, seed=4))
    b = model.sample(50, seed=3, boundary="ignore")
    assert b.shape == a.shape
    # new codes: interpolations, not copies of the training codes, and inside the unit ball
    d = np.linalg.norm(ya[:, None, :] - model.codes_[None], axis=2).min(axis=1)
    assert np.median(d) > 1e-6 and np.linalg.norm(ya, axis=1).max() <= 1 + 1e-9


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path / "run")
    assert not list((tmp_path / "run").rglob("*.tmp"))
    m2 = AEOT.load(tmp_path / "run", device="cpu")
    np.testing.assert_array_equal(m2.codes_, model.codes_)
    np.testing.assert_array_equal(m2.sample(20, seed=1), model.sample(20, seed=1))
    assert m2.train_info_ == model.train_info_ and m2.image_shape_ == model.image_shape_
    with pytest.raises(FileNotFoundError, match="saved AEOT"):
        AEOT.load(tmp_path / "nothing")


def test_the_singular_set_is_saved_with_the_run(model, tmp_path, monkeypatch):
    import json

    from brenier import CorruptRunError
    from brenier.ot import SemiDiscreteOT
    from safetensors.torch import load_file, save_file

    run = model.save(tmp_path / "run")
    assert (run / "singular.safetensors").is_file()
    # loading reads it back: no recomputation (minutes at 60,000 codes)
    monkeypatch.setattr(SemiDiscreteOT, "singular_set", lambda *a, **k: pytest.fail("recomputed on load"))
    m2 = AEOT.load(run, device="cpu")
    a, b = model.singular_set_, m2.singular_set_
    for k in ("adjacency", "angles", "detour", "singular", "modes", "facets", "searched"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert (a.criterion, a.threshold, a.exact, a.n_modes) == (b.criterion, b.threshold, b.exact, b.n_modes)
    assert m2.ot_.singular_set_ is b
    np.testing.assert_array_equal(m2.sample(20, seed=1), model.sample(20, seed=1))
    # a consistent tamper (manifest re-signed): flags that disagree with the detours are refused
    t = load_file(str(run / "singular.safetensors"))
    t["singular"] = 1 - t["singular"]
    save_file(t, str(run / "singular.safetensors"))
    _resign(run)
    with pytest.raises(CorruptRunError, match="singular.safetensors: the singular flags disagree"):
        AEOT.load(run, device="cpu")
    t["singular"] = 1 - t["singular"]
    good = t["searched"].clone()
    t["searched"][0] = float("nan")  # how far each detour is exact: a ratio >= 1, never NaN
    save_file(t, str(run / "singular.safetensors"))
    _resign(run)
    with pytest.raises(CorruptRunError, match="'searched' must hold"):
        AEOT.load(run, device="cpu")
    del t["searched"]  # a set saved before 2026-12 has none: read as exact to KAPPA_MAX
    save_file(t, str(run / "singular.safetensors"))
    _resign(run)
    assert AEOT.load(run, device="cpu").singular_set_.searched is None
    t["searched"] = good
    t["adjacency"] = t["adjacency"].flip(1)  # pairs i > j
    save_file(t, str(run / "singular.safetensors"))
    _resign(run)
    with pytest.raises(CorruptRunError, match="pairs i < j"):
        AEOT.load(run, device="cpu")
    meta = json.loads((run / "aeot.json").read_text())
    meta["singular_set"]["threshold"] = 0.5  # not a detour ratio
    (run / "aeot.json").write_text(json.dumps(meta))
    _resign(run)
    with pytest.raises(CorruptRunError, match="invalid criterion"):
        AEOT.load(run, device="cpu")
    # a run saved before the singular set was saved (no key): recomputed, as before
    monkeypatch.undo()
    del meta["singular_set"]
    (run / "aeot.json").write_text(json.dumps(meta))
    (run / "singular.safetensors").unlink()
    files = [f for f in json.loads((run / "manifest.json").read_text())["files"] if f != "singular.safetensors"]
    from brenier._io import write_manifest

    write_manifest(run, files, "AEOT")
    assert AEOT.load(run, device="cpu").singular_set_.n_modes == a.n_modes


def test_bad_input(model, data):
    X, _ = data
    with pytest.raises(ValueError, match="X"):
        model.encode(X[:, 0])                                   # (n, H, W)
    with pytest.raises(ValueError, match="shape"):
        model.encode(np.zeros((2, 1, 9, 9), np.float32))        # not the training size
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.encode(X[:2] * 3)
    with pytest.raises(ValueError, match="NaN"):
        model.encode(np.full((2, 1, 8, 8), np.nan, np.float32))
    with pytest.raises(ValueError, match="n"):
        model.sample(0)
    with pytest.raises(ValueError, match="boundary"):
        model.sample(5, boundary="maybe")
    with pytest.raises(ValueError, match="z"):
        model.decode(np.zeros((2, 5)))
    with pytest.raises(NotFittedError):
        AEOT().sample(3)
    for kw, needle in ((dict(latent_dim=0), "latent_dim"), (dict(autoencoder="gan"), "autoencoder"),
                       (dict(source="sphere"), "source"), (dict(ot_tol=-1), "ot_tol"), (dict(seed=-1), "seed"),
                       (dict(max_codes=1), "max_codes")):
        with pytest.raises(ValueError, match=needle):
            AEOT(**kw).fit(X)
    with pytest.raises(TypeError, match="X"):
        AEOT().fit(np.array([["a"]]))


def test_conv_color_frames_and_max_codes():
    """The same API on (n, 3, 16, 16) images in [0, 1] (conv autoencoder) and a subset of codes for OT."""
    g = np.random.default_rng(0)
    X = np.zeros((60, 3, 16, 16), np.float32)
    for k in range(60):
        r, c = g.integers(0, 12, 2)
        X[k, k % 3, r:r + 4, c:c + 4] = 1.0
    m = AEOT(latent_dim=3, epochs=3, batch_size=32, ot_tol=0.1, device="cpu", seed=1, max_codes=40,
             ae_options=dict(channels=(4, 8), hidden=16)).fit(X)
    assert m.autoencoder_.kind == "conv" and m.codes_.shape == (40, 3) and len(m.code_index_) == 40
    assert m.sample(7, seed=0).shape == (7, 3, 16, 16)


# ------------------------------------------------------------------ a run folder is a unit, every field validated
def _resign(run):
    """Rewrite the manifest over the current files: a consistent tamper that only field validation can catch."""
    import json

    from brenier._io import write_manifest

    files = list(json.loads((run / "manifest.json").read_text())["files"])
    write_manifest(run, files, "AEOT")


def test_save_writes_a_manifest_of_every_file(model, tmp_path):
    import json

    run = model.save(tmp_path / "run")
    listed = set(json.loads((run / "manifest.json").read_text())["files"])
    on_disk = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk and {"aeot.json", "autoencoder.safetensors", "ot/ot.safetensors", "ot/ot.json"} <= listed


def test_save_that_dies_midway_does_not_load(model, tmp_path, monkeypatch):
    from brenier import CorruptRunError
    from brenier.ot import SemiDiscreteOT

    run = tmp_path / "run"
    model.save(run)                       # a complete earlier run in the same folder

    def die(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(SemiDiscreteOT, "save", die)
    with pytest.raises(OSError, match="disk full"):
        model.save(run)                   # new autoencoder weights written, then the save dies
    with pytest.raises(CorruptRunError, match="manifest.json: missing"):
        AEOT.load(run, device="cpu")


def test_saving_over_another_run_leaves_no_valid_mixture(model, data, tmp_path, monkeypatch):
    """A second model saved over the first and killed after its weights: the folder refuses to load
    (not the first model's normalisation with the second's networks)."""
    import brenier.pipeline as pl
    from brenier import CorruptRunError

    run = tmp_path / "run"
    other = AEOT(**{**SMALL, "seed": 1, "epochs": 2}).fit(data[0][:60])
    model.save(run)
    monkeypatch.setattr(pl, "write_json", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        other.save(run)
    with pytest.raises(CorruptRunError):
        AEOT.load(run, device="cpu")


def _edit_json(run, fn):
    import json

    p = run / "aeot.json"
    meta = json.loads(p.read_text())
    p.write_text(json.dumps(fn(meta)))


@pytest.mark.parametrize("tamper,needle", [
    (lambda m: [m], "expected a JSON object, got a list"),
    (lambda m: {k: v for k, v in m.items() if k != "center"}, "missing key 'center'"),
    (lambda m: {**m, "format": "brenier.AEOT/99"}, "format"),
    (lambda m: {**m, "params": {**m["params"], "latent_dim": 5}}, "latent_dim"),
    (lambda m: {**m, "center": [float("nan")] * 4}, "'center' contains NaN"),
    (lambda m: {**m, "scale": -1.0}, "'scale'"),
    (lambda m: {**m, "image_shape": [1, 9, 9]}, "image_shape"),
    (lambda m: {**m, "params": {**m["params"], "rogue": 1}}, "params"),
    (lambda m: {**m, "autoencoder": {**m["autoencoder"], "hidden": [10**6, 10**6]}}, "bytes of weights"),
    (lambda m: {**m, "code_index": m["code_index"][:5]}, "code_index"),
    (lambda m: {**m, "val_index": ["a"]}, "val_index"),
])
def test_tampered_aeot_json_is_refused(model, tmp_path, tamper, needle):
    from brenier import CorruptRunError

    run = model.save(tmp_path / "run")
    _edit_json(run, tamper)
    with pytest.raises(CorruptRunError, match="aeot.json: checksum mismatch"):
        AEOT.load(run, device="cpu")     # the manifest catches any edit ...
    _resign(run)
    with pytest.raises(CorruptRunError, match=needle) as exc:
        AEOT.load(run, device="cpu")     # ... and field validation a consistent one
    assert "aeot.json" in str(exc.value)


@pytest.mark.parametrize("damage,needle", [
    ("truncate", "not a readable safetensors file|bytes of weights"),
    ("shape", "has shape"),
    ("dtype", "float64"),
    ("nan", "NaN"),
    ("missing_tensor", "do not match the network"),
])
def test_damaged_weights_are_refused(model, tmp_path, damage, needle):
    from safetensors.torch import load_file, save_file

    from brenier import CorruptRunError

    run = model.save(tmp_path / "run")
    w = run / "autoencoder.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    else:
        t = load_file(str(w))
        k = sorted(t)[0]
        if damage == "shape":
            t[k] = t[k][:1].clone()
        elif damage == "dtype":
            t[k] = t[k].double()
        elif damage == "nan":
            t[k] = torch.full_like(t[k], float("nan"))
        else:
            del t[k]
        save_file(t, str(w))
    _resign(run)
    with pytest.raises(CorruptRunError, match=needle) as exc:
        AEOT.load(run, device="cpu")
    assert "autoencoder.safetensors" in str(exc.value)


def test_missing_weight_file_and_not_a_run(model, tmp_path):
    from brenier import CorruptRunError

    run = model.save(tmp_path / "run")
    (run / "ot" / "ot.safetensors").unlink()
    with pytest.raises(CorruptRunError, match=r"ot.safetensors: missing"):
        AEOT.load(run, device="cpu")
    with pytest.raises(FileNotFoundError, match="saved AEOT"):
        AEOT.load(tmp_path / "run" / "ot", device="cpu")
    with pytest.raises(TypeError, match="path"):
        AEOT.load(3)


def test_sample_arguments_validated(model):
    for seed in (1.7, "3", True, None.__class__):
        with pytest.raises(TypeError, match="seed"):
            model.sample(4, seed=seed)
    for seed in (-1, 2**70):
        with pytest.raises(ValueError, match="seed"):
            model.sample(4, seed=seed)
    with pytest.raises(ValueError, match="n"):
        model.sample(2.5)
    with pytest.raises(TypeError, match="return_codes"):
        model.sample(4, return_codes="yes")
    assert model.sample(2, seed=np.int64(3)).shape == (2, 1, 8, 8)
    for kw, needle in ((dict(lr=True), "lr"), (dict(ot_tol=float("nan")), "ot_tol"), (dict(ae_options=[1]), "ae_options"),
                       (dict(max_train_time=0), "max_train_time"), (dict(device="tpu"), "device")):
        with pytest.raises(ValueError, match=needle):
            AEOT(**kw).fit(np.zeros((8, 1, 8, 8), np.float32))


def test_decoded_samples_are_finite_or_refused(model, tmp_path):
    """A model whose decoder yields NaN never returns NaN images."""
    m = AEOT.load(model.save(tmp_path / "run"), device="cpu")
    with torch.no_grad():
        next(m.autoencoder_.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        m.sample(4, seed=0)


@pytest.mark.parametrize("tamper,needle", [
    (lambda m: {**m, "train_history": [{"epoch": "one"}]}, "train_history"),
    (lambda m: {**m, "train_info": {**m["train_info"], "kind": None}}, "train_info.kind"),
    (lambda m: {**m, "timings": {"ot_s": "slow"}}, "timings"),
])
def test_tampered_history_and_info_are_refused(model, tmp_path, tamper, needle):
    """The report plots the history and prints the info: wrong types there are refused at load, not in matplotlib."""
    from brenier import CorruptRunError

    run = model.save(tmp_path / "run")
    _edit_json(run, tamper)
    _resign(run)
    with pytest.raises(CorruptRunError, match=needle):
        AEOT.load(run, device="cpu")
