r"""§C and §D: the autoencoder, the denoising autoencoder (and the 2-D spiral DAE) and the
contractive autoencoder (08-3, Figs. 2-4).

Notation of the lecture: y a clean image, ŷ its corruption, h = Enc(y) the code,
ỹ = Dec(h) the reconstruction, and the reconstruction energy E(y) = Σ_j (y_j − ỹ_j)² in the
model's own units ([−1, 1] for the practicum's AE and DAE, [0, 1] for the CAE). PSNR is
10 log₁₀(1 / MSE) in dB on [0, 1] images, per image, then averaged; every ``*_se`` in the
summary is the standard error of the mean over the images (or pairs) it averages, which
``tests/figure_facts_autoencoders.py`` uses to size its tolerances.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from energy_ae import data as data_lib
from experiments.figures.common import (Trained, colorbar, figure, image_grid, saved_params, show_mosaic,
                                        show_rows, subplots, to_unit)

FIGURE_CHOICES = {
    "cae_lambdas": (0.0, 1.0, 5.0, 20.0),  # ‖J‖_F and saturation against λ (§D)
    "cae_lambda": 5.0,  # the CAE of the encoder comparisons (experiments/cae.py's default)
    # ‖ε‖ in [0, 1] pixel units, inside the data's range: a test digit's norm is ≈ 9-10 there.
    "contraction_distances": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    "saturation": (0.05, 0.95),  # a sigmoid unit is saturated when h < 0.05 or h > 0.95
    "interpolation_steps": 16,  # the notebook's path length
    "num_test": 200,  # test images behind each averaged number
    "num_pairs": 10,  # digit pairs (k, k + 5 mod 10) for the interpolation and the average
    # The notebook shows reconstructions after each of its 20 epochs; the AE's budget is the
    # same number of steps (experiments/ae.py), so its k-th twentieth is the notebook's epoch k.
    "notebook_epochs": 20,
    "shown_notebook_epochs": (0, 1, 2, 3, 5, 10, 20),  # 0: the initialisation
    "epoch_digits": 8,
}


# ----------------------------------------------------------------------------
# Helpers: public model functions only
# ----------------------------------------------------------------------------


def _reconstruct(run: Trained, y_in):
  return np.asarray(run.model.reconstruct(run.params, jnp.asarray(y_in, jnp.float32)))


def _flat(y) -> np.ndarray:
  y = np.asarray(y, np.float64)
  return y.reshape(len(y), -1)


def _psnr(a, b, value_range) -> np.ndarray:
  """Per-image PSNR = 10 log₁₀(1 / MSE) on [0, 1] images (both mapped from ``value_range``)."""
  mse = np.mean(np.square(_flat(to_unit(a, value_range)) - _flat(to_unit(b, value_range))), axis=1)
  return 10 * np.log10(1 / np.maximum(mse, 1e-12))


def _mean_se(x) -> tuple[float, float]:
  """The mean of ``x`` and its standard error s / √n."""
  x = np.asarray(x, np.float64)
  return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def _trivial_psnr(run: Trained, y) -> dict[str, np.ndarray]:
  """Per-image PSNR against the clean ``y`` of outputs that need no model: an all-black image
  (0 on [0, 1]: the digits' background) and the mean training image."""
  vr = run.dataset.value_range
  black = np.full_like(_flat(y), vr[0])
  mean_image = np.broadcast_to(_flat(run.dataset.train["y"]).mean(0), black.shape)
  return {"black": _psnr(black, y, vr), "mean_image": _psnr(mean_image, y, vr)}


def _record_beats(summary: dict, name: str, psnr: np.ndarray, others: dict[str, np.ndarray]):
  """summary[f"psnr_{name}_minus_{other}"] and its ``_se``: per-image differences, paired."""
  for other, value in others.items():
    key = f"psnr_{name}_minus_{other}"
    summary[key], summary[f"{key}_se"] = _mean_se(psnr - value)


def _energy(run: Trained, y) -> np.ndarray:
  """E(y) = Σ_j (y_j − ỹ_j)² per example, in the model's units."""
  return np.sum(np.square(_flat(y) - _flat(_reconstruct(run, y))), axis=1)


def _corrupted(run: Trained, y, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(ŷ, missing) for the DAE's own corruption; ``missing`` marks the pixels it zeroed,
  read by corrupting an image of ones with the same keys (the mask depends on the keys only)."""
  corrupt = run.model.extras["corrupt"]
  keys = jax.random.split(jax.random.key(seed), len(y))
  y_hat = np.asarray(corrupt(keys, jnp.asarray(y, jnp.float32)))
  missing = np.asarray(corrupt(keys, jnp.ones_like(jnp.asarray(y, jnp.float32)))) == 0
  return y_hat, missing


def _ae(runs) -> Trained:
  """The practicum's AE, keeping a checkpoint at the end of each of the notebook's epochs (a
  twentieth of its budget; a quick run: each half) for ``ae_reconstructions_by_epoch``."""
  parts = FIGURE_CHOICES["notebook_epochs"] if not runs.quick else 2
  every = max(1, runs.get_total_steps("ae") // parts)
  return runs.get("ae", **{"train.checkpoint_every": every, "train.checkpoints_to_keep": parts + 2})


def _test(run: Trained, num: int | None = None) -> np.ndarray:
  return run.dataset.test["y"][: num or FIGURE_CHOICES["num_test"]]


def _pairs(run: Trained) -> list[tuple[int, int]]:
  """Test-image indices (a, b): a the first test digit k, b the second test digit k + 5 mod 10,
  for k = 0 … num_pairs − 1 (two different digits each time, no pair repeated)."""
  labels = run.dataset.test["label"]
  pairs = []
  for k in range(FIGURE_CHOICES["num_pairs"]):
    pairs.append((int(np.flatnonzero(labels == k % 10)[0]),
                  int(np.flatnonzero(labels == (k + 5) % 10)[1])))
  return pairs


# ----------------------------------------------------------------------------
# §C Autoencoder and denoising autoencoder
# ----------------------------------------------------------------------------


def _pca_psnr(run: Trained, d: int, y_test) -> np.ndarray:
  """Per-image PSNR of the best linear code of size d (PCA of the training images, Eckart-Young):
  the reference an under-complete AE with the same d is measured against."""
  train = _flat(run.dataset.train["y"])
  mean = train.mean(0)
  # The top-d eigenvectors of the 784 × 784 covariance (cheaper than an SVD of the data).
  _, vectors = np.linalg.eigh(np.cov(train, rowvar=False))
  basis = vectors[:, ::-1][:, :d].T
  centred = _flat(y_test) - mean
  return _psnr(centred @ basis.T @ basis + mean, y_test, run.dataset.value_range)


@figure
def ae_reconstructions(runs, summary):
  r"""Under-complete AE (d = 30): test digits y and ỹ = Dec(Enc(y)), with PCA at the same d."""
  run = _ae(runs)
  vr, d = run.dataset.value_range, run.config.model.latent_dim
  y = _test(run)
  psnr = _psnr(_reconstruct(run, y), y, vr)
  pca = _pca_psnr(run, d, y)
  summary["latent_dim"] = d
  summary["epochs"] = float(run.config.train.num_epochs)
  summary["psnr"], summary["psnr_se"] = _mean_se(psnr)
  summary["pca_psnr"], summary["pca_psnr_se"] = _mean_se(pca)
  summary["psnr_minus_pca"], summary["psnr_minus_pca_se"] = _mean_se(psnr - pca)
  summary["num_images"] = len(y)
  shown = y[:10]
  fig, ax = subplots(1, 1, (8, 2.6))
  show_rows(ax, [to_unit(shown, vr), to_unit(_reconstruct(run, shown), vr)], ["$y$", r"$\tilde y$"],
            f"Under-complete AE (d = {d}): test images $y$ and reconstructions $\\tilde y$, shown "
            f"as ½(y + 1)\nmean test PSNR {summary['psnr']:.1f} dB (PCA with {d} components: "
            f"{summary['pca_psnr']:.1f} dB)")
  return fig


@figure
def ae_reconstructions_by_epoch(runs, summary):
  r"""The notebook's reconstructions after each epoch: test digits y and ỹ = Dec(Enc(y)) of the
  AE at the end of several of the notebook's 20 epochs (each a twentieth of the AE's steps),
  with the mean test energy E = Σ_j (y_j − ỹ_j)² over ``num_test`` images at each."""
  run = _ae(runs)
  vr = run.dataset.value_range
  total = runs.get_total_steps("ae")
  parts = FIGURE_CHOICES["notebook_epochs"] if not runs.quick else 2
  shown = FIGURE_CHOICES["shown_notebook_epochs"] if not runs.quick else (0, 1, 2)
  steps = [total * k // parts for k in shown]
  params = saved_params(run, steps)
  missing = sorted(set(steps) - set(params))
  if missing:
    raise ValueError(f"{run.workdir}: the AE run kept no checkpoint at step(s) {missing}; the "
                     f"figure needs one every {total // parts} steps")
  y = _test(run)
  digits = y[:FIGURE_CHOICES["epoch_digits"]]
  rows, energies = [to_unit(digits, vr)], []
  for step in steps:
    out = lambda v, p=params[step]: np.asarray(run.model.reconstruct(p, jnp.asarray(v, jnp.float32)))
    rows.append(to_unit(out(digits), vr))
    energies.append(np.sum(np.square(_flat(y) - _flat(out(y))), axis=1))
  energies = np.array(energies)
  per_epoch = run.config.train.num_epochs / parts
  summary.update(steps=steps, notebook_epochs=list(shown), epochs=[k * per_epoch for k in shown],
                 energy=[float(e) for e in energies.mean(1)],
                 energy_se=[_mean_se(e)[1] for e in energies],
                 # Paired per image: the fall from one shown epoch to the next and its noise.
                 energy_drop=[_mean_se(a - b)[0] for a, b in zip(energies, energies[1:])],
                 energy_drop_se=[_mean_se(a - b)[1] for a, b in zip(energies, energies[1:])],
                 num_images=len(y))
  labels = ["test $y$"] + [f"epoch {k} (step {s:,}): E = {e:.0f}"
                           for k, s, e in zip(shown, steps, summary["energy"])]
  fig, ax = subplots(1, 1, (6.5, 1 + 0.75 * len(rows)))
  show_rows(ax, rows, labels,
            f"AE (d = {run.config.model.latent_dim}) reconstructions after the notebook's epochs "
            f"(1 epoch = {total // parts} steps here)\nE: mean test energy "
            r"$\sum_j (y_j - \tilde y_j)^2$" f" over {len(y)} images, shown as ½(y + 1)")
  return fig


@figure
def dae_denoising(runs, summary):
  r"""Over-complete DAE (d = 500): ŷ (dropout, p = 0.5), y and ỹ = Dec(Enc(ŷ)); PSNR in and out."""
  run = runs.get("dae")
  vr = run.dataset.value_range
  y = _test(run)
  y_hat, _ = _corrupted(run, y, seed=1)
  psnr_in, psnr_out = _psnr(y_hat, y, vr), _psnr(_reconstruct(run, y_hat), y, vr)
  summary["psnr_in"], summary["psnr_in_se"] = _mean_se(psnr_in)
  summary["psnr_out"], summary["psnr_out_se"] = _mean_se(psnr_out)
  summary["psnr_gain"], summary["psnr_gain_se"] = _mean_se(psnr_out - psnr_in)
  trivial = _trivial_psnr(run, y)
  for key, value in trivial.items():
    summary[f"psnr_{key}"], summary[f"psnr_{key}_se"] = _mean_se(value)
  _record_beats(summary, "out", psnr_out, trivial)
  # The lecture's corruption, derived without calling it: a fraction p of the pixels become 0
  # (mid-grey, u = ½ on [0, 1]) and the rest y / (1 − p), shown clipped; with u = ½ (y + 1):
  # E[MSE_in] = p · mean (u − ½)² + (1 − p) · mean (clip(½ ((2u − 1) / (1 − p) + 1)) − u)².
  p = float(run.config.model.corruption_kwargs.dropout.p)
  u = _flat(to_unit(y, vr))
  kept = np.clip(0.5 * ((2 * u - 1) / (1 - p) + 1), 0, 1)
  summary["dropout_p"] = p
  summary["expected_mse_in"] = float(p * np.mean(np.square(u - 0.5)) + (1 - p) * np.mean(np.square(kept - u)))
  summary["num_pixels"] = int(u.size)
  summary["mse_in"] = float(np.mean(np.square(_flat(to_unit(y_hat, vr)) - _flat(to_unit(y, vr)))))
  summary["num_images"] = len(y)
  n = 10
  fig, ax = subplots(1, 1, (8, 3.4))
  show_rows(ax, [to_unit(y_hat[:n], vr), to_unit(y[:n], vr), to_unit(_reconstruct(run, y_hat[:n]), vr)],
            [r"corrupted $\hat y$", "clean $y$", r"denoised $\tilde y$"],
            f"Over-complete DAE (d = {run.config.model.latent_dim}), {run.config.model.corruption} "
            f"corruption (p = {summary['dropout_p']:g})\nPSNR {summary['psnr_in']:.1f} dB in, "
            f"{summary['psnr_out']:.1f} dB out")
  return fig


def _kernel_tiles(kernel: np.ndarray) -> np.ndarray:
  """Each kernel w (a column of W_h, one per code unit) as ½ + ½ w / max|w|: its own
  symmetric scale, so 0 is mid-grey and ± the kernel's largest weight is white / black."""
  w = kernel.T
  return 0.5 + 0.5 * w / np.abs(w).max(axis=1, keepdims=True)


def _neighbour_correlation(kernel: np.ndarray, shape=(28, 28)) -> float:
  """Mean correlation of horizontally adjacent weights of each kernel: ≈ 0 for the random
  initialisation, large for the smooth stroke detectors a trained encoder learns."""
  w = kernel.T.reshape(-1, *shape)
  left, right = w[:, :, :-1].reshape(len(w), -1), w[:, :, 1:].reshape(len(w), -1)
  left = left - left.mean(1, keepdims=True)
  right = right - right.mean(1, keepdims=True)
  corr = np.sum(left * right, 1) / np.sqrt(np.sum(left**2, 1) * np.sum(right**2, 1))
  return float(np.mean(corr))


@figure
def encoder_kernels(runs, summary):
  r"""The first 20 encoder kernels (columns of W_h, 28 × 28) of the AE and the DAE."""
  fig, axes = subplots(1, 2, (9, 5.4))
  for ax, name in zip(axes, ("ae", "dae")):
    run = _ae(runs) if name == "ae" else runs.get(name)
    kernel = np.asarray(run.model.extras["encoder_kernel"](run.params))[:, :20]
    initial = np.asarray(run.model.extras["encoder_kernel"](run.init_params))[:, :20]
    summary[f"{name}_neighbour_correlation"] = _neighbour_correlation(kernel)
    summary[f"{name}_neighbour_correlation_init"] = _neighbour_correlation(initial)
    image = show_mosaic(ax, image_grid(_kernel_tiles(kernel), 5, 4), cmap="gray", vmin=0, vmax=1)
    ax.set(xticks=[], yticks=[],
           title=f"{name.upper()} (d = {run.config.model.latent_dim}): first 20 kernels of $W_h$")
  bar = colorbar(fig, image, axes[-1], ticks=[0, 0.5, 1])
  bar.ax.set_yticklabels([r"$-\max|w|$", "0", r"$+\max|w|$"])
  fig.suptitle("Encoder kernels, 28 × 28, each on its own symmetric scale ±max|w| (0 = mid-grey)")
  return fig


def interpolation_numbers(e_input: np.ndarray, e_latent: np.ndarray) -> dict:
  """The numbers of ``dae_interpolation`` from the energies along each pair's paths, (pairs,
  steps) each: per pair, each path's rise above the mean of its own two ends at the middle
  (the two steps around t = ½), then means and standard errors over the pairs."""
  steps = e_input.shape[1]
  middle = slice(steps // 2 - 1, steps // 2 + 1)
  mid_in = rise_above_ends(e_input)[:, middle].mean(1)
  mid_lat = rise_above_ends(e_latent)[:, middle].mean(1)
  out = {"steps": steps, "num_pairs": len(e_input), "energy_input_mean": e_input.mean(0).tolist(),
         "energy_latent_mean": e_latent.mean(0).tolist()}
  for key, value in (("ends_input", 0.5 * (e_input[:, 0] + e_input[:, -1])),
                     ("ends_latent", 0.5 * (e_latent[:, 0] + e_latent[:, -1])),
                     ("rise_input", mid_in), ("rise_latent", mid_lat),
                     ("rise_input_minus_latent", mid_in - mid_lat),
                     # The raw middles' difference, which the ends' offset alone makes positive.
                     ("middle_input_minus_latent", e_input[:, middle].mean(1)
                      - e_latent[:, middle].mean(1))):
    out[key], out[f"{key}_se"] = _mean_se(value)
  return out


def rise_above_ends(energy: np.ndarray) -> np.ndarray:
  """E(y_t) − ½ (E(y_0) + E(y_1)) per path (rows)."""
  return energy - 0.5 * (energy[:, :1] + energy[:, -1:])


def _draw_interpolation_energies(ax_e, ax_r, e_input, e_latent, shown: int, numbers: dict):
  step = np.arange(e_input.shape[1])
  n = len(e_input)
  ax_e.plot(step, e_input[shown], "o-", c="C0", label="input space (this pair)")
  ax_e.plot(step, e_latent[shown], "s-", c="C1", label="latent space (this pair)")
  ax_e.plot(step, e_input.mean(0), "--", c="C0", alpha=0.6, label=f"input space, mean of {n} pairs")
  ax_e.plot(step, e_latent.mean(0), "--", c="C1", alpha=0.6, label=f"latent space, mean of {n} pairs")
  ax_e.set(xlabel="step along the path", ylabel=r"DAE energy $E = \sum_j (y_j - \tilde y_j)^2$",
           title="Energy along each path\n(the ends differ: real digits vs their reconstructions)",
           xticks=step[::3])
  # Headroom above the curves for the legends (upper right), which then cover no data.
  ax_e.set_ylim(0, 1.45 * max(e_input[shown].max(), e_input.mean(0).max()))
  ax_e.legend(fontsize=7, loc="upper right")
  for energy, c, label in ((e_input, "C0", "input space"), (e_latent, "C1", "latent space")):
    rise = rise_above_ends(energy)
    mean, se = rise.mean(0), rise.std(0, ddof=1) / np.sqrt(n)
    ax_r.plot(step, mean, "o-", c=c, ms=4, label=f"{label}, mean of {n} pairs")
    ax_r.fill_between(step, mean - 3 * se, mean + 3 * se, color=c, alpha=0.15, lw=0)
  ax_r.axhline(0, c="k", lw=0.6)
  low, high = ax_r.get_ylim()
  ax_r.set_ylim(low, high + 0.4 * (high - low))
  ax_r.set(xlabel="step along the path", xticks=step[::3],
           ylabel=r"rise above its own ends $E(y_t) - \frac{1}{2}(E(y_0) + E(y_1))$",
           title=f"Rise above each path's own ends (± 3 standard errors)\nat the middle: input "
                 f"{numbers['rise_input']:.1f}, latent {numbers['rise_latent']:.1f}")
  ax_r.legend(fontsize=7, loc="upper right")


@figure
def dae_interpolation(runs, summary):
  r"""Input-space path y_t = (1 − t) y_a + t y_b against latent-space path
  y_t = Dec((1 − t) h_a + t h_b), h = Enc(y), t ∈ [0 : 1/15 : 1], with the DAE's reconstruction
  energy E(y_t) = Σ_j (y_t − ỹ_t)²_j along each (the notebook's plot, drawn after its DAE).

  The two paths do not share their ends: the input path runs between the real digits y_a, y_b,
  the latent path between their reconstructions Dec(h_a), Dec(h_b), which lie on the DAE's
  manifold and have a far lower energy. So each path is measured by its rise above its own
  ends, E(y_t) − ½ (E(y_0) + E(y_1)): an offset of the whole curve cancels.

  The DAE, not the d = 30 AE: the AE's energy is no higher on mixtures than on real digits
  (≈ 50 at the ends of the input path, ≈ 45 at its middle, mean of the 10 pairs), so only the
  DAE's energy tells a point off the data manifold from one on it."""
  run = runs.get("dae")
  vr, steps = run.dataset.value_range, FIGURE_CHOICES["interpolation_steps"]
  t = np.linspace(0, 1, steps)[:, None]
  test = _flat(run.dataset.test["y"])
  e_input, e_latent, paths = [], [], []
  for a, b in _pairs(run):
    y_path = (1 - t) * test[a] + t * test[b]
    h = np.asarray(run.model.encode(run.params, jnp.asarray(test[[a, b]], jnp.float32)))
    z_path = np.asarray(run.model.decode(run.params, jnp.asarray((1 - t) * h[0] + t * h[1],
                                                                  jnp.float32)))
    e_input.append(_energy(run, y_path))
    e_latent.append(_energy(run, z_path))
    paths.append((y_path, z_path))
  e_input, e_latent = np.array(e_input), np.array(e_latent)
  summary.update(interpolation_numbers(e_input, e_latent))
  shown = 3  # the pair 3 → 8
  fig = plt.figure(figsize=(13, 7.8))
  grid = fig.add_gridspec(2, 2, height_ratios=[0.75, 1.4])
  ax_img, ax_e, ax_r = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
  y_path, z_path = paths[shown]
  show_rows(ax_img, [to_unit(y_path, vr), to_unit(z_path, vr)],
            ["input space", "latent space"],
            f"DAE (d = {run.config.model.latent_dim}): input path $(1-t)\\,y_a + t\\,y_b$ and latent "
            f"path $\\mathrm{{Dec}}((1-t)\\,h_a + t\\,h_b)$, {steps} steps")
  _draw_interpolation_energies(ax_e, ax_r, e_input, e_latent, shown, summary)
  return fig


@figure
def dae_inpainting(runs, summary):
  r"""Inpainting the DAE's dropout holes: the DAE's ỹ = Dec(Enc(ŷ)) against biharmonic inpainting
  (Δ²u = 0 in the holes, scikit-image), PSNR against the clean y."""
  from skimage.restoration import inpaint_biharmonic

  run = runs.get("dae")
  vr = run.dataset.value_range
  y = _test(run)
  y_hat, missing = _corrupted(run, y, seed=4)
  shape = run.example_shape[:2]
  clean = to_unit(y, vr).reshape(len(y), *shape)
  holes = missing.reshape(len(y), *shape)
  classical = np.stack([inpaint_biharmonic(np.where(m, 0.0, c), m) for c, m in zip(clean, holes)])
  out = to_unit(_reconstruct(run, y_hat), vr)
  psnr = {key: _psnr(value, clean, (0, 1)) for key, value in
          (("corrupted", to_unit(y_hat, vr)), ("dae", out), ("biharmonic", classical))}
  psnr.update(_trivial_psnr(run, y))
  _record_beats(summary, "dae", psnr["dae"], {k: v for k, v in psnr.items() if k != "dae"})
  _record_beats(summary, "biharmonic", psnr["biharmonic"], {"corrupted": psnr["corrupted"]})
  for key, value in psnr.items():
    summary[f"psnr_{key}"], summary[f"psnr_{key}_se"] = _mean_se(value)
  summary["missing_fraction"] = float(missing.mean())
  summary["num_images"] = len(y)
  n = 10
  fig, ax = subplots(1, 1, (8, 5))
  show_rows(ax, [to_unit(y_hat[:n], vr), holes[:n].astype(float), out[:n], classical[:n], clean[:n]],
            [r"corrupted $\hat y$", "mask (white: missing)", r"DAE $\tilde y$", "biharmonic",
             "clean $y$"],
            f"Inpainting {summary['missing_fraction']:.0%} missing pixels — PSNR: corrupted "
            f"{summary['psnr_corrupted']:.1f} dB, DAE {summary['psnr_dae']:.1f} dB, biharmonic "
            f"{summary['psnr_biharmonic']:.1f} dB")
  return fig


@figure
def dae_average(runs, summary):
  r"""The DAE on the average ȳ = ½ (y_a + y_b) of two different test digits: its output and the
  energy E(ȳ) = Σ (ȳ − ỹ)² against that of clean digits."""
  run = runs.get("dae")
  vr = run.dataset.value_range
  test = _flat(run.dataset.test["y"])
  pairs = np.array(_pairs(run))
  y_a, y_b = test[pairs[:, 0]], test[pairs[:, 1]]
  average = 0.5 * (y_a + y_b)
  out = _reconstruct(run, average)
  e_average, e_clean = _energy(run, average), _energy(run, _test(run))
  summary["energy_average"], summary["energy_average_se"] = _mean_se(e_average)
  summary["energy_clean"], summary["energy_clean_se"] = _mean_se(e_clean)
  # Which of the two digits the output is nearer to: (d_b − d_a) / (d_a + d_b), 0 for a blend.
  d_a, d_b = np.linalg.norm(_flat(out) - y_a, axis=1), np.linalg.norm(_flat(out) - y_b, axis=1)
  summary["mean_abs_preference"] = float(np.mean(np.abs(d_b - d_a) / (d_a + d_b)))
  summary["num_pairs"] = len(pairs)
  fig, ax = subplots(1, 1, (8, 4.4))
  show_rows(ax, [to_unit(y_a, vr), to_unit(y_b, vr), to_unit(average, vr), to_unit(out, vr)],
            ["$y_a$", "$y_b$", r"$\bar y = \frac{1}{2}(y_a + y_b)$", r"DAE($\bar y$)"],
            f"DAE on the average of two digits: E($\\bar y$) = {summary['energy_average']:.0f} "
            f"against {summary['energy_clean']:.0f} for clean digits")
  return fig


@figure
def overcomplete_copy(runs, summary):
  r"""An over-complete AE (d = 500) trained without noise next to the DAE, both fed ŷ: the AE
  learned to copy its input (holes included), the DAE to remove them."""
  dae = runs.get("dae")
  d = dae.config.model.latent_dim
  ae = runs.get(f"ae_d{d}", "ae", **{"model.latent_dim": d})
  vr = dae.dataset.value_range
  y = _test(dae)
  y_hat, _ = _corrupted(dae, y, seed=5)
  out_ae, out_dae = _reconstruct(ae, y_hat), _reconstruct(dae, y_hat)
  summary["latent_dim"] = d
  summary["psnr_in"], summary["psnr_in_se"] = _mean_se(_psnr(y_hat, y, vr))
  summary["psnr_ae_noisy"], summary["psnr_ae_noisy_se"] = _mean_se(_psnr(out_ae, y, vr))
  summary["psnr_dae_noisy"], summary["psnr_dae_noisy_se"] = _mean_se(_psnr(out_dae, y, vr))
  summary["psnr_dae_minus_ae_noisy"], summary["psnr_dae_minus_ae_noisy_se"] = _mean_se(
      _psnr(out_dae, y, vr) - _psnr(out_ae, y, vr))
  summary["psnr_ae_clean"], summary["psnr_ae_clean_se"] = _mean_se(_psnr(_reconstruct(ae, y), y, vr))
  # How faithfully each copies its corrupted input: PSNR of the output against ŷ itself.
  summary["copy_ae"], summary["copy_ae_se"] = _mean_se(_psnr(out_ae, y_hat, vr))
  summary["copy_dae"], summary["copy_dae_se"] = _mean_se(_psnr(out_dae, y_hat, vr))
  summary["copy_ae_minus_dae"], summary["copy_ae_minus_dae_se"] = _mean_se(
      _psnr(out_ae, y_hat, vr) - _psnr(out_dae, y_hat, vr))
  summary["num_images"] = len(y)
  n = 10
  fig, ax = subplots(1, 1, (8, 4.4))
  show_rows(ax, [to_unit(y[:n], vr), to_unit(y_hat[:n], vr), to_unit(out_ae[:n], vr),
                 to_unit(out_dae[:n], vr)],
            ["clean $y$", r"corrupted $\hat y$", f"AE d = {d}, no noise", f"DAE d = {d}"],
            f"Over-complete codes (d = {d}) fed $\\hat y$: PSNR {summary['psnr_ae_noisy']:.1f} dB "
            f"(AE copies, holes included) vs {summary['psnr_dae_noisy']:.1f} dB (DAE)")
  return fig


def _distance_to_curve(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
  return np.min(np.linalg.norm(points[:, None, :] - curve[None], axis=-1), axis=1)


@figure
def spiral_dae_field(runs, summary):
  r"""2-D DAE (week 7): noisy ŷ mapped back to the spiral, and the field ỹ − y over a grid."""
  run = runs.get("spiral_dae")
  clean = run.dataset.test["y"][:300]
  corrupt = run.model.extras["corrupt"]
  keys = jax.random.split(jax.random.key(2), len(clean))
  noisy = np.asarray(corrupt(keys, jnp.asarray(clean)))
  denoised = _reconstruct(run, noisy)
  # 17 × 17 points 0.1875 apart: arrows up to ~0.5 long keep visible heads.
  g1, g2 = np.meshgrid(np.linspace(-1.5, 1.5, 17), np.linspace(-1.5, 1.5, 17))
  grid = np.stack([g1.ravel(), g2.ravel()], -1).astype(np.float32)
  moved = _reconstruct(run, grid) - grid
  length = np.linalg.norm(moved, axis=1)
  curve = data_lib.spiral_points(4000, turns=run.config.data.turns)
  sigma = float(run.config.model.corruption_kwargs.gaussian.sigma)
  dist_noisy, dist_out = _distance_to_curve(noisy, curve), _distance_to_curve(denoised, curve)
  summary["sigma"] = sigma
  summary["distance_noisy"], summary["distance_noisy_se"] = _mean_se(dist_noisy)
  summary["distance_denoised"], summary["distance_denoised_se"] = _mean_se(dist_out)
  move_on = np.linalg.norm(_reconstruct(run, curve[::40]) - curve[::40], axis=1)
  summary["move_on_manifold"], summary["move_on_manifold_se"] = _mean_se(move_on)
  dist_grid = _distance_to_curve(grid, curve)
  far = dist_grid > 2 * sigma
  summary["move_far"], summary["move_far_se"] = _mean_se(length[far])
  summary["distance_far"] = float(dist_grid[far].mean())
  fig, (ax_d, ax_f) = subplots(1, 2, (13, 5.8))
  ax_d.plot(curve[:, 0], curve[:, 1], "k-", lw=1, label="spiral (data manifold)")
  ax_d.scatter(noisy[:, 0], noisy[:, 1], s=5, c="C1", label=rf"noisy $\hat y$ ($\sigma$ = {sigma:g})")
  ax_d.scatter(*denoised.T, s=5, c="C0", label=r"DAE output $\tilde y$")
  ax_d.set(xlabel="$y_1$", ylabel="$y_2$", aspect="equal",
           title=f"2-D DAE: noisy points mapped back\nmean distance to the spiral "
                 f"{summary['distance_noisy']:.3f} → {summary['distance_denoised']:.3f}")
  ax_d.legend(fontsize=7, loc="lower left")
  q = ax_f.quiver(grid[:, 0], grid[:, 1], moved[:, 0], moved[:, 1], length, cmap="viridis",
                  angles="xy", scale_units="xy", scale=1, width=0.005, headwidth=4,
                  headlength=4, headaxislength=3.5, clim=(0, 1))
  ax_f.plot(curve[:, 0], curve[:, 1], "r-", lw=0.8)
  ax_f.set(xlabel="$y_1$", ylabel="$y_2$", aspect="equal", xlim=(-1.65, 1.65), ylim=(-1.65, 1.65),
           title=r"DAE field over a 17 × 17 grid: arrows $\tilde y - y$")
  colorbar(fig, q, ax_f, label=r"distance moved $\|\tilde y - y\|$")
  return fig


# ----------------------------------------------------------------------------
# §D Contractive autoencoder
# ----------------------------------------------------------------------------


def _cae_runs(runs):
  lambdas = FIGURE_CHOICES["cae_lambdas"] if not runs.quick else (0.0, FIGURE_CHOICES["cae_lambda"])
  return {lam: runs.get(f"cae_lambda_{lam:g}", "cae", **{"model.contractive_weight": lam})
          for lam in lambdas}


def _encoder(run: Trained):
  """h = Enc(y) for one flat example, for Jacobians and perturbations."""
  shape = run.example_shape
  return lambda y: run.model.encode(run.params, y.reshape(1, *shape))[0]


def _jacobians(run: Trained, y) -> np.ndarray:
  """∂h/∂y per example, (B, d, n), by reverse mode through the public encoder."""
  return np.asarray(jax.jit(jax.vmap(jax.jacrev(_encoder(run))))(jnp.asarray(_flat(y), jnp.float32)),
                    np.float64)


def _squared_singular_values(jac: np.ndarray) -> np.ndarray:
  """σ_k² of each J (descending), the eigenvalues of the d × d matrix J Jᵀ (d < n: much cheaper
  than an SVD of J)."""
  return np.clip(np.linalg.eigvalsh(jac @ np.swapaxes(jac, 1, 2))[:, ::-1], 0, None)


@figure
def cae_jacobian_vs_lambda(runs, summary):
  r"""CAE, F = C(y, ỹ) + λ ‖∂h/∂y‖²_F: mean test ‖∂h/∂y‖_F and C against λ; ‖J‖_F by autodiff
  and by the closed form ‖J‖²_F = Σ_i (h_i (1 − h_i))² Σ_j W_ij² for h = σ(W y + b)."""
  sweep = _cae_runs(runs)
  lams = list(sweep)
  jac, jac_se, closed, rec, rec_se = [], [], [], [], []
  for lam in lams:
    run = sweep[lam]
    y = _test(run)
    fro = np.sqrt(np.sum(np.square(_jacobians(run, y)), axis=(1, 2)))
    h = np.asarray(run.model.encode(run.params, jnp.asarray(y)), np.float64)
    kernel = np.asarray(run.model.extras["encoder_kernel"](run.params), np.float64)  # (n, d) = Wᵀ
    closed.append(float(np.mean(np.sqrt(np.square(h * (1 - h)) @ np.sum(kernel**2, axis=0)))))
    m, s = _mean_se(fro)
    jac.append(m)
    jac_se.append(s)
    m, s = _mean_se(_energy(run, y))
    rec.append(m)
    rec_se.append(s)
  summary.update(lambdas=lams, jacobian_fro=jac, jacobian_fro_se=jac_se, jacobian_fro_closed_form=closed,
                 reconstruction=rec, reconstruction_se=rec_se,
                 latent_dim=sweep[lams[0]].config.model.latent_dim)
  fig, ax = subplots(1, 1, (7, 4))
  ax.errorbar(lams, jac, yerr=jac_se, fmt="o-", c="C0")
  ax.set_ylabel(r"mean test $\|\partial h/\partial y\|_F$", color="C0")
  ax.set(xlabel=r"$\lambda$ (contractive weight)", xscale="symlog",
         title=rf"CAE (d = {summary['latent_dim']}): $F = C + \lambda\,\|\partial h/\partial y\|_F^2$"
               " — Jacobian norm and reconstruction against λ")
  ax2 = ax.twinx()
  ax2.errorbar(lams, rec, yerr=rec_se, fmt="s--", c="C1")
  ax2.set_ylabel(r"test reconstruction $C = \sum_j (y_j - \tilde y_j)^2$", color="C1")
  return fig


@figure
def cae_saturation(runs, summary):
  r"""Fraction of saturated sigmoid code units (h_i < 0.05 or h_i > 0.95) against λ
  (Rifai et al. 2011): the penalty Σ_i (h_i (1 − h_i))² Σ_j W_ij² is smallest at h_i ∈ {0, 1}."""
  low, high = FIGURE_CHOICES["saturation"]
  sweep = _cae_runs(runs)
  lams = list(sweep)
  fractions, fraction_se, codes = [], [], {}
  for lam in lams:
    run = sweep[lam]
    h = np.asarray(run.model.encode(run.params, jnp.asarray(_test(run))))
    codes[lam] = h
    m, s = _mean_se(np.mean((h < low) | (h > high), axis=1))  # per image, then over images
    fractions.append(m)
    fraction_se.append(s)
  summary.update(lambdas=lams, saturated_fraction=fractions, saturated_fraction_se=fraction_se,
                 threshold_low=low, threshold_high=high)
  fig, (ax_f, ax_h) = subplots(1, 2, (12, 4))
  ax_f.errorbar(lams, fractions, yerr=fraction_se, fmt="o-")
  ax_f.set(xlabel=r"$\lambda$", xscale="symlog", ylabel="fraction of saturated code units",
           ylim=(0, 1), title=f"CAE: units with $h_i < {low:g}$ or $h_i > {high:g}$ (test images)")
  bins = np.linspace(0, 1, 41)
  for lam in (lams[0], lams[-1]):
    ax_h.hist(codes[lam].ravel(), bins=bins, alpha=0.6, density=True, label=rf"$\lambda$ = {lam:g}")
  for x in (low, high):
    ax_h.axvline(x, c="k", lw=0.8, ls=":")
  ax_h.set(xlabel="$h_i$", ylabel="density", yscale="log", title="Histogram of the code values")
  ax_h.legend()
  return fig


def _encoders_for_comparison(runs):
  """AE, DAE and CAE with one architecture: the CAE's one sigmoid layer of d units on [0, 1]
  images; the AE is the CAE at λ = 0, the DAE that network trained on the lecture's dropout."""
  lam = FIGURE_CHOICES["cae_lambda"]
  cae = runs.get(f"cae_lambda_{lam:g}", "cae", **{"model.contractive_weight": lam})
  mc = cae.config.model
  same = {"data.range": cae.config.data.range, "model.latent_dim": mc.latent_dim,
          "model.latent_activation": mc.latent_activation, "model.output_activation": mc.output_activation,
          "train.num_epochs": cae.config.train.num_epochs}
  return {"AE (λ = 0)": runs.get("cae_lambda_0", "cae", **{"model.contractive_weight": 0.0}),
          "DAE": runs.get(f"dae_sigmoid_d{mc.latent_dim}", "dae", **same),
          f"CAE (λ = {lam:g})": cae}


@figure
def cae_contraction(runs, summary):
  r"""Contraction ratio ‖h(y + ε) − h(y)‖ / ‖ε‖ against ‖ε‖ (random directions, [0, 1] pixel
  units) for AE, DAE and CAE of equal d; as ‖ε‖ → 0 it tends to ‖J u‖ ≈ ‖J‖_F / √n."""
  distances = FIGURE_CHOICES["contraction_distances"]
  fig, ax = subplots(1, 1, (7, 4.4))
  rng = np.random.default_rng(0)
  summary["distances"] = list(distances)
  for name, run in _encoders_for_comparison(runs).items():
    encode = jax.jit(jax.vmap(_encoder(run)))
    y = _flat(_test(run))
    pixel_scale = run.dataset.value_range[1] - run.dataset.value_range[0]  # distances in [0, 1]
    h0 = np.asarray(encode(jnp.asarray(y, jnp.float32)), np.float64)
    ratios, ratios_se = [], []
    for d in distances:
      direction = rng.normal(size=y.shape)
      eps = d * direction / np.linalg.norm(direction, axis=1, keepdims=True)
      dh = np.asarray(encode(jnp.asarray(y + pixel_scale * eps, jnp.float32)), np.float64) - h0
      m, s = _mean_se(np.linalg.norm(dh, axis=1) / d)
      ratios.append(m)
      ratios_se.append(s)
    jac = _jacobians(run, y) * pixel_scale
    fro = np.sqrt(np.sum(jac**2, axis=(1, 2)))
    s2 = _squared_singular_values(jac)
    key = name.split(" ")[0].lower()
    summary[f"{key}_ratios"] = ratios
    summary[f"{key}_ratios_se"] = ratios_se
    summary[f"{key}_linear_prediction"] = float(np.mean(fro) / np.sqrt(y.shape[1]))
    # Effective rank (Σσ²)² / Σσ⁴ of J: how concentrated ‖J u‖² is for random directions u.
    summary[f"{key}_effective_rank"] = float(np.mean(s2.sum(1) ** 2 / np.sum(s2**2, 1)))
    summary["input_dim"] = int(y.shape[1])
    ax.plot(distances, ratios, "o-", label=f"{name}, d = {run.config.model.latent_dim}")
  ax.set(xlabel=r"distance $\|\epsilon\|$ from test points (pixels in [0, 1]; a digit's norm ≈ 10)",
         xscale="log", yscale="log", ylabel=r"$\|h(y + \epsilon) - h(y)\| \,/\, \|\epsilon\|$",
         title="Contraction ratio against the distance from test points (random directions)")
  # Outside the axes, below them: inside, it covered the CAE's points at small distances.
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=9, frameon=False)
  return fig


@figure
def cae_singular_values(runs, summary):
  r"""Singular values σ_k of J = ∂h/∂y (mean over test images) for AE, DAE and CAE of equal d."""
  fig, ax = subplots(1, 1, (7, 4.4))
  for name, run in _encoders_for_comparison(runs).items():
    s = np.sqrt(_squared_singular_values(_jacobians(run, _test(run, 100)))).mean(0)
    key = name.split(" ")[0].lower()
    summary[f"{key}_singular_values"] = s.tolist()
    ax.plot(np.arange(1, len(s) + 1), s, label=f"{name}, d = {len(s)}")
  ax.set(xlabel="rank k", ylabel=r"$\sigma_k(\partial h/\partial y)$ (mean over 100 test images)",
         xscale="log", yscale="log", title=r"Singular-value spectrum of the encoder Jacobian $J$")
  ax.legend()
  return fig
