#!/usr/bin/env bash
# The teacher against foundry-s16 and foundry-edge16 on PyTorch CUDA (eager and CUDA graphs) at 1024,
# 16384 and 262144 points, and the large-scene claim under a 6 GiB cap. Needs only PyTorch with CUDA and
# this package on the path; under 8 minutes on a recent GPU. Results: benchmarks/results/gpu/.
#   bash benchmarks/gpu_student_vs_teacher.sh
#   DRY_RUN=1 OUT=/tmp/gpu-dry bash benchmarks/gpu_student_vs_teacher.sh   # on the CPU, tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python benchmarks/gpu_student_vs_teacher.py --out "$OUT" ${DRY_RUN:+--dry-run}
