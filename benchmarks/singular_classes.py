"""What the singular set separates on real MNIST codes (issue 15, part 2).

For each latent dimension d in --latents: a seeded, class-stratified subset of --n MNIST training
codes (``runs/codes/mnist_l{d}.npz``, ``benchmarks/mnist_codes.py``), a Monte Carlo Newton fit of
the uniform ball onto them (tol 0.03, cached under runs/singular_classes/), ``singular_set()``
(threshold "auto": kappa read off the training codes themselves, no label used; detours exact up
to 8), and, against the digit of each code (``brenier.singular_classes``):

* the share of different-digit pairs among all adjacent pairs, the regular and the singular
  facets (and among the hop graph's own k-NN edges, and two random codes);
* the digit pairs of the singular facets (10 x 10);
* the modes' purity, NMI, ARI and size at auto kappa and at --kappas (re-thresholded, exact);
* the pieces of the hop graph (its gap test) against the digits.

Latent 13 is the dimension ``brenier dimension --data mnist`` points at (TwoNN 13.5, MLE 12.1 on
5,000 training images: their mean rounded); its codes are used when cached
(``python benchmarks/mnist_codes.py --latent 13``), else that row is skipped with a note.

    python benchmarks/singular_classes.py                       # d = 16, 13, 64; N = 10,000
    python benchmarks/singular_classes.py --n 60000 --latents 16   # all codes (slow fit)
    python benchmarks/singular_classes.py --figure-only         # redraw docs/singular_classes.png
    python benchmarks/singular_classes.py --run runs/mnist --kappas 1.25,1.5,2,2.5
        # the saved map and singular set of `brenier fit --data mnist` (all 60,000 codes):
        # results/singular_classes_mnist.json, docs/singular_classes_mnist.png

Writes benchmarks/results/singular_classes.json (--out) and docs/singular_classes.png (--figure).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from brenier import singular as sg  # noqa: E402
from brenier._io import atomic_write, write_json  # noqa: E402
from brenier.ot import SemiDiscreteOT  # noqa: E402
from brenier.singular_classes import facet_class_table, kappa_sweep, mode_purity, target_labels  # noqa: E402
from brenier.sources import UniformBall  # noqa: E402

warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta")
ROOT = Path(__file__).resolve().parent
CACHE = Path("runs/singular_classes")
CODES = Path("runs/codes")


def codes(d: int):
    """(codes (60000, d), labels (60000,)) or None when not cached (latents other than 16/64 are not trained here)."""
    path = CODES / f"mnist_l{d}.npz"
    if not path.is_file():
        if d in (16, 64):
            from mnist_codes import mnist_codes

            return mnist_codes(d)
        return None
    with np.load(path, allow_pickle=False) as f:
        return f["codes"], f["labels"]


def _strict(x):
    """x with every nan/inf float replaced by None (strict JSON: no NaN)."""
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_strict(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _loose(x):
    """The inverse of ``_strict`` for reading rows back: None -> nan."""
    if isinstance(x, dict):
        return {k: _loose(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_loose(v) for v in x]
    return float("nan") if x is None else x


def _save(tmp: str, fn, *args, **kw) -> None:
    """fn(open file, *args, **kw) into tmp (np.savez / np.save / savefig would add a suffix to a name)."""
    with open(tmp, "wb") as f:
        fn(f, *args, **kw)


def stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n,) sorted indices: a seeded subset with each class in its share."""
    if n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    return np.sort(idx)


def fitted(name: str, y: np.ndarray, tol: float, minutes: float, seed: int) -> tuple[SemiDiscreteOT, float]:
    path = CACHE / name
    if (path / "ot.json").is_file():
        ot = SemiDiscreteOT.load(path, device="cpu")
        if ot.targets_.shape == y.shape and np.allclose(np.asarray(ot.targets_), y):
            hist = ot.history_[-1] if ot.history_ else {}
            return ot, float(hist.get("time", float("nan")))     # the cached fit's own wall time
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # a fit stopped by max_time warns; its TV is recorded
        ot = SemiDiscreteOT(UniformBall(y.shape[1]), method="newton", tol=tol, seed=seed, device="cpu",
                            solver_options={"max_time": 60.0 * minutes}).fit(y)
    dt = time.perf_counter() - t
    ot.save(path)
    return ot, dt


