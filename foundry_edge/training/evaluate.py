"""Evaluating teachers and students alike: accuracy, part mIoU, few-shot probes, token agreement.

- classification: overall accuracy and mean per-class accuracy (needs a classification head);
- part segmentation: mIoU over the parts of each shape's category (ShapeNetPart protocol: a part
  absent from both prediction and truth scores 1; the argmax is taken over the category's parts),
  averaged per shape (instance mIoU) and per category (class mIoU). A category's parts are the part
  labels its shapes carry in the evaluated data;
- few-shot: N-way K-shot episodes on frozen pooled tokens (mean+max), by nearest centroid and by a
  linear probe (a logistic regression), mean and standard deviation over episodes;
- token agreement between a student and its teacher: per-token cosine similarity to the teacher's
  normalised tokens (the distillation target) and a shared 2-D PCA of both models' pooled tokens;
- a student's assignment health in eval mode (the hard argmax inference runs): SuperTokens used,
  occupancy entropy, largest share (foundry_edge/assignment_health.py).
"""

from __future__ import annotations

from foundry_edge.errors import FoundryError


def collect(model, dataset, batch_size: int = 32, limit: int | None = None) -> dict:
    """Run `model` over the data set in order -> numpy arrays.

    labels (M,), pooled (M, 2D) frozen features, and with heads: pred (M,) class predictions,
    seg_logits (M, N, P) and parts (M, N); a student's assignment (M, c).
    """
    import numpy as np
    import torch

    from foundry_edge.models.heads import pool_tokens
    from foundry_edge.training.data import batches

    model.eval()
    parts = {"labels": [], "pooled": [], "pred": [], "seg_logits": [], "parts": [], "assignment": []}
    with torch.no_grad():
        for batch in batches(dataset, batch_size, limit):
            out = model(batch["points"])
            parts["labels"].append(batch["label"].numpy())
            parts["pooled"].append(pool_tokens(out["tokens"]).numpy())
            if "logits" in out:
                parts["pred"].append(out["logits"].argmax(dim=-1).numpy())
            if "assignment" in out:
                parts["assignment"].append(out["assignment"].numpy())
            if "seg_logits" in out and "parts" in batch:
                parts["seg_logits"].append(out["seg_logits"].numpy())
                parts["parts"].append(batch["parts"].numpy())
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def accuracy(pred, labels) -> dict:
    """Overall accuracy and the mean of per-class accuracies, in percent."""
    import numpy as np

    per_class = [float((pred[labels == c] == c).mean()) for c in np.unique(labels)]
    return {"overall": 100 * float((pred == labels).mean()), "class_mean": 100 * float(np.mean(per_class))}


def part_miou(seg_logits, parts, labels) -> dict:
    """(M, N, P) logits, (M, N) parts, (M,) categories -> class and instance mIoU in percent."""
    import numpy as np

    category_parts = {c: np.unique(parts[labels == c]) for c in np.unique(labels)}
    shape_iou = np.empty(len(labels))
    for i, (logits, truth, category) in enumerate(zip(seg_logits, parts, labels)):
        allowed = category_parts[category]
        pred = allowed[logits[:, allowed].argmax(axis=-1)]
        ious = []
        for part in allowed:
            union = np.sum((pred == part) | (truth == part))
            ious.append(1.0 if union == 0 else np.sum((pred == part) & (truth == part)) / union)
        shape_iou[i] = np.mean(ious)
    per_class = [shape_iou[labels == c].mean() for c in category_parts]
    return {"class_miou": 100 * float(np.mean(per_class)), "instance_miou": 100 * float(shape_iou.mean())}


