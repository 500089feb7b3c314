"""A calibration cache: the activation ranges of one model on one data set, as JSON.

Calibration runs the whole model over every sample; the ranges it yields depend only on the model
file, the calibration feeds and the method. The cache stores them keyed by those three, so changing
only the exclusions or the backend reuses them, and a changed model or data set recalibrates (with a
warning) instead of silently applying ranges that belong to something else.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

from foundry_edge.fileio import write_json_atomic

SCHEMA = "foundry-edge/calibration-cache"
Ranges = Dict[str, Tuple[float, float]]


def cache_key(model_sha256: str, data_sha256: str, method: str) -> dict:
    return {"model_sha256": model_sha256, "data_sha256": data_sha256, "method": method}


def load_ranges(path: str | Path, key: dict) -> Optional[Ranges]:
    """The cached ranges if the file exists and matches `key`; None (and a warning if stale) otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stored = {k: data["key"][k] for k in key}
        ranges = {name: (float(lo), float(hi)) for name, (lo, hi) in data["ranges"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"calibration cache {path} is unreadable ({exc}); recalibrating and rewriting it")
        return None
    if data.get("schema") != SCHEMA or stored != key:
        changed = [k for k in key if stored.get(k) != key[k]] or ["schema"]
        warnings.warn(f"calibration cache {path} is stale ({', '.join(changed)} changed); recalibrating and rewriting it")
        return None
    return ranges


def save_ranges(path: str | Path, key: dict, ranges: Ranges) -> Path:
    payload = {"schema": SCHEMA, "schema_version": 1, "key": key,
               "ranges": {name: [float(lo), float(hi)] for name, (lo, hi) in sorted(ranges.items())}}
    return write_json_atomic(path, payload)
