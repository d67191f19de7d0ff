"""`brenier fit --data mnist` end to end, timed: autoencoder + OT onto all 60,000 codes + singular set,
then `brenier report` (samples, the judge, figures, report.html).

Runs the two commands as a user would (subprocesses), times each, and collects the numbers the
issue asks for: the fit's stage timings (from the saved run), the OT fit's TV and iterations, the
singular set's size, and the report's confident share and mode-mixture rate under the judge (an
MLP trained on real MNIST images).

    python benchmarks/fit_mnist.py --out runs/mnist --train-minutes 10
        # writes benchmarks/results/fit_mnist.json

Bar (issue 13): the whole of it within 45 minutes on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def timed(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/mnist")
    ap.add_argument("--train-minutes", type=float, default=10.0, help="--max-train-minutes of the autoencoder")
    ap.add_argument("--json", default=str(ROOT / "results" / "fit_mnist.json"))
    args = ap.parse_args()
    brenier = [sys.executable, "-m", "brenier"]
    fit_cmd = [*brenier, "fit", "--data", "mnist", "--out", args.out, "--max-train-minutes", str(args.train_minutes)]
    report_cmd = [*brenier, "report", args.out]
    fit_s = timed(fit_cmd)
    report_s = timed(report_cmd)
    run = Path(args.out)
    aeot = json.loads((run / "aeot.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    keep = ("confident_share", "mode_mixture", "min_class_share", "max_class_share", "n")
    out = {
        "meta": {"benchmark": "fit_mnist", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (this project's 2-core CPU)",
                 "commands": [" ".join(fit_cmd[2:]), " ".join(report_cmd[2:])], "date": time.strftime("%Y-%m-%d %H:%M")},
        "fit_wall_s": round(fit_s, 1),
        "report_wall_s": round(report_s, 1),
        "total_wall_s": round(fit_s + report_s, 1),
        "stages_s": aeot.get("timings"),
        "train_info": aeot.get("train_info"),
        "ot": metrics.get("ot"),
        "singular_set": metrics.get("singular_set"),
        "classifier": metrics.get("classifier"),
        "respect": {k: metrics.get("respect", {}).get(k) for k in keep},
        "ignore": {k: metrics.get("ignore", {}).get(k) for k in keep},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("fit_wall_s", "report_wall_s", "total_wall_s", "respect", "ignore")}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
