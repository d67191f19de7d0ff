"""Autoencoders: architecture choice, shapes, seeding, training with early stopping, checkpoints and resume."""

from __future__ import annotations

import pytest
import torch

from brenier.nets import ConvAutoencoder, MLPAutoencoder, build_autoencoder, train_autoencoder
from brenier.nets.autoencoder import autoencoder_from_config, split_indices

torch.set_num_threads(1)  # tiny networks: extra threads only contend on a busy machine


def _blobs(n=64, shape=(1, 8, 8), seed=0):
    """Images that an autoencoder can learn: two bright squares at random places."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    X = torch.zeros(n, c, h, w)
    pos = torch.randint(0, h - 3, (n, 2), generator=g)
    for k in range(n):
        X[k, :, pos[k, 0]:pos[k, 0] + 3, pos[k, 1]:pos[k, 1] + 3] = 1.0
    return X


@pytest.mark.parametrize("shape,kind", [((1, 8, 8), "mlp"), ((1, 28, 28), "conv"), ((3, 32, 32), "conv"), ((1, 30, 30), "mlp")])
def test_auto_kind_and_shapes(shape, kind):
    ae = build_autoencoder("auto", shape, 5, seed=0)
    assert ae.kind == kind
    x = torch.rand(3, *shape)
    with torch.no_grad():
        z = ae.encode(x)
        y = ae.decode(z)
    assert z.shape == (3, 5)
    assert y.shape == (3, *shape) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_seeded_weights_and_rebuild_from_config():
    a = build_autoencoder("mlp", (1, 8, 8), 4, seed=3)
    b = build_autoencoder("mlp", (1, 8, 8), 4, seed=3)
    c = build_autoencoder("mlp", (1, 8, 8), 4, seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    r = autoencoder_from_config(build_autoencoder("conv", (1, 16, 16), 3, seed=0, channels=(4, 8), hidden=16).config())
    assert isinstance(r, ConvAutoencoder) and r.channels == (4, 8) and r.hidden == 16


@pytest.mark.parametrize("kwargs,needle", [
    (dict(kind="rbm", shape=(1, 8, 8), latent_dim=2), "autoencoder"),
    (dict(kind="mlp", shape=(1, 8, 8), latent_dim=0), "latent_dim"),
    (dict(kind="conv", shape=(1, 10, 10), latent_dim=2), "multiples of 4"),
])
def test_build_bad(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        build_autoencoder(kwargs["kind"], kwargs["shape"], kwargs["latent_dim"])


def test_split_is_seeded_partition():
    tr, va = split_indices(50, 0.2, seed=1)
    assert len(va) == 10 and len(tr) == 40
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(50))
    assert torch.equal(va, split_indices(50, 0.2, seed=1)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(50, 1.5, seed=0)


def test_training_reduces_loss_and_keeps_best():
    X = _blobs()
    ae = build_autoencoder("mlp", (1, 8, 8), 4, seed=0, hidden=(32,))
    res = train_autoencoder(ae, X, epochs=15, batch_size=16, lr=1e-2, seed=0)
    h = res.history
    assert len(h) == 15 and h[-1]["train_loss"] < 0.6 * h[0]["train_loss"]
    assert res.best_val_loss == min(r["val_loss"] for r in h)
    assert not ae.training  # left in eval mode


def test_early_stopping():
    X = _blobs()
    ae = build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,))
    # a learning rate this large makes the held-out loss stop improving quickly
    res = train_autoencoder(ae, X, epochs=200, batch_size=64, lr=0.5, patience=3, seed=0)
    assert res.stopped_early and len(res.history) < 200
    assert len(res.history) == res.best_epoch + 3


def test_checkpoint_resume_reproduces_uninterrupted_run(tmp_path):
    X = _blobs(48)
    kw = dict(epochs=6, batch_size=16, lr=3e-3, seed=2)
    full = build_autoencoder("mlp", (1, 8, 8), 3, seed=0, hidden=(16,))
    ref = train_autoencoder(full, X, **kw)

    ckpt = tmp_path / "ae.ckpt"

    def stop_after_3(rec):
        if rec["epoch"] == 3:
            raise KeyboardInterrupt

    part = build_autoencoder("mlp", (1, 8, 8), 3, seed=0, hidden=(16,))
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(part, X, checkpoint=ckpt, callback=stop_after_3, **kw)
    assert ckpt.exists() and not list(tmp_path.glob("*.tmp"))
    resumed = build_autoencoder("mlp", (1, 8, 8), 3, seed=0, hidden=(16,))
    res = train_autoencoder(resumed, X, checkpoint=ckpt, **kw)
    assert res.resumed_from == 3 and len(res.history) == 6
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert res.best_val_loss == pytest.approx(ref.best_val_loss, rel=1e-6)
    # a checkpoint from other settings is refused
    with pytest.raises(ValueError, match="checkpoint"):
        train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 3, seed=0, hidden=(16,)), X, checkpoint=ckpt, **{**kw, "lr": 1e-2})


@pytest.mark.parametrize("kw,needle", [(dict(epochs=0), "epochs"), (dict(lr=-1.0), "lr"), (dict(batch_size=1.5), "batch_size")])
def test_train_bad(kw, needle):
    with pytest.raises(ValueError, match=needle):
        train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 2), _blobs(8), **kw)


def test_mlp_conv_classes():
    assert isinstance(build_autoencoder("mlp", (1, 16, 16), 2), MLPAutoencoder)
    assert isinstance(build_autoencoder("conv", (1, 16, 16), 2), ConvAutoencoder)


def test_finished_run_is_not_trained_further(tmp_path):
    """A run that ended (here by the epoch cap) and is rerun with its checkpoint loads the best weights, no more epochs."""
    X = _blobs(32)
    kw = dict(epochs=3, batch_size=16, lr=3e-3, seed=0, checkpoint=tmp_path / "ae.ckpt")
    a = build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,))
    r1 = train_autoencoder(a, X, **kw)
    b = build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,))
    r2 = train_autoencoder(b, X, **kw)
    assert r2.resumed_from == 3 and len(r2.history) == len(r1.history) == 3
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(p, q)


class _Plant:
    """A pickle whose unpickling would create a marker file (what a malicious checkpoint.pt does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_checkpoint_is_refused_not_unpickled(tmp_path):
    import pickle

    from brenier import CorruptRunError

    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "autoencoder.ckpt"
    ckpt.write_bytes(pickle.dumps({"fingerprint": _Plant(marker)}))
    torch.save({"model": _Plant(marker)}, tmp_path / "other.ckpt")  # torch.save's zip pickle too
    for path in (ckpt, tmp_path / "other.ckpt"):
        with pytest.raises(CorruptRunError, match=r"checkpoint: .*ckpt: .*never unpickled"):
            train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,)), _blobs(16), epochs=2,
                              checkpoint=path)
    assert not marker.exists()


