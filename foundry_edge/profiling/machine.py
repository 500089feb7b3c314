"""Facts about the machine a profile ran on and its own fp32 matmul peak (power mode, clocks and
thermals: telemetry.describe).

Everything here is best effort: a fact that cannot be read is left out (or None), never an error,
because the same code runs on a laptop, a CI runner and a Jetson.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from foundry_edge.contracts.device import jetson_board

# Distributions whose versions a reader needs to compare two reports.
PACKAGES = ("foundry-edge", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
            "tensorrt-rtx", "cuda-python", "pycuda")


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def _run(argv: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a small tool, or None where it is missing or fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's marketing name (x86 /proc/cpuinfo), else lscpu's model name, else the architecture."""
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    for line in (_run(["lscpu"]) or "").splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def ram_bytes() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the figures (metadata only: nothing is imported)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def gpus() -> list[dict]:
    """Discrete GPUs from nvidia-smi; on Jetson (no NVML) the board model from the device tree."""
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    found = []
    for line in (out or "").splitlines():
        name, memory_mib, driver = [part.strip() for part in line.split(",")]
        found.append({"name": name, "memory_bytes": int(float(memory_mib)) * 2**20, "driver": driver})
    board = jetson_board("/").get("model")
    if not found and board:
        found.append({"name": board, "memory_bytes": None, "driver": "integrated (shares system RAM)"})
    return found


def machine_facts(threads: int) -> dict:
    """Everything the report's machine section holds, except the matmul peak (measured in a worker)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "hostname": platform.node(), "os": platform.platform(), "arch": platform.machine(),
        "cpu": cpu_model(), "logical_cores": os.cpu_count(), "physical_cores": physical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads_used": threads, "ram_bytes": ram_bytes(), "gpus": gpus(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # other work competing
        "python_executable": sys.executable, "versions": versions(),
    }


def matmul_gflops(size: int = 2048, seconds: float = 1.0, threads: int | None = None,
                  backends: tuple = ("numpy", "torch")) -> dict:
    """The machine's fp32 matrix-product peak: best GFLOP/s of a (size x size) @ (size x size) product,
    in numpy and, where installed, torch (their BLAS libraries differ); `gflops` is the better one.
    numpy's thread count comes from OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, set by the caller."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    results = {"size": size}
    if "numpy" in backends:
        results["numpy"] = _best_gflops(lambda: a @ a, size, seconds)
    try:
        if "torch" not in backends:
            raise ImportError
        import torch
    except ImportError:
        pass
    else:
        if threads:
            torch.set_num_threads(threads)
        t = torch.from_numpy(a)
        with torch.inference_mode():
            results["torch"] = _best_gflops(lambda: t @ t, size, seconds)
    results["gflops"] = max(results.get("torch", 0.0), results.get("numpy", 0.0))
    return results


def _best_gflops(fn, size: int, seconds: float) -> float:
    fn()  # warm-up: thread pools, page faults
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9
