"""The one Runtime contract every backend follows (Polygraphy's runner shape).

`load()` / `close()` (or `with rt:`), `inputs` / `outputs` as `TensorSpec`s, `infer(points)` on raw
clouds (B, N, 3) and `infer_feed(feed)` on the graph's own inputs. The base class checks every feed
against the input specs, turns raw clouds into the graph's feed as the manifest's `preprocessing` says
(foundry_edge.data.preprocess.feed_for: exact or scalable host grouping for `--grouping host`), and
records the time of each call; a backend fills in `load_impl`, `infer_impl`, `close_impl` and, if it has
one, `device_bytes_impl`.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional

import numpy as np

from foundry_edge.contracts.preprocessing import Preprocessing
from foundry_edge.contracts.tensors import TensorSpec, shape_text
from foundry_edge.errors import FoundryError

class Runtime:
    """Base class: input checks, host grouping and timing; backends override the `*_impl` hooks."""

    name = "base"

    def __init__(self, preprocessing: Optional[Preprocessing] = None):
        # Unknown point count (0) until a manifest or the model says it.
        self.preprocessing = preprocessing or Preprocessing("graph", 0)
        self.inputs: List[TensorSpec] = []
        self.outputs: List[TensorSpec] = []
        self.provider = ""  # what actually runs, e.g. "CPUExecutionProvider" or "TensorRT 10.3.0"
        self.class_names: Optional[List[str]] = None
        self.precision = "fp32"  # what the model was exported or built at: fp32, fp16 or int8
        self.num_supertokens: Optional[int] = None  # a student's s, where the manifest or model says it
        self.timings: List[float] = []  # seconds per infer_feed call
        self.is_active = False

    # -- lifecycle --------------------------------------------------------------------------------
    def load(self) -> "Runtime":
        if not self.is_active:
            self.load_impl()
            self.is_active = True
        return self

    def close(self) -> None:
        if self.is_active:
            self.close_impl()
            self.is_active = False

    def __enter__(self) -> "Runtime":
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inference --------------------------------------------------------------------------------
    def infer(self, points: np.ndarray) -> Dict[str, np.ndarray]:
        """(B, N, 3) raw clouds in any precision -> outputs by name; grouping happens wherever the model expects
        it. For a model that normalises, a cloud float32 would round (float64 map coordinates) is first moved
        by its float64 centre (foundry_edge.data.preprocess.check_clouds): its outputs do not change by it."""
        return self.infer_feed(self.feed_from_points(points))

    def feed_from_points(self, points: np.ndarray) -> Dict[str, np.ndarray]:
        """(B, N, 3) -> the graph's feed: {points} or {neighbourhoods (B, G, K, 3), centers (B, G, 3)}."""
        from foundry_edge.data.preprocess import feed_for

        return feed_for(points, self.preprocessing)

    def infer_feed(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The graph's inputs by name -> outputs by name; checks the feed and times the call."""
        if not self.is_active:
            raise FoundryError(f"the {self.name} runtime is not loaded: call load() or use it in a `with` block")
        self.check_feed(feed)
        start = time.perf_counter()
        outputs = self.infer_impl(feed)
        self.timings.append(time.perf_counter() - start)
        return outputs

    def check_feed(self, feed: Dict[str, np.ndarray]) -> None:
        """Refuse a feed whose names, dtypes or fixed dims differ from the input specs."""
        expected = {spec.name for spec in self.inputs}
        if set(feed) != expected:
            raise FoundryError(f"expected inputs {sorted(expected)}, got {sorted(feed)}: "
                               "feed exactly the model's inputs (see rt.inputs)")
        for spec in self.inputs:
            array = feed[spec.name]
            if str(array.dtype) != spec.dtype:
                raise FoundryError(f"input {spec.name!r} must be {spec.dtype}, got {array.dtype}: cast it first")
            if array.ndim != len(spec.shape) or any(
                    isinstance(want, int) and want >= 0 and want != got for want, got in zip(spec.shape, array.shape)):
                raise FoundryError(f"input {spec.name!r} must be shaped {shape_text(spec.shape)}, "
                                   f"got {tuple(array.shape)}: resample the clouds to the model's point count")

    # -- reports ----------------------------------------------------------------------------------
    def memory(self) -> Dict[str, Optional[int]]:
        """{"host_rss_bytes", "device_bytes"}: process RSS and what this backend holds on the device."""
        return {"host_rss_bytes": host_rss_bytes(), "device_bytes": self.device_bytes_impl()}

    @property
    def num_points(self) -> Optional[int]:
        """Points per cloud the model expects: the manifest's, else a fixed N in the input's shape."""
        if self.preprocessing.num_points:
            return self.preprocessing.num_points
        if self.preprocessing.in_graph and self.inputs and isinstance(self.inputs[0].shape[1], int):
            return int(self.inputs[0].shape[1])
        return None

    @property
    def group_size(self) -> Optional[int]:
        """Points per group K, where known: a cloud with fewer points cannot fill one group."""
        return self.preprocessing.group_size or None

    @property
    def last_inference_time(self) -> Optional[float]:
        return self.timings[-1] if self.timings else None

    # -- backend hooks ----------------------------------------------------------------------------
    def load_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def close_impl(self) -> None:
        """Release what load_impl took; nothing by default."""

    def device_bytes_impl(self) -> Optional[int]:
        """Device memory this backend holds, or None where there is no device."""
        return None


def host_rss_bytes() -> Optional[int]:
    """Resident set size of this process (psutil where installed, else /proc on Linux)."""
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/self/statm") as fh:
                import os

                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None
    return psutil.Process().memory_info().rss
