#!/usr/bin/env bash
# Time by stage for the teacher and both students, ONNX Runtime CPU at 1024 points, B1 and B8, with grouping
# in the graph (presets exported by `profile`) and on the host (`export --grouping host`), each measured with
# `profile --operators`. Results: benchmarks/results/stages/{graph,host}/report.{md,json}. About 6 minutes on
# 2 cores; run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for model in foundry-edge16 foundry-s16 pointjepa-vits; do
  foundry-edge export "$model" --grouping host --points 1024 -o "$work/$model-host" --trt-check off >/dev/null
done
common=(--runtime ort-cpu --points 1024 --batches 1,8 --duration 3 --operators)
foundry-edge profile --student foundry-edge16 --student foundry-s16 --teacher pointjepa-vits "${common[@]}" \
  -o "$work/graph"
foundry-edge profile --student "$work/foundry-edge16-host/model.onnx" --student "$work/foundry-s16-host/model.onnx" \
  --teacher "$work/pointjepa-vits-host/model.onnx" "${common[@]}" -o "$work/host"
for placement in graph host; do
  mkdir -p "benchmarks/results/stages/$placement"
  cp "$work/$placement/report.md" "$work/$placement/report.json" "benchmarks/results/stages/$placement/"
done
