r"""Facts behind the §C / §D figures (``experiments/figures/autoencoders.py``), checked on the
numbers each figure writes to ``summary.json``.

``check(summary, quick)`` asserts each fact against the lecture's claim or an independent
derivation. Every tolerance is sized from the noise the fact must survive, mostly the sampling
of test images: a summary's ``x_se`` is the standard error s / √n of the mean ``x`` over its n
images (or digit pairs). A difference of two means is significant when it exceeds ``Z`` of its
standard errors: Z = 3 is a one-sided z-test at 0.13 %, so a model that is truly no better fails
it by chance about once in 700 checks. Facts that hold for any parameters (the corruption, the
geometry of the spiral, identities of the Jacobian) are checked in quick runs too; facts about
what training achieved only when ``quick`` is False.
"""

from __future__ import annotations

import math

Z = 3.0  # standard errors a trained-model difference must clear (one-sided 0.13 %)


def _above(name: str, diff: float, se: float, what: str) -> None:
  """``diff`` > Z · se: the difference of means is not a chance ordering of the test images."""
  assert diff > Z * se, f"{name}: {what}: {diff:.4g} is not above {Z:g} standard errors ({se:.3g})"


def _within(name: str, value: float, expected: float, tol: float, what: str) -> None:
  assert abs(value - expected) <= tol, (
      f"{name}: {what}: {value:.6g} differs from {expected:.6g} by more than {tol:.3g}")


def _monotone(name: str, values, ses, *, increasing: bool, what: str) -> None:
  """Monotone along λ up to noise: each step may go the wrong way by at most Z · √(se₁² + se₂²)
  (a flat stretch is allowed, a significant reversal is not); first to last must move
  significantly the right way."""
  sign = 1.0 if increasing else -1.0
  for k in range(len(values) - 1):
    step = sign * (values[k + 1] - values[k])
    assert step > -Z * math.hypot(ses[k], ses[k + 1]), (
        f"{name}: {what} is not monotone between λ index {k} and {k + 1}: {values}")
  _above(name, sign * (values[-1] - values[0]), math.hypot(ses[0], ses[-1]),
         f"{what}, last λ against λ = 0")


def _dae_corruption(s: dict) -> None:
  """The lecture's dropout corruption, p = 0.5 (any parameters).

  E[MSE_in] = p · mean (u − ½)² + (1 − p) · mean (kept − u)² is computed in the figure from the
  clean images and p alone, without the corruption function. The mask is the only randomness:
  each pixel's squared error is one of two values a, b ∈ [0, ¼] with probability p, so
  Var MSE_in = p (1 − p) mean (a − b)² / N ≤ p (1 − p) / (16 N) over N pixels; the tolerance is
  4 of those standard deviations.
  """
  name = "dae_denoising"
  p, n = s["dropout_p"], s["num_pixels"]
  assert p == 0.5, f"{name}: the lecture's dropout has p = 0.5, got {p}"
  _within(name, s["mse_in"], s["expected_mse_in"], 4 * math.sqrt(p * (1 - p) / (16 * n)),
          "MSE of the corrupted input")


def _inpainting_mask(s: dict) -> None:
  """The holes are a fraction p = ½ of the pixels: binomial, standard deviation √(p(1 − p)/N)
  over N = num_images · 784 pixels; tolerance 4 of those."""
  name = "dae_inpainting"
  n = s["num_images"] * 784
  _within(name, s["missing_fraction"], 0.5, 4 * math.sqrt(0.25 / n), "missing fraction")
  # Biharmonic inpainting needs no training: it must beat leaving the holes mid-grey.
  _above(name, s["psnr_biharmonic_minus_corrupted"], s["psnr_biharmonic_minus_corrupted_se"],
         "biharmonic PSNR over the corrupted input's")


def _spiral_geometry(s: dict) -> None:
  """Noisy spiral points (any parameters): for ŷ = y + σ ε, ε ~ N(0, I₂), the distance to a curve
  that is locally straight is |σ ε_⊥|, a half-normal of mean σ √(2/π).

  Tolerance: 4 standard errors of the mean (std σ √(1 − 2/π) / √n, recorded as
  ``distance_noisy_se``) plus 10 % for the curve not being straight: test points are uniform in
  θ ∈ [π/4, 4π], so ≈ 15 % of them lie where the radius r = θ/4π (the curvature radius's order)
  is below 2σ, where the distance can be off by up to half: at most 7.5 %, rounded up.
  """
  name = "spiral_dae_field"
  expected = s["sigma"] * math.sqrt(2 / math.pi)
  _within(name, s["distance_noisy"], expected, 4 * s["distance_noisy_se"] + 0.1 * expected,
          "mean distance of the noisy points to the spiral")


