"""Jetson power, clocks, thermals and power mode from sysfs, and the text nvpmodel, jetson_clocks and
tegrastats print. Numpy-free and torch-free: this runs on a bare JetPack.

Every reader takes `root`, the folder under which `sys/`, `etc/`, `proc/` and `var/` are looked up, so
tests point it at a recorded tree; on a device it is "/". Paths and units, from NVIDIA's Jetson Linux
developer guide (Platform Power and Performance, JetPack 5/6/7), the kernel's hwmon documentation
(ina3221, ina238) and jetson-stats (rbonghi/jetson_stats):

- rails: INA3221 hwmon (JetPack >= 5) under sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon* or sys/class/hwmon/*
  named "ina3221": in{1,2,3}_label, in*_input (bus mV), curr*_input (mA), curr*_{crit,max}_alarm. "NC"
  channels and in7 ("sum of shunt voltages") are not rails. INA238 (Thor's carrier VIN): in1_input (mV),
  curr1_input (mA), power1_input (uW), no per-channel label.
- GPU clock: sys/class/devfreq/<dev>/{cur,min,max}_freq (Hz), <dev> the GPU: device/of_node/name gv11b
  (Xavier), ga10b (Orin, JetPack 5) or gpu (Orin, JetPack 6), or gpu-gpc-0 (JetPack 7).
- EMC clock: sys/kernel/debug/bpmp/debug/clk/emc/rate (Hz; debugfs is root-only).
- CPU clocks: sys/devices/system/cpu/cpu*/cpufreq/scaling_{cur,min,max}_freq (kHz).
- thermal zones: sys/class/thermal/thermal_zone*/{type,temp} (milli-degC; -256000 is a powered-off
  sensor, e.g. cv0 while the CV engines idle), trip_point_*_{type,temp}.
- throttle events: the soctherm_oc hwmon's oc{1,2,3}_event_cnt (under-voltage, average and instantaneous
  over-current events since boot, Orin and Thor).
- power mode: var/lib/nvpmodel/status ("pmode:0002") named by etc/nvpmodel.conf's
  "< POWER_MODEL ID=2 NAME=15W >".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

GPU_NODES = ("gv11b", "ga10b", "gp10b", "gb10b", "gpu")
# The rail that is the module's (or Thor's board) input, where the board has one; else the rails are summed.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
SUM_OF_RAILS = "sum of rails"
OFF_SENSOR_MC = -100_000  # below -100 degC a zone reads a powered-off sensor (Orin prints -256000)
OC_EVENTS = {"oc1": "under-voltage", "oc2": "average over-current", "oc3": "instantaneous over-current"}

def read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def read_int(path: Path | None) -> int | None:
    text = read(path) if path is not None else None
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


# -- rails ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rail:
    """One measured supply: INA3221 channels from bus mV x mA, INA238 from its own uW."""

    name: str
    chip: str
    volt: Path | None = None
    curr: Path | None = None
    power: Path | None = None
    alarms: tuple = ()

    def watts(self) -> float | None:
        if self.power is not None:
            micro = read_int(self.power)
            return None if micro is None else micro / 1e6
        mv, ma = read_int(self.volt), read_int(self.curr)
        return None if mv is None or ma is None else mv * ma / 1e6

    def alarms_raised(self) -> list[str]:
        return [f"{self.name} {path.name.split('_', 1)[1].replace('_', ' ')}" for path in self.alarms
                if read_int(path) == 1]


def hwmon_dirs(root: Path) -> list[Path]:
    """Every hwmon folder once: the INA drivers' i2c folders (JetPack 5/6) and sys/class/hwmon."""
    candidates = [*sorted(root.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")),
                  *sorted(root.glob("sys/bus/i2c/drivers/ina238/*/hwmon/hwmon*")),
                  *sorted(root.glob("sys/class/hwmon/hwmon*"))]
    seen, found = set(), []
    for folder in candidates:
        real = folder.resolve()
        if real not in seen:
            seen.add(real)
            found.append(folder)
    return found


def find_rails(root: Path) -> list[Rail]:
    rails: list[Rail] = []
    for folder in hwmon_dirs(root):
        chip = read(folder / "name") or ""
        if chip.startswith("ina3221"):
            rails += _ina3221_rails(folder)
        elif chip.startswith("ina238"):
            name = read(folder / "label") or "VIN"  # Thor's carrier-board input (jetson-stats #900)
            rails.append(Rail(name, "ina238", folder / "in1_input", folder / "curr1_input",
                              folder / "power1_input" if (folder / "power1_input").exists() else None,
                              (folder / "power1_max_alarm",)))
    return rails


def _ina3221_rails(folder: Path) -> list[Rail]:
    rails = []
    for label in sorted(folder.glob("in*_label")):
        channel = label.name[2:].split("_")[0]
        name = read(label) or ""
        if not channel.isdigit() or channel == "7" or name in ("", "NC") or name.startswith("sum of"):
            continue
        rails.append(Rail(name, "ina3221", folder / f"in{channel}_input", folder / f"curr{channel}_input",
                          alarms=(folder / f"curr{channel}_crit_alarm", folder / f"curr{channel}_max_alarm")))
    return rails


def total_rail(rails: list[Rail]) -> str | None:
    """The input rail's name, or None where the module has none (AGX Xavier/Orin: sum the rails, as jtop)."""
    return next((rail.name for rail in rails if rail.name in TOTAL_RAILS), None)


def rail_powers(rails: list[Rail]) -> dict[str, float]:
    """{rail: W} plus the total under its rail's name or SUM_OF_RAILS."""
    watts = {rail.name: rail.watts() for rail in rails}
    watts = {name: value for name, value in watts.items() if value is not None}
    if watts and total_rail(rails) is None:
        watts[SUM_OF_RAILS] = sum(watts.values())
    return watts


# -- clocks -----------------------------------------------------------------------------------------
def gpu_devfreq(root: Path) -> Path | None:
    for folder in sorted(root.glob("sys/class/devfreq/*")):
        node = read(folder / "device" / "of_node" / "name") or folder.name.rsplit(".", 1)[-1]
        if node in GPU_NODES or folder.name.startswith("gpu-gpc"):
            return folder
    return None


def online_cpus(root: Path) -> list[Path]:
    cpus = sorted(root.glob("sys/devices/system/cpu/cpu[0-9]*"), key=lambda p: int(p.name[3:]))
    return [cpu for cpu in cpus if read(cpu / "online") != "0" and (cpu / "cpufreq").is_dir()]


EMC_RATE = Path("sys/kernel/debug/bpmp/debug/clk/emc/rate")


def clocks_mhz(root: Path, gpu: Path | None, cpus: list[Path]) -> dict[str, float]:
    """{"gpu", "emc", "cpu"} current clocks in MHz, where readable; "cpu" is the fastest online core."""
    out = {}
    hz = read_int(gpu / "cur_freq") if gpu else None
    if hz is not None:
        out["gpu"] = hz / 1e6
    emc = read_int(root / EMC_RATE)
    if emc is not None:
        out["emc"] = emc / 1e6
    cores = [read_int(cpu / "cpufreq" / "scaling_cur_freq") for cpu in cpus]
    cores = [khz for khz in cores if khz is not None]
    if cores:
        out["cpu"] = max(cores) / 1e3
    return out


def clock_limits(root: Path, gpu: Path | None, cpus: list[Path]) -> dict[str, dict]:
    """Current, min and max of the GPU, EMC and CPU clocks in MHz, with governors: what `doctor` shows."""
    out: dict[str, dict] = {}
    if gpu is not None:
        out["gpu"] = {**{key: _mhz(read_int(gpu / f"{key}_freq"), 1e6) for key in ("cur", "min", "max")},
                      "governor": read(gpu / "governor"), "device": gpu.name}
    emc = read_int(root / EMC_RATE)
    out["emc"] = {"cur": _mhz(emc, 1e6)} if emc is not None else {
        "reason": f"{EMC_RATE} is not readable (debugfs needs root)"}
    if cpus:
        pick = {"cur": max, "min": min, "max": max}  # the fastest core now, the lowest floor, the highest ceiling
        freqs = {key: [read_int(cpu / "cpufreq" / f"scaling_{key}_freq") for cpu in cpus] for key in pick}
        out["cpu"] = {key: _mhz(pick[key]([v for v in values if v is not None], default=None), 1e3)
                      for key, values in freqs.items()}
        governors = {read(cpu / "cpufreq" / "scaling_governor") for cpu in cpus}
        out["cpu"].update(online=len(cpus), governor=", ".join(sorted(g for g in governors if g)))
    return out


def _mhz(value: int | None, scale: float) -> float | None:
    return None if value is None else value / scale


def clocks_locked(gpu: Path | None, cpus: list[Path]) -> bool | None:
    """What jetson_clocks does, read back: every online CPU and the GPU at min == max. None: unknown."""
    pairs = [(read_int(cpu / "cpufreq" / "scaling_min_freq"), read_int(cpu / "cpufreq" / "scaling_max_freq"))
             for cpu in cpus]
    if gpu is not None:
        pairs.append((read_int(gpu / "min_freq"), read_int(gpu / "max_freq")))
    pairs = [(low, high) for low, high in pairs if low is not None and high is not None]
    return all(low == high for low, high in pairs) if pairs else None


# -- thermals and throttle events -------------------------------------------------------------------
@dataclass(frozen=True)
class Zone:
    name: str
    temp: Path
    passive_c: float | None  # the lowest passive trip point: above it the kernel throttles

    def celsius(self) -> float | None:
        milli = read_int(self.temp)
        return None if milli is None or milli <= OFF_SENSOR_MC else milli / 1e3


def thermal_zones(root: Path) -> list[Zone]:
    zones = []
    for folder in sorted(root.glob("sys/class/thermal/thermal_zone*"), key=lambda p: int(p.name[12:] or 0)):
        name = read(folder / "type")
        if not name:
            continue
        passive = [read_int(folder / f"{trip.name[:-5]}_temp") for trip in folder.glob("trip_point_*_type")
                   if read(trip) == "passive"]
        passive = [milli / 1e3 for milli in passive if milli is not None]
        zones.append(Zone(name, folder / "temp", min(passive) if passive else None))
    return zones


def oc_counters(root: Path) -> dict[str, Path]:
    """{"oc1": path, ...} of the soctherm_oc hwmon's event counters."""
    for folder in hwmon_dirs(root):
        if read(folder / "name") == "soctherm_oc":
            return {path.name.split("_")[0]: path for path in sorted(folder.glob("oc*_event_cnt"))}
    return {}


# -- power mode and jetson_clocks -------------------------------------------------------------------
POWER_MODEL_RE = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>")
PM_DEFAULT_RE = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>")


def parse_nvpmodel_conf(text: str) -> dict:
    """/etc/nvpmodel.conf -> {"modes": {id: name}, "default": id or None}."""
    default = PM_DEFAULT_RE.search(text)
    return {"modes": {int(i): name for i, name in POWER_MODEL_RE.findall(text)},
            "default": int(default.group(1)) if default else None}


def parse_nvpmodel_query(text: str) -> dict | None:
    """`nvpmodel -q` ("NV Power Mode: MAXN" then the id; NVPM WARN lines around it) -> {"id", "name"}."""
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            following = next((rest for rest in lines[i + 1:] if rest.isdigit()), None)
            return {"name": line.split(":", 1)[1].strip(), "id": int(following) if following else None}
    return None


def power_mode(root: Path) -> dict | None:
    """The nvpmodel mode from var/lib/nvpmodel/status and etc/nvpmodel.conf (no tool, no root)."""
    status = read(root / "var/lib/nvpmodel/status") or ""
    match = re.search(r"pmode:(\d+)", status)
    if not match:
        return None
    mode = int(match.group(1))
    conf = parse_nvpmodel_conf(read(root / "etc/nvpmodel.conf") or "")
    return {"id": mode, "name": conf["modes"].get(mode), "source": "var/lib/nvpmodel/status"}


_FIELD_RE = re.compile(r"(\w+)=(\S+)")


def parse_jetson_clocks_show(text: str) -> dict:
    """`jetson_clocks --show` -> {"cpus": {cpuN: {...}}, "gpu": {...}, "emc": {...}, "power_mode", "locked"}.

    Frequencies are as printed (kHz for CPUs, Hz for GPU and EMC). `locked` is jetson_clocks' own test:
    every online CPU and the GPU at min == max (and EMC's FreqOverride=1 where printed)."""
    out: dict = {"cpus": {}, "gpu": None, "emc": None, "power_mode": None}
    for line in text.splitlines():
        line = line.strip()
        head = line.split(":", 1)[0].split(" ", 1)[0]
        fields = {key: value for key, value in _FIELD_RE.findall(line)}
        if re.fullmatch(r"cpu\d+", head):
            out["cpus"][head] = fields
        elif head in ("GPU", "EMC"):
            out[head.lower()] = fields
        elif line.startswith("NV Power Mode:"):
            out["power_mode"] = line.split(":", 1)[1].strip()
    pinned = [f.get("MinFreq") == f.get("MaxFreq") for f in out["cpus"].values() if f.get("Online", "1") == "1"]
    if out["gpu"]:
        pinned.append(out["gpu"].get("MinFreq") == out["gpu"].get("MaxFreq"))
    if out["emc"] and "FreqOverride" in out["emc"]:
        pinned.append(out["emc"]["FreqOverride"] == "1")
    out["locked"] = all(pinned) if pinned else None
    return out


# -- tegrastats -------------------------------------------------------------------------------------
_RAIL_RE = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW")
_TEMP_RE = re.compile(r"\b([A-Za-z][\w]*)@(-?[\d.]+)C\b")
_CPU_RE = re.compile(r"\bCPU \[([^\]]*)\]")
_GR3D_RE = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_EMC_RE = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_RAM_RE = re.compile(r"\bRAM (\d+)/(\d+)MB")


def parse_tegrastats(line: str) -> dict:
    """One tegrastats line (JetPack 5, 6 or 7) -> {"power_w", "clocks_mhz", "temps_c", "loads", "ram_mb"}.

    Rails are "NAME cur mW/avg mW" (JetPack >= 5); GR3D_FREQ is "x%", "x%@f" or "x%@[f,f]" (one per GPC);
    EMC_FREQ appears only when tegrastats runs as root; a sensor at -256C is off and left out."""
    power = {name: int(cur) / 1e3 for name, cur, _avg in _RAIL_RE.findall(line) if name != "NC"}
    if power and not any(name in TOTAL_RAILS for name in power):
        power[SUM_OF_RAILS] = sum(power.values())
    clocks, loads = {}, {}
    cpu = _CPU_RE.search(line)
    if cpu:
        cores = [part.split("%@") for part in cpu.group(1).split(",") if "%@" in part]
        if cores:
            clocks["cpu"] = float(max(int(freq) for _, freq in cores))
            loads["cpu"] = sum(int(load) for load, _ in cores) / len(cores)
    gr3d = _GR3D_RE.search(line)
    if gr3d:
        loads["gpu"] = float(gr3d.group(1))
        if gr3d.group(2):
            clocks["gpu"] = float(max(int(f) for f in gr3d.group(2).split(",") if f))
    emc = _EMC_RE.search(line)
    if emc:
        loads["emc"] = float(emc.group(1))
        if emc.group(2):
            clocks["emc"] = float(emc.group(2))
    temps = {name: float(value) for name, value in _TEMP_RE.findall(line) if float(value) * 1e3 > OFF_SENSOR_MC}
    ram = _RAM_RE.search(line)
    return {"power_w": power, "clocks_mhz": clocks, "temps_c": temps, "loads": loads,
            "ram_mb": [int(ram.group(1)), int(ram.group(2))] if ram else None}
