"""Every command refuses bad input in one line, and leaves every file as it was.

Each case runs the CLI in-process (`foundry_edge.cli.main`) against one workspace of tiny artefacts made once
per module (an export, its INT8, a TensorRT-RTX plan, checkpoints, a fine-tune's resumable checkpoint) and
asserts: a non-zero exit, exactly one `error:` line on stderr (a usage error adds one `usage:` line), no
traceback, and the SHA-256 of every file of the workspace, hidden ones included, unchanged (nothing
overwritten, nothing half-written, no lock or staging folder left). Signals come from the
FOUNDRY_EDGE_SIGNAL_AT hook at named points of export, build, calibrate and accuracy, or from outside.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HAS_RTX, RTX, tiny_overrides

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from foundry_edge.cli import main  # noqa: E402

SMALL = dict(tiny_overrides("foundry-edge16"), num_points=128, num_groups=8, depth=1, num_supertokens=3,
             gate_budget=2, num_classes=4)
SETS = [arg for key, value in SMALL.items()
        for arg in ("--set", f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}")]


_HASHES: dict = {}  # (path, inode, size, mtime, ctime) -> SHA-256: a file is read again only once it changed


def snapshot(root: Path) -> dict:
    """Every file and folder under `root`, hidden ones too: path -> SHA-256 (None for a folder)."""
    out = {}
    for path in sorted(root.rglob("*")):
        digest = None
        if path.is_file():
            st = path.stat()
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if key not in _HASHES:
                _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            digest = _HASHES[key]
        out[str(path.relative_to(root))] = digest
    return out


# -- the workspace ---------------------------------------------------------------------------------------------

def _variant(root: Path, base: Path, name: str, edit_manifest=None, edit_onnx=None, manifest: bool = True) -> Path:
    """root/name/model.onnx (+ manifest): base's, with one thing changed."""
    import onnx

    folder = root / name
    folder.mkdir()
    model = onnx.load(str(base / "model.onnx"))
    if edit_onnx:
        edit_onnx(model)
    onnx.save(model, str(folder / "model.onnx"))
    if manifest:
        data = json.loads((base / "model.manifest.json").read_text())
        if edit_manifest:
            edit_manifest(data)
        (folder / "model.manifest.json").write_text(json.dumps(data))
    return folder / "model.onnx"


def _rebind(data: dict, onnx_path: Path) -> None:
    data["onnx"]["sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()


def _other_weights(model) -> None:
    """Another model of the same architecture: one weight changed."""
    from onnx import numpy_helper

    init = next(i for i in model.graph.initializer if i.data_type == 1 and len(i.dims) == 2)
    array = numpy_helper.to_array(init).copy()
    array.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(array, init.name))


def _drop_logits(model) -> None:
    keep = [o for o in model.graph.output if o.name != "logits"]
    del model.graph.output[:]
    model.graph.output.extend(keep)


def _checkpoints(folder: Path) -> None:
    import torch

    from foundry_edge.checkpoints.format import save_checkpoint
    from foundry_edge.models.registry import create_model

    folder.mkdir()
    save_checkpoint(folder / "tiny.pt", create_model("foundry-edge16", **SMALL))
    payload = torch.load(folder / "tiny.pt", weights_only=True)
    edits = {"nan": lambda p: p["state_dict"]["encoder.blocks.0.attn.qkv.weight"].fill_(float("nan")),
             "group-size-str": lambda p: p["config"].update(group_size="16"),
             "widths-zero": lambda p: p["config"].update(tokenizer_widths=[0, 0, 0]),
             "mlp-nan": lambda p: p["config"].update(mlp_ratio=float("nan"))}
    for name, edit in edits.items():
        changed = {**payload, "config": dict(payload["config"]),
                   "state_dict": {k: v.clone() for k, v in payload["state_dict"].items()}}
        edit(changed)
        torch.save(changed, folder / f"{name}.pt")
    (folder / "text.pt").write_text("not a checkpoint")


