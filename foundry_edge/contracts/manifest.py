"""The manifest `<stem>.manifest.json` beside every exported `<stem>.onnx`: its schema, and reading it back.

The schema is the one in docs/contracts.md ("Export artifacts"): change it there and here together.
Export writes it (foundry_edge.export.manifest); runtimes, calibration and profiling read it here, so
none of them needs the export to read what the export wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from foundry_edge.contracts.artifacts import PRECISIONS
from foundry_edge.contracts.onnx_graph import graph_specs, onnx_precision, parse_onnx
from foundry_edge.contracts.preprocessing import ALGORITHMS, PLACEMENTS
from foundry_edge.errors import FoundryError

SCHEMA = "foundry-edge/manifest"
SCHEMA_VERSION = 1
REQUIRED = ("model", "onnx", "grouping", "preprocessing", "inputs", "outputs", "profiles", "versions", "checks")
SIZES = ("num_points", "num_groups", "group_size")


def manifest_path(onnx_path) -> Path:
    """model.onnx -> model.manifest.json (model.failed.onnx -> model.failed.manifest.json)."""
    path = Path(onnx_path)
    return path.with_name(path.stem + ".manifest.json")


def read_manifest(onnx_path) -> dict | None:
    """The manifest beside `onnx_path`, or None if there is none.

    Refused in one line: another schema or version, a section that does not follow the schema
    (`schema_problems`), an ONNX whose SHA-256 is not the manifest's, or a manifest that describes another
    graph than the ONNX (`graph_problems`: inputs, outputs, precision, the preprocessing stamped in it).
    """
    path = manifest_path(onnx_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FoundryError(f"{path} is not valid JSON ({exc}); re-export the model to rewrite it") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise FoundryError(f"{path} is not a foundry-edge manifest (expected schema {SCHEMA!r}); "
                           "remove it or re-export the model")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise FoundryError(f"{path} has manifest schema version {data.get('schema_version')!r}, this foundry-edge "
                           f"reads version {SCHEMA_VERSION}: re-export the model or upgrade foundry-edge")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise FoundryError(f"{path} lacks {missing}; re-export the model to rewrite it")
    _refuse(path, schema_problems(data), "does not follow the manifest schema (docs/contracts.md)")
    _check_binding(Path(onnx_path), path, data)
    return data


def _refuse(path: Path, problems: list, what: str) -> None:
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise FoundryError(f"{path} {what}: {'; '.join(problems[:3])}{more}; re-export the model to rewrite it")


def _check_binding(onnx_path: Path, path: Path, manifest: dict) -> None:
    """The ONNX is the one the manifest was written for: its SHA-256, then its graph."""
    import hashlib

    if not onnx_path.is_file():
        raise FoundryError(f"expected the ONNX model {onnx_path} beside {path.name}, found nothing: check the path")
    data = onnx_path.read_bytes()
    digest, recorded = hashlib.sha256(data).hexdigest(), manifest["onnx"]["sha256"]
    if digest != recorded:
        raise FoundryError(f"{onnx_path.name} does not match {path.name} (sha256 {digest[:12]}..., the manifest "
                           f"records {recorded[:12]}...); re-export or pass the right manifest")
    _refuse(path, graph_problems(manifest, parse_onnx(data, onnx_path)), f"does not describe {onnx_path.name}")



def schema_problems(m: dict) -> list:
    """What in a manifest (the schema and version already checked) breaks docs/contracts.md, one phrase each."""
    problems = []

    def need(ok: bool, what: str) -> bool:
        if not ok:
            problems.append(what)
        return ok

    model, onnx, pre = m["model"], m["onnx"], m["preprocessing"]
    if need(isinstance(model, dict), "'model' must be an object"):
        need(isinstance(model.get("name"), str), "'model.name' must be a string")
        need(model.get("kind") in ("teacher", "student", None), "'model.kind' must be teacher, student or null")
        need(isinstance(model.get("config"), (dict, type(None))), "'model.config' must be an object or null")
        names = model.get("class_names")
        need(names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names)),
             "'model.class_names' must be a list of strings or null")
    if need(isinstance(onnx, dict), "'onnx' must be an object"):
        digest = onnx.get("sha256")
        need(isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest),
             "'onnx.sha256' must be the file's 64-digit hex SHA-256")
        need(onnx.get("precision") in PRECISIONS, "'onnx.precision' must be fp32, fp16 or int8")
        need(_is_int(onnx.get("opset"), 1), "'onnx.opset' must be a positive integer")
    need(m["grouping"] in PLACEMENTS, "'grouping' must be graph or host")
    if need(isinstance(pre, dict), "'preprocessing' must be an object"):
        required = SIZES if m["grouping"] == "host" else ("num_points",)  # the host must know how to group
        bad = [k for k in SIZES + ("fps_candidates",) if (k in required or k in pre) and not _is_int(pre.get(k), 1)]
        need(not bad, f"'preprocessing' sizes {bad} must be positive integers")
        need(pre.get("in_graph") is (m["grouping"] == "graph"), "'preprocessing.in_graph' must be true exactly "
             "for graph grouping")
        need(pre.get("normalize") in ("centre-unit-sphere", "none"), "'preprocessing.normalize' must be "
             "centre-unit-sphere or none")
        need(pre.get("method", "exact") in ALGORITHMS, "'preprocessing.method' must be exact or scalable")
    for side in ("inputs", "outputs"):
        specs = m[side]
        need(isinstance(specs, list) and specs and all(_is_spec(s) for s in specs),
             f"'{side}' must be a non-empty list of {{name, dtype, shape}} with int or named dims")
    profiles, axes = m["profiles"], _dynamic_axes(m["inputs"])
    if need(isinstance(profiles, dict), "'profiles' must be an object of axis -> [min, opt, max]"):
        for axis, triple in profiles.items():
            need(isinstance(triple, list) and len(triple) == 3 and all(_is_int(v, 1) for v in triple)
                 and triple[0] <= triple[1] <= triple[2], f"'profiles.{axis}' must be [min, opt, max] positive "
                 "integers with min <= opt <= max")
            need(axis in axes, f"'profiles.{axis}' names no dynamic axis of the inputs")
    need(isinstance(m["versions"], dict), "'versions' must be an object")
    checks = m["checks"]
    need(isinstance(checks, dict) and isinstance(checks.get("passed"), bool)
         and isinstance(checks.get("items"), list), "'checks' must be {passed: bool, items: [...]}")
    need(isinstance(m.get("export_options", {}), dict), "'export_options' must be an object")
    cost = m.get("cost")  # optional: exports before 0.2 have none
    if cost is not None and need(isinstance(cost, dict), "'cost' must be an object"):
        flops = cost.get("flops_per_cloud")
        need(_is_int(cost.get("params"), 0) and isinstance(flops, dict) and _is_int(flops.get("fixed"), 0)
             and _is_int(flops.get("per_point"), 0), "'cost' must be {params, flops_per_cloud: {fixed, per_point}} "
             "with non-negative integers")
    return problems


def _is_int(value, low: int) -> bool:
    return type(value) is int and value >= low


def _is_spec(spec) -> bool:
    return (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("dtype"), str)
            and isinstance(spec.get("shape"), list)
            and all(_is_int(d, 0) or (isinstance(d, str) and d) for d in spec["shape"]))


def _dynamic_axes(inputs) -> set:
    if not isinstance(inputs, list):
        return set()
    return {d for s in inputs if _is_spec(s) for d in s["shape"] if isinstance(d, str)}


def graph_problems(manifest: dict, model) -> list:
    """Where a (schema-valid) manifest and an ONNX ModelProto disagree: input and output names, dtypes and fixed
    dims, precision, and what the export stamped in the graph's metadata (model, grouping, preprocessing)."""
    inputs, outputs = graph_specs(model.graph)
    problems = []
    for side, listed, found in (("inputs", manifest["inputs"], inputs), ("outputs", manifest["outputs"], outputs)):
        if [s["name"] for s in listed] != [s.name for s in found]:
            problems.append(f"{side} {[s['name'] for s in listed]} but the graph has {[s.name for s in found]}")
            continue
        for want, have in zip(listed, found):
            if want["dtype"] != have.dtype or not _same_dims(want["shape"], have.shape):
                problems.append(f"{want['name']} {want['dtype']} {want['shape']} but the graph has "
                                f"{have.dtype} {list(have.shape)}")
    precision = onnx_precision(model.graph)
    if manifest["onnx"]["precision"] != precision:
        problems.append(f"precision {manifest['onnx']['precision']} but the graph is {precision}")
    stamped = {p.key: p.value for p in model.metadata_props}
    said = {"foundry_edge.model": (manifest["model"].get("name"), str),
            "foundry_edge.grouping": (manifest["grouping"], str),
            "foundry_edge.preprocessing": (manifest["preprocessing"], json.loads)}
    for key, (value, parse) in said.items():
        found = _parsed(parse, stamped[key]) if key in stamped else value
        what = key.split(".")[1]
        if isinstance(value, dict) and isinstance(found, dict):  # the fields both state
            problems += [f"{what}.{k} {value[k]!r} but the graph was exported with {found[k]!r}"
                         for k in sorted(value.keys() & found.keys()) if value[k] != found[k]]
        elif found != value:
            problems.append(f"{what} {value!r} but the graph was exported with {stamped[key]!r}")
    return problems


def _same_dims(listed: list, found) -> bool:
    """Fixed dims equal and dynamic where the graph's are (the names may differ: ORT and exporters rename)."""
    return len(listed) == len(found) and all(isinstance(a, str) == isinstance(b, str) and (isinstance(a, str) or a == b)
                                             for a, b in zip(listed, found))


def _parsed(parse, text: str):
    try:
        return parse(text)
    except ValueError:
        return None
