"""Telemetry on recorded Jetson trees (Orin Nano on JetPack 6, AGX Orin on JetPack 5 and 7, Thor), tegrastats
lines of JetPack 5/6/7, nvpmodel and jetson_clocks output, energy over a known power trace, throttle
detection, and NVML and RAPL where a desktop has them. Trees: tests/fixtures/jetson/README.md."""

from __future__ import annotations

import re
import shutil
import sys
import time
import types
from pathlib import Path

import pytest

from foundry_edge.contracts.device import jetson_board
from foundry_edge.profiling import jetson, telemetry
from foundry_edge.profiling.telemetry import Telemetry, counter_delta, describe, integrate, open_sources

FIXTURES = Path(__file__).parents[1] / "fixtures" / "jetson"


def build_tree(name: str, dest: Path) -> Path:
    """Write fixtures/jetson/<name>.tree under dest: "path = value" lines, "| " lines continue a file."""
    files: dict[str, list[str]] = {}
    current = None
    for line in (FIXTURES / f"{name}.tree").read_text().splitlines():
        if line.startswith("|"):
            files[current].append(line[2:])
        elif line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"(\S+) =(?: (.*))?", line)
            current = match.group(1)
            files[current] = [] if match.group(2) is None else [match.group(2)]
    for relative, lines in files.items():
        path = dest / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return dest


@pytest.fixture
def tree(tmp_path):
    return lambda name: build_tree(name, tmp_path / name)


def tegrastats_lines() -> dict[str, str]:
    lines = (FIXTURES / "tegrastats.txt").read_text().splitlines()
    return dict(line.split(" | ", 1) for line in lines if line and not line.startswith("#"))


# -- sysfs trees -----------------------------------------------------------------------------------
def test_orin_nano_jetpack6(tree):
    root = tree("orin-nano-jp6")
    assert jetson_board(root) == {"model": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": "36.4.3"}
    assert jetson.power_mode(root) == {"id": 1, "name": "25W", "source": "var/lib/nvpmodel/status"}
    rails = jetson.find_rails(root)
    assert [r.name for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]  # no "sum of shunt voltages"
    assert jetson.total_rail(rails) == "VDD_IN"
    watts = jetson.rail_powers(rails)
    assert watts == pytest.approx({"VDD_IN": 5.064 * 1.422, "VDD_CPU_GPU_CV": 5.056 * 0.412, "VDD_SOC": 5.048 * 0.296})
    gpu, cpus = jetson.gpu_devfreq(root), jetson.online_cpus(root)
    assert gpu.name == "17000000.gpu" and len(cpus) == 6
    assert jetson.clocks_mhz(root, gpu, cpus) == {"gpu": 918.0, "emc": 3199.0, "cpu": 1728.0}
    assert jetson.clocks_locked(gpu, cpus) is False  # CPUs 115.2..1728, GPU 306..918 MHz
    zones = {z.name: (z.celsius(), z.passive_c) for z in jetson.thermal_zones(root)}
    assert zones["cpu-thermal"] == (47.593, 99.0) and zones["cv0-thermal"] == (None, None)  # -256000: off
    assert {k: jetson.read_int(p) for k, p in jetson.oc_counters(root).items()} == {"oc1": 0, "oc2": 0, "oc3": 12}


def test_agx_orin_jetpack5_sums_its_rails_and_reads_clocks_locked(tree):
    root = tree("agx-orin-jp5")
    assert jetson_board(root)["l4t"] == "35.4.1"
    assert jetson.power_mode(root)["name"] == "MAXN"
    rails = jetson.find_rails(root)
    assert [r.name for r in rails] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]  # NC left out
    assert jetson.total_rail(rails) is None
    assert jetson.rail_powers(rails)[jetson.SUM_OF_RAILS] == pytest.approx(8.404464)
    gpu, cpus = jetson.gpu_devfreq(root), jetson.online_cpus(root)
    assert gpu.name == "17000000.ga10b" and len(cpus) == 12
    assert jetson.clocks_mhz(root, gpu, cpus) == {"gpu": 1300.5, "cpu": 2201.6}  # EMC: debugfs not readable
    assert jetson.clocks_locked(gpu, cpus) is True
    limits = jetson.clock_limits(root, gpu, cpus)
    assert "needs root" in limits["emc"]["reason"] and limits["cpu"]["online"] == 12


