#!/usr/bin/env bash
# The main job on the bundled default (synthetic-shape demo weights, see README "Bundled default"):
# export the Foundry student and its teacher to checked ONNX, verify ONNX Runtime against PyTorch,
# calibrate INT8 with its accuracy report, and profile student vs teacher on ONNX Runtime CPU.
# Everything lands in out/demo/ (override with OUT=...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-out/demo}
set -x
foundry-edge inspect default
foundry-edge export default --teacher default-teacher -o "$OUT"
foundry-edge verify "$OUT/model.onnx" --against default --samples 16
# --exclude Conv keeps the mini-PointNet's 1x1 convolutions in FP32: with them in INT8 the DSO assignment
# agreed 96.3 % with FP32 (target 97 %; README "INT8 and FP16").
foundry-edge calibrate "$OUT/model.onnx" --data synthetic --samples 128 -o "$OUT/model.int8.onnx" \
  --exclude Conv --report "$OUT/int8" --eval-samples 200
foundry-edge profile --student "$OUT/model.onnx" --teacher "$OUT/teacher.onnx" --runtime ort-cpu \
  --points 512 --batches 1,8 --duration 2 -o "$OUT/profile"
# What a student buys at full size: the paper's teacher against our edge student (latency does not depend
# on the weights, so the presets' random initialisation measures it faithfully).
foundry-edge profile --teacher pointjepa-vits --student foundry-edge16 --runtime ort-cpu \
  --points 1024 --batches 1,8 --duration 2 -o "$OUT/profile-full-size"