def cached_singular_set(ot, path: Path, idx: np.ndarray):
    """(ot.singular_set() (threshold "auto"), its seconds): rebuilt from path when an earlier run
    saved it for the same codes (the set is seeded: the same adjacency and detours), else computed."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            z = {k: f[k] for k in f.files}
        y0 = ot._unique_targets.numpy()
        if ("threshold" in z and np.array_equal(z["idx"], idx) and z["targets"].shape == y0.shape
                and np.allclose(z["targets"], y0)):
            y = z["targets"]
            S = sg.SingularSet(adjacency=z["adjacency"], angles=sg.facet_angles(y, z["adjacency"]), detour=z["detour"],
                               singular=z["singular"], modes=z["modes"], targets=y, threshold=float(z["threshold"]),
                               _graph=sg.hop_graph(y))
            return S, float(z["singular_s"])
    t = time.perf_counter()
    S = ot.singular_set()
    return S, time.perf_counter() - t


def hop_pieces(S, lab: np.ndarray) -> dict:
    """The hop graph (k-NN less gap bridges) against the digits: its edges' different-digit share
    and its connected pieces' purity."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    g = sp.triu(S._graph if S._graph is not None else sg.hop_graph(S.targets), k=1).tocoo()
    diff = lab[g.row] != lab[g.col]
    _, piece = connected_components(S._graph, directed=False)
    return {"k": sg.hop_k(S.targets.shape[1]), "edges": int(len(diff)), "share_different": float(diff.mean()),
            "pieces": mode_purity(piece, lab)}


def nn_share(y: np.ndarray, lab: np.ndarray) -> float:
    """Share of codes whose nearest other code has another digit."""
    from scipy.spatial import cKDTree

    _, j = cKDTree(y).query(y, k=2)
    return float(np.mean(lab[j[:, 1]] != lab))


def run_latent(d: int, a) -> dict | None:
    got = codes(d)
    if got is None:
        return {"latent": d, "skipped": f"no cached codes runs/codes/mnist_l{d}.npz (python benchmarks/mnist_codes.py --latent {d})"}
    Y, L = got
    idx = stratified(L, a.n, a.seed)
    y, lab_all = Y[idx], L[idx]
    name = f"l{d}_n{len(idx)}_s{a.seed}"
    ot, fit_s = fitted(name, y, a.tol, a.fit_minutes, a.seed)
    S, s_s = cached_singular_set(ot, CACHE / name / "singular.npz", idx)
    return describe(ot, S, lab_all, idx, name, d, a, fit_s, s_s)


def describe(ot, S, lab_all: np.ndarray, idx: np.ndarray, name: str, d: int, a, fit_s: float, s_s: float) -> dict:
    """The row of one fitted map and its singular set (labels: the digit of each fitted code),
    and the arrays the figure needs, cached under CACHE/name/singular.npz."""
    lab = target_labels(ot, lab_all)
    table = facet_class_table(S, lab, n_classes=10)
    row = {
        "latent": d, "n": int(len(idx)), "seed": a.seed, "fit_s": None if np.isnan(fit_s) else round(fit_s, 1),
        "tv_error": float(ot.tv_error_), "newton_steps": int(ot.n_iter_), "singular_s": round(s_s, 1),
        "kappa_auto": float(S.threshold), "n_adjacent": int(len(S.adjacency)), "n_facets": S.n_facets,
        "trusted": bool(S.trusted), "table": table, "purity_auto": mode_purity(S.modes, lab),
        "nn_different": nn_share(S.targets, lab), "hop": hop_pieces(S, lab),
        "sweep": kappa_sweep(S, lab, a.kappas),
        "detour_median": {"same": float(np.median(S.detour[lab[S.adjacency[:, 0]] == lab[S.adjacency[:, 1]]])),
                          "different": float(np.median(S.detour[lab[S.adjacency[:, 0]] != lab[S.adjacency[:, 1]]]))},
    }
    arrays = {"idx": idx, "adjacency": S.adjacency, "detour": S.detour, "singular": S.singular, "modes": S.modes,
              "labels": lab, "targets": S.targets, "threshold": np.float64(S.threshold), "singular_s": np.float64(s_s)}
    atomic_write(CACHE / name / "singular.npz", lambda tmp: _save(tmp, np.savez, **arrays))
    return row


