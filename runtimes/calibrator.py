"""TensorRT <= 10's implicit INT8 calibrators over a feed, for `build --precision int8` when the ONNX
has no Q/DQ nodes (the feed is the caller's: foundry_edge.calibration.engine_inputs draws the clouds).

IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator exist on TensorRT 8.5-10 (deprecated in 10.1) and
are gone in 11 (docs/platform-notes.md, "TensorRT API by version"): the class is made at call time from the imported module,
so a missing base is one clear error. TensorRT calls get_batch_size(), then get_batch(names) until it
returns None, copying each feed to device buffers (cuda-python or PyCUDA, runtimes/cuda_host.py); with a
cache file it calls read_calibration_cache() first and skips the batches when that returns bytes.
The cache is TensorRT's own opaque table, valid for one TensorRT version and one model only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

from foundry_edge.errors import FoundryError
from foundry_edge.fileio import write_bytes_atomic

BASES = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}
Feed = Dict[str, np.ndarray]


def uniform_batches(feed: Iterable[Feed]) -> List[Feed]:
    """The batches that share the first one's shapes: TensorRT calibrates at one shape (the profile's)."""
    batches = list(feed)
    if not batches:
        return []
    shapes = {name: a.shape for name, a in batches[0].items()}
    kept = [b for b in batches if {name: a.shape for name, a in b.items()} == shapes]
    if len(kept) < len(batches):
        warnings.warn(f"calibrating on {len(kept)} of {len(batches)} batches: the others' shapes differ from "
                      f"{shapes} (a smaller last batch); pass a sample count divisible by the batch size")
    return [{name: np.ascontiguousarray(a) for name, a in b.items()} for b in kept]


def read_cache(path: Optional[Path]) -> Optional[bytes]:
    """TensorRT asks for the cache first; None makes it calibrate from the batches."""
    return path.read_bytes() if path is not None and path.is_file() else None


def make_calibrator(feed: Iterable[Feed], cache_path: str | Path | None = None, method: str = "entropy",
                    trt=None, cuda=None):
    """A TensorRT implicit INT8 calibrator (entropy or minmax) serving `feed`'s batches to the builder.

    `trt`: the tensorrt module (default: runtimes.trt_compat.import_tensorrt()); `cuda`: a host from
    runtimes.cuda_host.open_cuda(), opened on the first batch if not given.
    """
    if method not in BASES:
        raise FoundryError(f"expected a calibration method in {', '.join(BASES)}, found {method!r}")
    if trt is None:
        from foundry_edge.runtimes.trt_compat import import_tensorrt

        trt = import_tensorrt()
    base = getattr(trt, BASES[method], None)
    if base is None:
        raise FoundryError(f"expected TensorRT 8.5-10 with {BASES[method]}, found {getattr(trt, '__version__', '?')} "
                           "without implicit calibrators (removed in TensorRT 11): run `foundry-edge calibrate` "
                           "and build the Q/DQ ONNX it writes")
    cache = Path(cache_path) if cache_path is not None else None
    feeds = uniform_batches(feed)
    if not feeds and read_cache(cache) is None:
        raise FoundryError("expected calibration clouds or an existing calibration cache, found neither: "
                           "pass --calib CLOUDS or a --calib-cache file written by an earlier build")
    return _calibrator_class(base)(feeds, cache, cuda)


def _calibrator_class(base):
    """The calibrator class on top of the TensorRT base chosen at run time."""

    class PointCloudCalibrator(base):
        def __init__(self, feeds: List[Feed], cache: Optional[Path], cuda):
            base.__init__(self)  # TensorRT's pybind classes need the base initialised explicitly
            self.feeds, self.cache, self.cuda = feeds, cache, cuda
            self.buffers: Dict[str, int] = {}
            self.next = 0

        def get_batch_size(self) -> int:
            return len(next(iter(self.feeds[0].values()))) if self.feeds else 1

        def get_batch(self, names, *_):
            """The next feed's device pointers in `names` order, or None when done (buffers freed)."""
            if self.next >= len(self.feeds):
                self.close()
                return None
            feed = self.feeds[self.next]
            self.next += 1
            if self.cuda is None:
                from foundry_edge.runtimes.cuda_host import open_cuda

                self.cuda = open_cuda()
            for name in names:
                if name not in self.buffers:
                    self.buffers[name] = self.cuda.malloc(feed[name].nbytes)
                self.cuda.htod(self.buffers[name], feed[name])
            self.cuda.synchronize()
            return [self.buffers[name] for name in names]

        def read_calibration_cache(self):
            return read_cache(self.cache)

        def write_calibration_cache(self, data) -> None:
            if self.cache is not None:
                write_bytes_atomic(self.cache, bytes(data))

        def close(self) -> None:
            for pointer in self.buffers.values():
                self.cuda.free(pointer)
            self.buffers.clear()

    return PointCloudCalibrator
