"""One measurement in a fresh process: `python -m foundry_edge.profiling.worker SPEC.json RESULT.json`.

A fresh process per measurement keeps memory figures honest (peak RSS is this process's own, with
nothing left over from an earlier model) and turns an out-of-memory or a crash into a result the
parent records, never a crash of the whole profile. The spec and result are plain JSON:

    spec:   {"kind": "latency" | "matmul-peak" | "operators" | "export", "runtime", "model": {"spec", "overrides",
             "path"}, "points", "batch", "warmup_s", "iterations" | "duration_s", "threads",
             "memory_limit_bytes", "seed", "telemetry": {"root", "interval_s"} | None, "stage_runs"}
    result: {"status": "ok" | "error", "error", "error_kind", ...figures (see run_latency)}

What is timed: `runtime.infer(points)` on a (B, N, 3) float32 host array -> dict of host arrays, so
host-to-device and device-to-host copies and the in-graph grouping (FPS + kNN) are included.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from foundry_edge.errors import FoundryError
from foundry_edge.contracts.artifacts import PRESET_SEED

CUDA_RUNTIMES = ("ort-cuda", "ort-trt", "trt")


def peak_rss_bytes() -> int:
    """This process's peak resident set size since exec.

    Linux: VmHWM from /proc/self/status. Not ru_maxrss: a child inherits its parent's ru_maxrss across
    fork + exec, so a worker started by a parent holding a large model would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


def device_free_bytes() -> int | None:
    """Free device memory from cudaMemGetInfo (cuda-python), or None without a usable CUDA device."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    err, free, _total = cudart.cudaMemGetInfo()
    return int(free) if int(err) == 0 else None


def limit_memory(limit_bytes: int | None) -> None:
    """Cap this process's address space (RLIMIT_AS) so an over-large model fails here, not the host."""
    if limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def open_for(spec: dict):
    """The runtime for a spec: a prepared file (ONNX / plan), or a model built in this process (torch).
    The runtime sets its own threads (torch.set_num_threads, ORT intra_op_num_threads)."""
    from foundry_edge.runtimes import open_runtime

    model = spec["model"]
    if model.get("path"):
        unchecked = {"sidecar_check": False} if spec["runtime"] == "trt" and not spec.get("sidecar_check", True) else {}
        return open_runtime(model["path"], runtime=spec["runtime"], threads=spec["threads"], **unchecked)
    from foundry_edge.profiling.subjects import build_model

    return open_runtime(build_model(model["spec"], spec["points"], model.get("overrides") or {},
                                    model.get("seed", PRESET_SEED)),
                        runtime=spec["runtime"], threads=spec["threads"])


def make_clouds(batch: int, points: int, seed: int = 0):
    """(B, N, 3) float32 clouds, deterministic for a seed: export's example clouds (foundry_edge.data.loader)."""
    from foundry_edge.data.loader import CloudLoader

    return CloudLoader(["example"], points, batch, seed=seed)().points


def run_latency(spec: dict) -> dict:
    """Load, warm up, time (telemetry sampled meanwhile); report latency statistics, throughput, memory,
    energy and validity, and for torch the time by stage."""
    from foundry_edge.profiling.timing import summarize, time_calls

    clouds = make_clouds(spec["batch"], spec["points"], spec.get("seed", 0))
    on_device = spec["runtime"] in CUDA_RUNTIMES  # no CUDA context (hundreds of MB) for a CPU measurement
    device_free = device_free_bytes if on_device else (lambda: None)
    rss_start, free_start = current_rss_bytes(), device_free()
    t0 = time.perf_counter()
    with open_for(spec) as rt, telemetry_for(spec) as telemetry:
        load_s = time.perf_counter() - t0
        rss_loaded, free_loaded = current_rss_bytes(), device_free()
        outputs = rt.infer(clouds)
        window = []
        peak_before = beside_peak(spec, on_device)
        samples = time_calls(lambda: rt.infer(clouds), spec["warmup_s"], spec.get("iterations"),
                             spec.get("duration_s"), on_start=lambda: window.append(telemetry.mark()))
        window.append(telemetry.mark())
        peak_after = beside_peak(spec, on_device)
        free_end = device_free()
        runtime_memory, provider = rt.memory(), rt.provider
        stages = runtime_stages(rt, spec["runtime"], clouds, spec.get("stage_runs", 0))
    latency = summarize(samples)
    used = [free_start - free for free in (free_loaded, free_end) if None not in (free_start, free)]
    return {
        "latency_ms": latency, "samples_ms": samples, "iterations": len(samples),
        "throughput_cps": spec["batch"] * 1e3 / latency["mean"], "load_s": load_s, "provider": provider,
        "outputs": {name: list(value.shape) for name, value in outputs.items()},
        "telemetry": telemetry.summary(*window, len(samples), spec["batch"], on_device),
        "matmul_peak": {"before_gflops": peak_before, "after_gflops": peak_after},
        "stages_ms": stages,
        "memory": {"rss_start_bytes": rss_start, "rss_loaded_bytes": rss_loaded, "peak_rss_bytes": peak_rss_bytes(),
                   "device_used_bytes": max(used) if used else None,  # cudaMemGetInfo: free before - after
                   "runtime_device_bytes": runtime_memory.get("device_bytes"),  # e.g. the engine's device memory
                   "runtime": runtime_memory},
    }