def run_saved(path: Path, a) -> dict:
    """The row of a saved `brenier fit` run (``--run``): its own map and saved singular set (not
    refitted, not recomputed), against the digits of the training images it encoded."""
    from brenier.datasets import load
    from brenier.pipeline import AEOT

    model = AEOT.load(path, device="cpu")
    if model.singular_set_ is None:
        raise SystemExit(f"--run: {path} has no saved singular set")
    _, labels = load("mnist")
    idx = np.asarray(model.code_index_, dtype=np.int64)
    ot, S = model.ot_, model.singular_set_
    if S._graph is None:
        S._graph = sg.hop_graph(S.targets)
    hist = ot.history_[-1] if ot.history_ else {}
    row = describe(ot, S, labels[idx], idx, f"run_{path.name}", ot.targets_.shape[1], a,
                   float(hist.get("time", float("nan"))), float("nan"))
    row["run"] = str(path)
    return row


def print_tables(rows: list[dict]) -> None:
    print("\n| d | N | fit TV | auto κ | adjacent pairs | singular facets | different digit: all adjacent | regular | singular "
          "| regular at singular lengths | hop k-NN edges | 1-NN | random pair | AUC detour / length | modes | largest | purity | NMI |")
    print("|---" * 18 + "|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['latent']} | skipped: {r['skipped']} |")
            continue
        t, p = r["table"], r["purity_auto"]
        print(f"| {r['latent']} | {r['n']:,} | {r['tv_error']:.3f} | {r['kappa_auto']:.2f} | {t['adjacent']['count']:,} | "
              f"{t['singular']['count']:,} | {100 * t['adjacent']['share_different']:.1f} % | "
              f"{100 * t['regular']['share_different']:.1f} % | {100 * t['singular']['share_different']:.1f} % | "
              f"{100 * t['regular_at_singular_lengths']:.1f} % | {100 * r['hop']['share_different']:.1f} % | {100 * r['nn_different']:.1f} % | {100 * t['chance']:.1f} % | "
              f"{t['detour_auc']:.3f} / {t['length_auc']:.3f} | {p['n_modes']} | {100 * p['largest_share']:.1f} % | {p['purity']:.3f} | {p['nmi']:.3f} |")
    print("\nκ sweep (re-thresholded detours, exact up to 8):\n")
    print("| d | κ | singular facets | different digit: singular | regular | modes | largest | purity | NMI | ARI |")
    print("|---" * 10 + "|")
    for r in rows:
        for s in r.get("sweep", []):
            print(f"| {r['latent']} | {s['kappa']:.2f} | {s['n_facets']:,} | {100 * s['singular']['share_different']:.1f} % | "
                  f"{100 * s['regular']['share_different']:.1f} % | {s['n_modes']} | {100 * s['largest_share']:.1f} % | "
                  f"{s['purity']:.3f} | {s['nmi']:.3f} | {s['ari']:.3f} |")


