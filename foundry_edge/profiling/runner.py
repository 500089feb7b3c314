"""The profile: every (model, runtime, point count, batch) measured in its own worker process.

    config -> machine facts + matmul peak -> per model and point count: cost and the runtime's file
           -> one worker per measurement (spec JSON in, result JSON out) -> comparisons -> report dict

A worker that runs out of memory, is killed, or runs past the time-out becomes a result with an
`error` field; a model that does not load or a runtime that is not installed likewise, and the other
measurements go on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from foundry_edge.contracts.artifacts import RUNTIMES
from foundry_edge.errors import FoundryError, MissingDependencyError
from foundry_edge.data.grouping.placement import PLACEMENTS_OR_AUTO, choose_placement
from foundry_edge.profiling.subjects import Subject, artifact_for, describe

WORKER = "foundry_edge.profiling.worker"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class ProfileConfig:
    """What to measure and how; the CLI's options map one to one onto these fields."""

    students: list[Subject]
    teacher: Subject | None = None
    runtimes: list[str] = field(default_factory=lambda: ["torch"])
    points: list[int] = field(default_factory=lambda: [1024])
    batches: list[int] = field(default_factory=lambda: [1])
    warmup_s: float = 0.2  # trtexec's default warm-up
    iterations: int | None = None
    duration_s: float | None = None  # 3 s (trtexec's default) when neither is given
    threads: int = field(default_factory=default_threads)
    timeout_s: float = 600.0
    memory_limit_bytes: int | None = None
    out_dir: Path = Path("profile")
    operators: bool = False  # add an ONNX Runtime profile by operator type (ort-cpu measurements)
    operator_runs: int = 5  # profiled runs per operator profile (after one untimed warm-up run)
    matmul_size: int = 2048  # the peak's (size x size) @ (size x size) fp32 product, timed for matmul_s
    matmul_s: float = 1.0
    beside_peak_s: float = 0.3  # each latency worker's own peak, timed before and after it (0: off)
    sidecar_check: bool = True  # TensorRT plans load only with a complete, matching sidecar
    telemetry_interval_s: float = 0.05  # power/clock/thermal sampling period during each measurement; 0: off
    telemetry_root: Path = Path("/")  # where sysfs is read (tests point it at a recorded tree)
    stage_runs: int = 5  # extra torch / TensorRT runs timed by stage (0: none)
    accuracy: dict = field(default_factory=dict)  # {model label: accuracy %}, for the accuracy-vs-latency plot
    grouping: str = "graph"  # where presets/checkpoints group once exported: graph, host, or auto (measured best)

    def __post_init__(self):
        if self.iterations is not None and self.duration_s is not None:
            raise FoundryError("give either --iterations or --duration, not both")
        if self.iterations is None and self.duration_s is None:
            self.duration_s = 3.0
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown:
            raise FoundryError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
        for name, values in (("points", self.points), ("batch", self.batches)):
            if not values or min(values) < 1:
                raise FoundryError(f"--{name} needs positive integers, got {values}")
        if self.grouping not in PLACEMENTS_OR_AUTO:
            raise FoundryError(f"--grouping must be one of {', '.join(PLACEMENTS_OR_AUTO)}, got {self.grouping!r}")
        if not self.students and self.teacher is None:
            raise FoundryError("nothing to profile: give --student and/or --teacher")
        if (self.iterations is not None and self.iterations < 1 or self.threads < 1 or self.timeout_s <= 0
                or self.duration_s is not None and self.duration_s <= 0 or self.warmup_s < 0
                or self.telemetry_interval_s < 0):
            raise FoundryError("--iterations, --threads, --timeout and --duration must be positive, --warmup and "
                               "--telemetry-ms not negative")
        labels = [subject.label for subject in self.subjects]
        if len(set(labels)) != len(labels):
            raise FoundryError(f"each model may be named once, got {labels}")
        self.out_dir, self.telemetry_root = Path(self.out_dir), Path(self.telemetry_root)
        unknown = sorted(set(self.accuracy) - set(labels))
        if unknown:
            raise FoundryError(f"--accuracy names {unknown}, which are not profiled here; use the model names {labels}")

    @property
    def subjects(self) -> list[Subject]:
        return ([self.teacher] if self.teacher else []) + list(self.students)

    def placement(self, points: int) -> tuple[str, str | None]:
        """(graph|host, why) for exports at `points`: --grouping as given, or with auto the measured best for the
        first ONNX/TensorRT runtime profiled (torch groups inside the model whatever the export does)."""
        if self.grouping != "auto":
            return self.grouping, None
        runtime = next((r for r in self.runtimes if r != "torch"), "ort-cpu")
        return choose_placement(runtime, points)


