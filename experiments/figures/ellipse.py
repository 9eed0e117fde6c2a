"""§A: the ellipse latent-variable energy model (weeks 7, 8 and 15, 08-3 recap), and its
conditional version, the "horn" (DLSP20 week 15).

E(y, z) = [y₁ − w₁ cos z]² + [y₂ − w₂ sin z]², F∞(y) = min_z E(y, z),
F_β(y) = −(1/β) log((1/|Z|) ∫ exp(−βE(y, z)) dz); horn: E(x, y, z) = Σᵢ [yᵢ − fᵢ(x) gᵢ(z)]².

Each figure records in ``summary`` the numbers that make it right; ``tests/
figure_facts_ellipse.py`` checks them against the lecture and closed forms.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from energy_ae import data as data_lib, models
from energy_ae.models import ellipse as ellipse_model
from experiments.figures.common import Trained, colorbar, figure, subplots

# Choices the lecture leaves open (figures.md §A).
FIGURE_CHOICES = {
    "betas": (0.1, 0.3, 1.0, 3.2, 10.0, math.inf),  # F_β cross-sections (§A.7)
    "softmin_beta": 1.0,  # §A.6 and §A.8
    "ellipse_curve_samples": (10, 23),  # §A.3
    # §A.3: z̃ of samples 10 and 23, chosen to descend over a period boundary of z.
    "z_tilde": (8.5, 2.0),
    "descent_lr": 0.03,  # plain gradient descent z ← z − η ∂E/∂z, slow enough to see the path
    "descent_steps": 300,
    "fine_grid": 4096,  # the reference ž: argmin over 4,096 points of [0, 2π[
    "horn_manifold_x": (0.0, 0.25, 0.5, 0.75, 1.0),
    "horn_free_energy_x": (0.0, 1.0),
}
DATA_RADII = (2.0, 1.5)  # y = [2 cos θ + ε₁, 1.5 sin θ + ε₂] (figures.md §A)
MODELS = ("untrained", "trained")

# mathtext's \check draws the caron before the z (matplotlib 3.11, every math font); the
# precomposed ž (U+017E) inside mathtext is the italic z with its caron above, like $\tilde z$.
Z_TILDE, Z_CHECK = r"$\tilde z$", "$ž$"
F_INF = r"$F_\infty$"


def _f_beta_label(beta: float) -> str:
  """The colour-bar label: F∞(y), or F_β(y) with β."""
  return r"$F_\infty(y)$" if math.isinf(beta) else rf"$F_\beta(y)$, $\beta$ = {beta:g}"


# ----------------------------------------------------------------------------
# The model through its public functions
# ----------------------------------------------------------------------------


def _ellipse(runs):
  run = runs.get("ellipse")
  return run, run.dataset.train["y"]


def _params(run: Trained, name: str):
  return run.init_params if name == "untrained" else run.params


def _w(run: Trained, name: str) -> np.ndarray:
  return np.asarray(_params(run, name)["w"], np.float64)


def _energy_fn(run: Trained, params, y):
  """z ↦ E(y, z) per example, for y of shape (B, 2) (the model's ``energy`` extra)."""
  return run.model.extras["energy"](params, jnp.asarray(y, jnp.float32).reshape(-1, 2))


def _curves(run: Trained, params, y, z) -> np.ndarray:
  """E(yᵢ, z_k) of shape (len(z), B)."""
  e = _energy_fn(run, params, y)
  return np.asarray(jax.vmap(lambda zk: e(zk[None]))(jnp.asarray(z, jnp.float32)))


def _z_check_fine(run: Trained, params, y) -> tuple[np.ndarray, np.ndarray]:
  """The reference ž = argmin over a fine grid of [0, 2π[, and E(y, ž) there."""
  z = np.linspace(0, 2 * np.pi, FIGURE_CHOICES["fine_grid"], endpoint=False)
  e = _curves(run, params, y, z)
  return z[np.argmin(e, 0)], e.min(0)


def _ellipse_at(run: Trained, beta: float) -> models.Model:
  """The run's ellipse model with F = F_β (β = inf: F∞)."""
  config = run.config.copy_and_resolve_references()
  config.model.beta = beta
  return models.make(config, (2,))


def _free_energy(run: Trained, params, y, beta: float) -> np.ndarray:
  model = _ellipse_at(run, beta)
  return np.asarray(model.extras["free_energy"](params, jnp.asarray(y, jnp.float32))[0])


def _free_energy_grad(run: Trained, params, y, beta: float) -> np.ndarray:
  """∇_y F(y) at each point of y."""
  model = _ellipse_at(run, beta)
  total = lambda y: jnp.sum(model.extras["free_energy"](params, y)[0])
  return np.asarray(jax.grad(total)(jnp.asarray(y, jnp.float32)))


def _manifold(w, num=400) -> np.ndarray:
  z = np.linspace(0, 2 * np.pi, num)[:, None]
  return np.asarray(ellipse_model.decode(jnp.asarray(w, jnp.float32), jnp.asarray(z, jnp.float32)))


def _grid_points(run: Trained, w) -> tuple[np.ndarray, np.ndarray]:
  z = np.asarray(ellipse_model.latent_grid(run.config.model.num_latent_points))
  return z, np.asarray(ellipse_model.decode(jnp.asarray(w, jnp.float32), jnp.asarray(z)))


def _circular(d):
  """The difference of two angles, in [−π, π[."""
  return (np.asarray(d) + np.pi) % (2 * np.pi) - np.pi


def _mesh(low1, high1, low2, high2, step=0.25):
  y1, y2 = np.meshgrid(np.arange(low1, high1 + 1e-9, step), np.arange(low2, high2 + 1e-9, step))
  return y1, y2, np.stack([y1.ravel(), y2.ravel()], -1).astype(np.float32)


def _softmin_closed_form_at_origin(w, beta: float) -> float:
  """F_β(0) in closed form: E(0, z) = w₁² cos² z + w₂² sin² z = m + c cos 2z with
  m = (w₁² + w₂²)/2, c = (w₁² − w₂²)/2, and (1/2π)∫ exp(−βc cos 2z) dz = I₀(βc), so
  F_β(0) = m − (1/β) log I₀(βc) (β → 0: m = ⟨E⟩_z; β → ∞: m − |c| = min(w₁², w₂²))."""
  from scipy.special import ive  # I₀(x) = ive(0, x)·e^{|x|}, without overflow

  m, c = (w[0] ** 2 + w[1] ** 2) / 2, abs(w[0] ** 2 - w[1] ** 2) / 2
  if math.isinf(beta):
    return m - c
  return m - (math.log(ive(0, beta * c)) + beta * c) / beta


def _section_closed_form(w, y2: np.ndarray) -> np.ndarray:
  """F∞(0, y₂) in closed form: ∂E/∂z = −2 cos z [(w₁² − w₂²) sin z + w₂ y₂] vanishes at
  z = ±π/2 (E = (y₂ ∓ w₂)²) or at sin z = −w₂y₂/(w₁² − w₂²) when that is in [−1, 1]
  (E = w₁²(1 − s²) + (y₂ − w₂ s)²); F∞ is the smallest of these stationary values."""
  a2, b = w[0] ** 2, w[1]
  candidates = [(y2 - b) ** 2, (y2 + b) ** 2]
  if a2 != b * b:
    s = -b * y2 / (a2 - b * b)
    inner = np.where(np.abs(s) <= 1, a2 * (1 - s**2) + (y2 - b * s) ** 2, np.inf)
    candidates.append(inner)
  return np.min(candidates, axis=0)


# ----------------------------------------------------------------------------
# §A.1 samples and manifold
# ----------------------------------------------------------------------------


@figure
def ellipse_manifold(runs, summary):
  run, y = _ellipse(runs)
  fig, ax = subplots(1, 1, (7.5, 3.6))
  ax.scatter(y[:, 0], y[:, 1], c="C0", s=18, label="training samples $y$", zorder=3)
  for name, style, colour in (("untrained", "--", "gray"), ("trained", "-", "C3")):
    w = _w(run, name)
    m = _manifold(w)
    ax.plot(m[:, 0], m[:, 1], style, c=colour,
            label=f"{name} $g(z)$, $w$ = ({w[0]:.2f}, {w[1]:.2f})")
  ax.set(xlim=(-2.5, 2.5), ylim=(-1.5, 1.5), xlabel="$y_1$", ylabel="$y_2$", aspect="equal",
         title=r"Samples $y$ and the manifold $g(z) = [w_1 \cos z,\ w_2 \sin z]$")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
  f = {name: _free_energy(run, _params(run, name), y, math.inf) for name in MODELS}
  summary.update(
      data_radii=list(DATA_RADII), noise=float(run.config.data.noise), num_train=len(y),
      w_untrained=_w(run, "untrained").tolist(), w_trained=_w(run, "trained").tolist(),
      abs_w_trained=np.abs(_w(run, "trained")).tolist(),
      mean_free_energy_untrained=float(f["untrained"].mean()),
      mean_free_energy_trained=float(f["trained"].mean()))
  return fig


# ----------------------------------------------------------------------------
# §A.2 the 24 energy curves
# ----------------------------------------------------------------------------


@figure
def ellipse_energy_curves(runs, summary):
  run, y = _ellipse(runs)
  z = np.linspace(0, 2 * np.pi, 500)
  fig, axes = subplots(1, 2, (12, 4), sharey=True)
  colours = plt.cm.viridis(np.linspace(0, 1, len(y)))
  for ax, name in zip(axes, MODELS):
    params = _params(run, name)
    e = _curves(run, params, y, z)
    # ž of the model itself: the 48-point grid refined by gradient descent (model.inference).
    f_model, z_model = run.model.extras["free_energy"](params, jnp.asarray(y))
    f_model, z_model = np.asarray(f_model), np.asarray(z_model)[:, 0] % (2 * np.pi)
    z_fine, e_fine = _z_check_fine(run, params, y)
    for i in range(len(y)):
      ax.plot(z, e[:, i], c=colours[i], lw=1)
      ax.plot(z_model[i], f_model[i], "o", c=colours[i], ms=6, mec="k", clip_on=False, zorder=3)
    w = _w(run, name)
    ax.set(xlim=(0, 2 * np.pi), ylim=(0, 12), xlabel="$z$",
           title=f"{name}, $w$ = ({w[0]:.2f}, {w[1]:.2f})")
    ax.set_xticks(np.arange(5) * np.pi / 2, ["0", r"$\pi/2$", r"$\pi$", r"$3\pi/2$", r"$2\pi$"])
    summary[name] = {
        "free_energy_min": float(f_model.min()), "free_energy_max": float(f_model.max()),
        "free_energy_mean": float(f_model.mean()),
        # The model's ž against the fine-grid argmin: in energy (ties between two minima
        # have equal energies but distant z) and in z.
        "max_energy_excess_over_fine_grid": float(np.max(f_model - e_fine)),
        "min_energy_excess_over_fine_grid": float(np.min(f_model - e_fine)),
        "max_z_gap_to_fine_grid": float(np.max(np.abs(_circular(z_model - z_fine)))),
        "curve_max": float(e.max()),
    }
  axes[0].set_ylabel(r"$E(y_i, z)$")
  fig.suptitle(rf"The 24 energy curves $E_i(z)$, each with its {Z_CHECK} (dots): "
               rf"$F_\infty(y_i) = E_i({Z_CHECK[1:-1]})$ is the squared distance to the manifold",
               y=1.0)
  summary["fine_grid_spacing"] = 2 * np.pi / FIGURE_CHOICES["fine_grid"]
  return fig


# ----------------------------------------------------------------------------
# §A.3 inference: gradient descent from z̃ to ž over three periods
# ----------------------------------------------------------------------------


def _descent_path(energy, z_tilde: float) -> tuple[np.ndarray, np.ndarray]:
  """z_{t+1} = z_t − η ∂E/∂z (z_t) from z₀ = z̃; returns (z_t, E(z_t)) for t = 0..T."""
  lr, steps = FIGURE_CHOICES["descent_lr"], FIGURE_CHOICES["descent_steps"]
  e = lambda z: energy(z)[0]
  grad = jax.grad(e)

  def step(z, _):
    z_next = z - lr * grad(z)
    return z_next, z_next

  z0 = jnp.asarray([z_tilde], jnp.float32)
  _, zs = jax.lax.scan(step, z0, None, length=steps)
  zs = jnp.concatenate([z0[None], zs])
  return np.asarray(zs[:, 0]), np.asarray(jax.vmap(e)(zs))


@figure
def ellipse_inference(runs, summary):
  run, y = _ellipse(runs)
  z = np.linspace(-5, 12.5, 1200)
  fig, axes = subplots(2, 2, (12.5, 7.6), gridspec_kw={"width_ratios": [1.5, 1]})
  samples = FIGURE_CHOICES["ellipse_curve_samples"]
  for row, name in enumerate(MODELS):
    params, w = _params(run, name), _w(run, name)
    ax_e, ax_y = axes[row]
    m = _manifold(w)
    ax_y.plot(m[:, 0], m[:, 1], c="gray", lw=1)
    z_fine, e_fine = _z_check_fine(run, params, y[list(samples)])
    summary[name] = {}
    for n, (i, z_tilde) in enumerate(zip(samples, FIGURE_CHOICES["z_tilde"])):
      c = f"C{n}"
      energy = _energy_fn(run, params, y[i])
      ax_e.plot(z, _curves(run, params, y[i], z)[:, 0], c=c, lw=1.2)
      zs, es = _descent_path(energy, z_tilde)
      ax_e.plot(zs, es, ".", c=c, mec="k", mew=0.3, ms=4, zorder=3)
      ax_e.plot(zs[0], es[0], "s", c=c, ms=9, mec="k", zorder=4)
      ax_e.plot(zs[-1], es[-1], "*", c=c, ms=14, mec="k", zorder=4)
      g = np.asarray(ellipse_model.decode(jnp.asarray(w, jnp.float32), jnp.asarray(zs)[:, None]))
      ax_y.plot(g[:, 0], g[:, 1], ".", c=c, mec="k", mew=0.3, ms=4, zorder=3)
      ax_y.plot(*g[0], "s", c=c, ms=9, mec="k", zorder=4)
      ax_y.plot(*g[-1], "*", c=c, ms=14, mec="k", zorder=4)
      ax_y.plot(*y[i], "o", c=c, ms=7, mec="k", zorder=4)
      ax_y.plot(*np.stack([y[i], g[-1]], 1), ":", c=c, lw=1.2)  # the distance √F∞
      summary[name][f"sample_{i}"] = {
          "z_tilde": float(zs[0]), "z_check": float(zs[-1]), "energy_z_tilde": float(es[0]),
          "energy_z_check": float(es[-1]),
          "z_check_mod_2pi_minus_fine_argmin": float(_circular(zs[-1] - z_fine[n])),
          "energy_z_check_minus_fine_min": float(es[-1] - e_fine[n]),
          # plain descent with a small rate: E never goes up along the path
          "max_energy_increase_along_path": float(np.max(np.diff(es))),
          "last_step": float(abs(zs[-1] - zs[-2])),
      }
    ax_e.set(xlim=(-5, 12.5), ylim=(0, 12), xlabel="$z$ (three periods)", ylabel="$E(y_i, z)$",
             title=rf"{name}: gradient descent from {Z_TILDE} (squares) to {Z_CHECK} (stars)")
    for k in range(-1, 3):
      ax_e.axvline(2 * np.pi * k, c="0.85", lw=0.8, zorder=0)
    ax_y.set(xlim=(-2.6, 2.6), ylim=(-1.7, 1.7), xlabel="$y_1$", ylabel="$y_2$", aspect="equal",
             title=rf"$y_i$, $g$({Z_TILDE}) and $g$({Z_CHECK}) in $y$-space")
    handles = [Line2D([], [], c=f"C{n}", marker="o", mec="k", label=f"sample {i}: $E_{{{i}}}$, "
                      f"$y_{{{i}}}$") for n, i in enumerate(samples)]
    handles += [Line2D([], [], ls="", marker="s", c="w", mec="k", ms=8, label=f"{Z_TILDE}, "
                       f"$g$({Z_TILDE})"),
                Line2D([], [], ls="", marker="*", c="w", mec="k", ms=12, label=f"{Z_CHECK}, "
                       f"$g$({Z_CHECK})"),
                Line2D([], [], ls="", marker=".", c="w", mec="k", ms=8,
                       label=r"descent path $z_{t+1} = z_t - \eta\, \partial E / \partial z$"),
                Line2D([], [], c="gray", label="manifold $g(z)$"),
                Line2D([], [], ls=":", c="k", label=r"distance $\sqrt{F_\infty}$")]
    ax_y.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                borderaxespad=0)
  summary["descent_lr"] = FIGURE_CHOICES["descent_lr"]
  summary["descent_steps"] = FIGURE_CHOICES["descent_steps"]
  summary["fine_grid_spacing"] = 2 * np.pi / FIGURE_CHOICES["fine_grid"]
  fig.tight_layout()
  return fig


