"""The Jetson path (TensorRT build and run, doctor, host grouping) works without torch, onnxruntime or the model
package: JetPack has neither torch nor onnxruntime as a pip package (docs/platform-notes.md, "JetPack packages"), and the layering
keeps the model package off the plan path, lazy imports included.

Every command runs in a subprocess whose sitecustomize (on PYTHONPATH, so profile's workers get it too) puts
a finder in front of the import system that refuses the BLOCKED modules, and records at exit which modules the
process imported and which blocked imports it attempted, with the chain of our frames that asked. Running a plan
needs a GPU: there the sitecustomize also installs the fake TensorRT and cuda-python of fake_tensorrt.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HAS_RTX, RTX, export_tiny_edge, needs_rtx
from tests.runtimes import fake_tensorrt

BLOCKED = ("torch", "onnxruntime", "onnxscript", "foundry_edge.models", "foundry_edge.checkpoints",
           "foundry_edge.export", "foundry_edge.training")
REPO = Path(__file__).resolve().parents[2]
TRT_MODULE_ENV = "FOUNDRY_EDGE_TRT_MODULE"

SITECUSTOMIZE = textwrap.dedent('''
    """Loaded at start-up by every Python process of one Jetson path test."""
    import atexit, json, os, sys, traceback

    BLOCKED, REPO, LOGS, FAKES = {blocked!r}, {repo!r}, {logs!r}, {fakes!r}
    attempts = []


    def blocked(name):
        return any(name == b or name.startswith(b + ".") for b in BLOCKED)


    class Block:
        """Refuses the blocked modules, naming the frames of the repository that asked for them."""

        def find_spec(self, name, path=None, target=None):
            if not blocked(name):
                return None
            chain = [f"{{os.path.relpath(f.filename, REPO)}}:{{f.lineno}}" for f in reversed(traceback.extract_stack())
                     if f.filename.startswith(REPO + os.sep) and "site-packages" not in f.filename]
            attempts.append({{"module": name, "chain": chain}})
            raise ImportError(f"{{name}} is blocked (not on the Jetson path), imported from {{' <- '.join(chain)}}")


    sys.meta_path.insert(0, Block())
    if os.environ.get("{engine_env}"):
        import importlib.util

        spec = importlib.util.spec_from_file_location("fake_tensorrt", FAKES)
        fake = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fake)
        fake.install()


    @atexit.register
    def record():
        with open(os.path.join(LOGS, f"{{os.getpid()}}.json"), "w", encoding="utf-8") as fh:
            json.dump({{"argv": sys.argv, "modules": sorted(sys.modules), "blocked_attempts": attempts}}, fh)
''')


def _blocked(name: str) -> bool:
    return any(name == b or name.startswith(b + ".") for b in BLOCKED)




class Jetson:
    """Runs Python or `foundry-edge` as on a Jetson without torch: the BLOCKED modules refused, every process's
    imports recorded; with `engine` (a sidecar) the fake TensorRT and CUDA run any plan as that sidecar says."""

    def __init__(self, root: Path):
        self.site, self.logs = root / "site", root / "modules"
        self.site.mkdir(parents=True)
        self.logs.mkdir()
        (self.site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(
            blocked=BLOCKED, repo=str(REPO), logs=str(self.logs), fakes=str(Path(fake_tensorrt.__file__)),
            engine_env=fake_tensorrt.ENGINE_ENV), encoding="utf-8")

    def run(self, argv: list, cwd: Path = REPO, engine: Path | None = None, trt_module: str | None = None):
        env = {key: value for key, value in os.environ.items()
               if key not in (TRT_MODULE_ENV, fake_tensorrt.ENGINE_ENV, "PYTHONPATH")}
        env["PYTHONPATH"] = str(self.site)
        if engine is not None:
            env[fake_tensorrt.ENGINE_ENV] = str(engine)
        if trt_module is not None:
            env[TRT_MODULE_ENV] = trt_module
        return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)

    def cli(self, *args: str, **kwargs):
        return self.run(["-m", "foundry_edge", *args], **kwargs)

    def records(self) -> list:
        return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(self.logs.glob("*.json"))]

    def assert_clean(self, result, processes: int = 1, probes: bool = False) -> None:
        """Exit 0, no traceback, and no process imported a blocked module, or even tried to (an import that would
        succeed where the module is installed), unless `probes` allows looking for them."""
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "traceback" not in output.lower(), output
        records = self.records()
        assert len(records) >= processes, f"{len(records)} processes recorded their imports, expected {processes}"
        for record in records:
            imported = [name for name in record["modules"] if _blocked(name)]
            assert not imported, f"{record['argv']} imported {imported}"
            assert probes or not record["blocked_attempts"], \
                f"{record['argv']} tried to import: {record['blocked_attempts']}"


@pytest.fixture
def jetson(tmp_path):
    return Jetson(tmp_path / "jetson")


def test_engine_modules_and_cli_import_without_torch_or_onnxruntime(jetson):
    result = jetson.run(["-c", textwrap.dedent("""
        import foundry_edge.cli, foundry_edge.data.preprocess
        import foundry_edge.runtimes.trt, foundry_edge.runtimes.build, foundry_edge.contracts.sidecar
        import foundry_edge.runtimes.trt_compat, foundry_edge.runtimes.cuda_host
        import foundry_edge.runtimes.compare, foundry_edge.assignment_health  # verify's health figures
        print('imported')
    """)])
    jetson.assert_clean(result)
    assert "imported" in result.stdout


def test_doctor_runs_without_torch_or_onnxruntime_and_says_what_is_missing(jetson):
    result = jetson.cli("doctor")
    jetson.assert_clean(result, probes=True)  # doctor looks for torch and onnxruntime to say they are missing
    out = result.stdout.lower()
    assert "torch" in out and "onnxruntime" in out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny edge student exported (in this process, with torch) once per module: model.onnx + its manifest."""
    return export_tiny_edge(tmp_path_factory.mktemp("onnx"), check=False)


