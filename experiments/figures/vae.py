r"""§E: the variational autoencoder (08-3, Figs. 5-8, and the practicum notebook's figures).

The d = 2 bubbles are drawn at the KL balance. Rescaling latent i by a (μᵢ → a μᵢ,
vᵢ → a² vᵢ, and the decoder reading zᵢ / a, which its first layer, linear in z, absorbs exactly)
leaves C(y, Dec(z)) unchanged for every y and every ε of z = μ + √v ε, while the KL
½ Σᵢ (vᵢ − log vᵢ − 1 + μᵢ²) changes with derivative E[μᵢ² + vᵢ] − 1 in log a: the training
loss is at a minimum along this line only where mᵢ = E_train[μᵢ² + vᵢ] = 1, and the minimum,
at a = 1 / √mᵢ, lowers the mean KL by exactly ½ V(mᵢ) = ½ (mᵢ − log mᵢ − 1) per latent.
Gradient descent moves log a at a rate η ∂L/∂log a / ‖t‖² with ‖t‖² the squared norm of the
weights the line moves, dominated by the decoder's first-layer row of zᵢ (400 weights
initialised with variance 1 / fan-in = ½ at d = 2, ten times the 20-d VAE's), and Adam's steps
are set by the reconstruction gradient's noise, in which this derivative is tiny: at d = 2 the
optimisers leave mᵢ near 2 (tried, 6,000 steps each: Adam at learning rates 1e-3, 3e-3 and
1e-2, Adam with a cosine decay, SGD with momentum; every one ended with both mᵢ above 1.4,
the larger rates at a worse nelbo). So the figures take that last step of
training in closed form: the trained run's μ, v (``trained_second_moment`` in the summary)
mapped by a = 1 / √mᵢ, the exact minimiser of the training loss along the line; the model is
the same up to the decoder reading z / a, and its loss is lower by ½ Σᵢ V(mᵢ) nats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle, Ellipse as EllipsePatch
from mpl_toolkits.axes_grid1 import make_axes_locatable

from energy_ae import data as data_lib
from experiments.figures.common import (
    Trained, colorbar, figure, image_grid, show_mosaic, show_rows, subplots)

# Choices the notebook leaves open (figures.md §E).
FIGURE_CHOICES = {
    "tsne_epochs": (0, 5, 10),  # §E: the notebook's t-SNE epochs (0: untrained)
    "tsne_points": 1000,
    "knn_k": 5,  # k of the leave-one-out kNN accuracy that scores a t-SNE map
    "bubble_points": 500,
    "interpolation_digits": (3, 8),  # the notebook's "3 → 8 morph": first test 3 and 8
    "interpolation_steps": 16,
}

# The figure runs evaluate rarely (every 30 epochs: the test curve still has ~10 points) and
# estimate −log p(y) with k = 100 samples in the main run only: at every 100 steps, evaluation
# would take longer than training on the 2-core machine. The other runs need no −log p(y):
# k = 1 (the smallest the config accepts) makes its estimate cost one decoder pass.
_NO_IW = {"model.iw_samples": 1, "model.iw_chunk": 1}
_MAIN_RUN = {"train.eval_every": 450}
# d = 2 runs train 100 epochs (1,500 steps): their test nelbo is within 2 nats (1 %) of its
# value at 230 epochs there (seed 0, β = 1: 174.0 at epoch 30, 165.8 at 90, 164.0 at 230), and
# the five runs of this module then take about 4 minutes on 2 CPU cores.
_TWO_D_RUN = {"model.latent_dim": 2, "train.num_epochs": 100, "train.eval_every": 150, **_NO_IW}


def _get(runs, name: str, **overrides) -> Trained:
  """runs.get of the VAE experiment; quick runs keep the quick config's epochs and evaluations."""
  if runs.quick:
    overrides = {k: v for k, v in overrides.items() if not k.startswith("train.")}
  return runs.get(name, "vae", **overrides)


def _main(runs) -> Trained:
  return _get(runs, "vae", **_MAIN_RUN)


def _two_d(runs, beta: float) -> Trained:
  name = "vae_2d" if beta == 1.0 else f"vae_2d_beta{beta:g}"
  return _get(runs, name, **_TWO_D_RUN, **{"model.beta": beta})


def _bce(y, p):
  """C(y, p) = −Σ y log p + (1 − y) log(1 − p) per example, p clipped away from 0 and 1."""
  p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
  y = np.asarray(y, np.float64)
  return -np.sum(y * np.log(p) + (1 - y) * np.log1p(-p), axis=-1)


