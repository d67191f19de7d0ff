"""critical_frames on the occlusion process, with a PCA chart standing in for the autoencoder (fast)."""

import numpy as np
import pytest

from brenier.critical import (critical_codes, critical_frames, critical_scores, has_gap, latent_modes, local_scale,
                              match_events, step_size_frames)
from brenier.datasets.scenes import occlusion_scenes


class PCAChart:
    """The smallest model critical_frames accepts: encode, normalise, codes_ (and no singular set)."""

    def __init__(self, X, d=8):
        from threadpoolctl import threadpool_limits

        flat = X.reshape(len(X), -1).astype(np.float64)
        self.mean = flat.mean(0)
        with threadpool_limits(1):  # a multi-threaded LAPACK on a busy 2-core box is 20x slower
            _, _, vt = np.linalg.svd(flat - self.mean, full_matrices=False)
        self.basis = vt[:d].T
        self.latent_dim = d
        self.image_shape_ = X.shape[1:]
        z = self.encode(X)
        self.center_, self.scale_ = z.mean(0), float(np.linalg.norm(z - z.mean(0), axis=1).max())
        self.codes_ = self.normalise(z)
        self.singular_set_ = None

    def encode(self, X):
        return (np.asarray(X).reshape(len(X), -1) - self.mean) @ self.basis

    def normalise(self, z):
        return (np.asarray(z) - self.center_) / self.scale_


@pytest.fixture(scope="module")
def fitted():
    tr = occlusion_scenes(60, 32, seed=1)
    te = occlusion_scenes(10, 32, seed=2)
    return PCAChart(tr.stable_frames()), tr, te


def test_modes_separate_visible_counts(fitted):
    model, tr, _ = fitted
    modes = latent_modes(model.codes_)
    count = tr.count[~tr.critical]
    purity = sum(np.bincount(count[modes == m]).max() for m in np.unique(modes)) / len(modes)
    assert purity > 0.97  # a mode holds frames of one visible count: the gaps are the critical states


def test_precision_recall_on_heldout_trajectories(fitted):
    model, _, te = fitted
    tot = {"tp": 0, "n_detected": 0, "events_hit": 0, "n_events": 0}
    alt = dict(tot)
    for frames, crit in zip(te.frames, te.critical):
        res = critical_frames(model, frames)
        assert res.score.shape == (32,) and res.mode.shape == (32,) and res.codes.shape == (32, 8)
        for k, v in match_events(res.indices, crit, tol=2).items():
            if k in tot:
                tot[k] += v
        for k, v in match_events(step_size_frames(res.codes, 1.5)[0], crit, tol=2).items():
            if k in alt:
                alt[k] += v
    precision, recall = tot["tp"] / tot["n_detected"], tot["events_hit"] / tot["n_events"]
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)
    # the simple alternative (a jump in the latent step) does worse on both counts here
    alt_p = alt["tp"] / max(alt["n_detected"], 1)
    alt_r = alt["events_hit"] / alt["n_events"]
    assert alt_p + alt_r < precision + recall


def test_scores_are_higher_on_critical_frames(fitted):
    model, _, te = fitted
    scores = np.stack([critical_frames(model, f).score for f in te.frames])
    assert np.median(scores[te.critical]) > 1.5 * np.median(scores[~te.critical])


def test_default_is_the_local_score_and_the_global_one_is_kept(fitted):
    model, _, te = fitted
    loc = critical_frames(model, te.frames[0])
    glo = critical_frames(model, te.frames[0], scale="global")
    assert loc.threshold == 1.0 and glo.threshold == 3.0 and loc.modes_from == glo.modes_from == "graph"
    # the global score: distance to the nearest code / median leave-one-out neighbour distance
    y, c = glo.codes, np.asarray(model.codes_)
    d = np.linalg.norm(c[:, None] - c[None], axis=2)
    np.fill_diagonal(d, np.inf)
    r = np.median(d.min(axis=1))
    assert np.allclose(glo.score, np.linalg.norm(y[:, None] - c[None], axis=2).min(axis=1) / r)
    assert not np.allclose(loc.score, glo.score)


class Codes:
    """A model reduced to its training codes (normalisation = identity)."""

    def __init__(self, codes):
        self.codes_ = np.asarray(codes, dtype=np.float64)
        self.latent_dim = self.codes_.shape[1]
        self.singular_set_ = None

    def encode(self, x):
        return x

    def normalise(self, z):
        return np.asarray(z, dtype=np.float64)


def test_local_scale_known_answer():
    x = np.c_[np.arange(20.0), np.zeros(20)]
    u, rho = local_scale(np.r_[x, x[:5]], k=2)   # 5 duplicates: counted once
    assert len(u) == 20
    inner = (u[:, 0] >= 1) & (u[:, 0] <= 18)
    assert np.allclose(rho[inner], 1.0) and np.allclose(rho[~inner], 2.0)
    with pytest.raises(ValueError, match="k"):
        local_scale(x, k=0)
    with pytest.raises(ValueError, match="distinct"):
        local_scale(np.zeros((4, 2)))


def test_local_score_adapts_to_the_sampling_density():
    dense = np.c_[np.linspace(0, 1, 101), np.zeros(101)]          # spacing 0.01
    sparse = np.c_[np.arange(10.0, 51.0), np.zeros(41)]           # spacing 1
    model = Codes(np.r_[dense, sparse])
    q = np.array([[20.5, 0.3], [0.5, 0.2]])                       # near the sparse piece / off the dense one
    glo = critical_scores(model, q, scale="global")
    loc = critical_scores(model, q, scale="local", k=8)
    assert glo[0] > 50 and glo[1] == pytest.approx(20.0)          # globally both are far
    assert loc[0] < 0.2 and loc[1] > 2                            # locally only the second one is
    with pytest.raises(ValueError, match="scale"):
        critical_scores(model, q, scale="median")


