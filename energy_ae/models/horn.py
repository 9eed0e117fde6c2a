"""The conditional ellipse ("horn") latent-variable energy model (DLSP20 week 15).

A network f: x ↦ f(x) ∈ ℝ² (1 → 8 → 8 → 2, ReLU) gives the radii of an ellipse for each
input x, and g(z) = [cos z, sin z] walks around it:

  E(x, y, z) = Σᵢ [yᵢ − fᵢ(x) gᵢ(z)]²,   F∞(x, y) = min_z E(x, y, z),

trained at zero temperature with the energy loss ℓ = F∞(x, y), averaged over the batch.
ž is the best of the latent grid z ∈ [0 : 2π/N : 2π[, refined by ``inner_steps`` of
gradient descent (``inference = 'argmin'``) as in the ellipse model; the envelope theorem
gives ∂F∞/∂θ = ∂E(x, y, ž)/∂θ with ž held fixed.

The manifold is unchanged by the sign of fᵢ (−fᵢ with z ↦ π − z or −z gives the same
points), so the fitted radii are |f(x)|.

Config (``config.model``): ``hidden_widths`` ((8, 8)), ``num_latent_points`` (48),
``inference`` ('grid' or 'argmin'), ``inner_steps``, ``inner_lr``, ``energy`` (the C term),
``init_radius`` (the bias of f's output layer at initialisation: both radii start at it),
``x_range`` (the range of x, mapped to [−1, 1] at f's input).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from energy_ae import energies, inference
from energy_ae.models import Model


class Radii(nn.Module):
  """f: x (B, 1) ↦ (B, 2), an MLP with ReLU hidden layers and a linear output."""

  hidden_widths: tuple[int, ...]
  init_radius: float
  x_range: tuple[float, float]

  @nn.compact
  def __call__(self, x):
    # x's range mapped to [−1, 1] (an affine map the first layer could absorb: the same family
    # of f). With x ∈ [0, 1] as it is, every ReLU's kink starts at x = 0 (biases start at 0) and
    # the units with a negative weight are 0 on the whole range: dead from the first step.
    low, high = self.x_range
    h = (2 * x - (low + high)) / (high - low)
    for width in self.hidden_widths:
      h = nn.relu(nn.Dense(width)(h))
    # Both radii start at init_radius > 0: an output that starts near 0 with a random sign may
    # have to cross 0 somewhere in x to fit |ρ(x)|, which costs a misfit there.
    return nn.Dense(2, bias_init=nn.initializers.constant(self.init_radius))(h)


def latent_grid(num_points: int) -> jax.Array:
  """z ∈ [0 : 2π/N : 2π[, shape (N, 1)."""
  return inference.uniform_grid(0.0, 2 * math.pi, num_points)


def decode(radii: jax.Array, z: jax.Array) -> jax.Array:
  """f(x) ⊙ g(z) = [f₁(x) cos z, f₂(x) sin z] for radii (..., 2) and z (..., 1)."""
  return radii * jnp.concatenate([jnp.cos(z), jnp.sin(z)], axis=-1)


def validate(config) -> None:
  """The model's own keys, before any data is loaded."""
  mc = config.model
  if mc.inference not in ("grid", "argmin"):
    raise ValueError(f"model.inference must be 'grid' or 'argmin', got {mc.inference!r}")
  if not isinstance(mc.num_latent_points, int) or mc.num_latent_points <= 0:
    raise ValueError(f"model.num_latent_points must be a positive integer, got "
                     f"{mc.num_latent_points!r}")
  if not math.isinf(float(mc.get("beta", math.inf))):
    raise ValueError("the horn model is trained at zero temperature: model.beta must be inf")
  energies.make_energy(mc.energy)


def make(config, example_shape) -> Model:
  if tuple(example_shape) != (2,):
    raise ValueError(f"the horn model needs 2-D data y, got examples of shape {example_shape}")
  validate(config)
  mc = config.model
  net = Radii(tuple(int(w) for w in mc.hidden_widths), float(mc.init_radius),
              tuple(float(v) for v in mc.x_range))
  energy = energies.make_energy(mc.energy)
  grid = latent_grid(mc.num_latent_points)

  def f(params, x):
    """f(x) for x of shape (B, 1) (or (B,)): the signed radii, (B, 2)."""
    x = jnp.asarray(x, jnp.float32)
    return net.apply(params, x.reshape(-1, 1))

  def energy_fn(params, y, x):
    """z (1,) or (B, 1) ↦ E(x, y, z) per example (B,)."""
    radii = f(params, x)
    return lambda z: energy(y=y, y_tilde=decode(radii, jnp.broadcast_to(z, (y.shape[0], 1))))[0]

  def free_energy(params, y, x):
    """F∞(x, y) per example and ž, shapes (B,) and (B, 1)."""
    e = energy_fn(params, y, x)
    z_check = inference.argmin_grid(e, grid).z
    if mc.inference == "argmin":
      # The descent runs on E / ‖f(x)‖², which has the same minimiser: E's curvature in z
      # grows as 2ρ² (≈ 440 at x = 1, ≈ 5 at x = 0), the scaled one stays ≤ 2, so one rate
      # converges at both ends of the horn.
      scale = jax.lax.stop_gradient(jnp.sum(jnp.square(f(params, x)), -1) + 1e-6)
      z_check = inference.argmin(lambda z: e(z) / scale, z_check, num_steps=mc.inner_steps,
                                 learning_rate=mc.inner_lr).z
    return inference.free_energy_min(e, z_check), z_check

  def radii(params, x):
    """The fitted radii |f(x)|, (B, 2)."""
    return jnp.abs(f(params, x))

  def init(key, batch):
    return net.init(key, jnp.asarray(batch["x"], jnp.float32).reshape(-1, 1))

  def loss(params, batch, keys):
    del keys
    value = jnp.mean(free_energy(params, batch["y"], batch["x"])[0])
    return value, {"loss": value, "free_energy": value}

  def evaluate(params, batch, keys):
    del keys
    ends = radii(params, jnp.array([[0.0], [1.0]]))
    return {"free_energy": free_energy(params, batch["y"], batch["x"])[0],
            "radius1_x0": ends[0, 0], "radius2_x0": ends[0, 1],
            "radius1_x1": ends[1, 0], "radius2_x1": ends[1, 1]}

  def decode_fn(params, z, x):
    """f(x) ⊙ g(z) for z (B, 1) and x (B, 1)."""
    return decode(f(params, x), z)

  def reconstruct(params, y, x):
    """f(x) ⊙ g(ž): the closest point of the manifold at x."""
    return decode_fn(params, free_energy(params, y, x)[1], x)

  # decode and reconstruct read x too; reconstruct stays out of Model.reconstruct(params, y),
  # whose callers know nothing of x.
  return Model(init, loss, evaluate, decode=decode_fn, free_energy=free_energy,
               extras={"radii": radii, "free_energy": free_energy, "reconstruct": reconstruct,
                       "energy": lambda params, y, x: energy_fn(params, y, x)})
