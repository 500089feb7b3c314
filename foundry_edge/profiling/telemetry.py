"""Power, clocks, temperatures and throttling, sampled in a background thread while a measurement runs,
and what they say about it: energy per inference over the steady window, and whether a clock dropped or
the device throttled during it (then the measurement is marked invalid).

Sources, each optional; one that cannot be read is "not available" with the reason, never an error:
- jetson: sysfs (profiling/jetson.py): INA3221/INA238 rails, GPU/EMC/CPU clocks, thermal zones against
  their passive trip points, over-current events, INA alarms;
- tegrastats: its lines, where a Jetson's rails are not readable from sysfs (a container without
  /sys/bus/i2c); power between two lines is held;
- nvml: a desktop GPU (and Thor, whose JetPack 7 driver has NVML) through nvidia-ml-py (the [nvml] extra):
  board power, the energy counter, SM and memory clocks, temperature, clock-throttle reasons;
- rapl: a CPU's package energy counters, sys/class/powercap/intel-rapl:N/energy_uj, where readable (root
  only on most kernels since CVE-2020-8694).
Only sysfs sources follow `root`: tools and NVML are asked only when root is "/".

    with Telemetry("/", interval_s=0.05) as telemetry:
        start = telemetry.mark(); ...timed calls...; end = telemetry.mark()
    summary = telemetry.summary(start, end, calls=..., batch=..., on_gpu=True)
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

from foundry_edge.contracts.device import jetson_board
from foundry_edge.profiling import jetson

CLOCK_DROP = 0.10  # a watched clock more than 10 % below its value at the window's start: invalid
WATCH_CPU = ("cpu", "emc")
WATCH_GPU = ("gpu", "emc", "mem")
# nvmlClocksEventReasons bits that slow the GPU (nvml.h); idle, application clocks and sync boost do not count.
NVML_THROTTLE = {0x4: "software power cap", 0x8: "hardware slowdown", 0x20: "software thermal slowdown",
                 0x40: "hardware thermal slowdown", 0x80: "hardware power brake"}


class JetsonSource:
    """sysfs of a Jetson under `root`; `total` names the rail whose energy is the headline figure."""

    name = "jetson"

    def __init__(self, root: Path):
        self.root = root
        self.rails = jetson.find_rails(root)
        self.gpu, self.cpus = jetson.gpu_devfreq(root), jetson.online_cpus(root)
        self.zones, self.oc = jetson.thermal_zones(root), jetson.oc_counters(root)
        self.total = jetson.total_rail(self.rails) or (jetson.SUM_OF_RAILS if self.rails else None)
        self.board = jetson_board(root)

    @property
    def problem(self) -> str | None:
        if not self.board and not self.rails:  # a GPU devfreq alone may be another SoC's (Mali, Adreno)
            return f"no Jetson under {self.root} (no etc/nv_tegra_release, Jetson device-tree model or INA rails)"
        return None

    def read(self) -> dict:
        temps, flags = {}, []
        for zone in self.zones:
            celsius = zone.celsius()
            if celsius is None:
                continue
            temps[zone.name] = celsius
            if zone.passive_c is not None and celsius >= zone.passive_c:
                flags.append(f"{zone.name} at or above its passive trip point {zone.passive_c:g} C")
        for rail in self.rails:
            flags += [f"INA alarm: {alarm}" for alarm in rail.alarms_raised()]
        return {"power_w": jetson.rail_powers(self.rails), "clocks_mhz": jetson.clocks_mhz(self.root, self.gpu, self.cpus),
                "temps_c": temps, "events": {name: jetson.read_int(path) for name, path in self.oc.items()},
                "flags": flags}

    def close(self) -> None:
        pass


class TegrastatsSource:
    """`tegrastats --interval MS` in a child process; `read` returns its latest line, parsed."""

    name = "tegrastats"

    def __init__(self, argv: list[str]):
        self.latest: dict = {}
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._follow, daemon=True)
        self.reader.start()
        self.total = None

    def _follow(self) -> None:
        for line in self.process.stdout:
            parsed = jetson.parse_tegrastats(line)
            if self.total is None and parsed["power_w"]:
                self.total = next((r for r in jetson.TOTAL_RAILS if r in parsed["power_w"]), jetson.SUM_OF_RAILS)
            self.latest = parsed

    def wait_first(self, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not self.latest and time.monotonic() < end and self.process.poll() is None:
            time.sleep(0.01)
        return bool(self.latest)

    def read(self) -> dict:
        latest = self.latest
        return {key: latest[key] for key in ("power_w", "clocks_mhz", "temps_c")} if latest else {}

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class NvmlSource:
    """GPU `index` through NVML; fields the GPU does not support (Orin's "Not Supported") are skipped."""

    name = "nvml"

    def __init__(self, nvml, index: int = 0):
        self.nvml, self.handle = nvml, nvml.nvmlDeviceGetHandleByIndex(index)
        self.device = _text(nvml.nvmlDeviceGetName(self.handle))
        self.total = "gpu"
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        self.fields = {
            "power": lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1e3,  # mW
            "energy": lambda h: nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3,  # mJ since driver load
            "gpu": lambda h: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
            "mem": lambda h: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM)),
            "temp": lambda h: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            "reasons": reasons,
        }

    def read(self) -> dict:
        got = {}
        for key, fn in list(self.fields.items()):
            try:
                got[key] = fn(self.handle)
            except self.nvml.NVMLError:
                del self.fields[key]  # not supported here: ask once
        # Same key: where the GPU has an energy counter, its growth replaces the integrated power.
        out = {"power_w": {"gpu": got["power"]} if "power" in got else {},
               "energy_j": {"gpu": got["energy"]} if "energy" in got else {},
               "clocks_mhz": {key: got[key] for key in ("gpu", "mem") if key in got},
               "temps_c": {"gpu": got["temp"]} if "temp" in got else {}}
        out["flags"] = [f"NVML: {what}" for bit, what in NVML_THROTTLE.items() if int(got.get("reasons", 0)) & bit]
        return out

    def close(self) -> None:
        self.nvml.nvmlShutdown()


