"""trtexec's command-line shape flags, written from a manifest or from (min, opt, max) shapes.

The export prints them beside the ONNX and the engine builder writes them in its equivalent trtexec line,
so both spell shapes the same way trtexec parses them (`name:1x1024x3`, comma-separated).
"""

from __future__ import annotations


def trtexec_shapes(manifest: dict) -> str:
    """--minShapes/--optShapes/--maxShapes for trtexec from the manifest's inputs and profiles ('' if static)."""
    profiles = manifest.get("profiles") or {}
    if not profiles:
        return ""
    shapes = {spec["name"]: tuple([profiles[d][i] if isinstance(d, str) else d for d in spec["shape"]]
                                  for i in range(3))
              for spec in manifest["inputs"]}
    return " ".join(shape_flags(shapes))


def shape_flags(shapes) -> list:
    """{input: (min, opt, max) shapes} -> trtexec's ["--minShapes=a:1x3,...", "--optShapes=...", "--maxShapes=..."]."""
    def joined(which: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in triple[which])}" for name, triple in shapes.items())

    return [f"--{which}Shapes={joined(i)}" for i, which in enumerate(("min", "opt", "max"))]
