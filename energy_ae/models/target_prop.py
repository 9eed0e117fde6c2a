"""Target propagation / amortised inference (08-3, Fig. 1).

z̃ = Enc(y); starting from z = z̃, ž = argmin_z E(y, z) with
E(y, z) = C(y, Dec(z)) + R(z) + D(z, z̃) (R = L1 by default: predictive sparse
decomposition). Then θ_Dec ← θ_Dec − η ∇C(y, Dec(ž)) and θ_Enc ← θ_Enc − η ∇D(ž, z̃),
ž held fixed: the loss is E(y, ž) with ž under stop_gradient, whose gradient w.r.t.
the decoder is ∇C and w.r.t. the encoder is ∇D (R has no parameters).

Config: ``model.latent_dim``, ``model.energy`` (C, R, D), ``model.inner_steps``,
``model.inner_optimizer`` ('sgd', 'momentum', 'adam', or the proximal 'ista' / 'fista', which
take an L1 R by its soft threshold) at ``model.inner_lr`` (0: the optimiser's own default).
Test metrics: ``energy_encoder`` = (C + R)(y, z̃), ``energy_inferred`` = (C + R)(y, ž),
``amortisation_gap`` = their difference, and ``reconstruction_encoder`` /
``reconstruction_inferred`` = C at z̃ / ž.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from energy_ae import energies, inference, metrics
from energy_ae.models import Model, modules

INNER_OPTIMIZERS = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adam": optax.adam,
}
# Proximal inner loops (inference.argmin_proximal): the L1 term by its soft threshold, the
# rest of E by gradient steps; FISTA with Nesterov's momentum.
PROXIMAL_OPTIMIZERS = {"ista": False, "fista": True}
# Each inner optimiser's own step size, used when model.inner_lr = 0 (stable for the default
# 784-256-64 model: the step must stay below 1/L of the smooth part; Adam's is a step in z).
INNER_LR_DEFAULTS = {"sgd": 0.05, "momentum": 0.02, "adam": 0.05, "ista": 0.05, "fista": 0.05}


def inner_optimizer_names() -> list[str]:
  return sorted([*INNER_OPTIMIZERS, *PROXIMAL_OPTIMIZERS])


def inner_learning_rate(model_config) -> float:
  """``model.inner_lr``, or the inner optimiser's own default when it is 0."""
  lr = model_config.inner_lr
  return float(lr) if lr else INNER_LR_DEFAULTS[model_config.inner_optimizer]


class Networks(NamedTuple):
  encoder: Any
  decoder: Any
  energy: energies.Energy  # C + R + D
  energy_no_d: energies.Energy  # C + R: the energy of a latent as an explanation of y
  inner_optimizer: optax.GradientTransformation | None  # None: proximal (ISTA / FISTA)
  inner_steps: int
  inner_lr: float
  accelerated: bool  # FISTA rather than ISTA
  smooth_energy: energies.Energy  # E without its L1 term (proximal loops)
  l1_weight: float  # λ of the L1 term handled by the soft threshold (0: none)


def validate(config) -> None:
  """Target propagation's own keys, before any data is loaded."""
  mc = config.model
  if mc.inner_optimizer not in inner_optimizer_names():
    raise ValueError(f"unknown model.inner_optimizer {mc.inner_optimizer!r}; valid names: "
                     f"{', '.join(inner_optimizer_names())}")
  if "D" not in mc.energy:
    raise ValueError("target_prop needs a distance term 'D' in model.energy")
  if not isinstance(mc.inner_steps, int) or mc.inner_steps < 0:
    raise ValueError(f"config.model.inner_steps = {mc.inner_steps!r}: must be an integer >= 0")
  if not isinstance(mc.inner_lr, (int, float)) or not mc.inner_lr >= 0:
    raise ValueError(f"config.model.inner_lr = {mc.inner_lr!r}: must be > 0, or 0 for the "
                     "inner optimiser's own default")
  energies.make_energy(mc.energy).check_inputs(QUANTITIES, model="target_prop")


# What an energy term of target propagation may read.
QUANTITIES = ("y", "y_tilde", "z", "z_tilde")


