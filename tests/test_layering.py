"""The layering of docs/architecture.md, held by an AST scan of every import (module level and inside
functions): each layer imports only the layers it lists, so the stages form no cycle and the TensorRT
path can run where torch, onnxruntime and the model package are absent."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's files live (export/, runtimes/ and calibration/ install under foundry_edge).
SOURCES = {"foundry_edge": ROOT / "foundry_edge", "foundry_edge.export": ROOT / "export",
           "foundry_edge.runtimes": ROOT / "runtimes", "foundry_edge.calibration": ROOT / "calibration"}
# Modules at the top of foundry_edge that every layer may use: they import nothing but each other.
UTILITIES = {"foundry_edge", "foundry_edge.errors", "foundry_edge.fileio", "foundry_edge.interrupts",
             "foundry_edge.assignment_health"}
# Old import paths kept for one release: they only re-export the module they name.
ALIASES = {"foundry_edge.resolve": "checkpoints", "foundry_edge.checkpoint": "checkpoints",
           "foundry_edge.importers": "checkpoints", "foundry_edge.preprocess": "data",
           "foundry_edge.scene_grouping": "data", "foundry_edge.scenes": "models"}
BASE = {"utilities"}
ALLOWED = {  # layer -> layers it may import (besides itself), bottom to top
    "utilities": set(),
    "contracts": BASE,
    "data": BASE | {"contracts"},
    "runtimes": BASE | {"contracts", "data"},
    "models": BASE | {"contracts", "data"},
    "checkpoints": BASE | {"contracts", "data", "models", "runtimes"},
    "export": BASE | {"contracts", "data", "models", "checkpoints", "runtimes"},
    "calibration": BASE | {"contracts", "data", "runtimes", "export"},
    "training": BASE | {"contracts", "data", "models", "checkpoints"},
    "profiling": BASE | {"contracts", "data", "runtimes", "models", "checkpoints", "export", "calibration", "training"},
    "cli": BASE | {"contracts", "data", "runtimes", "models", "checkpoints", "export", "calibration", "training",
                   "profiling"},
}
# Where the model package, torch and onnxruntime may never be imported: what a Jetson runs.
TENSORRT_PATH = ("foundry_edge.runtimes.build", "foundry_edge.runtimes.trt", "foundry_edge.runtimes.calibrator",
                 "foundry_edge.runtimes.cuda_host", "foundry_edge.runtimes.trt_compat", "foundry_edge.runtimes.base",
                 "foundry_edge.runtimes.model_info", "foundry_edge.runtimes.compare", "foundry_edge.runtimes")


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package,) + (parts[:-1] if parts[-1] == "__init__" else parts))
            if package == "foundry_edge" and parts[0] in ("export", "runtimes", "calibration"):
                continue
            found[name] = path
    return found


def layer_of(module: str) -> str:
    if module == "foundry_edge.__main__":  # `python -m foundry_edge`: the CLI's entry
        return "cli"
    if module in UTILITIES or module == "foundry_edge.__version__":
        return "utilities"
    if module in ALIASES:
        return "alias"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "unplaced"


def imports(module: str, path: Path):
    """(line, imported module) for every import of ours in the file, wherever it sits."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module]
            # `from foundry_edge import data` imports the subpackage, not the package's __init__
            if names[0] == "foundry_edge":
                names = [f"foundry_edge.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name and name.split(".")[0] == "foundry_edge":
                yield node.lineno, name


def third_party(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module.split(".")[0]


def test_every_module_sits_in_a_layer():
    unplaced = [name for name in modules() if layer_of(name) == "unplaced"]
    assert not unplaced, f"modules outside every layer (add them to a package or to UTILITIES): {unplaced}"


def test_each_layer_imports_only_the_layers_below_it():
    bad = []
    for name, path in modules().items():
        mine = layer_of(name)
        if mine in ("alias", "unplaced"):  # unplaced modules fail the test above
            continue
        for line, target in imports(name, path):
            theirs = layer_of(target)
            if theirs != mine and theirs not in ALLOWED[mine] and not (theirs == "alias" and mine == "cli"):
                bad.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {target} ({theirs})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_allowed_edges_form_no_cycle():
    seen, done = set(), set()

    def visit(layer, trail):
        assert layer not in seen or layer in done, f"cycle: {' -> '.join(trail + [layer])}"
        if layer in seen:
            return
        seen.add(layer)
        for lower in ALLOWED[layer]:
            visit(lower, trail + [layer])
        done.add(layer)

    for layer in ALLOWED:
        visit(layer, [])


@pytest.mark.parametrize("module", TENSORRT_PATH)
def test_the_tensorrt_path_never_names_torch_onnxruntime_or_the_models(module):
    path = modules()[module]
    bad = [f"line {line}: {name}" for line, name in third_party(path) if name in ("torch", "onnxruntime")]
    bad += [f"line {line}: {name}" for line, name in imports(module, path)
            if layer_of(name) in ("models", "checkpoints", "export", "calibration", "training")]
    assert not bad, f"{module} imports what a Jetson may not have: {bad}"


def test_the_scan_sees_lazy_and_relative_imports(tmp_path):
    """The scanner itself: an import inside a function and a relative one are both found."""
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from foundry_edge.models import create_model\nfrom ..export import manifest\n")
    found = [name for _, name in imports("foundry_edge.runtimes.x", source)]
    assert sorted(found) == ["foundry_edge.export", "foundry_edge.models"]


@pytest.mark.parametrize("alias, name", [("foundry_edge.resolve", "load_model"),
                                         ("foundry_edge.checkpoint", "save_checkpoint"),
                                         ("foundry_edge.importers", "import_checkpoint"),
                                         ("foundry_edge.preprocess", "feed_from_manifest"),
                                         ("foundry_edge.scene_grouping", "group_clouds"),
                                         ("foundry_edge.scenes", "check_budget")])
def test_moved_modules_still_import_for_one_release_and_say_where_they_went(alias, name):
    import importlib
    import sys
    import warnings

    sys.modules.pop(alias, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(alias)
    assert hasattr(module, name)
    assert any(issubclass(w.category, DeprecationWarning) and "0.3" in str(w.message) for w in caught)
