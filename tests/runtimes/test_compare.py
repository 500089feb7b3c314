"""The comparator's near-tie rule: an assignment may flip only where its margin is within the runs' own noise."""

import numpy as np

from foundry_edge.runtimes.compare import near_tie_flips


def _assignments(rng, clouds=3, tokens=200, supertokens=8):
    assignment = rng.integers(0, supertokens, size=(clouds, tokens))
    margin = rng.uniform(0.05, 1.0, size=(clouds, tokens))
    return assignment, margin


def test_flips_at_margins_within_the_runs_disagreement_are_near_ties():
    rng = np.random.default_rng(0)
    ref, margin = _assignments(rng)
    margin[1, 7] = 5e-5  # a token on a tie...
    got, got_margin = ref.copy(), margin + rng.normal(scale=1e-4, size=margin.shape)  # the runs disagree by ~1e-4
    got[1, 7] = (ref[1, 7] + 1) % 8  # ...flips
    ties = near_tie_flips(ref, got, margin, got_margin)
    assert ties["flips"] == ties["at_near_ties"] == 1 and ties["all_at_near_ties"]
    assert ties["clouds"].tolist() == [False, True, False]
    assert 1e-4 < ties["limit"] < 2e-3


def test_a_flip_at_a_clear_margin_is_not_a_near_tie():
    rng = np.random.default_rng(1)
    ref, margin = _assignments(rng)
    got, got_margin = ref.copy(), margin + rng.normal(scale=1e-6, size=margin.shape)
    got[0, 3] = (ref[0, 3] + 1) % 8  # margin >= 0.05: a bug, not a tie
    ties = near_tie_flips(ref, got, margin, got_margin)
    assert ties["flips"] == 1 and ties["at_near_ties"] == 0 and not ties["all_at_near_ties"]


def test_no_flips_no_clouds_and_infinite_margins_are_ignored():
    ref = np.zeros((2, 5), dtype=np.int64)
    margin = np.full((2, 5), np.inf)  # one SuperToken: nothing to flip to
    ties = near_tie_flips(ref, ref, margin, margin)
    assert ties["flips"] == 0 and ties["all_at_near_ties"] and not ties["clouds"].any() and ties["limit"] == 0.0


def test_the_margin_is_judged_by_cosine_and_tokens_elementwise():
    from foundry_edge.runtimes.compare import TOLERANCES, failures, output_metrics

    rng = np.random.default_rng(3)
    ref = rng.uniform(0.0, 2.0, size=(2, 4096)).astype(np.float32)
    got = ref + rng.normal(scale=3e-4, size=ref.shape).astype(np.float32)  # FP32 logit noise at 4096 tokens
    metrics = output_metrics(ref, got)
    assert metrics["max_rel"] > TOLERANCES["export"].max_rel  # elementwise it would fail
    assert failures(metrics, TOLERANCES["export"], "assignment_margin") == []
    assert failures(metrics, TOLERANCES["export"], "tokens") != []
    assert failures(output_metrics(ref, -ref), TOLERANCES["export"], "assignment_margin") != []  # cosine still judges
