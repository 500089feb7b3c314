"""TensorRT engines without a GPU: the build path against TensorRT-RTX (parser + builder run on the CPU),
sidecar checks, trtexec lines and clear errors. Running an engine needs a GPU: those tests skip."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from _runtime_models import exported  # noqa: F401 (a fixture)
from foundry_edge.errors import FoundryError
from foundry_edge.runtimes.build import BuildConfig, onnx2engine, parse_shapes, trtexec_command
from foundry_edge.runtimes.sidecar import check_sidecar, sidecar_path

RTX = "tensorrt_rtx"


def _has(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _gpu_and_tensorrt():
    if not _has("tensorrt"):
        return False
    from foundry_edge.runtimes.cuda_host import open_cuda

    try:
        open_cuda().close()
    except FoundryError:
        return False
    return True


needs_rtx = pytest.mark.skipif(not _has(RTX), reason="TensorRT-RTX (pip package tensorrt-rtx) is not installed")
needs_gpu = pytest.mark.skipif(not _gpu_and_tensorrt(), reason="needs TensorRT and a CUDA GPU")


@pytest.fixture
def rtx(monkeypatch):
    monkeypatch.setenv("FOUNDRY_EDGE_TRT_MODULE", RTX)


@pytest.fixture
def onnx_copy(exported, tmp_path):
    """The small edge student and its manifest in a fresh folder (builds write beside it)."""
    src = exported("foundry-edge16")
    for suffix in (".onnx", ".manifest.json"):
        shutil.copy(src.with_name(src.stem + suffix), tmp_path / ("model" + suffix))
    return tmp_path / "model.onnx"


@pytest.mark.trt
@needs_rtx
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_writes_plan_sidecar_and_trtexec_line(rtx, onnx_copy, precision):
    plan = onnx_copy.with_name(f"model.{precision}.plan")
    result = onnx2engine(onnx_copy, plan, BuildConfig(precision=precision, workspace_mib=256), log=lambda _: None)
    assert plan.stat().st_size == result.plan_bytes > 0
    side = json.loads(sidecar_path(plan).read_text())
    assert side["precision"] == precision and side["strongly_typed"] is True
    assert side["device"]["tensorrt_module"] == RTX
    assert side["profiles"][0]["points"] == {"min": [1, 128, 3], "opt": [2, 128, 3], "max": [4, 128, 3]}
    from foundry_edge.fileio import sha256_file

    assert side["plan"]["sha256"] == sha256_file(plan) and side["onnx"]["sha256"] == sha256_file(onnx_copy)
    assert side["model"]["inputs"][0]["name"] == "points"
    line = result.trtexec.read_text()
    assert "--minShapes=points:1x128x3" in line and "--maxShapes=points:4x128x3" in line and "--stronglyTyped" in line
    assert "--memPoolSize=workspace:256" in line
    if precision == "fp16":  # strongly typed FP16 = an FP16 ONNX built beside the plan, with FP32 islands
        import onnx

        half = onnx.load(str(result.onnx_built))
        types = {i.name: i.data_type for i in half.graph.initializer}
        assert onnx.TensorProto.FLOAT16 in types.values() and side["build"]["fp32_nodes"] > 0
        cast_to = {o: a.i for n in half.graph.node if n.op_type == "Cast" for a in n.attribute for o in n.output}
        norm_inputs = [types.get(name, cast_to.get(name)) for n in half.graph.node
                       if n.op_type == "LayerNormalization" for name in n.input]
        assert norm_inputs and set(norm_inputs) == {onnx.TensorProto.FLOAT}  # LayerNorm computes in FP32


@pytest.mark.trt
@needs_rtx
@pytest.mark.filterwarnings("ignore:Use Deprecated in TensorRT-RTX")  # RTX: timing caches are no-ops
def test_build_with_explicit_shapes_and_a_timing_cache(rtx, onnx_copy):
    plan = onnx_copy.with_name("model.plan")
    config = BuildConfig(precision="fp32", min_shapes=parse_shapes("points:1x128x3"),
                         opt_shapes=parse_shapes("points:3x128x3"), max_shapes=parse_shapes("points:6x128x3"),
                         opt_level=1, timing_cache=onnx_copy.with_name("timing.cache"))
    result = onnx2engine(onnx_copy, plan, config, log=lambda _: None)
    assert result.sidecar_data["profiles"][0]["points"]["opt"] == [3, 128, 3]
    assert "--builderOptimizationLevel=1" in result.trtexec.read_text()
    assert onnx_copy.with_name("timing.cache").is_file()


@pytest.mark.trt
@needs_rtx
def test_bad_builds_fail_clearly_and_leave_no_plan(rtx, onnx_copy):
    plan = onnx_copy.with_name("model.plan")
    with pytest.raises(FoundryError, match="foundry-edge calibrate"):  # strongly typed INT8 needs a Q/DQ ONNX
        onnx2engine(onnx_copy, plan, BuildConfig(precision="int8"), log=lambda _: None)
    with pytest.raises(FoundryError, match="min <= opt <= max"):
        onnx2engine(onnx_copy, plan, BuildConfig(precision="fp32", min_shapes={"points": (4, 128, 3)},
                                                 max_shapes={"points": (2, 128, 3)}), log=lambda _: None)
    with pytest.raises(FoundryError, match="does not fit"):
        onnx2engine(onnx_copy, plan, BuildConfig(precision="fp32", max_shapes={"points": (4, 99, 3)}), log=lambda _: None)
    with pytest.raises(FoundryError, match="--allow-gpu-fallback needs --dla-core"):
        onnx2engine(onnx_copy, plan, BuildConfig(allow_gpu_fallback=True), log=lambda _: None)
    assert not plan.exists() and not sidecar_path(plan).exists()
    assert not list(onnx_copy.parent.glob(".*.tmp"))


@pytest.mark.trt
@needs_rtx
def test_onnx_without_manifest_builds_from_its_graph(rtx, onnx_copy):
    onnx_copy.with_name("model.manifest.json").unlink()
    with pytest.warns(UserWarning, match="no manifest"):
        result = onnx2engine(onnx_copy, onnx_copy.with_name("bare.plan"), BuildConfig(precision="fp32"), log=lambda _: None)
    assert result.sidecar_data["profiles"][0]["points"]["max"] == [8, 128, 3]


def test_missing_tensorrt_names_the_fix(monkeypatch, onnx_copy):
    monkeypatch.setenv("FOUNDRY_EDGE_TRT_MODULE", "tensorrt_that_does_not_exist")
    with pytest.raises(FoundryError, match="system-site-packages"):
        onnx2engine(onnx_copy, onnx_copy.with_name("m.plan"), BuildConfig(), log=lambda _: None)


def test_sidecar_mismatch_is_refused_with_a_rebuild_hint():
    built = {"device": {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "compute_capability": "8.7",
                        "gpu": "Orin"}}
    check_sidecar(built, {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "compute_capability": "8.7", "gpu": "Orin"})
    with pytest.raises(FoundryError, match="TensorRT 10.3.0, this device has 8.6.2.*rebuild"):
        check_sidecar(built, {"tensorrt_module": "tensorrt", "tensorrt": "8.6.2", "compute_capability": "8.7"})
    with pytest.raises(FoundryError, match="compute capability 8.7, this device has 9.0"):
        check_sidecar(built, {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "compute_capability": "9.0"})
    with pytest.warns(UserWarning, match="built on Orin"):
        check_sidecar(built, {"tensorrt_module": "tensorrt", "tensorrt": "10.3.0", "compute_capability": "8.7",
                              "gpu": "Orin NX"})


def test_trtexec_line_for_weakly_typed_int8_on_dla():
    config = BuildConfig(precision="int8", dla_core=0, allow_gpu_fallback=True, calib_cache="model.calib", verbose=True)
    shapes = {"points": ((1, 1024, 3), (1, 1024, 3), (8, 1024, 3))}
    line = trtexec_command("m.onnx", "m.plan", shapes, config, strongly_typed=False, fp32_layers=["ln1", "softmax2"])
    for flag in ("--fp16", "--int8", "--calib=model.calib", "--useDLACore=0", "--allowGPUFallback", "--verbose",
                 "--precisionConstraints=prefer", "--layerPrecisions=ln1:fp32,softmax2:fp32", "--optShapes=points:1x1024x3"):
        assert flag in line
    assert "--stronglyTyped" not in line


def test_parse_shapes_refuses_malformed_text():
    assert parse_shapes("neighbourhoods:1x64x32x3,centers:1x64x3") == {"neighbourhoods": (1, 64, 32, 3), "centers": (1, 64, 3)}
    with pytest.raises(FoundryError, match="NAME:DxDxD"):
        parse_shapes("points=1x2x3")


@pytest.mark.trt
@needs_rtx
def test_loading_a_plan_checks_version_before_the_gpu(rtx, onnx_copy):
    from foundry_edge.runtimes import open_runtime

    plan = onnx_copy.with_name("model.plan")
    onnx2engine(onnx_copy, plan, BuildConfig(precision="fp32"), log=lambda _: None)
    with pytest.raises(FoundryError, match="CUDA|cuda"):  # same TensorRT: passes the sidecar, then needs a GPU
        open_runtime(plan).load()
    side = json.loads(sidecar_path(plan).read_text())
    side["device"]["tensorrt"] = "8.5.2"
    sidecar_path(plan).write_text(json.dumps(side))
    with pytest.raises(FoundryError, match="rebuild it on this device"):
        open_runtime(plan).load()
    sidecar_path(plan).unlink()
    with pytest.warns(UserWarning, match="no sidecar"):
        rt = open_runtime(plan)
    assert rt.info is None


def test_cli_doctor_exits_zero_unless_strict(capsys):
    from foundry_edge.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "trt run" in out and "ort-cpu" in out
    code = main(["doctor", "--strict"])
    assert (code == 0) == capsys.readouterr().out.strip().endswith("PASSED")


@pytest.mark.trt
@needs_rtx
def test_cli_build_prints_and_saves_the_trtexec_line(onnx_copy, capsys):
    from foundry_edge.cli import main

    assert main(["build", str(onnx_copy), "--precision", "fp32", "--trt-module", RTX]) == 0
    out = capsys.readouterr().out
    assert "trtexec equivalent: trtexec --onnx=" in out
    assert onnx_copy.with_name("model.fp32.plan").is_file()
    assert main(["build", str(onnx_copy), "--precision", "fp16", "--calib", "synthetic", "--trt-module", RTX]) == 2
    assert "--calib/--calib-cache need --precision int8" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.trt
@needs_gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_engine_matches_onnx_runtime_on_a_gpu(exported, tmp_path, cuda_graph):
    from foundry_edge.runtimes import open_runtime
    from foundry_edge.runtimes.compare import compare_outputs

    onnx_path = exported("foundry-edge16")
    plan = tmp_path / "model.plan"
    onnx2engine(onnx_path, plan, BuildConfig(precision="fp32"), log=lambda _: None)
    points = np.random.default_rng(0).normal(size=(3, 128, 3)).astype(np.float32)
    with open_runtime(onnx_path) as ref, open_runtime(plan, cuda_graph=cuda_graph) as rt:
        for _ in range(2):  # the second call replays the captured graph
            checks = compare_outputs(ref.infer(points), rt.infer(points), "fp32")
        assert all(c.passed for c in checks), [c.to_dict() for c in checks]
        assert rt.memory()["device_total_bytes"] > 0


@pytest.mark.gpu
@pytest.mark.trt
@needs_gpu
def test_corrupt_plan_is_a_clear_error(tmp_path):
    from foundry_edge.runtimes import open_runtime

    plan = tmp_path / "broken.plan"
    plan.write_bytes(b"not a plan" * 100)
    with pytest.warns(UserWarning, match="no sidecar"), pytest.raises(FoundryError, match="could not deserialize"):
        open_runtime(plan).load()
