"""The lecture's ellipse latent-variable energy model (weeks 7, 8 and 15).

g(z) = [w₁ cos z, w₂ sin z]; E(y, z) = C(y, g(z)) = [y₁ − w₁ cos z]² + [y₂ − w₂ sin z]².
The free energy is F∞(y) = min_z E(y, z) = E(y, ž) or the soft minimum
F_β(y) = −(1/β) log((1/|Z|) ∫_Z exp(−βE(y, z)) dz), Z = [0, 2π[, |Z| = 2π: the measure is the
uniform probability dz/|Z| on the circle, so F_β → ⟨E⟩_z as β → 0 and → F∞ as β → ∞.
Training minimises the energy loss ℓ = F(y), averaged over the samples.

Config (``config.model``): ``init_w`` (w₁, w₂ before training), ``num_latent_points``
(N = 48), ``inference`` ('grid': ž on the grid; 'argmin': refined from the grid's best point
by ``inner_steps`` of gradient descent at rate ``inner_lr``), ``energy`` (the C term), and
the free energy:

* ``free_energy``: 'min' (F∞ = E(y, ž), ž held fixed: the envelope theorem) or 'softmin'
  (F_β at ``beta``, finite). A finite ``beta`` with 'min' also gives F_β: that is what a
  finite ``model.beta`` meant before ``free_energy`` existed, and β sweeps that set only
  ``model.beta`` (the figures' F_β sections) rely on it.
* ``softmin_estimator``: 'grid' — the N-point rectangle rule on z ∈ [0 : 2π/N : 2π[,
  −(1/β) logsumexp_k(−βE(y, z_k)) + (1/β) log N, exact to exponential order for this smooth
  periodic integrand once the spacing is below the width 1/√(βE'') of exp(−βE); or 'mc' —
  importance sampling with ``num_samples`` draws per example from the trainer's per-example
  key: q = α U[0, 2π[ + (1 − α) 𝒩_wrapped(ž, σ²) (α = ``proposal_uniform_weight``,
  σ = ``proposal_scale``), and (1/|Z|)∫exp(−βE) dz = E_q[exp(−βE(y, z)) / (|Z| q(z))]. The
  mean weight is unbiased for any q with full support on Z and F̂_β = −(1/β) log(mean weight)
  is consistent (its bias, from the log, is O(1/num_samples)); the wrapped Gaussian puts
  the draws where exp(−βE) is large at large β, and the uniform part (α > 0) bounds every
  weight by exp(−βF∞)/α, so the variance stays finite where ž misses the global minimum
  (the ellipse's E(y, ·) often has a second, local one). ``softmin_proposal`` sets the
  wrapped Gaussian's σ: 'wrapped' (the default) σ = ``proposal_scale``; 'laplace'
  σ = 1/√(β E''(ž)), the width of exp(−βE) at ž (``inference.laplace_scale``), at most
  ``laplace_max_scale`` (also where E''(ž) ≤ 0), so that one proposal fits every β.

Gradients of F_β: the draws are held fixed (ž is gradient-stopped), so autodiff of
−(1/β) logsumexp gives Σ_k p̄_k ∂E(y, z_k)/∂w with p̄ = softmax(−βE − log q): the
self-normalised importance-sampling estimate of ∂F_β/∂w = E_{p_β(z|y)}[∂E(y, z)/∂w], with
p_β(z|y) ∝ exp(−βE(y, z)); on the grid the same with p̄ = softmax(−βE(y, z_k)).

Test metrics: ``free_energy`` (F per example), ``w1``, ``w2`` (|w₁|, |w₂|); with the Monte
Carlo F_β also ``softmin_ess``, Kish's effective sample size (Σw)²/Σw² of the importance
weights out of ``num_samples`` (in the train metrics too, as a batch mean).
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


FREE_ENERGIES = ("min", "softmin")
SOFTMIN_ESTIMATORS = ("grid", "mc")
SOFTMIN_PROPOSALS = ("wrapped", "laplace")


def uses_softmin(model_config) -> bool:
  """F_β rather than F∞: ``free_energy = 'softmin'``, or any finite ``beta`` (see above)."""
  return model_config.free_energy == "softmin" or not math.isinf(float(model_config.beta))


def validate(config) -> None:
  """The ellipse model's own keys, before any data is loaded."""
  mc = config.model

  def bad(key, why):
    raise ValueError(f"config.model.{key} = {mc[key]!r}: {why}")

  if not isinstance(mc.beta, (int, float)) or not mc.beta > 0:
    bad("beta", "must be > 0 (inf for the zero-temperature limit F∞)")
  if mc.free_energy not in FREE_ENERGIES:
    bad("free_energy", f"must be one of {', '.join(FREE_ENERGIES)}")
  if mc.free_energy == "softmin" and math.isinf(mc.beta):
    bad("free_energy", "the soft minimum F_β needs a finite model.beta > 0 (β = inf is F∞: "
        "free_energy = 'min')")
  if mc.softmin_estimator not in SOFTMIN_ESTIMATORS:
    bad("softmin_estimator", f"must be one of {', '.join(SOFTMIN_ESTIMATORS)}")
  if not isinstance(mc.num_samples, int) or mc.num_samples < 2:
    bad("num_samples", "must be an integer >= 2 (the Monte Carlo draws per example)")
  if not isinstance(mc.proposal_scale, (int, float)) or not mc.proposal_scale > 0:
    bad("proposal_scale", "must be > 0 (σ of the wrapped Gaussian around ž, in radians)")
  if mc.softmin_proposal not in SOFTMIN_PROPOSALS:
    bad("softmin_proposal", f"must be one of {', '.join(SOFTMIN_PROPOSALS)}")
  if not isinstance(mc.laplace_max_scale, (int, float)) or not 0 < mc.laplace_max_scale <= math.pi:
    bad("laplace_max_scale", "must be in ]0, π] (the widest Laplace σ in radians; wider is "
        "about uniform, which the proposal's uniform part already is)")
  if not isinstance(mc.proposal_uniform_weight, (int, float)) or not (
      0 <= mc.proposal_uniform_weight <= 1):
    bad("proposal_uniform_weight", "must be in [0, 1] (the uniform part α of the proposal)")
  if mc.inference not in ("grid", "argmin"):
    raise ValueError(f"model.inference must be 'grid' or 'argmin', got {mc.inference!r}")
  if not isinstance(mc.num_latent_points, int) or mc.num_latent_points < 2:
    raise ValueError(f"config.model.num_latent_points = {mc.num_latent_points!r}: must be an "
                     "integer >= 2")
  if len(mc.init_w) != 2:
    raise ValueError(f"config.model.init_w = {tuple(mc.init_w)!r}: must be (w₁, w₂)")
  energies.make_energy(mc.energy).check_inputs(("y", "y_tilde"), model="ellipse")


