"""TensorRT engines without a GPU: the build path against TensorRT-RTX (parser + builder run on the CPU),
sidecar checks, trtexec lines and clear errors. Running an engine needs a GPU: those tests skip."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.conftest import RTX, export_tiny_edge, has_module, needs_rtx
from foundry_edge.errors import FoundryError
from foundry_edge.calibration.engine_inputs import EngineInputsFromOnnx
from foundry_edge.contracts.sidecar import sidecar_path
from foundry_edge.runtimes.build import BuildConfig, EngineInputs, onnx2engine, parse_shapes, trtexec_command



def _gpu_and_tensorrt():
    if not has_module("tensorrt"):
        return False
    from foundry_edge.runtimes.cuda_host import open_cuda

    try:
        open_cuda().close()
    except FoundryError:
        return False
    return True


needs_gpu = pytest.mark.skipif(not _gpu_and_tensorrt(), reason="needs TensorRT and a CUDA GPU")


@pytest.fixture
def rtx(monkeypatch):
    monkeypatch.setenv("FOUNDRY_EDGE_TRT_MODULE", RTX)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small edge student through export_model (128 points, dynamic batch and points), once per module."""
    return export_tiny_edge(tmp_path_factory.mktemp("onnx"))


@pytest.fixture
def onnx_copy(exported, tmp_path):
    """The exported model and its manifest in a fresh folder (builds write beside it)."""
    for suffix in (".onnx", ".manifest.json"):
        shutil.copy(exported.with_name(exported.stem + suffix), tmp_path / ("model" + suffix))
    return tmp_path / "model.onnx"


@pytest.mark.trt
@needs_rtx
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_writes_plan_sidecar_and_trtexec_line(rtx, onnx_copy, precision):
    plan = onnx_copy.with_name(f"model.{precision}.plan")
    result = onnx2engine(onnx_copy, plan, BuildConfig(precision=precision, workspace_mib=256), EngineInputsFromOnnx(),
                         log=lambda _: None)
    assert plan.stat().st_size == result.plan_bytes > 0
    side = json.loads(sidecar_path(plan).read_text())
    assert side["precision"] == precision and side["strongly_typed"] is True
    assert side["device"]["tensorrt_module"] == RTX
    # the manifest's profiles: batch 1/1/4, points from max(G, K) to 4 x the traced 128
    assert side["profiles"][0]["points"] == {"min": [1, 8, 3], "opt": [1, 128, 3], "max": [4, 512, 3]}
    from foundry_edge.fileio import sha256_file

    assert side["plan"]["sha256"] == sha256_file(plan) and side["onnx"]["sha256"] == sha256_file(onnx_copy)
    assert side["model"]["inputs"][0]["name"] == "points"
    line = result.trtexec.read_text()
    assert "--minShapes=points:1x8x3" in line and "--maxShapes=points:4x512x3" in line and "--stronglyTyped" in line
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
def test_build_parses_an_fp16_onnx_the_caller_converted(rtx, onnx_copy):
    """EngineInputs as a value: the builder parses the caller's ONNX and keeps the exported one's manifest."""
    from foundry_edge.calibration.fp16 import convert_to_fp16

    half = onnx_copy.with_name("half.onnx")
    convert_to_fp16(onnx_copy, half)
    plan = onnx_copy.with_name("model.plan")
    result = onnx2engine(onnx_copy, plan, BuildConfig(precision="fp16"), EngineInputs(onnx=half), log=lambda _: None)
    assert result.onnx_built == half and result.sidecar_data["onnx"]["built_from"] == "half.onnx"
    assert result.sidecar_data["profiles"][0]["points"]["max"] == [4, 512, 3]
    assert f"--onnx={half}" in result.trtexec.read_text()


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
        onnx2engine(onnx_copy, plan, BuildConfig(precision="fp32", max_shapes={"points": (4, 128, 2)}), log=lambda _: None)
    with pytest.raises(FoundryError, match="--allow-gpu-fallback needs --dla-core"):
        onnx2engine(onnx_copy, plan, BuildConfig(allow_gpu_fallback=True), log=lambda _: None)
    with pytest.raises(FoundryError, match="strongly typed and builds FP16 from an FP16 ONNX"):  # the caller converts
        onnx2engine(onnx_copy, plan, BuildConfig(precision="fp16"), log=lambda _: None)
    with pytest.raises(FoundryError, match="--calib/--calib-cache need --precision int8"):
        onnx2engine(onnx_copy, plan, BuildConfig(precision="fp32"), EngineInputsFromOnnx(calib=["synthetic"]),
                    log=lambda _: None)
    assert not plan.exists() and not sidecar_path(plan).exists()
    assert not list(onnx_copy.parent.glob(".*.tmp"))


