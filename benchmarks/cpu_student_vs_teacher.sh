#!/usr/bin/env bash
# The README's "Performance" figures on the machine this runs on: the teacher against foundry-s16 and
# foundry-edge16 on ONNX Runtime CPU and PyTorch eager (to EAGER_MAX points), batch 1 and 8, with an ONNX Runtime profile by
# operator, one profile run per point count (each a complete report), then the targets checked.
#   bash benchmarks/cpu_student_vs_teacher.sh                 # about an hour on 2 cores
#   THREADS=4 POINTS="1024" DURATION=1 OUT=/tmp/prof bash benchmarks/cpu_student_vs_teacher.sh
# Needs `foundry-edge` on PATH with the [torch,cpu,report] extras (e.g. `. .venv/bin/activate`).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
POINTS=${POINTS:-1024 4096 16384}
BATCH=${BATCH:-1,8}
DURATION=${DURATION:-3}
OUT=${OUT:-runs/cpu_student_vs_teacher}
EAGER_MAX=${EAGER_MAX:-4096}  # PyTorch eager up to this N (its target is at 1024; slow beyond on 2 cores)
for N in $POINTS; do
  RUNTIMES=ort-cpu; [ "$N" -le "$EAGER_MAX" ] && RUNTIMES=ort-cpu,torch
  foundry-edge profile --teacher pointjepa-vits --student foundry-s16 --student foundry-edge16 \
    --runtime "$RUNTIMES" --points "$N" --batch "$BATCH" --threads "$THREADS" \
    --warmup 1 --duration "$DURATION" --timeout 900 --operators -o "$OUT/n$N" \
    || { rc=$?; [ "$rc" -eq 1 ] || exit "$rc"; echo "some measurements at $N points failed: see $OUT/n$N/report.md"; }
done
python benchmarks/check_targets.py "$OUT"/n*/report.json --out benchmarks/results