def _posterior(run: Trained, y):
  mu, logvar = run.model.extras["posterior"](run.params, jnp.asarray(y))
  return np.asarray(mu, np.float64), np.exp(np.asarray(logvar, np.float64))


def _pair(run: Trained):
  """The two real test digits at the ends of the interpolation (first of each class)."""
  test = run.dataset.test
  return np.stack([test["y"][np.flatnonzero(test["label"] == digit)[0]]
                   for digit in FIGURE_CHOICES["interpolation_digits"]])


@figure
def vae_reconstructions(runs, summary):
  run = _main(runs)
  test = run.dataset.test["y"]
  recon = np.asarray(run.model.reconstruct(run.params, jnp.asarray(test)))  # decoded z = μ
  fig, ax = subplots(1, 1, (9, 2.6))
  show_rows(ax, [test[:10], recon[:10]], ["$y$", r"$\tilde y = \mathrm{Dec}(\mu)$"],
            "VAE: test images and their reconstructions from $z = \\mu$")
  # Per-example nelbo (one z sample each, as in training's evaluations): its spread over the
  # test split gives the standard error of the recorded mean, the noise the facts allow for.
  nelbo = np.concatenate([np.asarray(run.model.evaluate(
      run.params, {"y": jnp.asarray(test[i: i + 500])},
      jax.random.split(jax.random.key(5), len(test[i: i + 500])))["nelbo"])
      for i in range(0, len(test), 500)])
  records = run.records()
  curve = [r["nelbo"] for r in records]
  last = records[-1]
  summary.update(
      epochs=float(run.config.train.num_epochs),
      test_nelbo=last["nelbo"], test_C=last["C"], test_KL=last["KL"],
      test_iw_bound=last.get("nll_iw", last.get("bce_iw")),
      test_nelbo_sem=float(nelbo.std() / np.sqrt(len(nelbo))),
      test_nelbo_first=curve[0], test_nelbo_min=min(curve), num_evaluations=len(curve),
      # C(y, Dec(μ)) over the whole test split, and its floor Σᵢ H(yᵢ): with grey targets the
      # cross-entropy is minimal (= the targets' entropy) at ỹ = y, not 0.
      recon_bce_mu=float(np.mean(_bce(test, recon))),
      bce_floor=float(np.mean(_bce(test, test))))
  return fig


@figure
def vae_mu_residuals(runs, summary):
  run = _main(runs)
  pair = _pair(run)
  decoded = np.asarray(run.model.reconstruct(run.params, jnp.asarray(pair)))
  residual = pair - decoded
  fig, axes = subplots(1, 3, (9, 5.2))
  show_mosaic(axes[0], image_grid(pair, 2, 1))
  show_mosaic(axes[1], image_grid(decoded, 2, 1))
  im = show_mosaic(axes[2], image_grid(residual, 2, 1), cmap="RdBu_r", vmin=-1, vmax=1,
                   separator="black")
  colorbar(fig, im, axes[2], label=r"$y - \mathrm{Dec}(\mu)$")
  for ax in axes[:2]:  # the same room beside the image panels, so that all three are one size
    make_axes_locatable(ax).append_axes("right", size="4%", pad=0.08).axis("off")
  for ax, title in zip(axes, ("test image $y$", r"decoded mean $\mathrm{Dec}(\mu)$",
                              r"residual $y - \mathrm{Dec}(\mu)$")):
    ax.set(xticks=[], yticks=[], title=title)
  fig.suptitle("VAE: the decoded $\\mu$ of two test images and what it misses")
  test = run.dataset.test["y"]
  test_residual = test - np.asarray(run.model.reconstruct(run.params, jnp.asarray(test)))
  summary.update(
      # Over the whole test split, against the ink a blank output would miss: mean |y|.
      test_residual_mean_abs=float(np.mean(np.abs(test_residual))),
      test_mean_abs=float(np.mean(np.abs(test))),
      residual_mean_abs=float(np.mean(np.abs(residual))),
      residual_max_abs=float(np.max(np.abs(residual))),
      # The residual lives in [−1, 1] because both y and the Bernoulli means are in [0, 1].
      residual_within_unit=bool(np.all(np.abs(residual) <= 1.0)))
  return fig


