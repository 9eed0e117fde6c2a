"""experiments/softmin_study.py in its quick mode: the table's facts on freshly trained models.

Each row's numbers come from R = 16 key sets; every fact checked here is a gap of many standard
errors in that run (the ESS ratios are 1.5–3×, the spreads fall by 2× from n = 8 to 32), so a
correct estimator does not fail them by chance, and a wrong one (a mis-centred or mis-scaled
proposal, a biased reference, weights not normalised) does.
"""

import os

import pytest

from experiments import softmin_study

# The study's tests share two short trainings and eight compiled estimators: about a minute on
# 2 cores, beyond the seconds a quick-suite test may take, so with the end-to-end checks
# (make test-slow).
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("softmin_study"))
  rows, notes, table = softmin_study.run_study(softmin_study.QUICK, workdir)
  return {(r["model"], r["proposal"], r["draws"]): r for r in rows}, notes, table


@slow
def test_every_row_is_there_with_an_ess_between_1_and_n(study):
  rows, _, table = study
  draws = softmin_study.QUICK.draws
  expected = {(m, p, n) for m, proposals in softmin_study.PROPOSALS.items() for p in proposals
              for n in draws}
  assert set(rows) == expected
  for (model, proposal, n), row in rows.items():
    assert 1.0 <= row["mean_ess"] <= n, row
    assert f"| {model} | {row['beta']:g} | {proposal} | {n} | {row['mean_ess']:.2f} |" in table


@slow
def test_the_laplace_proposal_has_the_larger_ess(study):
  """Target prop: the Laplace proposal fits exp(−βE) at ž, the encoder's a fixed width at z̃
  (2–3× the ESS here); the ellipse at β = 1: 1/√(βE'') ≈ 0.3 rad against the fixed σ = 0.1
  (1.5× at n = 8, where both are capped by n, 2× at 32). Each mean ESS averages ≥ 256
  estimates: its standard error is a few percent, far below these gaps."""
  rows, notes, _ = study
  for model, fixed, ratio in (("target_prop", "encoder", 1.5), ("ellipse", "wrapped", 1.2)):
    for n in softmin_study.QUICK.draws:
      assert rows[model, "laplace", n]["mean_ess"] > ratio * rows[model, fixed, n]["mean_ess"]
  assert notes["reference_proposal"] == "laplace"  # the larger ESS draws the reference


@slow
def test_more_draws_shrink_the_spread_and_the_bias(study):
  """sd over keys falls about as 1/√n (by 2 from 8 to 32 draws: more than 1.4 required);
  F̂_β's bias from the log (Jensen: upward, O(1/n)) falls with n for the fixed-width
  proposals, whose bias at n = 8 is many standard errors above 0."""
  rows, _, _ = study
  small, large = min(softmin_study.QUICK.draws), max(softmin_study.QUICK.draws)
  for model, proposals in softmin_study.PROPOSALS.items():
    for proposal in proposals:
      assert rows[model, proposal, small]["sd"] > 1.4 * rows[model, proposal, large]["sd"]
  for model, fixed in (("target_prop", "encoder"), ("ellipse", "wrapped")):
    first, last = rows[model, fixed, small], rows[model, fixed, large]
    assert first["bias"] > 3 * first["bias_se"], first
    assert abs(last["bias"]) < abs(first["bias"]), (first, last)


def test_the_default_output_is_under_the_workdir():
  assert softmin_study.output_path("", "runs/x") == os.path.join("runs/x", "softmin_study.md")
  assert softmin_study.output_path("docs/t.md", "runs/x") == "docs/t.md"
