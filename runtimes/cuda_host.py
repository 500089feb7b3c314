"""Host-side CUDA for the TensorRT runtime: cuda-python first, PyCUDA where that is what the device has.

Both give the same small surface: malloc/free, async copies on one stream, synchronize, free/total
device memory, the device's name and compute capability; cuda-python also CUDA graphs. NVIDIA's own
samples moved from PyCUDA to cuda-python (`cuda.bindings.runtime`) in TensorRT 10.13
(docs/platform-notes.md, "Host-side CUDA from Python"). Pointers are plain ints, as `set_tensor_address` takes them.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from foundry_edge.errors import FoundryError, MissingDependencyError

NO_GPU_FIX = "run on a machine with an NVIDIA GPU and its driver (a Jetson or a desktop GPU)"


def open_cuda(prefer: Optional[str] = None):
    """A ready CudaPython or PyCuda host, or a FoundryError saying why no GPU can be used."""
    order = {"cuda-python": [CudaPython], "pycuda": [PyCuda]}.get(prefer, [CudaPython, PyCuda])
    missing = []
    for backend in order:
        try:
            return backend()
        except ImportError as exc:
            missing.append(f"{backend.label}: {exc}")
    raise MissingDependencyError(f"expected cuda-python or PyCUDA for host-side CUDA, found neither ({'; '.join(missing)}): "
                                 "install it with: pip install 'foundry-edge[trt]'")


def _cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python
    return runtime


class CudaPython:
    label = "cuda-python"
    supports_graphs = True

    def __init__(self):
        self.rt = _cudart()
        count = self._call(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count < 1:
            raise FoundryError(f"expected a CUDA GPU, found none: {NO_GPU_FIX}")
        self.stream = self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def _call(self, result, what: str):
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            name = getattr(err, "name", str(err))
            raise FoundryError(f"expected a working CUDA device, {what} returned {name} ({int(err)}): {NO_GPU_FIX}")
        return values[0] if len(values) == 1 else tuple(values) if values else None

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._call(self.rt.cudaFree(ptr), "cudaFree")

    def htod(self, ptr: int, array: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self.stream), "cudaMemcpyAsync")

    def dtoh(self, array: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, kind, self.stream), "cudaMemcpyAsync")

    def synchronize(self) -> None:
        self._call(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def mem_info(self) -> Tuple[int, int]:
        free, total = self._call(self.rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(free), int(total)

    def device(self) -> dict:
        props = self._call(self.rt.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}",
                "cuda_runtime": _cuda_version(self._call(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
                "cuda_driver": _cuda_version(self._call(self.rt.cudaDriverGetVersion(), "cudaDriverGetVersion"))}

    # -- CUDA graphs: capture one enqueue, replay it while the shapes stay the same --------------
    def capture(self, enqueue) -> object:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self._call(self.rt.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")
        enqueue()
        graph = self._call(self.rt.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        executable = self._call(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._call(self.rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
        return executable

    def launch(self, executable) -> None:
        self._call(self.rt.cudaGraphLaunch(executable, self.stream), "cudaGraphLaunch")

    def release_graph(self, executable) -> None:
        self._call(self.rt.cudaGraphExecDestroy(executable), "cudaGraphExecDestroy")

    def close(self) -> None:
        self._call(self.rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy")


class PyCuda:
    label = "pycuda"
    supports_graphs = False

    def __init__(self):
        import pycuda.driver as cuda

        self.cuda = cuda
        try:
            cuda.init()
            if cuda.Device.count() < 1:
                raise FoundryError(f"expected a CUDA GPU, found none: {NO_GPU_FIX}")
            self.context = cuda.Device(0).retain_primary_context()
            self.context.push()
        except cuda.Error as exc:
            raise FoundryError(f"expected a working CUDA device, PyCUDA says: {exc}: {NO_GPU_FIX}") from None
        self.stream = cuda.Stream()
        self._allocations = {}

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def malloc(self, nbytes: int) -> int:
        allocation = self.cuda.mem_alloc(max(int(nbytes), 1))
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def htod(self, ptr: int, array: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(ptr, array, self.stream)

    def dtoh(self, array: np.ndarray, ptr: int) -> None:
        self.cuda.memcpy_dtoh_async(array, ptr, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def mem_info(self) -> Tuple[int, int]:
        free, total = self.cuda.mem_get_info()
        return int(free), int(total)

    def device(self) -> dict:
        dev = self.cuda.Device(0)
        major, minor = dev.compute_capability()
        return {"gpu": dev.name(), "compute_capability": f"{major}.{minor}",
                "cuda_runtime": ".".join(str(v) for v in self.cuda.get_version()),
                "cuda_driver": _cuda_version(self.cuda.get_driver_version())}

    def close(self) -> None:
        self.context.pop()


def _cuda_version(code: int) -> str:
    """12060 -> '12.6'."""
    return f"{code // 1000}.{(code % 1000) // 10}"
