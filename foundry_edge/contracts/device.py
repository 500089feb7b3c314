"""Facts about the device a plan is built and run on: TensorRT, CUDA, GPU, and a Jetson's board and L4T release.

One reader of a Jetson's own files for every stage: the engine sidecar records these facts and a plan is
checked against them, `doctor` prints them, a profile report names the board. The file readers take `root`
("/" on a device) so tests point them at a recorded tree (tests/fixtures/jetson/); a fact that cannot be
read is left out, never an error, because the same code runs on a laptop, a CI runner and a Jetson.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Optional

L4T_RELEASE = Path("etc/nv_tegra_release")  # "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, ..."
DEVICE_TREE_MODELS = (Path("proc/device-tree/model"), Path("sys/firmware/devicetree/base/model"))
JETSON_PACKAGES = {"nvidia-l4t-core": "l4t_core", "nvidia-jetpack": "jetpack"}  # dpkg package -> fact
_L4T_RE = re.compile(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def device_facts(trt, cuda=None) -> dict:
    """TensorRT, CUDA, GPU and Jetson facts of this machine; GPU fields are None without a CUDA host.

    `trt` is the imported TensorRT module (tensorrt or tensorrt_rtx); `cuda` an open CUDA host with
    `device() -> {gpu, compute_capability, cuda_runtime, cuda_driver}`."""
    facts = {**tensorrt_facts(trt), "gpu": None, "compute_capability": None, "cuda_runtime": None,
             "cuda_driver": None}
    if cuda is not None:
        facts.update(cuda.device())
    facts.update(jetson_facts())
    return facts


def tensorrt_facts(trt) -> dict:
    """The TensorRT package a plan is tied to: its module name (tensorrt, tensorrt_rtx) and version."""
    return {"tensorrt_module": trt.__name__.split(".")[0], "tensorrt": getattr(trt, "__version__", "unknown")}


def jetson_facts(root: str | Path = "/") -> dict:
    """L4T release (the release file's first line where it is in no known form) and the JetPack / L4T package
    versions from this machine's dpkg, where present: what a sidecar records."""
    facts = {}
    release = _read(Path(root) / L4T_RELEASE)
    if release:
        facts["l4t"] = parse_l4t_release(release) or release.partition("\n")[0].strip("# ")
    for package, key in JETSON_PACKAGES.items():
        version = dpkg_version(package)
        if version:
            facts[key] = version
    return facts


def jetson_board(root: str | Path = "/") -> dict:
    """{"model", "l4t"} of a Jetson under root, each where readable; {} elsewhere.

    The device-tree model counts only on a Jetson: named so, or with an L4T release file beside it."""
    root = Path(root)
    model = board_model(root)
    release = _read(root / L4T_RELEASE)
    facts = {"model": model if model and ("jetson" in model.lower() or release) else None,
             "l4t": parse_l4t_release(release or "")}
    return {key: value for key, value in facts.items() if value}


def board_model(root: str | Path = "/") -> Optional[str]:
    """The board's name from the device tree ("NVIDIA Jetson Orin Nano Developer Kit"); None without one."""
    return next(filter(None, (_read(Path(root) / path) for path in DEVICE_TREE_MODELS)), None)


def parse_l4t_release(text: str) -> Optional[str]:
    """/etc/nv_tegra_release's "# R36 (release), REVISION: 4.3, ..." -> "36.4.3"; None for any other text."""
    match = _L4T_RE.search(text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def dpkg_version(package: str) -> Optional[str]:
    """The installed version of a Debian package, or None (not installed, or no dpkg)."""
    try:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None