def _clouds(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    np.save(folder / "good.npy", rng.normal(size=(300, 3)).astype(np.float32))
    np.save(folder / "same.npy", np.full((300, 3), 0.25, np.float32))
    nan = rng.normal(size=(300, 3)).astype(np.float32)
    nan[5] = np.nan
    np.save(folder / "nan.npy", nan)
    np.save(folder / "all-nan.npy", np.full((300, 3), np.nan, np.float32))
    np.save(folder / "few.npy", rng.normal(size=(4, 3)).astype(np.float32))
    np.save(folder / "tiny.npy", (rng.normal(size=(300, 3)) * 1e-13).astype(np.float64))
    np.save(folder / "flat2d.npy", rng.normal(size=(300, 2)).astype(np.float32))
    (folder / "cloud.xyzw").write_text("1 2 3\n")


def _resumes(root: Path) -> None:
    """A two-step fine-tune's checkpoint, and copies whose training state cannot be resumed."""
    import torch

    assert main(["finetune", str(root / "ckpt" / "tiny.pt"), *FINETUNE, "--out", str(root / "ft")]) == 0
    payload = torch.load(root / "ft" / "checkpoint.pt", weights_only=True)
    for name, change in {"negative-step": {"step": -3}, "bad-rng": {"rng": torch.zeros(7, dtype=torch.uint8)},
                         "no-optimizer": {"optimizer": None}}.items():
        torch.save({**payload, "training": {**payload["training"], **change}}, root / "ckpt" / f"resume-{name}.pt")


FINETUNE = ["--samples", "8", "--test-samples", "4", "--steps", "2", "--batch-size", "4", "--warmup-steps", "0",
            "--checkpoint-every", "1", "--log-every", "1"]


@dataclass
class W:
    root: Path

    def __getattr__(self, name):  # w.base, w.ckpt, w.clouds... are folders of the workspace
        return self.root / name.replace("_", "-")


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    from foundry_edge.calibration.workflow import CalibrateConfig, calibrate
    from foundry_edge.export import ExportOptions, export_model

    root = tmp_path_factory.mktemp("bad-inputs")
    base = root / "base"
    export_model(ExportOptions(model="foundry-edge16", overrides=SMALL, output_dir=base, trt_check="off", max_batch=4,
                               check=False))
    calibrate(CalibrateConfig(model=base / "model.onnx", data=["synthetic"], samples=4), log=lambda _: None)
    if HAS_RTX:
        from foundry_edge.runtimes.build import BuildConfig, onnx2engine

        onnx2engine(base / "model.onnx", base / "model.fp32.plan", BuildConfig(precision="fp32", trt_module=RTX),
                    log=lambda _: None)
    _checkpoints(root / "ckpt")
    _clouds(root / "clouds")
    other = _variant(root, base, "other", edit_onnx=_other_weights)  # base's manifest beside another model
    fixed = _variant(root, base, "other-bound", edit_onnx=lambda m: (_other_weights(m), _drop_logits(m)),
                     edit_manifest=lambda d: d.update(outputs=[o for o in d["outputs"] if o["name"] != "logits"]))
    data = json.loads(fixed.with_name("model.manifest.json").read_text())
    _rebind(data, fixed)
    fixed.with_name("model.manifest.json").write_text(json.dumps(data))
    calibrate(CalibrateConfig(model=fixed, data=["synthetic"], samples=4), log=lambda _: None)
    loose = root / "loose"  # that INT8 without its manifest: only its graph tells it apart
    loose.mkdir()
    shutil.copy(fixed.with_name("model.int8.onnx"), loose / "other.int8.onnx")
    assert other.is_file()
    for name, edit in MANIFEST_EDITS.items():
        _variant(root, base, f"m-{name}", edit_manifest=edit)
    (root / "m-not-json" / "model.manifest.json").write_text("{not json")
    _variant(root, base, "no-manifest", manifest=False)
    (root / "corrupt").mkdir()
    (root / "corrupt" / "model.onnx").write_bytes(b"\x08\x07 not a protobuf" * 40)
    (root / "empty").mkdir()
    (root / "empty" / "model.onnx").write_bytes(b"")
    if HAS_RTX:
        _plans(root, base)
    _resumes(root)
    (root / "a-file").write_text("a file where a folder is expected")
    (root / "rep").mkdir()  # a checkpoint under the name evaluate writes its report as
    shutil.copy(root / "ckpt" / "tiny.pt", root / "rep" / "report.json")
    (root / "cwd").mkdir()  # commands with default outputs run here
    return W(root)


MANIFEST_EDITS = {
    "points-lie": lambda d: d["preprocessing"].update(num_points=256),
    "groups-lie": lambda d: d["preprocessing"].update(num_groups=4),
    "profiles-list": lambda d: d.update(profiles=[1, 2]),
    "profiles-order": lambda d: d["profiles"].update(batch=[4, 1, 1]),
    "profiles-axis": lambda d: d["profiles"].update(nosuch=[1, 1, 1]),
    "input-renamed": lambda d: d["inputs"][0].update(name="cloud"),
    "input-dims": lambda d: d["inputs"][0].update(shape=["batch", 128, 3]),
    "output-dtype": lambda d: d["outputs"][0].update(dtype="float16"),
    "precision-lie": lambda d: d["onnx"].update(precision="fp16"),
    "sha-not-hex": lambda d: d["onnx"].update(sha256="xyz"),
    "schema-2": lambda d: d.update(schema_version=2),
    "no-inputs": lambda d: d.pop("inputs"),
    "grouping-lie": lambda d: d.update(grouping="host"),
    "size-str": lambda d: d["preprocessing"].update(group_size="8"),
    "not-json": lambda d: None,
}


def _plans(root: Path, base: Path) -> None:
    """Plans beside sidecars that do not fit them."""
    plan = base / "model.fp32.plan"
    side = json.loads((base / "model.fp32.plan.json").read_text())
    edits = {"no-sidecar": None,
             "no-gpu-field": lambda d: d["device"].pop("gpu"),
             "other-trt": lambda d: d["device"].update(tensorrt="8.5.2.2"),
             "other-module": lambda d: d["device"].update(tensorrt_module="tensorrt"),
             "other-schema": lambda d: d.update(schema="foundry-edge/manifest"),
             "no-model": lambda d: d.pop("model"),
             "sha": lambda d: d["plan"].update(sha256="0" * 64)}
    for name, edit in edits.items():
        folder = root / f"p-{name}"
        folder.mkdir()
        shutil.copy(plan, folder / "model.plan")
        if edit is not None:
            data = json.loads(json.dumps(side))
            edit(data)
            (folder / "model.plan.json").write_text(json.dumps(data))


# -- the cases -------------------------------------------------------------------------------------------------

@dataclass
class Case:
    argv: list
    match: str  # regex the error line must match
    code: int = 2
    env: dict = field(default_factory=dict)
    rtx: bool = False  # needs TensorRT-RTX


def usage(*argv, match=".") -> Case:
    return Case(list(argv), match)


CASES = {
    # usage errors: one line and the usage
    "usage-run-no-args": lambda w: usage("run", match="Missing argument"),
    "usage-run-unknown-option": lambda w: usage("run", w.base / "model.onnx", w.clouds / "good.npy", "--bogus",
                                                 match="No such option: --bogus"),
    "usage-export-batch-not-int": lambda w: usage("export", "default", "--trace-batch", "two", match="--trace-batch"),
    "usage-verify-no-against": lambda w: usage("verify", w.base / "model.onnx", match="--against"),
    "usage-build-no-onnx": lambda w: usage("build", match="Missing argument"),
    "usage-calibrate-no-data": lambda w: usage("calibrate", w.base / "model.onnx", match="--data"),
    "usage-unknown-command": lambda w: usage("quantise", match="No such command"),
    "usage-inspect-points-not-int": lambda w: usage("inspect", "default", "--points", "many", match="--points"),
    "usage-finetune-no-model": lambda w: usage("finetune", "--out", w.cwd / "ft", match="Missing argument"),
    "usage-evaluate-no-out": lambda w: usage("evaluate", "default", match="--out"),
    "usage-convert-no-src": lambda w: usage("convert", match="Missing argument"),
    "usage-accuracy-samples-float": lambda w: usage("accuracy", w.base / "model.onnx", "--samples", "2.5",
                                                     match="--samples"),
    "usage-profile-threads": lambda w: usage("profile", "--threads", "all", match="--threads"),
    "usage-doctor-option": lambda w: usage("doctor", "--bogus", match="--bogus"),
    "usage-distill-steps": lambda w: usage("distill", "--steps", "x", "--out", w.cwd / "d", match="--steps"),
    "usage-run-seed-float": lambda w: usage("run", "default", w.clouds / "good.npy", "--seed", "0.5", match="--seed"),
    # export: options checked before any tracing, nothing written
    "export-teacher-set-without-teacher": lambda w: Case(["export", "foundry-edge16", *SETS, "--teacher-set", "depth=1",
                                                          "-o", w.base], "--teacher-set.*no --teacher"),
    "export-set-widths-zero": lambda w: Case(["export", "foundry-edge16", "--set", "tokenizer_widths=0,0,0", "-o",
                                              w.cwd / "o"], "tokenizer_widths needs 3 positive"),
    "export-set-mlp-nan": lambda w: Case(["export", "foundry-edge16", "--set", "mlp_ratio=nan", "-o", w.cwd / "o"],
                                         "mlp_ratio must be a finite number"),
    "export-set-not-int": lambda w: Case(["export", "foundry-edge16", "--set", "depth=deep"], "cannot read 'deep' as int"),
    "export-set-unknown-field": lambda w: Case(["export", "foundry-edge16", "--set", "width=3"], "FIELD=VALUE"),
    "export-set-heads-zero": lambda w: Case(["export", "foundry-edge16", "--set", "num_heads=0"],
                                            "num_heads must be positive"),
    "export-points-over-memory": lambda w: Case(["export", "foundry-edge16", *SETS, "--points", "500000000", "-o",
                                                 w.base], "needs about .* GiB, over the .* budget.*fewer --points"),
    "export-points-zero": lambda w: Case(["export", "foundry-edge16", *SETS, "--points", "0"], "--points must be >= 1"),
    "export-unknown-target": lambda w: Case(["export", "foundry-edge16", "--target", "trt7"], "trt7"),
    "export-opset-too-high": lambda w: Case(["export", "foundry-edge16", "--opset", "99"], "opset"),
    "export-unknown-grouping": lambda w: Case(["export", "foundry-edge16", "--grouping", "voxel"], "grouping 'voxel'"),
    "export-trt-check-maybe": lambda w: Case(["export", "foundry-edge16", "--trt-check", "maybe"], "trt check 'maybe'"),
    "export-static-and-dynamic": lambda w: Case(["export", "foundry-edge16", "--static", "--dynamic-batch"],
                                                "--static contradicts --dynamic-batch"),
    "export-dynamic-batch-of-one": lambda w: Case(["export", "foundry-edge16", "--trace-batch", "1"], "batch >= 2"),
    "export-max-batch-below-batch": lambda w: Case(["export", "foundry-edge16", "--max-batch", "1"],
                                                   "max batch 1 is below"),
    "export-unknown-output": lambda w: Case(["export", "foundry-edge16", *SETS, "--outputs", "tokens,halo", "-o",
                                             w.cwd / "o"], r"output\(s\) \['halo'\] not available"),
    "export-host-dynamic-points": lambda w: Case(["export", "foundry-edge16", "--grouping", "host", "--dynamic-points"],
                                                 "--grouping host"),
    "export-max-points-zero": lambda w: Case(["export", "foundry-edge16", "--max-points", "0"], "--max-points must be"),
    "export-into-a-file": lambda w: Case(["export", "foundry-edge16", *SETS, "-o", w.a_file], "a file, not a folder"),
    "export-ckpt-config-str": lambda w: Case(["export", w.ckpt / "group-size-str.pt", "-o", w.cwd / "o"],
                                             "group-size-str.pt: invalid model configuration: group_size must be an integer"),
    "export-ckpt-nan": lambda w: Case(["export", w.ckpt / "nan.pt", "-o", w.cwd / "o"],
                                      "non-finite weights: 'encoder.blocks.0.attn.qkv.weight'"),
    "export-ckpt-widths-zero": lambda w: Case(["export", w.ckpt / "widths-zero.pt"], "tokenizer_widths needs 3 positive"),
    "export-ckpt-with-set": lambda w: Case(["export", w.ckpt / "tiny.pt", "--set", "depth=2"], "presets only"),
    "export-missing-ckpt": lambda w: Case(["export", w.ckpt / "nosuch.pt"], "neither a preset"),
    "export-not-a-checkpoint": lambda w: Case(["export", w.ckpt / "text.pt"], "not a PyTorch file"),
    "export-teacher-is-student": lambda w: Case(["export", "foundry-edge16", *SETS, "--teacher", "foundry-edge16"],
                                                "is a student, expected a teacher"),
    "export-model-is-teacher": lambda w: Case(["export", "pointjepa-vits", "--teacher", "pointjepa-vits", "--set",
                                               "depth=1", "--teacher-set", "depth=1"], "is itself a teacher"),
    # run: inputs never overwritten, manifests bound to their ONNX, clouds with a shape
    "run-output-is-the-cloud": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "-o",
                                               w.clouds / "good.npy"], "is the input .*good.npy"),
    "run-output-is-the-model": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "-o",
                                               w.base / "model.onnx"], "is the input .*model.onnx"),
    "run-output-is-the-manifest": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "-o",
                                                  w.base / "model.manifest.json"], "is the input .*model.manifest.json"),
    "run-output-is-a-folder": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "-o", w.base],
                                             "expected -o to name a file, found the folder"),
    "run-identical-points": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "same.npy"],
                                           "all 300 points identical"),
    "run-extent-too-small": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "tiny.npy"], "extent between"),
    "run-nan-points": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "nan.npy"], "NaN/Inf"),
    "run-all-nan-dropped": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "all-nan.npy", "--drop-invalid"],
                                          "NaN/Inf in all 300 points"),
    "run-fewer-points-than-a-group": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "few.npy"],
                                                    "at least 8 points, found 4"),
    "run-two-columns": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "flat2d.npy"], "three column"),
    "run-missing-cloud": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "nosuch.npy"], "found nothing"),
    "run-unknown-cloud-suffix": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "cloud.xyzw"],
                                               "unknown point-cloud suffix"),
    "run-onnx-of-another-model": lambda w: Case(["run", w.other / "model.onnx", w.clouds / "good.npy"],
                                                r"model.onnx does not match model.manifest.json \(sha256 .*re-export"),
    "run-corrupt-onnx": lambda w: Case(["run", w.corrupt / "model.onnx", w.clouds / "good.npy"], "could not parse"),
    "run-empty-onnx": lambda w: Case(["run", w.empty / "model.onnx", w.clouds / "good.npy"], "model"),
    "run-missing-onnx": lambda w: Case(["run", w.base / "nosuch.onnx", w.clouds / "good.npy"], "found nothing"),
    "run-ckpt-nan": lambda w: Case(["run", w.ckpt / "nan.pt", w.clouds / "good.npy"], "non-finite weights"),
    "run-ckpt-config-str": lambda w: Case(["run", w.ckpt / "group-size-str.pt", w.clouds / "good.npy"],
                                          "group_size must be an integer"),
    "run-ckpt-mlp-nan": lambda w: Case(["run", w.ckpt / "mlp-nan.pt", w.clouds / "good.npy"], "mlp_ratio"),
    "run-preset-mlp-nan": lambda w: Case(["run", "foundry-edge16", w.clouds / "good.npy", "--set", "mlp_ratio=nan"],
                                         "mlp_ratio must be a finite number"),
    "run-preset-widths-zero": lambda w: Case(["run", "foundry-edge16", w.clouds / "good.npy", "--set",
                                              "tokenizer_widths=0,0,0"], "tokenizer_widths"),
    "run-trt-runtime-on-onnx": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "--runtime", "trt"],
                                              "build an engine"),
    "run-unknown-runtime": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "--runtime", "tpu"],
                                          "expected a runtime in"),
    "run-set-on-onnx": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "--set", "depth=1"],
                                      "--set do not apply to the ort-cpu runtime"),
    "run-seed-on-onnx": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "--seed", "3"],
                                       "--seed do not apply"),
    "run-device-on-onnx": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "--device", "cuda"],
                                         "--device do not apply"),
    "run-cuda-graph-on-onnx": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "--cuda-graph"],
                                             "--cuda-graph do not apply"),
    "run-no-sidecar-check-on-onnx": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy",
                                                    "--no-sidecar-check"], "--no-sidecar-check do not apply"),
    "run-batch-zero": lambda w: Case(["run", w.base / "model.onnx", w.clouds / "good.npy", "--batch", "0"],
                                     "batch of at least 1"),
    "run-unknown-preset": lambda w: Case(["run", "foundry-xl", w.clouds / "good.npy"], "neither a preset"),
    "run-bad-torch-device": lambda w: Case(["run", "foundry-edge16", w.clouds / "good.npy", *SETS, "--device", "gpu7"],
                                           "torch device"),
    # run: TensorRT plans bound to complete sidecars (refused before any GPU is needed)
    "plan-without-sidecar": lambda w: Case(["run", w.p_no_sidecar / "model.plan", w.clouds / "good.npy"],
                                           "expected the sidecar model.plan.json.*--no-sidecar-check", rtx=True),
    "plan-sidecar-missing-field": lambda w: Case(["run", w.p_no_gpu_field / "model.plan", w.clouds / "good.npy"],
                                                 "complete sidecar.*without device.gpu", rtx=True),
    "plan-sidecar-without-model": lambda w: Case(["run", w.p_no_model / "model.plan", w.clouds / "good.npy"],
                                                 "without model", rtx=True),
    "plan-sidecar-of-another-plan": lambda w: Case(["run", w.p_sha / "model.plan", w.clouds / "good.npy"],
                                                   r"model.plan does not match model.plan.json \(sha256", rtx=True),
    "plan-from-another-tensorrt": lambda w: Case(["run", w.p_other_trt / "model.plan", w.clouds / "good.npy"],
                                                 "built for TensorRT 8.5.2.2", rtx=True),
    "plan-from-another-trt-package": lambda w: Case(["run", w.p_other_module / "model.plan", w.clouds / "good.npy"],
                                                    "built for TensorRT package tensorrt", rtx=True),
    "plan-sidecar-other-schema": lambda w: Case(["run", w.p_other_schema / "model.plan", w.clouds / "good.npy"],
                                                "found schema 'foundry-edge/manifest'", rtx=True),
    "plan-output-is-the-sidecar": lambda w: Case(["run", w.base / "model.fp32.plan", w.clouds / "good.npy", "-o",
                                                  w.base / "model.fp32.plan.json"], "is the input", rtx=True),
    "plan-verify-without-sidecar": lambda w: Case(["verify", w.p_no_sidecar / "model.plan", "--against",
                                                   w.base / "model.onnx"], "expected the sidecar", rtx=True),
    # verify
    "verify-onnx-of-another-model": lambda w: Case(["verify", w.other / "model.onnx", "--against", "foundry-edge16",
                                                    *SETS], "does not match model.manifest.json"),
    "verify-reference-of-another-model": lambda w: Case(["verify", w.base / "model.onnx", "--against",
                                                         w.other / "model.onnx"], "does not match"),
    "verify-precision-fp8": lambda w: Case(["verify", w.base / "model.onnx", "--against", w.base / "model.onnx",
                                            "--precision", "fp8"], "--precision in"),
    "verify-set-without-preset": lambda w: Case(["verify", w.base / "model.onnx", "--against", w.base / "model.onnx",
                                                 "--set", "depth=1"], "neither side is one"),
    "verify-seed-without-preset": lambda w: Case(["verify", w.base / "model.onnx", "--against",
                                                  w.base / "model.int8.onnx", "--seed", "4"], "--seed draws"),
    "verify-no-sidecar-check-without-plan": lambda w: Case(["verify", w.base / "model.onnx", "--against", "default",
                                                            "--no-sidecar-check"], "applies to TensorRT plans"),
    "verify-samples-zero": lambda w: Case(["verify", w.base / "model.onnx", "--against", w.base / "model.onnx",
                                           "--samples", "0"], "at least 1 synthetic cloud"),
    "verify-identical-cloud": lambda w: Case(["verify", w.base / "model.onnx", "--against", w.base / "model.onnx",
                                              "--clouds", w.clouds / "same.npy"], "identical"),
    "verify-against-nan-ckpt": lambda w: Case(["verify", w.base / "model.onnx", "--against", w.ckpt / "nan.pt"],
                                              "non-finite"),
    "verify-preset-with-another-seed": lambda w: Case(["verify", w.base / "model.onnx", "--against", "foundry-edge16",
                                                       *SETS, "--seed", "2"], "exported from the preset foundry-edge16 "
                                                      "with --seed 0.*pass --seed 0"),
    "verify-against-unknown-preset": lambda w: Case(["verify", w.base / "model.onnx", "--against", "foundry-huge"],
                                                    "neither a preset"),
    # calibrate
    "calibrate-already-int8": lambda w: Case(["calibrate", w.base / "model.int8.onnx", "--data", "synthetic"],
                                             "already INT8"),
    "calibrate-output-is-the-model": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic", "-o",
                                                     w.base / "model.onnx"], "is the input"),
    "calibrate-output-manifest-is-the-models": lambda w: Case(["calibrate", w.base / "model.onnx", "--data",
                                                               "synthetic", "-o", w.base / "model.json"],
                                                              "the INT8 manifest .* is the input"),
    "calibrate-output-is-a-folder": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic", "-o",
                                                    w.cwd], "found the folder"),
    "calibrate-output-is-a-cloud": lambda w: Case(["calibrate", w.base / "model.onnx", "--data",
                                                   w.clouds / "good.npy", "-o", w.clouds / "good.npy"], "is the input"),
    "calibrate-cache-is-the-model": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic",
                                                    "--cache", w.base / "model.onnx", "-o", w.cwd / "q.onnx"],
                                                   "--cache .* is the input"),
    "calibrate-report-is-a-file": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic",
                                                  "--report", w.a_file, "-o", w.cwd / "q.onnx"],
                                                 "--report to name a folder"),
    "calibrate-onnx-of-another-model": lambda w: Case(["calibrate", w.other / "model.onnx", "--data", "synthetic"],
                                                      "does not match"),
    "calibrate-lying-manifest": lambda w: Case(["calibrate", w.m_points_lie / "model.onnx", "--data", "synthetic"],
                                               "num_points 256 but the graph was exported with 128"),
    "calibrate-unknown-method": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic",
                                                "--method", "kl", "-o", w.cwd / "q.onnx"], "--method"),
    "calibrate-unknown-backend": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic",
                                                 "--backend", "tflite", "-o", w.cwd / "q.onnx"], "--backend"),
    "calibrate-cache-and-no-cache": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic",
                                                    "--cache", w.cwd / "c.json", "--no-cache"], "contradict"),
    "calibrate-sensitivity-without-report": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic",
                                                            "--sensitivity"], "need --report"),
    "calibrate-samples-zero": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic", "--samples",
                                              "0", "-o", w.cwd / "q.onnx"], "--samples >= 1"),
    "calibrate-missing-data": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", w.clouds / "nosuch",
                                              "-o", w.cwd / "q.onnx"], "found nothing at"),
    "calibrate-synthetic-and-files": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic",
                                                     "--data", w.clouds / "good.npy", "-o", w.cwd / "q.onnx"],
                                                    "either 'synthetic' or paths"),
    "calibrate-points-contradict-manifest": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic",
                                                            "--points", "64", "-o", w.cwd / "q.onnx"],
                                                           "contradict the model's manifest"),
    "calibrate-batch-zero": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", "synthetic", "--batch", "0",
                                            "-o", w.cwd / "q.onnx"], "--batch"),
    "calibrate-no-manifest-no-points": lambda w: Case(["calibrate", w.no_manifest / "model.onnx", "--data",
                                                       "synthetic"], "no manifest"),
    "calibrate-identical-cloud": lambda w: Case(["calibrate", w.base / "model.onnx", "--data", w.clouds / "same.npy",
                                                 "--samples", "1", "-o", w.cwd / "q.onnx"], "identical"),
    # accuracy
    "accuracy-int8-without-qdq": lambda w: Case(["accuracy", w.base / "model.onnx", "--int8", w.base / "model.onnx",
                                                 "-o", w.cwd / "acc"], "--int8 model.onnx to be INT8 .Q/DQ nodes."),
    "accuracy-int8-as-reference": lambda w: Case(["accuracy", w.base / "model.int8.onnx", "-o", w.cwd / "acc"],
                                                 "reference MODEL in FP32.*already INT8"),
    "accuracy-int8-of-another-model": lambda w: Case(["accuracy", w.base / "model.onnx", "--int8",
                                                      w.other_bound / "model.int8.onnx", "-o", w.cwd / "acc"],
                                                     "was made from 'model.onnx' .sha256"),
    "accuracy-pair-with-other-outputs": lambda w: Case(["accuracy", w.base / "model.onnx", "--int8",
                                                        w.loose / "other.int8.onnx", "-o", w.cwd / "acc"],
                                                       "outputs differ"),
    "accuracy-fp16-is-fp32": lambda w: Case(["accuracy", w.base / "model.onnx", "--fp16", w.base / "model.onnx",
                                             "-o", w.cwd / "acc"], "--fp16 model.onnx to be FP16"),
    "accuracy-missing-int8": lambda w: Case(["accuracy", w.base / "model.onnx", "--int8", w.base / "nosuch.onnx",
                                             "-o", w.cwd / "acc"], "found nothing"),
    "accuracy-corrupt-int8": lambda w: Case(["accuracy", w.base / "model.onnx", "--int8", w.corrupt / "model.onnx",
                                             "-o", w.cwd / "acc"], "could not parse"),
    "accuracy-out-is-a-file": lambda w: Case(["accuracy", w.base / "model.onnx", "-o", w.a_file],
                                             "-o to name a folder"),
    "accuracy-onnx-of-another-model": lambda w: Case(["accuracy", w.other / "model.onnx", "-o", w.cwd / "acc"],
                                                     "does not match"),
    "accuracy-samples-zero": lambda w: Case(["accuracy", w.base / "model.onnx", "--samples", "0", "-o", w.cwd / "acc"],
                                            "--samples >= 1"),
    # build (TensorRT-RTX)
    "build-unknown-input-in-shapes": lambda w: Case(["build", w.base / "model.onnx", "--min-shapes",
                                                     "cloud:1x128x3"], "names 'cloud'.*inputs are points", rtx=True),
    "build-zero-dim-shape": lambda w: Case(["build", w.base / "model.onnx", "--max-shapes", "points:0x128x3"],
                                           "positive dims", rtx=True),
    "build-shape-not-trtexec": lambda w: Case(["build", w.base / "model.onnx", "--min-shapes", "points=1,128,3"],
                                              "NAME:DxDxD", rtx=True),
    "build-min-above-max": lambda w: Case(["build", w.base / "model.onnx", "--min-shapes", "points:4x128x3",
                                           "--max-shapes", "points:2x128x3"], "min <= opt <= max", rtx=True),
    "build-fixed-dim-changed": lambda w: Case(["build", w.base / "model.onnx", "--max-shapes", "points:4x128x2"],
                                              "does not fit", rtx=True),
    "build-trt-module-os": lambda w: Case(["build", w.base / "model.onnx", "--trt-module", "os"],
                                          "expected a TensorRT Python module", rtx=True),
    "build-unknown-precision": lambda w: Case(["build", w.base / "model.onnx", "--precision", "fp64"], "--precision",
                                              rtx=True),
    "build-output-is-the-onnx": lambda w: Case(["build", w.base / "model.onnx", "-o", w.base / "model.onnx"],
                                               "is the input", rtx=True),
    "build-output-is-the-manifest": lambda w: Case(["build", w.base / "model.onnx", "-o",
                                                    w.base / "model.manifest.json"], "is the input", rtx=True),
    "build-output-is-a-folder": lambda w: Case(["build", w.base / "model.onnx", "-o", w.base], "found the folder",
                                               rtx=True),
    "build-sidecar-would-be-the-manifest": lambda w: Case(["build", w.base / "model.onnx", "-o",
                                                           w.base / "model.manifest"], "is the input", rtx=True),
    "build-timing-cache-is-the-onnx": lambda w: Case(["build", w.base / "model.onnx", "--timing-cache",
                                                      w.base / "model.onnx", "-o", w.cwd / "m.plan"],
                                                     "a cache .*model.onnx is the input", rtx=True),
    "build-opt-level-9": lambda w: Case(["build", w.base / "model.onnx", "--opt-level", "9"], "0..5", rtx=True),
    "build-gpu-fallback-without-dla": lambda w: Case(["build", w.base / "model.onnx", "--allow-gpu-fallback"],
                                                     "needs --dla-core", rtx=True),
    "build-calib-without-int8": lambda w: Case(["build", w.base / "model.onnx", "--calib", "synthetic"],
                                               "need --precision int8", rtx=True),
    "build-negative-dla-core": lambda w: Case(["build", w.base / "model.onnx", "--dla-core", "-1"], "core index",
                                              rtx=True),
    "build-workspace-zero": lambda w: Case(["build", w.base / "model.onnx", "--workspace", "0"], "--workspace",
                                           rtx=True),
    "build-int8-without-qdq": lambda w: Case(["build", w.base / "model.onnx", "--precision", "int8"],
                                             "foundry-edge calibrate", rtx=True),
    "build-lying-manifest": lambda w: Case(["build", w.m_points_lie / "model.onnx"], "does not describe", rtx=True),
    "build-profiles-not-an-object": lambda w: Case(["build", w.m_profiles_list / "model.onnx"], "'profiles' must be",
                                                   rtx=True),
    "build-onnx-of-another-model": lambda w: Case(["build", w.other / "model.onnx"], "does not match", rtx=True),
    # convert
    "convert-output-is-the-source": lambda w: Case(["convert", w.ckpt / "tiny.pt", "-o", w.ckpt / "tiny.pt"],
                                                   "is the input"),
    "convert-output-is-a-folder": lambda w: Case(["convert", w.ckpt / "tiny.pt", "-o", w.ckpt], "found the folder"),
    "convert-missing-source": lambda w: Case(["convert", w.ckpt / "nosuch.pt"], "does not exist"),
    "convert-nan-weights": lambda w: Case(["convert", w.ckpt / "nan.pt", "-o", w.cwd / "c.pt"], "non-finite"),
    "convert-config-str": lambda w: Case(["convert", w.ckpt / "group-size-str.pt", "-o", w.cwd / "c.pt"],
                                         "group_size must be an integer"),
    "convert-unknown-source": lambda w: Case(["convert", w.ckpt / "tiny.pt", "--source", "teacher", "-o",
                                              w.cwd / "c.pt"], "source"),
    "convert-not-a-checkpoint": lambda w: Case(["convert", w.ckpt / "text.pt", "-o", w.cwd / "c.pt"],
                                               "not a PyTorch file"),
    # inspect
    "inspect-nan-ckpt": lambda w: Case(["inspect", w.ckpt / "nan.pt"], "non-finite"),
    "inspect-config-str": lambda w: Case(["inspect", w.ckpt / "group-size-str.pt"], "group_size must be an integer"),
    "inspect-mlp-nan": lambda w: Case(["inspect", "foundry-edge16", "--set", "mlp_ratio=nan"], "mlp_ratio"),
    "inspect-points-zero": lambda w: Case(["inspect", "foundry-edge16", "--points", "0"], "--points of at least 1"),
    "inspect-health-of-all": lambda w: Case(["inspect", "all", "--health", "synthetic"], "name one model"),
    # training commands
    "finetune-lr-nan": lambda w: Case(["finetune", w.ckpt / "tiny.pt", "--lr", "nan", "--out", w.cwd / "ft"],
                                      "lr must be positive, got nan"),
    "finetune-lr-zero": lambda w: Case(["finetune", w.ckpt / "tiny.pt", "--lr", "0", "--out", w.cwd / "ft"], "lr must"),
    "finetune-steps-zero": lambda w: Case(["finetune", w.ckpt / "tiny.pt", "--steps", "0", "--out", w.cwd / "ft"],
                                          "steps must be positive"),
    "finetune-weight-decay-nan": lambda w: Case(["finetune", w.ckpt / "tiny.pt", "--weight-decay", "nan", "--out",
                                                 w.cwd / "ft"], "weight_decay"),
    "finetune-resume-negative-step": lambda w: Case(["finetune", w.ckpt / "tiny.pt", *FINETUNE, "--resume",
                                                     w.ckpt / "resume-negative-step.pt", "--out", w.cwd / "ft"],
                                                    "step must be a count >= 0, found -3"),
    "finetune-resume-bad-rng": lambda w: Case(["finetune", w.ckpt / "tiny.pt", *FINETUNE, "--resume",
                                               w.ckpt / "resume-bad-rng.pt", "--out", w.cwd / "ft"],
                                              "RNG state is not torch's"),
    "finetune-resume-no-optimizer": lambda w: Case(["finetune", w.ckpt / "tiny.pt", *FINETUNE, "--resume",
                                                    w.ckpt / "resume-no-optimizer.pt", "--out", w.cwd / "ft"],
                                                   "no optimizer state"),
    "finetune-resume-missing": lambda w: Case(["finetune", w.ckpt / "tiny.pt", *FINETUNE, "--resume",
                                               w.ckpt / "nosuch.pt", "--out", w.cwd / "ft"],
                                              "checkpoint to --resume from, found nothing"),
    "finetune-resume-not-training": lambda w: Case(["finetune", w.ckpt / "tiny.pt", *FINETUNE, "--resume",
                                                    w.ckpt / "tiny.pt", "--out", w.cwd / "ft"],
                                                   "not a finetune training checkpoint"),
    "finetune-resume-finished": lambda w: Case(["finetune", w.ckpt / "tiny.pt", *FINETUNE, "--resume",
                                                w.ft / "checkpoint.pt", "--out", w.cwd / "ft"], "already at step 2"),
    "finetune-out-is-a-file": lambda w: Case(["finetune", w.ckpt / "tiny.pt", *FINETUNE, "--out", w.a_file],
                                             "--out to name a folder"),
    "finetune-nan-ckpt": lambda w: Case(["finetune", w.ckpt / "nan.pt", "--out", w.cwd / "ft"], "non-finite"),
    "finetune-unknown-task": lambda w: Case(["finetune", w.ckpt / "tiny.pt", *FINETUNE, "--task", "detect", "--out",
                                             w.cwd / "ft"], "task must be one of"),
    "finetune-missing-data": lambda w: Case(["finetune", w.ckpt / "tiny.pt", "--data", w.clouds / "nosuch",
                                             "--out", w.cwd / "ft"], "nosuch"),
    "distill-lr-nan": lambda w: Case(["distill", "--lr", "nan", "--out", w.cwd / "d"], "lr must be positive"),
    "distill-beta-nan": lambda w: Case(["distill", "--beta", "nan", "--samples", "4", "--out", w.cwd / "d"],
                                       "beta must be positive"),
    "distill-hard-fraction": lambda w: Case(["distill", "--hard-fraction", "2", "--samples", "4", "--out", w.cwd / "d"],
                                            "hard_fraction"),
    "distill-student-mlp-nan": lambda w: Case(["distill", "--set", "mlp_ratio=nan", "--out", w.cwd / "d"], "mlp_ratio"),
    "distill-gate-weight-without-gate": lambda w: Case(["distill", "--lambda-gate", "0.1", "--out", w.cwd / "d"],
                                                       "has no gate"),
    "distill-nan-teacher": lambda w: Case(["distill", "--teacher", w.ckpt / "nan.pt", "--out", w.cwd / "d"],
                                          "non-finite"),
    "evaluate-unknown-split": lambda w: Case(["evaluate", w.ckpt / "tiny.pt", "--split", "nosuch", "--samples", "4",
                                              "--out", w.cwd / "ev"], "expected a split in train, test"),
    "evaluate-nan-ckpt": lambda w: Case(["evaluate", w.ckpt / "nan.pt", "--out", w.cwd / "ev"], "non-finite"),
    "evaluate-out-is-a-file": lambda w: Case(["evaluate", w.ckpt / "tiny.pt", "--out", w.a_file],
                                             "--out to name a folder"),
    "evaluate-report-over-a-model": lambda w: Case(["evaluate", w.rep / "report.json", "--out", w.rep],
                                                   "the report .*report.json is the input"),
    "evaluate-missing-data": lambda w: Case(["evaluate", w.ckpt / "tiny.pt", "--data", w.clouds / "nosuch", "--out",
                                             w.cwd / "ev"], "nosuch"),
    # profile (its options are checked by the profile command itself)
    "profile-points-not-ints": lambda w: Case(["profile", "--student", "default", "--points", "many"],
                                              "comma-separated integers"),
    "profile-memory-limit": lambda w: Case(["profile", "--student", "default", "--memory-limit", "4Q"],
                                           "--memory-limit takes a size"),
    "profile-accuracy-pair": lambda w: Case(["profile", "--student", "default", "--accuracy", "fast"],
                                            "--accuracy takes MODEL=PERCENT"),
}
# Hand-edited manifests beside the right ONNX: refused by run (schema, then binding to the graph).
MANIFEST_MATCH = {
    "points-lie": "preprocessing.num_points 256 but the graph was exported with 128",
    "groups-lie": "preprocessing.num_groups 4 but the graph was exported with 8",
    "profiles-list": "'profiles' must be an object",
    "profiles-order": r"'profiles.batch' must be \[min, opt, max\]",
    "profiles-axis": "'profiles.nosuch' names no dynamic axis",
    "input-renamed": r"inputs \['cloud'\] but the graph has \['points'\]",
    "input-dims": "'profiles.num_points' names no dynamic axis",
    "output-dtype": "tokens float16",
    "precision-lie": "precision fp16 but the graph is fp32",
    "sha-not-hex": "64-digit hex SHA-256",
    "schema-2": "schema version 2",
    "no-inputs": r"lacks \['inputs'\]",
    "grouping-lie": "'preprocessing.in_graph' must be true exactly for graph grouping",
    "size-str": r"sizes \['group_size'\] must be positive integers",
    "not-json": "not valid JSON",
}
for _name, _match in MANIFEST_MATCH.items():
    CASES[f"manifest-{_name}"] = (lambda name, match: lambda w: Case(
        ["run", w.root / f"m-{name}" / "model.onnx", w.clouds / "good.npy"], match))(_name, _match)


