"""`--grouping auto`: the choice follows the measured table, at the nearest measured point count, and says why."""

from __future__ import annotations

import json

import pytest

from foundry_edge.data.grouping.placement import MEASURED, choose_placement

TABLE = {"source": "bench", "rows": [
    {"runtime": "ort-cpu", "model": "s", "points": 1024, "batch": 1, "graph_ms": 3.0, "host_ms": 4.0},
    {"runtime": "ort-cpu", "model": "s", "points": 1024, "batch": 8, "graph_ms": 15.0, "host_ms": 16.0},
    {"runtime": "ort-cpu", "model": "s", "points": 16384, "batch": 1, "graph_ms": 90.0, "host_ms": 30.0},
]}


@pytest.mark.parametrize("points, expected, measured_at", [(1024, "graph", 1024), (2000, "graph", 1024),
                                                          (8000, "host", 16384), (262144, "host", 16384)])
def test_auto_takes_the_faster_placement_at_the_nearest_measured_point_count(points, expected, measured_at):
    chosen, why = choose_placement("ort-cpu", points, TABLE)
    assert chosen == expected and f"measured at {measured_at}" in why and "bench" in why


def test_host_times_of_the_compiled_grouping_do_not_choose_host_where_numba_is_missing(monkeypatch):
    import importlib.util

    compiled = {**TABLE, "host_grouping": "compiled"}
    assert choose_placement("ort-cpu", 262144, compiled)[0] == "host"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba" else real(name, *a))
    chosen, why = choose_placement("ort-cpu", 262144, compiled)
    assert chosen == "graph" and "numba is not installed" in why
    assert choose_placement("ort-cpu", 262144, TABLE)[0] == "host"  # numpy-measured host times still count


def test_a_runtime_nobody_measured_keeps_grouping_in_the_graph_and_says_so():
    chosen, why = choose_placement("trt", 1024, TABLE)
    assert chosen == "graph" and "no measurement of trt" in why


def test_the_committed_table_is_what_the_benchmark_writes():
    table = json.loads(MEASURED.read_text())
    assert table["source"] == "benchmarks/grouping_placement.py" and table["rows"]
    for row in table["rows"]:
        assert row["graph_ms"] > 0 and row["host_ms"] > 0 and row["runtime"] in ("ort-cpu", "ort-cuda", "trt")
    assert choose_placement("ort-cpu", table["rows"][0]["points"])[0] in ("graph", "host")


def test_export_auto_says_what_it_chose_and_exports_it(tmp_path, capsys):
    pytest.importorskip("torch")
    from foundry_edge.cli import main
    from foundry_edge.contracts.manifest import read_manifest
    from tests.conftest import tiny_overrides

    sets = [a for k, v in tiny_overrides("foundry-edge16").items()
            for a in ("--set", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}")]
    assert main(["export", "foundry-edge16", *sets, "--grouping", "auto", "--grouping-for", "ort-cpu", "--no-check",
                 "--trt-check", "off", "-o", str(tmp_path / "auto")]) == 0
    chosen, why = choose_placement("ort-cpu", tiny_overrides("foundry-edge16")["num_points"])
    assert f"--grouping auto: {why}" in capsys.readouterr().out
    assert read_manifest(tmp_path / "auto" / "model.onnx")["grouping"] == chosen
    assert main(["export", "foundry-edge16", "--grouping", "graph", "--grouping-for", "ort-cpu", "-o",
                 str(tmp_path / "x")]) == 2  # --grouping-for only means something to auto
    assert "--grouping-for tells --grouping auto" in capsys.readouterr().err
    assert main(["export", "foundry-edge16", "--grouping", "auto", "--grouping-for", "onnx", "-o",
                 str(tmp_path / "y")]) == 2
    assert "--grouping-for 'onnx': expected one of torch, ort-cpu" in capsys.readouterr().err


def test_profile_auto_chooses_for_its_first_onnx_runtime_and_refuses_other_words(tmp_path):
    from foundry_edge.errors import FoundryError
    from foundry_edge.profiling import ProfileConfig, Subject

    config = ProfileConfig(students=[Subject("foundry-edge16", "student")], runtimes=["torch", "ort-cpu"],
                           points=[1024, 262144], grouping="auto", out_dir=tmp_path)
    assert config.placement(262144) == choose_placement("ort-cpu", 262144)
    assert ProfileConfig(students=[Subject("foundry-edge16", "student")], grouping="host",
                         out_dir=tmp_path).placement(1024) == ("host", None)
    with pytest.raises(FoundryError, match="--grouping must be one of graph, host, auto"):
        ProfileConfig(students=[Subject("foundry-edge16", "student")], grouping="scalable", out_dir=tmp_path)
