"""Target propagation / amortised inference (08-3, Fig. 1).

z̃ = Enc(y); starting from z = z̃, ž = argmin_z E(y, z) with
E(y, z) = C(y, Dec(z)) + R(z) + D(z, z̃) (R = L1 by default: predictive sparse
decomposition). Then θ_Dec ← θ_Dec − η ∇C(y, Dec(ž)) and θ_Enc ← θ_Enc − η ∇D(ž, z̃),
ž held fixed: the loss is E(y, ž) with ž under stop_gradient, whose gradient w.r.t.
the decoder is ∇C and w.r.t. the encoder is ∇D (R has no parameters).

Config: ``model.latent_dim``, ``model.energy`` (C, R, D), ``model.inner_steps``,
``model.inner_optimizer`` ('sgd', 'momentum', 'adam', or the proximal 'ista' / 'fista', which
take an L1 R by its soft threshold, and their adaptive forms 'ista_bt' / 'fista_bt' /
'fista_bt_restart': the step by Beck & Teboulle's backtracking on the Lipschitz estimate, per
example, up to ``model.inner_max_backtracks`` increases by ``model.inner_backtrack_factor`` per
step, and FISTA's momentum reset when E rises, O'Donoghue & Candès's restart;
``inference.argmin_proximal_backtracking``) at ``model.inner_lr`` (0: the optimiser's own
default; for the backtracking loops the initial step 1/L₀), ``model.inner_convergence_window``
(m of ``inner_relative_change`` below), and the free energy the loss minimises:

* ``model.free_energy = 'min'`` (default): F∞(y) = E(y, ž), the zero-temperature limit above.
* ``'softmin'``: F_β(y) = −(1/β) log ∫_{ℝ^d} exp(−βE(y, z)) dz (Lebesgue measure on the
  unbounded latent space) at the finite ``model.beta``, by importance sampling with
  ``model.num_samples`` draws per example (the trainer's per-example key) from
  q = 𝒩(z̃, σ² I), σ = ``model.proposal_scale``, around the encoder's guess:
  F̂_β = −(1/β) log((1/n) Σ_k exp(−βE(y, z_k)) / q(z_k)). The mean weight is unbiased for
  ∫ exp(−βE) dz (q has full support) and F̂_β is consistent, biased by O(1/n) through the log.
  With D = λ_D ‖z − z̃‖², exp(−βE) ≤ exp(−βλ_D‖z − z̃‖²), so σ ≥ 1/√(2βλ_D) bounds every
  weight (C, R ≥ 0) and the variance stays finite. The draws are held fixed (z̃ is
  gradient-stopped in q), so autodiff of −(1/β) logsumexp is Σ_k p̄_k ∂E(y, z_k)/∂θ,
  p̄ = softmax(−βE − log q): the self-normalised estimate of ∂F_β/∂θ = E_{p_β(z|y)}[∂E/∂θ] —
  the decoder gets the posterior mean of ∇C, the encoder that of ∇D(z, z̃); no inner loop.
  ``model.softmin_proposal`` chooses q: 'encoder' (the default, above) or 'laplace':
  q = 𝒩(ž, diag σ²) around the inner loop's ž with σ_j = 1/√(β ∂²E/∂z_j²) at ž
  (``inference.laplace_proposal``: d Hessian-vector products per example; σ_j at most
  ``model.laplace_max_scale``, which also stands in where the curvature is not positive).
  Where E is close to quadratic around ž this is close to the posterior p_β(z|y), and the
  weights are close to equal; it costs the inner loop and d Hessian-vector products per
  example. Its tails follow the curvature at ž: where C adds curvature (h_j > 2λ_D) they are
  lighter than the bound exp(−βλ_D‖z − z̃‖²) above, so no weight bound holds; the effective
  sample size (below) says how it fares.

Test metrics: ``energy_encoder`` = (C + R)(y, z̃), ``energy_inferred`` = (C + R)(y, ž),
``amortisation_gap`` = their difference, ``reconstruction_encoder`` /
``reconstruction_inferred`` = C at z̃ / ž; how converged the inner loop is, so that one can
tell whether ``inner_steps`` is enough: ``inner_relative_change`` = |E(y, z_{n−m}) − E(y, ž)| /
|E(y, ž)| over its last m = min(``inner_convergence_window``, n) steps (n = ``inner_steps`` ≥ 1;
absent for n = 0), and ``inner_grad_norm`` = ‖∇_z E(y, ž)‖ for the (sub)gradient optimisers,
‖(ž − S_ηλ(ž − η∇f(ž)))/η‖ (the proximal gradient mapping, f = E − λ‖z‖₁) for ISTA / FISTA;
both ~0 at a converged ž. With an L1 R and a (sub)gradient optimiser the codes jitter around 0
by ~ηλ and ‖∂E‖ stays ~λ per such code: read ``inner_relative_change`` there. With
``free_energy = 'softmin'`` also ``free_energy`` (F̂_β per example) and ``softmin_ess``, Kish's
effective sample size (Σw)²/Σw² of its importance weights (out of ``num_samples``: how many
draws F̂_β rests on), which the train metrics report too (batch mean).
"""

