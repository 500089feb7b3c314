"""Assignment health: the module's figures on assignments with known answers, and the commands that report
them (inspect --health, verify, evaluate) on a student forced to collapse and on a spread one."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tests.conftest import tiny_overrides
from foundry_edge.assignment_health import (
    COLLAPSED_AT, agreement_report, assignment_health, describe, health_per_cloud, occupancy,
)


def test_a_collapsed_assignment_is_flagged_and_its_agreement_uninformative():
    collapsed = np.full((3, 16), 5)
    health = assignment_health(collapsed, 8)
    assert health["used_mean"] == 1 and health["used_min"] == 1 and health["collapsed"]
    assert health["entropy_mean"] == 0.0 and health["largest_share_mean"] == 1.0
    report = agreement_report(collapsed, collapsed.copy(), 8)
    assert report["agreement"] == 1.0 and report["flip_rate"] == 0.0 and not report["informative"]
    assert "COLLAPSED" in describe(health) and "uninformative" in describe(health)


def test_uniform_assignment_has_entropy_one_and_is_informative():
    uniform = np.tile(np.repeat(np.arange(4), 2), (2, 1))  # 8 tokens, 2 per SuperToken
    health = assignment_health(uniform, 4)
    assert health["entropy_mean"] == pytest.approx(1.0) and health["largest_share_mean"] == 0.25
    assert health["used_mean"] == 4 and not health["collapsed"]
    assert agreement_report(uniform, uniform, 4)["informative"] and "COLLAPSED" not in describe(health)


def test_collapse_threshold_is_on_the_mean_used():
    two = np.tile([0, 1, 0, 1], (2, 1))
    three = np.tile([0, 1, 2, 0], (2, 1))
    assert assignment_health(two, 4)["used_mean"] == COLLAPSED_AT and assignment_health(two, 4)["collapsed"]
    assert not assignment_health(three, 4)["collapsed"]


def test_bypass_slots_are_counted_apart_from_supertokens():
    s = 4
    assignment = np.array([[0, 0, 1, 1, s, s + 1, s + 2, s + 3]])  # half the tokens bypass DSO (gate slots)
    per_cloud = health_per_cloud(assignment, s)
    assert per_cloud["used"][0] == 2  # the slots are no SuperTokens
    assert per_cloud["bypass_share"][0] == 0.5
    assert per_cloud["largest_share"][0] == 0.5  # shares are of the fused tokens only
    assert per_cloud["entropy"][0] == pytest.approx(np.log(2) / np.log(4))
    assert occupancy(assignment, s) == [0.5, 0.5, 0.0, 0.0]
    assert "gate bypass 50 %" in describe(assignment_health(assignment, s))


def test_low_margin_agreement_picks_the_near_ties():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 8, size=(4, 50))
    margin = rng.uniform(1.0, 5.0, size=reference.shape)
    near_ties = rng.choice(reference.size, size=reference.size // 10, replace=False)
    margin.flat[near_ties] = rng.uniform(0.0, 0.01, size=near_ties.size)
    flipped = reference.copy()
    flipped.flat[near_ties] = (flipped.flat[near_ties] + 1) % 8  # lower precision flips exactly the near-ties
    report = agreement_report(reference, flipped, 8, margin)
    assert report["agreement"] == pytest.approx(0.9) and report["flip_rate"] == pytest.approx(0.1)
    assert report["low_margin_agreement"] == 0.0 and report["low_margin_threshold"] < 0.01
    far = reference.copy()
    far.flat[np.argsort(margin, axis=None)[-near_ties.size:]] += 1  # the same number of flips, far from a tie
    report = agreement_report(reference, far, 8, margin)
    assert report["agreement"] == pytest.approx(0.9) and report["low_margin_agreement"] == 1.0


def test_one_supertoken_has_infinite_margins_and_no_low_margin_figure():
    assignment = np.zeros((2, 8), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN from inf - inf in the quantile
        report = agreement_report(assignment, assignment, 1, np.full((2, 8), np.inf, np.float32))
    assert report["low_margin_agreement"] is None and report["low_margin_threshold"] is None
    json.dumps(report, allow_nan=False)  # strict JSON: no inf leaks into a report


def test_without_a_supertoken_count_it_is_estimated_and_said():
    health = assignment_health(np.array([[0, 3, 3, 1]]), None)
    assert health["num_supertokens"] == 4 and not health["num_supertokens_known"]
    assert "estimated" in describe(health)


# -- where it is reported --------------------------------------------------------------------------

torch = pytest.importorskip("torch")


def _flags(preset: str) -> list[str]:
    return [f"--set={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
            for k, v in tiny_overrides(preset).items()]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"collapsed": a DSO student whose queries are zeroed (every logit ties, argmax takes SuperToken 0),
    "spread": a K-Means student (seeds are its own centres: it uses every SuperToken)} -> checkpoint paths."""
    from foundry_edge.checkpoints.format import save_checkpoint
    from foundry_edge.models import create_model

    folder = tmp_path_factory.mktemp("health")
    torch.manual_seed(0)
    collapsed = create_model("foundry-edge16", **tiny_overrides("foundry-edge16"))
    with torch.no_grad():
        collapsed.assigner.q.weight.zero_()
        collapsed.assigner.q.bias.zero_()
    spread = create_model("foundry-s16-kmeans", **tiny_overrides("foundry-s16-kmeans"))
    paths = {"collapsed": folder / "collapsed.pt", "spread": folder / "spread.pt"}
    save_checkpoint(paths["collapsed"], collapsed)
    save_checkpoint(paths["spread"], spread)
    return paths