def test_agx_orin_jetpack7_and_thor(tree):
    orin = tree("agx-orin-jp7")
    assert jetson_board(orin)["l4t"] == "38.4.0" and jetson.power_mode(orin)["name"] == "MODE_30W"
    assert jetson.gpu_devfreq(orin).name == "gpu-gpc-0"
    assert len(jetson.online_cpus(orin)) == 8  # cpu8..11 offline
    assert jetson.rail_powers(jetson.find_rails(orin))[jetson.SUM_OF_RAILS] == pytest.approx(14.392)
    thor = tree("agx-thor-jp7")
    rails = jetson.find_rails(thor)
    assert [(r.name, r.chip) for r in rails][-1] == ("VIN", "ina238")
    assert jetson.total_rail(rails) == "VIN" and jetson.rail_powers(rails)["VIN"] == pytest.approx(23.012)  # uW
    assert jetson.gpu_devfreq(thor).name == "gpu-gpc-0"  # not the video engine's gpu-nvd-0
    assert "gpu-thermal" not in {z.name for z in jetson.thermal_zones(thor) if z.celsius() is not None}


def test_describe_says_what_the_board_runs_and_why_sources_are_missing(tree):
    facts = describe(tree("orin-nano-jp6"))
    board = facts["jetson"]
    assert board["power_mode"]["name"] == "25W" and board["jetson_clocks"]["locked"] is False
    assert board["clocks_mhz"]["gpu"] == {"cur": 918.0, "min": 306.0, "max": 918.0, "governor": "nvhost_podgov",
                                          "device": "17000000.gpu"}
    assert board["total_rail"] == "VDD_IN" and board["temps_c"]["tj-thermal"] == 47.593
    assert facts["sources"]["jetson"] == "available"
    assert facts["sources"]["nvml"].startswith("not available: only asked on the live system")
    elsewhere = describe(tree("x86-rapl"))
    assert elsewhere["jetson"] is None and elsewhere["sources"]["jetson"].startswith("not available: no Jetson")


# -- text formats ----------------------------------------------------------------------------------
@pytest.mark.parametrize("label, power, clocks, temps", [
    ("agx-orin-jp5", {"VDD_GPU_SOC": 3.193, "VDD_CPU_CV": 0.798, "VIN_SYS_5V0": 3.426, "VDDQ_VDD2_1V8AO": 0.503,
                      "sum of rails": 7.92}, {"cpu": 1113.0, "gpu": 305.0, "emc": 3199.0}, {"CPU": 44.718, "tj": 44.718}),
    ("xavier-nx-jp5", {"VDD_IN": 5.297, "VDD_CPU_GPU_CV": 1.917, "VDD_SOC": 1.241},
     {"cpu": 1421.0, "gpu": 114.0, "emc": 1600.0}, {"GPU": 39.5, "PMIC": 50.0}),
    ("agx-orin-jp6", {"VDD_GPU_SOC": 3.193, "VDD_CPU_CV": 0.399, "VIN_SYS_5V0": 4.306, "sum of rails": 7.898},
     {"cpu": 729.0}, {"cpu": 48.156, "soc1": 44.343}),
    ("orin-nano-jp6", {"VDD_IN": 7.201, "VDD_CPU_GPU_CV": 2.083, "VDD_SOC": 1.494},
     {"cpu": 1728.0, "gpu": 918.0, "emc": 3199.0}, {"gpu": 47.031, "tj": 47.593}),
    ("agx-thor-jp7", {"VDD_GPU": 2.407, "VDD_CPU_SOC_MSS": 6.51, "VIN_SYS_5V0": 6.52, "VIN": 23.012},
     {"cpu": 2601.0}, {"soc012": 55.125, "tj": 55.125}),
])
def test_tegrastats_lines_of_jetpack_5_6_7(label, power, clocks, temps):
    parsed = jetson.parse_tegrastats(tegrastats_lines()[label])
    assert parsed["power_w"] == pytest.approx(power)
    assert parsed["clocks_mhz"] == clocks
    assert temps.items() <= parsed["temps_c"].items()
    assert not any(name.upper().startswith(("CV", "GPU")) and value < -100 for name, value in parsed["temps_c"].items())
    if label == "agx-orin-jp5":
        assert "GPU" not in parsed["temps_c"] and "CV0" not in parsed["temps_c"]  # -256C: sensor off
    assert parsed["ram_mb"][0] > 0 and "gpu" in parsed["loads"]


