"""The Monte Carlo fit on torch.distributed: one global sample stream however it is split.

In-process tests check the chunked stream and the top-k merge; the others launch 2 ranks with
``torchrun --standalone`` (CPU, gloo) running tests/_dist_worker.py, and compare with the fit of
the same global stream in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dist_problem import problem, query_points, tie_problem  # noqa: E402

from brenier.ot import SemiDiscreteOT  # noqa: E402
from brenier.ot import distributed as D  # noqa: E402
from brenier.ot import montecarlo as mc  # noqa: E402
from brenier.ot.potential import BrenierPotential  # noqa: E402
from brenier.sources import CHUNK_SIZE, Gaussian, Polygon, UniformBall, UniformBox, n_chunks  # noqa: E402

HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
WORKER = HERE / "_dist_worker.py"
needs_gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()
                                     and TORCHRUN.exists()), reason="needs torch.distributed with gloo and torchrun")


# ------------------------------------------------------------------ the chunked stream (in process)
@pytest.mark.parametrize("source", [UniformBall(4), UniformBox(3), Gaussian(2), Polygon([[0, 0], [2, 0], [0, 1]])],
                         ids=["ball", "box", "gaussian", "polygon"])
@pytest.mark.parametrize("quasi", [True, False])
def test_chunks_depend_only_on_seed_and_index(source, quasi):
    n = 2 * CHUNK_SIZE + 100
    whole = dict(source.chunks(n, seed=7, quasi=quasi))
    assert sorted(whole) == [0, 1, 2] and whole[2].shape == (100, source.dim)
    # any subset, in any share of ranks, gives the same points per chunk
    for rank in range(2):
        for k, x in source.chunks(n, seed=7, quasi=quasi, indices=range(rank, 3, 2)):
            assert torch.equal(x, whole[k])
    # a longer sample starts with the same chunks (only the last one was cut short)
    longer = dict(source.chunks(3 * CHUNK_SIZE, seed=7, quasi=quasi))
    assert torch.equal(longer[1], whole[1]) and torch.equal(longer[2][:100], whole[2])
    assert not torch.equal(dict(source.chunks(n, seed=8, quasi=quasi))[0], whole[0])


def test_sobol_chunks_are_one_scrambled_sequence():
    src = UniformBox(3, 0.0, 1.0)
    seq = torch.quasirandom.SobolEngine(3, scramble=True, seed=4).draw(3 * CHUNK_SIZE)
    got = torch.cat([x for _, x in src.chunks(3 * CHUNK_SIZE, seed=4, quasi=True)])
    assert torch.equal(got, seq)


def test_chunks_reject_bad_arguments():
    src = UniformBall(2)
    with pytest.raises(ValueError, match="indices"):
        list(src.chunks(10, seed=0, indices=[1]))
    with pytest.raises(ValueError, match="seed"):
        list(src.chunks(10, seed=-1))
    with pytest.raises(ValueError, match="n:"):
        list(src.chunks(-3, seed=0))
    assert n_chunks(0) == 0 and n_chunks(CHUNK_SIZE) == 1 and n_chunks(CHUNK_SIZE + 1) == 2


def test_batch_stats_do_not_depend_on_the_memory_budget():
    y, _ = problem(n=300)
    h = 0.1 * torch.randn(300, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = []
    # 873 rows, 7767 rows, a whole chunk per score block. (Not below 4 rows: the CPU BLAS takes
    # another kernel for 1-3 rows, whose float32 scores differ in the last bit.)
    for budget in (1 << 20, 1 << 23, 1 << 28):
        pot = BrenierPotential(y, h, memory_budget=budget)
        out.append(mc.batch_stats(pot, UniformBall(4), 40_000, seed=3, pairs=True))
    for st in out[1:]:
        assert torch.equal(st.counts, out[0].counts) and torch.equal(st.pairs, out[0].pairs)
        assert st.eps == out[0].eps
        torch.testing.assert_close(st.pair_weights, out[0].pair_weights, rtol=1e-13, atol=0)


def test_hessian_sample_cap_keeps_the_counts_and_scales_the_pairs():
    """The Hessian comes from the first chunks only: the counts (the gradient) are those of the whole
    batch, the pair weights an estimate of the same integral from fewer samples."""
    y, _ = problem(n=300)
    pot = BrenierPotential(y, torch.zeros(300, dtype=torch.float64))
    full = mc.batch_stats(pot, UniformBall(4), 131_072, seed=3, pairs=True, hessian_samples=1 << 40)
    e0 = pot.evaluations
    capped = mc.batch_stats(pot, UniformBall(4), 131_072, seed=3, pairs=True, hessian_samples=1 << 15)
    assert pot.evaluations - e0 == 131_072 * 300  # every sample still scored once
    assert torch.equal(capped.counts, full.counts) and capped.eps == full.eps
    # the pairs of 2^15 of the 2^17 samples: the same facets, each weight estimated with more noise
    total_full, total_capped = float(full.pair_weights.sum()), float(capped.pair_weights.sum())
    assert abs(total_capped / total_full - 1) < 0.05 and len(capped.pairs) < len(full.pairs)
    assert mc.hessian_sample_size(300) == 1 << 20 and mc.hessian_sample_size(100_000) == 1_600_000


def test_fit_does_not_depend_on_the_memory_budget():
    """Issue 12, item 9: the same seed gives the same heights at any memory budget."""
    y, kw = problem(n=300)
    kw = {**kw, "solver_options": {"batch0": 40_000}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 iterations do not converge: ConvergenceWarning
        h = [SemiDiscreteOT(**{**kw, "memory_budget": b}, max_iter=3).fit(y, distributed=False).heights_
             for b in (1 << 20, 1 << 28)]
    assert float((h[0] - h[1]).abs().max() / h[1].abs().max()) <= 1e-12


# ------------------------------------------------------------------ top-k merge (in process)
def test_merge_topk_equals_unsharded_topk_with_ties():
    y, h, x = tie_problem()
    s = x.double() @ y.T + h  # integer scores: many exact ties
    assert int((s.topk(2).values.diff(dim=1) == 0).sum()) > 50
    ref_v, ref_i = D.canonical_topk(s, torch.arange(len(y)).expand_as(s), 5)
    assert torch.equal(ref_i[:, 0], s.argmax(dim=1))  # the tie rule is argmax's: lowest index
    for parts in (2, 3, 7):
        vals, idx = [], []
        for r in range(parts):
            lo, hi = D.shard_range(len(y), r, parts)
            # each shard's own top-5 under the tie rule, also where a tie straddles 5th place
            v, i = BrenierPotential(y[lo:hi], h[lo:hi], compute_dtype=torch.float64).topk(x.double(), 5)
            i = i + lo
            vals.append(v)
            idx.append(i)
        mv, mi = D.merge_topk(vals, idx, 5)
        assert torch.equal(mv, ref_v) and torch.equal(mi, ref_i)


def test_shard_range_covers_every_target_once():
    for n, p in [(10, 3), (7, 7), (500, 2), (5, 1)]:
        ranges = [D.shard_range(n, r, p) for r in range(p)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(hi - lo for lo, hi in ranges) - min(hi - lo for lo, hi in ranges) <= 1
    with pytest.raises(ValueError, match="rank"):
        D.shard_range(10, 3, 3)


def test_single_process_defaults():
    assert D.current().world_size == 1 and D.is_main_process()
    assert D.setup(False).world_size == 1
    if not torch.distributed.is_initialized() and not D.launched_by_torchrun():
        assert D.setup(None).world_size == 1 and D.setup(True).world_size == 1
    with pytest.raises(TypeError, match="distributed"):
        D.setup("yes")
    with pytest.raises(TypeError, match="shard_targets"):
        SemiDiscreteOT().fit(torch.randn(10, 3), shard_targets="no")


# ------------------------------------------------------------------ 2 ranks under torchrun
def _env(extra: dict | None = None) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(extra or {})}


def _torchrun(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "--monitor-interval=0.1", str(WORKER), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(env), cwd=HERE.parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ok(run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def _rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """1-process fits of the test problem: 2 and 4 iterations, and a checkpoint after 2."""
    tmp = tmp_path_factory.mktemp("ref")
    y, kw = problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h2 = SemiDiscreteOT(max_iter=2, **kw).fit(y, checkpoint=tmp / "ck1", distributed=False)
        h4 = SemiDiscreteOT(max_iter=4, **kw).fit(y, distributed=False)
    return {"y": y, "kw": kw, "h2": h2.heights_, "h4": h4.heights_, "m2": h2.cell_masses(n_samples=40_000),
            "a2": h2.assign(query_points(y.shape[1])), "ck1": tmp / "ck1"}


def _resume_here(reference, checkpoint: Path, max_iter: int) -> SemiDiscreteOT:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SemiDiscreteOT(max_iter=max_iter, **reference["kw"]).fit(reference["y"], checkpoint=checkpoint,
                                                                         distributed=False)


@needs_gloo
def test_two_ranks_sample_sharded_match_one_rank_and_resume_in_one(reference, tmp_path):
    ck = tmp_path / "ck2"
    _ok(_torchrun(str(tmp_path / "out.json"), "--max-iter", "2", "--checkpoint", str(ck)))
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["world"] == 2
    assert _rel(out["heights"], reference["h2"]) <= 1e-9
    # cell_masses split over the 2 ranks: the same estimate as in one process
    assert _rel(out["masses"], reference["m2"]) <= 1e-12
    # assign split over the 2 ranks (rows sliced, gathered): the cells of the 1-process model
    assert torch.equal(torch.as_tensor(out["cells"]), torch.as_tensor(reference["a2"]))
    # the checkpoint written by rank 0 of 2 resumes in 1 process, as if never interrupted
    ot = _resume_here(reference, ck, 4)
    assert ot.history_[2]["iteration"] == 2 and len(ot.history_) == 4
    assert _rel(ot.heights_, reference["h4"]) <= 1e-9


@needs_gloo
def test_two_ranks_target_sharded_resume_a_one_rank_checkpoint(reference, tmp_path):
    ck = tmp_path / "ck"
    shutil.copy(reference["ck1"], ck)  # written by 1 process after 2 iterations
    topk = tmp_path / "topk.safetensors"
    _ok(_torchrun(str(tmp_path / "out.json"), "--max-iter", "4", "--checkpoint", str(ck), "--shard", "--topk", str(topk)))
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["world"] == 2 and [r["iteration"] for r in out["history"]] == [0, 1, 2, 3]
    assert _rel(out["heights"], reference["h4"]) <= 1e-9
    # the top-k merged across the 2 ranks' target slices is the unsharded one, ties included
    got = load_file(str(topk))
    y, h, x = tie_problem()
    s = x.double() @ y.T + h
    v, i = D.canonical_topk(s, torch.arange(len(y)).expand_as(s), 5)
    assert torch.equal(got["i"], i) and torch.equal(got["v"].double(), v)
    assert torch.equal(got["ia"], s.argmax(dim=1))


def _start_two(*args: str, env: dict) -> list[subprocess.Popen]:
    """2 ranks started as torchrun would, without its agent (which would stop the survivors
    itself): what a rank on another node sees when its peer dies."""
    port = str(_free_port())
    procs = []
    for rank in range(2):
        e = _env({**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": port})
        procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], env=e, cwd=HERE.parent,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _finish(p: subprocess.Popen, procs: list[subprocess.Popen], timeout: float) -> subprocess.CompletedProcess:
    try:
        so, se = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for q in procs:
            q.kill()
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, so, se)


def _two_processes(*args: str, env: dict, timeout: float = 100) -> list[subprocess.CompletedProcess]:
    procs = _start_two(*args, env=env)
    return [_finish(p, procs, timeout) for p in procs]


@needs_gloo
def test_a_killed_rank_makes_the_other_fail_clearly_and_the_rerun_resumes(reference, tmp_path):
    ck = tmp_path / "ck"
    t0 = time.perf_counter()
    # rank 1 SIGKILLs itself when iteration 2 is evaluated; the collective timeout is the backstop
    r0, r1 = _two_processes(str(tmp_path / "out.json"), "--max-iter", "4", "--checkpoint", str(ck),
                            "--kill-at", "2", env={"BRENIER_DIST_TIMEOUT": "30"})
    assert time.perf_counter() - t0 < 60
    assert r1.returncode == -signal.SIGKILL
    assert r0.returncode != 0 and not (tmp_path / "out.json").exists()
    assert "DistributedError: rank 0 of 2" in r0.stderr and "another rank stopped" in r0.stderr, r0.stderr[-3000:]
    # the checkpoint holds the last finished step: the rerun loses at most the killed iteration
    ot = _resume_here(reference, ck, 4)
    assert len(ot.history_) == 4
    assert _rel(ot.heights_, reference["h4"]) <= 1e-9


@needs_gloo
@pytest.mark.slow
def test_a_killed_rank_under_torchrun_stops_the_job(reference, tmp_path):
    ck = tmp_path / "ck"
    run = _torchrun(str(tmp_path / "out.json"), "--max-iter", "4", "--checkpoint", str(ck), "--kill-at", "2")
    assert run.returncode != 0 and not (tmp_path / "out.json").exists()
    assert "Signal 9 (SIGKILL)" in run.stdout + run.stderr
    ot = _resume_here(reference, ck, 4)
    assert _rel(ot.heights_, reference["h4"]) <= 1e-9


@needs_gloo
@pytest.mark.slow
def test_a_hanging_rank_makes_the_other_fail_at_the_timeout(tmp_path):
    # rank 1 stops (SIGSTOP) when iteration 1 is evaluated: no socket closes, only the timeout helps
    procs = _start_two(str(tmp_path / "out.json"), "--max-iter", "4", "--stop-at", "1", env={"BRENIER_DIST_TIMEOUT": "5"})
    try:
        t0 = time.perf_counter()
        r0 = _finish(procs[0], procs, timeout=90)
        assert r0.returncode != 0 and "DistributedError: rank 0 of 2" in r0.stderr, r0.stderr[-3000:]
        assert "Timed out" in r0.stderr or "timeout" in r0.stderr.lower()
        assert time.perf_counter() - t0 < 60
    finally:
        procs[1].kill()
        procs[1].communicate()


def test_brenier_ot_under_torchrun_writes_one_run_from_rank_0(tmp_path):
    """`torchrun --nproc_per_node=2 -m brenier ot` as the README shows it: both ranks fit, rank 0
    alone prints and writes the run folder, which loads and matches its manifest."""
    np.save(tmp_path / "t.npy", np.random.default_rng(0).normal(size=(300, 4)))
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "--monitor-interval=0.1", "-m", "brenier", "ot",
           "t.npy", "--out", "run", "--tol", "0.05"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
    _ok(run)
    assert run.stdout.count("Semi-discrete OT") == 1  # one table, from rank 0
    model = SemiDiscreteOT.load(tmp_path / "run")  # verifies the manifest: one writer
    assert model.converged_
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["world_size"] == 2


def test_brenier_fit_under_torchrun_trains_everywhere_and_writes_once(tmp_path):
    """`torchrun --nproc_per_node=2 -m brenier fit`: every rank trains the same autoencoder and
    shares the OT fit; rank 0 alone prints and writes the run, which loads (one writer)."""
    from brenier.pipeline import AEOT

    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "--monitor-interval=0.1", "-m", "brenier", "fit",
           "--data", "digits", "--limit", "300", "--epochs", "3", "--latent-dim", "3", "--ot-tol", "0.2", "--out", "run"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_env(), cwd=tmp_path)
    _ok(run)
    assert run.stdout.count("AEOT fit") == 1
    model = AEOT.load(tmp_path / "run", device="cpu")
    assert model.codes_.shape == (300, 3) and not (tmp_path / "run" / "checkpoints").exists()
    bad = subprocess.run(cmd + ["--max-train-minutes", "1"], capture_output=True, text=True, timeout=180, env=_env(),
                         cwd=tmp_path)
    assert bad.returncode != 0 and "--max-train-minutes" in bad.stdout + bad.stderr