class RaplSource:
    """Package energy counters of intel-rapl zones (uJ, wrapping at max_energy_range_uj)."""

    name = "rapl"

    def __init__(self, zones: list[Path]):
        self.zones = {jetson.read(zone / "name") or zone.name: zone for zone in zones}
        self.wrap_j = {name: (jetson.read_int(zone / "max_energy_range_uj") or 0) / 1e6 for name, zone in self.zones.items()}
        self.total = "+".join(self.zones)

    def read(self) -> dict:
        energy = {name: jetson.read_int(zone / "energy_uj") for name, zone in self.zones.items()}
        return {"energy_j": {name: uj / 1e6 for name, uj in energy.items() if uj is not None}}

    def total_of(self, energy: dict) -> float | None:
        """Every package's energy: each counter unwraps on its own, so the sum is taken after."""
        parts = [energy[name] for name in self.zones if name in energy]
        return sum(parts) if parts else None

    def close(self) -> None:
        pass


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- which sources this machine has ----------------------------------------------------------------
def open_sources(root: str | Path = "/", tegrastats_ms: int = 100) -> tuple[list, dict[str, str]]:
    """(sources that can be read, {source: why not}) for `root`."""
    root = Path(root)
    live = root.resolve() == Path("/")
    sources, missing = [], {}
    board = JetsonSource(root)
    if board.problem:
        missing["jetson"] = board.problem
    else:
        sources.append(board)
        if not board.rails:
            missing["jetson rails"] = "no readable INA3221/INA238 hwmon under sys/ (tegrastats used where present)"
    if board.problem is None and not board.rails:
        _add(sources, missing, "tegrastats", lambda: _tegrastats(live, tegrastats_ms))
    _add(sources, missing, "nvml", lambda: _nvml(live))
    _add(sources, missing, "rapl", lambda: _rapl(root))
    return sources, missing


def _add(sources: list, missing: dict, name: str, opener) -> None:
    source = opener()
    if isinstance(source, str):
        missing[name] = source
    else:
        sources.append(source)


def _tegrastats(live: bool, interval_ms: int):
    if not live:
        return "only asked on the live system (root /)"
    if shutil.which("tegrastats") is None:
        return "tegrastats is not on PATH"
    source = TegrastatsSource(["tegrastats", "--interval", str(interval_ms)])
    if not source.wait_first(3 * interval_ms / 1e3 + 2):
        source.close()
        return "tegrastats printed nothing within 2 s"
    return source


def _nvml(live: bool):
    if not live:
        return "only asked on the live system (root /)"
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed: pip install 'foundry-edge[nvml]'"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"NVML did not start ({exc}): no NVIDIA driver here"
    try:
        if pynvml.nvmlDeviceGetCount() > 0:
            return NvmlSource(pynvml)
        problem = "NVML sees no GPU"
    except pynvml.NVMLError as exc:
        problem = f"NVML has no usable GPU ({exc})"
    pynvml.nvmlShutdown()
    return problem