def test_nvpmodel_and_jetson_clocks_output():
    conf = jetson.parse_nvpmodel_conf((FIXTURES / "agx-orin-jp5.tree").read_text().replace("| ", ""))
    assert conf == {"modes": {0: "MAXN", 1: "MODE_15W", 2: "MODE_30W", 3: "MODE_50W"}, "default": 2}
    query = "NVPM WARN: fan mode is not set!\nNV Power Mode: MODE_30W\n2\n"
    assert jetson.parse_nvpmodel_query(query) == {"name": "MODE_30W", "id": 2}
    assert jetson.parse_nvpmodel_query("nvpmodel: command failed") is None
    off = ("SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit\nOnline CPUs: 0-11\n"
           "cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=1420800 IdleStates: WFI=1 c7=1\n"
           "cpu1: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1 c7=1\n"
           "GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000\n"
           "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0\n"
           "FAN Dynamic Speed control=active hwmon4_pwm1=51\nNV Power Mode: MAXN\n")
    shown = jetson.parse_jetson_clocks_show(off)
    assert shown["locked"] is False and shown["power_mode"] == "MAXN" and shown["gpu"]["MaxFreq"] == "1300500000"
    on = re.sub(r"MinFreq=\d+ MaxFreq=(\d+) CurrentFreq=\d+", r"MinFreq=\1 MaxFreq=\1 CurrentFreq=\1", off)
    assert jetson.parse_jetson_clocks_show(on.replace("FreqOverride=0", "FreqOverride=1"))["locked"] is True
    assert jetson.parse_jetson_clocks_show(on)["locked"] is False  # EMC not overridden


# -- energy over a window --------------------------------------------------------------------------
def test_energy_integration_against_a_known_power_trace():
    times = [0.0, 1.0, 2.0, 3.0, 4.0]
    watts = [2.0, 2.0, 6.0, 6.0, 2.0]
    assert integrate(times, watts, 0.0, 4.0) == pytest.approx(2 + 4 + 6 + 4)
    assert integrate(times, watts, 1.5, 2.5) == pytest.approx(0.5 * (4 + 6) / 2 + 0.5 * 6)  # interpolated ends
    assert integrate(times, watts, -1.0, 0.5) == pytest.approx(3.0)  # held before the first sample
    counter = [100.0, 103.0, 1.0, 4.0]  # wraps at 105 between the second and third sample
    assert counter_delta([0, 1, 2, 3], counter, 0, 3, wrap=105.0) == pytest.approx(9.0)


def test_steady_power_gives_energy_per_call_and_a_valid_row(tree):
    root = tree("orin-nano-jp6")
    with Telemetry(root, interval_s=0.01) as sampler:
        start = sampler.mark()
        time.sleep(0.2)
        end = sampler.mark()
    summary = sampler.summary(start, end, calls=40, batch=2, on_gpu=True)
    joules = 5.064 * 1.422 * (end - start)
    assert summary["energy_source"] == "jetson: VDD_IN"
    assert summary["energy_mj_per_call"] == pytest.approx(1e3 * joules / 40)
    assert summary["energy_mj_per_cloud"] == pytest.approx(1e3 * joules / 80)
    assert summary["power_w"] == pytest.approx(5.064 * 1.422)
    assert summary["samples"] >= 3 and summary["valid"] is True and summary["invalid_reasons"] == []
    jetson_summary = summary["sources"]["jetson"]
    assert jetson_summary["clocks_mhz"]["gpu"] == {"start": 918.0, "min": 918.0, "max": 918.0}
    assert jetson_summary["power_w_mean"]["VDD_SOC"] == pytest.approx(5.048 * 0.296)


