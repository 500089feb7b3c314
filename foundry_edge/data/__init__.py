"""Point-cloud data: readers, data set layouts, preprocessing and a synthetic shape generator."""

from foundry_edge.data.synthetic import SYNTHETIC_CLASSES, SyntheticShapes

__all__ = ["SYNTHETIC_CLASSES", "SyntheticShapes"]