def softmin_mc(energy_of, model_config, y, z_check, keys, *, beta: float,
               num_samples: int | None = None,
               proposal: str | None = None) -> inference.MonteCarloFreeEnergy:
  """F̂_β(y) per example by importance sampling (module docstring), its standard error and the
  weights' effective sample size; ``energy_of(y_i)`` is z ↦ E(y_i, z) for a batch of one.

  q = α U[0, 2π[ + (1 − α) 𝒩_wrapped(ž, σ²) with σ = ``proposal_scale`` ('wrapped') or the
  Laplace scale 1/√(β E''(ž)) ('laplace', at most ``laplace_max_scale``).
  ``num_samples``, ``proposal``: the config's unless given (a static number and a name).
  """
  mc = model_config
  num_samples = int(mc.num_samples if num_samples is None else num_samples)
  proposal = mc.softmin_proposal if proposal is None else proposal
  if proposal not in SOFTMIN_PROPOSALS:
    raise ValueError(f"proposal = {proposal!r}: must be one of {', '.join(SOFTMIN_PROPOSALS)}")
  alpha, period = float(mc.proposal_uniform_weight), 2 * math.pi

  def one(y_i, z_i, key):
    e_i = lambda z: energy_of(y_i[None])(z)[0]  # z: (1,) -> E(y_i, z)
    sigma = (inference.laplace_scale(e_i, z_i, beta=beta, max_scale=float(mc.laplace_max_scale))
             if proposal == "laplace" else float(mc.proposal_scale))
    q = inference.mixture_proposal(
        (inference.uniform_proposal(0.0, period, z_i.shape),
         inference.wrapped_gaussian_proposal(z_i, sigma, 0.0, period,
                                             max_sigma=float(mc.laplace_max_scale))),
        (alpha, 1.0 - alpha))
    return inference.free_energy_softmin_mc(e_i, key, beta=beta, proposal=q,
                                            num_samples=num_samples, log_volume=math.log(period))

  # One example per key, as the trainer hands them out: a run draws the same numbers on any
  # number of devices.
  return jax.vmap(one)(y, jax.lax.stop_gradient(z_check), keys)


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

  softmin = uses_softmin(mc)
  monte_carlo = softmin and mc.softmin_estimator == "mc"

  def search(w, y):
    """ž (grid, refined by gradient descent with inference = 'argmin') and the grid's E."""
    e = energy_fn(w, y)
    grid_search = inference.argmin_grid(e, grid)
    z_check = grid_search.z
    if mc.inference == "argmin":
      z_check = inference.argmin(e, z_check, num_steps=mc.inner_steps,
                                 learning_rate=mc.inner_lr).z
    return z_check, grid_search.energies

  def free_energy_mc(params, y, keys, **overrides):
    """``softmin_mc`` around ž (F̂_β, its standard error, the ESS); its keywords (beta,
    num_samples, proposal) override the config's."""
    w = params["w"]
    z_check, _ = search(w, y)
    return softmin_mc(lambda y_i: energy_fn(w, y_i), mc, y, z_check, keys,
                      **{"beta": beta, **overrides})

  def estimate(params, y, keys):
    """(F(y) per example, ž, the Monte Carlo estimate or None)."""
    w = params["w"]
    z_check, grid_energies = search(w, y)
    if not softmin:
      return inference.free_energy_min(energy_fn(w, y), z_check), z_check, None
    if monte_carlo:
      if keys is None:
        raise ValueError("the Monte Carlo F_β (model.softmin_estimator = 'mc') needs one PRNG "
                         "key per example")
      mc_estimate = softmin_mc(lambda y_i: energy_fn(w, y_i), mc, y, z_check, keys, beta=beta)
      return mc_estimate.free_energy, z_check, mc_estimate
    return inference.free_energy_softmin(grid_energies, beta), z_check, None

  def free_energy(params, y, keys=None):
    """F(y) per example (F∞, or F_β by the configured estimator), and ž (grid/argmin).

    ``keys``: one PRNG key per example, needed by the Monte Carlo estimator only.
    """
    return estimate(params, y, keys)[:2]

  def init(key, batch):
    del key, batch
    return {"w": jnp.asarray(mc.init_w, jnp.float32)}

  def loss(params, batch, keys):
    f, _, mc_estimate = estimate(params, batch["y"], keys)
    value = jnp.mean(f)
    out = {"loss": value, "free_energy": value}
    if mc_estimate is not None:
      out["softmin_ess"] = jnp.mean(mc_estimate.ess)
    return value, out

  def evaluate(params, batch, keys):
    f, _, mc_estimate = estimate(params, batch["y"], keys)
    w = jnp.abs(params["w"])
    out = {"free_energy": f, "w1": w[0], "w2": w[1]}
    if mc_estimate is not None:
      out["softmin_ess"] = mc_estimate.ess
    return out

  def decode_fn(params, z):
    return decode(params["w"], z)

  return Model(init, loss, evaluate, decode=decode_fn, free_energy=free_energy,
               extras={"free_energy": free_energy, "free_energy_mc": free_energy_mc,
                       "energy": lambda params, y: energy_fn(params["w"], y)})
