"""Benchmark: finding the critical frames of a process (occlusion, tilting glass, tipping glass) in the latent space of an AEOT.

Protocol (all seeds fixed):

1. ``occlusion_scenes`` / ``tilting_glass`` / ``tipping_glass``: ``--train`` trajectories (seed 1) give the training
   frames — only their *stable* frames (not critical), each distinct frame once (identical frames
   are one state, and duplicate OT targets stall the Newton solver), are used to fit ``AEOT``
   (conv autoencoder, latent ``--latent``, OT map on the normalised codes, singular set).
   ``--val`` trajectories (seed 3) calibrate thresholds; ``--test`` held-out trajectories
   (seed 2) are scored.
2. For every held-out trajectory: ``critical_frames`` with its default local score and with the
   old global one, with modes from the singular set, the ε-graph, or none; the simple
   alternative ``step_size_frames`` (a threshold on the latent step size) and the diffusion
   baseline's score (a DDPM fitted on the same normalised codes, ``brenier.baselines.ddpm``;
   score = its mean denoising error at t ∈ {10, ..., 200}, a negative-ELBO proxy; default
   threshold its 99th percentile on the training codes), each at its default threshold and at the
   threshold that maximises F1 on the validation trajectories. As a chart-free reference, the
   same scores computed on the frames themselves (1 024 pixels) against the stable training frames.
3. Precision (share of reported frames within ±2 frames of a critical frame) and recall (share of
   critical events — maximal runs of critical frames — with a report within ±2 frames), pooled
   over the held-out trajectories.

    python benchmarks/critical.py                  # fit (≈ 2-4 min on 2 CPU cores) and score
    python benchmarks/critical.py --model runs/critical_bench/occlusion_model   # reuse a fitted model
    python benchmarks/critical.py --data glass --train 40                     # the tilting glass
    python benchmarks/critical.py --data tipping --train 60                   # the glass pushed over (latent 3)

Prints a table and writes JSON to ``benchmarks/results/critical.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from brenier._array import first_unique_rows
from brenier._io import write_json
from brenier.critical import (DEFAULT_LOCAL_THRESHOLD, DEFAULT_THRESHOLD, SCALES, critical_codes, critical_scores,
                              has_gap, match_events, step_size_frames)
from brenier.datasets.scenes import occlusion_scenes, tilting_glass, tipping_glass

ROOT = Path(__file__).resolve().parent


def fit_model(train_frames: np.ndarray, latent: int, epochs: int, max_time: float, seed: int, device: str):
    from brenier.pipeline import AEOT

    model = AEOT(latent, device=device, seed=seed, epochs=epochs, patience=8, max_train_time=max_time,
                 ae_options={"channels": (16, 32), "hidden": 128})
    return model.fit(train_frames, progress=sys.stdout.isatty())


def encode_all(model, frames: np.ndarray) -> np.ndarray:
    """(T, F, C, H, W) → raw codes (T, F, d)."""
    T, F = frames.shape[:2]
    z = np.asarray(model.encode(frames.reshape(T * F, *frames.shape[2:])))
    return z.reshape(T, F, -1)


def pooled(detections: list[np.ndarray], critical: np.ndarray, tol: int) -> dict:
    tot = {"tp": 0, "n_detected": 0, "events_hit": 0, "n_events": 0}
    for det, crit in zip(detections, critical):
        m = match_events(det, crit, tol)
        for k in tot:
            tot[k] += m[k]
    p = tot["tp"] / tot["n_detected"] if tot["n_detected"] else 1.0
    r = tot["events_hit"] / tot["n_events"] if tot["n_events"] else 1.0
    return {**tot, "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def ours(model, codes: np.ndarray, modes: str, threshold: float, scale: str = "local") -> list[np.ndarray]:
    return [critical_codes(model, z, threshold=threshold, modes=modes, scale=scale).indices for z in codes]


def steps(model, codes: np.ndarray, threshold: float) -> list[np.ndarray]:
    return [step_size_frames(np.asarray(model.normalise(z)), threshold)[0] for z in codes]


@torch.no_grad()
def ddpm_score(ddpm, y: np.ndarray, ts=(10, 25, 50, 100, 200), draws: int = 8, seed: int = 0) -> np.ndarray:
    """(M,) mean denoising error of a DDPM at codes y (M, d): a per-point negative-ELBO proxy
    (high where the diffusion model finds the point unlikely). Fixed t grid and noise draws."""
    x = torch.as_tensor((y - ddpm.mean_) / ddpm.std_, dtype=torch.float32)
    ab = ddpm.schedule_.alpha_bars.float()
    g = torch.Generator().manual_seed(seed)
    tot = torch.zeros(len(x))
    for t in ts:
        for _ in range(draws):
            eps = torch.randn(x.shape, generator=g)
            a = ab[t]
            xt = a.sqrt() * x + (1 - a).sqrt() * eps
            tot += ((ddpm.net_(xt, torch.full((len(x),), t)) - eps) ** 2).mean(dim=1)
    return (tot / (len(ts) * draws)).numpy()


def calibrate(run, grid, critical, tol) -> tuple[float, dict]:
    best = None
    for th in grid:
        m = pooled(run(th), critical, tol)
        if best is None or m["f1"] > best[1]["f1"] + 1e-12:
            best = (float(th), m)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("occlusion", "glass", "tipping"), default="occlusion")
    ap.add_argument("--train", type=int, default=80)
    ap.add_argument("--val", type=int, default=10)
    ap.add_argument("--test", type=int, default=20)
    ap.add_argument("--frames", type=int, default=None, help="frames per trajectory (default 32 occlusion, 48 glass)")
    ap.add_argument("--latent", type=int, default=None,
                    help="latent dimension (default 8; 3 for tipping, whose frames have intrinsic dimension about 2.2-2.7)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--max-train-time", type=float, default=150.0)
    ap.add_argument("--tol", type=int, default=2)
    ap.add_argument("--ddpm-steps", type=int, default=2000, help="train the latent DDPM baseline this many steps (0: skip it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", type=Path, default=None, help="a saved AEOT to reuse (else fit and save to runs/critical_bench/DATA_model)")
    ap.add_argument("--denser", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                    help="comma-separated trajectory counts: also score against the stable codes of that many training trajectories, same encoder")
    ap.add_argument("--no-pixels", dest="pixels", action="store_false", help="skip the pixel-space reference rows")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/critical[_glass].json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    make = {"occlusion": occlusion_scenes, "glass": tilting_glass, "tipping": tipping_glass}[a.data]
    a.frames = a.frames or (32 if a.data == "occlusion" else 48)
    a.latent = a.latent or (3 if a.data == "tipping" else 8)
    a.out = a.out or ROOT / "results" / ("critical.json" if a.data == "occlusion" else f"critical_{a.data}.json")
    tr = make(a.train, a.frames, seed=1)
    va = make(a.val, a.frames, seed=3)
    te = make(a.test, a.frames, seed=2)
    # identical stable frames (e.g. the glass at the same angle once the puddle reaches the frame's
    # edge, or at 0 degrees for fill levels within a sub-pixel) are one state: fitted once, so
    # that the OT targets hold no duplicate codes (duplicates stall the Newton solver)
    stable_train = tr.stable_frames()
    keep = first_unique_rows(stable_train)
    t0 = time.perf_counter()
    from brenier.pipeline import AEOT

    if a.model is not None and (a.model / "aeot.json").exists():
        model = AEOT.load(a.model, device=a.device)
        fit_s = None
    else:
        model = fit_model(stable_train[keep], a.latent, a.epochs, a.max_train_time, a.seed, a.device)
        fit_s = time.perf_counter() - t0
        model.save(a.model or Path(f"runs/critical_bench/{a.data}_model"))
    S = model.singular_set_
    zva, zte = encode_all(model, va.frames), encode_all(model, te.frames)

    rows = []
    old_modes = "singular" if S is not None and S.trusted else "graph"   # the rule "auto" followed before the "none" fallback
    L, G = np.round(np.arange(0.3, 1.501, 0.05), 2), np.round(np.arange(1.5, 4.01, 0.1), 2)   # threshold grids
    methods = {
        "critical_frames (default: auto modes, local score)": (lambda z, th: ours(model, z, "auto", th), DEFAULT_LOCAL_THRESHOLD, L),
        "critical_frames, singular-set modes, local score": (lambda z, th: ours(model, z, "singular", th), DEFAULT_LOCAL_THRESHOLD, L),
        "critical_frames, ε-graph modes, local score": (lambda z, th: ours(model, z, "graph", th), DEFAULT_LOCAL_THRESHOLD, L),
        "local score only (no modes)": (lambda z, th: ours(model, z, "none", th), DEFAULT_LOCAL_THRESHOLD, L),
        "old default: global score, singular-set modes if trusted, else ε-graph": (lambda z, th: ours(model, z, old_modes, th, "global"), DEFAULT_THRESHOLD, G),
        "global score only (no modes)": (lambda z, th: ours(model, z, "none", th, "global"), DEFAULT_THRESHOLD, G),
        "mode changes only (singular-set modes, no score)": (lambda z, th: ours(model, z, "singular", 1e12), float("inf"), [1e12]),
        "mode changes only (ε-graph, no score)": (lambda z, th: ours(model, z, "graph", 1e12), float("inf"), [1e12]),
        "latent step size (alternative)": (lambda z, th: steps(model, z, th), 1.5, np.arange(1.0, 3.01, 0.05)),
    }
    if a.pixels:
        # a chart-free reference: the same scores on the frames themselves (1 024 pixels), against
        # the (distinct) stable training frames; not a detector of the model, a measure of what the chart keeps
        px = types.SimpleNamespace(codes_=stable_train[keep].reshape(len(keep), -1).astype(np.float64))
        p_va = {sc: [critical_scores(px, f.reshape(len(f), -1), scale=sc) for f in va.frames] for sc in SCALES}
        p_te = {sc: [critical_scores(px, f.reshape(len(f), -1), scale=sc) for f in te.frames] for sc in SCALES}

        def run_px(z, th, sc, _va=zva):
            return [np.flatnonzero(x > th) for x in (p_va if z is _va else p_te)[sc]]

        methods["pixel-space local score (no chart; reference)"] = (lambda z, th: run_px(z, th, "local"), DEFAULT_LOCAL_THRESHOLD, L)
        methods["pixel-space global score (no chart; reference)"] = (lambda z, th: run_px(z, th, "global"), DEFAULT_THRESHOLD, G)
    for n in a.denser:
        # the same encoder, the score measured against the distinct stable codes of n training
        # trajectories (seed 1) instead of the model's own: how the score improves with the sampling
        # density of the stable states, without refitting the autoencoder or the OT map
        more = make(n, a.frames, seed=1).stable_frames()
        more = more[first_unique_rows(more)]
        dense = types.SimpleNamespace(encode=model.encode, normalise=model.normalise, latent_dim=a.latent, singular_set_=None,
                                      codes_=np.asarray(model.normalise(np.asarray(model.encode(more)))))
        methods[f"local score only, against the stable codes of {n} trajectories ({len(more)} distinct; same encoder)"] = \
            (lambda z, th, dense=dense: ours(dense, z, "none", th), DEFAULT_LOCAL_THRESHOLD, L)
        methods[f"global score only, against the stable codes of {n} trajectories (same encoder)"] = \
            (lambda z, th, dense=dense: ours(dense, z, "none", th, "global"), DEFAULT_THRESHOLD, G)
    if a.ddpm_steps > 0:
        from brenier.baselines.ddpm import DDPMBaseline

        t = time.perf_counter()
        ddpm = DDPMBaseline(seed=a.seed, steps=a.ddpm_steps, batch_size=256, hidden=128, device="cpu").fit(np.asarray(model.codes_))
        ddpm_fit_s = time.perf_counter() - t
        s_train = ddpm_score(ddpm, np.asarray(model.codes_))
        s_va = [ddpm_score(ddpm, np.asarray(model.normalise(z))) for z in zva]
        s_te = [ddpm_score(ddpm, np.asarray(model.normalise(z))) for z in zte]
        d99 = float(np.quantile(s_train, 0.99))
        grid = np.quantile(s_train, [0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]).tolist() + [d99 * f for f in (1.5, 2, 3, 5)]

        def run_ddpm(z, th, _va=zva):
            sc = s_va if z is _va else s_te
            return [np.flatnonzero(x > th) for x in sc]

        methods["DDPM denoising-error score (diffusion baseline)"] = (run_ddpm, d99, np.asarray(grid))
    else:
        ddpm_fit_s = None
    for name, (run, default, grid) in methods.items():
        if "singular" in name and S is None:
            continue
        t = time.perf_counter()
        m_def = pooled(run(zte, default), te.critical, a.tol)
        th, m_val = calibrate(lambda th: run(zva, th), grid, va.critical, a.tol)
        m_cal = pooled(run(zte, th), te.critical, a.tol)
        rows.append({"method": name, "default_threshold": default, "default": m_def, "calibrated_threshold": th,
                     "validation": m_val, "calibrated": m_cal, "time_s": time.perf_counter() - t})
    # mode structure: do the modes separate the visible counts of the training frames?
    fitted_rows = keep if len(model.codes_) == len(keep) or fit_s is not None else np.arange(len(stable_train))
    cnt = (tr.count if a.data == "occlusion" else tr.state)[~tr.critical][fitted_rows][np.asarray(model.code_index_)]
    modes_info = {}
    if S is not None:
        modes_info["singular"] = {"n_modes": int(S.n_modes), "n_facets": int(S.n_facets), "trusted": bool(S.trusted),
                                  "purity": _purity(np.asarray(S.mode_of(np.asarray(model.codes_))), cnt)}
        # reproducibility: the same rule on adjacencies sampled with other seeds
        from brenier.singular import singular_set

        for s in (1, 2):
            Ss = singular_set(model.ot_, seed=s)
            modes_info[f"singular_seed{s}"] = {"n_modes": int(Ss.n_modes), "n_facets": int(Ss.n_facets),
                                               "purity": _purity(np.asarray(Ss.mode_of(np.asarray(model.codes_))), cnt)}
    from brenier.critical import latent_modes

    gm = latent_modes(model.codes_)
    modes_info["graph"] = {"n_modes": int(gm.max() + 1), "purity": _purity(gm, cnt)}

    auto = "the singular set" if S is not None and S.trusted else ("the ε-graph" if has_gap(model) else "none (no persistent gap in the codes: score only)")
    res = {
        "benchmark": "critical", "data": a.data, "n_train_traj": a.train, "n_val_traj": a.val, "n_test_traj": a.test, "frames": a.frames,
        "n_train_frames": int(len(model.codes_)), "n_stable_frames": int(len(stable_train)), "n_distinct_stable_frames": int(len(keep)),
        "auto_modes": auto, "latent_dim": a.latent, "tol": a.tol, "fit_s": fit_s, "ddpm_fit_s": ddpm_fit_s,
        "timings": getattr(model, "timings_", None), "ae_epochs": len(model.train_history_),
        "n_test_events": rows[0]["default"]["n_events"] if rows else None,
        "modes": modes_info, "results": rows, "device": str(model.device_),
        "platform": platform.platform(), "torch": torch.__version__,
    }
    write_json(a.out, res)
    print(f"\n{a.data}: AEOT on {len(model.codes_)} stable training frames, latent {a.latent}, "
          f"fit {'reused' if fit_s is None else f'{fit_s:.0f} s'}; held-out: {a.test} trajectories, "
          f"{res['n_test_events']} critical events; tolerance ±{a.tol} frames")
    print(f"critical_frames' default (auto) takes its modes from: {auto}; score: local (k = 8), default threshold {DEFAULT_LOCAL_THRESHOLD:g}")
    print("modes: " + "; ".join(f"{k}: {v['n_modes']} modes, state purity {v['purity']:.3f}" for k, v in modes_info.items()))
    print("\n| method | threshold | precision | recall | calibrated threshold | precision | recall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        d, c = r["default"], r["calibrated"]
        print(f"| {r['method']} | {r['default_threshold']:.3g} | {d['precision']:.3f} | {d['recall']:.3f} | "
              f"{r['calibrated_threshold']:.3g} | {c['precision']:.3f} | {c['recall']:.3f} |")
    print(f"\nwrote {a.out}")
    return 0


def _purity(labels: np.ndarray, count: np.ndarray) -> float:
    """Share of training codes whose mode's majority visible count equals their own."""
    ok = 0
    for m in np.unique(labels):
        c = count[labels == m]
        ok += int(np.bincount(c).max())
    return ok / len(labels)


if __name__ == "__main__":
    sys.exit(main())