@figure
def vae_samples(runs, summary):
  run = _main(runs)
  z = jax.random.normal(jax.random.key(3), (16, run.config.model.latent_dim))
  samples = np.asarray(run.model.decode(run.params, z))
  fig, ax = subplots(1, 1, (5.5, 5.8))
  show_mosaic(ax, image_grid(samples, 4, 4))
  ax.set(xticks=[], yticks=[], title=r"VAE: 16 samples $\mathrm{Dec}(z)$, $z \sim \mathcal{N}(0, I)$")
  # Mean intensity of many samples against the test digits': the decoder fed by the prior
  # should draw as much ink as the data when the aggregate posterior matches N(0, I).
  many = np.asarray(run.model.decode(run.params, jax.random.normal(jax.random.key(4), (
      2000, run.config.model.latent_dim))))
  mu, var = _posterior(run, run.dataset.train["y"])
  second = mu**2 + var  # E[μᵢ² + vᵢ] per latent dimension: 1 at a fitted VAE's optimum
  summary.update(train_second_moment=[float(m) for m in second.mean(0)],
                 train_second_moment_sem=[float(s) for s in second.std(0) / np.sqrt(len(second))],
                 sample_mean_intensity=float(many.mean()),
                 sample_mean_intensity_sem=float(many.mean(1).std() / np.sqrt(len(many))),
                 data_mean_intensity=float(run.dataset.test["y"].mean()))
  return fig


@figure
def vae_interpolation(runs, summary):
  run = _main(runs)
  pair = _pair(run)
  steps = FIGURE_CHOICES["interpolation_steps"]
  mu = np.asarray(run.model.encode(run.params, jnp.asarray(pair)))
  t = np.linspace(0.0, 1.0, steps)[:, None]
  path = np.asarray(run.model.decode(run.params, jnp.asarray((1 - t) * mu[0] + t * mu[1],
                                                             jnp.float32)))
  recon = np.asarray(run.model.reconstruct(run.params, jnp.asarray(pair)))
  a, b = FIGURE_CHOICES["interpolation_digits"]
  fig, ax = subplots(1, 1, (18, 2.9))
  # The real digits at both ends: the steps t = 0 and t = 1 next to them are Dec(μ_a) and
  # Dec(μ_b), so what the model loses of each digit shows beside it.
  tiles = np.concatenate([pair[:1], path, pair[1:]])
  show_mosaic(ax, image_grid(tiles, 1, steps + 2))
  ax.set_xticks([14 + 29 * i for i in range(steps + 2)],
                [f"$y_{a}$"] + [f"{s / (steps - 1):.2f}" for s in range(steps)] + [f"$y_{b}$"])
  ax.set(yticks=[], xlabel=r"$t$ of $\mathrm{Dec}((1 - t)\,\mu_a + t\,\mu_b)$, between the real digits",
         title=f"VAE: {steps} steps on the line from $\\mu$({a}) to $\\mu$({b}), decoded; "
               "the real test digits at the ends")
  summary.update(
      # t = 0 and t = 1 decode μ_a and μ_b: the reconstructions of the real digits.
      end_minus_reconstruction_max_abs=float(np.max(np.abs(path[[0, -1]] - recon))),
      # C(y, Dec(μ)) of the two end digits, and along the path the cross-entropy to each end.
      end_bce=[float(c) for c in _bce(pair, recon)],
      path_bce_to_a=[float(c) for c in _bce(pair[0], path)],
      path_bce_to_b=[float(c) for c in _bce(pair[1], path)])
  return fig


def _knn_accuracy(points, labels, k):
  """Leave-one-out k-NN accuracy (majority vote of the k nearest, ties to the smaller digit)."""
  d = np.sum((points[:, None, :] - points[None, :, :]) ** 2, -1)
  np.fill_diagonal(d, np.inf)
  neighbours = labels[np.argsort(d, axis=1)[:, :k]]
  votes = np.apply_along_axis(np.bincount, 1, neighbours, minlength=10)
  return float(np.mean(np.argmax(votes, 1) == labels))


def _steps(run: Trained) -> int:
  per_epoch = data_lib.num_batches(len(run.dataset.train["y"]), run.config.train.batch_size)
  return int(run.config.train.num_epochs * per_epoch)