def _copy_onnx(onnx: Path, folder: Path) -> Path:
    for suffix in (".onnx", ".manifest.json"):
        shutil.copy(onnx.with_name(onnx.stem + suffix), folder / ("model" + suffix))
    return folder / "model.onnx"


@pytest.mark.trt
@needs_rtx
def test_build_writes_a_plan_and_sidecar_without_torch(jetson, exported, tmp_path):
    """`foundry-edge build model.onnx` with its defaults (FP16: the ONNX converted beside the plan)."""
    onnx = _copy_onnx(exported, tmp_path)
    result = jetson.cli("build", onnx.name, cwd=tmp_path, trt_module=RTX)
    jetson.assert_clean(result)
    plan = tmp_path / "model.fp16.plan"
    sidecar = json.loads((tmp_path / "model.fp16.plan.json").read_text())
    assert plan.stat().st_size == sidecar["plan"]["bytes"] > 0
    assert sidecar["device"]["tensorrt_module"] == RTX and sidecar["precision"] == "fp16"
    assert [spec["name"] for spec in sidecar["model"]["inputs"]] == ["points"]
    # The parsed file's node names by stage, for `profile` to split the engine's layer times on the device.
    import onnx as onnx_lib

    from foundry_edge.contracts.onnx_graph import grouping_nodes

    parsed = onnx_lib.load(str(tmp_path / sidecar["onnx"]["built_from"])).graph
    stages = sidecar["onnx"]["node_stages"]
    assert set(stages["grouping"]) == grouping_nodes(parsed) != set()
    assert set(stages["grouping"]) | set(stages["network"]) == {node.name for node in parsed.node}


@pytest.fixture(scope="module")
def fake_plan(exported, tmp_path_factory):
    """A plan built with TensorRT-RTX (in this process) whose sidecar says it was built on the fake device,
    so the fake TensorRT runs it with every sidecar check on."""
    if not HAS_RTX:
        pytest.skip("TensorRT-RTX (pip package tensorrt-rtx) is not installed")
    from foundry_edge.calibration.engine_inputs import EngineInputsFromOnnx
    from foundry_edge.contracts.sidecar import sidecar_path
    from foundry_edge.runtimes.build import BuildConfig, onnx2engine

    onnx = _copy_onnx(exported, tmp_path_factory.mktemp("plan"))
    plan = onnx.with_name("model.plan")
    onnx2engine(onnx, plan, BuildConfig(precision="fp32", trt_module=RTX), EngineInputsFromOnnx(), log=lambda _: None)
    sidecar = json.loads(sidecar_path(plan).read_text())
    sidecar["device"] = fake_tensorrt.device_section()
    sidecar_path(plan).write_text(json.dumps(sidecar), encoding="utf-8")
    return plan


@pytest.mark.trt
def test_run_on_a_plan_without_torch(jetson, fake_plan, tmp_path):
    """Three clouds in batches of two: the second call binds smaller shapes to the same buffers."""
    clouds = np.random.default_rng(0).normal(size=(3, 128, 3)).astype(np.float32)
    np.save(tmp_path / "clouds.npy", clouds)
    result = jetson.cli("run", str(fake_plan), "clouds.npy", "--batch", "2", cwd=tmp_path,
                        engine=fake_plan.with_name(fake_plan.name + ".json"))
    jetson.assert_clean(result)
    assert f"runtime trt on TensorRT {fake_tensorrt.VERSION} (cuda-python)" in result.stdout
    assert "assignment health" in result.stdout


@pytest.mark.trt
def test_verify_a_plan_against_itself_without_torch(jetson, fake_plan, tmp_path):
    result = jetson.cli("verify", str(fake_plan), "--against", str(fake_plan), "--samples", "4", cwd=tmp_path,
                        engine=fake_plan.with_name(fake_plan.name + ".json"))
    jetson.assert_clean(result)
    assert result.stdout.strip().endswith("PASSED")


@pytest.mark.trt
def test_profile_a_plan_without_torch(jetson, fake_plan, tmp_path):
    """The command and its workers (the matmul peak and the plan's latency) import none of the blocked modules."""
    out = tmp_path / "profile"
    result = jetson.cli("profile", "--student", str(fake_plan), "--runtime", "trt", "--points", "128",
                        "--batches", "2", "--warmup", "0", "--iterations", "3", "--telemetry-ms", "0", "-o", str(out),
                        cwd=tmp_path, engine=fake_plan.with_name(fake_plan.name + ".json"))
    jetson.assert_clean(result, processes=3)
    assert "PASSED: 1 of 1 measurements" in result.stdout
    report = json.loads((out / "report.json").read_text())
    row = report["measurements"][0]
    assert row["provider"] == f"TensorRT {fake_tensorrt.VERSION} (cuda-python)"
    # Time by stage: the engine's layers split by the node names the build recorded, copies timed apart.
    stages = row["stages_ms"]
    for stage, ms in fake_tensorrt.LAYER_MS.items():
        assert stages[stage] == pytest.approx(ms), stage
    assert all(stages[name] >= 0 for name in ("host_preprocessing", "copies_in", "copies_out", "engine_wall"))
    assert "Time by stage" in (out / "report.md").read_text()