# ----------------------------------------------------------------------------
# §A.4, §A.5 the zero-temperature free energy
# ----------------------------------------------------------------------------


@figure
def ellipse_free_energy_field(runs, summary):
  run, y = _ellipse(runs)
  w = _w(run, "trained")
  y1, y2, points = _mesh(-3, 3, -2, 2)  # 25 × 17
  f_mesh = _free_energy(run, run.params, points, math.inf)
  grad = _free_energy_grad(run, run.params, points, math.inf)
  fine1, fine2, fine = _mesh(-3, 3, -2, 2, 0.05)
  f_fine = _free_energy(run, run.params, fine, math.inf).reshape(fine1.shape)
  fig, ax = subplots(1, 1, (7.5, 4.6))
  im = ax.pcolormesh(fine1, fine2, np.minimum(f_fine, 2.0), cmap="viridis", shading="auto",
                     vmin=0, vmax=2)
  ax.quiver(y1, y2, -grad[:, 0].reshape(y1.shape), -grad[:, 1].reshape(y1.shape), color="w",
            angles="xy", scale_units="xy", scale=8, width=0.003)
  ax.scatter(y[:, 0], y[:, 1], c="C3", s=10, zorder=3)
  colorbar(fig, im, ax, label=rf"{F_INF}$(y)$, clipped at 2")
  ax.set(xlim=(-3, 3), ylim=(-2, 2), xlabel="$y_1$", ylabel="$y_2$", aspect="equal",
         title=rf"{F_INF}$(y)$ with arrows $-\nabla_y F_\infty$ (trained; red: $y_i$)")
  # F∞ = ‖y − g(ž)‖² and ∇_y F∞ = 2(y − g(ž)) (envelope theorem): ‖∇F∞‖² = 4F∞.
  gnorm2 = np.sum(grad**2, -1)
  summary.update(
      mesh_shape=list(y1.shape), w_trained=w.tolist(),
      free_energy_origin=float(_free_energy(run, run.params, np.zeros((1, 2)), math.inf)[0]),
      free_energy_origin_closed_form=float(min(w[0] ** 2, w[1] ** 2)),
      free_energy_mesh_max=float(f_mesh.max()),
      max_abs_grad_norm2_minus_4f=float(np.max(np.abs(gnorm2 - 4 * f_mesh))),
      free_energy_mesh_scale=float(f_mesh.max()))
  return fig


