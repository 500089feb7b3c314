"""Checkpoint importers: foundry-edge's own format, Point-JEPA, Point-MAE and Point-BERT.

A foreign checkpoint is mapped onto PointModel keys by a table of prefix renames (the timm
`checkpoint_filter_fn` pattern), its architecture is read from the tensor shapes, and the weights are
loaded strictly: every key is loaded, or named as ignored (a known-irrelevant part such as a predictor
or an EMA copy), or the import fails naming the keys that do not fit.

    Point-JEPA .ckpt  state_dict: student.blocks.*, student.norm.*, tokenizer.embedding.encoder.*,
                      positional_encoding.*; teacher.ema_model.* (the EMA copy, source="ema")
    Point-MAE  .pth   base_model | model: [module.][MAE_encoder.]{encoder,pos_embed,blocks.blocks,norm}.*,
                      cls_token, cls_pos, cls_head_finetune.* (fine-tuned)
    Point-BERT .pth   base_model: [module.][transformer_q.]{encoder,reduce_dim,pos_embed,blocks.blocks,norm}.*,
                      [transformer_q.]{cls_token,cls_pos}, cls_head_finetune.* (fine-tuned)

What changes the forward pass is implemented or refused, never dropped: a CLS token in the weights turns
on `cls_token`, and Point-JEPA's hyper_parameters are read by the tables below. Point-MAE and Point-BERT
.pth files store no configuration: what their weights cannot tell (heads, groups) comes from the preset
or `overrides`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from foundry_edge.checkpoints.format import (ForeignObjectsError, is_native, load_stubbing_foreign, load_weights,
                                     model_from_native, torch_load_safe)
from foundry_edge.errors import FoundryError

SOURCES = ("student", "ema")
WEIGHT_CONTAINERS = ("state_dict", "base_model", "model")  # where upstream checkpoints keep their weights

_ENCODER = {"encoder.": "tokenizer.encoder.", "pos_embed.": "pos_embed.", "blocks.blocks.": "encoder.blocks.",
            "norm.": "encoder.norm."}

# Point-JEPA's hyper_parameters (PointJepa's __init__ arguments, pointjepa/models/point_jepa.py), by what
# the import does with each. Keys in none of these are named in a note and not read.
JEPA_HPARAMS_READ = {"encoder_heads": "num_heads", "tokenizer_num_groups": "num_groups",
                     "tokenizer_group_size": "group_size", "transformation_subsample_points": "num_points",
                     "encoder_add_pos_at_every_layer": "pos_every_block", "val_transformations": "normalize_input"}
JEPA_HPARAMS_REFUSED = ("tokenizer_group_radius",)  # any value but None (see _hparam_behaviour)
JEPA_HPARAMS_FROM_WEIGHTS = ("encoder_dim", "encoder_depth")  # the tensor shapes tell them
# Prefixes of what only pretraining uses: dropout and drop path (inactive in eval), the predictor, target
# and context sampling, EMA, loss, optimiser, augmentations, SVM validation. token_seq_method only
# reorders the tokens, which the encoder (positions from the centres, no index embedding) is blind to.
JEPA_HPARAMS_TRAINING_ONLY = (
    "encoder_dropout", "encoder_attention_dropout", "encoder_drop_path_rate", "predictor_", "token_seq_method",
    "target_", "num_targets_per_sample", "context_", "ema_", "loss", "learning_rate", "optimizer_",
    "lr_scheduler_", "train_transformations", "transformation_scale_", "transformation_rotate_",
    "transformation_translate", "transformation_height_normalize_dim", "svm_validation",
    "fix_estimated_stepping_batches", "pretrained_ckpt_path")


@dataclass(frozen=True)
class Layout:
    """How one upstream layout maps onto PointModel keys."""

    name: str
    preset: str  # the preset that supplies what the weights cannot tell (points, groups, heads)
    renames: dict  # upstream prefix -> PointModel prefix, first match wins
    ignored: tuple  # upstream prefixes (or whole keys) that are known and not part of the encoder


_JEPA_SHARED = {"tokenizer.embedding.encoder.": "tokenizer.encoder.", "positional_encoding.": "pos_embed."}
_JEPA_IGNORED = ("predictor.", "mask_token")

POINT_JEPA = Layout("point-jepa", "pointjepa-vits",
                    {**_JEPA_SHARED, "student.blocks.": "encoder.blocks.", "student.norm.": "encoder.norm."},
                    ("teacher.",) + _JEPA_IGNORED)
POINT_JEPA_EMA = Layout("point-jepa", "pointjepa-vits",
                        {**_JEPA_SHARED, "teacher.ema_model.blocks.": "encoder.blocks.",
                         "teacher.ema_model.norm.": "encoder.norm."},
                        ("student.", "teacher.") + _JEPA_IGNORED)
# cls_token and cls_pos (fine-tuned Point-MAE, Point-BERT) keep their names: PointModel uses upstream's.
POINT_MAE = Layout("point-mae", "pointmae-vits",
                   {**{"MAE_encoder." + k: v for k, v in _ENCODER.items()}, **_ENCODER,
                    "cls_head_finetune.": "cls_head.layers."},
                   ("MAE_decoder.", "decoder_pos_embed.", "increase_dim.", "mask_token"))
POINT_BERT = Layout("point-bert", "pointbert-vits",
                    {**{"transformer_q." + k: v for k, v in _ENCODER.items()}, **_ENCODER,
                     "transformer_q.reduce_dim.": "tokenizer.reduce_dim.", "reduce_dim.": "tokenizer.reduce_dim.",
                     "transformer_q.cls_token": "cls_token", "transformer_q.cls_pos": "cls_pos",
                     "cls_head_finetune.": "cls_head.layers."},
                    # Pretraining only: the MoCo projection on the CLS (cls_head), the dVAE token logits
                    # (lm_head), the momentum encoder, the dVAE and the MoCo queue.
                    ("transformer_q.mask_token", "transformer_q.lm_head.", "transformer_q.cls_head.",
                     "transformer_k.", "dvae.", "queue", "lm_head.", "mask_token"))


def import_checkpoint(path: str | os.PathLike, *, source: str = "student", preset: str | None = None,
                      overrides: dict | None = None):
    """(checkpoint file) -> (PointModel in eval mode, LoadReport, layout name).

    `source` picks Point-JEPA's online encoder ("student") or its EMA copy ("ema"). `preset` fixes the
    architecture (the load then checks the weights against it); without it the architecture is read
    from the weights (see `infer_config`). `overrides` set ModelConfig fields the weights cannot tell
    (num_heads, num_groups, group_size, num_points). A hyper-parameter that changes the forward pass in
    a way foundry-edge does not implement (Point-JEPA's tokenizer_group_radius) is a FoundryError.

    A checkpoint that pickles foreign objects beside its weights (Point-JEPA's Lightning
    hyper_parameters hold data-module objects) is read with those objects stubbed, never imported or
    run (`checkpoint.load_stubbing_foreign`); the report's notes name them.
    """
    try:
        payload, stubbed = torch_load_safe(path), []
    except ForeignObjectsError:
        payload, stubbed = load_stubbing_foreign(path, WEIGHT_CONTAINERS)
    model, report, layout = import_payload(payload, source=source, preset=preset, overrides=overrides, name=str(path))
    if stubbed:
        report.notes.append(f"the file pickles foreign objects ({', '.join(stubbed)}): they were stubbed, never "
                            "imported or run, and discarded; only the weights and plain hyper_parameters were read")
    return model, report, layout


def import_payload(payload: object, *, source: str = "student", preset: str | None = None,
                   overrides: dict | None = None, name: str = "checkpoint"):
    """Like `import_checkpoint`, for an object already loaded with `torch_load_safe`."""
    if source not in SOURCES:
        raise FoundryError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    layout = detect_layout(payload, name)
    if layout == "foundry-edge":
        if preset is not None or overrides or source != "student":
            raise FoundryError(f"{name} is a foundry-edge checkpoint: it stores its own architecture, so a preset, "
                               "overrides or a source do not apply; drop --preset / --set / --source")
        model, report = model_from_native(payload, source=name)
        return model, report, layout
    if source == "ema" and layout != "point-jepa":
        raise FoundryError(f"source='ema' applies to Point-JEPA checkpoints only; {name} is a {layout} checkpoint")
    table = {"point-mae": POINT_MAE, "point-bert": POINT_BERT}.get(layout) or (
        POINT_JEPA_EMA if source == "ema" else POINT_JEPA)
    state = foreign_state(payload)
    mapped, ignored = map_keys(state, table, name)
    if source == "ema" and not any(k.startswith("teacher.ema_model.") for k in state):
        raise FoundryError(f"{name} has no EMA copy (no teacher.ema_model.* keys); use source='student'")
    hparams = _hyper_parameters(payload) if layout == "point-jepa" else {}
    config = infer_config(mapped, table, preset, hparams, overrides, name=name)
    from foundry_edge.models.model import PointModel

    model = PointModel(config)
    report = load_weights(model, mapped, ignored=ignored, source=name)
    heads_stated = preset is not None or "num_heads" in (overrides or {}) or "encoder_heads" in hparams
    report.notes = _notes(None if heads_stated else config.num_heads, unread_hparams(hparams))
    return model.eval(), report, layout


def _notes(guessed_heads: int | None, unread: list[str]) -> list[str]:
    """Where the imported model may not compute what the upstream one did."""
    notes = []
    if guessed_heads:
        notes.append(f"num_heads={guessed_heads} is not stored in the weights (it only splits the width); "
                     "if the upstream model used another head count, pass num_heads (--set num_heads=H)")
    if unread:
        notes.append(f"hyper_parameters foundry-edge does not know were not read: {', '.join(unread)}; if one "
                     "changes the encoder's forward pass, the imported model differs from the upstream one")
    return notes


def unread_hparams(hparams: dict) -> list[str]:
    """Point-JEPA hyper_parameters in none of the JEPA_HPARAMS_* tables."""
    known = set(JEPA_HPARAMS_READ) | set(JEPA_HPARAMS_REFUSED) | set(JEPA_HPARAMS_FROM_WEIGHTS)
    return sorted(k for k in map(str, hparams) if k not in known and not k.startswith(JEPA_HPARAMS_TRAINING_ONLY))


def foreign_state(payload: object) -> dict:
    """The weights inside an upstream checkpoint, without a DataParallel `module.` prefix."""
    state = payload
    for key in WEIGHT_CONTAINERS:
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            state = payload[key]
            break
    if not isinstance(state, dict):
        return {}
    if state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def detect_layout(payload: object, name: str = "checkpoint") -> str:
    """foundry-edge, point-jepa, point-mae or point-bert: which layout a loaded checkpoint is, from its keys."""
    if is_native(payload):
        return "foundry-edge"
    keys = list(foreign_state(payload))
    if any(k.startswith(("student.blocks.", "teacher.ema_model.blocks.")) for k in keys):
        return "point-jepa"
    if any(k.startswith(("transformer_q.", "reduce_dim.")) for k in keys):
        return "point-bert"
    if any(k.startswith(("MAE_encoder.", "blocks.blocks.")) for k in keys):
        return "point-mae"
    found = (f"a dict with keys {_key_preview(payload)}" if isinstance(payload, dict)
             else f"a {type(payload).__name__}")
    inner = f" (weights {_key_preview(dict.fromkeys(keys))})" if keys and keys != list(payload) else ""
    raise FoundryError(f"{name} is not a checkpoint layout foundry-edge knows: expected a foundry-edge checkpoint, "
                       f"a Point-JEPA .ckpt (state_dict with student.blocks.*) or a Point-MAE / Point-BERT .pth "
                       f"(base_model with MAE_encoder.* / transformer_q.*), found {found}{inner}")


def map_keys(state: dict, layout: Layout, name: str = "checkpoint") -> tuple[dict, list[str]]:
    """Rename upstream keys to PointModel keys; (mapped state, ignored upstream keys).

    A key that matches no rename and no ignore keeps its name, so the strict load names it as unexpected.
    """
    mapped, ignored, origin = {}, [], {}
    for key, value in state.items():
        prefix = next((p for p in layout.renames if key.startswith(p)), None)
        if prefix is not None:
            target = layout.renames[prefix] + key[len(prefix):]
        elif key.startswith(layout.ignored):
            ignored.append(key)
            continue
        else:
            target = key
        if target in mapped:
            raise FoundryError(f"{name} holds two copies of {target!r} ({origin[target]!r} and {key!r}); "
                               "it mixes two checkpoint layouts: keep one")
        mapped[target], origin[target] = value, key
    return mapped, ignored


def infer_config(state: dict, layout: Layout, preset: str | None = None, hparams: dict | None = None,
                 overrides: dict | None = None, name: str = "checkpoint"):
    """ModelConfig for mapped weights: what the user states wins, the rest is read from the weights.

    Without a `preset`, widths, depth and biases come from the tensor shapes, group settings and heads
    from Point-JEPA's hyper_parameters, and the layout's preset supplies what is left. With a `preset`
    only the classification head and the CLS token are read from the weights, so the strict load checks
    the weights against the preset. Hyper-parameters that change the forward pass without changing a
    shape (positions once, input normalisation) are read either way: no preset states them.
    `overrides` (ModelConfig fields) apply last.
    """
    from foundry_edge.models.registry import get_config

    base = get_config(preset or layout.preset)
    fields: dict = {"num_classes": _head_classes(state), "cls_token": "cls_token" in state}
    if preset is None:
        fields.update(_shape_fields(state, base))
        fields.update(_hparam_sizes(hparams or {}))
    fields.update(_hparam_behaviour(hparams or {}, name, set(overrides or {})))
    fields.update(overrides or {})
    if "num_heads" not in fields and fields.get("embed_dim", base.embed_dim) % base.num_heads:
        fields["num_heads"] = max(1, fields["embed_dim"] // 64)  # ViT convention: 64 channels per head
    config = base.replace(**fields)
    if config == base.replace(num_classes=fields["num_classes"]):
        return config.replace(extra={"imported_from": layout.name})
    return config.replace(name=f"{layout.name}-d{config.embed_dim}x{config.depth}", extra={"imported_from": layout.name})


def _head_classes(state: dict) -> int:
    """Classes of the classification head's last Linear (layers.8 for Point-MAE's, 3 for Point-BERT's), or 0."""
    linears = {int(k.split(".")[2]): v for k, v in state.items()
               if k.startswith("cls_head.layers.") and k.endswith(".weight") and getattr(v, "ndim", 0) == 2}
    return int(linears[max(linears)].shape[0]) if linears else 0


def _hparam_sizes(hparams: dict) -> dict:
    """Point-JEPA's sizes that the weights cannot tell (heads, groups, points; plain ints only)."""
    names = ("encoder_heads", "tokenizer_num_groups", "tokenizer_group_size", "transformation_subsample_points")
    return {JEPA_HPARAMS_READ[theirs]: hparams[theirs] for theirs in names
            if isinstance(hparams.get(theirs), int) and not isinstance(hparams.get(theirs), bool)}


def _hparam_behaviour(hparams: dict, name: str, stated: set) -> dict:
    """Point-JEPA's hyper-parameters that change the forward pass but no shape: implemented or refused
    (`stated`: the fields the user overrides, which need no reading)."""
    radius = hparams.get("tokenizer_group_radius")
    if radius is not None:
        raise FoundryError(f"{name} was trained with tokenizer_group_radius={radius!r} (ball-query groups scaled by "
                           "1/radius), which foundry-edge does not implement (it groups by kNN), so its tokens would "
                           "differ: import a checkpoint trained with tokenizer_group_radius=None")
    fields = {}
    if "encoder_add_pos_at_every_layer" in hparams:
        every = hparams["encoder_add_pos_at_every_layer"]
        if not isinstance(every, bool):
            raise FoundryError(f"{name} has encoder_add_pos_at_every_layer={every!r}; expected true or false")
        fields["pos_every_block"] = every
    if "val_transformations" in hparams and "normalize_input" not in stated:
        fields["normalize_input"] = _normalize_input(hparams["val_transformations"], name)
    return fields


def _normalize_input(transformations, name: str) -> bool:
    """Point-JEPA's evaluation transforms -> normalize_input: 'center' then 'unit_sphere', or neither.

    'subsample' (a random draw of transformation_subsample_points) is the caller's choice of cloud.
    """
    steps = [t for t in transformations if t != "subsample"] if isinstance(transformations, (list, tuple)) else None
    if steps not in (["center", "unit_sphere"], []):
        raise FoundryError(f"{name} evaluates with val_transformations={transformations!r}; foundry-edge normalises a "
                           "cloud by 'center' then 'unit_sphere' (normalize_input=True) or not at all, so the "
                           "model's inputs would differ: apply those transforms to the clouds yourself and state the "
                           "model's own with --set normalize_input=true|false")
    return bool(steps)


def _shape_fields(state: dict, base) -> dict:
    """Architecture fields the tensor shapes fix; fields whose tensors are absent stay the preset's."""
    def dim(key: str, axis: int = 0):
        value = state.get(key)
        return int(value.shape[axis]) if hasattr(value, "shape") and len(value.shape) > axis else None

    fields: dict = {}
    embed_dim = dim("encoder.norm.weight")
    if embed_dim:
        fields["embed_dim"] = embed_dim
    depth = len({k.split(".")[2] for k in state if k.startswith("encoder.blocks.")})
    if depth:
        fields["depth"] = depth
    widths = [dim("tokenizer.encoder.first_conv.0.weight"), dim("tokenizer.encoder.first_conv.3.weight"),
              dim("tokenizer.encoder.second_conv.0.weight")]
    if all(widths):
        fields["tokenizer_widths"] = tuple(widths)
    if "tokenizer.encoder.first_conv.0.weight" in state:
        fields["tokenizer_bias"] = "tokenizer.encoder.first_conv.0.bias" in state
    group_dim = dim("tokenizer.encoder.second_conv.3.weight")
    if group_dim:
        fields["encoder_dim"] = 0 if group_dim == fields.get("embed_dim", base.embed_dim) else group_dim
    if "encoder.blocks.0.attn.qkv.weight" in state:
        fields["qkv_bias"] = "encoder.blocks.0.attn.qkv.bias" in state
    hidden, width = dim("encoder.blocks.0.mlp.fc1.weight"), fields.get("embed_dim", base.embed_dim)
    if hidden:
        fields["mlp_ratio"] = hidden / width
    pos_hidden = dim("pos_embed.0.weight")
    if pos_hidden:
        fields["pos_hidden"] = pos_hidden
    return fields


def _hyper_parameters(payload: object) -> dict:
    """A Lightning checkpoint's hyper_parameters, or {}."""
    hparams = payload.get("hyper_parameters") if isinstance(payload, dict) else None
    return hparams if isinstance(hparams, dict) else {}


def _key_preview(mapping: dict, limit: int = 6) -> str:
    keys = [str(k) for k in mapping]
    return "[" + ", ".join(keys[:limit]) + (f", ... {len(keys) - limit} more" if len(keys) > limit else "") + "]"