class _NoTelemetry:
    """Telemetry off: marks keep time, the summary is None."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def mark(self) -> float:
        return time.perf_counter()

    def summary(self, *args) -> None:
        return None


def telemetry_for(spec: dict):
    """The spec's Telemetry sampler, or a stand-in that only keeps time when telemetry is off."""
    settings = spec.get("telemetry")
    if not settings:
        return _NoTelemetry()
    from foundry_edge.profiling.telemetry import Telemetry

    return Telemetry(settings["root"], settings["interval_s"])


def runtime_stages(rt, runtime: str, clouds, runs: int) -> dict | None:
    """Median ms per stage over `runs` extra calls: torch by timers at its modules (profiling/stages.py),
    TensorRT by its per-layer profiler and synchronized copies (TrtRuntime.stage_times), ONNX Runtime on a GPU
    by the graph cut at its grouping, each half on device memory, copies apart (profiling/operators.py); ONNX
    Runtime CPU's stages come from `--operators`."""
    if runs < 1 or runtime not in ("torch", "trt", "ort-cuda", "ort-trt"):
        return None
    if runtime == "trt":
        return rt.stage_times(clouds, runs)
    if runtime in ("ort-cuda", "ort-trt"):
        from foundry_edge.profiling.operators import stage_times
        from foundry_edge.runtimes.ort import PROVIDERS

        split = stage_times(rt.path, clouds, rt.threads, runs, tuple(PROVIDERS[runtime]), device="cuda")
        return {name[:-3]: value for name, value in split.items()
                if name.endswith("_ms") and name not in ("end_to_end_ms", "stages_sum_ms", "copies_ms")}
    import torch

    from foundry_edge.profiling.stages import stage_times

    sync = torch.cuda.synchronize if rt.provider == "torch-cuda" else (lambda: None)
    return stage_times(rt.model, lambda: rt.infer(clouds), runs, sync)


def beside_peak(spec: dict, on_device: bool) -> float | None:
    """This worker's fp32 matmul GFLOP/s, right before or after its measurement (None on a GPU runtime).

    A peak measured apart, under other load, made % of peak exceed 100; one measured beside each row
    sees the same machine state. The BLAS of the runtime's own framework: torch for torch, else numpy.
    """
    if on_device or not spec.get("peak_s"):
        return None
    from foundry_edge.profiling.machine import matmul_gflops

    backends = ("torch",) if spec["runtime"] == "torch" else ("numpy",)
    return matmul_gflops(spec.get("peak_size", 1024), spec["peak_s"], spec["threads"], backends)["gflops"]


def run_matmul_peak(spec: dict) -> dict:
    from foundry_edge.profiling.machine import matmul_gflops

    backends = tuple(spec.get("backends", ("numpy", "torch")))  # torch only where a torch runtime is profiled
    return {"matmul": matmul_gflops(spec.get("size", 2048), spec.get("seconds", 1.0), spec["threads"], backends)}


def run_operators(spec: dict) -> dict:
    from foundry_edge.profiling.operators import profile_operators

    clouds = make_clouds(spec["batch"], spec["points"], spec.get("seed", 0))
    return profile_operators(spec["model"]["path"], clouds, spec["threads"], spec["iterations"])


def run_export(spec: dict) -> dict:
    """Export in a worker too: a long or failing export is bounded by the time-out and recorded."""
    from foundry_edge.profiling.subjects import export_to_cache

    model = spec["model"]
    return export_to_cache(model["spec"], model.get("overrides") or {}, spec["points"], model["path"],
                           spec.get("max_batch", 8), model.get("seed", PRESET_SEED), spec.get("grouping", "graph"))


KINDS = {"latency": run_latency, "matmul-peak": run_matmul_peak, "operators": run_operators, "export": run_export}


def measure(spec: dict) -> dict:
    """Run one spec; user-fixable problems and out-of-memory become an `error`, bugs stay tracebacks."""
    limit_memory(spec.get("memory_limit_bytes"))
    try:
        result = KINDS[spec["kind"]](spec)
    except MemoryError as exc:
        return {"status": "error", "error_kind": "oom", "error": f"out of memory (MemoryError: {exc})"}
    except FoundryError as exc:
        return {"status": "error", "error_kind": "error", "error": str(exc)}
    return {"status": "ok", "error": None, "error_kind": None, **result}


def main(argv: list[str]) -> int:
    from foundry_edge.fileio import write_json_atomic

    spec_path, result_path = argv
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    write_json_atomic(result_path, measure(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