@figure
def ellipse_free_energy_surface(runs, summary):
  run, _ = _ellipse(runs)
  w = _w(run, "trained")
  y1, y2, points = _mesh(-1.5, 1.5, -1.5, 1.5, 0.05)
  f = _free_energy(run, run.params, points, math.inf).reshape(y1.shape)
  fig = plt.figure(figsize=(11, 4.5))
  ax3 = fig.add_subplot(1, 2, 1, projection="3d")
  ax3.plot_surface(y1, y2, f, cmap="viridis", linewidth=0)
  ax3.set(xlabel="$y_1$", ylabel="$y_2$", zlabel=rf"{F_INF}$(y)$",
          title=rf"{F_INF} over $y \in [-1.5, 1.5]^2$ (trained)")
  ax = fig.add_subplot(1, 2, 2)
  y2s = np.linspace(-1.5, 1.5, 121)
  section = np.stack([np.zeros_like(y2s), y2s], -1).astype(np.float32)
  f_section = _free_energy(run, run.params, section, math.inf)
  closed = _section_closed_form(w, y2s)
  ax.plot(y2s, f_section, lw=2, label="the model's " + F_INF)
  ax.plot(y2s, closed, "k--", lw=1, label=r"closed form $(|y_2| - |w_2|)^2$")
  ax.axhline(min(w ** 2), c="C3", lw=0.8, ls=":")
  ax.annotate(rf"cusp: $\min(w_1^2, w_2^2)$ = {min(w ** 2):.2f}", (0, min(w ** 2)),
              xytext=(0.25, min(w ** 2) + 0.05), color="C3", fontsize=9)
  ax.set(xlabel="$y_2$", ylabel=rf"{F_INF}$(0, y_2)$", title="Cross-section at $y_1 = 0$",
         ylim=(0, 1.25 * max(min(w ** 2), 0.1)))
  ax.legend(fontsize=8, loc="lower center")
  summary.update(
      w_trained=w.tolist(), cusp_height=float(_free_energy(run, run.params, np.zeros((1, 2)),
                                                           math.inf)[0]),
      cusp_height_closed_form=float(min(w ** 2)),
      max_abs_section_minus_closed_form=float(np.max(np.abs(f_section - closed))),
      surface_max=float(f.max()))
  return fig