def _rapl(root: Path):
    zones = [zone for zone in sorted(root.glob("sys/class/powercap/intel-rapl:*")) if zone.name.count(":") == 1]
    if not zones:
        return "no sys/class/powercap/intel-rapl zone (not an Intel/AMD CPU with RAPL, or a VM)"
    readable = [zone for zone in zones if jetson.read_int(zone / "energy_uj") is not None]
    if not readable:
        return f"{zones[0] / 'energy_uj'} is not readable (root only since CVE-2020-8694)"
    return RaplSource(readable)


# -- the sampler ------------------------------------------------------------------------------------
class Telemetry:
    """Samples every available source every `interval_s` in a background thread; `mark` samples now."""

    def __init__(self, root: str | Path = "/", interval_s: float = 0.05):
        self.root, self.interval_s = Path(root), interval_s
        self.sources: list = []
        self.missing: dict[str, str] = {}
        self.samples: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Telemetry":
        self.sources, self.missing = open_sources(self.root, max(100, int(self.interval_s * 1e3)))
        if self.sources:
            self.mark()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for source in self.sources:
            source.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.mark()

    def mark(self) -> float:
        """Take a sample now (the caller's thread) and return its time (time.perf_counter, seconds)."""
        with self._lock:
            now = time.perf_counter()
            self.samples.append({"t": now, **{source.name: source.read() for source in self.sources}})
        return now

    def summary(self, start: float, end: float, calls: int, batch: int, on_gpu: bool = False) -> dict:
        """What the window [start, end] of `calls` timed calls of `batch` clouds says (see summarize);
        the GPU's clocks are watched for a GPU measurement, the CPU's otherwise (EMC for both)."""
        with self._lock:
            samples = list(self.samples)
        watch = WATCH_GPU if on_gpu else WATCH_CPU
        return summarize(samples, self.sources, self.missing, start, end, calls, batch, watch)


# -- what a window says -----------------------------------------------------------------------------
def integrate(times: list[float], values: list[float], start: float, end: float) -> float:
    """The integral of a sampled signal over [start, end]: trapezoids, with the signal linearly
    interpolated at both ends (held constant beyond the first and last sample)."""
    inside = [(t, v) for t, v in zip(times, values) if start < t < end]
    points = [(start, _interp(times, values, start)), *inside, (end, _interp(times, values, end))]
    return sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(points, points[1:]))


def counter_delta(times: list[float], values: list[float], start: float, end: float, wrap: float = 0.0) -> float:
    """How much a cumulative counter grew over [start, end], unwrapping it where it fell (`wrap`: its range)."""
    unwrapped, offset = [], 0.0
    for i, value in enumerate(values):
        if i and value < values[i - 1]:
            offset += wrap
        unwrapped.append(value + offset)
    return _interp(times, unwrapped, end) - _interp(times, unwrapped, start)


def _interp(times: list[float], values: list[float], at: float) -> float:
    if at <= times[0]:
        return values[0]
    for (t0, v0), (t1, v1) in zip(zip(times, values), zip(times[1:], values[1:])):
        if t0 <= at <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (at - t0) / (t1 - t0)
    return values[-1]


def _held(times: list[float], values: list[float], at: float) -> float:
    """The value of the last sample at or before `at` (the first sample's before it)."""
    return next((v for t, v in zip(reversed(times), reversed(values)) if t <= at), values[0])


def _series(samples: list[dict], source: str, field: str) -> dict[str, tuple[list, list]]:
    """{key: (times, values)} of one field of one source, where the value was read."""
    out: dict[str, tuple[list, list]] = {}
    for sample in samples:
        for key, value in (sample.get(source, {}).get(field) or {}).items():
            if value is not None:
                times, values = out.setdefault(key, ([], []))
                times.append(sample["t"])
                values.append(float(value))
    return out


