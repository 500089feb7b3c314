"""The sidecar `<plan>.json` beside a raw TensorRT plan, and the device facts it is checked against.

A plan is tied to the TensorRT version and the GPU it was built on (../shared/research/deploy-stack.md),
so the sidecar records both, and loading refuses a plan from another TensorRT or compute capability.
Plans stay raw (no byte prefix) so trtexec `--loadEngine` and DeepStream read them.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import Path
from typing import Optional

from foundry_edge.errors import FoundryError
from foundry_edge.fileio import write_json_atomic

SCHEMA = "foundry-edge/engine"
SCHEMA_VERSION = 1


def sidecar_path(plan_path: str | Path) -> Path:
    return Path(str(plan_path) + ".json")


def write_sidecar(plan_path: str | Path, data: dict) -> Path:
    return write_json_atomic(sidecar_path(plan_path), {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **data})


def read_sidecar(plan_path: str | Path) -> Optional[dict]:
    """The sidecar dict, or None (with a warning) when the plan has none."""
    import json

    path = sidecar_path(plan_path)
    if not path.is_file():
        warnings.warn(f"{Path(plan_path).name} has no sidecar {path.name}; trying it without version checks", stacklevel=2)
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FoundryError(f"expected a JSON sidecar at {path}, could not read it ({exc}): rebuild the engine") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise FoundryError(f"expected a {SCHEMA} sidecar at {path}, found schema {schema!r}: rebuild the engine")
    model, device = data.get("model"), data.get("device", {})
    if not isinstance(model, dict) or not {"inputs", "outputs"} <= set(model) or not isinstance(device, dict):
        raise FoundryError(f"expected a sidecar with 'model' inputs and outputs and a 'device' section at {path}, "
                           "found it incomplete or edited: rebuild the engine with `foundry-edge build`")
    return data


def check_sidecar(sidecar: dict, current: dict) -> None:
    """Refuse a plan built by another TensorRT or for another GPU; warn on another GPU model of the same kind.

    `current` is `device_facts(...)` of this machine (TensorRT module and version, GPU, compute capability).
    """
    built = sidecar.get("device", {})
    fix = "rebuild it on this device with `foundry-edge build MODEL.onnx`"
    for key, what in (("tensorrt_module", "TensorRT package"), ("tensorrt", "TensorRT"),
                      ("compute_capability", "GPU compute capability")):
        want, have = built.get(key), current.get(key)
        if want and have and want != have:
            raise FoundryError(f"the engine was built for {what} {want}, this device has {have}: {fix}")
    if built.get("gpu") and current.get("gpu") and built["gpu"] != current["gpu"]:
        warnings.warn(f"the engine was built on {built['gpu']}, this is {current['gpu']}: TensorRT may pick slow "
                      "kernels; rebuild on this device for best speed", stacklevel=2)


def device_facts(trt, cuda=None) -> dict:
    """TensorRT, CUDA, GPU and Jetson facts of this machine; GPU fields are None without a CUDA host."""
    from foundry_edge.runtimes import trt_compat

    facts = {"tensorrt_module": trt_compat.module_name(trt), "tensorrt": trt_compat.version(trt),
             "gpu": None, "compute_capability": None, "cuda_runtime": None, "cuda_driver": None}
    if cuda is not None:
        facts.update(cuda.device())
    facts.update(jetson_facts())
    return facts


def jetson_facts() -> dict:
    """L4T release from /etc/nv_tegra_release and JetPack / L4T package versions from dpkg, where present."""
    facts = {}
    release = Path("/etc/nv_tegra_release")
    if release.is_file():
        text = release.read_text(errors="replace")
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
        facts["l4t"] = f"{match.group(1)}.{match.group(2)}" if match else text.splitlines()[0].strip("# ")
    for package, key in (("nvidia-l4t-core", "l4t_core"), ("nvidia-jetpack", "jetpack")):
        version = dpkg_version(package)
        if version:
            facts[key] = version
    return facts


def dpkg_version(package: str) -> Optional[str]:
    try:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