# ------------------------------------------------------------------------------- figure
def figure(rows: list[dict], path: Path, latent: int, n: int, seed: int, max_drawn: int = 5000, name: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from sklearn.manifold import TSNE

    from brenier.figures import drawn_subset

    name = name or f"l{latent}_n{n}_s{seed}"
    with np.load(CACHE / name / "singular.npz", allow_pickle=False) as f:
        z = {k: f[k] for k in f.files}
    y, lab, adj, sing = z["targets"], z["labels"], z["adjacency"], z["singular"]
    keep = drawn_subset(len(y), max_drawn, seed=seed)
    emb_path = CACHE / name / f"tsne_{len(keep)}.npy"
    if emb_path.is_file():
        xy = np.load(emb_path, allow_pickle=False)
    else:
        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(y[keep])
        atomic_write(emb_path, lambda tmp: _save(tmp, np.save, xy))
    pos = np.full(len(y), -1)
    pos[keep] = np.arange(len(keep))
    fs = adj[sing]
    both = (pos[fs[:, 0]] >= 0) & (pos[fs[:, 1]] >= 0)
    fs = fs[both]
    diff = lab[fs[:, 0]] != lab[fs[:, 1]]

    fig = plt.figure(figsize=(14, 5.6))
    gs = fig.add_gridspec(1, 3, width_ratios=[1.35, 1, 1], wspace=0.28)
    ax = fig.add_subplot(gs[0])
    cmap = plt.get_cmap("tab10")
    segs = np.stack([xy[pos[fs[:, 0]]], xy[pos[fs[:, 1]]]], axis=1)
    alpha = float(np.clip(600.0 / max(len(fs), 1), 0.05, 0.5))
    ax.add_collection(LineCollection(segs[~diff], colors="C3", linewidths=0.3, alpha=min(1.0, 3 * alpha), zorder=1))
    ax.add_collection(LineCollection(segs[diff], colors="k", linewidths=0.3, alpha=alpha, zorder=1))
    ax.scatter(xy[:, 0], xy[:, 1], c=cmap(lab[keep] % 10), s=3, linewidths=0, zorder=2)
    for c in range(10):
        m = np.median(xy[lab[keep] == c], axis=0)
        ax.text(m[0], m[1], str(c), fontsize=15, weight="bold", ha="center", va="center", zorder=3,
                color=cmap(c), path_effects=[__import__("matplotlib.patheffects", fromlist=["x"]).withStroke(linewidth=3, foreground="w")])
    r = next(r for r in rows if r.get("latent") == latent and "table" in r)
    ax.set_title(f"MNIST codes d = {latent}: t-SNE of {len(keep):,} of {len(y):,} targets\n"
                 f"{len(fs):,} of {int(sing.sum()):,} singular facets (κ = {r['kappa_auto']:.2f}) with both ends drawn:\n"
                 f"black = different digits ({diff.sum():,}), red = same digit ({(~diff).sum():,})", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")

    from matplotlib.lines import Line2D

    ax2 = fig.add_subplot(gs[1])
    ax3 = fig.add_subplot(gs[2])
    styles = {16: "-", 13: "--", 64: ":"}
    done = [r for r in rows if "sweep" in r]
    for r in done:
        ls = styles.get(r["latent"], "-.")
        k = [s["kappa"] for s in r["sweep"]]
        ax2.plot(k, [100 * s["singular"]["share_different"] for s in r["sweep"]], ls, color="C3", marker="o", ms=3)
        ax2.plot(k, [100 * s["regular"]["share_different"] for s in r["sweep"]], ls, color="C0", marker="o", ms=3)
        ax2.axhline(100 * r["table"]["adjacent"]["share_different"], ls=ls, color="0.4", lw=1)
        ax2.axhline(100 * r["hop"]["share_different"], ls=ls, color="C2", lw=1)
        ax3.plot(k, [s["nmi"] for s in r["sweep"]], ls, color="C2", marker="o", ms=3)
        ax3.plot(k, [s["largest_share"] for s in r["sweep"]], ls, color="C4", marker="o", ms=3)
        ax3.plot(k, [s["purity"] for s in r["sweep"]], ls, color="C1", marker="o", ms=3)
    r0 = done[0]
    ax2.axhline(100 * r0["table"]["chance"], color="C1", lw=1)
    by_d = [Line2D([], [], color="k", ls=styles.get(r["latent"], "-."), label=f"d = {r['latent']}")
            for r in sorted(done, key=lambda r: r["latent"])]
    ax2.legend(handles=[Line2D([], [], color="C3", marker="o", ms=3, label="singular facets"),
                        Line2D([], [], color="C0", marker="o", ms=3, label="regular facets"),
                        Line2D([], [], color="0.4", label="all adjacent pairs"),
                        Line2D([], [], color="C2", label="k-NN edges (hop graph)"),
                        Line2D([], [], color="C1", label="two random codes")] + by_d,
               fontsize=8, loc="center right", bbox_to_anchor=(1.0, 0.62), framealpha=0.9)
    ax3.legend(handles=[Line2D([], [], color="C4", marker="o", ms=3, label="largest mode's share"),
                        Line2D([], [], color="C1", marker="o", ms=3, label="purity"),
                        Line2D([], [], color="C2", marker="o", ms=3, label="NMI")] + by_d,
               fontsize=8, loc="center right", framealpha=0.9)
    ticks = ([1.25, 2, 3, 4, 6, 8], ["1.25", "2", "3", "4", "6", "8"])
    for ax in (ax2, ax3):
        ax.set_xscale("log")
        ax.set_xticks(*ticks)
        ax.minorticks_off()
        ax.axvline(r0["kappa_auto"], color="0.6", ls="--", lw=0.8)
        ax.set_xlabel("detour threshold κ (dashed: auto κ)")
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("% of pairs joining two different digits")
    ax2.set_title("Who the facets join", fontsize=10)
    ax3.set_ylim(-0.02, 1.02)
    low = min(x["largest_share"] for r in done for x in r["sweep"])
    ax3.set_title(f"Modes vs digits: the largest mode holds\n≥ {100 * np.floor(1000 * low) / 1000:.1f} % of the codes at every κ", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _save(tmp, fig.savefig, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latents", default="16,13,64")
    ap.add_argument("--n", type=int, default=10_000, help="codes per latent (class-stratified, seeded); 60000 = all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=0.03)
    ap.add_argument("--fit-minutes", type=float, default=20.0, help="max_time of one fit")
    ap.add_argument("--kappas", default="1.25,1.5,2,2.5,3,4,6,8")
    ap.add_argument("--figure-latent", type=int, default=16)
    ap.add_argument("--figure-only", action="store_true", help="redraw the figure from --out and the cache")
    ap.add_argument("--run", type=Path, default=None,
                    help="a saved `brenier fit --data mnist` run: its map and singular set instead of fits "
                         "(then --out / --figure default to *_RUNNAME)")
    ap.add_argument("--out", type=Path, default=None, help="default results/singular_classes.json")
    ap.add_argument("--figure", type=Path, default=None, help="default docs/singular_classes.png")
    a = ap.parse_args(argv)
    a.kappas = [float(s) for s in a.kappas.split(",")]
    torch.set_num_threads(1)
    tail = f"_{a.run.name}" if a.run is not None else ""
    a.out = a.out or ROOT / "results" / f"singular_classes{tail}.json"
    a.figure = a.figure or ROOT.parent / "docs" / f"singular_classes{tail}.png"
    if a.run is not None:
        t = time.perf_counter()
        rows = [run_saved(a.run, a)] if not a.figure_only else _loose(json.loads(a.out.read_text())["rows"])
        if not a.figure_only:
            write_json(a.out, _strict({"benchmark": "singular_classes", "run": str(a.run), "n": rows[0]["n"], "seed": a.seed,
                                       "kappas": a.kappas, "machine": "shared 2-core CPU, one thread", "rows": rows}))
            print_tables(rows)
            print(f"\nwrote {a.out} ({time.perf_counter() - t:.0f} s)")
        figure(rows, a.figure, rows[0]["latent"], rows[0]["n"], a.seed, name=f"run_{a.run.name}")
        print(f"wrote {a.figure}")
        return 0
    if a.figure_only:
        rows = _loose(json.loads(a.out.read_text())["rows"])
    else:
        rows = []
        if a.out.is_file():      # keep the rows of other latents from an earlier run with the same n and seed
            old = json.loads(a.out.read_text())
            if old.get("n") == a.n and old.get("seed") == a.seed:
                rows = _loose(old["rows"])
        for d in (int(s) for s in a.latents.split(",")):
            t = time.perf_counter()
            r = run_latent(d, a)
            rows = [x for x in rows if x.get("latent") != d] + [r]
            print(f"latent {d}: done in {time.perf_counter() - t:.0f} s", flush=True)
            write_json(a.out, _strict({"benchmark": "singular_classes", "n": a.n, "seed": a.seed, "tol": a.tol,
                               "kappas": a.kappas, "machine": "shared 2-core CPU, one thread", "rows": rows}))
        print_tables(rows)
        print(f"\nwrote {a.out}")
    figure(rows, a.figure, a.figure_latent, min(a.n, 60_000), a.seed)
    print(f"wrote {a.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
