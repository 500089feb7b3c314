"""Large scenes: the memory budget check made before a run (the synthetic test scene is
foundry_edge.data.synthetic.synthetic_scene).

A scene is an (N, 3) float32 cloud with N from 2^16 to 2^18 and more. The budget check estimates a
model's peak memory from its config alone, so a scene too large for the device is refused with the
largest size that fits, before anything is allocated.
"""

from __future__ import annotations

from foundry_edge.errors import FoundryError

GIB = 1 << 30


RUNTIME_BASE_BYTES = 200 << 20  # interpreter, numpy, scipy and ONNX Runtime before any tensor


def _parameter_count(c) -> int:
    """Weights from the config alone (no torch): tokenizer, encoder blocks, DSO/CAU, positions."""
    w0, w1, w2 = c.tokenizer_widths
    params = 3 * w0 + w0 * w1 + 2 * w1 * w2 + w2 * c.tokenizer_out_dim + c.depth * 12 * c.embed_dim ** 2
    params += 3 * c.pos_hidden + c.pos_hidden * c.embed_dim
    if c.kind == "student":
        params += 3 * c.embed_dim ** 2 + c.embed_dim * c.effective_cau_hidden + c.effective_cau_hidden * c.output_dim
    return params


def estimate_peak_bytes(config, batch: int = 1, grouping: str = "host") -> int:
    """Rough peak memory (bytes) of one inference at config.num_points, from the config alone.

    The largest live float32 tensors: the cloud and its grouping (a k-d tree on the host, or in the
    graph the int64 sort keys plus one (chunk x N) distance block), the mini-PointNet's widest
    activations over G x K points, the encoder's tokens and its (heads x T x T) attention, and the
    CAU's hidden layer over the G tokens. Kept on the high side of measured runs (benchmarks/).
    """
    c, f = config, 4
    n, g, k = batch * c.num_points, batch * c.num_groups, c.group_size
    w0, w1, w2 = c.tokenizer_widths
    cloud = n * 3 * f * 4 + (n * 8 * 6 if grouping == "graph" else n * 48)
    if grouping == "graph":
        cloud += 3 * batch * min(c.knn_chunk, c.num_groups) * c.num_points * f
    # ONNX Runtime keeps about every mini-PointNet activation of the G x K points alive, some twice.
    tokenizer = 2 * g * k * f * (w0 + 3 * w1 + w2 + c.tokenizer_out_dim)
    tokens = c.num_groups if c.kind == "teacher" else c.num_supertokens + (c.gate_budget if c.gate else 0)
    encoder = batch * (tokens * c.embed_dim * 9 + 2 * c.num_heads * tokens * tokens) * f
    heads = g * (4 * c.embed_dim + c.effective_cau_hidden + c.output_dim) * f if c.kind == "student" else 0
    return RUNTIME_BASE_BYTES + 2 * _parameter_count(c) * f + cloud + tokenizer + encoder + heads


def max_points_within(config, budget_bytes: int, batch: int = 1, grouping: str = "host",
                      scale_groups: bool = True) -> int:
    """The largest N whose estimate fits the budget, groups scaled as config.replace(num_points=N) does
    (or kept, as an export at another point count keeps them)."""
    def fits(n: int) -> bool:
        fixed = {} if scale_groups else {"num_groups": config.num_groups}
        return estimate_peak_bytes(config.replace(num_points=n, **fixed), batch, grouping) <= budget_bytes

    low, high = 0, 1 << 12
    while fits(high) and high < 1 << 30:
        low, high = high, high * 2
    while high - low > max(1, low // 256):
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low


def check_budget(config, budget_bytes: int, batch: int = 1, grouping: str = "host",
                 fix: str = "downsample the scene, use fewer groups, or raise the budget", scale_groups: bool = True) -> int:
    """Refuse a run whose estimated peak exceeds the budget, before anything is allocated; returns the estimate."""
    need = estimate_peak_bytes(config, batch, grouping)
    if need > budget_bytes:
        fit = max_points_within(config, budget_bytes, batch, grouping, scale_groups)
        raise FoundryError(
            f"{config.name} on {config.num_points} points ({config.num_groups} groups of {config.group_size}) needs "
            f"about {need / GIB:.1f} GiB, over the {budget_bytes / GIB:.1f} GiB budget; the largest scene that fits "
            f"is about {fit} points: {fix}")
    return need


def available_memory_bytes() -> int | None:
    """Memory a new allocation can get now: psutil where installed, else /proc/meminfo; None where unknown."""
    try:
        import psutil
    except ImportError:
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            return int(fields["MemAvailable"].split()[0]) * 1024
        except (OSError, KeyError, ValueError):
            return None
    return int(psutil.virtual_memory().available)
