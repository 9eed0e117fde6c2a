"""Corruption processes of the denoising autoencoder: y ↦ ŷ, chosen by name.

Each takes one key per example and a batch y of shape (B, ...), and returns ŷ of
the same shape. Hyper-parameters are keyword-only; a new one is a function plus
``@register_corruption``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping

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


def keyword_names(name: str) -> list[str]:
  """The keyword hyper-parameters of corruption ``name``."""
  params = inspect.signature(get_corruption(name)).parameters.values()
  return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def kwargs_from_config(model_config: Mapping) -> dict:
  """The keyword arguments of the chosen corruption.

  ``model.corruption_kwargs`` holds one dict per corruption name (``{"dropout": {"p":
  0.5}, "gaussian": {"sigma": 0.3}, ...}``), so that ``--config.model.corruption=gaussian``
  switches with the right arguments and ``--config.model.corruption_kwargs.gaussian.sigma=0.5``
  sets one; a flat dict (``{"p": 0.5}``) is read as the chosen corruption's own.
  """
  name = model_config["corruption"]
  kwargs = dict(model_config.get("corruption_kwargs", None) or {})
  if kwargs and all(hasattr(v, "items") for v in kwargs.values()):  # dicts or ConfigDicts
    return dict(kwargs.get(name, None) or {})
  return kwargs


def check_kwargs(name: str, kwargs: Mapping, *, field: str = "model.corruption_kwargs") -> None:
  """Rejects a keyword that corruption ``name`` does not take, naming the config field."""
  known = keyword_names(name)
  for key in kwargs:
    if key not in known:
      raise ValueError(f"config.{field}: corruption {name!r} has no keyword {key!r}; its "
                       f"keywords: {', '.join(known) or '(none)'}")


def from_config(model_config: Mapping, value_range: tuple[float, float] | None = None):
  """``corrupt(keys, y)`` for ``model.corruption`` with its checked keyword arguments.

  Keywords named ``low`` / ``high`` that the config leaves unset take the data's value
  range (salt-and-pepper writes the data's own black and white, −1 and 1 on [−1, 1] images).
  """
  name = model_config["corruption"]
  kwargs = kwargs_from_config(model_config)
  check_kwargs(name, kwargs)
  if value_range is not None:
    known = keyword_names(name)
    for key, value in zip(("low", "high"), value_range):
      if key in known:
        kwargs.setdefault(key, float(value))
  return functools.partial(get_corruption(name), **kwargs)


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