def _resigned(meta):
    """The checkpoint's JSON with its own checksum recomputed: a consistent tamper that only field checks catch."""
    from brenier.nets.checkpoint import _meta_digest

    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return {**body, "meta_sha256": _meta_digest(body)}


@pytest.mark.parametrize("damage", ["empty", "truncated_json", "list_json", "tensor_truncated", "tensor_missing",
                                    "wrong_shape", "nan_weights", "bad_tensor_name", "edited_history"])
def test_damaged_checkpoint_is_refused_naming_the_file(tmp_path, damage):
    import json

    from safetensors.torch import load_file, save_file

    from brenier import CorruptRunError

    X = _blobs(16)
    kw = dict(epochs=3, batch_size=8, lr=3e-3, seed=0)
    ckpt = tmp_path / "ae.ckpt"

    def stop_after_1(rec):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,)), X, checkpoint=ckpt,
                          callback=stop_after_1, **kw)
    meta = json.loads(ckpt.read_text())
    tfile = tmp_path / meta["tensors"]
    if damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "truncated_json":
        ckpt.write_bytes(ckpt.read_bytes()[:40])
    elif damage == "list_json":
        ckpt.write_text("[1, 2]")
    elif damage == "tensor_truncated":
        tfile.write_bytes(tfile.read_bytes()[:100])
    elif damage == "tensor_missing":
        tfile.unlink()
    elif damage in ("wrong_shape", "nan_weights"):
        t = load_file(str(tfile))
        k = next(k for k in t if k.startswith("model.") and k.endswith("weight"))
        t[k] = torch.zeros(3, 3) if damage == "wrong_shape" else torch.full_like(t[k], float("nan"))
        save_file(t, str(tfile))
        meta["sha256"] = __import__("hashlib").sha256(tfile.read_bytes()).hexdigest()  # a consistent tamper
        ckpt.write_text(json.dumps(_resigned(meta)))
    elif damage == "bad_tensor_name":
        meta["tensors"] = "../../etc/passwd"
        ckpt.write_text(json.dumps(_resigned(meta)))
    elif damage == "edited_history":
        meta["history"][0]["val_loss"] = 0.5  # a plausible number, but not the one saved
        ckpt.write_text(json.dumps(meta))
    with pytest.raises(CorruptRunError, match="checkpoint: " + str(tmp_path)):
        train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,)), X, checkpoint=ckpt, **kw)


