"""Energy terms of the lecture as pure per-example functions, and their composition.

Every term maps per-example inputs to one energy per example: it sums over the
trailing ``feature_ndim`` axes and keeps every leading (batch) axis; it never
reduces over the batch (the loss functional L = 1/m Σ_j ℓ(F, y⁽ʲ⁾) is the caller's).
Hyper-parameters are keyword-only. Shapes are checked rather than broadcast.

Roles, in the lecture's notation (ch. 08-3):

* C(y, ỹ)   reconstruction cost: ``squared_error``, ``bernoulli_nll``, ``categorical_nll``
* R(z)      latent regulariser: ``l1``, ``l2``, ``contractive``, ``contractive_sigmoid``
* D(z, z̃)  distance to the encoder's guess: ``squared_distance``
* KL        KL(N(μ, v) ‖ N(0, I)): ``gaussian_kl``; two diagonal Gaussians: ``gaussian_kl_diag``

An energy is a weighted sum of named terms chosen by a config::

    energy = make_energy({"C": "squared_error", "R": ("l1", 0.1)})
    total, terms = energy(y=y, y_tilde=y_tilde, z=z)

Each term's positional parameters name the quantities it reads (``y``, ``y_tilde``,
``logits``, ``z``, ``z_tilde``, ``mu``, ``logvar``, ``encode``, ...); the model
supplies them by keyword. A new term is one function plus ``@register_term``, or one
function in the user's own file named in the config by its import path
(``my_terms:log_cosh``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

# ----------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------

_TERMS: dict[str, Callable[..., Array]] = {}


def register_term(name: str) -> Callable[[Callable[..., Array]], Callable[..., Array]]:
  """Registers an energy term under ``name`` so configs can refer to it."""

  def decorator(fn: Callable[..., Array]) -> Callable[..., Array]:
    if name in _TERMS and _TERMS[name] is not fn:
      raise ValueError(f"energy term {name!r} is already registered")
    _TERMS[name] = fn
    return fn

  return decorator


def term_names() -> list[str]:
  return sorted(_TERMS)


def get_term(name: str) -> Callable[..., Array]:
  """A registered term, or ``package.module:function`` imported from ``sys.path`` (the
  current directory included), so that a term in the user's own file needs no registration
  and a run's config.json names where its terms live."""
  if ":" in name:
    return _import_term(name)
  try:
    return _TERMS[name]
  except KeyError:
    raise ValueError(
        f"unknown energy term {name!r}; valid names: {', '.join(term_names())} "
        "(or an import path package.module:function)"
    ) from None


def _import_term(path: str) -> Callable[..., Array]:
  import importlib
  import os
  import sys

  module_name, _, function_name = path.partition(":")
  if not module_name or not function_name:
    raise ValueError(f"energy term {path!r}: an import path is package.module:function")
  if "" not in sys.path and os.getcwd() not in sys.path:  # `python -m` puts it there already
    sys.path.insert(0, os.getcwd())
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"energy term {path!r}: cannot import module {module_name!r} ({e})") from None
  fn = getattr(module, function_name, None)
  if not callable(fn):
    raise ValueError(f"energy term {path!r}: module {module_name!r} has no function "
                     f"{function_name!r}")
  return fn


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def _check_same_shape(name: str, a: Array, b: Array, a_name: str, b_name: str) -> None:
  if jnp.shape(a) != jnp.shape(b):
    raise ValueError(
        f"{name}: {a_name} has shape {jnp.shape(a)} but {b_name} has shape "
        f"{jnp.shape(b)}; they must match (no broadcasting)"
    )


def _sum_features(x: Array, feature_ndim: int) -> Array:
  if feature_ndim < 0 or feature_ndim > jnp.ndim(x):
    raise ValueError(f"feature_ndim={feature_ndim} is invalid for an input of shape {jnp.shape(x)}")
  if feature_ndim == 0:
    return x
  return jnp.sum(x, axis=tuple(range(-feature_ndim, 0)))


# ----------------------------------------------------------------------------
# C: reconstruction costs
# ----------------------------------------------------------------------------


@register_term("squared_error")
def squared_error(y: Array, y_tilde: Array, *, feature_ndim: int = 1) -> Array:
  """C(y, ỹ) = ‖y − ỹ‖², summed over the feature axes."""
  _check_same_shape("squared_error", y, y_tilde, "y", "y_tilde")
  return _sum_features(jnp.square(y - y_tilde), feature_ndim)


@register_term("bernoulli_nll")
def bernoulli_nll(y: Array, logits: Array, *, feature_ndim: int = 1) -> Array:
  """C(y, ỹ) = −Σ_i y_i log ỹ_i + (1 − y_i) log(1 − ỹ_i), with ỹ = σ(logits).

  Computed from the logits as max(l, 0) − l·y + log(1 + e^{−|l|}), which is exact
  and finite for logits of any magnitude (no log of a sigmoid that rounds to 0).
  """
  _check_same_shape("bernoulli_nll", y, logits, "y", "logits")
  per_element = jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return _sum_features(per_element, feature_ndim)


