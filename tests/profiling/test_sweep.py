"""`foundry-edge sweep`: the Pareto front, the entry plan, and a tiny sweep on the bundled teacher where
one entry cannot be distilled (s above the teacher's 32 groups), one cannot be exported and one names a
missing checkpoint: each becomes a row with its stage and error, and the others are measured."""

from __future__ import annotations

import json

import pytest

from foundry_edge.cli import main
from foundry_edge.errors import FoundryError
from foundry_edge.profiling.pareto import dominated_by, front
from foundry_edge.profiling.sweep import SweepConfig, plan


def test_pareto_front_and_what_dominates_what():
    points = [{"label": "a", "cost": 1.0, "accuracy": 80.0}, {"label": "b", "cost": 2.0, "accuracy": 90.0},
              {"label": "c", "cost": 2.5, "accuracy": 85.0}, {"label": "d", "cost": 2.0, "accuracy": 90.0},
              {"label": "e", "cost": 3.0, "accuracy": 95.0}, {"label": "f", "cost": None, "accuracy": 99.0}]
    beaten = dominated_by(points)
    assert beaten == {"a": [], "b": [], "c": ["b", "d"], "d": [], "e": []}  # equal points do not dominate each other
    assert [p["label"] for p in front(points)] == ["a", "b", "d", "e"]


def test_plan_names_every_entry_and_refuses_bad_settings():
    config = SweepConfig(supertokens=[4, 8], gate_budgets=[2], checkpoints=["runs/x/student.pt"])
    assert [(e.label, e.num_supertokens, e.gate_budget) for e in plan(config)] == [
        ("s4", 4, None), ("s8", 8, None), ("s4-g2", 4, 2), ("s8-g2", 8, 2), ("student", None, None)]
    assert config.work_dir == config.out_dir / "work" and config.finetune_steps == config.steps
    with pytest.raises(FoundryError, match="latency or energy"):
        SweepConfig(objective="throughput")
    with pytest.raises(FoundryError, match="nothing to sweep"):
        SweepConfig(supertokens=[])
    with pytest.raises(FoundryError, match="own name"):
        plan(SweepConfig(supertokens=[], checkpoints=["a/m.pt", "b/m.pt"]))


def test_cli_refuses_no_export_with_onnx_runtimes(capsys):
    assert main(["sweep", "--no-export", "--runtime", "ort-cpu"]) == 2
    assert "--no-export leaves nothing" in capsys.readouterr().err


@pytest.mark.slow
def test_failing_entries_become_error_rows_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """s4 is measured end to end (distil, fine-tune, evaluate, a real export, torch profile); s64 fails to
    distil, s8's export fails, and a missing checkpoint fails to load. Rows, front and files say so."""
    import foundry_edge.export as export_package
    from foundry_edge.profiling.sweep_report import write_sweep

    real_export = export_package.export_model

    def export_or_fail(options):
        if options.model.config.name == "sweep-s8":
            raise FoundryError("expected an exportable graph, found a stand-in failure for this test")
        return real_export(options)

    monkeypatch.setattr(export_package, "export_model", export_or_fail)
    from foundry_edge.profiling.sweep import run_sweep

    config = SweepConfig(supertokens=[4, 64, 8], checkpoints=[str(tmp_path / "missing.pt")], steps=2,
                         finetune_steps=2, train_samples=16, test_samples=20, batch_size=8, runtimes=["torch"],
                         iterations=2, warmup_s=0.0, threads=1, out_dir=tmp_path / "out")
    lines = []
    sweep = run_sweep(config, log=lines.append)
    rows = {row["entry"]: row for row in sweep["rows"]}
    assert list(rows) == ["teacher", "s4", "s64", "s8", "missing"]
    assert rows["s64"]["status"] == "error" and rows["s64"]["stage"] == "distill"
    assert "num_supertokens must be in 1..num_groups (32), got 64" in rows["s64"]["error"]
    assert rows["s8"]["stage"] == "export" and "stand-in failure" in rows["s8"]["error"]
    assert rows["missing"]["stage"] == "load" and "missing.pt" in rows["missing"]["error"]
    ok = rows["s4"]
    assert ok["status"] == "ok" and ok["onnx"].endswith("model.onnx") and ok["distill"]["steps"] == 2
    assert 0 <= ok["accuracy"]["top1"] <= 100 and ok["accuracy"]["clouds"] == 20
    assert ok["health"]["num_supertokens"] == 4 and 1 <= ok["health"]["used_mean"] <= 4
    assert ok["profile"]["torch"]["median_ms"] > 0 and rows["teacher"]["profile"]["torch"]["median_ms"] > 0
    assert "profile" not in rows["s8"]  # not measured: no figure, and not on the plot
    result = sweep["fronts"]["torch"]
    assert sorted(result["front"] + list(result["dominated"])) == ["s4", "teacher"]
    assert sorted(result["missing"]) == ["missing", "s64", "s8"]
    assert any("FAILED at distill" in line for line in lines)
    paths = write_sweep(sweep, config.out_dir)
    assert json.loads(paths["json"].read_text())["rows"][1]["entry"] == "s4"
    markdown = paths["markdown"].read_text()
    assert "- s64 at distill:" in markdown and "- s8 at export:" in markdown and "## Pareto front" in markdown
    html = paths["html"].read_text()
    assert html.count('src="data:image/png;base64,') == 2 and "<script" not in html
    assert (config.out_dir / "profile" / "report.html").is_file()
