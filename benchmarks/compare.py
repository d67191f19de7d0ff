"""Collect `brenier compare` results into one table (Markdown) and one JSON.

    brenier compare --data ring8  --out benchmarks/results/compare/ring8      # each ≤ 10 min
    brenier compare --data grid25 --out benchmarks/results/compare/grid25
    brenier compare --data moons  --out benchmarks/results/compare/moons
    brenier compare --data digits --models ot,ot-ignore,ddpm,ddim,gmm,gaussian --n-samples 1000 \\
        --out benchmarks/results/compare/digits
    python benchmarks/fit_mnist.py --out runs/mnist                     # all 60,000 MNIST codes, ~40 min
    python benchmarks/compare.py --run mnist --aeot runs/mnist          # seven models x 3 seeds on its codes
                                                                        # -> benchmarks/results/compare_mnist.json
    python benchmarks/compare.py                    # prints the tables, writes summary.json

Options: --root DIR (default benchmarks/results/compare), --run NAME[,NAME] to run `compare`
first for those data sets (3 seeds unless --seeds; all models unless --models), --ddpm K=V,...
to override the diffusion model's settings, --suffix S to write ROOT/NAME + S. The larger
diffusion model of docs/compare.md:

    python benchmarks/compare.py --run grid25 --models ddpm --ddpm steps=20000,hidden=256,depth=4,lr=1e-3 --suffix _ddpm_big
    python benchmarks/compare.py --run ring8,moons --seeds 1 --models ddpm --ddpm steps=20000,hidden=256,depth=4,lr=1e-3 --suffix _ddpm_big
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brenier._io import write_json
from brenier.compare import IMAGE_COLUMNS, TOY_COLUMNS, compare, markdown_table, render_markdown, summarise, verdict


def merge(root: Path, name: str, parts: list[str]) -> dict:
    """One comparison from several runs of the same data on different seeds or models (the
    held-out reference row is the same in each: it is kept once). A later part's rows replace an
    earlier part's for the same model and seed (a rerun, e.g. of ``ot`` after its singular set
    changed); ``replaced`` in the JSON lists them. Writes ROOT/NAME/compare.json, compare.md and
    the first part's figures."""
    import shutil

    rs = [json.loads((root / p / "compare.json").read_text()) for p in parts]
    first = rs[0]
    for p, r in zip(parts, rs):
        if (r["data"], r["n_samples"], r["kind"]) != (first["data"], first["n_samples"], first["kind"]):
            raise SystemExit(f"--merge: {p} is not the same comparison as {parts[0]} (data, samples)")
    rows: dict = {}
    replaced = []
    for i, (p, r) in enumerate(zip(parts, rs)):
        for row in r["runs"]:
            if row["model"].startswith("real") and i:
                continue
            key = (row["model"], row.get("seed"))
            if key in rows:
                replaced.append({"model": key[0], "seed": key[1], "by": p})
            rows[key] = {**row, "part": p}
    runs = list(rows.values())
    models = list(dict.fromkeys(m for r in rs for m in r["models"]))
    seeds = sorted({row["seed"] for row in runs if not row["model"].startswith("real") and row.get("seed") is not None})
    missing = [(m, s) for m in models for s in seeds if (m, s) not in rows]
    if missing:
        raise SystemExit(f"--merge: no result for (model, seed) {missing[:5]}: every model needs every seed")
    settings: dict = {}
    for r in rs:
        for m, infos in r["settings"].items():
            settings.setdefault(m, []).extend(infos)
    summary = summarise(runs)
    cols = TOY_COLUMNS if first["kind"] == "toy" else IMAGE_COLUMNS
    order = [m for m in summary if m.startswith("real")] + models
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, f in first["files"].items():  # the first part's figures and sample arrays (its seed is the first)
        src = root / parts[0] / Path(f).name
        if key not in ("json", "md") and src.is_file():
            shutil.copy2(src, out / src.name)
            files[key] = str(out / src.name)
    if first["data"] == "mnist":
        # the sample grid of the first seed from every part that ran it (a rerun's models replace
        # the earlier part's panels, as its rows do); MNIST's reference panel is the first 100
        # test images, as in ``compare``
        import numpy as np

        from brenier.compare import _image_grids, _savez
        from brenier.datasets import load
        from brenier._io import atomic_write

        shown: dict = {}
        for p, r in zip(parts, rs):
            z = root / p / "samples_seed0.npz"
            if r["seeds"] and r["seeds"][0] == seeds[0] and z.is_file():
                with np.load(z, allow_pickle=False) as f:
                    shown.update({k: f[k] for k in f.files})
        key = {m: m.replace("-", "_") for m in models}   # the npz names of the models ("-" is not allowed)
        grid = {m: shown[key[m]] for m in models if key[m] in shown}
        if grid:
            real = load("mnist-test")[0][:100]
            files["samples"] = str(_image_grids(grid, real, out / "samples.png"))
            files["samples_npz"] = str(atomic_write(out / "samples_seed0.npz",
                                                    lambda tmp: _savez(tmp, {key[m]: v for m, v in grid.items()})))
    merged = {**first, "models": models, "seeds": seeds, "runs": runs, "summary": summary, "settings": settings,
              "table": markdown_table(summary, cols, order), "time_s": round(sum(r["time_s"] for r in rs), 1),
              "parts": {p: r["seeds"] for p, r in zip(parts, rs)}, "replaced": replaced,
              "files": {**files, "json": str(out / "compare.json"), "md": str(out / "compare.md")}}
    write_json(out / "compare.json", merged)
    render_markdown(out)
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("benchmarks/results/compare"))
    ap.add_argument("--run", default="", help="comma-separated data sets to run first")
    ap.add_argument("--models", default=None, help="comma-separated models for --run (default: all)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..SEEDS-1 for --run")
    ap.add_argument("--ddpm", default="", help="diffusion settings for --run, e.g. steps=20000,hidden=256,depth=4,lr=1e-3")
    ap.add_argument("--suffix", default="", help="--run writes ROOT/NAME+SUFFIX")
    ap.add_argument("--aeot", type=Path, default=None,
                    help="image sets: a run of `brenier fit --data NAME --out RUN` whose autoencoder, codes and OT map "
                         "every seed reuses (the full MNIST comparison: fit once, ~40 min, then compare)")
    ap.add_argument("--n-samples", type=int, default=2000, help="generated samples per model and seed")
    ap.add_argument("--seed-list", default=None, help="comma-separated seeds for --run (instead of 0..SEEDS-1)")
    ap.add_argument("--merge", default="", help="NAME=PART,PART,...: join the runs of ROOT/PART/compare.json (the same "
                    "data and models, different seeds: e.g. one process per seed) into ROOT/NAME")
    args = ap.parse_args()
    ddpm = {}
    for kv in filter(None, args.ddpm.split(",")):
        k, v = kv.split("=", 1)
        ddpm[k] = float(v) if any(c in v for c in ".e") else int(v)
    kw = {"models": args.models} if args.models else {}
    aeot = None
    if args.aeot is not None:
        from brenier.pipeline import AEOT

        aeot = AEOT.load(args.aeot)
    for name in filter(None, args.run.split(",")):
        seeds = [int(v) for v in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
        r = compare(name, out=args.root / (name + args.suffix), seeds=seeds, n_samples=args.n_samples,
                    params={"ddpm": ddpm, "ddim": ddpm} if ddpm else None, aeot=aeot, **kw)
        if r["kind"] == "images":  # the small JSON the README's numbers trace to (figures stay in ROOT/NAME)
            write_json(args.root.parent / f"compare_{name}{args.suffix}.json", {k: v for k, v in r.items() if k != "files"})
    if args.merge:
        name, parts = args.merge.split("=", 1)
        r = merge(args.root, name, parts.split(","))
        write_json(args.root.parent / f"compare_{name}.json", {k: v for k, v in r.items() if k != "files"})
    out = {}
    for f in sorted(args.root.glob("*/compare.json")):
        r = json.loads(f.read_text())
        cols = TOY_COLUMNS if r["kind"] == "toy" else IMAGE_COLUMNS
        order = [m for m in r["summary"] if m.startswith("real")] + r["models"]
        print(f"\n## {f.parent.name}: {r['data']}  ({len(r['seeds'])} seeds, {r['n_samples']} samples each, {r['time_s']} s)\n")
        print(markdown_table(r["summary"], cols, order))
        print("\n" + verdict(r))
        render_markdown(f.parent)  # with the current verdict line
        out[f.parent.name] = {"data": r["data"], "summary": r["summary"], "time_s": r["time_s"], "seeds": r["seeds"], "n_samples": r["n_samples"]}
    write_json(args.root / "summary.json", out)
    print(f"\nwrote {args.root / 'summary.json'}")


if __name__ == "__main__":
    main()