def _kernels_init(s: dict) -> None:
  """Random initial kernels have no spatial structure: the correlation of adjacent weights is
  0 with standard error 1 / √(20 · 28 · 27) ≈ 0.008 over 20 kernels; tolerance 4 of those."""
  tol = 4 / math.sqrt(20 * 28 * 27)
  for model in ("ae", "dae"):
    _within("encoder_kernels", s[f"{model}_neighbour_correlation_init"], 0.0, tol,
            f"{model} initial neighbour correlation")


def _cae_identities(jac: dict, contraction: dict | None) -> None:
  """Jacobian facts that hold for any parameters.

  1. ‖J‖_F by reverse-mode autodiff of the public encoder equals Rifai's closed form
     √(Σ_i (h_i (1 − h_i))² Σ_j W_ij²) for h = σ(W y + b). Both sum 78,400 float32 products;
     rounding is ≈ √784 · 2⁻²⁴ ≈ 2e-6 relative, so 1e-4 relative leaves a 50× margin.
  2. As ‖ε‖ → 0 the contraction ratio ‖h(y + ε) − h(y)‖ / ‖ε‖ along a random unit direction u
     tends to ‖J u‖, and E‖J u‖² = ‖J‖²_F / n. With ‖J u‖² of relative variance 2 / r
     (r = (Σσ²)² / Σσ⁴, the effective rank), E‖J u‖ = √(E‖J u‖²) (1 − 1/(4r) + …) (Jensen).
     Tolerance at ‖ε‖ = 0.01 (0.1 % of a digit's norm, where the second-order term is far below
     the sampling error): the Jensen bias 1/(4r) plus Z standard errors over the test images.
  """
  for fro, closed in zip(jac["jacobian_fro"], jac["jacobian_fro_closed_form"]):
    _within("cae_jacobian_vs_lambda", fro, closed, 1e-4 * closed, "‖J‖_F autodiff vs closed form")
  if contraction is None:
    return
  assert min(contraction["distances"]) <= 0.01, "cae_contraction: the smallest distance must be ≤ 0.01"
  for model in ("ae", "dae", "cae"):
    ratio = contraction[f"{model}_ratios"][0]
    predicted = contraction[f"{model}_linear_prediction"]
    tol = predicted / (4 * contraction[f"{model}_effective_rank"]) + Z * contraction[f"{model}_ratios_se"][0]
    _within("cae_contraction", ratio, predicted, tol, f"{model} contraction ratio at ‖ε‖ → 0 vs ‖J‖_F/√n")


# ----------------------------------------------------------------------------
# Facts about trained models
# ----------------------------------------------------------------------------


def _ae(s: dict) -> None:
  """The under-complete AE (d = 30) reconstructs test digits at least as well as the best
  linear code of the same size (PCA; Baldi & Hornik 1989: a linear AE's optimum): its per-image
  PSNR minus PCA's is significantly > 0. The 15 dB floor (an RMS error of 0.18 of the pixel
  range) is a judgement, not a derivation: below it strokes blur into blobs and digits stop
  being recognisable one by one; a 300-epoch run gives ≈ 19 dB."""
  name = "ae_reconstructions"
  _above(name, s["psnr_minus_pca"], s["psnr_minus_pca_se"], "AE PSNR over PCA's at equal d")
  _above(name, s["psnr"] - 15.0, s["psnr_se"], "AE test PSNR over 15 dB")


TRIVIAL = {"black": "an all-black image", "mean_image": "the mean training image",
           "corrupted": "the corrupted input"}


def _beats_trivial_outputs(name: str, s: dict, model: str, others=tuple(TRIVIAL)) -> None:
  """The model's output beats, image by image, what needs no model: an all-black image (on
  MNIST ≈ 10 dB, the background being most of each digit), the mean training image, and the
  corrupted input itself. A PSNR gain over the input alone would let an output that is black
  (or the mean digit) pass whenever the corruption is bad enough."""
  for other in others:
    key = f"psnr_{model}_minus_{other}"
    _above(name, s[key], s[f"{key}_se"], f"{model} PSNR over {TRIVIAL[other]}'s")


