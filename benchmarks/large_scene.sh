#!/usr/bin/env bash
# The README's large-scene figure through the CLI: the teacher and foundry-edge16 exported for 2^18-point
# scenes (scalable grouping on the host, 4096 groups of 32; each export checked, tie-aware at this size:
# export/grouping_parity.py), then profiled on ONNX Runtime CPU at 262144 points, batch 1, with the host
# grouping timed on its own beside it. Results: benchmarks/results/large_scene/. About 20 minutes on 2 cores
# (CHECK=--no-check skips the export checks: about 5); run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${OUT:-benchmarks/results/large_scene}
CHECK=${CHECK:---check}
DURATION=${DURATION:-30}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scene=(--set grouping=scalable --set num_groups=4096 --set num_points=262144 --points 262144 --grouping host)
for model in foundry-edge16 pointjepa-vits; do
  foundry-edge export "$model" "${scene[@]}" "$CHECK" --trt-check off -o "$work/$model" | tail -n 3
done
foundry-edge profile --student "$work/foundry-edge16/model.onnx" --teacher "$work/pointjepa-vits/model.onnx" \
  --runtime ort-cpu --points 262144 --batches 1 --threads 2 --warmup 1 --duration "$DURATION" -o "$work/profile"
mkdir -p "$OUT"
cp "$work/profile/report.md" "$work/profile/report.json" "$OUT/"
python - "$work/foundry-edge16/model.onnx" > "$OUT/host_grouping.txt" <<'PY'
"""Host grouping of one 2^18-point scene as the exported model's manifest says, median of 7, on its own."""
import statistics, sys, time
from foundry_edge.data.loader import CloudLoader
from foundry_edge.data.preprocess import feed_for
from foundry_edge.runtimes.model_info import read_model_info

pre = read_model_info(sys.argv[1]).preprocessing
clouds = CloudLoader(["example"], 262144, 1, seed=1)().points
feed_for(clouds, pre)
times = []
for _ in range(7):
    start = time.perf_counter()
    feed_for(clouds, pre)
    times.append(time.perf_counter() - start)
print(f"host grouping ({pre.algorithm}, {pre.num_groups} groups of {pre.group_size}) of one 262144-point scene: "
      f"median {statistics.median(times):.3f} s, min {min(times):.3f} s of 7")
PY
cat "$OUT/host_grouping.txt"
