"""Means over the global batch, whichever way it is split across data-parallel devices.

The train step (``energy_ae.train.device_step``) runs a model's loss inside ``jax.shard_map``
over a mesh axis named ``DATA_AXIS``: each device sees its local batch. A loss that is a mean
of per-example terms needs nothing from here (the step averages the devices' gradients). A
loss that is a nonlinear function of a batch statistic — Kingma et al.'s free bits,
Σ_j max(λ, mean_b KL_bj) — must take that statistic over the global batch, or it depends on
the number of devices: ``global_mean``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

DATA_AXIS = "data"  # the mesh axis of data parallelism (energy_ae.train.AXIS)


def data_axis_size() -> int:
  """The number of devices the global batch is split over: the size of ``DATA_AXIS`` where it
  is bound (inside the step's ``shard_map``), 1 where it is not (a plain ``jit``, a test, a
  tool calling the loss directly). JAX has no public predicate for a bound axis name: asking
  its size is how one checks, and an unbound name raises NameError at trace time."""
  try:
    return lax.axis_size(DATA_AXIS)
  except NameError:
    return 1


def global_mean(x: jax.Array, axis: int = 0) -> jax.Array:
  """(1/B) Σ_b x_b over the GLOBAL batch of B = N·B_local examples on N devices: the local mean
  over ``axis``, then ``lax.pmean`` over ``DATA_AXIS`` (the step's local batches are equal, so
  the mean of the local means is the global mean). With one device, or no axis bound, it is
  the local mean and no collective is emitted.

  Why the gradient is then the global loss's. Let device d compute ℓ_d(θ) = a_d(θ) + P(m),
  with m = pmean_d(x̄_d(θ)) and a_d, x̄_d local means (Kingma's free bits: a_d the
  reconstruction, P(m) = β Σ_j max(λ, m_j)). The global loss is L = (1/N) Σ_d a_d + P(m). The
  step differentiates ℓ_d per device with θ marked varying (``lax.pcast``), then averages the
  gradients with ``lax.pmean``. In the backward pass: the invariant P(m), added to the varying
  a_d, was broadcast to every device, and the broadcast's transpose sums the N devices'
  cotangents of 1: m receives N P'(m); pmean = psum / N, so psum's output receives P'(m), and
  psum's transpose (varying in, invariant out) copies it to every device: device d's x̄_d
  receives P'(m). So g_d = ∇a_d + P'(m) ∇x̄_d, and the step's pmean gives
  (1/N) Σ_d g_d = ∇((1/N) Σ_d a_d) + P'(m) ∇((1/N) Σ_d x̄_d) = ∇L. (Without the pmean here,
  each device would floor its own local mean: another loss for every N.) Under ``vmap`` (a
  sweep) the same holds per variant.
  """
  local = jnp.mean(x, axis=axis)
  if data_axis_size() == 1:
    return local
  return lax.pmean(local, DATA_AXIS)