def _dae(s: dict) -> None:
  """The DAE denoises (08-3, Fig. 3): PSNR_out − PSNR_in per image is significantly positive,
  and the output beats the trivial outputs too."""
  _above("dae_denoising", s["psnr_gain"], s["psnr_gain_se"], "PSNR gain ψ_out − ψ_in")
  _beats_trivial_outputs("dae_denoising", s, "out", ("black", "mean_image"))


def _kernels(s: dict) -> None:
  """Training turns the random kernels into spatially smooth ones: the adjacent-weight
  correlation rises above the initial one by more than 4 / √(20 · 28 · 27), the noise of that
  correlation (see ``_kernels_init``), i.e. past anything a random kernel shows."""
  tol = 4 / math.sqrt(20 * 28 * 27)
  for model in ("ae", "dae"):
    rise = s[f"{model}_neighbour_correlation"] - s[f"{model}_neighbour_correlation_init"]
    assert rise > tol, f"encoder_kernels: {model} kernels no smoother than at init ({rise:.3f})"


def _interpolation(s: dict) -> None:
  """The notebook's plot: around t = ½ the input-space mixture leaves the data manifold, the
  decoded latent path does not. Each path is measured by its rise above the mean of its own two
  ends (the latent path ends at the reconstructions, far below the real digits' energy, so the
  raw energies differ by that offset at every t, manifold or not): the input path's rise is
  significantly positive, and larger than the latent path's by Z standard errors over the pairs
  (paired differences)."""
  name = "dae_interpolation"
  _above(name, s["rise_input"], s["rise_input_se"], "input path's rise above its ends")
  _above(name, s["rise_input_minus_latent"], s["rise_input_minus_latent_se"],
         "input path's rise over the latent path's")


def _inpainting(s: dict) -> None:
  """The DAE fills the holes: its PSNR is significantly above the corrupted input's and the
  trivial outputs', and above the classical inpainting drawn beside it (biharmonic, which knows
  where the holes are; the notebook compared with OpenCV's): a learned prior of digits must do
  better than smoothness alone."""
  _beats_trivial_outputs("dae_inpainting", s, "dae")
  _above("dae_inpainting", s["psnr_dae_minus_biharmonic"], s["psnr_dae_minus_biharmonic_se"],
         "DAE PSNR over biharmonic inpainting's")


def _epochs(s: dict) -> None:
  """The notebook's reconstructions per epoch: the test energy falls from each shown epoch to
  the next, per image (paired), by Z standard errors of the drop."""
  for k, (drop, se) in enumerate(zip(s["energy_drop"], s["energy_drop_se"])):
    a, b = s["notebook_epochs"][k], s["notebook_epochs"][k + 1]
    _above("ae_reconstructions_by_epoch", drop, se, f"fall of E from epoch {a} to {b}")


def _epochs_layout(s: dict, quick: bool) -> None:
  """Any run: the rows are the initialisation, then epochs in order, each a saved checkpoint."""
  epochs = s["notebook_epochs"]
  assert epochs[0] == 0 and epochs == sorted(set(epochs)), s
  assert len(s["energy"]) == len(epochs) == len(s["energy_drop"]) + 1, s
  if not quick:
    assert epochs[-1] == 20 and len(epochs) >= 6, s  # the notebook's 20 epochs, several shown


def _average(s: dict) -> None:
  """The average of two different digits is off the data manifold: the DAE's energy there is
  higher than on clean test digits (independent samples: se = √(se₁² + se₂²))."""
  _above("dae_average", s["energy_average"] - s["energy_clean"],
         math.hypot(s["energy_average_se"], s["energy_clean_se"]), "E(ȳ) over E(clean y)")


def _overcomplete(s: dict) -> None:
  """Without noise an over-complete AE learns to copy (08-3): fed ŷ it keeps the holes, so the
  DAE of the same size restores the clean image better; the AE's output is nearer to ŷ itself
  than the DAE's is; and on clean input the copying AE is far better than on ŷ."""
  name = "overcomplete_copy"
  _above(name, s["psnr_dae_minus_ae_noisy"], s["psnr_dae_minus_ae_noisy_se"],
         "DAE PSNR over the plain AE's on ŷ")
  _above(name, s["copy_ae_minus_dae"], s["copy_ae_minus_dae_se"],
         "PSNR to ŷ itself, AE over DAE (copying)")
  _above(name, s["psnr_ae_clean"] - s["psnr_ae_noisy"], math.hypot(s["psnr_ae_clean_se"],
                                                                    s["psnr_ae_noisy_se"]),
         "the AE's PSNR on clean over noisy input")


