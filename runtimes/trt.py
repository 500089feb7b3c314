"""TensorRT: deserialize a raw plan and run it with execute_async_v3 (TensorRT 8.5 to 11).

Per call: set_input_shape for each input, read the output shapes back from the context, bind every
tensor with set_tensor_address, enqueue on one stream, copy back, synchronize. Device buffers grow as
needed and are reused. With `cuda_graph=True` the enqueue is captured once per input shape and replayed
(cuda-python only). Imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from foundry_edge.errors import FoundryError
from foundry_edge.runtimes import trt_compat
from foundry_edge.runtimes.base import Runtime, TensorSpec
from foundry_edge.runtimes.model_info import ModelInfo


class TrtRuntime(Runtime):
    """A TensorRT plan checked against its sidecar, run through cuda-python or PyCUDA."""

    name = "trt"

    def __init__(self, plan_path: str | Path, cuda_graph: bool = False, trt_module: Optional[str] = None,
                 cuda: Optional[str] = None, sidecar_check: bool = True):
        """`sidecar_check=False` (--no-sidecar-check) loads the plan without checking it against its sidecar; the
        sidecar, where one parses, still gives names and preprocessing (sidecar.UNCHECKED says what is skipped)."""
        from foundry_edge.contracts.sidecar import read_sidecar, read_sidecar_unchecked

        self.path, self.cuda_graph, self.trt_module, self.cuda_choice = Path(plan_path), cuda_graph, trt_module, cuda
        self.sidecar_check = sidecar_check
        if not self.path.is_file():
            raise FoundryError(f"expected a TensorRT plan at {self.path}, found nothing: build one with `foundry-edge build`")
        self.sidecar = read_sidecar(self.path) if sidecar_check else read_sidecar_unchecked(self.path)
        self.info = ModelInfo.from_dict(self.sidecar["model"]) if self.sidecar else None
        super().__init__(self.info.preprocessing if self.info else None)
        self.class_names = self.info.class_names if self.info else None
        self.num_supertokens = self.info.num_supertokens if self.info else None
        self.precision = self.sidecar.get("precision", "fp32") if self.sidecar else "fp32"
        self.engine = self.context = self.cuda = None
        self._buffers: Dict[str, tuple] = {}  # name -> (pointer, bytes)
        self._graph = None
        self._graph_shapes = None

    def load_impl(self) -> None:
        from foundry_edge.contracts.device import device_facts
        from foundry_edge.contracts.sidecar import check_sidecar
        from foundry_edge.runtimes.cuda_host import open_cuda

        trt = trt_compat.import_tensorrt(self.trt_module)
        if self.sidecar_check:  # the TensorRT version is checked before CUDA: it needs no GPU
            check_sidecar(self.sidecar, device_facts(trt))
        self.cuda = open_cuda(self.cuda_choice)
        if self.cuda_graph and not self.cuda.supports_graphs:
            raise FoundryError(f"CUDA graphs need cuda-python, this device has {self.cuda.label}: "
                               "pip install 'foundry-edge[trt]' or drop --cuda-graph")
        try:
            self._open_engine(trt)
        except BaseException:
            self.close_impl()
            raise

    def _open_engine(self, trt) -> None:
        from foundry_edge.contracts.device import device_facts
        from foundry_edge.contracts.sidecar import check_sidecar

        if self.sidecar_check:
            check_sidecar(self.sidecar, device_facts(trt, self.cuda))
        self.trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise FoundryError(f"TensorRT {trt_compat.version(trt)} could not deserialize {self.path.name} (corrupt, "
                               "truncated or from another TensorRT): rebuild it on this device with `foundry-edge build`")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = self._specs()
        self.provider = f"TensorRT {trt_compat.version(trt)} ({self.cuda.label})"

    def _specs(self):
        """Engine I/O as TensorSpecs; dynamic dims (-1) take their names from the sidecar where known."""
        known = {s.name: s for s in (self.info.inputs + self.info.outputs)} if self.info else {}
        input_names, output_names = trt_compat.io_tensor_names(self.engine)

        def spec(name):
            dims = tuple(self.engine.get_tensor_shape(name))
            named = known.get(name)
            shape = tuple(d if d >= 0 else (named.shape[i] if named else f"{name}_dim{i}") for i, d in enumerate(dims))
            return TensorSpec(name, trt_compat.numpy_dtype(self.trt, self.engine.get_tensor_dtype(name)), shape)

        return [spec(n) for n in input_names], [spec(n) for n in output_names]

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = self._copy_in(feed)
        self._enqueue(tuple(feed[s.name].shape for s in self.inputs))
        self._copy_out(results)
        self.cuda.synchronize()
        return results

    def stage_times(self, points: np.ndarray, runs: int) -> Dict[str, float]:
        """Median ms per call by stage over `runs` extra calls, for `profile`: host preprocessing, copies in,
        the engine's layers by stage (TensorRT's per-layer profiler; the ONNX node names the build recorded in
        the sidecar say which layers group: runtimes/trt_layers.py), copies out. The stream is synchronized
        at each boundary and the profiler serializes layers, so these calls run slower than the timed ones:
        read the split, not the sum. Call it last: the profiler stays attached to the context."""
        from statistics import median

        from foundry_edge.runtimes.trt_layers import stage_totals

        node_stages = (self.sidecar or {}).get("onnx", {}).get("node_stages") or {}
        profiler = trt_compat.layer_profiler(self.trt)
        self.context.profiler = profiler
        per_run = []
        for _ in range(runs):
            start = time.perf_counter()
            feed = self.feed_from_points(points)
            prepared = time.perf_counter()
            results = self._copy_in(feed)
            self.cuda.synchronize()
            copied_in = time.perf_counter()
            profiler.ms.clear()
            self._execute()  # no CUDA graph: it hides layers
            self.cuda.synchronize()
            ran = time.perf_counter()
            self._copy_out(results)
            self.cuda.synchronize()
            done = time.perf_counter()
            per_run.append({"host_preprocessing": (prepared - start) * 1e3, "copies_in": (copied_in - prepared) * 1e3,
                            **stage_totals(profiler.ms, node_stages), "copies_out": (done - ran) * 1e3,
                            "engine_wall": (ran - copied_in) * 1e3})
        return {name: median(run[name] for run in per_run) for name in per_run[0]} if per_run else {}

    def _copy_in(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Set the input shapes, copy the inputs to the device (async) -> empty host arrays for the outputs."""
        for spec in self.inputs:
            array = np.ascontiguousarray(feed[spec.name])
            if not self.context.set_input_shape(spec.name, array.shape):
                raise FoundryError(f"input {spec.name!r} shape {array.shape} is outside the engine's profile: "
                                   f"rebuild with wider --min-shapes/--max-shapes")
            self.cuda.htod(self._bind(spec.name, array.nbytes), array)
        results = {}
        for spec in self.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            results[spec.name] = np.empty(shape, dtype=spec.dtype)
            self._bind(spec.name, results[spec.name].nbytes)
        return results

    def _copy_out(self, results: Dict[str, np.ndarray]) -> None:
        for name, array in results.items():
            self.cuda.dtoh(array, self._buffers[name][0])

    def _bind(self, name: str, nbytes: int) -> int:
        """The device pointer for `name`, reallocated when it must grow, bound to the context."""
        ptr, size = self._buffers.get(name, (None, 0))
        if nbytes > size:
            if ptr is not None:
                self.cuda.free(ptr)
            ptr = self.cuda.malloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
            self._drop_graph()  # a captured graph holds the old addresses
        self.context.set_tensor_address(name, ptr)
        return ptr

    def _execute(self) -> None:
        self._check(self.context.execute_async_v3(self.cuda.stream_handle))

    def _enqueue(self, shapes) -> None:
        if not self.cuda_graph:
            return self._execute()
        if self._graph is None or self._graph_shapes != shapes:
            self._drop_graph()
            self._execute()  # one plain enqueue first: TensorRT does shape-dependent setup outside the capture
            self._graph, self._graph_shapes = self.cuda.capture(self._execute), shapes
        self.cuda.launch(self._graph)

    @staticmethod
    def _check(ok: bool) -> None:
        if not ok:
            raise FoundryError("TensorRT execute_async_v3 failed (see TensorRT's log above): "
                               "check the input shapes against the engine's profile")

    def _drop_graph(self) -> None:
        if self._graph is not None:
            self.cuda.release_graph(self._graph)
            self._graph = None

    def close_impl(self) -> None:
        self._drop_graph()
        for ptr, _ in self._buffers.values():
            self.cuda.free(ptr)
        self._buffers.clear()
        self.context = self.engine = None
        if self.cuda is not None:
            self.cuda.close()
            self.cuda = None

    def device_bytes_impl(self) -> Optional[int]:
        """The engine's activation memory plus the I/O buffers held (not the weights, TensorRT does not say)."""
        if self.engine is None:
            return None
        return (trt_compat.engine_device_memory(self.engine) or 0) + sum(size for _, size in self._buffers.values())

    def memory(self) -> Dict[str, Optional[int]]:
        """The base report plus cudaMemGetInfo of the whole device (on Jetson: the DRAM shared with the CPU)."""
        report = super().memory()
        if self.cuda is not None:
            report["device_free_bytes"], report["device_total_bytes"] = self.cuda.mem_info()
        return report

