"""`foundry-edge doctor`: what this machine has for each path (export, ORT, TensorRT build/run) and what is missing."""

from __future__ import annotations

import importlib
import platform
import sys
from typing import Dict, List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero when any path is unavailable."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Report TensorRT, CUDA, GPU, power mode, clocks, power and thermal telemetry, ONNX Runtime providers
    and torch; exit 0 unless --strict."""
    import json

    from foundry_edge.profiling.telemetry import describe

    telemetry = describe("/")
    facts = {**gather_facts(), **telemetry_facts(telemetry)}
    paths = path_status(facts)
    if as_json:
        typer.echo(json.dumps({"facts": facts, "paths": paths, "telemetry": telemetry}, indent=2))
    else:
        for key, value in facts.items():
            typer.echo(f"{key:>22}: {value if value not in (None, '') else '-'}")
        typer.echo("")
        for name, missing in paths.items():
            typer.echo(f"{name:>22}: " + ("ready" if not missing else "missing " + "; ".join(missing)))
    ready = all(not missing for missing in paths.values())
    if strict:
        typer.echo("PASSED" if ready else "FAILED")
        if not ready:
            raise typer.Exit(1)


def version_of(module: str) -> Optional[str]:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception:  # a broken install (e.g. CUDA libs missing) reports as absent, never crashes doctor
        return None


def gather_facts() -> Dict[str, object]:
    from foundry_edge.contracts.device import jetson_facts

    facts: Dict[str, object] = {"python": sys.version.split()[0], "platform": platform.platform(),
                                "machine": platform.machine()}
    facts.update(jetson_facts())
    facts["tensorrt"] = version_of(_trt_module_name())
    facts["tensorrt_module"] = _trt_module_name()
    facts.update(cuda_facts())
    facts["onnx"] = version_of("onnx")
    facts["onnxruntime"] = version_of("onnxruntime")
    facts["onnxruntime_providers"] = ort_providers()
    facts["torch"] = version_of("torch")
    facts["pycuda"] = version_of("pycuda")
    facts["cuda-python"] = version_of("cuda.bindings") or version_of("cuda")
    return facts


def _trt_module_name() -> str:
    import os

    from foundry_edge.runtimes.trt_compat import ENV_MODULE

    return os.environ.get(ENV_MODULE) or "tensorrt"


def cuda_facts() -> Dict[str, object]:
    """GPU name, compute capability, CUDA versions and free memory, or why they are unknown."""
    from foundry_edge.errors import FoundryError
    from foundry_edge.runtimes.cuda_host import open_cuda

    try:
        cuda = open_cuda()
    except FoundryError as exc:
        return {"gpu": None, "cuda_error": str(exc)}
    try:
        free, total = cuda.mem_info()
        return {**cuda.device(), "cuda_host": cuda.label, "device_memory": f"{free / 2**30:.1f} / {total / 2**30:.1f} GiB free"}
    finally:
        cuda.close()


def ort_providers() -> Optional[List[str]]:
    try:
        import onnxruntime
    except Exception:
        return None
    return list(onnxruntime.get_available_providers())


def telemetry_facts(telemetry: dict) -> Dict[str, object]:
    """Power mode, jetson_clocks, clocks, rails and thermals in words, and each telemetry source's state."""
    from foundry_edge.profiling.render import board_text, clocks_text

    facts: Dict[str, object] = {}
    board = telemetry["jetson"]
    if board:
        facts["jetson"] = board_text(board)
        facts["clocks"] = clocks_text(board["clocks_mhz"])
        facts["power_rails"] = ", ".join(f"{k} {v:.2f} W" for k, v in board["rails_w"].items()) or "not readable"
        facts["temperatures"] = ", ".join(f"{k} {v:.1f} C" for k, v in board["temps_c"].items())
        facts["oc_events_since_boot"] = ", ".join(f"{k} {v}" for k, v in board["oc_events"].items())
    facts.update({f"telemetry {name}": state for name, state in telemetry["sources"].items()})
    return facts


def path_status(facts: Dict[str, object]) -> Dict[str, List[str]]:
    """Each path -> what it still needs (empty: ready)."""
    providers = facts.get("onnxruntime_providers") or []
    gpu = [] if facts.get("gpu") else ["a CUDA GPU and driver"]
    cuda_host = [] if facts.get("cuda-python") or facts.get("pycuda") else ["cuda-python or PyCUDA (pip install 'foundry-edge[trt]')"]
    trt = [] if facts.get("tensorrt") else [f"TensorRT's Python module {facts['tensorrt_module']!r} (JetPack; a venv with --system-site-packages)"]
    return {
        "export": [] if facts.get("torch") else ["torch (pip install 'foundry-edge[torch]')"],
        "ort-cpu": [] if "CPUExecutionProvider" in providers else ["onnxruntime (pip install 'foundry-edge[cpu]')"],
        "ort-cuda": ([] if "CUDAExecutionProvider" in providers else ["onnxruntime-gpu (pip install 'foundry-edge[gpu]')"]) + gpu,
        "trt build": trt + gpu,
        "trt run": trt + cuda_host + gpu,
    }
