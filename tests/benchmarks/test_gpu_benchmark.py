"""benchmarks/gpu_student_vs_teacher.py: its CPU dry run (the GPU run itself needs a CUDA machine)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_student_vs_teacher.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_student_vs_teacher", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_every_model_and_writes_the_report(tmp_path):
    bench = _load()
    torch.set_num_threads(1)
    assert bench.main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dry_run"] and report["device"] == "cpu (dry run)"
    measured = {(r["model"], r["points"]) for r in report["latency"] if "median_ms" in r}
    assert measured == {(m, n) for m in bench.MODELS for n in bench.DRY["points"]}
    assert all(r["median_ms"] >= r["min_ms"] > 0 for r in report["latency"])
    assert {(s["student"], s["points"]) for s in report["speedups"]} == {
        (m, n) for m in bench.MODELS[1:] for n in bench.DRY["points"]}
    assert [r["model"] for r in report["scenes"]].count("foundry-edge16") == len(bench.DRY["scene_points"])
    assert "speed-up over the teacher" in (tmp_path / "report.md").read_text()


def test_a_failing_row_is_recorded_and_the_run_goes_on(monkeypatch):
    bench = _load()
    monkeypatch.setattr(bench, "build", lambda *a: (_ for _ in ()).throw(RuntimeError("CUDA out of memory. x")))
    row = bench._measure("foundry-s16", 256, False, "eager", torch.device("cpu"), True, 1)
    assert row["error"] == "RuntimeError: CUDA out of memory. x" and "median_ms" not in row


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_real_run_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load().main(["--out", "/nonexistent"])
    assert exit_info.value.code == 2 and "no CUDA device" in capsys.readouterr().err
