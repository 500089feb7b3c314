"""Runtimes without a GPU: ONNX Runtime against the PyTorch reference, the base contract, verify and run.

Models come from foundry_edge.export.export_model (what users run), each exported once per module.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from tests.conftest import tiny_overrides
from foundry_edge.errors import FoundryError
from foundry_edge.models.registry import PRESETS
from foundry_edge.checkpoints.resolve import open_model
from foundry_edge.runtimes import model_kind, open_runtime
from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.runtimes.base import Runtime, TensorSpec
from foundry_edge.runtimes.compare import compare_outputs
from foundry_edge.runtimes.model_info import ModelInfo

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

# One teacher, the edge student, the gate: every other preset exports the same blocks (slow on 2 cores).
FAST = ("pointjepa-vits", "foundry-edge16", "foundry-gate16")
ALL = os.environ.get("FOUNDRY_EDGE_SLOW") == "1"
PRESET_CASES = [p if p in FAST else pytest.param(p, marks=[pytest.mark.slow, pytest.mark.skipif(
    not ALL, reason="slow: set FOUNDRY_EDGE_SLOW=1 to export every preset")]) for p in PRESETS]
SMALL = dict(num_points=128, num_groups=8, depth=1)  # smaller than TINY: the dynamo export dominates test time


def small_overrides(preset: str) -> dict:
    out = dict(tiny_overrides(preset), **SMALL)
    if "num_supertokens" in out:
        out.update(num_supertokens=3, gate_budget=2)
    return out


def export_small(folder, preset: str, grouping: str = "graph", overrides: dict | None = None):
    """A small `preset` through export_model -> folder/model.onnx + manifest, and its weights as model.pt."""
    from foundry_edge.checkpoints.format import save_checkpoint
    from foundry_edge.export import ExportOptions, export_model
    from foundry_edge.checkpoints.resolve import load_model

    model, _ = load_model(preset, **small_overrides(preset), **(overrides or {}))  # seeded: not the test order's draw
    result = export_model(ExportOptions(model=model, output_dir=folder, grouping=grouping, max_batch=4,
                                        trt_check="off"))
    save_checkpoint(folder / "model.pt", model)
    return result.onnx_path


def clouds(batch, num_points, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(batch, num_points, 3)) * np.array([1.0, 0.6, 0.3])
    return pts.astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """preset -> ONNX path (graph grouping), exported once per module."""
    cache = {}

    def get(preset):
        if preset not in cache:
            cache[preset] = export_small(tmp_path_factory.mktemp(preset), preset)
        return cache[preset]

    return get


@pytest.mark.parametrize("preset", PRESET_CASES)
def test_ort_matches_torch_on_every_preset(exported, preset):
    onnx_path = exported(preset)
    with open_runtime(onnx_path) as ort_rt, open_model(onnx_path.with_name("model.pt")) as torch_rt:
        assert ort_rt.provider == "CPUExecutionProvider" and torch_rt.provider == "torch-cpu"
        for batch, extra in ((2, 0), (3, 40)):  # neither the trace batch nor its point count: dynamic axes hold
            points = clouds(batch, ort_rt.num_points + extra, seed=batch)
            expected, got = torch_rt.infer(points), ort_rt.infer(points)
            assert set(got) == set(expected)
            failed = [c for c in compare_outputs(expected, got, "fp32") if not c.passed]
            assert not failed, [c.to_dict() for c in failed]


def test_verify_api_judges_two_runtimes_on_one_loader(exported):
    """The verify command's loop as a call: an ONNX against its checkpoint, on clouds a loader gives twice."""
    from foundry_edge.data.loader import CloudLoader
    from foundry_edge.runtimes.compare import verify

    onnx_path = exported("foundry-edge16")
    with open_runtime(onnx_path) as ort_rt, open_model(onnx_path.with_name("model.pt")) as torch_rt:
        loader = CloudLoader(["synthetic"], ort_rt.num_points, 3, split="verify")
        report = verify(ort_rt, torch_rt, loader, batch=2)
        assert report.passed and report.precision == "fp32" and report.clouds == 3
        assert {c.name for c in report.checks} >= {"tokens", "assignment"}
        assert next(c for c in report.checks if c.name == "assignment").health is not None
        with pytest.raises(FoundryError, match="expected --precision"):
            verify(ort_rt, torch_rt, loader, precision="fp8")


