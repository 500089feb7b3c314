"""One configuration dataclass for every model: teacher, Foundry students and their heads.

Flat on purpose: presets are plain dicts of overrides, a checkpoint stores `to_dict()`, and the CLI
can override any field by name (`--set depth=6`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from foundry_edge.contracts.preprocessing import ALGORITHMS
from foundry_edge.errors import FoundryError

KINDS = ("teacher", "student")
ASSIGNERS = ("dso", "kmeans", "fps")
# DSO assignment logits. "dot": (q_k . k_j) / sqrt(d), the paper's form; it collapsed to one SuperToken at
# inference (the keys share one large direction, README "Why DSO collapsed"). "centered-cosine": keys
# minus their per-cloud mean, then cosine to the queries, times a learned scale (the default).
DSO_LOGITS = ("centered-cosine", "dot")
# Fields added after checkpoints were written: a stored config without one takes its value from before
# the field existed, so an old checkpoint keeps computing what it was trained to compute. A field whose
# default is the old behaviour (pos_every_block, cls_token, cls_head_layout) needs no entry.
LEGACY_DEFAULTS = {"dso_logits": "dot"}
GROUPINGS = ALGORITHMS  # the grouping algorithm a model is built with (placement is an export option)
# Classification head layouts: Point-MAE's cls_head_finetune (Linear-BN-ReLU-Dropout twice, then Linear)
# and Point-BERT's (Linear-ReLU-Dropout-Linear), so either fine-tuned head imports by key renaming.
CLS_HEAD_LAYOUTS = ("point-mae", "point-bert")


# Sizes that must be >= 1 and >= 0 (0 meaning "derive it": encoder_dim, cau_hidden; "none": the heads).
# num_supertokens and gate_budget are checked against num_groups where they apply (students, the gate).
POSITIVE = ("num_points", "num_groups", "group_size", "embed_dim", "depth", "num_heads", "fps_candidates",
            "knn_chunk", "pos_hidden", "output_dim", "gate_hidden")
NON_NEGATIVE = ("encoder_dim", "cau_hidden", "num_classes", "num_part_classes", "kmeans_iters")


@dataclass
class ModelConfig:
    name: str = "custom"
    kind: str = "teacher"  # "teacher" (Point-JEPA / Point-MAE encoder) or "student" (Foundry)
    # Input and grouping. 64 x 32 for 1024 points, 128 x 32 for 2048, 512 x 32 for 8192.
    num_points: int = 1024
    num_groups: int = 64
    group_size: int = 32
    normalize_input: bool = True  # centre + unit sphere inside the model, so engines take raw clouds
    # "exact": FPS over all points + one (G x N) kNN. "scalable" (large scenes): FPS over
    # fps_candidates x G octree-stratified candidates + kNN in chunks of knn_chunk centres.
    grouping: str = "exact"
    fps_candidates: int = 4
    knn_chunk: int = 512
    # Tokenizer (mini-PointNet). encoder_dim != embed_dim adds Point-BERT's reduce_dim Linear.
    tokenizer_widths: tuple = (128, 256, 512)
    tokenizer_bias: bool = False  # Point-JEPA: no bias before BN; Point-MAE / Point-BERT: bias
    encoder_dim: int = 0  # 0 = embed_dim
    # Transformer encoder.
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True  # Point-JEPA: True; Point-MAE / Point-BERT: False
    pos_hidden: int = 128
    # Positions added before every block (Point-MAE, Point-BERT, Point-JEPA's default) or once before
    # the first (Point-JEPA encoder_add_pos_at_every_layer=False).
    pos_every_block: bool = True
    # A learned CLS token and CLS position lead the sequence (Point-BERT; fine-tuned Point-MAE). The
    # `tokens` output stays the c patch tokens; a classification head reads [CLS, max over patches].
    cls_token: bool = False
    # Foundry student (kind == "student").
    assigner: str = "dso"  # "dso" (learned), or the paper's static baselines "kmeans" / "fps"
    num_supertokens: int = 16
    output_dim: int = 384  # the teacher's token width that CAU reconstructs
    cau_hidden: int = 0  # 0 = 2 * output_dim
    gumbel_tau: float = 1.0
    dso_logits: str = "centered-cosine"
    kmeans_iters: int = 4
    # Foundry-Gate: tokens with fusion probability <= gate_threshold bypass DSO, at most gate_budget.
    gate: bool = False
    gate_threshold: float = 0.5
    gate_budget: int = 8
    gate_hidden: int = 64
    # Heads on the (reconstructed) tokens. 0 = no head.
    num_classes: int = 0
    cls_head_layout: str = "point-mae"
    num_part_classes: int = 0
    extra: dict = field(default_factory=dict)  # free-form provenance (e.g. the teacher's preset)

    def __post_init__(self):
        self.validate()
        self.tokenizer_widths = tuple(self.tokenizer_widths)

    @property
    def tokenizer_out_dim(self) -> int:
        return self.encoder_dim or self.embed_dim

    @property
    def effective_cau_hidden(self) -> int:
        return self.cau_hidden or 2 * self.output_dim

    @property
    def token_dim(self) -> int:
        """Width of the tokens the model outputs (the teacher's width for a student)."""
        return self.output_dim if self.kind == "student" else self.embed_dim

    def validate(self) -> None:
        """Types first (a checkpoint's JSON or a hand-edited config may hold "16" for 16), then ranges and the
        combinations that cannot build: one FoundryError naming every problem. Presets, `--set` and checkpoint
        configs all come through here."""
        problems = type_problems(self)
        if problems:
            raise FoundryError("invalid model configuration: " + "; ".join(problems))
        problems = [message for bad, message in self._range_rules() if bad]
        if problems:
            raise FoundryError("invalid model configuration: " + "; ".join(problems))

    def _range_rules(self) -> list:
        """(is it wrong, what to say) for every value and combination the model cannot be built with."""
        student = self.kind == "student"
        return [
            (self.kind not in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}"),
            (self.assigner not in ASSIGNERS, f"assigner must be one of {ASSIGNERS}, got {self.assigner!r}"),
            (self.dso_logits not in DSO_LOGITS, f"dso_logits must be one of {DSO_LOGITS}, got {self.dso_logits!r}"),
            (self.grouping not in GROUPINGS, f"grouping must be one of {GROUPINGS}, got {self.grouping!r}"),
            (self.cls_head_layout not in CLS_HEAD_LAYOUTS,
             f"cls_head_layout must be one of {CLS_HEAD_LAYOUTS}, got {self.cls_head_layout!r}"),
            (self.cls_token and student, "cls_token applies to teacher encoders only: a Foundry student has no CLS token"),
            *[(getattr(self, name) < 1, f"{name} must be positive, got {getattr(self, name)}") for name in POSITIVE],
            *[(getattr(self, name) < 0, f"{name} must be >= 0, got {getattr(self, name)}") for name in NON_NEGATIVE],
            (len(self.tokenizer_widths) != 3 or min(self.tokenizer_widths, default=0) < 1,
             f"tokenizer_widths needs 3 positive values, got {tuple(self.tokenizer_widths)}"),
            (not 0 < self.mlp_ratio <= 64 or int(self.embed_dim * self.mlp_ratio) < 1,
             f"mlp_ratio must be in (0, 64] and give an MLP of at least one unit, got {self.mlp_ratio}"),
            (not self.gumbel_tau > 0, f"gumbel_tau must be positive, got {self.gumbel_tau}"),
            (not 0 <= self.gate_threshold <= 1, f"gate_threshold must be in 0..1, got {self.gate_threshold}"),
            (self.num_heads > 0 and self.embed_dim % self.num_heads != 0,
             f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"),
            (self.group_size > self.num_points, f"group_size {self.group_size} exceeds num_points {self.num_points}"),
            (self.num_groups > self.num_points, f"num_groups {self.num_groups} exceeds num_points {self.num_points}"),
            (student and not 1 <= self.num_supertokens <= self.num_groups,
             f"num_supertokens must be in 1..num_groups ({self.num_groups}), got {self.num_supertokens}"),
            (student and self.gate and not 1 <= self.gate_budget <= self.num_groups,
             f"gate_budget must be in 1..num_groups ({self.num_groups}), got {self.gate_budget}"),
            (student and self.gate and self.assigner != "dso", "the gate needs the learned DSO assigner (assigner=dso)"),
        ]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tokenizer_widths"] = list(self.tokenizer_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FoundryError(f"unknown model configuration fields {unknown}; known fields: {sorted(known)}")
        return cls(**{**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in data}, **data})

    def replace(self, **overrides) -> "ModelConfig":
        """A copy with fields overridden; `num_points` alone rescales the groups (c = N / 16)."""
        data = self.to_dict()
        data.update(overrides)
        if "num_points" in overrides and "num_groups" not in overrides:
            data["num_groups"] = scaled_groups(self, overrides["num_points"])
        return ModelConfig.from_dict(data)


def type_problems(config: ModelConfig) -> list[str]:
    """Fields whose value is not of the field's type: bool, int (not bool), a finite number, str, 3 ints, dict."""
    import math

    problems = []
    for f in dataclasses.fields(ModelConfig):
        value, default = getattr(config, f.name), _default(f)
        if isinstance(default, bool):
            ok, kind = type(value) is bool, "true or false"
        elif isinstance(default, int):
            ok, kind = type(value) is int, "an integer"
        elif isinstance(default, float):
            ok = type(value) in (int, float) and math.isfinite(value)
            kind = "a finite number"
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple)) and all(type(v) is int for v in value)
            kind = "a list of integers"
        elif isinstance(default, dict):
            ok, kind = isinstance(value, dict), "an object"
        else:
            ok, kind = isinstance(value, str), "a string"
        if not ok:
            problems.append(f"{f.name} must be {kind}, got {value!r} ({type(value).__name__})")
    return problems


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def scaled_groups(config: ModelConfig, num_points: int) -> int:
    """Keep the preset's points-per-group ratio (1024 -> 64, 2048 -> 128, 8192 -> 512)."""
    return max(1, round(config.num_groups * num_points / config.num_points))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["depth=6", "tokenizer_widths=32,64,128", "gate=true"]` -> typed overrides."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    defaults = ModelConfig()
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise FoundryError(f"override {pair!r} must be FIELD=VALUE with FIELD one of {sorted(fields)}")
        current = getattr(defaults, key)
        try:
            if isinstance(current, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("1", "true", "yes")
            elif isinstance(current, int):
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
            elif isinstance(current, tuple):
                value = tuple(int(v) for v in raw.split(","))
            elif isinstance(current, dict):
                raise ValueError("not settable from the command line")
            else:
                value = raw
        except ValueError:
            raise FoundryError(f"override {pair!r}: cannot read {raw!r} as {type(current).__name__}") from None
        out[key] = value
    return out