@register_term("categorical_nll")
def categorical_nll(y: Array, logits: Array, *, feature_ndim: int = 1) -> Array:
  """C(y, ỹ) = −Σ_k y_k log softmax(logits)_k for one-hot or probability targets y.

  The class axis is the last axis; it is one of the ``feature_ndim`` summed axes.
  """
  _check_same_shape("categorical_nll", y, logits, "y", "logits")
  if feature_ndim < 1:
    raise ValueError("categorical_nll needs feature_ndim >= 1 (the class axis)")
  return _sum_features(-y * jax.nn.log_softmax(logits, axis=-1), feature_ndim)


# ----------------------------------------------------------------------------
# R: latent regularisers
# ----------------------------------------------------------------------------


@register_term("l1")
def l1(z: Array, *, feature_ndim: int = 1) -> Array:
  """R(z) = ‖z‖₁ (sparse coding / predictive sparse decomposition)."""
  return _sum_features(jnp.abs(z), feature_ndim)


@register_term("l2")
def l2(z: Array, *, feature_ndim: int = 1) -> Array:
  """R(z) = ‖z‖² (squared Euclidean norm)."""
  return _sum_features(jnp.square(z), feature_ndim)


@register_term("contractive")
def contractive(encode: Callable[[Array], Array], y: Array, *, feature_ndim: int = 1) -> Array:
  """R(h) = ‖∂h/∂y‖²_F for h = encode(y), exact, for any differentiable encoder.

  ``encode`` maps one example (the trailing ``feature_ndim`` axes of ``y``) to its
  code h; it is vmapped over every leading axis. The Jacobian is built in reverse
  mode when the code is smaller than the input (one VJP per code unit) and in
  forward mode otherwise (one JVP per input unit), whichever is cheaper.
  """
  batch_ndim = jnp.ndim(y) - feature_ndim
  if batch_ndim < 0:
    raise ValueError(f"contractive: feature_ndim={feature_ndim} exceeds y.ndim={jnp.ndim(y)}")
  example = jax.ShapeDtypeStruct(jnp.shape(y)[batch_ndim:], jnp.result_type(y))
  code_size = math.prod(jax.eval_shape(encode, example).shape)
  input_size = math.prod(example.shape)
  jacobian = jax.jacrev(encode) if code_size < input_size else jax.jacfwd(encode)

  def frobenius_sq(example_y: Array) -> Array:
    return jnp.sum(jnp.square(jacobian(example_y)))

  fn = frobenius_sq
  for _ in range(batch_ndim):
    fn = jax.vmap(fn)
  return fn(y)


@register_term("contractive_sigmoid")
def contractive_sigmoid(h: Array, kernel: Array) -> Array:
  """Closed form of ‖∂h/∂y‖²_F for a sigmoid layer h = σ(W y + b).

  ‖J‖²_F = Σ_i (h_i (1 − h_i))² Σ_j W_ij². ``kernel`` is Flax's Dense kernel, of
  shape (n_in, n_out), i.e. Wᵀ; ``h`` has shape (..., n_out).
  """
  if jnp.ndim(kernel) != 2 or jnp.shape(h)[-1] != jnp.shape(kernel)[-1]:
    raise ValueError(
        f"contractive_sigmoid: h has shape {jnp.shape(h)} but kernel has shape "
        f"{jnp.shape(kernel)}; expected kernel (n_in, {jnp.shape(h)[-1]})"
    )
  row_norms = jnp.sum(jnp.square(kernel), axis=0)  # Σ_j W_ij² for each unit i
  return jnp.sum(jnp.square(h * (1 - h)) * row_norms, axis=-1)


# ----------------------------------------------------------------------------
# D: distance between the inferred latent and the encoder's guess
# ----------------------------------------------------------------------------


@register_term("squared_distance")
def squared_distance(z: Array, z_tilde: Array, *, feature_ndim: int = 1) -> Array:
  """D(z, z̃) = ‖z − z̃‖²."""
  _check_same_shape("squared_distance", z, z_tilde, "z", "z_tilde")
  return _sum_features(jnp.square(z - z_tilde), feature_ndim)


# ----------------------------------------------------------------------------
# KL divergences of diagonal Gaussians
# ----------------------------------------------------------------------------


@register_term("gaussian_kl")
def gaussian_kl(mu: Array, logvar: Array, *, feature_ndim: int = 1) -> Array:
  """KL(N(μ, v) ‖ N(0, I)) = ½ Σ_i (v_i − log v_i − 1 + μ_i²), v = exp(logvar)."""
  _check_same_shape("gaussian_kl", mu, logvar, "mu", "logvar")
  return 0.5 * _sum_features(jnp.exp(logvar) - logvar - 1.0 + jnp.square(mu), feature_ndim)