def test_throttling_and_a_clock_drop_invalidate_the_window(tree):
    root = tree("orin-nano-jp6")
    hwmon = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    with Telemetry(root, interval_s=0.01) as sampler:
        start = sampler.mark()
        (root / "sys/class/devfreq/17000000.gpu/cur_freq").write_text("612000000\n")  # GPU 918 -> 612 MHz
        (root / "sys/class/hwmon/hwmon3/oc3_event_cnt").write_text("14\n")  # two over-current events
        (root / "sys/class/thermal/thermal_zone0/temp").write_text("99500\n")  # cpu past its passive trip
        (hwmon / "curr1_crit_alarm").write_text("1\n")
        sampler.mark()
        middle = sampler.mark()
        (root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").write_text("115200\n")
        end = sampler.mark()
    gpu_row = sampler.summary(start, end, calls=10, batch=1, on_gpu=True)
    reasons = " | ".join(gpu_row["invalid_reasons"])
    assert gpu_row["valid"] is False
    assert "gpu clock fell from 918 to 612 MHz" in reasons and "oc3 (instantaneous over-current) x2" in reasons
    assert "cpu-thermal at or above its passive trip point 99 C" in reasons and "INA alarm: VDD_IN crit alarm" in reasons
    assert "cpu clock" not in reasons  # other cores stay at 1728 MHz: the fastest core is the CPU clock
    before = sampler.summary(start, start + 1e-6, calls=1, batch=1, on_gpu=True)
    assert before["valid"] is True  # the same sampler, a window before anything happened
    after = sampler.summary(middle, end, calls=1, batch=1, on_gpu=True)
    assert not any("oc3" in reason or "gpu clock" in reason for reason in after["invalid_reasons"])


# -- desktops --------------------------------------------------------------------------------------
def test_rapl_counters_with_a_wrap(tree):
    root = tree("x86-rapl")
    sources, missing = open_sources(root)
    assert [s.name for s in sources] == ["rapl"] and "no Jetson" in missing["jetson"]
    rapl = sources[0]
    assert sorted(rapl.zones) == ["package-0", "package-1"]  # the core subzone intel-rapl:0:0 is not a package
    with Telemetry(root, interval_s=10) as sampler:
        start = sampler.mark()
        (root / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("1500000\n")  # +0.5 J
        (root / "sys/class/powercap/intel-rapl:1/energy_uj").write_text("171150\n")  # +0.5 J across the wrap
        end = sampler.mark()
    summary = sampler.summary(start, end, calls=5, batch=1)
    assert summary["energy_source"] == "rapl: package-0+package-1"
    assert summary["energy_mj_per_call"] == pytest.approx(1e3 * 1.0 / 5, rel=1e-6)
    assert summary["valid"] is None  # RAPL has no clocks or throttle reasons: nothing to judge by


def test_rapl_that_only_root_may_read_is_not_available(tree):
    root = tree("x86-rapl")
    for zone in ("intel-rapl:0", "intel-rapl:1"):
        (root / "sys/class/powercap" / zone / "energy_uj").unlink()
    _, missing = open_sources(root)
    assert "not readable (root only" in missing["rapl"]


class FakeNvml(types.ModuleType):
    """The parts of pynvml the NVML source calls, with a thermal slowdown and no energy counter."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        pass

    def __init__(self):
        super().__init__("pynvml")
        self.calls, self.closed = 0, False
        self.clock = {1: 1980, 2: 9501}

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.closed = True

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return "gpu0"

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA RTX 4090"

    def nvmlDeviceGetPowerUsage(self, handle):
        return 300_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self.calls += 1
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetClockInfo(self, handle, which):
        return self.clock[which]

    def nvmlDeviceGetTemperature(self, handle, which):
        return 71

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return 0x1 | 0x40  # idle (benign) and hardware thermal slowdown


def test_nvml_power_clocks_and_throttle_reasons(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with Telemetry("/", interval_s=10) as sampler:
        assert "nvml" in [s.name for s in sampler.sources]
        start = sampler.mark()
        fake.clock[1] = 1410  # the SM clock falls
        end = sampler.mark()
    summary = sampler.summary(start, end, calls=1, batch=4, on_gpu=True)
    nvml = summary["sources"]["nvml"]
    assert nvml["power_w_mean"]["gpu"] == pytest.approx(300.0)
    assert summary["energy_source"] == "nvml: gpu" and summary["energy_mj_per_cloud"] == pytest.approx(
        1e3 * 300.0 * (end - start) / 4)
    assert fake.calls == 1  # "Not Supported" asked once, then skipped
    assert summary["valid"] is False and "NVML: hardware thermal slowdown" in summary["invalid_reasons"]
    assert "gpu clock fell from 1980 to 1410 MHz" in summary["invalid_reasons"]
    assert not any("idle" in reason for reason in summary["invalid_reasons"]) and fake.closed


def test_nvml_missing_is_a_reason_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    _, missing = open_sources("/")
    assert missing["nvml"] == "nvidia-ml-py is not installed: pip install 'foundry-edge[nvml]'"


def test_tegrastats_stream_where_sysfs_rails_are_not_readable(tmp_path, tree, monkeypatch):
    """A Jetson whose hwmon is hidden (a container) falls back to tegrastats; here a stand-in prints lines."""
    line = tegrastats_lines()["orin-nano-jp6"]
    fake = tmp_path / "bin" / "tegrastats"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport sys, time\nwhile True:\n    print({line!r}, flush=True)\n"
                    "    time.sleep(0.05)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{shutil.os.environ['PATH']}")
    source = telemetry.TegrastatsSource([str(fake), "--interval", "50"])
    try:
        assert source.wait_first(5)
        assert source.read()["power_w"]["VDD_IN"] == pytest.approx(7.201) and source.total == "VDD_IN"
    finally:
        source.close()
    root = tree("orin-nano-jp6")
    shutil.rmtree(root / "sys/bus/i2c")
    sources, missing = open_sources(root)
    assert "jetson rails" in missing and missing["tegrastats"] == "only asked on the live system (root /)"
