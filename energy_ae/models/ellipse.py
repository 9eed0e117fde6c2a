"""The lecture's ellipse latent-variable energy model (weeks 7, 8 and 15).

g(z) = [w₁ cos z, w₂ sin z]; E(y, z) = C(y, g(z)) = [y₁ − w₁ cos z]² + [y₂ − w₂ sin z]².
The free energy is F∞(y) = min_z E(y, z) (``model.beta = inf``) or the soft minimum
F_β(y) = −(1/β) log((1/|Z|) ∫ exp(−βE) dz) on the latent grid z ∈ [0 : 2π/N : 2π[.
Training minimises the energy loss ℓ = F(y), averaged over the samples.

Config (``config.model``): ``init_w`` (w₁, w₂ before training), ``num_latent_points``
(N = 48), ``beta``, ``inference`` ('grid': ž on the grid; 'argmin': refined from the
grid's best point by ``inner_steps`` of gradient descent at rate ``inner_lr``),
``energy`` (the C term).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from energy_ae import energies, inference
from energy_ae.models import Model


def decode(w: jax.Array, z: jax.Array) -> jax.Array:
  """g(z) = [w₁ cos z, w₂ sin z] for z of shape (..., 1); returns (..., 2)."""
  return jnp.concatenate([w[0] * jnp.cos(z), w[1] * jnp.sin(z)], axis=-1)


def latent_grid(num_points: int) -> jax.Array:
  return inference.uniform_grid(0.0, 2 * math.pi, num_points)


def validate(config) -> None:
  """The ellipse model's own keys, before any data is loaded."""
  mc = config.model
  if not isinstance(mc.beta, (int, float)) or not mc.beta > 0:
    raise ValueError(f"config.model.beta = {mc.beta!r}: must be > 0 (inf for the "
                     "zero-temperature limit F∞)")
  if mc.inference not in ("grid", "argmin"):
    raise ValueError(f"model.inference must be 'grid' or 'argmin', got {mc.inference!r}")
  if not isinstance(mc.num_latent_points, int) or mc.num_latent_points < 2:
    raise ValueError(f"config.model.num_latent_points = {mc.num_latent_points!r}: must be an "
                     "integer >= 2")
  if len(mc.init_w) != 2:
    raise ValueError(f"config.model.init_w = {tuple(mc.init_w)!r}: must be (w₁, w₂)")
  energies.make_energy(mc.energy).check_inputs(("y", "y_tilde"), model="ellipse")


def make(config, example_shape) -> Model:
  del example_shape  # always (2,)
  validate(config)
  mc = config.model
  energy = energies.make_energy(mc.energy)
  beta = float(mc.beta)
  grid = latent_grid(mc.num_latent_points)

  def energy_fn(w, y):
    # A grid point z of shape (1,) gives one g(z) for the whole batch: broadcast it.
    return lambda z: energy(y=y, y_tilde=jnp.broadcast_to(decode(w, z), y.shape))[0]

  def free_energy(params, y):
    """F(y) per example, and ž (the grid/argmin minimiser)."""
    w = params["w"]
    e = energy_fn(w, y)
    search = inference.argmin_grid(e, grid)
    z_check = search.z
    if mc.inference == "argmin":
      z_check = inference.argmin(e, z_check, num_steps=mc.inner_steps,
                                 learning_rate=mc.inner_lr).z
    if math.isinf(beta):
      return inference.free_energy_min(e, z_check), z_check
    return inference.free_energy_softmin(search.energies, beta), z_check

  def init(key, batch):
    del key, batch
    return {"w": jnp.asarray(mc.init_w, jnp.float32)}

  def loss(params, batch, keys):
    del keys
    f, _ = free_energy(params, batch["y"])
    value = jnp.mean(f)
    return value, {"loss": value, "free_energy": value}

  def evaluate(params, batch, keys):
    del keys
    f, _ = free_energy(params, batch["y"])
    w = jnp.abs(params["w"])
    return {"free_energy": f, "w1": w[0], "w2": w[1]}

  def decode_fn(params, z):
    return decode(params["w"], z)

  return Model(init, loss, evaluate, decode=decode_fn,
               extras={"free_energy": free_energy, "energy": lambda params, y: energy_fn(
                   params["w"], y)})