def _verify_json(out: str) -> dict:
    """verify --json prints the table, then the checks as a JSON list, then the verdict."""
    checks = json.loads(out[out.index("\n[") + 1:out.rindex("]") + 1])
    return {c["name"]: c for c in checks}


def test_verify_flags_a_collapsed_reference_and_not_a_spread_one(checkpoints, capsys):
    from foundry_edge.cli import main

    path = str(checkpoints["collapsed"])
    assert main(["verify", path, "--against", path, "--samples", "3", "--json"]) == 0  # parity holds: not a failure
    out = capsys.readouterr().out
    assignment = _verify_json(out)["assignment"]
    assert assignment["informative"] is False and assignment["health"]["used_mean"] == 1
    assert assignment["agreement"] == 1.0 and assignment["flip_rate"] == 0.0
    assert assignment["low_margin_agreement"] == 1.0  # the reference's margins were there to use
    assert "UNINFORMATIVE" in assignment["detail"] and "COLLAPSED" in out and out.strip().endswith("PASSED")

    path = str(checkpoints["spread"])
    assert main(["verify", path, "--against", path, "--samples", "3", "--json"]) == 0
    out = capsys.readouterr().out
    assignment = _verify_json(out)["assignment"]
    assert assignment["informative"] is True and assignment["health"]["used_mean"] > COLLAPSED_AT
    assert "UNINFORMATIVE" not in out and "COLLAPSED" not in out
    assert "assignment health of the reference: SuperTokens used" in out


def test_verify_judges_a_flipped_assignment_beside_its_health():
    from foundry_edge.runtimes.compare import compare_outputs

    reference = {"assignment": np.tile(np.arange(4), (2, 4)), "assignment_margin": np.ones((2, 16), np.float32)}
    flipped = {"assignment": (reference["assignment"] + 1) % 4, "assignment_margin": reference["assignment_margin"]}
    check = {c.name: c for c in compare_outputs(reference, flipped, "int8", 4)}["assignment"]
    assert not check.passed and check.flip_rate == 1.0 and check.informative
    # an export without the margin output (older, or --outputs) is noted, not failed
    missing = {c.name: c for c in compare_outputs(reference, {"assignment": reference["assignment"]}, "fp32", 4)}
    assert missing["assignment_margin"].passed and "not compared" in missing["assignment_margin"].detail


def test_equal_infinite_margins_agree_and_other_infinities_fail():
    from foundry_edge.runtimes.compare import output_metrics as export_compare
    from foundry_edge.runtimes.compare import compare_outputs

    inf = np.full((2, 8), np.inf, np.float32)
    assert all(c.passed for c in compare_outputs({"assignment_margin": inf}, {"assignment_margin": inf.copy()}, "fp32"))
    assert export_compare(inf, inf.copy()) == {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0}
    finite = np.ones_like(inf)
    assert not compare_outputs({"assignment_margin": inf}, {"assignment_margin": finite}, "fp16")[0].passed
    assert export_compare(inf, finite) == {"nonfinite": inf.size}


def test_inspect_health_on_teacher_student_and_collapsed(checkpoints, capsys):
    from foundry_edge.cli import main

    assert main(["inspect", "pointjepa-vits", *_flags("pointjepa-vits"), "--health", "synthetic", "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "no assignment" in out and "SuperTokens used" not in out

    assert main(["inspect", "foundry-s16-fps", *_flags("foundry-s16-fps"), "--health", "synthetic", "--limit", "6",
                 "--json"]) == 0
    health = json.loads(capsys.readouterr().out)["assignment_health"]
    assert health["clouds"] == 6 and health["num_supertokens"] == 4 and len(health["occupancy"]) == 4
    assert sum(health["occupancy"]) == pytest.approx(1.0) and not health["collapsed"]

    assert main(["inspect", str(checkpoints["collapsed"]), "--health", "synthetic", "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "SuperTokens used 1.0/4 (min 1)" in out and "COLLAPSED" in out and "0:100 1:0 2:0 3:0" in out

    assert main(["inspect", "all", "--health", "synthetic"]) == 2
    assert "--health measures one model" in capsys.readouterr().err


def test_evaluate_reports_eval_mode_health_per_student(checkpoints):
    from foundry_edge.data.synthetic import SyntheticShapes
    from foundry_edge.checkpoints.resolve import load_model
    from foundry_edge.training.evaluate import evaluate_model
    from foundry_edge.training.report import render_markdown

    clouds = SyntheticShapes(6, 256, split="test")
    rows = []
    for name in ("collapsed", "spread"):
        model, _ = load_model(str(checkpoints[name]))
        model.train()  # evaluate must switch to eval mode itself: training mode draws Gumbel noise
        rows.append({"spec": name, **evaluate_model(model, clouds, way=0)})
    assert rows[0]["assignment_health"]["collapsed"] and not rows[1]["assignment_health"]["collapsed"]
    assert rows[0]["assignment_health"]["occupancy"][0] == 1.0
    teacher, _ = load_model("pointjepa-vits", **tiny_overrides("pointjepa-vits"))
    rows.append({"spec": "teacher", **evaluate_model(teacher, clouds, way=0)})
    assert "assignment_health" not in rows[-1]
    markdown = render_markdown({"data": "synthetic", "split": "test", "models": rows})
    assert "## Assignment health" in markdown and "- collapsed: SuperTokens used 1.0/4" in markdown