def build(config, example_shape) -> Networks:
  validate(config)
  mc = config.model
  energy = energies.make_energy(mc.energy)
  lr = inner_learning_rate(mc)
  return Networks(
      encoder=modules.make_encoder(mc, mc.latent_dim, example_shape=example_shape,
                                   output_activation="identity"),
      decoder=modules.make_decoder(mc, example_shape=example_shape,
                                   output_activation=mc.get("output_activation", "sigmoid")),
      energy=energy,
      energy_no_d=energies.make_energy({k: v for k, v in mc.energy.items() if k != "D"}),
      inner_optimizer=(INNER_OPTIMIZERS[mc.inner_optimizer](lr)
                       if mc.inner_optimizer in INNER_OPTIMIZERS else None),
      inner_steps=int(mc.inner_steps), inner_lr=lr,
      accelerated=PROXIMAL_OPTIMIZERS.get(mc.inner_optimizer, False),
      smooth_energy=energies.Energy(tuple(t for t in energy.terms if not _is_l1(t))),
      l1_weight=sum(t.weight for t in energy.terms if _is_l1(t)))


def _is_l1(term: energies.TermSpec) -> bool:
  """An L1 penalty on the code, which the proximal loops take by its soft threshold."""
  return term.name == "l1" and term.inputs == ("z",) and term.kwargs.get("feature_ndim", 1) == 1


def infer(nets: Networks, params, y, *, num_steps: int | None = None):
  """(y flat, z̃, ž, trace of E(y, z) per inner step), ž from z̃ by the inner optimiser."""
  flat = y.reshape(y.shape[0], -1)
  z_tilde = nets.encoder.apply(params["encoder"], y)

  num_steps = nets.inner_steps if num_steps is None else num_steps

  def energy_of(energy, z):
    return energy(y=flat, y_tilde=nets.decoder.apply(params["decoder"], z), z=z,
                  z_tilde=jax.lax.stop_gradient(z_tilde))[0]

  if nets.inner_optimizer is None:
    result = inference.argmin_proximal(
        lambda z: energy_of(nets.smooth_energy, z), z_tilde, num_steps=num_steps,
        step_size=nets.inner_lr, l1_weight=nets.l1_weight, accelerated=nets.accelerated)
  else:
    result = inference.argmin(lambda z: energy_of(nets.energy, z), z_tilde,
                              num_steps=num_steps, optimizer=nets.inner_optimizer)
  return flat, z_tilde, result.z, result.trace


def make(config, example_shape):
  mc = config.model
  nets = build(config, example_shape)
  encoder, decoder, energy, energy_no_d = nets.encoder, nets.decoder, nets.energy, nets.energy_no_d

  def init(key, batch):
    k_enc, k_dec = jax.random.split(key)
    y = batch["y"][:1]
    z = jnp.zeros((1, mc.latent_dim), y.dtype)
    return {"encoder": encoder.init(k_enc, y), "decoder": decoder.init(k_dec, z)}

  def loss(params, batch, keys):
    del keys
    flat, z_tilde, z_check, _ = infer(nets, params, batch["y"])
    total, terms = energy(y=flat, y_tilde=decoder.apply(params["decoder"], z_check), z=z_check,
                          z_tilde=z_tilde)
    return metrics.mean_metrics(total, terms)

  def evaluate(params, batch, keys):
    del keys
    flat, z_tilde, z_check, _ = infer(nets, params, batch["y"])
    out = {}
    for name, z in (("encoder", z_tilde), ("inferred", z_check)):
      e, terms = energy_no_d(y=flat, y_tilde=decoder.apply(params["decoder"], z), z=z)
      out[f"energy_{name}"] = e
      out[f"reconstruction_{name}"] = terms["C"]
    out["amortisation_gap"] = metrics.amortisation_gap(out["energy_encoder"],
                                                       out["energy_inferred"])
    return out

  def encode(params, y):
    return encoder.apply(params["encoder"], y)  # z̃

  def decode(params, z):
    return decoder.apply(params["decoder"], z)

  def infer_codes(params, y):
    """(z̃, ž): the encoder's guess and the inner loop's minimiser of E = C + R + D."""
    _, z_tilde, z_check, _ = infer(nets, params, y)
    return z_tilde, z_check

  def reconstruct(params, y):
    return decode(params, infer_codes(params, y)[1])

  return Model(init, loss, evaluate, encode, decode, reconstruct,
               extras={"infer": infer_codes})