@figure
def vae_tsne(runs, summary):
  from sklearn.manifold import TSNE
  from threadpoolctl import threadpool_limits

  epochs = FIGURE_CHOICES["tsne_epochs"] if not runs.quick else (0, 1, 2)
  num = FIGURE_CHOICES["tsne_points"] if not runs.quick else 300
  k = FIGURE_CHOICES["knn_k"]
  fig, axes = subplots(1, len(epochs), (5 * len(epochs), 4.6))
  accuracy, accuracy_mu = [], []
  for ax, epoch in zip(axes, epochs):
    # Epoch 0 is the initialisation, which every run shares. These short runs only need
    # their final parameters: no −log p(y) estimate.
    trained_epochs = epoch or min(e for e in epochs if e > 0)
    run = runs.get(f"vae_epoch_{trained_epochs}", "vae",
                   **{"train.num_epochs": trained_epochs, **_NO_IW})
    params = run.init_params if epoch == 0 else run.params
    y, labels = run.dataset.test["y"][:num], run.dataset.test["label"][:num]
    mu = np.asarray(run.model.encode(params, jnp.asarray(y)))
    # One thread: on a shared machine sklearn's OpenMP threads wait on each other (a 1,000-point
    # embedding took 47 s with all threads beside other jobs, 9 s with one).
    with threadpool_limits(1):
      embedded = TSNE(n_components=2, init="pca", random_state=0,
                      perplexity=min(30, num // 4)).fit_transform(mu)
    accuracy.append(_knn_accuracy(embedded, labels, k))
    accuracy_mu.append(_knn_accuracy(mu, labels, k))
    sc = ax.scatter(embedded[:, 0], embedded[:, 1], c=labels, cmap="tab10", s=4,
                    vmin=-0.5, vmax=9.5)
    ax.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2",
           title=f"epoch {epoch} ({_steps(run) if epoch else 0} steps): {k}-NN accuracy "
                 f"{accuracy[-1]:.2f}")
  colorbar(fig, sc, axes[-1], ticks=range(10), label="digit")
  for ax in axes[:-1]:  # the colour bar's room beside every panel: all three one size
    make_axes_locatable(ax).append_axes("right", size="4%", pad=0.08).axis("off")
  fig.suptitle(f"t-SNE of the VAE's $\\mu$ for {num} test images, coloured by digit")
  summary.update(epochs=list(epochs), num_points=num, knn_k=k, knn_accuracy_tsne=accuracy,
                 knn_accuracy_mu=accuracy_mu,
                 # A binomial proportion's standard error at the worst case p = ½.
                 knn_accuracy_sem=float(0.5 / np.sqrt(num)))
  return fig


@figure
def vae_kl_potential(runs, summary):
  del runs
  v = np.linspace(0.01, 5, 500)
  potential = v - np.log(v) - 1
  fig, ax = subplots(1, 1, (6.4, 4.2))
  ax.axhline(0, c="0.6", lw=0.8)
  ax.plot(v, potential, label=r"$V(v) = v - \log v - 1$")
  ax.plot(1, 0, "o", c="C3", zorder=3, label="minimum $V(1) = 0$")
  # The lower limit leaves room under the minimum: the marker sits inside the axes.
  ax.set(xlabel="variance $v$", ylabel="$V(v)$", xlim=(0, 5), ylim=(-0.3, 4),
         title=r"$\mathrm{KL}(\mathcal{N}(\mu, v)\,\|\,\mathcal{N}(0, 1)) = "
               r"\frac{1}{2}\,(V(v) + \mu^2)$")
  ax.legend()
  summary.update(v_at_min=float(v[np.argmin(potential)]), v_grid_step=float(v[1] - v[0]),
                 min_value=float(potential.min()), value_at_1=float(1 - np.log(1.0) - 1),
                 ylim=list(ax.get_ylim()))
  return fig


def _draw_bubbles(ax, mu, var, labels):
  """Each μ with an ellipse of radii √v, over the unit circle of N(0, I)."""
  cmap = plt.get_cmap("tab10")
  ax.add_patch(Circle((0, 0), 1.0, fill=False, ec="k", ls="--", lw=1.2, zorder=0,
                      label=r"unit circle of $\mathcal{N}(0, I)$"))
  std = np.sqrt(var)
  for m, s, label in zip(mu, std, labels):
    ax.add_patch(EllipsePatch(m, 2 * s[0], 2 * s[1], color=cmap(label), alpha=0.2, lw=0, zorder=1))
  points = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=9.5,
                      zorder=2)
  # The frame holds every bubble and the unit circle, with a margin of 5 % of its size.
  low = np.minimum(np.min(mu - std, axis=0), -1.0)
  high = np.maximum(np.max(mu + std, axis=0), 1.0)
  margin = 0.05 * np.max(high - low)
  ax.set(xlim=(low[0] - margin, high[0] + margin), ylim=(low[1] - margin, high[1] + margin),
         aspect="equal", xlabel="$z_1$", ylabel="$z_2$")
  ax.legend(loc="upper right", fontsize=8)
  return points


def _kl(mu, var) -> np.ndarray:
  """½ Σᵢ (vᵢ − log vᵢ − 1 + μᵢ²) per example: KL(N(μ, v) ‖ N(0, I))."""
  return 0.5 * np.sum(var - np.log(var) - 1 + mu**2, axis=-1)