# ----------------------------------------------------------------------------
# §A.6, §A.7, §A.8 finite temperature
# ----------------------------------------------------------------------------


@figure
def ellipse_softmin_weights(runs, summary):
  run, y = _ellipse(runs)
  beta = FIGURE_CHOICES["softmin_beta"]
  w = _w(run, "trained")
  z, g = _grid_points(run, w)
  fig, axes = subplots(1, 3, (14, 3.8))
  targets = [("Y[23]", y[23]), ("Y[10]", y[10]), ("(0, 0)", np.zeros(2, np.float32))]
  summary.update(beta=beta, num_latent_points=len(z), w_trained=w.tolist())
  for ax, (name, target) in zip(axes, targets):
    e = _curves(run, run.params, target, z)[:, 0]
    weights = np.exp(-beta * e)
    sc = ax.scatter(g[:, 0], g[:, 1], c=weights, cmap="viridis", s=30, zorder=2)
    ax.plot(*target, "r*", ms=13, mec="k", zorder=3)
    colorbar(fig, sc, ax, label=rf"$\exp(-\beta E(y', z))$, $\beta$ = {beta:g}")
    ax.set(xlabel="$y_1$", ylabel="$y_2$", aspect="equal", xlim=(-2.6, 2.6), ylim=(-1.9, 1.9),
           title=f"48 points $g(z)$; $y'$ = {name} (red star)")
    f_beta = _free_energy(run, run.params, target[None], beta)[0]
    p = weights / weights.sum()
    summary[name] = {
        # (1/N) Σ_k exp(−βE(y′, z_k)) = exp(−β F_β(y′)) by F_β's definition on the grid.
        "mean_weight": float(weights.mean()), "exp_minus_beta_f_beta": float(np.exp(-beta * f_beta)),
        "normalised_weights_sum": float(p.sum()), "max_weight": float(weights.max()),
        "f_beta": float(f_beta),
        "f_beta_closed_form": (_softmin_closed_form_at_origin(w, beta) if name == "(0, 0)"
                               else None),
        # the heaviest point is the grid's ž: the closest of the 48 points
        "argmax_weight_is_grid_argmin": bool(np.argmax(weights) == np.argmin(e)),
    }
  fig.tight_layout()
  return fig


