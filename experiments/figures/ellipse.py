"""§A: the ellipse latent-variable energy model (weeks 7, 8 and 15, 08-3 recap)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

import matplotlib.pyplot as plt

from energy_ae import energies, inference, models
from energy_ae.models import ellipse as ellipse_model
from experiments.figures.common import Trained, figure, subplots

# Choices the lecture leaves open (figures.md §A).
FIGURE_CHOICES = {
    "betas": (0.1, 0.3, 1.0, 3.2, 10.0, math.inf),  # F_β cross-sections (§A.7)
    "softmin_beta": 1.0,  # §A.6 and §A.8
    "ellipse_curve_samples": (10, 23),  # §A.3
}



def _ellipse_energy(w, y, z):
  """E(y, z) = ‖y − g(z)‖² for y (..., 2) and z (..., 1), broadcast."""
  y, g = jnp.asarray(y), ellipse_model.decode(jnp.asarray(w), jnp.asarray(z))
  shape = jnp.broadcast_shapes(y.shape, g.shape)
  return energies.squared_error(jnp.broadcast_to(y, shape), jnp.broadcast_to(g, shape))


def _z_check_fine(w, y, num=4000):
  """ž on a fine grid (the figures' reference; the model itself uses 48 points + descent)."""
  z = np.linspace(0, 2 * np.pi, num, endpoint=False)[:, None]
  e = np.asarray(jax.vmap(lambda zi: _ellipse_energy(w, y, zi))(jnp.asarray(z)))  # (num, B)
  return z[np.argmin(e, axis=0), 0]


def _ellipse_at(run: Trained, beta: float) -> models.Model:
  """The run's ellipse model with F = F_β (β = inf: F∞)."""
  config = run.config.copy_and_resolve_references()
  config.model.beta = beta
  return models.make(config, (2,))


def _free_energy(run: Trained, params, y, beta: float) -> np.ndarray:
  model = _ellipse_at(run, beta)
  return np.asarray(model.evaluate(params, {"y": jnp.asarray(y)}, None)["free_energy"])


def _free_energy_grad(run: Trained, params, y, beta: float) -> np.ndarray:
  """∇_y F(y) at each point of y."""
  model = _ellipse_at(run, beta)
  total = lambda y: jnp.sum(model.evaluate(params, {"y": y}, None)["free_energy"])
  return np.asarray(jax.grad(total)(jnp.asarray(y, jnp.float32)))


def _manifold(w, num=400):
  z = np.linspace(0, 2 * np.pi, num)[:, None]
  return np.asarray(ellipse_model.decode(jnp.asarray(w), jnp.asarray(z)))


def _ellipse(runs):
  run = runs.get("ellipse")
  return run, run.dataset.train["y"], run.init_params["w"], run.params["w"]


@figure
def ellipse_manifold(runs, summary):
  run, y, w0, w1 = _ellipse(runs)
  fig, ax = subplots(1, 1, (6, 4))
  ax.scatter(y[:, 0], y[:, 1], c="C0", s=18, label="training samples y")
  for w, style, name in ((w0, "--", "untrained"), (w1, "-", "trained")):
    m = _manifold(w)
    ax.plot(m[:, 0], m[:, 1], style, c="C3" if name == "trained" else "gray",
            label=f"{name} g(z), w = ({float(w[0]):.2f}, {float(w[1]):.2f})")
  ax.set(xlim=(-2.5, 2.5), ylim=(-1.5, 1.5), xlabel="y₁", ylabel="y₂", aspect="equal",
         title="Samples y and the manifold g(z) = [w₁ cos z, w₂ sin z]")
  ax.legend(fontsize=7, loc="upper right")
  return fig


@figure
def ellipse_energy_curves(runs, summary):
  run, y, _, w = _ellipse(runs)
  z = np.linspace(0, 2 * np.pi, 500)[:, None]
  e = np.asarray(jax.vmap(lambda zi: _ellipse_energy(w, jnp.asarray(y), zi))(jnp.asarray(z)))
  z_check = _z_check_fine(w, jnp.asarray(y))
  fig, ax = subplots(1, 1, (7, 4))
  colors = plt.cm.viridis(np.linspace(0, 1, len(y)))
  for i in range(len(y)):
    ax.plot(z[:, 0], e[:, i], c=colors[i], lw=1)
    ax.plot(z_check[i], float(_ellipse_energy(w, jnp.asarray(y[i]), jnp.asarray([z_check[i]]))),
            "o", c=colors[i], ms=7, mec="k", clip_on=False, zorder=3)
  ax.set(xlim=(0, 2 * np.pi), ylim=(0, 12), xlabel="z", ylabel="E(yᵢ, z)",
         title="The 24 energy curves Eᵢ(z) of the trained model, each with its ž (dots)")
  return fig


@figure
def ellipse_inference(runs, summary):
  run, y, _, w = _ellipse(runs)
  fig, (ax_e, ax_y) = subplots(1, 2, (11, 4))
  z = np.linspace(0, 6 * np.pi, 900)[:, None]
  m = _manifold(w)
  ax_y.plot(m[:, 0], m[:, 1], c="gray", lw=1, label="g(z)")
  for n, i in enumerate(FIGURE_CHOICES["ellipse_curve_samples"]):
    yi = jnp.asarray(y[i])
    e = np.asarray(jax.vmap(lambda zi, yi=yi: _ellipse_energy(w, yi, zi))(jnp.asarray(z)))
    z_tilde = jnp.asarray([2.0 * np.pi + 1.0 + 2.5 * n])  # an initial guess in the 2nd period
    result = inference.argmin(lambda zz, yi=yi: _ellipse_energy(w, yi, zz), z_tilde,
                              num_steps=100, learning_rate=0.05)
    z_check = float(result.z[0])
    ax_e.plot(z[:, 0], e, c=f"C{n}", label=f"E(y[{i}], z)")
    for value, marker, name in ((float(z_tilde[0]), "s", "z̃"), (z_check, "*", "ž")):
      ax_e.plot(value, float(_ellipse_energy(w, yi, jnp.asarray([value]))), marker, c=f"C{n}",
                ms=10, mec="k", label=f"{name} (y[{i}])")
      g = np.asarray(ellipse_model.decode(jnp.asarray(w), jnp.asarray([value])))
      ax_y.plot(*g, marker, c=f"C{n}", ms=10, mec="k", label=f"g({name}), y[{i}]")
    ax_y.plot(*y[i], "o", c=f"C{n}", ms=7, label=f"y[{i}]")
  ax_e.set(xlabel="z (three periods)", ylabel="E(y, z)",
           title="Inference: gradient descent from z̃ to ž")
  ax_e.legend(fontsize=7)
  ax_y.set(xlabel="y₁", ylabel="y₂", aspect="equal", title="y, g(z̃) and g(ž) in y-space")
  ax_y.legend(fontsize=7, loc="upper right")
  return fig


def _mesh(low1, high1, low2, high2, step=0.25):
  y1, y2 = np.meshgrid(np.arange(low1, high1 + 1e-9, step), np.arange(low2, high2 + 1e-9, step))
  return y1, y2, np.stack([y1.ravel(), y2.ravel()], -1).astype(np.float32)


@figure
def ellipse_free_energy_field(runs, summary):
  run, y, _, w = _ellipse(runs)
  y1, y2, points = _mesh(-3, 3, -2, 2)  # 25 × 17
  g = _free_energy_grad(run, run.params, points, math.inf)
  fine1, fine2, fine = _mesh(-3, 3, -2, 2, 0.05)
  f_fine = _free_energy(run, run.params, fine, math.inf).reshape(fine1.shape)
  fig, ax = subplots(1, 1, (7, 4.5))
  im = ax.pcolormesh(fine1, fine2, np.minimum(f_fine, 2.0), cmap="viridis", shading="auto")
  ax.quiver(y1, y2, -g[:, 0].reshape(y1.shape), -g[:, 1].reshape(y1.shape), color="w",
            angles="xy", scale_units="xy", scale=8, width=0.003)
  ax.scatter(y[:, 0], y[:, 1], c="C3", s=10)
  fig.colorbar(im, ax=ax, label="F∞(y), clipped at 2")
  ax.set(xlabel="y₁", ylabel="y₂", aspect="equal", title="F∞(y) with arrows −∇_y F∞ (trained)")
  return fig


@figure
def ellipse_free_energy_surface(runs, summary):
  run, _, _, w = _ellipse(runs)
  y1, y2, points = _mesh(-1.5, 1.5, -1.5, 1.5, 0.05)
  f = _free_energy(run, run.params, points, math.inf).reshape(y1.shape)
  fig = plt.figure(figsize=(11, 4.5))
  ax3 = fig.add_subplot(1, 2, 1, projection="3d")
  ax3.plot_surface(y1, y2, f, cmap="viridis", linewidth=0)
  ax3.set(xlabel="y₁", ylabel="y₂", zlabel="F∞(y)", title="F∞ over y ∈ [−1.5, 1.5]²")
  ax = fig.add_subplot(1, 2, 2)
  section = np.stack([np.zeros(121), np.linspace(-1.5, 1.5, 121)], -1).astype(np.float32)
  ax.plot(section[:, 1], _free_energy(run, run.params, section, math.inf))
  ax.set(xlabel="y₂", ylabel="F∞(0, y₂)", title="Cross-section at y₁ = 0")
  return fig


@figure
def ellipse_softmin_weights(runs, summary):
  run, y, _, w = _ellipse(runs)
  beta = FIGURE_CHOICES["softmin_beta"]
  z = np.asarray(ellipse_model.latent_grid(run.config.model.num_latent_points))
  g = np.asarray(ellipse_model.decode(jnp.asarray(w), jnp.asarray(z)))
  fig, axes = subplots(1, 3, (13, 3.6))
  targets = [("Y[23]", y[23]), ("Y[10]", y[10]), ("(0, 0)", np.zeros(2, np.float32))]
  for ax, (name, target) in zip(axes, targets):
    e = np.asarray(_ellipse_energy(w, jnp.asarray(target), jnp.asarray(z)))
    weights = np.exp(-beta * e)
    sc = ax.scatter(g[:, 0], g[:, 1], c=weights, cmap="viridis", s=30)
    ax.plot(*target, "r*", ms=12, label=f"y′ = {name}")
    fig.colorbar(sc, ax=ax, label=f"exp(−βE(y′, z)), β = {beta:g}")
    ax.set(xlabel="y₁", ylabel="y₂", aspect="equal", title=f"48 points g(z), y′ = {name}")
    ax.legend(fontsize=7, loc="lower right")
  return fig


@figure
def ellipse_softmin_sections(runs, summary):
  run, _, _, _ = _ellipse(runs)
  section = np.stack([np.zeros(17), np.arange(-2, 2 + 1e-9, 0.25)], -1).astype(np.float32)
  fig, axes = subplots(1, 2, (11, 4))
  for ax, (params, name) in zip(axes, ((run.init_params, "untrained"), (run.params, "trained"))):
    for beta in FIGURE_CHOICES["betas"]:
      ax.plot(section[:, 1], _free_energy(run, params, section, beta), marker=".",
              label="β = ∞ (F∞)" if math.isinf(beta) else f"β = {beta:g}")
    ax.set(xlabel="y₂", ylabel="F_β(0, y₂)", title=f"Cross-sections of F_β at y₁ = 0, {name}")
    ax.legend(fontsize=7)
  return fig


@figure
def ellipse_temperature_panel(runs, summary):
  run, y, _, _ = _ellipse(runs)
  beta = FIGURE_CHOICES["softmin_beta"]
  y1, y2, points = _mesh(-3, 3, -2, 2, 0.05)
  z = np.asarray(ellipse_model.latent_grid(run.config.model.num_latent_points))
  fig, axes = subplots(2, 2, (11, 7))
  for row, (params, name) in enumerate(((run.init_params, "untrained"), (run.params, "trained"))):
    w = params["w"]
    g = np.asarray(ellipse_model.decode(jnp.asarray(w), jnp.asarray(z)))  # (48, 2)
    e = np.asarray(jax.vmap(lambda zi, w=w: _ellipse_energy(w, jnp.asarray(y), zi))(
        jnp.asarray(z)))  # (48, 24)
    for col, b in enumerate((math.inf, beta)):
      ax = axes[row, col]
      f = _free_energy(run, params, points, b).reshape(y1.shape)
      im = ax.pcolormesh(y1, y2, f, cmap="viridis", shading="auto")
      fig.colorbar(im, ax=ax)
      if math.isinf(b):
        start = np.asarray(ellipse_model.decode(jnp.asarray(w),
                                                jnp.asarray(_z_check_fine(w, jnp.asarray(y)))[:, None]))
        label = "g(ž) → y"
      else:
        p = np.exp(-b * (e - e.min(0)))
        p /= p.sum(0)
        start = p.T @ g  # the β-weighted average of g(z)
        label = "⟨g(z)⟩_β → y"
      ax.quiver(start[:, 0], start[:, 1], y[:, 0] - start[:, 0], y[:, 1] - start[:, 1],
                angles="xy", scale_units="xy", scale=1, color="w", width=0.004)
      ax.scatter(y[:, 0], y[:, 1], c="C3", s=8)
      temp = "zero temperature, F∞" if math.isinf(b) else f"β = {b:g}, F_β"
      ax.set(xlabel="y₁", ylabel="y₂", aspect="equal", title=f"{name}: {temp}; arrows {label}")
  return fig
