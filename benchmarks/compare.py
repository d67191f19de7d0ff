"""Collect `brenier compare` results into one table (Markdown) and one JSON.

    brenier compare --data ring8  --out benchmarks/results/compare/ring8      # each ≤ 10 min
    brenier compare --data grid25 --out benchmarks/results/compare/grid25
    brenier compare --data moons  --out benchmarks/results/compare/moons
    brenier compare --data digits --models ot,ot-ignore,ddpm,ddim,gmm,gaussian --n-samples 1000 \\
        --out benchmarks/results/compare/digits
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
from brenier.compare import IMAGE_COLUMNS, TOY_COLUMNS, compare, markdown_table, render_markdown, verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("benchmarks/results/compare"))
    ap.add_argument("--run", default="", help="comma-separated data sets to run first")
    ap.add_argument("--models", default=None, help="comma-separated models for --run (default: all)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..SEEDS-1 for --run")
    ap.add_argument("--ddpm", default="", help="diffusion settings for --run, e.g. steps=20000,hidden=256,depth=4,lr=1e-3")
    ap.add_argument("--suffix", default="", help="--run writes ROOT/NAME+SUFFIX")
    args = ap.parse_args()
    ddpm = {}
    for kv in filter(None, args.ddpm.split(",")):
        k, v = kv.split("=", 1)
        ddpm[k] = float(v) if any(c in v for c in ".e") else int(v)
    kw = {"models": args.models} if args.models else {}
    for name in filter(None, args.run.split(",")):
        compare(name, out=args.root / (name + args.suffix), seeds=list(range(args.seeds)),
                params={"ddpm": ddpm, "ddim": ddpm} if ddpm else None, **kw)
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
