"""§E: the variational autoencoder (08-3, Figs. 5-8)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

import matplotlib.pyplot as plt
from matplotlib.patches import Ellipse as EllipsePatch

from energy_ae.models import vae as vae_model
from experiments.figures.common import figure, image_grid, show_rows, subplots

FIGURE_CHOICES = {
    "tsne_epochs": (0, 5, 10),  # §E
    "tsne_points": 1000,
}



@figure
def vae_reconstructions(runs, summary):
  run = runs.get("vae")
  y = run.dataset.test["y"][:10]
  out = np.asarray(run.model.reconstruct(run.params, jnp.asarray(y)))  # decoded z = μ
  fig, ax = subplots(1, 1, (8, 2.6))
  show_rows(ax, [y, out], ["y", "ỹ = Dec(μ)"], "VAE: test images and reconstructions (z = μ)")
  return fig


@figure
def vae_samples(runs, summary):
  run = runs.get("vae")
  samples = np.asarray(vae_model.sample(run.params, run.config, run.example_shape,
                                        jax.random.key(3), 16))
  fig, ax = subplots(1, 1, (5, 5))
  ax.imshow(image_grid(samples, 4, 4), cmap="gray", vmin=0, vmax=1)
  ax.set(xticks=[], yticks=[], title="VAE: 16 samples Dec(z), z ~ N(0, I)")
  return fig


@figure
def vae_interpolation(runs, summary):
  run = runs.get("vae")
  test = run.dataset.test
  a = test["y"][np.flatnonzero(test["label"] == 3)[0]]
  b = test["y"][np.flatnonzero(test["label"] == 8)[0]]
  path = np.asarray(vae_model.interpolate(run.params, run.config, run.example_shape,
                                          jnp.asarray(a), jnp.asarray(b), 16))
  fig, ax = subplots(1, 1, (12, 2.4))
  ax.imshow(image_grid(path, 1, 16), cmap="gray", vmin=0, vmax=1)
  ax.set(xticks=[], yticks=[], title="VAE: 16 steps on the line from μ(3) to μ(8), decoded")
  return fig


@figure
def vae_tsne(runs, summary):
  from sklearn.manifold import TSNE

  epochs = FIGURE_CHOICES["tsne_epochs"] if not runs.quick else (0, 1, 2)
  num = FIGURE_CHOICES["tsne_points"] if not runs.quick else 300
  fig, axes = subplots(1, len(epochs), (5 * len(epochs), 4.6))
  for ax, epoch in zip(axes, epochs):
    # Epoch 0 is the initialisation, which every run shares.
    trained_epochs = epoch or min(e for e in epochs if e > 0)
    run = runs.get(f"vae_epoch_{trained_epochs}", "vae", **{"train.num_epochs": trained_epochs})
    params = run.init_params if epoch == 0 else run.params
    y = run.dataset.test["y"][:num]
    mu = np.asarray(run.model.encode(params, jnp.asarray(y)))
    embedded = TSNE(n_components=2, init="pca", random_state=0,
                    perplexity=min(30, num // 4)).fit_transform(mu)
    sc = ax.scatter(embedded[:, 0], embedded[:, 1], c=run.dataset.test["label"][:num], cmap="tab10",
                    s=4, vmin=-0.5, vmax=9.5)
    ax.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2",
           title=f"t-SNE of μ for {num} test images, epoch {epoch}")
  fig.colorbar(sc, ax=axes[-1], ticks=range(10), label="digit")
  return fig


@figure
def vae_kl_potential(runs, summary):
  del runs
  v = np.linspace(0.01, 5, 500)
  fig, ax = subplots(1, 1, (6, 4))
  ax.plot(v, v - np.log(v) - 1)
  ax.plot(1, 0, "o", c="C3", label="minimum 0 at v = 1")
  ax.set(xlabel="variance v", ylabel="V(v) = v − log v − 1", ylim=(0, 4),
         title="The variance part of KL(N(μ, v) ‖ N(0, 1)) = ½Σ(v − log v − 1 + μ²)")
  ax.legend()
  return fig


@figure
def vae_bubbles(runs, summary):
  run = runs.get("vae_2d", "vae", **{"model.latent_dim": 2})
  y = run.dataset.test["y"][:500]
  mu, logvar = (np.asarray(a) for a in run.model.extras["posterior"](run.params, jnp.asarray(y)))
  std = np.exp(0.5 * logvar)
  labels = run.dataset.test["label"][:500]
  fig, ax = subplots(1, 1, (7, 6))
  cmap = plt.get_cmap("tab10")
  for m, s, label in zip(mu, std, labels):
    ax.add_patch(EllipsePatch(m, 2 * s[0], 2 * s[1], color=cmap(label), alpha=0.25, lw=0))
  points = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
  fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
  ax.set(xlabel="z₁", ylabel="z₂", aspect="equal",
         title="VAE with d = 2: each test point's μ with a bubble of radius √v per axis")
  return fig
