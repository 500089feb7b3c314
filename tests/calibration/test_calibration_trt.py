"""The TensorRT <= 10 implicit calibrator, without CUDA: a fake tensorrt module and a fake CUDA host."""

from __future__ import annotations

import types

import numpy as np
import pytest

from foundry_edge.runtimes.calibrator import make_calibrator, uniform_batches
from foundry_edge.errors import FoundryError


class _Base:
    def __init__(self):
        self.base_initialised = True


def fake_trt(*names):
    """A module with only the given calibrator base classes (TensorRT 11 has none)."""
    return types.SimpleNamespace(__version__="10.3.0", **{name: type(name, (_Base,), {}) for name in names})


class FakeCuda:
    """Records what the calibrator does with device memory."""

    def __init__(self):
        self.memory, self.freed, self.next = {}, [], 1000

    def malloc(self, nbytes):
        self.next += 1
        self.memory[self.next] = np.zeros(nbytes, np.uint8)
        return self.next

    def htod(self, ptr, array):
        self.memory[ptr][:] = np.frombuffer(array.tobytes(), np.uint8)

    def synchronize(self):
        pass

    def free(self, ptr):
        self.freed.append(ptr)


def _batches(count=3, batch=2):
    return [{"points": np.full((batch, 16, 3), i, np.float32)} for i in range(count)]


@pytest.mark.parametrize("method,base", [("entropy", "IInt8EntropyCalibrator2"), ("minmax", "IInt8MinMaxCalibrator")])
def test_factory_subclasses_the_detected_base(method, base):
    trt = fake_trt("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator")
    calibrator = make_calibrator(_batches(), None, method, trt=trt, cuda=FakeCuda())
    assert isinstance(calibrator, getattr(trt, base)) and calibrator.base_initialised
    assert calibrator.get_batch_size() == 2


def test_tensorrt_without_calibrators_is_refused():
    with pytest.raises(FoundryError, match="TensorRT 11"):
        make_calibrator(_batches(), None, "entropy", trt=fake_trt())
    with pytest.raises(FoundryError, match="method"):
        make_calibrator(_batches(), None, "percentile", trt=fake_trt("IInt8EntropyCalibrator2"))


def test_batches_go_to_device_in_order_then_buffers_are_freed():
    cuda = FakeCuda()
    calibrator = make_calibrator(_batches(), None, "entropy", trt=fake_trt("IInt8EntropyCalibrator2"), cuda=cuda)
    seen = []
    while (pointers := calibrator.get_batch(["points"])) is not None:
        seen.append(np.frombuffer(cuda.memory[pointers[0]].tobytes(), np.float32)[0])
    assert seen == [0.0, 1.0, 2.0]
    assert cuda.freed == list(cuda.memory)  # one buffer per input, reused, then freed


def test_uneven_last_batch_is_dropped_with_a_warning():
    batches = _batches(2) + [{"points": np.zeros((1, 16, 3), np.float32)}]
    with pytest.warns(UserWarning, match="2 of 3"):
        assert len(uniform_batches(batches)) == 2


def test_cache_is_read_first_and_written_atomically(tmp_path):
    trt = fake_trt("IInt8EntropyCalibrator2")
    cache = tmp_path / "calib.cache"
    calibrator = make_calibrator(_batches(), cache, "entropy", trt=trt, cuda=FakeCuda())
    assert calibrator.read_calibration_cache() is None  # no cache yet: TensorRT calibrates from the batches
    calibrator.write_calibration_cache(memoryview(b"TRT-8601-EntropyCalibration2\n"))
    assert cache.read_bytes().startswith(b"TRT-8601")
    # a later build with the cache alone needs no clouds
    again = make_calibrator([], cache, "entropy", trt=trt)
    assert again.read_calibration_cache() == cache.read_bytes()
    with pytest.raises(FoundryError, match="neither"):
        make_calibrator([], tmp_path / "missing.cache", "entropy", trt=trt)