@pytest.fixture
def in_cwd(w, monkeypatch):
    """Commands run inside the workspace with TensorRT-RTX as TensorRT, so a stray default output is seen."""
    monkeypatch.chdir(w.cwd)
    monkeypatch.setenv("FOUNDRY_EDGE_TRT_MODULE", RTX)
    return w


def assert_refused(w, argv, match, code, capsys, before=None):
    """main(argv) exits `code` with one error line matching `match` (and at most a usage line after it), no
    traceback, and every file of the workspace as it was."""
    before = snapshot(w.root) if before is None else before
    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert got == code, err
    assert len(errors) == 1, err
    assert lines[-1] == errors[0] or (lines[-1].startswith("usage: foundry-edge") and lines[-2] == errors[0]), err
    assert re.search(match, errors[0]), errors[0]
    assert snapshot(w.root) == before


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_in_one_line(name, in_cwd, capsys):
    case = CASES[name](in_cwd)
    if case.rtx and not HAS_RTX:
        pytest.skip("needs TensorRT-RTX (pip package tensorrt-rtx)")
    assert_refused(in_cwd, case.argv, case.match, case.code, capsys)


# -- writers that are already there, and interrupted writes ------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_first(in_cwd, capsys):
    """A lock held by a live process keeps another export out of the folder; the lock stays the holder's."""
    lock = in_cwd.base / ".foundry-edge.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "command": "export"}))
    try:
        assert_refused(in_cwd, ["export", "foundry-edge16", *SETS, "-o", in_cwd.base],
                       f"another foundry-edge process is writing to .*base .pid {os.getppid()}, export.", 2, capsys)
        assert_refused(in_cwd, ["calibrate", in_cwd.base / "model.onnx", "--data", "synthetic", "--samples", "2"],
                       "another foundry-edge process", 2, capsys)
    finally:
        lock.unlink()