def test_runtime_reports_specs_timing_and_memory(exported):
    with open_runtime(exported("foundry-edge16")) as rt:
        assert [s.name for s in rt.inputs] == ["points"]
        assert {"tokens", "centers", "assignment", "assignment_margin"} <= {s.name for s in rt.outputs}
        assert rt.num_supertokens == 3  # from the manifest's model config, and kept in a plan's sidecar:
        assert ModelInfo.from_dict(rt.info.to_dict()).num_supertokens == 3
        out = rt.infer(clouds(2, rt.num_points))
        assert out["assignment"].dtype == np.int64 and out["tokens"].shape[0] == 2
        assert len(rt.timings) == 1 and rt.last_inference_time > 0
        assert rt.memory()["host_rss_bytes"] > 0
    assert not rt.is_active


def test_feed_is_checked_before_running(exported):
    with open_runtime(exported("foundry-edge16")) as rt:
        n = rt.num_points
        with pytest.raises(FoundryError, match="inputs"):
            rt.infer_feed({"xyz": clouds(1, n)})
        with pytest.raises(FoundryError, match="float32"):
            rt.infer_feed({"points": clouds(1, n).astype(np.float64)})
        with pytest.raises(FoundryError, match="shaped"):
            rt.infer_feed({"points": np.zeros((1, n, 4), np.float32)})
        with pytest.raises(FoundryError, match="finite"):
            rt.infer(np.full((1, n, 3), np.nan, dtype=np.float32))
    with pytest.raises(FoundryError, match="not loaded"):
        rt.infer(clouds(1, n))


def test_onnx_without_manifest_reads_the_graph(exported, tmp_path):
    bare = tmp_path / "bare.onnx"
    shutil.copy(exported("foundry-edge16"), bare)
    with pytest.warns(UserWarning, match="no manifest"):
        rt = open_runtime(bare)
    assert rt.info.manifest is None and rt.info.profiles == {"batch": [1, 1, 8]}
    with rt:
        assert rt.num_points is None  # the export's point axis is dynamic: any count runs
        assert rt.infer(clouds(2, 100))["tokens"].shape[:2] == (2, small_overrides("foundry-edge16")["num_groups"])


class RecordingRuntime(Runtime):
    """A backend that returns its feed, to see what the base class hands a host-grouped graph."""

    def load_impl(self):
        g, k = self.preprocessing.num_groups, self.preprocessing.group_size
        self.inputs = [TensorSpec("neighbourhoods", "float32", ("batch", g, k, 3)),
                       TensorSpec("centers", "float32", ("batch", g, 3))]

    def infer_impl(self, feed):
        return feed


@pytest.mark.parametrize("normalize", ["centre-unit-sphere", "none"])
def test_host_grouping_matches_the_models_own_grouping(normalize):
    import torch

    from foundry_edge.models import create_model
    from foundry_edge.models.model import normalize_cloud

    model = create_model("foundry-edge16", **small_overrides("foundry-edge16"))
    c = model.config
    grouping = Preprocessing.from_manifest({"grouping": "host", "preprocessing": {
        "in_graph": False, "normalize": normalize, "num_groups": c.num_groups, "group_size": c.group_size,
        "num_points": c.num_points}})
    points = clouds(2, c.num_points, seed=3) + 5.0  # off-centre: only a normalising host moves it
    with RecordingRuntime(grouping) as rt:
        feed = rt.infer(points)
    torch_points = torch.from_numpy(points)
    neighbourhoods, centers = model.tokenizer.group(normalize_cloud(torch_points) if normalize != "none" else torch_points)
    np.testing.assert_allclose(feed["centers"], centers.numpy(), atol=1e-5)
    np.testing.assert_allclose(feed["neighbourhoods"], neighbourhoods.numpy(), atol=1e-5)


