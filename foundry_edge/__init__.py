"""foundry-edge: distilled 3D foundation models (Foundry, arXiv 2511.20721) from PyTorch to the edge.

The top-level package imports nothing heavy: the Jetson engine path must work without torch or
onnxruntime installed.
"""

__version__ = "0.1.0"
