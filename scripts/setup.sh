#!/usr/bin/env bash
# Create .venv with the CPU extras (export, ONNX Runtime CPU, data formats, reports, tests).
# torch==2.13.0 is the CPU build on this project's machines; elsewhere install the torch you need first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# export/, runtimes/ and calibration/ install as foundry_edge.* (package-dir): setuptools then prints an
# informational "Editable installation" notice about same-named folders on every editable install; hide only that.
PYTHONWARNINGS="ignore:Editable installation" python -m pip install -q "torch==2.13.0" -e ".[torch,cpu,data,report,dev]"
# TensorRT-RTX: the TensorRT ONNX parser and builder without a GPU, for graph checks only (--no-deps:
# its meta-packages otherwise try to fetch from NVIDIA's index). Optional: its checks skip without it.
python -m pip install -q --no-deps tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings tensorrt-rtx-cu13 tensorrt-rtx \
  || echo "note: tensorrt-rtx not installed; TensorRT parser checks will be skipped"
