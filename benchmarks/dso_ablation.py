"""Why the DSO collapsed and which training choices fix it: eval-mode figures for each variant.

    python benchmarks/dso_ablation.py [--steps 600] [--jobs 2]

Each variant distils the bundled teacher (`default-teacher`) into the bundled student's architecture
the same way (recipes/bundled_default.py's distillation settings) and changes one thing: the DSO logits
(the paper's dot product, or centred cosine with a learned scale), the temperature schedule (Gumbel at
tau 1 throughout, or annealed to 0.3 with a noise-free last 20 %), and the load-balancing weight.
Every figure is measured in eval mode (hard argmax, as exported) on the 500 held-out synthetic clouds;
the training-mode SuperTokens used of the last logged batch is shown beside it, which is how the
collapse hid. Writes benchmarks/results/dso_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

# name -> (dso_logits, tau_start, tau_end, hard_fraction, lambda_balance)
VARIANTS = {
    "paper: dot, Gumbel tau 1": ("dot", 1.0, 1.0, 0.0, 0.0),
    "dot + tau 1->0.3 + hard last 20%": ("dot", 1.0, 0.3, 0.2, 0.0),
    "dot + schedule + balance 0.1": ("dot", 1.0, 0.3, 0.2, 0.1),
    "centred cosine, Gumbel tau 1": ("centered-cosine", 1.0, 1.0, 0.0, 0.0),
    "centred cosine + schedule": ("centered-cosine", 1.0, 0.3, 0.2, 0.0),
    "centred cosine + schedule + balance 0.1 (kept)": ("centered-cosine", 1.0, 0.3, 0.2, 0.1),
}


def run_variant(name: str, steps: int, work_dir: str) -> dict:
    import torch

    from bundled_default import SEED, STUDENT, TEST_SAMPLES, TRAIN_SAMPLES, distilled_figures
    from foundry_edge.data.synthetic import SyntheticShapes
    from foundry_edge.errors import FoundryError
    from foundry_edge.checkpoints.resolve import load_model
    from foundry_edge.training.distill import DistillConfig, distill
    from foundry_edge.training.loop import TrainConfig

    torch.set_num_threads(1)
    logits, tau_start, tau_end, hard, balance = VARIANTS[name]
    train = SyntheticShapes(TRAIN_SAMPLES, STUDENT["num_points"], seed=SEED, split="train")
    test = SyntheticShapes(TEST_SAMPLES, STUDENT["num_points"], seed=SEED, split="test")
    teacher, _ = load_model("default-teacher")
    slug = "".join(ch if ch.isalnum() else "-" for ch in name)[:40]
    out = Path(work_dir) / slug
    stopped = None
    try:
        student = distill(teacher, "foundry-edge16", train, out, overrides=dict(STUDENT, dso_logits=logits),
                          train=TrainConfig(steps=steps, batch_size=32, lr=1e-3, warmup_steps=max(1, steps // 30),
                                            augment=True, seed=SEED, checkpoint_every=steps, progress=False),
                          cfg=DistillConfig(beta=1.0, tau_start=tau_start, tau_end=tau_end, hard_fraction=hard,
                                            lambda_balance=balance), log=lambda *_: None)[0].model
    except FoundryError as exc:  # the collapse monitor stopped it at the last step: measure what it kept
        stopped = str(exc)
        student, _ = load_model(str(out / "checkpoint.pt"))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_used = next(r["train_used"] for r in reversed(records) if "train_used" in r)
    return {"variant": name, "dso_logits": logits, "tau": [tau_start, tau_end], "hard_fraction": hard,
            "lambda_balance": balance, "steps": steps, "train_mode_used_last_batch": train_used,
            "stopped_by_collapse_monitor": stopped, **distilled_figures(teacher, student, test)}


def table(rows: list[dict]) -> str:
    lines = ["| variant | SuperTokens used (eval) | occupancy entropy | largest share | held-out SmoothL1 | "
             "token cosine (mean / p5) | used in train mode |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        h, c = r["health"], r["token_cosine"]
        lines.append(f"| {r['variant']} | {h['used_mean']:.1f} / 16 (min {h['used_min']}) | {h['entropy_mean']:.3f} | "
                     f"{100 * h['largest_share_mean']:.1f} % | {r['held_out_distillation_loss']:.4f} | "
                     f"{c['mean']:.3f} / {c['p5']:.3f} | {r['train_mode_used_last_batch']:.1f}"
                     f"{' (monitor stopped it)' if r['stopped_by_collapse_monitor'] else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work-dir", default="runs/dso-ablation")
    parser.add_argument("--only", nargs="*", default=None, help="Variant names (default: all).")
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_variant, names, [args.steps] * len(names), [args.work_dir] * len(names)))
    out = Path(__file__).parent / "results"
    (out / "dso_ablation.json").write_text(json.dumps(rows, indent=1) + "\n")
    header = (f"Distilled {args.steps} steps from `default-teacher` into the bundled student's architecture; "
              "eval mode (hard argmax) on 500 held-out synthetic clouds.\n\n")
    (out / "dso_ablation.md").write_text(header + table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