def runtime_problem(runtime: str) -> str | None:
    """Why `runtime` cannot run here (naming the extra that brings it), or None."""
    needs = {"torch": ("torch", "torch"), "ort-cpu": ("onnxruntime", "cpu"), "ort-cuda": ("onnxruntime", "gpu"),
             "ort-trt": ("onnxruntime", "gpu"), "trt": ("tensorrt", "trt")}
    module, extra = needs[runtime]
    if importlib.util.find_spec(module) is None:
        return f"runtime {runtime} needs '{module}', which is not installed; install it with: pip install 'foundry-edge[{extra}]'"
    provider = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}.get(runtime)
    if provider:
        import onnxruntime

        if provider not in onnxruntime.get_available_providers():
            return (f"runtime {runtime} needs ONNX Runtime's {provider}, found only "
                    f"{onnxruntime.get_available_providers()}; install it with: pip install 'foundry-edge[gpu]'")
    return None


def run_worker(spec: dict, timeout_s: float, threads: int, module: str = WORKER) -> dict:
    """Run one spec in a fresh `python -m module` process; always return a result dict."""
    env = {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}
    with tempfile.TemporaryDirectory(prefix="foundry-profile-") as tmp:
        spec_path, result_path, log_path = (Path(tmp) / name for name in ("spec.json", "result.json", "log.txt"))
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        start = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log:
            child = subprocess.Popen([sys.executable, "-m", module, str(spec_path), str(result_path)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                code, timed_out = child.wait(timeout=timeout_s), False
            except subprocess.TimeoutExpired:
                child.kill()
                code, timed_out = child.wait(), True
            except BaseException:  # Ctrl-C, SIGTERM, SIGHUP in the parent: no worker outlives the command
                child.kill()
                child.wait()
                raise
        wall_s = time.perf_counter() - start
        if result_path.is_file() and not timed_out:
            result = json.loads(result_path.read_text(encoding="utf-8"))
        else:
            result = _failure(code, timed_out, timeout_s, log_path.read_text(errors="replace"),
                              spec.get("memory_limit_bytes"))
    result["wall_s"] = wall_s
    return result


def _failure(code: int, timed_out: bool, timeout_s: float, log: str, memory_limit: int | None) -> dict:
    """A result for a worker that wrote none: time-out, killed (out of memory), or a crash."""
    last = next((line for line in reversed(log.strip().splitlines()) if line.strip()), "no output")
    if timed_out:
        return {"status": "error", "error_kind": "timeout",
                "error": f"timed out after {timeout_s:g} s; raise --timeout or lower --points/--batches/--duration"}
    signame = signal.Signals(-code).name if code < 0 else f"exit code {code}"
    if memory_limit:  # under RLIMIT_AS, allocation failures surface as MemoryError, bad_alloc, failed mmaps...
        return {"status": "error", "error_kind": "oom",
                "error": f"the worker failed under the {memory_limit / 2**20:.0f} MiB address-space limit, most "
                         f"likely out of memory ({signame}): {last[:300]}; raise --memory-limit"}
    if code == -signal.SIGKILL or "MemoryError" in log:
        return {"status": "error", "error_kind": "oom",
                "error": f"the worker ran out of memory ({signame}, SIGKILL is most often the OOM killer): {last[:300]}"}
    return {"status": "error", "error_kind": "crash", "error": f"the worker failed ({signame}): {last[:300]}"}


Progress = Callable[[str], None]


def run_profile(config: ProfileConfig, progress: Progress | None = None) -> dict:
    """Measure everything `config` asks for and return the report dict (see report.py for its schema)."""
    from foundry_edge.profiling import report
    from foundry_edge.profiling.machine import machine_facts
    from foundry_edge.profiling.telemetry import describe

    progress = progress or (lambda label: None)
    started = time.time()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    telemetry_start = describe(config.telemetry_root)  # power mode and clocks as the profile starts
    progress("matmul peak")
    peak = run_worker({"kind": "matmul-peak", "threads": config.threads, "size": config.matmul_size,
                       "seconds": config.matmul_s,  # torch's BLAS too, only when torch is profiled
                       "backends": ["numpy", "torch"] if "torch" in config.runtimes else ["numpy"]},
                      config.timeout_s, config.threads)
    models, notes = describe_all(config, progress)
    measurements = [measure_one(config, models, subject, runtime, points, batch, progress)
                    for subject, runtime, points, batch in plan(config)]
    operators = operator_profiles(config, models, progress) if config.operators else []
    facts = machine_facts(config.threads)
    facts.update(telemetry=telemetry_start, load_average_start=load_start)
    return report.build(config, facts, peak, models, measurements, operators, notes, started)


def plan(config: ProfileConfig):
    """(subject, runtime, points, batch) in the order they run: teacher first, then each student."""
    for subject in config.subjects:
        for runtime in config.runtimes:
            for points in config.points:
                for batch in config.batches:
                    yield subject, runtime, points, batch


def total_steps(config: ProfileConfig) -> int:
    """How many times `run_profile` calls `progress` (for a progress bar)."""
    subjects, n_points = len(config.subjects), len(config.points)
    operators = subjects * n_points * len(config.batches) if config.operators and "ort-cpu" in config.runtimes else 0
    return 1 + subjects * n_points + subjects * len(config.runtimes) * n_points * len(config.batches) + operators


def describe_all(config: ProfileConfig, progress: Progress) -> tuple[dict, list[str]]:
    """{(label, points): cost and inputs, or {"error": ...}} and notes on teacher/student mismatches."""
    models: dict = {}
    for subject in config.subjects:
        for points in config.points:
            progress(f"cost of {subject.label} at {points} points")
            try:
                models[subject.label, points] = {"role": subject.role, **describe(subject, points)}
            except ImportError as exc:
                models[subject.label, points] = {"role": subject.role, "error": str(missing_extra(exc))}
            except FoundryError as exc:
                models[subject.label, points] = {"role": subject.role, "error": str(exc)}
    return models, input_mismatches(config, models)


# The extra (pyproject.toml) that installs each optional package a subject may need.
EXTRAS = {"torch": "torch", "onnxscript": "torch", "onnxsim": "torch", "onnxslim": "torch", "onnxruntime": "cpu",
          "tensorrt": "trt", "scipy": "scenes", "fpsample": "scenes", "h5py": "data", "laspy": "data",
          "matplotlib": "report", "psutil": "report"}


def missing_extra(exc: ImportError) -> MissingDependencyError:
    """An optional package a subject needs, as one line naming the extra; any other ImportError is a bug."""
    package = (exc.name or "").partition(".")[0]
    if package not in EXTRAS:
        raise exc
    return MissingDependencyError(f"'{package}' is not installed ({exc}); install it with: "
                                  f"pip install 'foundry-edge[{EXTRAS[package]}]'")


def input_mismatches(config: ProfileConfig, models: dict) -> list[str]:
    """A line for each student whose inputs differ from the teacher's; marks it so no speed-up is computed."""
    notes = []
    if config.teacher is None:
        return notes
    for student in config.students:
        for points in config.points:
            t, s = models[config.teacher.label, points], models[student.label, points]
            if "error" in t or "error" in s:
                continue
            if (t["inputs"], t["normalize_in_graph"]) != (s["inputs"], s["normalize_in_graph"]):
                s["inputs_differ_from_teacher"] = True
                notes.append(f"{student.label} and the teacher {config.teacher.label} take different inputs at "
                             f"{points} points ({s['inputs']}, normalised in graph: {s['normalize_in_graph']} vs "
                             f"{t['inputs']}, {t['normalize_in_graph']}): no speed-up is computed for them")
    return notes


def measure_one(config: ProfileConfig, models: dict, subject: Subject, runtime: str, points: int, batch: int,
                progress: Progress) -> dict:
    """One row of the report: the worker's result with the model's cost and the key it was run for."""
    progress(f"{subject.label} {runtime} N={points} B={batch}")
    info = models[subject.label, points]
    row = {"model": subject.label, "spec": subject.spec, "role": subject.role, "runtime": runtime,
           "points": points, "batch": batch}
    problem = info.get("error") or runtime_problem(runtime)
    path = None
    if problem is None:
        try:
            path = prepared_file(config, info, subject, runtime, points)
        except FoundryError as exc:
            problem = str(exc)
    if problem:
        return {**row, "status": "error", "error_kind": "error", "error": problem}
    spec = {"kind": "latency", "runtime": runtime, "points": points, "batch": batch, "threads": config.threads,
            "model": {"spec": subject.spec, "overrides": subject.overrides, "path": path, "seed": subject.seed},
            "warmup_s": config.warmup_s, "iterations": config.iterations, "duration_s": config.duration_s,
            "memory_limit_bytes": config.memory_limit_bytes, "stage_runs": config.stage_runs,
            "peak_s": config.beside_peak_s, "sidecar_check": config.sidecar_check,
            "telemetry": {"root": str(config.telemetry_root), "interval_s": config.telemetry_interval_s}
            if config.telemetry_interval_s else None}
    result = run_worker(spec, config.timeout_s, config.threads)
    result.setdefault("memory", {})
    result["memory"].update(model_bytes=_file_size(path) or info.get("model_bytes"),
                            model_bytes_source=f"{Path(path).suffix[1:]} file" if path else info.get("model_bytes_source"))
    flops = info.get("flops") and info["flops"] * batch
    return {**row, "artifact": path, "params": info.get("params"), "flops": flops, **result}


def prepared_file(config: ProfileConfig, info: dict, subject: Subject, runtime: str, points: int) -> str | None:
    """The file the runtime opens, exporting a preset/checkpoint once per point count (in a worker, into
    out_dir/cache); the export's outcome is kept in info["export"], so a failure is reported, not retried."""
    placement = config.placement(points)[0]
    path = artifact_for(subject, runtime, points, config.out_dir / "cache", placement)
    if path is None or subject.format != "torch":
        return path
    if "export" not in info and Path(path).is_file():
        info["export"] = {"path": path, "warning": None}
    if "export" not in info:
        spec = {"kind": "export", "model": {"spec": subject.spec, "overrides": subject.overrides, "path": path,
                                            "seed": subject.seed},
                "points": points, "max_batch": max(config.batches), "threads": config.threads, "grouping": placement}
        result = run_worker(spec, config.timeout_s, config.threads)
        info["export"] = ({"path": result["path"], "warning": result["warning"]} if result["status"] == "ok"
                          else {"error": f"export failed: {result['error']}"})
    if "error" in info["export"]:
        raise FoundryError(info["export"]["error"])
    return info["export"]["path"]


def _file_size(path: str | None) -> int | None:
    return Path(path).stat().st_size if path and Path(path).is_file() else None


def operator_profiles(config: ProfileConfig, models: dict, progress: Progress) -> list[dict]:
    """ONNX Runtime's own profile, summed by operator type, for each model's ort-cpu ONNX."""
    rows = []
    if "ort-cpu" not in config.runtimes:
        return rows
    for subject in config.subjects:
        for points in config.points:
            for batch in config.batches:
                progress(f"operators of {subject.label} N={points} B={batch}")
                row = {"model": subject.label, "points": points, "batch": batch}
                info = models[subject.label, points]
                try:
                    if "error" in info:
                        raise FoundryError(info["error"])
                    path = prepared_file(config, info, subject, "ort-cpu", points)
                except FoundryError as exc:
                    rows.append({**row, "status": "error", "error": str(exc)})
                    continue
                spec = {"kind": "operators", "model": {"path": path}, "points": points, "batch": batch,
                        "threads": config.threads, "iterations": config.operator_runs,
                        "memory_limit_bytes": config.memory_limit_bytes}
                rows.append({**row, **run_worker(spec, config.timeout_s, config.threads)})
    return rows