import math
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


class Proximal(NamedTuple):
  """A proximal inner loop: the L1 term by its soft threshold, the rest of E by gradient steps."""

  accelerated: bool  # FISTA (Nesterov's momentum) rather than ISTA
  backtracking: bool = False  # the step by backtracking (inference.argmin_proximal_backtracking)
  restart: bool = False  # FISTA's momentum reset when E rises (with backtracking only)


PROXIMAL_OPTIMIZERS = {
    "ista": Proximal(False), "fista": Proximal(True),
    "ista_bt": Proximal(False, True), "fista_bt": Proximal(True, True),
    "fista_bt_restart": Proximal(True, True, True),
}
# Each inner optimiser's own step size, used when model.inner_lr = 0 (stable for the default
# 784-256-64 model: the step must stay below 1/L of the smooth part; Adam's is a step in z).
# The backtracking loops' is the initial step 1/L₀, which backtracking only shortens: 0.5 is
# 1/(2λ_D) at D's default weight, the curvature of D alone, so no smaller L can hold.
INNER_LR_DEFAULTS = {"sgd": 0.05, "momentum": 0.02, "adam": 0.05, "ista": 0.05, "fista": 0.05,
                     "ista_bt": 0.5, "fista_bt": 0.5, "fista_bt_restart": 0.5}


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
  proximal: Proximal | None = None  # the proximal loop's kind; None: a gradient optimiser
  backtrack_factor: float = 2.0  # η of the backtracking loops
  max_backtracks: int = 10  # their static maximum of increases of L per step


FREE_ENERGIES = ("min", "softmin")
SOFTMIN_PROPOSALS = ("encoder", "laplace")


def validate(config) -> None:
  """Target propagation's own keys, before any data is loaded."""
  mc = config.model

  def bad(key, why):
    raise ValueError(f"config.model.{key} = {mc[key]!r}: {why}")

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
  if not isinstance(mc.inner_convergence_window, int) or mc.inner_convergence_window < 1:
    bad("inner_convergence_window", "must be an integer >= 1 (inner steps m of "
        "inner_relative_change)")
  if mc.free_energy not in FREE_ENERGIES:
    bad("free_energy", f"must be one of {', '.join(FREE_ENERGIES)}")
  if not isinstance(mc.beta, (int, float)) or not mc.beta > 0:
    bad("beta", "must be > 0")
  if mc.free_energy == "softmin" and math.isinf(mc.beta):
    bad("beta", "free_energy = 'softmin' needs a finite β > 0 (β = inf is F∞: free_energy = "
        "'min')")
  if mc.free_energy == "min" and not math.isinf(mc.beta):
    bad("beta", "a finite β is the temperature of free_energy = 'softmin'; 'min' is F∞ "
        "(β = inf)")
  if not isinstance(mc.num_samples, int) or mc.num_samples < 2:
    bad("num_samples", "must be an integer >= 2 (the Monte Carlo draws per example)")
  if not isinstance(mc.proposal_scale, (int, float)) or not mc.proposal_scale > 0:
    bad("proposal_scale", "must be > 0 (σ of the Gaussian proposal around z̃)")
  if mc.softmin_proposal not in SOFTMIN_PROPOSALS:
    bad("softmin_proposal", f"must be one of {', '.join(SOFTMIN_PROPOSALS)}")
  if not isinstance(mc.laplace_max_scale, (int, float)) or not mc.laplace_max_scale > 0:
    bad("laplace_max_scale", "must be > 0 (the widest σ_j of the Laplace proposal)")
  if not isinstance(mc.inner_backtrack_factor, (int, float)) or not mc.inner_backtrack_factor > 1:
    bad("inner_backtrack_factor", "must be > 1 (η: L grows to η L per failed trial)")
  if not isinstance(mc.inner_max_backtracks, int) or mc.inner_max_backtracks < 0:
    bad("inner_max_backtracks", "must be an integer >= 0 (increases of L per inner step)")
  energies.make_energy(mc.energy).check_inputs(QUANTITIES, model="target_prop")


