"""Data for training and evaluation: a data set by name, batches as dicts of tensors.

A data set is anything indexable whose items are dict(points (N, 3) float32, label int, parts (N,)
int64): `foundry_edge.data.synthetic.SyntheticShapes` or whatever `foundry_edge.data.open_dataset`
reads (ShapeNet55 folders, a folder of clouds).
"""

from __future__ import annotations

from foundry_edge.errors import FoundryError

# Synthetic split sizes when the caller does not give one.
SYNTHETIC_DEFAULT_SAMPLES = {"train": 2000, "test": 500}
SYNTHETIC_SPLITS = tuple(SYNTHETIC_DEFAULT_SAMPLES)
DATASET_SPLITS = ("train", "val", "test", "trainval")


def open_training_data(spec: str, split: str, num_points: int, num_samples: int | None = None, seed: int = 0):
    """('synthetic' | a data set path, split, N) -> an indexable data set; refuses an empty one.

    `num_samples` and `seed` choose the synthetic set's size and draw; a data folder fixes its own.
    The synthetic data has the splits train and test; data sets may also have val and trainval (ShapeNetPart),
    and each layout refuses a split it does not hold.
    """
    known = SYNTHETIC_SPLITS if spec == "synthetic" else DATASET_SPLITS
    if split not in known:
        raise FoundryError(f"expected a split in {', '.join(known)} for {spec!r}, got {split!r}: pass --split test or train")
    if spec == "synthetic":
        from foundry_edge.data.synthetic import SyntheticShapes

        size = num_samples if num_samples is not None else SYNTHETIC_DEFAULT_SAMPLES.get(split, 500)
        dataset = SyntheticShapes(size, num_points, seed=seed, split=split)
    else:
        if num_samples is not None:
            raise FoundryError(f"a sample count applies to the synthetic data only, not to {spec!r}: "
                               "drop --samples or use --data synthetic")
        from foundry_edge.data import open_dataset

        dataset = open_dataset(spec, split, num_points, seed=seed)
    if len(dataset) == 0:
        raise FoundryError(f"the {split!r} split of {spec!r} holds no point clouds; expected at least one batch: "
                           "check the folder and its split files")
    return dataset


def num_classes_of(dataset) -> int:
    """The class count a data set declares, else one more than its largest label."""
    declared = getattr(dataset, "num_classes", None)
    if declared:
        return int(declared)
    return 1 + max(int(dataset[i]["label"]) for i in range(len(dataset)))


def num_parts_of(dataset) -> int:
    """The part-label count a data set declares, else one more than its largest part label."""
    declared = getattr(dataset, "num_parts", None)
    if declared:
        return int(declared)
    return 1 + max(int(dataset[i]["parts"].max()) for i in range(len(dataset)))


def collate(items: list[dict]) -> dict:
    """[dict(points (N, 3), label, parts (N,))] -> dict(points (B, N, 3), label (B,), parts (B, N))."""
    import numpy as np
    import torch

    batch = {"points": torch.from_numpy(np.stack([np.asarray(it["points"], dtype=np.float32) for it in items])),
             "label": torch.tensor([int(it["label"]) for it in items], dtype=torch.int64)}
    if all(it.get("parts") is not None for it in items):
        batch["parts"] = torch.from_numpy(np.stack([np.asarray(it["parts"], dtype=np.int64) for it in items]))
    return batch


def batches(dataset, batch_size: int, limit: int | None = None):
    """Iterate a data set in order as collated batches (evaluation: no shuffling, keeps the tail)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, count, batch_size):
        yield collate([dataset[i] for i in range(start, min(start + batch_size, count))])
