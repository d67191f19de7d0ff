#!/usr/bin/env bash
# The GPU benchmarks of the scale and distributed issues, in one script for a lent CUDA machine.
#   bash benchmarks/gpu.sh            # writes benchmarks/results/*_gpu.json
# 1. the exact argmax/top-k search at N = 10^6, d = 64 (Gaussian targets), brute vs tiled vs pruned;
# 2. the Monte Carlo Newton fit at N = 10^6, d = 64 to TV 0.03 (goal: <= 10 min on one GPU),
#    checked with 10^8 fresh samples (noise floor 0.04 sqrt(N / 10^8) printed beside it);
# 3. the per-iteration communication of the distributed fit on every visible GPU (NCCL).
# Nothing here runs in CI; it needs torch with CUDA (make install pins the CPU wheel: on the GPU
# machine install the CUDA build of the same torch version first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
"$PY" benchmarks/argmax.py --device cuda --sizes 1000000 --dims 64 --data gaussian --samples 200000 --steps 1 \
    --no-keops --out benchmarks/results/argmax_gpu.json
"$PY" benchmarks/ot_solver.py --device cuda --sizes 1000000 --dims 64 --methods newton --tol 0.03 --solver-tol 0.025 \
    --max-time 900 --check-samples 1e8 --out benchmarks/results/ot_solver_gpu.json
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
"$PY" benchmarks/distributed.py --device cuda --n 1000000 --d 64 --iters 3 --procs 1 "$NGPU" \
    --out benchmarks/results/distributed_gpu.json