def test_scalable_host_grouped_export_runs_like_torch(tmp_path):
    """A large-scene model exported with --grouping host: the runtime groups as the manifest says (scalable)."""
    pytest.importorskip("fpsample")
    pytest.importorskip("scipy")
    onnx_path = export_small(tmp_path, "foundry-edge16", "host", {"grouping": "scalable", "knn_chunk": 4})
    with open_runtime(onnx_path) as ort_rt, open_model(onnx_path.with_name("model.pt")) as torch_rt:
        assert ort_rt.preprocessing.algorithm == "scalable"
        assert [s.name for s in ort_rt.inputs] == ["neighbourhoods", "centers"]
        points = clouds(2, 200, seed=5) + 3.0  # any size and off-centre: the host resamples nothing, normalises
        got, expected = ort_rt.infer(points), torch_rt.infer(points)
    failed = [c for c in compare_outputs({k: expected[k] for k in got}, got, "fp32") if not c.passed]
    assert not failed, [c.to_dict() for c in failed]


def test_open_runtime_picks_and_refuses_by_kind(exported):
    assert model_kind("m.onnx") == "onnx" and model_kind("m.engine") == "plan" and model_kind("foundry-s16") == "torch"
    with pytest.raises(FoundryError, match="build an engine"):
        open_runtime(exported("foundry-edge16"), runtime="trt")
    with pytest.raises(FoundryError, match="runs on trt"):
        open_runtime("model.plan", runtime="ort-cpu")
    with pytest.raises(FoundryError, match="expected a runtime"):
        open_runtime("model.onnx", runtime="tensorflow")


def test_ort_refuses_a_provider_it_does_not_have(exported):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(FoundryError, match="CUDAExecutionProvider"):
        open_runtime(exported("foundry-edge16"), runtime="ort-cuda").load()


def test_tolerances_judge_fp16_by_agreement_and_fp32_elementwise(rng):
    tokens = rng.normal(size=(4, 16, 8)).astype(np.float32)
    assignment = rng.integers(0, 4, size=(4, 16))
    ref = {"tokens": tokens, "assignment": assignment}
    noisy = {"tokens": tokens + 1e-2 * rng.normal(size=tokens.shape).astype(np.float32), "assignment": assignment}
    assert not all(c.passed for c in compare_outputs(ref, noisy, "fp32"))
    assert all(c.passed for c in compare_outputs(ref, noisy, "fp16"))
    flipped = dict(noisy, assignment=(assignment + (rng.random(assignment.shape) < 0.3)) % 4)
    checks = {c.name: c for c in compare_outputs(ref, flipped, "fp16")}
    assert not checks["assignment"].passed and checks["assignment"].agreement < 0.9
    assert not compare_outputs(ref, {"tokens": tokens}, "fp32")[1].passed  # a missing output fails


