"""IR versions and opsets each --target writes, and the oldest ONNX Runtime and onnx pyproject admits
loading them (export/targets.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from foundry_edge.export.rewrites import stamp_ir_version  # noqa: E402
from foundry_edge.export.targets import TARGETS  # noqa: E402
from foundry_edge.export.validate import check_ir_version  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_each_targets_ir_version_is_the_lowest_that_holds_its_opset():
    """onnx's VERSION_TABLE says which IR an opset needs; a higher one shuts out older readers for nothing."""
    for target in TARGETS.values():
        for opset, ir_version in target.formats:
            assert ir_version == helper.find_min_ir_version_for([helper.make_opsetid("", opset)]), (target, opset)


def relu_model(opset: int, ir_version: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    node.metadata_props.add(key="pkg.torch.onnx.stack_trace", value="model.py:12")  # what the exporter leaves
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def test_stamping_drops_what_ir_10_added_and_the_check_holds_the_file_to_its_target():
    model = relu_model(18, 10)
    check = check_ir_version(model, "trt10")
    assert not check.passed and "IR version 10, expected 8 for opset 18 on trt10" in check.detail
    stamp_ir_version(model, 8)
    assert model.ir_version == 8 and not model.graph.node[0].metadata_props
    onnx.checker.check_model(model, full_check=True)
    assert check_ir_version(model, "trt10").passed
    assert not check_ir_version(relu_model(19, 8), "trt11").passed  # opset 19 needs IR 9
    assert "no IR version for trt8.6" in check_ir_version(relu_model(18, 8), "trt8.6").detail


# ---- the oldest ONNX Runtime and onnx pyproject admits, in a virtual environment of their own ----

def minimum(package: str) -> str:
    """The lowest version pyproject.toml admits for `package` ("onnxruntime>=1.16" -> "1.16")."""
    found = re.search(rf'"{re.escape(package)}>=([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    assert found, f"pyproject.toml has no {package}>= requirement"
    return found.group(1)


# (target, opset) -> the ONNX Runtime that must load it: pyproject's minimum, except opset 20, which
# ONNX Runtime reads from 1.17 ("Current official support for domain ai.onnx is till opset 19" in 1.16).
FILES = [("trt8.5", 17), ("trt8.6", 17), ("trt10", 18), ("trt10", 19), ("trt11", 20)]
OLD_RUNTIME = """
import json, sys
from pathlib import Path
import numpy as np, onnx, onnxruntime
from foundry_edge.errors import FoundryError
from foundry_edge.runtimes import open_runtime
from foundry_edge.runtimes.model_info import info_from_graph

folder = Path(sys.argv[1])
points = np.load(folder / "points.npy")
report = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "files": {}}
for path in sorted(folder.glob("*/model.onnx")):
    entry = report["files"][path.parent.name] = {}
    info_from_graph(path)  # what the runtimes read with onnx alone
    try:
        onnx.checker.check_model(str(path))
        entry["checker"] = "ok"
    except onnx.checker.ValidationError as exc:
        entry["checker"] = str(exc).splitlines()[0]
    try:
        with open_runtime(path) as rt:
            np.savez(folder / f"{path.parent.name}-{onnxruntime.__version__}.npz", **rt.infer(points))
        entry["loaded"] = True
    except FoundryError as exc:
        entry["loaded"], entry["error"] = False, str(exc)
print(json.dumps(report))
"""


def source_tree(folder: Path) -> Path:
    """foundry_edge as installed (export/, runtimes/, calibration/ inside it), as links into this checkout."""
    package = folder / "foundry_edge"
    package.mkdir(parents=True)
    for item in (REPO / "foundry_edge").iterdir():
        (package / item.name).symlink_to(item)
    for sub in ("export", "runtimes", "calibration"):
        (package / sub).symlink_to(REPO / sub)
    return folder


def old_environment(folder: Path, onnxruntime: str, onnx_version: str) -> Path:
    """A virtual environment with onnxruntime==X.* and onnx==Y.* (numpy 1.x, which their wheels were built for)."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy<2", f"onnxruntime=={onnxruntime}.*",
                    f"onnx=={onnx_version}.*"], check=True, timeout=600)
    return python


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FOUNDRY_EDGE_SLOW") != "1",
                    reason="slow: set FOUNDRY_EDGE_SLOW=1 to install the oldest onnxruntime/onnx and load every target")
def test_the_oldest_onnxruntime_and_onnx_pyproject_admits_load_every_targets_export(tmp_path):
    from conftest import tiny_overrides
    from foundry_edge.export import ExportOptions, export_model
    from foundry_edge.models import create_model
    from foundry_edge.runtimes import open_runtime
    from foundry_edge.runtimes.compare import compare_outputs

    overrides = dict(tiny_overrides("foundry-edge16"), num_points=128, num_groups=8, depth=1, num_supertokens=3,
                     gate_budget=2, num_classes=3)
    points = np.random.default_rng(0).normal(size=(2, 128, 3)).astype(np.float32)
    np.save(tmp_path / "points.npy", points)
    expected = {}
    for target, opset in FILES:
        name = f"{target}-opset{opset}"
        result = export_model(ExportOptions(model=create_model("foundry-edge16", **overrides),
                                            output_dir=tmp_path / name, target=target, opset=opset, trt_check="off"))
        assert result.manifest["onnx"]["ir_version"] == TARGETS[target].ir_version(opset)
        with open_runtime(result.onnx_path) as rt:
            expected[name] = rt.infer(points)
    pythonpath = {**os.environ, "PYTHONPATH": str(source_tree(tmp_path / "src"))}
    script = tmp_path / "old_runtime.py"
    script.write_text(OLD_RUNTIME)
    onnx_min = minimum("onnx")
    for ort_version, refused in ((minimum("onnxruntime"), {"trt11-opset20"}), ("1.17", set())):
        python = old_environment(tmp_path / f"venv-{ort_version}", ort_version, onnx_min)
        run = subprocess.run([str(python), str(script), str(tmp_path)], env=pythonpath, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads(run.stdout.strip().splitlines()[-1])
        assert report["onnxruntime"].startswith(ort_version + ".") and report["onnx"].startswith(onnx_min + ".")
        print(f"onnxruntime {report['onnxruntime']}, onnx {report['onnx']}: {json.dumps(report['files'])}")
        for name, entry in report["files"].items():
            opset = int(name.rsplit("opset", 1)[1])
            assert entry["checker"] == "ok" or opset == 20, (name, entry)  # onnx 1.14 knows opsets up to 19
            if name in refused:
                assert not entry["loaded"] and "opset 19" in entry["error"], (name, entry)
                continue
            assert entry["loaded"], (name, entry)
            with np.load(tmp_path / f"{name}-{report['onnxruntime']}.npz") as got:
                failed = [c for c in compare_outputs(expected[name], dict(got), "fp32") if not c.passed]
            assert not failed, (name, [c.to_dict() for c in failed])
