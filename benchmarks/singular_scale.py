"""singular_set() at the scale of all 60,000 MNIST codes (issue 13, part 2): cost and agreement.

Two tables, one JSON (benchmarks/results/singular_scale.json):

1. **Agreement** of the approximate path test with the exact one, on the same fitted map and the
   same sampled adjacency: N = 10,000 subsets of the MNIST codes (``benchmarks/mnist_codes.py``,
   d = 16) and a mixture of 4 separated Gaussians in d = 16 (``singular_cost.targets``: real
   gaps). The map is a reasonably converged Monte Carlo fit (``--fit-minutes`` per set, cached
   under runs/singular_scale/). Reported: the share of facets with the same regular/singular
   label, the adjusted Rand index of the two mode partitions, both kappas and mode counts, and
   the same for the approximate detours before their refinement at kappa ("unrefined": local
   search to 2.5, landmark bounds beyond, auto kappa read off those).
   Bar: >= 99 % labels, ARI >= 0.99.
2. **Cost** of each stage at N = 10,000 / 30,000 / 60,000 MNIST codes (60,000 = all), with a
   quick fit (one Newton step: the cost, not the modes, is measured): the sampled adjacency,
   the hop graph (k-NN + gap test), the detours with auto kappa as ``singular_set`` runs them
   (approximate + refinement; exact up to ``--exact-max``), one more auto kappa, the modes; wall time and the peak of NumPy/SciPy memory (tracemalloc) of the
   graph stages.

    python benchmarks/singular_scale.py                     # both tables (~25 min on 2 loaded cores)
    python benchmarks/singular_scale.py --skip-cost         # agreement only
    python benchmarks/singular_scale.py --sizes 10000,60000 --exact-max 10000 --skip-agree
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from brenier import singular as sg  # noqa: E402
from brenier._io import write_json  # noqa: E402
from brenier.ot import SemiDiscreteOT  # noqa: E402
from brenier.sources import UniformBall  # noqa: E402

warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
CACHE = Path("runs/singular_scale")


def mnist(n: int, seed: int) -> np.ndarray:
    from mnist_codes import mnist_codes

    codes, _ = mnist_codes(16)
    if n >= len(codes):
        return codes
    return codes[np.sort(np.random.default_rng(seed).choice(len(codes), n, replace=False))]


def gaussians(n: int, seed: int) -> np.ndarray:
    from singular_cost import targets

    return targets(n, 16, seed)


def fitted(name: str, y: np.ndarray, minutes: float, seed: int) -> SemiDiscreteOT:
    """A Monte Carlo fit of the uniform ball onto y, cached under runs/singular_scale/<name>."""
    path = CACHE / name
    if (path / "ot.json").is_file():
        ot = SemiDiscreteOT.load(path, device="cpu")
        if ot.targets_.shape == y.shape and np.allclose(np.asarray(ot.targets_), y):
            return ot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # a fit stopped by max_time warns; its TV is recorded
        ot = SemiDiscreteOT(UniformBall(y.shape[1]), method="newton", tol=0.03, seed=seed, device="cpu",
                            solver_options={"max_time": 60.0 * minutes}).fit(y)
    ot.save(path)
    return ot


def agreement(name: str, ot: SemiDiscreteOT) -> dict:
    from sklearn.metrics import adjusted_rand_score

    t = time.perf_counter()
    Se = sg.singular_set(ot, method="exact")
    te = time.perf_counter() - t
    t = time.perf_counter()
    Sa = sg.singular_set(ot, method="approx")
    ta = time.perf_counter() - t
    if not np.array_equal(Se.adjacency, Sa.adjacency):
        raise RuntimeError("the two runs sampled different adjacencies (same seed expected)")
    y, adj = Se.targets, Se.adjacency
    # the approximate detours before singular_set refines them at its kappa
    d0 = sg.detour_ratios(y, adj, sg.KAPPA_MAX, graph=Se._graph, method="approx", seed=int(ot.seed))
    k0 = sg.auto_kappa(y, adj, d0)
    s0 = d0 > k0
    m0 = sg._attach_isolated(y, adj, sg._components(len(y), adj[~s0]))
    fin = np.isfinite(Se.detour)
    return {
        "set": name, "n": int(len(y)), "tv_error": float(ot.tv_error_), "n_adjacency": int(len(adj)),
        "exact_s": round(te, 2), "approx_s": round(ta, 2),
        "kappa_exact": round(Se.threshold, 4), "kappa_approx": round(Sa.threshold, 4),
        "modes_exact": Se.n_modes, "modes_approx": Sa.n_modes,
        "facets_exact": Se.n_facets, "facets_approx": Sa.n_facets,
        "label_agreement": float(np.mean(Se.singular == Sa.singular)),
        "ari": float(adjusted_rand_score(Se.modes, Sa.modes)),
        "detour_equal_share": float(np.mean(np.isclose(Sa.detour, Se.detour, rtol=1e-9, atol=0.0))),
        "detour_below_exact": int(np.sum(Sa.detour < Se.detour * (1 - 1e-9))),
        "exact_detour_gt_local_share": float(np.mean(~fin | (Se.detour > sg.KAPPA_LOCAL))),
        "unrefined": {"kappa": round(k0, 4), "modes": int(m0.max()) + 1,
                      "label_agreement": float(np.mean(Se.singular == s0)), "ari": float(adjusted_rand_score(Se.modes, m0))},
    }


def _timed(fn, *a, **kw):
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*a, **kw)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, round(dt, 2), round(peak / 2**20, 1)


def knn_torch(y: np.ndarray, k: int) -> np.ndarray:
    """(N, k) nearest neighbours by row blocks of all-pairs distances (torch ``cdist`` + ``topk``):
    the k-NN search ``knn_graph`` used before the KD-tree, kept here as the reference timing."""
    t = torch.from_numpy(y)
    n = len(y)
    out = []
    step = max(1, (64 * 2**20) // (8 * n))
    for s in range(0, n, step):
        d = torch.cdist(t[s:s + step], t)
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out.append(torch.topk(d, k, dim=1, largest=False).indices.numpy())
    return np.concatenate(out)


def knn_kdtree(y: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(y).query(y, k=k + 1)[1][:, 1:]


def cost(n: int, exact_max: int, seed: int, heights: str = "newton", knn: bool = True) -> dict:
    y = mnist(n, seed)
    k = sg.hop_k(y.shape[1])
    row = {"n": int(n), "heights": heights}
    if knn:
        _, row["knn_torch_blocked_s"], _ = _timed(knn_torch, y, k)
        _, row["knn_kdtree_s"], _ = _timed(knn_kdtree, y, k)
    t = time.perf_counter()
    source = UniformBall(16)
    if heights == "voronoi":
        # no fit: the contracted-Voronoi start heights of the solvers (every cell non-empty), for
        # a size where even one Newton step is too long here; the cost, not the modes, is measured
        from brenier.ot import BrenierPotential
        from brenier.ot.potential import voronoi_heights

        yt = torch.from_numpy(np.unique(y, axis=0))
        potential = BrenierPotential(yt, voronoi_heights(yt, torch.zeros(16), 1.0))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # at most one Newton step: the singular set needs a power diagram, not a converged one
            ot = SemiDiscreteOT(source, method="newton", max_iter=1, seed=seed, device="cpu",
                                solver_options={"max_time": 60.0}).fit(y)
        yt, potential = ot._unique_targets, ot._potential
    row["fit_s"] = round(time.perf_counter() - t, 2)
    yy = yt.numpy().astype(np.float64)
    n_samples = int(min(max(10 * n, 20_000), 100_000))   # singular_set's default
    t = time.perf_counter()
    adj = sg.sampled_adjacency(potential, source, n_samples, seed + 12_345)
    row["adjacency_s"] = round(time.perf_counter() - t, 2)
    row["n_adjacency"] = int(len(adj))
    g, row["hop_graph_s"], row["hop_graph_peak_mb"] = _timed(sg.hop_graph, yy)
    # singular_set's own path: approximate detours, auto kappa, refinement at kappa
    (det, kappa), row["detour_approx_s"], row["detour_approx_peak_mb"] = _timed(
        sg._detours_at, yy, adj, g, "auto", sg.DEFAULT_KAPPA, "approx", seed)
    _, row["auto_kappa_s"], row["auto_kappa_peak_mb"] = _timed(sg.auto_kappa, yy, adj, det)
    t = time.perf_counter()
    modes = sg._attach_isolated(yy, adj, sg._components(len(yy), adj[~(det > kappa)]))
    row["modes_s"] = round(time.perf_counter() - t, 2)
    row.update(kappa=round(kappa, 4), n_modes=int(modes.max()) + 1)
    if n <= exact_max:
        (de, ke), row["detour_exact_s"], row["detour_exact_peak_mb"] = _timed(
            sg._detours_at, yy, adj, g, "auto", sg.DEFAULT_KAPPA, "exact", seed)
        row["kappa_exact"] = round(ke, 4)
        row["label_agreement"] = float(np.mean((de > ke) == (det > kappa)))
    row["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def _save(out: Path, result: dict, key: str) -> None:
    """Write ``result`` with this run's ``key`` section, keeping the other section of the file (the
    two tables can run as two processes)."""
    import json

    old = json.loads(out.read_text()) if out.is_file() else {}
    write_json(out, {**old, **{k: v for k, v in result.items() if k not in ("agreement", "cost")},
                     "agreement": old.get("agreement", []), "cost": old.get("cost", []), key: result[key]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agree-n", type=int, default=10_000)
    ap.add_argument("--subsets", type=int, default=2, help="MNIST subsets in the agreement table")
    ap.add_argument("--fit-minutes", type=float, default=3.0)
    ap.add_argument("--sizes", default="10000,30000,60000")
    ap.add_argument("--exact-max", type=int, default=30_000, help="largest N at which the exact detours are timed")
    ap.add_argument("--heights", choices=("newton", "voronoi"), default="newton",
                    help="cost table: one Newton step, or the Voronoi start heights (no fit)")
    ap.add_argument("--no-knn", action="store_true", help="cost table: skip the two k-NN timings")
    ap.add_argument("--skip-agree", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "singular_scale.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"benchmark": "singular_scale", "seed": args.seed, "kappa_local": sg.KAPPA_LOCAL,
              "approx_above": sg.APPROX_ABOVE, "agreement": [], "cost": []}
    if not args.skip_agree:
        sets = [(f"mnist{args.agree_n}_s{s}", mnist(args.agree_n, args.seed + s)) for s in range(args.subsets)]
        sets.append((f"gauss4_{args.agree_n}", gaussians(args.agree_n, args.seed)))
        print(f"{'set':>16} {'TV':>6} {'E':>7} {'exact s':>8} {'approx s':>8} {'kappa e/a':>11} {'modes e/a':>9} "
              f"{'labels':>7} {'ARI':>6} | {'unrefined: labels':>18} {'ARI':>6}")
        for name, y in sets:
            r = agreement(name, fitted(name, y, args.fit_minutes, args.seed))
            result["agreement"].append(r)
            _save(args.out, result, "agreement")
            nb = r["unrefined"]
            print(f"{name:>16} {r['tv_error']:>6.3f} {r['n_adjacency']:>7} {r['exact_s']:>8} {r['approx_s']:>8} "
                  f"{r['kappa_exact']:>5.2f}/{r['kappa_approx']:<5.2f} {r['modes_exact']:>4}/{r['modes_approx']:<4} "
                  f"{100 * r['label_agreement']:>6.2f}% {r['ari']:>6.4f} | {100 * nb['label_agreement']:>17.2f}% {nb['ari']:>6.4f}",
                  flush=True)
    if not args.skip_cost:
        print(f"{'N':>7} {'fit s':>6} {'adj s':>6} {'E':>7} {'graph s':>7} {'MB':>6} {'approx s':>8} {'MB':>6} "
              f"{'exact s':>8} {'MB':>6} {'kappa s':>7} {'modes':>5}")
        for n in map(int, args.sizes.split(",")):
            r = cost(n, args.exact_max, args.seed, args.heights, not args.no_knn)
            result["cost"].append(r)
            _save(args.out, result, "cost")
            print(f"{n:>7} {r['fit_s']:>6} {r['adjacency_s']:>6} {r['n_adjacency']:>7} {r['hop_graph_s']:>7} "
                  f"{r['hop_graph_peak_mb']:>6} {r['detour_approx_s']:>8} {r['detour_approx_peak_mb']:>6} "
                  f"{r.get('detour_exact_s', '-'):>8} {r.get('detour_exact_peak_mb', '-'):>6} {r['auto_kappa_s']:>7} "
                  f"{r['n_modes']:>5}", flush=True)
        print("k-NN search (k = 32) by blocked torch.cdist vs cKDTree, s: "
              + ", ".join(f"N={r['n']}: {r['knn_torch_blocked_s']} vs {r['knn_kdtree_s']}" for r in result["cost"]
                          if "knn_kdtree_s" in r))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
