"""Facts the target-propagation figures must show (checked on figures' summary.json).

The relative gap r_t = Σ_y [E(y, z̃) − E(y, ž)] / Σ_y E(y, ž) at evaluation t, and its standard
error over the test images se_t (delta method, recorded where the run kept a checkpoint). The
difference of two such ratios on the same images has a standard deviation of at most
se_s + se_t whatever their correlation (the triangle inequality for standard deviations), so
that sum times Z is the margin a difference must clear.
"""

Z = 3.0  # standard errors (one-sided 0.13 % for a normal estimate)


def _with_se(energies: dict) -> list[tuple[int, float, float]]:
  """(evaluation index, r, se) where a per-image standard error was recorded."""
  return [(k, r, se) for k, (r, se) in enumerate(zip(energies["relative_gap"],
                                                      energies["relative_gap_se"]))
          if se is not None]


def relative_gap_moves(energies: dict) -> None:
  """The relative gap changes over training by more than the test images' noise.

  Derivation: if training only shrinks every energy, E(y, z̃)(t) = s(t) E(y, z̃)(0) and
  E(y, ž)(t) = s(t) E(y, ž)(0) with one factor s(t) > 0, then r_t = r_0 at every t, and the
  absolute gap, s(t) times its first value, "closes" with no learning by the encoder (the fact
  this test replaces: gap_last < ½ gap_max held for any such run). So r must move: some
  evaluation t has |r_t − r_0| > Z (se_t + se_0). A run whose energies merely shrink fails.
  """
  points = _with_se(energies)
  k0, r0, se0 = points[0]
  assert k0 == 0, f"target_prop_energies: no standard error at the first evaluation: {points}"
  moved = [(k, r) for k, r, se in points[1:] if abs(r - r0) > Z * (se + se0)]
  assert moved, (f"target_prop_energies: the relative gap never moves from {r0:.4g} by more than "
                 f"{Z:g} standard errors: {energies['relative_gap']}")


def verdict_beyond_noise(energies: dict) -> None:
  """The figure says whether the relative gap closes, by the lecture's criterion normalised:
  it closes when r ends below half its peak. Whichever it says, r_last − ½ r_max must clear
  Z (se_last + ½ se_max) on the side it says, so that the caption is not a coin toss of the test
  images; the verdict is recorded as ``relative_gap_closes``."""
  rel, se = energies["relative_gap"], energies["relative_gap_se"]
  k_max = max(range(len(rel)), key=rel.__getitem__)
  assert se[-1] is not None and se[k_max] is not None, energies
  margin = rel[-1] - 0.5 * rel[k_max]
  noise = Z * (se[-1] + 0.5 * se[k_max])
  closes = energies["relative_gap_closes"]
  assert closes == (margin < 0), energies
  assert abs(margin) > noise, (
      f"target_prop_energies: r_last − ½ r_max = {margin:.4g} is within {noise:.3g} of 0: the "
      f"figure cannot say whether the relative gap closes")


def check(summary: dict, quick: bool) -> None:
  energies = summary["target_prop_energies"]
  # A curve, not a handful of dots.
  assert energies["num_points"] >= 20, energies
  # ž starts at z̃ and descends E = C + R + D, whose D term is 0 at z̃, so that
  # (C + R)(ž) ≤ (C + R + D)(ž) ≤ (C + R)(z̃) whenever the inner loop decreases E: inference
  # never explains y worse than the encoder's guess (relative float32 slack 1e-6).
  assert energies["inference_never_worse"], energies
  assert energies["gap_last"] >= 0.0, energies
  assert all(r >= 0 for r in energies["relative_gap"]), energies
  if not quick:
    # The practicum's budget, as the AE, DAE and VAE figures (figures.md §D).
    assert energies["steps"] >= 4500, energies
    # Per-image errors at every evaluation: the run keeps a checkpoint at each.
    assert len(_with_se(energies)) == energies["num_points"], energies
    relative_gap_moves(energies)
    verdict_beyond_noise(energies)
    recon = summary["target_prop_reconstructions"]
    assert recon["reconstruction_error_inferred"] <= 1.05 * recon["reconstruction_error_encoder"]