def test_a_lock_whose_process_is_gone_is_taken_over(in_cwd, capsys):
    out = in_cwd.cwd / "acc"
    out.mkdir()
    (out / ".foundry-edge.lock").write_text(json.dumps({"pid": 2 ** 22 + 12345, "command": "accuracy"}))
    try:
        assert main(["accuracy", str(in_cwd.base / "model.onnx"), "--int8", str(in_cwd.base / "model.int8.onnx"),
                     "--samples", "2", "-o", str(out)]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["accuracy.json", "accuracy.md", "model.fp16.onnx"]
    finally:
        shutil.rmtree(out)


SIGNALS = {"INT": 130, "TERM": 143, "HUP": 129}
INTERRUPTS = {
    # (signal point, signal): the command it interrupts, writing over an older set of the same files
    ("export:started", "TERM"): "export",
    ("export:started", "HUP"): "export",
    ("export:checked", "TERM"): "export",
    ("export:staged", "INT"): "export",
    ("build:parsed", "TERM"): "build",
    ("build:built", "INT"): "build",
    ("build:staged", "TERM"): "build",
    ("build:staged", "HUP"): "build",
    ("calibrate:quantized", "TERM"): "calibrate",
    ("calibrate:staged", "INT"): "calibrate",
    ("calibrate:staged", "HUP"): "calibrate",
    ("accuracy:staged", "TERM"): "accuracy",
}


def _rewrite(command: str, w) -> list:
    """A command that would replace files of the base set (a new seed gives new bytes)."""
    return {"export": ["export", "foundry-edge16", *SETS, "--seed", "7", "--no-check", "--trt-check", "off",
                       "-o", w.base],
            "build": ["build", w.base / "model.onnx", "--precision", "fp32", "-o", w.base / "model.fp32.plan",
                      "--timing-cache", w.base / "timing.cache"],
            "calibrate": ["calibrate", w.base / "model.onnx", "--data", "synthetic", "--samples", "3", "--seed", "5",
                          "-o", w.base / "model.int8.onnx", "--report", w.base / "report"],
            "accuracy": ["accuracy", w.base / "model.onnx", "--int8", w.base / "model.int8.onnx", "--samples", "2",
                         "-o", w.base]}[command]


@pytest.mark.parametrize("point,sig", sorted(INTERRUPTS))
def test_a_signal_leaves_the_old_set_intact(point, sig, in_cwd, capsys, monkeypatch):
    command = INTERRUPTS[(point, sig)]
    if command == "build" and not HAS_RTX:
        pytest.skip("needs TensorRT-RTX (pip package tensorrt-rtx)")
    monkeypatch.setenv("FOUNDRY_EDGE_SIGNAL_AT", f"{point}:{sig}")
    said = "interrupted" if sig == "INT" else f"stopped by SIG{sig}"
    assert_refused(in_cwd, _rewrite(command, in_cwd), said, SIGNALS[sig], capsys)


def _subprocess_env(**extra) -> dict:
    return {**os.environ, "FOUNDRY_EDGE_TRT_MODULE": RTX, **extra}


@pytest.mark.skipif(not HAS_RTX, reason="needs TensorRT-RTX (pip package tensorrt-rtx)")
def test_sigterm_in_a_build_process(w):
    """The real process: SIGTERM between writing the plan and its sidecar exits 143 with one line."""
    before = snapshot(w.root)
    argv = [sys.executable, "-m", "foundry_edge", *map(str, _rewrite("build", w))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=w.cwd,
                          env=_subprocess_env(FOUNDRY_EDGE_SIGNAL_AT="build:staged:TERM"))
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines() == ["error: stopped by SIGTERM (outputs are written atomically: nothing "
                                                "partial was left behind)"]
    assert snapshot(w.root) == before


def test_sigterm_from_outside_during_an_export(w, tmp_path):
    """SIGTERM sent by another process while the export traces: exit 143, one line, no temporary folder left."""
    before = snapshot(w.root)
    argv = [sys.executable, "-m", "foundry_edge", *map(str, _rewrite("export", w))]
    env = _subprocess_env(TMPDIR=str(tmp_path))  # the export's temporary folder goes here
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=w.cwd, env=env)
    first = proc.stdout.readline()  # "load: ..." once the CLI has its handlers and starts loading
    assert first.startswith("load:"), first
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM")
    assert "Traceback" not in err
    assert snapshot(w.root) == before
    assert list(tmp_path.iterdir()) == []