def gaussian_kl_diag(
    mu_a: Array, logvar_a: Array, mu_b: Array, logvar_b: Array, *, feature_ndim: int = 1
) -> Array:
  """KL(N(μ_a, v_a) ‖ N(μ_b, v_b)) = ½ Σ (log v_b − log v_a + (v_a + (μ_a − μ_b)²)/v_b − 1)."""
  for name, x in (("logvar_a", logvar_a), ("mu_b", mu_b), ("logvar_b", logvar_b)):
    _check_same_shape("gaussian_kl_diag", mu_a, x, "mu_a", name)
  ratio = jnp.exp(logvar_a - logvar_b)
  per_dim = logvar_b - logvar_a + ratio + jnp.square(mu_a - mu_b) * jnp.exp(-logvar_b) - 1.0
  return 0.5 * _sum_features(per_dim, feature_ndim)


# ----------------------------------------------------------------------------
# Composition: E = Σ_k w_k · term_k, from a config
# ----------------------------------------------------------------------------


class TermSpec(NamedTuple):
  label: str
  name: str
  weight: float
  kwargs: Mapping[str, Any]
  fn: Callable[..., Array]
  inputs: tuple[str, ...]


def _positional_inputs(fn: Callable[..., Array]) -> tuple[str, ...]:
  params = inspect.signature(fn).parameters.values()
  return tuple(
      p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
  )


def parse_term(label: str, spec: Any) -> TermSpec:
  """Reads one term of an energy config.

  Accepted forms: ``"name"``; ``("name", weight)``; ``("name", weight, {kwargs})``;
  or a mapping ``{"term": name, "weight": w, "kwargs": {...}}`` (the ConfigDict form).
  """
  kwargs: Mapping[str, Any] = {}
  weight = 1.0
  if isinstance(spec, str):
    name = spec
  elif isinstance(spec, (tuple, list)) and 1 <= len(spec) <= 3:
    name, *rest = spec
    if rest:
      weight = rest[0]
    if len(rest) > 1:
      kwargs = rest[1]
  elif hasattr(spec, "get") and "term" in spec:
    name = spec["term"]
    weight = spec.get("weight", 1.0)
    kwargs = spec.get("kwargs", None) or {}
  else:
    raise ValueError(
        f"energy term {label!r}: cannot read {spec!r}; use 'name', (name, weight), "
        "(name, weight, kwargs) or {'term': name, 'weight': w}"
    )
  fn = get_term(name)
  if not isinstance(weight, jax.core.Tracer):  # a sweep's traced weight was checked concrete
    weight = float(weight)
    if not math.isfinite(weight) or weight < 0:
      raise ValueError(f"energy term {label!r} ({name}): weight must be finite and >= 0, got "
                       f"{weight}")
  kwargs = dict(kwargs)
  signature = inspect.signature(fn)
  for key in kwargs:
    param = signature.parameters.get(key)
    if param is None or param.kind is not param.KEYWORD_ONLY:
      raise ValueError(f"energy term {label!r} ({name}) has no keyword hyper-parameter {key!r}")
  return TermSpec(label, name, weight, kwargs, fn, _positional_inputs(fn))


class Energy(NamedTuple):
  """A weighted sum of named terms; call it with the quantities its terms read."""

  terms: tuple[TermSpec, ...]

  def check_inputs(self, provided, *, model: str) -> None:
    """Fails, naming the term, if a term reads a quantity the model does not provide
    (called by the models' ``validate``, before any data is loaded)."""
    for term in self.terms:
      missing = [name for name in term.inputs if name not in provided]
      if missing:
        raise ValueError(
            f"energy term {term.label!r} ({term.name}) reads {missing}, which the {model} "
            f"model does not provide; it provides {sorted(provided)}")

  def __call__(self, **quantities: Any) -> tuple[Array, dict[str, Array]]:
    """Returns (E, {label: term}) per example; E = Σ weight · term."""
    values: dict[str, Array] = {}
    total = None
    for term in self.terms:
      missing = [name for name in term.inputs if name not in quantities]
      if missing:
        raise ValueError(
            f"energy term {term.label!r} ({term.name}) needs {missing}; the model "
            f"provides {sorted(quantities)}"
        )
      value = term.fn(*(quantities[name] for name in term.inputs), **term.kwargs)
      values[term.label] = value
      weighted = term.weight * value
      total = weighted if total is None else total + weighted
    if total is None:
      raise ValueError("an energy needs at least one term")
    return total, values


def is_disabled(spec: Any) -> bool:
  """A term set to None (or a mapping whose ``term`` is None or "") is left out."""
  if spec is None:
    return True
  return hasattr(spec, "get") and "term" in spec and not spec["term"]


def make_energy(config: Mapping[str, Any]) -> Energy:
  """Builds an energy from ``{label: term spec}`` (see ``parse_term``)."""
  terms = tuple(
      parse_term(label, spec) for label, spec in config.items() if not is_disabled(spec)
  )
  if not terms:
    raise ValueError("an energy needs at least one term")
  return Energy(terms)
