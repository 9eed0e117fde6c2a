"""Corruption processes of the denoising autoencoder: y ↦ ŷ, chosen by name.

Each takes one key per example and a batch y of shape (B, ...), and returns ŷ of
the same shape. Hyper-parameters are keyword-only; a new one is a function plus
``@register_corruption``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from energy_ae import keys as keys_lib

_CORRUPTIONS: dict[str, Callable[..., jax.Array]] = {}


def register_corruption(name: str):
  def decorator(fn):
    _CORRUPTIONS[name] = fn
    return fn

  return decorator


def corruption_names() -> list[str]:
  return sorted(_CORRUPTIONS)


def get_corruption(name: str) -> Callable[..., jax.Array]:
  try:
    return _CORRUPTIONS[name]
  except KeyError:
    raise ValueError(
        f"unknown corruption {name!r}; valid names: {', '.join(corruption_names())}") from None


@register_corruption("dropout")
def dropout(keys: jax.Array, y: jax.Array, *, p: float = 0.5) -> jax.Array:
  """The lecture's corruption: drop each element with probability p, scale kept ones by 1/(1−p)."""
  keep = keys_lib.uniform(keys, y.shape[1:], y.dtype) >= p
  return jnp.where(keep, y / (1.0 - p), 0.0)


@register_corruption("mask")
def mask(keys: jax.Array, y: jax.Array, *, p: float = 0.5, value: float = 0.0) -> jax.Array:
  """Masking noise: each element set to ``value`` with probability p, the rest unchanged."""
  drop = keys_lib.uniform(keys, y.shape[1:], y.dtype) < p
  return jnp.where(drop, value, y)


@register_corruption("gaussian")
def gaussian(keys: jax.Array, y: jax.Array, *, sigma: float = 0.3) -> jax.Array:
  """Additive isotropic Gaussian noise: ŷ = y + σ ε."""
  return y + sigma * keys_lib.normal(keys, y.shape[1:], y.dtype)


@register_corruption("salt_and_pepper")
def salt_and_pepper(keys: jax.Array, y: jax.Array, *, p: float = 0.2, low: float = 0.0,
                    high: float = 1.0) -> jax.Array:
  """Each element set to ``low`` or ``high`` (equally likely) with probability p."""
  u = keys_lib.uniform(keys, y.shape[1:], y.dtype)
  return jnp.where(u < p / 2, low, jnp.where(u < p, high, y))