# What an energy term of target propagation may read.
QUANTITIES = ("y", "y_tilde", "z", "z_tilde")


def build(config, example_shape) -> Networks:
  validate(config)
  mc = config.model
  energy = energies.make_energy(mc.energy)
  lr = inner_learning_rate(mc)
  proximal = PROXIMAL_OPTIMIZERS.get(mc.inner_optimizer)
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
      accelerated=proximal is not None and proximal.accelerated,
      smooth_energy=energies.Energy(tuple(t for t in energy.terms if not _is_l1(t))),
      l1_weight=sum(t.weight for t in energy.terms if _is_l1(t)), proximal=proximal,
      backtrack_factor=float(mc.inner_backtrack_factor),
      max_backtracks=int(mc.inner_max_backtracks))


def _is_l1(term: energies.TermSpec) -> bool:
  """An L1 penalty on the code, which the proximal loops take by its soft threshold."""
  return term.name == "l1" and term.inputs == ("z",) and term.kwargs.get("feature_ndim", 1) == 1


class Inferred(NamedTuple):
  flat: Any  # y, one row per example
  z_tilde: Any  # z̃ = Enc(y)
  z_check: Any  # ž, gradient-stopped
  trace: Any  # E(y, z_t), t = 0 … n, shape (n + 1, B)
  grad: Any  # ∇_z E(y, ž), or the proximal gradient mapping (ISTA / FISTA), shape of ž


def infer(nets: Networks, params, y, *, num_steps: int | None = None) -> Inferred:
  """(y flat, z̃, ž, trace of E(y, z) per inner step, stationarity of ž), ž from z̃ by the
  inner optimiser."""
  flat = y.reshape(y.shape[0], -1)
  z_tilde = nets.encoder.apply(params["encoder"], y)

  num_steps = nets.inner_steps if num_steps is None else num_steps

  def energy_of(energy, z):
    return energy(y=flat, y_tilde=nets.decoder.apply(params["decoder"], z), z=z,
                  z_tilde=jax.lax.stop_gradient(z_tilde))[0]

  if nets.proximal is not None and nets.proximal.backtracking:
    result = inference.argmin_proximal_backtracking(
        lambda z: energy_of(nets.smooth_energy, z), z_tilde, num_steps=num_steps,
        step_size=nets.inner_lr, l1_weight=nets.l1_weight, accelerated=nets.accelerated,
        restart=nets.proximal.restart, backtrack_factor=nets.backtrack_factor,
        max_backtracks=nets.max_backtracks)
  elif nets.inner_optimizer is None:
    result = inference.argmin_proximal(
        lambda z: energy_of(nets.smooth_energy, z), z_tilde, num_steps=num_steps,
        step_size=nets.inner_lr, l1_weight=nets.l1_weight, accelerated=nets.accelerated)
  else:
    result = inference.argmin(lambda z: energy_of(nets.energy, z), z_tilde,
                              num_steps=num_steps, optimizer=nets.inner_optimizer)
  return Inferred(flat, z_tilde, result.z, result.trace, result.grad)


def convergence_metrics(inferred: Inferred, window: int) -> dict:
  """``inner_relative_change`` (absent for 0 inner steps) and ``inner_grad_norm`` per example."""
  out = {"inner_grad_norm": jnp.linalg.norm(inferred.grad, axis=-1)}
  if inferred.trace.shape[0] > 1:
    out["inner_relative_change"] = inference.relative_change(inferred.trace, window)
  return out


def softmin_estimate(nets: Networks, model_config, params, y, keys, *, beta=None,
                     num_samples=None, proposal=None) -> inference.MonteCarloFreeEnergy:
  """F̂_β(y) per example, its standard error and the weights' effective sample size (module
  docstring), one PRNG key per example. ``beta``, ``num_samples``, ``proposal`` ('encoder' |
  'laplace'): the config's unless given (static numbers and names)."""
  mc = model_config
  beta = float(mc.beta if beta is None else beta)
  num_samples = int(mc.num_samples if num_samples is None else num_samples)
  proposal = mc.softmin_proposal if proposal is None else proposal
  if proposal not in SOFTMIN_PROPOSALS:
    raise ValueError(f"proposal = {proposal!r}: must be one of {', '.join(SOFTMIN_PROPOSALS)}")
  flat = y.reshape(y.shape[0], -1)
  z_tilde = nets.encoder.apply(params["encoder"], y)
  # The Laplace proposal's centre: the inner loop's ž (gradient-stopped); z̃ otherwise.
  centre = infer(nets, params, y).z_check if proposal == "laplace" else z_tilde

  def one(y_i, z_tilde_i, centre_i, key):
    def e_i(z):  # E(y_i, z) for one latent z of shape (d,)
      return nets.energy(y=y_i[None], y_tilde=nets.decoder.apply(params["decoder"], z[None]),
                         z=z[None], z_tilde=z_tilde_i[None])[0][0]
    # Draws from q, held fixed: the gradient is E_p[∂E/∂θ] (module docstring).
    centre_i = jax.lax.stop_gradient(centre_i)
    q = (inference.laplace_proposal(e_i, centre_i, beta=beta,
                                    max_scale=float(mc.laplace_max_scale))
         if proposal == "laplace" else
         inference.gaussian_proposal(centre_i, float(mc.proposal_scale)))
    return inference.free_energy_softmin_mc(e_i, key, beta=beta, proposal=q,
                                            num_samples=num_samples)

  # One example per key, as the trainer hands them out: the same draws on any device count.
  return jax.vmap(one)(flat, z_tilde, centre, keys)