def summarize_source(samples: list[dict], source, start: float, end: float, watch: tuple) -> dict:
    """Energy (J) per rail/counter, mean power, clocks (start/min/max), peak temperatures, throttle
    events and clock drops of one source over [start, end]."""
    name, duration = source.name, end - start
    window = [s for s in samples if start <= s["t"] <= end]
    energy = {key: integrate(t, v, start, end) for key, (t, v) in _series(samples, name, "power_w").items()}
    power = {key: joules / duration for key, joules in energy.items()} if duration > 0 else {}
    wrap = getattr(source, "wrap_j", {})
    energy.update({key: counter_delta(t, v, start, end, wrap.get(key, 0.0))
                   for key, (t, v) in _series(samples, name, "energy_j").items()})
    clocks = {key: {"start": _interp(t, v, start), "min": min(v), "max": max(v)}
              for key, (t, v) in _series(window, name, "clocks_mhz").items()}
    drops = [f"{key} clock fell from {c['start']:.0f} to {c['min']:.0f} MHz" for key, c in clocks.items()
             if key in watch and c["min"] < (1 - CLOCK_DROP) * c["start"]]
    events = {}
    for key, (t, v) in _series(samples, name, "events").items():
        grew = _held(t, v, end) - _held(t, v, start)  # whole events: counted by the last sample before each end
        if grew > 0:
            events[key] = grew
    throttle = [f"{key} ({jetson.OC_EVENTS.get(key, 'event')}) x{count:.0f}" for key, count in events.items()]
    throttle += sorted({flag for s in window for flag in s.get(name, {}).get("flags", [])})
    temps = {key: max(v) for key, (t, v) in _series(window, name, "temps_c").items()}
    return {"total": source.total, "energy_j": energy, "power_w_mean": power, "clocks_mhz": clocks, "temps_c_max": temps, "throttle": throttle, "clock_drops": drops,
            "signals": bool(clocks or name in ("jetson", "nvml"))}


def summarize(samples: list[dict], sources: list, missing: dict, start: float, end: float, calls: int,
              batch: int, watch: tuple) -> dict:
    """The row's telemetry: per-source summaries, the headline energy per call and per cloud (mJ) from
    the first source with a total (jetson, tegrastats, nvml, rapl in that order) and `valid`: False if a
    watched clock dropped or anything throttled, None where no source could tell."""
    per_source = {source.name: summarize_source(samples, source, start, end, watch) for source in sources}
    out = {"window_s": end - start, "samples": sum(start <= s["t"] <= end for s in samples),
           "sources": per_source, "unavailable": missing, "energy_mj_per_call": None, "energy_mj_per_cloud": None,
           "energy_source": None, "power_w": None}
    for source in sources:
        energy = per_source[source.name]["energy_j"]
        total = source.total_of(energy) if hasattr(source, "total_of") else energy.get(source.total)
        if total is not None and calls:
            out.update(energy_mj_per_call=1e3 * total / calls, energy_mj_per_cloud=1e3 * total / calls / batch,
                       energy_source=f"{source.name}: {source.total}", power_w=total / (end - start))
            break
    reasons = [reason for s in per_source.values() for reason in s["throttle"] + s["clock_drops"]]
    told = any(s["signals"] for s in per_source.values())
    out["valid"] = (not reasons) if told else None
    out["invalid_reasons"] = reasons if told else [
        "no clock or throttle telemetry here: " + ("; ".join(f"{k}: {v}" for k, v in missing.items()) or "none asked")]
    return out


# -- facts for doctor and the report's machine section ----------------------------------------------
def describe(root: str | Path = "/") -> dict:
    """Power mode, jetson_clocks, clocks, rails, thermals and which telemetry sources exist (and why not)."""
    root = Path(root)
    live = root.resolve() == Path("/")
    board = JetsonSource(root)
    facts: dict = {}
    if board.problem is None:
        limits = jetson.clock_limits(root, board.gpu, board.cpus)
        facts = {**board.board, "power_mode": _power_mode(root, live),
                 "jetson_clocks": _jetson_clocks(board, live),
                 "clocks_mhz": limits, "rails_w": jetson.rail_powers(board.rails), "total_rail": board.total,
                 "temps_c": {z.name: z.celsius() for z in board.zones if z.celsius() is not None},
                 "oc_events": {name: jetson.read_int(path) for name, path in board.oc.items()}}
    sources, missing = open_sources(root)
    available = {source.name: "available" + (f" ({source.device})" if hasattr(source, "device") else "")
                 for source in sources}
    for source in sources:
        source.close()
    return {"jetson": facts or None, "sources": {**available, **{k: f"not available: {v}" for k, v in missing.items()}}}


def _power_mode(root: Path, live: bool) -> dict | None:
    if live and shutil.which("nvpmodel"):
        out = _tool(["nvpmodel", "-q"])
        parsed = jetson.parse_nvpmodel_query(out or "")
        if parsed:
            return {**parsed, "source": "nvpmodel -q"}
    return jetson.power_mode(root)


def _jetson_clocks(board: JetsonSource, live: bool) -> dict:
    if live and shutil.which("jetson_clocks"):
        shown = jetson.parse_jetson_clocks_show(_tool(["jetson_clocks", "--show"]) or "")
        if shown["locked"] is not None:
            return {"locked": shown["locked"], "source": "jetson_clocks --show"}
    return {"locked": jetson.clocks_locked(board.gpu, board.cpus),
            "source": "sysfs: min == max on every online CPU and the GPU"}


def _tool(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None
