"""Per-example randomness.

The train step hands every model one key per example, derived from the global
position of the example in the batch. Drawing noise per example from its own key
makes a run independent of how the global batch is split across devices, so 1
device and N devices give the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def per_example_keys(step_key: Array, positions: Array) -> Array:
  """One key per example: fold_in(step_key, global position)."""
  return jax.vmap(jax.random.fold_in, (None, 0))(step_key, positions)


def normal(keys: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
  """ε ~ N(0, I) of shape (B, *shape), example b drawn from keys[b]."""
  return jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)


def uniform(keys: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
  """u ~ U[0, 1) of shape (B, *shape), example b drawn from keys[b]."""
  return jax.vmap(lambda k: jax.random.uniform(k, shape, dtype))(keys)


def split(keys: Array, num: int) -> Array:
  """Splits every example's key into ``num``: shape (num, B)."""
  return jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, num))(keys), 1, 0)
