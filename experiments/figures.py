r"""Reproduces the lecture's figures (``../shared/reference/figures.md``) on the embedded data.

  python -m experiments.figures --workdir=runs/figures [--only=ellipse_manifold ...] [--quick]
  make figures

Trains what each figure needs with the experiment configs (or reuses the finished runs
in ``WORKDIR/runs/<name>``: a run resumes from its checkpoint and stops at once when it
is complete), then writes one PNG per figure to ``WORKDIR/figures/<figure>.png``.
``--quick`` trains for a few steps only: every figure in a few minutes, not faithful.
Choices the lecture leaves open live in the experiment configs and in ``FIGURE_CHOICES``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import math
import os
import time
from collections.abc import Callable

from absl import app, flags

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse as EllipsePatch  # noqa: E402

from energy_ae import checkpoints, data as data_lib, energies, inference, models, train  # noqa: E402
from energy_ae.metrics_io import read_metrics  # noqa: E402
from energy_ae.models import ellipse as ellipse_model, target_prop, vae as vae_model  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/figures", "Runs under WORKDIR/runs, PNGs under WORKDIR/figures.")
flags.DEFINE_multi_string("only", None, "Make only these figures (repeatable); default: all.")
flags.DEFINE_bool("quick", False, "Train for a few steps only (smoke test of every figure).")

# Choices the lecture leaves open (figures.md); the models' own live in experiments/*.py.
FIGURE_CHOICES = {
    "betas": (0.1, 0.3, 1.0, 3.2, 10.0, math.inf),  # F_β cross-sections (§A.7)
    "softmin_beta": 1.0,  # §A.6 and §A.8
    "ellipse_curve_samples": (10, 23),  # §A.3
    "cae_lambdas": (0.0, 1.0, 5.0, 20.0),  # ‖J‖_F against λ (§D)
    "tsne_epochs": (0, 5, 10),  # §E
    "tsne_points": 1000,
    "contraction_distances": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0),  # ‖ε‖ in [0, 1] pixel units
}


# ----------------------------------------------------------------------------
# Trained models
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Trained:
  config: object
  model: models.Model
  params: object
  init_params: object
  dataset: data_lib.Dataset
  workdir: str

  @property
  def example_shape(self):
    return self.dataset.train["y"].shape[1:]

  def records(self, split="test"):
    return [r for r in read_metrics(os.path.join(self.workdir, "metrics.jsonl"))
            if r["split"] == split]


def experiment_config(name: str, quick: bool, **overrides):
  config = importlib.import_module(f"experiments.{name}").get_config("quick" if quick else None)
  config.train.progress = False
  config.train.linear_probe = False  # no figure needs it
  if quick:  # evaluate and save once at the end; only the training curves need more
    config.train.eval_every = config.train.checkpoint_every = 10**9
    config.train.eval_at_start = name == "target_prop"
    if name == "target_prop":
      config.train.eval_every = 10
  for dotted, value in overrides.items():
    node = config
    *path, last = dotted.split(".")
    for key in path:
      node = node[key]
    node[last] = value
  return config


def trained(config, workdir: str) -> Trained:
  """Trains ``config`` in ``workdir`` (resuming any checkpoint) and returns its parameters."""
  os.makedirs(workdir, exist_ok=True)
  train.train_and_evaluate(config, workdir)
  model, initial, latest, dataset = train.restore_run(config, workdir)
  return Trained(config, model, latest["params"], initial["params"], dataset, workdir)


class Runs:
  """Trains each named run once per invocation; figures share them."""

  def __init__(self, workdir: str, quick: bool):
    self.workdir, self.quick = workdir, quick

  @functools.cache  # noqa: B019 (one Runs per process)
  def get(self, name: str, experiment: str | None = None, **overrides) -> Trained:
    config = experiment_config(experiment or name, self.quick, **overrides)
    return trained(config, os.path.join(self.workdir, "runs", name))


# ----------------------------------------------------------------------------
# Plot helpers
# ----------------------------------------------------------------------------


def image_grid(images: np.ndarray, rows: int, cols: int, shape=(28, 28)) -> np.ndarray:
  """(rows·cols, H·W) images → one (rows·H, cols·W) mosaic."""
  h, w = shape
  images = np.asarray(images)[: rows * cols].reshape(-1, h, w)
  images = np.concatenate([images, np.zeros((rows * cols - len(images), h, w))])
  return images.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def show_rows(ax, rows: list[np.ndarray], labels: list[str], title: str, shape=(28, 28)):
  mosaic = np.concatenate([image_grid(r, 1, len(r), shape) for r in rows])
  ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1)
  ax.set_yticks([(i + 0.5) * shape[0] for i in range(len(rows))], labels)
  ax.set_xticks([])
  ax.set_title(title)


def to_unit(y: np.ndarray, value_range) -> np.ndarray:
  low, high = value_range
  return np.clip((np.asarray(y) - low) / (high - low), 0, 1)


# ----------------------------------------------------------------------------
# §A Ellipse
# ----------------------------------------------------------------------------


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


def fig_ellipse_manifold(runs, ax_factory):
  run, y, w0, w1 = _ellipse(runs)
  fig, ax = ax_factory(1, 1, (6, 4))
  ax.scatter(y[:, 0], y[:, 1], c="C0", s=18, label="training samples y")
  for w, style, name in ((w0, "--", "untrained"), (w1, "-", "trained")):
    m = _manifold(w)
    ax.plot(m[:, 0], m[:, 1], style, c="C3" if name == "trained" else "gray",
            label=f"{name} g(z), w = ({float(w[0]):.2f}, {float(w[1]):.2f})")
  ax.set(xlim=(-2.5, 2.5), ylim=(-1.5, 1.5), xlabel="y₁", ylabel="y₂", aspect="equal",
         title="Samples y and the manifold g(z) = [w₁ cos z, w₂ sin z]")
  ax.legend(fontsize=7, loc="upper right")
  return fig


def fig_ellipse_energy_curves(runs, ax_factory):
  run, y, _, w = _ellipse(runs)
  z = np.linspace(0, 2 * np.pi, 500)[:, None]
  e = np.asarray(jax.vmap(lambda zi: _ellipse_energy(w, jnp.asarray(y), zi))(jnp.asarray(z)))
  z_check = _z_check_fine(w, jnp.asarray(y))
  fig, ax = ax_factory(1, 1, (7, 4))
  colors = plt.cm.viridis(np.linspace(0, 1, len(y)))
  for i in range(len(y)):
    ax.plot(z[:, 0], e[:, i], c=colors[i], lw=1)
    ax.plot(z_check[i], float(_ellipse_energy(w, jnp.asarray(y[i]), jnp.asarray([z_check[i]]))),
            "o", c=colors[i], ms=7, mec="k", clip_on=False, zorder=3)
  ax.set(xlim=(0, 2 * np.pi), ylim=(0, 12), xlabel="z", ylabel="E(yᵢ, z)",
         title="The 24 energy curves Eᵢ(z) of the trained model, each with its ž (dots)")
  return fig


def fig_ellipse_inference(runs, ax_factory):
  run, y, _, w = _ellipse(runs)
  fig, (ax_e, ax_y) = ax_factory(1, 2, (11, 4))
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


def fig_ellipse_free_energy_field(runs, ax_factory):
  run, y, _, w = _ellipse(runs)
  y1, y2, points = _mesh(-3, 3, -2, 2)  # 25 × 17
  g = _free_energy_grad(run, run.params, points, math.inf)
  fine1, fine2, fine = _mesh(-3, 3, -2, 2, 0.05)
  f_fine = _free_energy(run, run.params, fine, math.inf).reshape(fine1.shape)
  fig, ax = ax_factory(1, 1, (7, 4.5))
  im = ax.pcolormesh(fine1, fine2, np.minimum(f_fine, 2.0), cmap="viridis", shading="auto")
  ax.quiver(y1, y2, -g[:, 0].reshape(y1.shape), -g[:, 1].reshape(y1.shape), color="w",
            angles="xy", scale_units="xy", scale=8, width=0.003)
  ax.scatter(y[:, 0], y[:, 1], c="C3", s=10)
  fig.colorbar(im, ax=ax, label="F∞(y), clipped at 2")
  ax.set(xlabel="y₁", ylabel="y₂", aspect="equal", title="F∞(y) with arrows −∇_y F∞ (trained)")
  return fig


def fig_ellipse_free_energy_surface(runs, ax_factory):
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


def fig_ellipse_softmin_weights(runs, ax_factory):
  run, y, _, w = _ellipse(runs)
  beta = FIGURE_CHOICES["softmin_beta"]
  z = np.asarray(ellipse_model.latent_grid(run.config.model.num_latent_points))
  g = np.asarray(ellipse_model.decode(jnp.asarray(w), jnp.asarray(z)))
  fig, axes = ax_factory(1, 3, (13, 3.6))
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


def fig_ellipse_softmin_sections(runs, ax_factory):
  run, _, _, _ = _ellipse(runs)
  section = np.stack([np.zeros(17), np.arange(-2, 2 + 1e-9, 0.25)], -1).astype(np.float32)
  fig, axes = ax_factory(1, 2, (11, 4))
  for ax, (params, name) in zip(axes, ((run.init_params, "untrained"), (run.params, "trained"))):
    for beta in FIGURE_CHOICES["betas"]:
      ax.plot(section[:, 1], _free_energy(run, params, section, beta), marker=".",
              label="β = ∞ (F∞)" if math.isinf(beta) else f"β = {beta:g}")
    ax.set(xlabel="y₂", ylabel="F_β(0, y₂)", title=f"Cross-sections of F_β at y₁ = 0, {name}")
    ax.legend(fontsize=7)
  return fig


def fig_ellipse_temperature_panel(runs, ax_factory):
  run, y, _, _ = _ellipse(runs)
  beta = FIGURE_CHOICES["softmin_beta"]
  y1, y2, points = _mesh(-3, 3, -2, 2, 0.05)
  z = np.asarray(ellipse_model.latent_grid(run.config.model.num_latent_points))
  fig, axes = ax_factory(2, 2, (11, 7))
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


# ----------------------------------------------------------------------------
# §B Target propagation
# ----------------------------------------------------------------------------


def fig_target_prop_energies(runs, ax_factory):
  run = runs.get("target_prop")
  records = run.records()
  steps = [r["step"] for r in records]
  fig, ax = ax_factory(1, 1, (7, 4))
  ax.plot(steps, [r["energy_encoder"] for r in records], "o-", label="E(y, z̃): encoder's guess")
  ax.plot(steps, [r["energy_inferred"] for r in records], "s-", label="E(y, ž): after inference")
  ax.set(xlabel="training step", ylabel="mean test energy E = C + R", yscale="log",
         title="Target propagation: the amortisation gap E(y, z̃) − E(y, ž) over training")
  ax.legend()
  return fig


def fig_target_prop_reconstructions(runs, ax_factory):
  run = runs.get("target_prop")
  nets = target_prop.build(run.config, run.example_shape)
  y = jnp.asarray(run.dataset.test["y"][:10])
  _, z_tilde, z_check, _ = target_prop.infer(nets, run.params, y)
  decode = lambda z: np.asarray(nets.decoder.apply(run.params["decoder"], z))
  fig, ax = ax_factory(1, 1, (8, 3.4))
  show_rows(ax, [np.asarray(y), decode(z_tilde), decode(z_check)],
            ["y", "Dec(z̃)", "Dec(ž)"], "Target propagation: reconstructions from z̃ and from ž")
  return fig


# ----------------------------------------------------------------------------
# §C Autoencoders and the denoising autoencoder
# ----------------------------------------------------------------------------


def _reconstruct(run: Trained, y_in):
  from energy_ae.models import _autoencoder

  net = _autoencoder.build(run.config, run.example_shape)
  return np.asarray(net.apply(run.params, jnp.asarray(y_in)))


def fig_ae_reconstructions(runs, ax_factory):
  run = runs.get("ae")
  y = run.dataset.test["y"][:10]
  vr = run.dataset.value_range
  fig, ax = ax_factory(1, 1, (8, 2.6))
  show_rows(ax, [to_unit(y, vr), to_unit(_reconstruct(run, y), vr)], ["y", "ỹ"],
            f"Under-complete AE (d = {run.config.model.latent_dim}): test images and "
            f"reconstructions, shown as ½(y + 1)")
  return fig


def fig_dae_denoising(runs, ax_factory):
  from energy_ae import corruptions, keys as keys_lib

  run = runs.get("dae")
  y = run.dataset.test["y"][:10]
  vr = run.dataset.value_range
  corrupt = corruptions.from_config(run.config.model, vr)
  keys = keys_lib.per_example_keys(jax.random.key(1), jnp.arange(len(y)))
  y_hat = np.asarray(corrupt(keys, jnp.asarray(y)))
  fig, ax = ax_factory(1, 1, (8, 3.4))
  show_rows(ax, [to_unit(y_hat, vr), to_unit(y, vr), to_unit(_reconstruct(run, y_hat), vr)],
            ["corrupted ŷ", "clean y", "denoised ỹ"],
            f"Over-complete DAE (d = {run.config.model.latent_dim}), "
            f"{run.config.model.corruption} corruption")
  return fig


def fig_encoder_kernels(runs, ax_factory):
  fig, axes = ax_factory(1, 2, (9, 5))
  for ax, name in zip(axes, ("ae", "dae")):
    run = runs.get(name)
    kernel = np.asarray(run.params["params"]["encoder"]["dense_0"]["kernel"])[:, :20].T
    scale = np.abs(kernel).max(axis=1, keepdims=True)
    ax.imshow(image_grid(0.5 + 0.5 * kernel / scale, 5, 4), cmap="gray", vmin=0, vmax=1)
    ax.set(xticks=[], yticks=[],
           title=f"{name.upper()}: first 20 encoder kernels (rows of W_h), 28 × 28")
  return fig


def fig_spiral_dae_field(runs, ax_factory):
  from energy_ae import corruptions, keys as keys_lib

  run = runs.get("spiral_dae")
  clean = run.dataset.test["y"][:300]
  corrupt = corruptions.from_config(run.config.model, run.dataset.value_range)
  keys = keys_lib.per_example_keys(jax.random.key(2), jnp.arange(len(clean)))
  noisy = np.asarray(corrupt(keys, jnp.asarray(clean)))
  g1, g2 = np.meshgrid(np.linspace(-1.5, 1.5, 31), np.linspace(-1.5, 1.5, 31))
  grid = np.stack([g1.ravel(), g2.ravel()], -1).astype(np.float32)
  moved = _reconstruct(run, grid) - grid
  length = np.linalg.norm(moved, axis=1)
  curve = data_lib.spiral_points(400, turns=run.config.data.turns)
  fig, (ax_d, ax_f) = ax_factory(1, 2, (12, 5.5))
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


def fig_cae_jacobian_vs_lambda(runs, ax_factory):
  sweep = _cae_runs(runs)
  lams = list(sweep)
  jac = [sweep[lam].records()[-1]["jacobian_fro"] for lam in lams]
  rec = [sweep[lam].records()[-1]["reconstruction_error"] for lam in lams]
  fig, ax = ax_factory(1, 1, (7, 4))
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


def fig_cae_contraction(runs, ax_factory):
  fig, ax = ax_factory(1, 1, (7, 4))
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


def fig_cae_singular_values(runs, ax_factory):
  fig, ax = ax_factory(1, 1, (7, 4))
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


# ----------------------------------------------------------------------------
# §E Variational autoencoder
# ----------------------------------------------------------------------------


def fig_vae_reconstructions(runs, ax_factory):
  run = runs.get("vae")
  net = vae_model.build(run.config, run.example_shape)
  y = run.dataset.test["y"][:10]
  out = np.asarray(jax.nn.sigmoid(net.apply(run.params, jnp.asarray(y))))  # decoded z = μ
  fig, ax = ax_factory(1, 1, (8, 2.6))
  show_rows(ax, [y, out], ["y", "ỹ = Dec(μ)"], "VAE: test images and reconstructions (z = μ)")
  return fig


def fig_vae_samples(runs, ax_factory):
  run = runs.get("vae")
  samples = np.asarray(vae_model.sample(run.params, run.config, run.example_shape,
                                        jax.random.key(3), 16))
  fig, ax = ax_factory(1, 1, (5, 5))
  ax.imshow(image_grid(samples, 4, 4), cmap="gray", vmin=0, vmax=1)
  ax.set(xticks=[], yticks=[], title="VAE: 16 samples Dec(z), z ~ N(0, I)")
  return fig


def fig_vae_interpolation(runs, ax_factory):
  run = runs.get("vae")
  test = run.dataset.test
  a = test["y"][np.flatnonzero(test["label"] == 3)[0]]
  b = test["y"][np.flatnonzero(test["label"] == 8)[0]]
  path = np.asarray(vae_model.interpolate(run.params, run.config, run.example_shape,
                                          jnp.asarray(a), jnp.asarray(b), 16))
  fig, ax = ax_factory(1, 1, (12, 2.4))
  ax.imshow(image_grid(path, 1, 16), cmap="gray", vmin=0, vmax=1)
  ax.set(xticks=[], yticks=[], title="VAE: 16 steps on the line from μ(3) to μ(8), decoded")
  return fig


def fig_vae_tsne(runs, ax_factory):
  from sklearn.manifold import TSNE

  epochs = FIGURE_CHOICES["tsne_epochs"] if not runs.quick else (0, 1, 2)
  num = FIGURE_CHOICES["tsne_points"] if not runs.quick else 300
  fig, axes = ax_factory(1, len(epochs), (5 * len(epochs), 4.6))
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


def fig_vae_kl_potential(runs, ax_factory):
  del runs
  v = np.linspace(0.01, 5, 500)
  fig, ax = ax_factory(1, 1, (6, 4))
  ax.plot(v, v - np.log(v) - 1)
  ax.plot(1, 0, "o", c="C3", label="minimum 0 at v = 1")
  ax.set(xlabel="variance v", ylabel="V(v) = v − log v − 1", ylim=(0, 4),
         title="The variance part of KL(N(μ, v) ‖ N(0, 1)) = ½Σ(v − log v − 1 + μ²)")
  ax.legend()
  return fig


def fig_vae_bubbles(runs, ax_factory):
  run = runs.get("vae_2d", "vae", **{"model.latent_dim": 2})
  net = vae_model.build(run.config, run.example_shape)
  y = run.dataset.test["y"][:500]
  mu, logvar = (np.asarray(a) for a in net.apply(run.params, jnp.asarray(y),
                                                  method=vae_model.VAE.encode))
  std = np.exp(0.5 * logvar)
  labels = run.dataset.test["label"][:500]
  fig, ax = ax_factory(1, 1, (7, 6))
  cmap = plt.get_cmap("tab10")
  for m, s, label in zip(mu, std, labels):
    ax.add_patch(EllipsePatch(m, 2 * s[0], 2 * s[1], color=cmap(label), alpha=0.25, lw=0))
  points = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
  fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
  ax.set(xlabel="z₁", ylabel="z₂", aspect="equal",
         title="VAE with d = 2: each test point's μ with a bubble of radius √v per axis")
  return fig


# ----------------------------------------------------------------------------

FIGURES: dict[str, Callable] = {
    name[len("fig_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("fig_")
}


def _ax_factory(rows, cols, size):
  return plt.subplots(rows, cols, figsize=size)


def make_figures(workdir: str, names: list[str] | None = None, *, quick: bool = False) -> list[str]:
  """Writes WORKDIR/figures/<name>.png for each figure; returns the paths."""
  unknown = sorted(set(names or []) - set(FIGURES))
  if unknown:
    raise ValueError(f"unknown figure(s) {unknown}; valid names: {', '.join(FIGURES)}")
  runs = Runs(workdir, quick)
  out_dir = os.path.join(workdir, "figures")
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name in names or list(FIGURES):
    start = time.perf_counter()
    fig = FIGURES[name](runs, _ax_factory)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{name}.png")
    if jax.process_index() == 0:  # several processes train together; one writes
      fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    logging.info("Wrote %s (%.1f s)", path, time.perf_counter() - start)
  return paths


def main(argv):
  checkpoints.quiet_orbax_logging()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  paths = make_figures(FLAGS.workdir, FLAGS.only, quick=FLAGS.quick)
  print(f"wrote {len(paths)} figures to {os.path.join(FLAGS.workdir, 'figures')}")


if __name__ == "__main__":
  app.run(main)