@pytest.mark.trt
@needs_rtx
@pytest.mark.filterwarnings("ignore:model.onnx has no manifest")
def test_onnx_without_manifest_builds_from_its_graph(rtx, onnx_copy):
    onnx_copy.with_name("model.manifest.json").unlink()
    bare = onnx_copy.with_name("bare.plan")
    with pytest.raises(FoundryError, match="dynamic axis 'num_points' with no profile"):  # batch alone defaults
        onnx2engine(onnx_copy, bare, BuildConfig(precision="fp32"), log=lambda _: None)
    shapes = {"points": (1, 128, 3)}
    config = BuildConfig(precision="fp32", min_shapes=shapes, opt_shapes=shapes, max_shapes={"points": (8, 256, 3)})
    result = onnx2engine(onnx_copy, bare, config, log=lambda _: None)
    assert result.sidecar_data["profiles"][0]["points"]["max"] == [8, 256, 3]
    assert result.sidecar_data["model"]["grouping"] == "graph"


def test_missing_tensorrt_names_the_fix(monkeypatch, onnx_copy):
    monkeypatch.setenv("FOUNDRY_EDGE_TRT_MODULE", "tensorrt_that_does_not_exist")
    with pytest.raises(FoundryError, match="system-site-packages"):
        onnx2engine(onnx_copy, onnx_copy.with_name("m.plan"), BuildConfig(), log=lambda _: None)


def test_implicit_calibrator_gets_clouds_drawn_at_the_models_point_count(onnx_copy):
    """Calibration clouds are drawn at the manifest's num_points, not drawn at 1024 and resampled again, and reach
    the builder's calibrator as the feed the caller prepared."""
    from types import SimpleNamespace

    from foundry_edge.calibration.feeds import prepare, preprocessing_from
    from foundry_edge.data.loader import CloudLoader
    from foundry_edge.runtimes.build import BuildContext, attach_calibrator
    from foundry_edge.runtimes.model_info import read_model_info

    trt = SimpleNamespace(__version__="10.3.0", IInt8EntropyCalibrator2=type("Base", (), {}),
                          BuilderFlag=SimpleNamespace(FP16=1, INT8=2))  # TensorRT 10: has implicit calibrators
    info, builder_config = read_model_info(onnx_copy), SimpleNamespace()
    context = BuildContext(trt, False, onnx_copy, onnx_copy.with_name("model.plan"), info, "int8", (),
                           lambda path: path, lambda _: None)
    inputs = EngineInputsFromOnnx(calib=["synthetic"], calib_samples=4)(context)
    assert inputs.onnx is None and inputs.fp32_layers  # weakly typed: the FP32 ONNX itself, sensitive nodes named
    calibrator = attach_calibrator(trt, builder_config, BuildConfig(precision="int8"), inputs.calib_feed,
                                   has_qdq=False, log=lambda _: None)
    assert builder_config.int8_calibrator is calibrator
    pre = preprocessing_from(info.manifest)
    expected = prepare(CloudLoader(["synthetic"], pre.num_points, 4, split="calibration")(), pre, ["points"])
    assert [f["points"].shape for f in calibrator.feeds] == [(4, 128, 3)]
    np.testing.assert_array_equal(calibrator.feeds[0]["points"], expected[0]["points"])


def test_int8_without_qdq_needs_a_feed_or_a_cache():
    from types import SimpleNamespace

    from foundry_edge.runtimes.build import attach_calibrator

    trt = SimpleNamespace(__version__="10.3.0", IInt8EntropyCalibrator2=type("Base", (), {}))
    with pytest.raises(FoundryError, match="needs calibration data"):
        attach_calibrator(trt, SimpleNamespace(), BuildConfig(precision="int8"), None, has_qdq=False, log=print)
    assert attach_calibrator(trt, SimpleNamespace(), BuildConfig(precision="int8"), None, has_qdq=True,
                             log=print) is None  # a Q/DQ ONNX carries its own scales


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
    with pytest.raises(FoundryError, match="expected the sidecar model.plan.json beside model.plan"):
        open_runtime(plan)
    assert open_runtime(plan, sidecar_check=False).info is None  # --no-sidecar-check: the engine's own I/O


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

    onnx_path = exported
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
    with pytest.raises(FoundryError, match="could not deserialize"):
        open_runtime(plan, sidecar_check=False).load()


@pytest.mark.trt
@needs_rtx
def test_corrupt_onnx_fails_before_the_build(rtx, onnx_copy):
    onnx_copy.write_bytes(onnx_copy.read_bytes()[:2000])  # truncated, its manifest still beside it
    plan = onnx_copy.with_name("model.plan")
    with pytest.raises(FoundryError, match=r"model.onnx does not match model.manifest.json \(sha256"):
        onnx2engine(onnx_copy, plan, BuildConfig(), log=lambda _: None)
    manifest = onnx_copy.with_name("model.manifest.json").read_bytes()
    onnx_copy.with_name("model.manifest.json").unlink()
    with pytest.raises(FoundryError, match="could not parse it"), pytest.warns(UserWarning, match="no manifest"):
        onnx2engine(onnx_copy, plan, BuildConfig(), log=lambda _: None)
    onnx_copy.with_name("model.manifest.json").write_bytes(manifest)
    assert sorted(p.name for p in onnx_copy.parent.iterdir()) == ["model.manifest.json", "model.onnx"]
