"""§C and §D: the autoencoder, the denoising autoencoder (and the 2-D spiral DAE) and the
contractive autoencoder (08-3, Figs. 2-4)."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np


from energy_ae import data as data_lib
from experiments.figures.common import (Trained, figure, image_grid, show_rows, subplots, to_unit)

FIGURE_CHOICES = {
    "cae_lambdas": (0.0, 1.0, 5.0, 20.0),  # ‖J‖_F against λ (§D)
    "contraction_distances": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0),  # ‖ε‖ in [0, 1] pixel units
}



def _reconstruct(run: Trained, y_in):
  return np.asarray(run.model.reconstruct(run.params, jnp.asarray(y_in, jnp.float32)))


@figure
def ae_reconstructions(runs, summary):
  run = runs.get("ae")
  y = run.dataset.test["y"][:10]
  vr = run.dataset.value_range
  fig, ax = subplots(1, 1, (8, 2.6))
  show_rows(ax, [to_unit(y, vr), to_unit(_reconstruct(run, y), vr)], ["y", "ỹ"],
            f"Under-complete AE (d = {run.config.model.latent_dim}): test images and "
            f"reconstructions, shown as ½(y + 1)")
  return fig


@figure
def dae_denoising(runs, summary):
  run = runs.get("dae")
  y = run.dataset.test["y"][:10]
  vr = run.dataset.value_range
  corrupt = run.model.extras["corrupt"]
  keys = jax.random.split(jax.random.key(1), len(y))
  y_hat = np.asarray(corrupt(keys, jnp.asarray(y)))
  fig, ax = subplots(1, 1, (8, 3.4))
  show_rows(ax, [to_unit(y_hat, vr), to_unit(y, vr), to_unit(_reconstruct(run, y_hat), vr)],
            ["corrupted ŷ", "clean y", "denoised ỹ"],
            f"Over-complete DAE (d = {run.config.model.latent_dim}), "
            f"{run.config.model.corruption} corruption")
  return fig


@figure
def encoder_kernels(runs, summary):
  fig, axes = subplots(1, 2, (9, 5))
  for ax, name in zip(axes, ("ae", "dae")):
    run = runs.get(name)
    kernel = np.asarray(run.model.extras["encoder_kernel"](run.params))[:, :20].T
    scale = np.abs(kernel).max(axis=1, keepdims=True)
    ax.imshow(image_grid(0.5 + 0.5 * kernel / scale, 5, 4), cmap="gray", vmin=0, vmax=1)
    ax.set(xticks=[], yticks=[],
           title=f"{name.upper()}: first 20 encoder kernels (rows of W_h), 28 × 28")
  return fig


@figure
def spiral_dae_field(runs, summary):
  run = runs.get("spiral_dae")
  clean = run.dataset.test["y"][:300]
  corrupt = run.model.extras["corrupt"]
  keys = jax.random.split(jax.random.key(2), len(clean))
  noisy = np.asarray(corrupt(keys, jnp.asarray(clean)))
  g1, g2 = np.meshgrid(np.linspace(-1.5, 1.5, 31), np.linspace(-1.5, 1.5, 31))
  grid = np.stack([g1.ravel(), g2.ravel()], -1).astype(np.float32)
  moved = _reconstruct(run, grid) - grid
  length = np.linalg.norm(moved, axis=1)
  curve = data_lib.spiral_points(400, turns=run.config.data.turns)
  fig, (ax_d, ax_f) = subplots(1, 2, (12, 5.5))
  ax_d.plot(curve[:, 0], curve[:, 1], "k-", lw=1, label="spiral (data manifold)")
  ax_d.scatter(noisy[:, 0], noisy[:, 1], s=5, c="C1", label="noisy ŷ")
  ax_d.scatter(*_reconstruct(run, noisy).T, s=5, c="C0", label="DAE output ỹ")
  ax_d.set(xlabel="y₁", ylabel="y₂", aspect="equal", title="2-D DAE: noisy points mapped back")
  ax_d.legend(fontsize=7)
  q = ax_f.quiver(grid[:, 0], grid[:, 1], moved[:, 0], moved[:, 1], length, cmap="viridis",
                  angles="xy", scale_units="xy", scale=1, width=0.003, clim=(0, 1))
  ax_f.plot(curve[:, 0], curve[:, 1], "r-", lw=0.8)
  fig.colorbar(q, ax=ax_f, label="distance moved ‖ỹ − y‖")
  ax_f.set(xlabel="y₁", ylabel="y₂", aspect="equal", xlim=(-1.6, 1.6), ylim=(-1.6, 1.6),
           title="DAE field over a grid: arrows ỹ − y")
  return fig


# ----------------------------------------------------------------------------
# §D Contractive autoencoder
# ----------------------------------------------------------------------------


def _cae_runs(runs):
  lambdas = FIGURE_CHOICES["cae_lambdas"] if not runs.quick else (0.0, 5.0)
  return {lam: runs.get(f"cae_lambda_{lam:g}", "cae", **{"model.contractive_weight": lam})
          for lam in lambdas}


@figure
def cae_jacobian_vs_lambda(runs, summary):
  sweep = _cae_runs(runs)
  lams = list(sweep)
  jac = [sweep[lam].records()[-1]["jacobian_fro"] for lam in lams]
  rec = [sweep[lam].records()[-1]["reconstruction_error"] for lam in lams]
  fig, ax = subplots(1, 1, (7, 4))
  ax.plot(lams, jac, "o-", c="C0")
  ax.set(xlabel="λ (contractive weight)", ylabel="mean ‖∂h/∂y‖_F over test images", xscale="symlog",
         title="CAE: F = C + λ‖∂h/∂y‖²_F — Jacobian norm and reconstruction against λ")
  ax2 = ax.twinx()
  ax2.plot(lams, rec, "s--", c="C1")
  ax2.set_ylabel("test reconstruction error C", color="C1")
  return fig


def _encoder(run: Trained):
  """h = Enc(y) for one flat example, for Jacobians and perturbations."""
  shape = run.example_shape
  return lambda y: run.model.encode(run.params, y.reshape(1, *shape))[0]


def _encoders_for_comparison(runs):
  return {"AE": runs.get("ae"), "DAE": runs.get("dae"),
          "CAE": runs.get(f"cae_lambda_{5.0:g}", "cae", **{"model.contractive_weight": 5.0})}


@figure
def cae_contraction(runs, summary):
  fig, ax = subplots(1, 1, (7, 4))
  rng = np.random.default_rng(0)
  for name, run in _encoders_for_comparison(runs).items():
    encode = jax.jit(jax.vmap(_encoder(run)))
    y = run.dataset.test["y"][:200].reshape(200, -1)
    pixel_scale = run.dataset.value_range[1] - run.dataset.value_range[0]  # distances in [0, 1]
    ratios = []
    for d in FIGURE_CHOICES["contraction_distances"]:
      direction = rng.normal(size=y.shape)
      eps = d * direction / np.linalg.norm(direction, axis=1, keepdims=True)
      dh = np.asarray(encode(jnp.asarray(y + pixel_scale * eps, jnp.float32)) - encode(jnp.asarray(y)))
      ratios.append(np.mean(np.linalg.norm(dh, axis=1) / d))
    ax.plot(FIGURE_CHOICES["contraction_distances"], ratios, "o-", label=name)
  ax.set(xlabel="distance ‖ε‖ from test points (pixels in [0, 1])", xscale="log", yscale="log",
         ylabel="contraction ratio ‖h(y + ε) − h(y)‖ / ‖ε‖",
         title="Contraction ratio against the distance from test points")
  ax.legend(loc="lower left")
  return fig


@figure
def cae_singular_values(runs, summary):
  fig, ax = subplots(1, 1, (7, 4))
  comparison = _encoders_for_comparison(runs)
  comparison["CAE λ = 0"] = runs.get("cae_lambda_0", "cae", **{"model.contractive_weight": 0.0})
  for name, run in comparison.items():
    encode = _encoder(run)
    y = jnp.asarray(run.dataset.test["y"][:100].reshape(100, -1))
    jac = jax.vmap(jax.jacfwd(encode))(y)  # (100, d_h, 784)
    s = np.asarray(jnp.linalg.svd(jac, compute_uv=False)).mean(0)
    ax.plot(np.arange(1, len(s) + 1), s, label=f"{name} (d = {len(s)})")
  ax.set(xlabel="rank k", ylabel="k-th singular value of ∂h/∂y (mean over test images)",
         xscale="log", yscale="log", title="Singular-value spectrum of the encoder Jacobian J")
  ax.legend()
  return fig