@figure
def ellipse_softmin_sections(runs, summary):
  run, _ = _ellipse(runs)
  y2 = np.arange(-2, 2 + 1e-9, 0.25)
  section = np.stack([np.zeros_like(y2), y2], -1).astype(np.float32)
  fig, axes = subplots(1, 2, (12.5, 4.2))
  betas = FIGURE_CHOICES["betas"]
  colours = plt.cm.plasma(np.linspace(0, 0.85, len(betas)))
  for ax, name in zip(axes, MODELS):
    params, w = _params(run, name), _w(run, name)
    f = np.stack([_free_energy(run, params, section, beta) for beta in betas])  # (β, y₂)
    for k, beta in enumerate(betas):
      ax.plot(y2, f[k], marker=".", c=colours[k],
              label=r"$\beta = \infty$: $F_\infty$" if math.isinf(beta) else rf"$\beta$ = {beta:g}")
    z = np.asarray(ellipse_model.latent_grid(run.config.model.num_latent_points))[:, 0]
    mean_energy = _curves(run, params, np.zeros(2), z[:, None]).mean()
    ax.plot(0, mean_energy, "kx", ms=9, mew=2, label=r"$\langle E \rangle_z$ at $y = 0$")
    ax.set(xlabel="$y_2$", ylabel=r"$F_\beta(0, y_2)$",
           title=rf"$F_\beta$ at $y_1 = 0$, {name}, $w$ = ({w[0]:.2f}, {w[1]:.2f})")
    origin = np.argmin(np.abs(y2))
    summary[name] = {
        "w": w.tolist(), "betas": [str(b) for b in betas],
        "f_beta_origin": f[:, origin].tolist(),
        "f_beta_origin_closed_form": [_softmin_closed_form_at_origin(w, b) for b in betas],
        "mean_energy_origin": float(mean_energy),
        "mean_energy_origin_closed_form": float((w[0] ** 2 + w[1] ** 2) / 2),
        "f_inf_origin_closed_form": float(min(w[0] ** 2, w[1] ** 2)),
        # F_β is non-increasing in β at every y (a power mean): the largest increase
        "max_increase_with_beta": float(np.max(np.diff(f, axis=0))),
        "f_beta_scale": float(np.max(np.abs(f))),
    }
  axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
  fig.tight_layout()
  return fig