# -- what the fixes make work ----------------------------------------------------------------------------------

def test_a_preset_is_the_same_model_in_export_run_and_verify(in_cwd, capsys):
    """The export was made from the preset with the default seed: verify against the preset passes, and two runs
    of the preset give the same tokens."""
    assert main(["verify", str(in_cwd.base / "model.onnx"), "--against", "foundry-edge16", *SETS, "--samples", "2"]) == 0
    assert "preset with random initialisation, seed 0" in capsys.readouterr().out
    tokens = []
    for name in ("a.npz", "b.npz"):
        assert main(["run", "foundry-edge16", str(in_cwd.clouds / "good.npy"), *SETS, "-o", name]) == 0
        tokens.append(np.load(name)["tokens"])
        os.remove(name)
    np.testing.assert_array_equal(*tokens)


def test_overwriting_an_old_output_still_works(in_cwd):
    out = in_cwd.cwd / "old.npz"
    out.write_bytes(b"an older result")
    assert main(["run", str(in_cwd.base / "model.onnx"), str(in_cwd.clouds / "good.npy"), "-o", str(out)]) == 0
    assert set(np.load(out)) >= {"tokens", "clouds", "origins"}
    out.unlink()


def test_an_exclude_pattern_that_matches_nothing_is_a_warning(in_cwd, capsys):
    out = in_cwd.cwd / "q.int8.onnx"
    assert main(["calibrate", str(in_cwd.base / "model.onnx"), "--data", "synthetic", "--samples", "2", "--exclude",
                 "[", "--no-cache", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: --exclude '[' matches no node name or op type" in err
    for path in (out, out.with_name("q.int8.manifest.json")):
        path.unlink()