def balance(mu_train, var_train, balanced: bool) -> tuple[np.ndarray, dict]:
  """(a, numbers): the per-latent scale a = 1 / √mᵢ, mᵢ = E_train[μᵢ² + vᵢ], that takes the
  posterior to its KL balance (module docstring; a = 1 unless ``balanced``: β = 0 has no KL
  and no balance), and the numbers that show the map: the training set's second moments and
  mean KL before and after it, and the drop ½ Σᵢ V(mᵢ) the closed form predicts."""
  trained = (mu_train**2 + var_train).mean(0)
  scale = 1 / np.sqrt(trained) if balanced else np.ones_like(trained)
  mu, var = scale * mu_train, scale**2 * var_train
  second = mu**2 + var
  return scale, dict(
      balanced=balanced, trained_second_moment=[float(m) for m in trained],
      train_second_moment=[float(m) for m in second.mean(0)],
      train_second_moment_sem=[float(s) for s in second.std(0) / np.sqrt(len(second))],
      # Bubble size relative to the cloud, E[v] / E[μ² + v] per latent: unchanged by the map.
      relative_var=[float(r) for r in var.mean(0) / second.mean(0)],
      kl_trained=float(_kl(mu_train, var_train).mean()), kl_drawn=float(_kl(mu, var).mean()),
      kl_drop_predicted=float(0.5 * np.sum(trained - np.log(trained) - 1)) if balanced else 0.0)


def _balanced_posterior(run: Trained, balanced: bool):
  """(posterior, numbers): ``posterior(y) -> (μ, v)`` of the d = 2 run mapped by ``balance``."""
  scale, numbers = balance(*_posterior(run, run.dataset.train["y"]), balanced)

  def posterior(y):
    mu, var = _posterior(run, y)
    return scale * mu, scale**2 * var

  return posterior, numbers


def _bubble_numbers(mu, var):
  return dict(
      mean_var=float(var.mean()), median_var=float(np.median(var)),
      mean_norm_mu=float(np.mean(np.linalg.norm(mu, axis=1))),
      fraction_mu_inside_unit_circle=float(np.mean(np.linalg.norm(mu, axis=1) < 1.0)))


@figure
def vae_bubbles(runs, summary):
  run = _two_d(runs, 1.0)
  num = FIGURE_CHOICES["bubble_points"]
  y, labels = run.dataset.test["y"][:num], run.dataset.test["label"][:num]
  posterior, numbers = _balanced_posterior(run, balanced=True)
  mu, var = posterior(y)
  fig, ax = subplots(1, 1, (7.2, 6.4))
  points = _draw_bubbles(ax, mu, var, labels)
  colorbar(fig, points, ax, ticks=range(10), label="digit")
  moments = ", ".join(f"{m:.2f}" for m in numbers["trained_second_moment"])
  ax.set_title(f"VAE with $d = 2$: $\\mu$ of {num} test images, bubbles of radii $\\sqrt{{v}}$\n"
               f"at the KL balance E[$\\mu_i^2 + v_i$] = 1 (training left {moments}: "
               f"rescaled, loss −{numbers['kl_drop_predicted']:.2f} nats)", fontsize=10)
  summary.update(numbers, **_bubble_numbers(mu, var),
                 # Mass of N(0, I₂) inside the unit circle: P(χ²₂ < 1) = 1 − e^{−1/2}.
                 prior_fraction_inside_unit_circle=float(1 - np.exp(-0.5)))
  return fig


@figure
def vae_bubbles_beta(runs, summary):
  num = FIGURE_CHOICES["bubble_points"]
  fig, axes = subplots(1, 2, (13, 6.2))
  for ax, beta in zip(axes, (0.0, 1.0)):
    run = _two_d(runs, beta)
    y, labels = run.dataset.test["y"][:num], run.dataset.test["label"][:num]
    posterior, numbers = _balanced_posterior(run, balanced=beta > 0)
    mu, var = posterior(y)
    points = _draw_bubbles(ax, mu, var, labels)
    relative = np.mean(numbers["relative_var"])
    ax.set_title(f"$\\beta = {beta:g}$: mean $v$ = {var.mean():.2g}, "
                 f"E[$v$] / E[$\\mu^2 + v$] = {relative:.2g}"
                 + ("\n(no KL: the bubbles collapse)" if beta == 0 else "\n(at the KL balance)"))
    summary[f"beta{beta:g}"] = dict(numbers, **_bubble_numbers(mu, var))
  colorbar(fig, points, axes[-1], ticks=range(10), label="digit")
  fig.suptitle(r"$d = 2$ VAE, $\mu$ and bubbles of radii $\sqrt{v}$: without the KL term "
               r"($\beta = 0$) nothing keeps $v$ away from 0", y=1.03)
  return fig