@figure
def ellipse_temperature_panel(runs, summary):
  run, y = _ellipse(runs)
  beta = FIGURE_CHOICES["softmin_beta"]
  y1, y2, points = _mesh(-3, 3, -2, 2, 0.05)
  fig, axes = subplots(2, 2, (12, 7))
  m_untrained = _manifold(_w(run, "untrained"))
  for row, name in enumerate(MODELS):
    params, w = _params(run, name), _w(run, name)
    z, g = _grid_points(run, w)
    e = _curves(run, params, y, z)  # (48, 24)
    summary[name] = {}
    for col, b in enumerate((math.inf, beta)):
      ax = axes[row, col]
      f = _free_energy(run, params, points, b).reshape(y1.shape)
      im = ax.pcolormesh(y1, y2, f, cmap="viridis", shading="auto")
      colorbar(fig, im, ax, label=_f_beta_label(b))
      grad = _free_energy_grad(run, params, y, b)
      if math.isinf(b):
        _, z_check = run.model.extras["free_energy"](params, jnp.asarray(y))
        start = np.asarray(ellipse_model.decode(jnp.asarray(w, jnp.float32), z_check))
        label = rf"$g$({Z_CHECK}) $\to y$"
      else:
        p = np.exp(-b * (e - e.min(0)))
        p /= p.sum(0)
        start = p.T @ g  # the β-weighted average ⟨g(z)⟩_β
        label = r"$\langle g(z) \rangle_\beta \to y$"
      ax.plot(m_untrained[:, 0], m_untrained[:, 1], "--", c="C6", lw=1.4)
      if name == "trained":
        m = _manifold(w)
        ax.plot(m[:, 0], m[:, 1], "-", c="C1", lw=1.2)
      ax.quiver(start[:, 0], start[:, 1], y[:, 0] - start[:, 0], y[:, 1] - start[:, 1],
                angles="xy", scale_units="xy", scale=1, color="w", width=0.004, zorder=3)
      ax.scatter(y[:, 0], y[:, 1], c="C3", s=8, zorder=4)
      temp = "zero temperature" if math.isinf(b) else rf"$\beta$ = {b:g}"
      ax.set(xlim=(-3, 3), ylim=(-2, 2), xlabel="$y_1$", ylabel="$y_2$", aspect="equal",
             title=f"{name}, {temp}: arrows {label}")
      # ∇_y F = 2(y − g(ž)) at zero temperature, 2(y − ⟨g(z)⟩_β) at β: the arrows are −∇F/2.
      summary[name]["inf" if math.isinf(b) else f"beta_{b:g}"] = {
          "max_abs_grad_minus_2_arrow": float(np.max(np.abs(grad - 2 * (y - start)))),
          "mean_arrow_length2": float(np.mean(np.sum((y - start) ** 2, -1))),
          "mean_free_energy": float(np.mean(_free_energy(run, params, y, b))),
      }
  handles = [Line2D([], [], ls="--", c="C6", label="untrained manifold"),
             Line2D([], [], c="C1", label="trained manifold"),
             Line2D([], [], ls="", marker="o", c="C3", label="training samples $y_i$")]
  fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, bbox_to_anchor=(0.5, -0.02))
  fig.tight_layout(rect=(0, 0.04, 1, 1))
  return fig