def make(config, example_shape):
  mc = config.model
  nets = build(config, example_shape)
  encoder, decoder, energy, energy_no_d = nets.encoder, nets.decoder, nets.energy, nets.energy_no_d
  softmin = mc.free_energy == "softmin"

  def free_energy_mc(params, y, keys, **overrides):
    """F̂_β(y) per example, its standard error and effective sample size (module docstring);
    ``softmin_estimate``'s keywords (beta, num_samples, proposal) override the config's."""
    return softmin_estimate(nets, mc, params, y, keys, **overrides)

  def init(key, batch):
    k_enc, k_dec = jax.random.split(key)
    y = batch["y"][:1]
    z = jnp.zeros((1, mc.latent_dim), y.dtype)
    return {"encoder": encoder.init(k_enc, y), "decoder": decoder.init(k_dec, z)}

  def loss(params, batch, keys):
    if softmin:
      mc_estimate = free_energy_mc(params, batch["y"], keys)
      value = jnp.mean(mc_estimate.free_energy)
      return value, {"loss": value, "free_energy": value,
                     "free_energy_stderr": jnp.mean(mc_estimate.stderr),
                     "softmin_ess": jnp.mean(mc_estimate.ess)}
    flat, z_tilde, z_check, _, _ = infer(nets, params, batch["y"])
    total, terms = energy(y=flat, y_tilde=decoder.apply(params["decoder"], z_check), z=z_check,
                          z_tilde=z_tilde)
    return metrics.mean_metrics(total, terms)

  def evaluate(params, batch, keys):
    inferred = infer(nets, params, batch["y"])
    flat, z_tilde, z_check = inferred.flat, inferred.z_tilde, inferred.z_check
    out = convergence_metrics(inferred, mc.inner_convergence_window)
    for name, z in (("encoder", z_tilde), ("inferred", z_check)):
      e, terms = energy_no_d(y=flat, y_tilde=decoder.apply(params["decoder"], z), z=z)
      out[f"energy_{name}"] = e
      out[f"reconstruction_{name}"] = terms["C"]
    out["amortisation_gap"] = metrics.amortisation_gap(out["energy_encoder"],
                                                       out["energy_inferred"])
    if softmin:
      mc_estimate = free_energy_mc(params, batch["y"], keys)
      out["free_energy"], out["softmin_ess"] = mc_estimate.free_energy, mc_estimate.ess
    return out

  def encode(params, y):
    return encoder.apply(params["encoder"], y)  # z̃

  def decode(params, z):
    return decoder.apply(params["decoder"], z)

  def infer_codes(params, y):
    """(z̃, ž): the encoder's guess and the inner loop's minimiser of E = C + R + D."""
    inferred = infer(nets, params, y)
    return inferred.z_tilde, inferred.z_check

  def reconstruct(params, y):
    return decode(params, infer_codes(params, y)[1])

  def joint_energy(params, y, z):
    """E(y, z) = C(y, Dec(z)) + R(z) + D(z, Enc(y)) per example, (B,): the energy whose Gibbs
    density exp(−βE) the samplers draw (y, z) from. Unlike the loss's, Enc(y) is not
    gradient-stopped: ∂E/∂y goes through the encoder too."""
    flat = y.reshape(y.shape[0], -1)
    return energy(y=flat, y_tilde=decode(params, z), z=z, z_tilde=encode(params, y))[0]

  return Model(init, loss, evaluate, encode, decode, reconstruct, energy=joint_energy,
               extras={"infer": infer_codes, "free_energy_mc": free_energy_mc})
