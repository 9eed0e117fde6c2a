"""Models of the lecture, each a module ``energy_ae/models/<name>.py`` with ``make(config)``.

``make(config, example_shape)`` (``example_shape``: the shape of one data example)
returns a ``Model`` of three pure functions:

* ``init(key, batch) -> params``
* ``loss(params, batch, keys) -> (loss, metrics)``: the scalar loss functional
  L = 1/m Σ ℓ(F(y)) over the batch and a dict of scalar metrics (``loss`` and every
  named energy term); ``keys`` holds one PRNG key per example.
* ``evaluate(params, batch, keys) -> metrics``: per-example test metrics, each of
  shape (B,) (or a scalar, counted once per example).
* ``encode(params, y) -> codes`` (optional): the (B, d) latent codes of a batch, for
  the linear probe and the figures; None for models without an encoder.
* ``decode(params, z) -> ỹ`` (optional): the decoder's output in data space (a VAE's
  Bernoulli means are probabilities), shape (B, *example_shape) flattened as the data is.
* ``reconstruct(params, y) -> ỹ`` (optional): decode(encode(y)) as the model reconstructs
  at test time (z = μ for a VAE, ž for target propagation).
* ``evaluate_final`` (optional): like ``evaluate``, for the final evaluation only (e.g. a
  VAE's k = 5,000 importance samples); None: ``evaluate``.
* ``split_metrics(params, y, key) -> metrics`` (optional): metrics of a whole test split that
  are not means over examples (scalars or vectors, e.g. a VAE's active units), computed at
  every evaluation.
* ``free_energy(params, y[, x]) -> (F, ž)`` (optional): F(y) per example (F∞ or F_β) and the
  inferred code, for a latent-variable energy model whose y can be sampled from exp(−β F(y))
  (the ellipse; the horn at its x).
* ``energy(params, y, z) -> E`` (optional): the energy E(y, z) per example of a model whose
  (y, z) can be sampled jointly from exp(−β E(y, z)) (target propagation: C + R + D(z, Enc(y))).
* ``corrupt(keys, y) -> ŷ`` (optional): a denoising model's corruption process (one key per
  example), for the walk-back chain "corrupt, denoise, repeat".
* ``sample_prior(params, key, num) -> z`` (optional): ``num`` codes from the model's prior
  (a VAE's N(0, I)), to be decoded.
* ``extras``: further public functions of one model, by name (a VAE's ``posterior``
  (μ, log v), target propagation's ``infer`` (z̃, ž)), for the figures and the tools; the
  trainer reads none of them.

During training ``batch`` holds ``y`` (and ``x`` for a conditional model) and ``step``, the
optimiser step (a scalar) for schedules inside a loss such as a KL warm-up.

``make`` may take a keyword ``value_range`` (the data's (low, high) after pre-processing) and
the module may define ``validate(config)``, called before any data is loaded.

The registry is by convention: ``config.model.name = "vae"`` imports
``energy_ae.models.vae``; a dotted name (``mypkg.my_model``) imports that module, so
a new model is one new file and a config — no change to the trainer or the runner.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple


class Model(NamedTuple):
  init: Callable[..., Any]
  loss: Callable[..., Any]
  evaluate: Callable[..., Any]
  encode: Callable[..., Any] | None = None
  decode: Callable[..., Any] | None = None
  reconstruct: Callable[..., Any] | None = None
  extras: Mapping[str, Callable[..., Any]] = {}
  evaluate_final: Callable[..., Any] | None = None
  split_metrics: Callable[..., Any] | None = None
  free_energy: Callable[..., Any] | None = None
  energy: Callable[..., Any] | None = None
  corrupt: Callable[..., Any] | None = None
  sample_prior: Callable[..., Any] | None = None


def model_names() -> list[str]:
  """The built-in models: modules of this package that define ``make``."""
  names = []
  for info in pkgutil.iter_modules(__path__):
    if not info.name.startswith("_") and hasattr(
        importlib.import_module(f"{__name__}.{info.name}"), "make"):
      names.append(info.name)
  return sorted(names)


def get_model_module(name: str):
  module_name = name if "." in name else f"{__name__}.{name}"
  if "." not in name and name not in model_names():
    raise ValueError(f"unknown model {name!r}; valid names: {', '.join(model_names())} "
                     "(or a dotted module path defining make(config, example_shape))")
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    raise ValueError(f"unknown model {name!r}: cannot import {module_name!r} ({e})") from e
  if not hasattr(module, "make"):
    raise ValueError(f"model module {module_name!r} defines no make(config, example_shape)")
  return module


def make(config, example_shape, value_range: tuple[float, float] | None = None) -> Model:
  """Builds the model named by ``config.model.name`` for examples of ``example_shape``.

  ``value_range``: the (low, high) the data's values live in after pre-processing, passed to
  a model whose ``make`` takes a ``value_range`` keyword (PSNR, a corruption's black and
  white, a likelihood's support); the model, not the trainer, decides what fits it.
  """
  module = get_model_module(config.model.name)
  kwargs = {}
  if value_range is not None and "value_range" in inspect.signature(module.make).parameters:
    kwargs["value_range"] = tuple(float(v) for v in value_range)
  return module.make(config, tuple(example_shape), **kwargs)
