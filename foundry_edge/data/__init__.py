"""Point-cloud data: readers, data set layouts, preprocessing, a synthetic shape generator and the one
re-iterable cloud loader the commands feed models from."""

from foundry_edge.data.batches import iter_batches, load_clouds, read_clouds
from foundry_edge.data.datasets import open_dataset
from foundry_edge.data.loader import CloudLoader, Clouds
from foundry_edge.data.readers import DroppedPoints, centre_cloud, read_cloud, read_cloud_with_fields, validate_cloud
from foundry_edge.data.synthetic import SYNTHETIC_CLASSES, SyntheticShapes, example_clouds
from foundry_edge.data.transforms import augment, normalize, resample

__all__ = ["CloudLoader", "Clouds", "DroppedPoints", "SYNTHETIC_CLASSES", "SyntheticShapes", "augment", "centre_cloud",
           "example_clouds", "iter_batches", "load_clouds", "normalize", "open_dataset", "read_cloud",
           "read_cloud_with_fields", "read_clouds", "resample", "validate_cloud"]
