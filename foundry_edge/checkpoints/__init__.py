"""Checkpoints: the native format, importers of upstream layouts, restricted unpickling, and model specs.

    format.py             save_checkpoint / model_from_native / torch_load_safe: the native .pt format
    importers.py          import_checkpoint: Point-MAE, Point-BERT, Point-JEPA and Foundry layouts
    restricted_pickle.py  reads weights out of pickles whose globals are not allow-listed, running none
    resolve.py            load_model(spec): a preset name, "default", or a checkpoint path -> PointModel
"""
