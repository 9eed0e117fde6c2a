"""Facts the target-propagation figures must show (checked on figures' summary.json)."""


def check(summary: dict, quick: bool) -> None:
  energies = summary["target_prop_energies"]
  # A curve, not a handful of dots.
  assert energies["num_points"] >= 20, energies
  # ž starts at z̃ and descends E = C + R + D, whose D term is 0 at z̃, so that
  # (C + R)(ž) ≤ (C + R + D)(ž) ≤ (C + R)(z̃) whenever the inner loop decreases E: inference
  # never explains y worse than the encoder's guess (relative float32 slack 1e-6).
  assert energies["inference_never_worse"], energies
  assert energies["gap_last"] >= 0.0, energies
  if not quick:
    # 08-3, Fig. 1: the gap closes as the encoder learns to predict ž. Over a full run it
    # ends below half its largest value (it is ~0 at the start, when ž ≈ z̃ for a random
    # decoder, grows while the decoder learns, then shrinks).
    assert energies["gap_last"] < 0.5 * energies["gap_max"], energies
    recon = summary["target_prop_reconstructions"]
    assert recon["reconstruction_error_inferred"] <= 1.05 * recon["reconstruction_error_encoder"]