# ----------------------------------------------------------------------------
# The conditional ellipse: the horn (DLSP20 week 15)
# ----------------------------------------------------------------------------


def _horn(runs):
  return runs.get("horn")


def _horn_radii(run: Trained, x) -> np.ndarray:
  return np.asarray(run.model.extras["radii"](run.params, jnp.asarray(x, jnp.float32)[:, None]))


@figure
def horn_data_and_manifold(runs, summary):
  run = _horn(runs)
  x, y = run.dataset.train["x"][:, 0], run.dataset.train["y"]
  fig = plt.figure(figsize=(13, 5.2))
  ax3 = fig.add_subplot(1, 2, 1, projection="3d")
  ax = fig.add_subplot(1, 2, 2)
  cmap = plt.cm.viridis
  ax3.scatter(x, y[:, 0], y[:, 1], c=x, cmap=cmap, s=3, alpha=0.6, depthshade=False)
  sc = ax.scatter(y[:, 0], y[:, 1], c=x, cmap=cmap, s=3, alpha=0.6)
  z = jnp.linspace(0, 2 * np.pi, 200)[:, None]
  for xk in FIGURE_CHOICES["horn_manifold_x"]:
    xs = jnp.full((len(z), 1), xk, jnp.float32)
    g = np.asarray(run.model.decode(run.params, z, xs))
    true = data_lib.horn_radii(xk) * np.concatenate([np.cos(z), np.sin(z)], -1)
    for target in (ax, ):
      target.plot(g[:, 0], g[:, 1], c="C3", lw=1.4)
      target.plot(true[:, 0], true[:, 1], "k:", lw=1)
    ax3.plot(np.full(len(z), xk), g[:, 0], g[:, 1], c="C3", lw=1.6)
  ax3.set(xlabel="$x$", ylabel="$y_1$", zlabel="$y_2$", title="the horn: $(x, y)$ samples and "
          r"$f(x) \odot g(z)$ (red)")
  ax3.view_init(elev=18, azim=-60)
  colorbar(fig, sc, ax, label="$x$")
  ax.set(xlabel="$y_1$", ylabel="$y_2$", aspect="equal",
         title=r"$y$ coloured by $x$; learned $f(x) \odot g(z)$ at $x$ = "
         + ", ".join(f"{v:g}" for v in FIGURE_CHOICES["horn_manifold_x"]))
  ax.legend(handles=[Line2D([], [], c="C3", label=r"learned $f(x) \odot g(z)$"),
                     Line2D([], [], ls=":", c="k", label=r"data $\rho(x) \odot g(z)$")],
            fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.12), ncol=2)
  grid_x = np.linspace(0, 1, data_lib.HORN_NUM_X)
  fitted, rho = _horn_radii(run, grid_x), data_lib.horn_radii(grid_x)
  f_test = np.asarray(run.model.extras["free_energy"](
      run.params, jnp.asarray(run.dataset.test["y"]), jnp.asarray(run.dataset.test["x"]))[0])
  summary.update(
      radii_x0=fitted[0].tolist(), radii_x1=fitted[-1].tolist(),
      rho_x0=rho[0].tolist(), rho_x1=rho[-1].tolist(),
      relative_error_x0=(fitted[0] / rho[0] - 1).tolist(),
      relative_error_x1=(fitted[-1] / rho[-1] - 1).tolist(),
      max_relative_error_all_x=float(np.max(np.abs(fitted / rho - 1))),
      mean_test_free_energy=float(f_test.mean()), noise=float(run.config.data.noise),
      num_train=len(y))
  fig.tight_layout()
  return fig