def test_resume_keeps_counters_and_survives_a_kill_between_the_two_files(tmp_path, monkeypatch):
    """Resume continues at the last completed epoch with its history, best epoch and patience counter;
    a crash after the tensor file but before the JSON resumes from the previous epoch."""
    import brenier.nets.checkpoint as ck

    X = _blobs(32)
    kw = dict(epochs=5, batch_size=8, lr=3e-3, seed=1, patience=50)
    ref = train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,)), X, **kw)
    ckpt = tmp_path / "ae.ckpt"
    real_write_json, calls = ck.write_json, {"n": 0}

    def dying_write_json(path, obj):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 3: its tensor file is on disk, its JSON never written
            raise KeyboardInterrupt
        return real_write_json(path, obj)

    monkeypatch.setattr(ck, "write_json", dying_write_json)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,)), X, checkpoint=ckpt, **kw)
    monkeypatch.setattr(ck, "write_json", real_write_json)
    resumed = build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,))
    res = train_autoencoder(resumed, X, checkpoint=ckpt, **kw)
    assert res.resumed_from == 2 and [r["epoch"] for r in res.history] == [1, 2, 3, 4, 5]
    assert res.best_epoch == ref.best_epoch and res.best_val_loss == pytest.approx(ref.best_val_loss, rel=1e-6)
    assert [r["val_loss"] for r in res.history] == pytest.approx([r["val_loss"] for r in ref.history], rel=1e-6)
    # one tensor file left: the superseded ones (and the orphan of the crash) are removed
    assert [p.name for p in tmp_path.glob("ae.ckpt.e*.safetensors")] == ["ae.ckpt.e5.safetensors"]


_KILL_SCRIPT = r"""
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_nets import _blobs
from brenier.nets import build_autoencoder, train_autoencoder
ae = build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,))
train_autoencoder(ae, _blobs(32), epochs=400, batch_size=8, lr=1e-3, patience=400, seed=0, checkpoint={ckpt!r},
                  callback=lambda rec: print(rec["epoch"], flush=True))
"""


def test_sigkill_then_resume_within_one_epoch(tmp_path):
    """SIGKILL the training process mid-run (no cleanup, possibly mid-write): the rerun resumes from
    the last completed epoch or the one before, and ends with the uninterrupted run's weights."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    ckpt = tmp_path / "ae.ckpt"
    code = _KILL_SCRIPT.format(tests=str(Path(__file__).parent), ckpt=str(ckpt))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    seen = 0
    for line in proc.stdout:
        seen = int(line)
        if seen >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and seen >= 5
    kw = dict(epochs=400, batch_size=8, lr=1e-3, patience=400, seed=0)  # the killed run's settings (fingerprint)
    stop = {"n": 0}

    def stop_soon(rec):
        stop["n"] += 1
        if rec["epoch"] >= seen + 2:
            raise KeyboardInterrupt

    resumed = build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,))
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(resumed, _blobs(32), checkpoint=ckpt, callback=stop_soon, **kw)
    resumed_from = seen + 2 - stop["n"]  # epochs the checkpoint held
    # epoch `seen` was checkpointed before it was printed; the kill may have landed after the next one's
    assert resumed_from in (seen, seen + 1), (seen, resumed_from)
    ref = build_autoencoder("mlp", (1, 8, 8), 2, seed=0, hidden=(8,))

    def stop_ref(rec):
        if rec["epoch"] >= seen + 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(ref, _blobs(32), callback=stop_ref, **kw)
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