def _spiral(s: dict) -> None:
  """Week 7's DAE field: noisy points are moved nearer to the spiral, points on the spiral
  barely move and points far from it (beyond 2σ) move much more."""
  name = "spiral_dae_field"
  _above(name, s["distance_noisy"] - s["distance_denoised"],
         math.hypot(s["distance_noisy_se"], s["distance_denoised_se"]), "distance to the spiral reduced")
  _above(name, s["move_far"] - s["move_on_manifold"], math.hypot(s["move_far_se"], s["move_on_manifold_se"]),
         "far points move more than points on the spiral")
  # On the manifold a point should move less than the noise the DAE was trained to undo.
  _above(name, s["sigma"] - s["move_on_manifold"], s["move_on_manifold_se"], "on-spiral move below σ")


def _cae(jac: dict, saturation: dict | None, contraction: dict | None) -> None:
  """Rifai et al. 2011 / 08-3 Fig. 4: a larger λ gives a smaller ‖J‖_F, a larger C and more
  saturated sigmoid units (the penalty Σ (h(1 − h))² ‖W_i‖² vanishes at h ∈ {0, 1}); at equal
  code size and architecture the CAE contracts more than the AE (λ = 0) and the DAE at every
  distance, and its Jacobian has fewer large singular values (a smaller effective rank)."""
  _monotone("cae_jacobian_vs_lambda", jac["jacobian_fro"], jac["jacobian_fro_se"], increasing=False,
            what="‖J‖_F")
  _monotone("cae_jacobian_vs_lambda", jac["reconstruction"], jac["reconstruction_se"], increasing=True,
            what="reconstruction C")
  if saturation is not None:
    _monotone("cae_saturation", saturation["saturated_fraction"], saturation["saturated_fraction_se"],
              increasing=True, what="saturated fraction")
  if contraction is not None:
    for k in range(len(contraction["distances"])):
      for other in ("ae", "dae"):
        _above("cae_contraction", contraction[f"{other}_ratios"][k] - contraction["cae_ratios"][k],
               math.hypot(contraction[f"{other}_ratios_se"][k], contraction["cae_ratios_se"][k]),
               f"{other} ratio over the CAE's at ‖ε‖ = {contraction['distances'][k]:g}")
    # Effective ranks are means over 200 images of a quantity between 1 and d; asserting the
    # sign only, with no noise estimate recorded, relies on the gap (2× measured) being large.
    assert contraction["cae_effective_rank"] < contraction["ae_effective_rank"], (
        "cae_contraction: the CAE's Jacobian should have a smaller effective rank than the AE's")


def check(summary: dict, quick: bool) -> None:
  """Asserts the facts of every §C / §D figure present in ``summary`` (summary.json's dict)."""
  get = summary.get
  if get("dae_denoising"):
    _dae_corruption(summary["dae_denoising"])
  if get("dae_inpainting"):
    _inpainting_mask(summary["dae_inpainting"])
  if get("spiral_dae_field"):
    _spiral_geometry(summary["spiral_dae_field"])
  if get("encoder_kernels"):
    _kernels_init(summary["encoder_kernels"])
  if get("cae_jacobian_vs_lambda"):
    _cae_identities(summary["cae_jacobian_vs_lambda"], get("cae_contraction"))
  if get("ae_reconstructions_by_epoch"):
    _epochs_layout(summary["ae_reconstructions_by_epoch"], quick)
  if quick:
    return
  for name, fn in (("ae_reconstructions", _ae), ("ae_reconstructions_by_epoch", _epochs),
                   ("dae_denoising", _dae), ("encoder_kernels", _kernels),
                   ("dae_interpolation", _interpolation), ("dae_inpainting", _inpainting),
                   ("dae_average", _average), ("overcomplete_copy", _overcomplete),
                   ("spiral_dae_field", _spiral)):
    if get(name):
      fn(summary[name])
  if get("cae_jacobian_vs_lambda"):
    _cae(summary["cae_jacobian_vs_lambda"], get("cae_saturation"), get("cae_contraction"))