def few_shot(features, labels, way: int = 5, shot: int = 10, query: int = 20, episodes: int = 10,
             seed: int = 0) -> dict:
    """N-way K-shot accuracy (percent, mean and std over episodes) of two probes on frozen features."""
    import numpy as np

    classes = [c for c in np.unique(labels) if np.sum(labels == c) >= shot + query]
    if len(classes) < way:
        raise FoundryError(f"{way}-way {shot}-shot needs {way} classes with {shot + query} clouds each, the data "
                           f"has {len(classes)}: lower --way/--shot or evaluate on more clouds")
    rng = np.random.default_rng(seed)
    scores = {"nearest_centroid": [], "linear_probe": []}
    for _ in range(episodes):
        chosen = rng.choice(classes, size=way, replace=False)
        support, query_idx = [], []
        for c in chosen:
            picked = rng.permutation(np.flatnonzero(labels == c))[: shot + query]
            support.append(picked[:shot])
            query_idx.append(picked[shot:])
        s_idx, q_idx = np.concatenate(support), np.concatenate(query_idx)
        s_y, q_y = np.repeat(np.arange(way), shot), np.repeat(np.arange(way), query)
        mean, std = features[s_idx].mean(0), features[s_idx].std(0) + 1e-6
        s_x, q_x = (features[s_idx] - mean) / std, (features[q_idx] - mean) / std
        centroids = np.stack([s_x[s_y == k].mean(0) for k in range(way)])
        nearest = ((q_x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(-1)
        scores["nearest_centroid"].append(100 * float((nearest == q_y).mean()))
        scores["linear_probe"].append(100 * float((linear_probe(s_x, s_y, q_x, way) == q_y).mean()))
    meta = {"way": way, "shot": shot, "query": query, "episodes": episodes}
    return {**meta, **{k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in scores.items()}}


def linear_probe(train_x, train_y, test_x, num_classes: int, weight_decay: float = 1e-3):
    """A multinomial logistic regression fitted with L-BFGS -> predicted classes of `test_x`."""
    import torch
    import torch.nn.functional as F

    x, y = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(train_y)
    linear = torch.nn.Linear(x.shape[1], num_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return linear(torch.as_tensor(test_x, dtype=torch.float32)).argmax(-1).numpy()


def token_agreement(teacher, student, dataset, batch_size: int = 32, limit: int | None = None) -> dict:
    """Student tokens against the teacher's normalised tokens, cloud by cloud on the same groups.

    -> cosine (M * c,) per-token cosine similarity, teacher_pooled / student_pooled (M, 2D), labels (M,).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from foundry_edge.models.heads import pool_tokens
    from foundry_edge.training.data import batches
    from foundry_edge.training.distill import check_pair

    check_pair(teacher.config, student.config)
    teacher.eval()
    student.eval()
    cosine, t_pool, s_pool, labels = [], [], [], []
    with torch.no_grad():
        for batch in batches(dataset, batch_size, limit):
            t_out, s_out = teacher(batch["points"]), student(batch["points"])
            target = F.layer_norm(t_out["tokens"], t_out["tokens"].shape[-1:])
            cosine.append(F.cosine_similarity(s_out["tokens"], target, dim=-1).flatten().numpy())
            t_pool.append(pool_tokens(target).numpy())
            s_pool.append(pool_tokens(s_out["tokens"]).numpy())
            labels.append(batch["label"].numpy())
    return {"cosine": np.concatenate(cosine), "teacher_pooled": np.concatenate(t_pool),
            "student_pooled": np.concatenate(s_pool), "labels": np.concatenate(labels)}


def pca_2d(reference, *others):
    """Fit a 2-D PCA on `reference` (M, F); -> its projection and the others' in the same basis."""
    import numpy as np

    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return [(x - mean) @ vt[:2].T for x in (reference, *others)]


def check_eval_options(limit: int | None, way: int, shot: int, query: int, episodes: int) -> None:
    """Refuse sizes that would evaluate nothing (limit 0) or fit a probe on no clouds (shot 0)."""
    problems = [msg for bad, msg in (
        (limit is not None and limit < 1, f"--limit must be >= 1 (got {limit})"),
        (way < 0, f"--way must be >= 0 (got {way})"),
        (way > 0 and min(shot, query, episodes) < 1,
         f"few-shot needs --shot, --query and --episodes >= 1 (got {shot}, {query}, {episodes}) or --way 0"),
    ) if bad]
    if problems:
        raise FoundryError("invalid evaluation options: " + "; ".join(problems))


def health_of(model, found: dict) -> dict | None:
    """Eval-mode assignment health from `collect`'s output; None for a model without an assignment (a teacher)."""
    from foundry_edge.assignment_health import assignment_health, occupancy

    if "assignment" not in found:
        return None
    health = assignment_health(found["assignment"], model.config.num_supertokens)
    return {**health, "occupancy": occupancy(found["assignment"], model.config.num_supertokens)}


def evaluate_model(model, dataset, *, batch_size: int = 32, limit: int | None = None, way: int = 5,
                   shot: int = 10, query: int = 20, episodes: int = 10, seed: int = 0) -> dict:
    """Every metric this model's heads allow, plus few-shot on its frozen tokens -> a JSON-ready dict."""
    from foundry_edge.models.model import count_parameters

    check_eval_options(limit, way, shot, query, episodes)
    found = collect(model, dataset, batch_size, limit)
    row = {"name": model.config.name, "kind": model.config.kind, "params": count_parameters(model),
           "clouds": int(len(found["labels"]))}
    if "pred" in found:
        row["classification"] = accuracy(found["pred"], found["labels"])
    if "seg_logits" in found:
        row["segmentation"] = part_miou(found["seg_logits"], found["parts"], found["labels"])
    health = health_of(model, found)
    if health is not None:
        row["assignment_health"] = health
    if way > 0:
        row["few_shot"] = few_shot(found["pooled"], found["labels"], way, shot, query, episodes, seed)
    return row
