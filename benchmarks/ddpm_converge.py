"""The ``ddpm`` baseline trained to convergence on real MNIST codes (issue 15, part 1b).

On the 60,000 MNIST autoencoder codes at latent 16 (``runs/codes/mnist_l16.npz``, made by
``benchmarks/mnist_codes.py``), 5 % held out by a seeded split (the TEST codes, never trained on):

1. ``default``: the quick-run diffusion model, ``brenier.compare.DDPM_IMAGES`` (width 128 × depth
   3, 4,000 steps, batch 256), fixed steps, ancestral sampling (T = 1000);
2. ``sizes``: ``DDPMBaseline(converge=True)`` for each denoiser size in ``--sizes`` (width x depth),
   the other settings from ``converged_settings``: it holds out 5 % of its training codes (seeded),
   evaluates the held-out denoising loss on fixed (t, ε) draws every ``eval_every`` steps, cuts the
   learning rate at a plateau (no 1 % improvement over ``patience`` evaluations), stops at the
   plateau after the last cut. The size with the lowest loss on the TEST codes (same fixed draws
   for every model) wins; its run is the converged preset's run. A plateau run with lr_decay =
   "plateau" passes, before its first cut, exactly through the run lr_decay = "none" would make
   (same seed, same constant rate), so its best loss before the first cut is the "no schedule"
   answer: the schedule's gain is read off the same run. Raw vs EMA weights: both are scored at
   every evaluation (``val_history``).
3. ``samplers``: the winner sampled by ancestral sampling (T = 1000) and by DDIM (η = 0) at 50,
   100, 250 steps: energy distance and sliced W2 to the test codes (3 sample seeds, as many
   samples as test codes), beside the floor (as many TRAINING codes against the test codes).
4. ``--ot-only``: the OT generator (``make_baseline("ot")``) on the same training codes, its fit
   time and the same latent metrics, in ``ddpm_converge_mnist16_ot.json`` (read by the table).

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/ddpm_converge.py            # ~30-40 min, 1 thread
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/ddpm_converge.py --ot-only
    python benchmarks/ddpm_converge.py --plot       # re-draw docs/ddpm_convergence.png from the JSON
    python benchmarks/ddpm_converge.py --n 4000 --sizes 32x2 --out /tmp/q.json --png /tmp/q.png  # smoke

Prints a Markdown table and writes ``benchmarks/results/ddpm_converge_mnist16.json`` (``--out``)
with the loss curves, and ``docs/ddpm_convergence.png`` (``--png``). All runs on the CPU, one thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from brenier._io import atomic_write, write_json  # noqa: E402
from brenier.baselines import make_baseline  # noqa: E402
from brenier.baselines.ddpm import converged_settings  # noqa: E402
from brenier.compare import DDPM_IMAGES  # noqa: E402
from brenier.metrics import energy_distance, sliced_wasserstein  # noqa: E402

SAMPLE_SEEDS = (0, 1, 2)
SAMPLERS = (("ancestral", 1000), ("ddim", 50), ("ddim", 100), ("ddim", 250))


def load_split(path: Path, n: int | None, test_fraction: float = 0.05, seed: int = 0):
    """(train (N − K, 16), test (K, 16)) float64: the first ``n`` codes (all when None), a seeded
    random ``test_fraction`` held out."""
    codes = np.load(path)["codes"].astype(np.float64)
    if n is not None:
        codes = codes[:n]
    perm = np.random.default_rng(seed).permutation(len(codes))
    k = int(round(test_fraction * len(codes)))
    return codes[perm[k:]], codes[perm[:k]]


def latent_metrics(samples_by_seed: list[np.ndarray], test: np.ndarray) -> dict[str, float]:
    ed = [energy_distance(s, test, max_points=None, seed=0) for s in samples_by_seed]
    sw = [sliced_wasserstein(s, test, n_projections=512, seed=0) for s in samples_by_seed]
    # spread: mean over dimensions of the samples' std / the test codes' std (1 = right spread)
    spread = [float(np.mean(s.std(0) / test.std(0))) for s in samples_by_seed]
    return {"energy": float(np.mean(ed)), "energy_std": float(np.std(ed)),
            "sw2": float(np.mean(sw)), "sw2_std": float(np.std(sw)), "spread": float(np.mean(spread))}


def score(model, test: np.ndarray, samplers=SAMPLERS) -> dict[str, dict]:
    out = {}
    for sampler, steps in samplers:
        m = model.with_sampler(sampler, steps if sampler == "ddim" else None)
        t0 = time.perf_counter()
        s = [m.sample(len(test), seed=k) for k in SAMPLE_SEEDS]
        dt = (time.perf_counter() - t0) / len(SAMPLE_SEEDS)
        key = "ancestral_1000" if sampler == "ancestral" else f"ddim_{steps}"
        out[key] = {**latent_metrics(s, test), "sample_time_s": round(dt, 2)}
        print(f"    {key:15s} energy {out[key]['energy']:.4f} ± {out[key]['energy_std']:.4f}  "
              f"sw2 {out[key]['sw2']:.4f} ± {out[key]['sw2_std']:.4f}  spread {out[key]['spread']:.3f}  ({dt:.1f} s / {len(test)} samples)", flush=True)
    return out


def _size(s: str) -> tuple[int, int]:
    w, d = s.lower().split("x")
    return int(w), int(d)


def schedule_gain(val_history: list) -> dict:
    """Best held-out loss (min over raw/EMA) before the first learning-rate cut (= the run with no
    schedule) vs over the whole run; and raw vs EMA at their bests."""
    lr0 = val_history[0][3]
    before = [min(r, e) for s, r, e, lr in val_history if lr == lr0]
    allv = [min(r, e) for s, r, e, lr in val_history]
    return {"best_no_schedule": min(before), "steps_no_schedule": len(before) and
            [s for s, r, e, lr in val_history if lr == lr0][-1],
            "best_with_schedule": min(allv), "gain_relative": (min(before) - min(allv)) / min(before),
            "best_raw": min(r for _, r, _, _ in val_history), "best_ema": min(e for _, _, e, _ in val_history)}


def run(args) -> dict:
    torch.set_num_threads(1)
    train, test = load_split(Path(args.codes), args.n)
    floor_idx = np.random.default_rng(1).choice(len(train), len(test), replace=False)
    floor = latent_metrics([train[floor_idx]], test)
    res = {"data": {"codes": args.codes, "n_used": len(train) + len(test), "n_train": len(train), "n_test": len(test),
                    "note": "first %d codes" % args.n if args.n else "all codes"},
           "machine": f"{platform.processor() or platform.machine()}, shared 2-core CPU under load, torch threads 1",
           "heldout_loss": "mean |eps - eps_theta(x_t, t)|^2 on the TEST codes, 16 fixed (t, eps) draws per code "
                           "(t stratified over [0, 1000)), draws seed 0; noise: the same with draws seed 1",
           "latent_metrics": f"energy distance and sliced W2 (512 directions) of {len(test)} samples to the "
                             f"{len(test)} test codes, mean ± std over sample seeds {list(SAMPLE_SEEDS)}",
           "floor": floor, "sizes": {}}
    print(f"train {len(train)}, test {len(test)} codes; floor (train subsample vs test): "
          f"energy {floor['energy']:.4f}, sw2 {floor['sw2']:.4f}", flush=True)

    def save():
        write_json(args.out, res)

    # 1. the quick-run default
    if args.skip_default:
        res["default"] = None
    else:
        _default(res, train, test)
        save()
    _sizes(res, args, train, test, save)
    return res


def _default(res, train, test):
    print("default (brenier.compare.DDPM_IMAGES):", DDPM_IMAGES, flush=True)
    c0 = time.process_time()
    d = make_baseline("ddpm", seed=0, device="cpu", **DDPM_IMAGES).fit(train)
    res["default"] = {"settings": dict(DDPM_IMAGES), "steps": d.steps_run_, "train_time_s": round(d.train_time_, 1),
                      "train_cpu_s": round(time.process_time() - c0, 1),
                      "heldout_loss": d.heldout_loss(test, seed=0), "heldout_loss_seed1": d.heldout_loss(test, seed=1),
                      "loss_curve": [[s, round(v, 5)] for s, v in d.loss_curve_]}
    print(f"  {d.steps_run_} steps, {d.train_time_:.0f} s, held-out loss {res['default']['heldout_loss']:.4f}", flush=True)
    res["default"]["samplers"] = score(d, test, SAMPLERS[:1] + SAMPLERS[2:3])


def _sizes(res, args, train, test, save):
    # 2. converged runs, one per size
    models = {}
    for size in args.sizes:
        w, dp = _size(size)
        kw = {**converged_settings(len(train), train.shape[1]), "hidden": w, "depth": dp}
        if args.max_steps:
            kw["max_steps"] = args.max_steps
        print(f"converge {size}: {kw}", flush=True)
        c0 = time.process_time()
        m = make_baseline("ddpm", seed=0, device="cpu", **kw).fit(train)
        cpu = time.process_time() - c0
        info = m.info()
        r = {"settings": {k: v for k, v in kw.items()}, "params": sum(p.numel() for p in m.net_.parameters()),
             "steps": m.steps_run_, "stop_reason": m.stop_reason_, "train_time_s": round(m.train_time_, 1),
             "train_cpu_s": round(cpu, 1),
             "best_step": m.best_step_, "best_weights": m.best_weights_, "val_loss": m.best_val_loss_,
             "heldout_loss": m.heldout_loss(test, seed=0), "heldout_loss_seed1": m.heldout_loss(test, seed=1),
             "schedule": schedule_gain(m.val_history_),
             "val_history": info["val_history"], "train_history": info["train_history"]}
        res["sizes"][size] = r
        models[size] = m
        print(f"  {r['steps']} steps ({r['stop_reason']}), {r['train_time_s']:.0f} s, best at {r['best_step']} "
              f"({r['best_weights']}), val {r['val_loss']:.4f}, held-out {r['heldout_loss']:.4f}; "
              f"no-schedule best {r['schedule']['best_no_schedule']:.4f}", flush=True)
        save()

    # 3. the winner's samplers
    win = min(res["sizes"], key=lambda k: res["sizes"][k]["heldout_loss"])
    res["winner"] = win
    print(f"winner {win}: samplers", flush=True)
    res["sizes"][win]["samplers"] = score(models[win], test)
    sm = res["sizes"][win]["samplers"]
    res["best_sampler"] = min(sm, key=lambda k: sm[k]["energy"])
    save()


def table(res: dict) -> str:
    rows = ["| model | steps | stop | train wall / CPU (s) | held-out loss | sampler | energy dist. | sliced W2 |",
            "|---|---|---|---|---|---|---|---|"]
    d = res["default"]
    for k, v in d.get("samplers", {}).items():
        rows.append(f"| default {d['settings']['hidden']}x{d['settings']['depth']} | {d['steps']} | fixed | "
                    f"{d['train_time_s']:.0f} / {d.get('train_cpu_s', float('nan')):.0f} | {d['heldout_loss']:.4f} | {k} | {v['energy']:.4f} ± {v['energy_std']:.4f} "
                    f"| {v['sw2']:.4f} ± {v['sw2_std']:.4f} |")
    for size, r in res["sizes"].items():
        base = (f"| converge {size}{' (winner)' if size == res.get('winner') else ''} | {r['steps']} | {r['stop_reason']} | "
                f"{r['train_time_s']:.0f} / {r.get('train_cpu_s', float('nan')):.0f} | {r['heldout_loss']:.4f} |")
        if "samplers" in r:
            for k, v in r["samplers"].items():
                rows.append(f"{base} {k} | {v['energy']:.4f} ± {v['energy_std']:.4f} | {v['sw2']:.4f} ± {v['sw2_std']:.4f} |")
        else:
            rows.append(f"{base} - | - | - |")
    ot = res.get("ot")
    if ot:
        rows.append(f"| ot (semi-discrete OT) | - | - | {ot['fit_time_s']:.0f} | - | {ot['sampler']} | "
                    f"{ot['energy']:.4f} ± {ot['energy_std']:.4f} | {ot['sw2']:.4f} ± {ot['sw2_std']:.4f} |")
    f = res["floor"]
    rows.append(f"| floor: training codes | - | - | - | - | - | {f['energy']:.4f} | {f['sw2']:.4f} |")
    return "\n".join(rows)


def run_ot(args) -> dict:
    torch.set_num_threads(1)
    train, test = load_split(Path(args.codes), args.n)
    t0 = time.perf_counter()
    ot = make_baseline("ot", seed=0, device="cpu").fit(train)
    fit = time.perf_counter() - t0
    s = [ot.sample(len(test), seed=k) for k in SAMPLE_SEEDS]
    out = {"fit_time_s": round(fit, 1), "sampler": "OT map (uniform ball)", **latent_metrics(s, test),
           "info": {k: v for k, v in ot.info().items() if isinstance(v, (int, float, str, bool))}}
    print(json.dumps(out, indent=1))
    return out


def merge(parts: list[dict]) -> dict:
    """One result from runs of this script over disjoint ``--sizes`` (same data, same split): the
    default and floor of the first, every size, the winner by held-out loss (whose own run scored
    its samplers, as it won there too)."""
    res = {k: v for k, v in parts[0].items() if k not in ("sizes", "winner", "best_sampler")}
    res["default"] = next(p["default"] for p in parts if p.get("default"))
    res["sizes"] = {k: v for part in parts for k, v in part["sizes"].items()}
    res["winner"] = min(res["sizes"], key=lambda k: res["sizes"][k]["heldout_loss"])
    sm = res["sizes"][res["winner"]]["samplers"]
    res["best_sampler"] = min(sm, key=lambda k: sm[k]["energy"])
    res["merged_from"] = len(parts)
    res["preset"] = converged_settings(res["data"]["n_train"], 16)
    res["note"] = ("each size's 'settings' are converged_settings at run time with hidden/depth set; its sampler "
                   "fields were not used (every sampler is scored under 'samplers'). 'preset' is converged_settings "
                   "after this run (the winner's size, the best sampler). Sizes were run as parallel processes "
                   "(--skip-default) and merged (--merge); times are wall (train_time_s) and process CPU "
                   "(train_cpu_s) on the shared, loaded 2-core CPU, one thread each.")
    return res


def plot(res: dict, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (size, r) in enumerate(res["sizes"].items()):
        h = np.array(r["val_history"], dtype=float)
        c = colors[i % len(colors)]
        ax.plot(h[:, 0] / 1000, h[:, 2], "-", color=c, lw=1.5, label=f"{size}, EMA weights")
        ax.plot(h[:, 0] / 1000, h[:, 1], ":", color=c, lw=1.0, label=f"{size}, raw weights")
        cuts = h[1:, 0][np.diff(h[:, 3]) < 0] / 1000
        for x in cuts:
            ax.axvline(x, color=c, lw=0.6, alpha=0.4)
    ax.axhline(res["default"]["heldout_loss"], color="k", lw=1, ls="--",
               label=f"default {res['default']['steps']} steps (test codes)")
    ax.set_xlabel("training steps (thousands)   thin verticals: learning-rate cuts")
    ax.set_ylabel("held-out denoising loss")
    ax.set_title(f"DDPM on {res['data']['n_used']:,} MNIST codes (d = 16): held-out loss, fixed draws", fontsize=9)
    lo = min(min(np.array(r["val_history"])[:, 1:3].min() for r in res["sizes"].values()), res["default"]["heldout_loss"])
    ax.set_ylim(lo * 0.97, lo * 1.25)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(png)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codes", default=str(ROOT / "runs/codes/mnist_l16.npz"))
    p.add_argument("--n", type=int, default=None, help="use only the first N codes")
    p.add_argument("--sizes", type=lambda s: s.split(","), default=["128x3", "256x3", "256x4"])
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/ddpm_converge_mnist16.json"))
    p.add_argument("--png", default=str(ROOT / "docs/ddpm_convergence.png"))
    p.add_argument("--ot-only", action="store_true")
    p.add_argument("--skip-default", action="store_true", help="no default model (for runs merged with --merge)")
    p.add_argument("--plot", action="store_true", help="only re-draw the PNG and table from --out")
    p.add_argument("--merge", nargs="+", default=None,
                   help="merge JSON files of runs over different --sizes (run in parallel) into --out")
    args = p.parse_args()
    if args.merge:
        write_json(args.out, merge([json.loads(Path(f).read_text()) for f in args.merge]))
        args.plot = True
    ot_path = Path(args.out).with_name(Path(args.out).stem + "_ot.json")
    if args.ot_only:
        write_json(ot_path, run_ot(args))
        return
    res = json.loads(Path(args.out).read_text()) if args.plot else run(args)
    if res.get("default") is None:
        print(f"wrote {args.out} (no default model: merge it with --merge)")
        return
    if ot_path.exists():
        res["ot"] = json.loads(ot_path.read_text())
        write_json(args.out, res)
    print(table(res))
    print(f"wrote {args.out}, {plot(res, Path(args.png))}")


if __name__ == "__main__":
    main()
