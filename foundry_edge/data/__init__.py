"""Point-cloud data: readers, data set layouts, preprocessing and a synthetic shape generator."""

from foundry_edge.data.readers import read_cloud, read_cloud_with_fields, validate_cloud
from foundry_edge.data.synthetic import SYNTHETIC_CLASSES, SyntheticShapes

__all__ = ["SYNTHETIC_CLASSES", "SyntheticShapes", "read_cloud", "read_cloud_with_fields", "validate_cloud"]