@figure
def horn_free_energy(runs, summary):
  run = _horn(runs)
  x_all, y_all = run.dataset.train["x"][:, 0], run.dataset.train["y"]
  values = FIGURE_CHOICES["horn_free_energy_x"]
  fig, axes = subplots(1, len(values), (12.5, 4.8))
  z = jnp.linspace(0, 2 * np.pi, 300)[:, None]
  for ax, xk in zip(axes, values):
    rho = data_lib.horn_radii(xk)
    half = 1.3 * rho
    y1, y2 = np.meshgrid(np.linspace(-half[0], half[0], 161), np.linspace(-half[1], half[1], 121))
    points = np.stack([y1.ravel(), y2.ravel()], -1).astype(np.float32)
    xs = jnp.full((len(points), 1), xk, jnp.float32)
    f = np.asarray(run.model.extras["free_energy"](run.params, jnp.asarray(points), xs)[0])
    f = f.reshape(y1.shape)
    # F∞ grows as the squared distance: a square-root scale keeps the valley and the cusp.
    im = ax.pcolormesh(y1, y2, np.sqrt(f), cmap="viridis", shading="auto")
    colorbar(fig, im, ax, label=rf"$\sqrt{{F_\infty(x, y)}}$ at $x$ = {xk:g}")
    g = np.asarray(run.model.decode(run.params, z, jnp.full((len(z), 1), xk, jnp.float32)))
    ax.plot(g[:, 0], g[:, 1], c="C3", lw=1.2)
    near = np.abs(x_all - xk) < 1e-6
    ax.scatter(y_all[near, 0], y_all[near, 1], c="w", s=10, edgecolors="k", linewidths=0.4,
               zorder=3)
    ax.set(xlabel="$y_1$", ylabel="$y_2$", aspect="equal",
           title=rf"$F_\infty(x, y)$ at $x$ = {xk:g}: samples (white), $f(x) \odot g(z)$ (red)")
    radii = _horn_radii(run, np.array([xk]))[0]
    f0 = float(np.asarray(run.model.extras["free_energy"](
        run.params, jnp.zeros((1, 2)), jnp.full((1, 1), xk, jnp.float32))[0])[0])
    f_samples = np.asarray(run.model.extras["free_energy"](
        run.params, jnp.asarray(y_all[near]), jnp.full((int(near.sum()), 1), xk, jnp.float32))[0])
    summary[f"x={xk:g}"] = {
        "radii": radii.tolist(), "rho": rho.tolist(),
        "relative_error": (radii / rho - 1).tolist(),
        # at y = 0, E = f₁² cos² z + f₂² sin² z: F∞(x, 0) = min(f₁², f₂²)
        "free_energy_origin": f0, "free_energy_origin_closed_form": float(min(radii ** 2)),
        "mean_free_energy_samples": float(f_samples.mean()), "num_samples": int(near.sum()),
    }
  summary["noise"] = float(run.config.data.noise)
  fig.tight_layout()
  return fig