def test_auto_modes_need_a_gap():
    rng = np.random.default_rng(0)
    blob = rng.normal(size=(300, 3))
    one = Codes(blob / np.linalg.norm(blob, axis=1).max())
    assert not has_gap(one)
    path = np.linspace(one.codes_[0], one.codes_[1], 6)
    res = critical_codes(one, path)
    assert res.modes_from == "none" and len(res.crossings) == 0 and (res.mode == 0).all()
    two = Codes(np.r_[blob, blob + 30.0] / 40.0)
    assert has_gap(two)
    res = critical_codes(two, np.linspace(two.codes_[0], two.codes_[300], 12))
    assert res.modes_from == "graph" and len(res.crossings) == 1
    assert critical_codes(two, path, modes="none").modes_from == "none"


def test_match_events_known_answer():
    crit = np.zeros(20, bool)
    crit[[3, 4, 5, 12, 13]] = True                # two events
    m = match_events([1, 6, 9], crit, tol=2)      # 1 and 6 near event 1; 9 is 3 frames from 12
    assert (m["tp"], m["n_detected"], m["events_hit"], m["n_events"]) == (2, 3, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 0.5
    assert match_events([], np.zeros(5, bool))["recall"] == 1.0


def test_step_size_frames():
    path = np.cumsum(np.ones((10, 2)), axis=0)
    path[6:] += 5.0                                # one jump between frames 5 and 6
    idx, s = step_size_frames(path, 2.0)
    assert idx.tolist() == [6] and s[6] == pytest.approx(np.hypot(6, 6) / np.sqrt(2))


def test_bad_input(fitted):
    model, _, te = fitted
    frames = list(te.frames[0])
    frames[3] = np.zeros((1, 16, 16), np.float32)
    with pytest.raises(ValueError, match="frames: all frames must have the same size"):
        critical_frames(model, frames)
    with pytest.raises(ValueError, match="at least 2 frames"):
        critical_frames(model, te.frames[0][:1])
    with pytest.raises(ValueError, match="latent dimension mismatch"):
        critical_codes(model, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="fitted on images of shape"):
        critical_frames(model, np.zeros((4, 1, 16, 16), np.float32))
    with pytest.raises(TypeError, match="model"):
        critical_frames(object(), te.frames[0])
    with pytest.raises(ValueError, match="threshold"):
        critical_frames(model, te.frames[0], threshold=-1)
    with pytest.raises(ValueError, match="scale"):
        critical_frames(model, te.frames[0], scale="lof")
    with pytest.raises(ValueError, match="k: expected"):
        critical_frames(model, te.frames[0], k=0)


@pytest.fixture(scope="module")
def tiny_aeot(tmp_path_factory):
    """A real (if poor) AEOT fitted in seconds on 60 digits: enough to check the wiring and the errors."""
    from brenier.datasets import load
    from brenier.pipeline import AEOT

    X, _ = load("digits", limit=60)
    model = AEOT(2, device="cpu", seed=0, epochs=2, patience=1).fit(X)
    path = tmp_path_factory.mktemp("run") / "digits_model"
    model.save(path)
    return model, X, path


def test_critical_frames_on_an_aeot(tiny_aeot):
    model, X, _ = tiny_aeot
    res = critical_frames(model, X[:10])
    assert res.score.shape == (10,) and res.codes.shape == (10, 2) and res.modes_from in ("singular", "graph", "none")
    # training frames are their own nearest codes: distance 0 (up to float32 batch effects)
    assert np.allclose(res.score[np.isin(np.arange(10), model.code_index_)], 0.0, atol=1e-3)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        critical_frames(model, np.zeros((5, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="latent dimension mismatch"):
        critical_codes(model, np.zeros((5, 8)))


def test_cli_critical_refuses_a_run_of_other_data(tiny_aeot, tmp_path):
    from typer.testing import CliRunner

    from brenier.cli import app

    _, _, path = tiny_aeot
    r = CliRunner().invoke(app, ["critical", "--data", "occlusion", "--out", str(tmp_path / "out"), "--model", str(path),
                                 "--train", "2"])
    assert r.exit_code == 2 and "other data" in r.output


def test_auto_modes_follow_a_trusted_singular_set(fitted):
    from brenier.critical import mode_of

    model, _, te = fitted

    class FakeS:
        def __init__(self, trusted):
            self.trusted, self.n_modes = trusted, 2

        def mode_of(self, y):
            return np.zeros(len(y), dtype=np.int64)

    y = model.normalise(model.encode(te.frames[0]))
    try:
        model.singular_set_ = FakeS(True)
        assert mode_of(model, y)[1] == "singular"
        model.singular_set_ = FakeS(False)        # untrusted (e.g. a split that depends on the sampling)
        assert mode_of(model, y)[1] == "graph"
    finally:
        model.singular_set_ = None


def test_gap_pieces_separate_visible_counts(fitted):
    from brenier.singular import gap_pieces

    model, tr, _ = fitted
    pieces, _ = gap_pieces(np.asarray(model.codes_, dtype=np.float64))
    count = tr.count[~tr.critical]
    purity = sum(np.bincount(count[pieces == m]).max() for m in np.unique(pieces)) / len(pieces)
    assert 2 <= len(np.unique(pieces)) <= 10 and purity >= 0.95