def test_cli_run_saves_outputs_and_verify_passes_and_fails(exported, tmp_path, capsys):
    from foundry_edge.cli import main

    onnx_path = exported("foundry-edge16")
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, clouds(1, 300)[0])  # any size: run resamples to the model's points
    out = tmp_path / "out.npz"
    assert main(["run", str(onnx_path), str(cloud), "-o", str(out)]) == 0
    saved = np.load(out)
    assert saved["tokens"].shape[0] == 1 and {"assignment", "assignment_margin"} <= set(saved.files)
    printed = capsys.readouterr().out
    assert "assignment health: SuperTokens used" in printed and "/3 (min" in printed  # s = 3, from the manifest

    assert main(["verify", str(onnx_path), "--against", str(onnx_path.with_name("model.pt")), "--samples", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith("PASSED")
    other = exported("pointjepa-vits")  # another model: the tokens cannot agree
    assert main(["verify", str(onnx_path), "--against", str(other), "--samples", "2"]) == 1
    assert capsys.readouterr().out.strip().endswith("FAILED")


def test_cli_refuses_options_that_do_not_apply(exported, capsys):
    from foundry_edge.cli import main

    assert main(["run", str(exported("foundry-edge16")), "x.npy", "--set", "depth=2"]) != 0
    assert "--set do not apply" in capsys.readouterr().err


def test_corrupt_onnx_or_edited_manifest_is_one_clear_error(exported, tmp_path):
    import json

    from foundry_edge.data.loader import CloudLoader

    good = exported("foundry-edge16")
    manifest = json.loads(good.with_name("model.manifest.json").read_text())
    broken = tmp_path / "model.onnx"
    broken.write_bytes(good.read_bytes()[:1000])  # a truncated copy, its manifest beside it
    (tmp_path / "model.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FoundryError, match=r"model.onnx does not match model.manifest.json \(sha256"):
        open_runtime(broken)
    manifest["preprocessing"]["num_points"] = "abc"
    (tmp_path / "model.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FoundryError, match=r"sizes \['num_points'\] must be positive integers"):
        open_runtime(broken)
    (tmp_path / "model.manifest.json").unlink()
    with pytest.raises(FoundryError, match="could not parse it"), pytest.warns(UserWarning, match="no manifest"):
        open_runtime(broken)
    with pytest.raises(FoundryError, match="dynamic point axis and no manifest"):
        CloudLoader(["cloud.npy"], None, 1)()  # an ONNX without manifest and with a dynamic point count
    with pytest.raises(FoundryError, match="at least 1 synthetic cloud"):
        CloudLoader([], 128, 0)()


def test_cli_bad_options_are_one_line_and_write_nothing(exported, tmp_path, capsys):
    from foundry_edge.cli import main

    cloud = tmp_path / "cloud.npy"
    np.save(cloud, clouds(1, 200)[0])
    model = str(exported("foundry-edge16"))
    assert main(["run", model, str(cloud), "--batch", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: expected a batch of at least 1")
    assert main(["run", model, str(cloud), "-o", str(cloud / "out.npz")]) == 2  # a folder under a file
    assert capsys.readouterr().err.startswith("error: expected a writable folder")
    assert main(["run", "foundry-edge16", str(cloud), "--device", "banana"]) == 2
    assert "expected a torch device" in capsys.readouterr().err
    sparse = tmp_path / "sparse.npy"
    np.save(sparse, clouds(1, 2)[0])  # fewer points than one group: resampling would only repeat them
    for argv in (["run", model, str(sparse)], ["verify", model, "--against", model, "--clouds", str(sparse)]):
        assert main(argv) == 2
        assert "sparse.npy: expected at least" in capsys.readouterr().err


NAMES = ["bowl", "chair", "lamp"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A small student with a 3-class head whose config names its classes: model.onnx + manifest, model.pt."""
    return export_small(tmp_path_factory.mktemp("classifier"), "foundry-edge16",
                        overrides={"num_classes": 3, "extra": {"class_names": NAMES}})


MAP = np.array([5e5, 5e6, 100.0])  # where float32 steps are 0.5 m


@pytest.mark.parametrize("which", ["model.onnx", "model.pt"])
def test_a_1m_object_at_map_coordinates_gives_the_centred_result(classifier, which):
    """ONNX Runtime and PyTorch: a float64 cloud at (5e5, 5e6, 100) is centred in float64 before the cast."""
    from foundry_edge.runtimes.compare import lowest_cosine

    local = clouds(3, 128, seed=11) * 0.5  # objects about 1 m across, around the origin
    with open_model(classifier.with_name(which)) as rt:
        assert rt.class_names == NAMES  # from the manifest / the checkpoint's config
        near, far = rt.infer(local), rt.infer(local.astype(np.float64) + MAP)
        with pytest.raises(FoundryError, match="centre_cloud"):  # cast first, the shape is already lost
            rt.infer((local.astype(np.float64) + MAP).astype(np.float32))
    assert np.array_equal(far["logits"].argmax(-1), near["logits"].argmax(-1))
    assert lowest_cosine(far["tokens"], near["tokens"]) >= 0.9999


def write_organised_pcd(path, rng):
    """A Kinect-style organised PCD: WIDTH 8 x HEIGHT 4 (ascii), image rows 1 and 3 without depth (NaN)."""
    pts = rng.normal(size=(32, 3)) * 0.3
    pts[8:16] = pts[24:32] = np.nan
    head = ("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 8\nHEIGHT 4\n"
            "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 32\nDATA ascii\n")
    path.write_text(head + "".join(f"{x} {y} {z}\n" for x, y, z in pts))


def test_cli_run_says_what_it_did_to_each_cloud_and_names_the_classes(classifier, tmp_path, capsys, rng):
    from foundry_edge.cli import main

    kinect, far, out = tmp_path / "kinect.pcd", tmp_path / "far.npy", tmp_path / "out.npz"
    write_organised_pcd(kinect, rng)
    far_points = clouds(1, 300, seed=4)[0].astype(np.float64) * 0.5 + MAP
    np.save(far, far_points)
    assert main(["run", str(classifier), str(kinect), str(far)]) == 2  # NaN rows are refused by default
    assert "kinect.pcd: expected finite coordinates, found 16 points with NaN/Inf" in capsys.readouterr().err

    assert main(["run", str(classifier), str(kinect), str(far), "--drop-invalid", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (f"{kinect}: 32 points read, 16 with NaN/Inf dropped, padded to 128 by repeating 112 randomly drawn "
            "points (every point kept once, seed 0)") in printed
    origin = (far_points.min(0) + far_points.max(0)) / 2
    assert (f"{far}: 300 points read, recentred on origin ({', '.join(f'{v:.10g}' for v in origin)}) in float64, "
            "subsampled to 128 by a random choice without repeats (seed 0)") in printed
    labels = [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith((f"{kinect}: ", f"{far}: "))
              and "(class " in line]
    assert len(labels) == 2 and all(label.split(" (class ")[0] in NAMES for label in labels), labels
    assert "origins (B, 3) float64" in printed and "centers are in the model's normalised frame" in printed
    saved = np.load(out)
    assert saved["origins"].dtype == np.float64 and saved["origins"].shape == (2, 3)
    assert not saved["origins"][0].any() and np.array_equal(saved["origins"][1], origin)

    assert main(["run", str(classifier.with_name("model.pt")), str(far)]) == 0  # PyTorch names them too
    printed = capsys.readouterr().out
    assert any(f"{far}: {name} (class" in printed for name in NAMES), printed
    assert main(["verify", str(classifier), "--against", str(classifier.with_name("model.pt")), "--clouds",
                 str(kinect), "--drop-invalid"]) == 0
    printed = capsys.readouterr().out
    assert "--drop-invalid: dropped 16 points with NaN/Inf from 1 cloud (first: " in printed
    assert printed.strip().endswith("PASSED")


def test_cli_run_names_the_bundled_defaults_classes_and_keeps_indices_without_names(tmp_path, capsys):
    import json

    from foundry_edge.cli import main
    from foundry_edge.cli.run import print_summary
    from foundry_edge.checkpoints.resolve import WEIGHTS_DIR

    classes = json.loads((WEIGHTS_DIR / "bundled.json").read_text())["data"]["classes"]
    cloud = tmp_path / "cloud.npy"
    np.save(cloud, clouds(1, 600, seed=2)[0])
    assert main(["run", "default", str(cloud)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"{cloud}: ") and "(class " in x)
    assert line.split(": ", 1)[1].split(" (class ")[0] in classes
    print_summary({"logits": np.array([[0.1, 0.9, 0.0]], np.float32)}, ["a.npy"], None, None)
    assert "a.npy: class 1" in capsys.readouterr().out


def test_calibrate_and_accuracy_drop_invalid_points_only_when_asked_and_say_how_many(classifier, tmp_path, capsys, rng):
    from foundry_edge.cli import main

    kinect = tmp_path / "kinect.pcd"
    write_organised_pcd(kinect, rng)
    note = "--drop-invalid: dropped 16 points with NaN/Inf from 1 cloud (first: "
    calibrate = ["calibrate", str(classifier), "--data", str(kinect), "--samples", "1", "--no-cache",
                 "-o", str(tmp_path / "model.int8.onnx")]
    accuracy = ["accuracy", str(classifier), "--data", str(kinect), "--samples", "1", "-o", str(tmp_path / "acc")]
    for argv in (calibrate, accuracy):
        assert main(argv) == 2
        assert "kinect.pcd: expected finite coordinates, found 16 points with NaN/Inf" in capsys.readouterr().err
        assert main([*argv, "--drop-invalid"]) == 0
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if "dropped 16 points" in line]
        assert len(lines) == 1 and lines[0].startswith(note), captured.err  # one line, not a warning per cloud
        assert captured.out.strip().endswith("PASSED")
