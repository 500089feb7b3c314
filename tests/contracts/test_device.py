"""One reader of a Jetson's board and L4T release for the sidecar, `doctor`, the machine facts and telemetry,
on the recorded trees of tests/fixtures/jetson/ (and what it makes of boards that are not Jetsons)."""

from __future__ import annotations

import types

import pytest

from foundry_edge.contracts import device
from tests.profiling.test_telemetry import build_tree

BOARDS = {"orin-nano-jp6": ("NVIDIA Jetson Orin Nano Developer Kit", "36.4.3"),
          "agx-orin-jp5": ("Jetson AGX Orin Developer Kit", "35.4.1"),
          "agx-orin-jp7": ("NVIDIA Jetson AGX Orin Developer Kit", "38.4.0"),
          "agx-thor-jp7": ("NVIDIA Jetson AGX Thor Developer Kit", "38.2.0")}


@pytest.fixture
def no_dpkg(monkeypatch):
    monkeypatch.setattr(device, "dpkg_version", lambda package: None)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_and_sidecar_read_the_same_release_of_each_recorded_jetson(name, tmp_path, no_dpkg):
    root = build_tree(name, tmp_path)
    model, l4t = BOARDS[name]
    assert device.jetson_board(root) == {"model": model, "l4t": l4t}
    assert device.jetson_facts(root) == {"l4t": l4t}


def test_a_desktop_has_no_jetson_facts(tmp_path, no_dpkg):
    root = build_tree("x86-rapl", tmp_path)
    assert device.jetson_board(root) == {} and device.jetson_facts(root) == {}


def test_a_device_tree_names_a_jetson_only_by_its_name_or_an_l4t_release(tmp_path):
    (tmp_path / "sys/firmware/devicetree/base").mkdir(parents=True)
    (tmp_path / "sys/firmware/devicetree/base/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    assert device.board_model(tmp_path) == "Raspberry Pi 5 Model B Rev 1.0"
    assert device.jetson_board(tmp_path) == {}
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic\n")
    assert device.jetson_board(tmp_path) == {"model": "Raspberry Pi 5 Model B Rev 1.0", "l4t": "36.4.3"}


def test_a_release_file_in_another_form_is_recorded_as_written(tmp_path, no_dpkg):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R39 (preview) BUILD 7\nsecond line\n")
    assert device.parse_l4t_release("# R39 (preview) BUILD 7") is None
    assert device.jetson_facts(tmp_path) == {"l4t": "R39 (preview) BUILD 7"}
    assert device.jetson_board(tmp_path) == {}
    (tmp_path / "etc/nv_tegra_release").write_text("")
    assert device.jetson_facts(tmp_path) == {}  # an empty file says nothing


def test_device_facts_name_tensorrt_cuda_and_the_jetpack_packages(monkeypatch):
    monkeypatch.setattr(device, "dpkg_version", {"nvidia-jetpack": "6.2+b77"}.get)
    trt = types.SimpleNamespace(__name__="tensorrt_rtx", __version__="1.2.0")
    cuda = types.SimpleNamespace(device=lambda: {"gpu": "Orin", "compute_capability": "8.7", "cuda_runtime": "12.6",
                                                 "cuda_driver": "12.6"})
    facts = device.device_facts(trt, cuda)  # plus this machine's l4t, where it is a Jetson
    assert {key: value for key, value in facts.items() if key != "l4t"} == {
        "tensorrt_module": "tensorrt_rtx", "tensorrt": "1.2.0", "gpu": "Orin", "compute_capability": "8.7",
        "cuda_runtime": "12.6", "cuda_driver": "12.6", "jetpack": "6.2+b77"}
    bare = device.device_facts(types.SimpleNamespace(__name__="tensorrt.bindings"))
    assert bare["tensorrt_module"] == "tensorrt" and bare["tensorrt"] == "unknown" and bare["gpu"] is None
