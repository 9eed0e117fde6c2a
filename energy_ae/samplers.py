"""Samplers: new data from a trained model's public functions and a key (issue #23).

``draw(model, params, key, sample_config, train=..., value_range=...)`` returns ``Samples``;
``sample_config`` is a run's ``config.sample`` and ``sample_config.sampler`` one of:

* ``langevin`` / ``mala``: a Markov chain on a Gibbs density p(v) ∝ exp(−β U(v)) at
  β = ``beta``, one chain per sample, ``num_steps`` steps of size ε = ``step_size``, started
  as ``init`` says (``chain_start``: uniform in the data's value range, or training examples);
  the sample is each chain's last state.
  Unadjusted Langevin (ULA, BlackJAX's overdamped Langevin step):
  v ← v + ε ∇log p(v) + √(2ε) ξ, ξ ~ N(0, I); its stationary law is p only as ε → 0 (for a
  Gaussian p = N(m, Σ) it is N(m, Σ (I − εΣ⁻¹/2)⁻¹) exactly). MALA (BlackJAX's ``mala``): the
  same move accepted with the Metropolis–Hastings probability, so that p itself is stationary.

  - U = F(y) (``Model.free_energy``: the ellipse; the horn at an x drawn per chain from the
    training x). With the soft minimum F_β at the same β, exp(−β F_β(y)) ∝ ∫ exp(−β E(y, z)) dz
    is y's marginal of the joint Gibbs density; with F∞ at large β the samples lie within
    ~1/√(2β) of the learned manifold (the normal offset t has density ∝ exp(−β t²)).
  - U = E(y, z) (``Model.energy``: target propagation), v = (y, z) jointly, z started at
    Enc(y₀). The sample is Dec(z), the mean of C's Gaussian at the sampled code (as a VAE's
    samples are its decoder's means); the chain's own y is ``Samples.y_chain``.
* ``walkback``: the denoising autoencoder's Markov chain (Bengio et al. 2013, "Generalized
  Denoising Auto-Encoders as Generative Models"): ŷ ~ C(ŷ | y_t) by the model's corruption,
  y_{t+1} = r(ŷ) + σ ε (r the reconstruction, σ = ``reconstruction_noise``: 0 takes the mean
  of P(y | ŷ)), ``num_steps`` times from ``init`` (uniform noise, or training examples).
* ``gmm``: a Gaussian mixture of ``gmm_components`` components (scikit-learn, covariance
  ``gmm_covariance``) fitted to the training codes Enc(y), sampled and decoded (pythae's
  GaussianMixtureSampler; Ghosh et al. 2020's ex-post density estimation).
* ``prior``: z ~ the model's prior (``Model.sample_prior``), decoded: a VAE's Dec(z), z ~ N(0, I).

Which a model supports follows from the public functions it has (``supported``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import diffusions

from energy_ae.models import Model

SAMPLERS = ("langevin", "mala", "walkback", "gmm", "prior")
GMM_COVARIANCES = ("full", "diag", "tied", "spherical")
CHAIN_STARTS = ("noise", "data")


class Samples(NamedTuple):
  y: Any  # (N, *example_shape): the samples, in the data's pre-processed range
  x: Any = None  # (N, ...): the condition of each sample (the horn's x), or None
  z: Any = None  # (N, d): the codes they were decoded from, or None
  y_chain: Any = None  # (N, *example_shape): the joint chain's own y (target prop), or None
  info: Mapping[str, float] = {}  # diagnostics: acceptance_rate, mean_energy, ...


def supported(model: Model) -> list[str]:
  """The samplers ``model``'s public functions allow, in ``SAMPLERS`` order."""
  have = {"langevin": model.free_energy is not None or model.energy is not None,
          "walkback": model.corrupt is not None and model.reconstruct is not None,
          "gmm": model.encode is not None and model.decode is not None,
          "prior": model.sample_prior is not None and model.decode is not None}
  have["mala"] = have["langevin"]
  return [name for name in SAMPLERS if have[name]]


def validate(sample_config) -> None:
  """``config.sample``'s keys: a one-line ValueError naming the first bad one."""
  sc = sample_config

  def bad(key, must):
    raise ValueError(f"config.sample.{key} = {sc[key]!r}: must {must}")

  def is_int(v, low):
    return isinstance(v, int) and not isinstance(v, bool) and v >= low

  def is_number(v, low, strict):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return ok and (v > low if strict else v >= low)

  if sc.sampler not in SAMPLERS:
    bad("sampler", f"be one of {', '.join(SAMPLERS)}")
  for key, low in (("num_samples", 2), ("num_steps", 1), ("gmm_components", 1)):
    if not is_int(sc[key], low):
      bad(key, f"be an integer >= {low}")
  for key in ("step_size", "beta"):
    if not is_number(sc[key], 0, strict=True):
      bad(key, "be finite and > 0")
  if not is_number(sc.reconstruction_noise, 0, strict=False):
    bad("reconstruction_noise", "be finite and >= 0 (0: the reconstruction's mean)")
  if sc.init not in CHAIN_STARTS:
    bad("init", f"be one of {', '.join(CHAIN_STARTS)}")
  if sc.gmm_covariance not in GMM_COVARIANCES:
    bad("gmm_covariance", f"be one of {', '.join(GMM_COVARIANCES)}")


def draw(model: Model, params, key: jax.Array, sample_config, *, train: Mapping[str, Any],
         value_range: tuple[float, float]) -> Samples:
  """``sample_config.num_samples`` samples by ``sample_config.sampler``.

  ``train``: the training split ({"y", and "x" for a conditional model}): the GMM's codes,
  the horn's x; ``value_range``: the data's (low, high), where the chains start.
  """
  validate(sample_config)
  name = sample_config.sampler
  if name not in supported(model):
    raise ValueError(f"config.sample.sampler = {name!r}: this model supports "
                     f"{', '.join(supported(model)) or 'no sampler'}")
  fn = {"langevin": gibbs, "mala": gibbs, "walkback": walkback, "gmm": gmm,
        "prior": prior}[name]
  return fn(model, params, key, sample_config, train=train, value_range=value_range)


# ----------------------------------------------------------------------------
# Langevin and MALA
# ----------------------------------------------------------------------------


def langevin_chains(log_density: Callable, key: jax.Array, init, *, step_size: float,
                    num_steps: int, adjusted: bool, condition=None):
  """Runs one chain per leading index of ``init`` (a pytree) for ``num_steps`` steps.

  ``log_density(v, c)``: log p of one chain's state v (up to a constant) given its own
  ``condition`` c (a pytree with the same leading axis, or None). ``adjusted``: MALA, else
  ULA. Returns (last states, acceptance rate per chain: the fraction of accepted moves, 1 for
  ULA).
  """

  def one_chain(chain_key, v0, c):
    logp = lambda v: log_density(v, c)
    if adjusted:
      algorithm = blackjax.mala(logp, step_size)
      state = algorithm.init(v0)

      def step(s, k):
        s, info = algorithm.step(k, s)
        return s, info.is_accepted
    else:
      move = diffusions.overdamped_langevin(jax.value_and_grad(logp))
      state = diffusions.DiffusionState(v0, *jax.value_and_grad(logp)(v0))

      def step(s, k):
        return move(k, s, step_size), jnp.bool_(True)

    state, accepted = jax.lax.scan(step, state, jax.random.split(chain_key, num_steps))
    return state.position, jnp.mean(accepted.astype(jnp.float32))

  num_chains = jax.tree.leaves(init)[0].shape[0]
  return jax.vmap(one_chain)(jax.random.split(key, num_chains), init, condition)


def gibbs(model: Model, params, key, sc, *, train, value_range) -> Samples:
  """Langevin / MALA on exp(−β F(y)) (free-energy models) or exp(−β E(y, z)) (joint)."""
  k_init, k_chain = jax.random.split(key)
  beta = float(sc.beta)
  y0, x = chain_start(k_init, sc, train, value_range, with_x=True)
  if model.free_energy is not None:
    cond = lambda c: () if c is None else (c,)  # the horn's x; the ellipse takes none
    energy = lambda v, c: model.free_energy(params, v[None],
                                            *cond(None if c is None else c[None]))[0][0]
    # Chains start on the learned manifold, at g(ž) of y₀: from afar exp(−βF) is so steep that
    # MALA rejects every move (ULA would overshoot back and forth instead).
    init = jax.jit(lambda u, c: model.decode(params, model.free_energy(params, u, *cond(c))[1],
                                             *cond(c)))(y0, x)
  else:
    energy = lambda v, c: model.energy(params, v["y"][None], v["z"][None])[0]
    init = {"y": y0, "z": model.encode(params, y0)}
  run = jax.jit(lambda k, v, c: langevin_chains(
      lambda v_, c_: -beta * energy(v_, c_), k, v, step_size=float(sc.step_size),
      num_steps=int(sc.num_steps), adjusted=sc.sampler == "mala", condition=c))
  last, acceptance = run(k_chain, init, x)
  final_energy = jax.jit(jax.vmap(energy))(last, x)
  info = {"finite_fraction": _finite_fraction(last),
          "mean_energy": float(jnp.nanmean(final_energy))}
  if sc.sampler == "mala":
    info["acceptance_rate"] = float(jnp.mean(acceptance))
  if model.free_energy is not None:
    return Samples(last, x=x, info=info)
  return Samples(model.decode(params, last["z"]), z=last["z"], y_chain=last["y"], info=info)


def chain_start(key, sc, train, value_range, *, with_x: bool = False):
  """The chains' first states y₀ (num_samples of them): uniform in the data's value range
  (``sample.init = 'noise'``) or training examples drawn with replacement ('data'); with
  ``with_x``, also the condition x of each chain, a training x (None for unconditional data)."""
  k_noise, k_index = jax.random.split(key)
  num = int(sc.num_samples)
  index = jax.random.randint(k_index, (num,), 0, len(train["y"]))
  if sc.init == "data":
    y0 = jnp.asarray(train["y"])[index]
  else:
    y0 = jax.random.uniform(k_noise, (num, *np.shape(train["y"])[1:]), minval=value_range[0],
                            maxval=value_range[1])
  if not with_x:
    return y0
  # A conditional model: each chain at the x of one training example (its y, for 'data').
  return y0, (jnp.asarray(train["x"])[index] if "x" in train else None)


def _finite_fraction(tree) -> float:
  """The fraction of samples whose every value is finite (a diverged chain is not)."""
  ok = [jnp.all(jnp.isfinite(a.reshape(a.shape[0], -1)), -1) for a in jax.tree.leaves(tree)]
  return float(jnp.mean(jnp.all(jnp.stack(ok), 0)))


# ----------------------------------------------------------------------------
# The denoising autoencoder's walk-back chain
# ----------------------------------------------------------------------------


def walkback(model: Model, params, key, sc, *, train, value_range) -> Samples:
  """y_{t+1} = r(ŷ) + σ ε with ŷ ~ C(ŷ | y_t), from ``chain_start`` (module docstring)."""
  k_init, k_chain = jax.random.split(key)
  num, sigma = sc.num_samples, float(sc.reconstruction_noise)
  y0 = chain_start(k_init, sc, train, value_range)

  def step(y, k):
    k_corrupt, k_noise = jax.random.split(k)
    y = model.reconstruct(params, model.corrupt(jax.random.split(k_corrupt, num), y))
    return (y + sigma * jax.random.normal(k_noise, y.shape) if sigma else y), None

  run = jax.jit(lambda y, k: jax.lax.scan(step, y, jax.random.split(k, int(sc.num_steps)))[0])
  y = run(y0, k_chain)
  return Samples(y, info={"finite_fraction": _finite_fraction(y)})


# ----------------------------------------------------------------------------
# Densities on codes
# ----------------------------------------------------------------------------


class Mixture(NamedTuple):
  weights: Any  # (K,)
  means: Any  # (K, d)
  cholesky: Any  # (K, d, d): lower Cholesky factors of the covariances


def encode_all(model: Model, params, y, *, chunk: int = 1000) -> np.ndarray:
  """Enc(y) of a whole split, ``chunk`` examples at a time."""
  encode = jax.jit(model.encode)
  return np.concatenate([np.asarray(encode(params, jnp.asarray(y[i:i + chunk])))
                         for i in range(0, len(y), chunk)])


def fit_mixture(codes: np.ndarray, key: jax.Array, *, components: int,
                covariance: str = "full") -> Mixture:
  """A Gaussian mixture fitted by EM (scikit-learn, seeded from ``key``) to ``codes`` (N, d)."""
  from sklearn.mixture import GaussianMixture

  if components > len(codes):
    raise ValueError(f"config.sample.gmm_components = {components}: must be at most the "
                     f"{len(codes)} training codes")
  from threadpoolctl import threadpool_limits

  seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
  # One BLAS thread: EM's products of (N, d) by (d, d) matrices gain little from more, and
  # BLAS threads spinning beside XLA's own made the fit over ten times slower on 2 cores.
  with threadpool_limits(1):
    fitted = GaussianMixture(components, covariance_type=covariance, random_state=seed).fit(
        np.asarray(codes, np.float64))
  k, d = fitted.means_.shape
  cov = np.asarray(fitted.covariances_, np.float64)
  full = {"full": lambda: cov, "tied": lambda: np.broadcast_to(cov, (k, d, d)),
          "diag": lambda: cov[:, :, None] * np.eye(d),
          "spherical": lambda: cov[:, None, None] * np.eye(d)}[covariance]()
  return Mixture(jnp.asarray(fitted.weights_, jnp.float32), jnp.asarray(fitted.means_, jnp.float32),
                 jnp.asarray(np.linalg.cholesky(full), jnp.float32))


def sample_mixture(mixture: Mixture, key: jax.Array, num: int) -> jax.Array:
  """z = μ_k + L_k ε, k ~ Categorical(weights), ε ~ N(0, I): (num, d)."""
  k_component, k_noise = jax.random.split(key)
  k = jax.random.categorical(k_component, jnp.log(mixture.weights), shape=(num,))
  eps = jax.random.normal(k_noise, (num, mixture.means.shape[1]))
  return mixture.means[k] + jnp.einsum("nij,nj->ni", mixture.cholesky[k], eps)


def gmm(model: Model, params, key, sc, *, train, value_range) -> Samples:
  """Dec(z), z from a Gaussian mixture fitted to the training codes (module docstring)."""
  del value_range
  k_fit, k_sample = jax.random.split(key)
  mixture = fit_mixture(encode_all(model, params, train["y"]), k_fit,
                        components=int(sc.gmm_components), covariance=sc.gmm_covariance)
  z = sample_mixture(mixture, k_sample, int(sc.num_samples))
  y = jax.jit(model.decode)(params, z)
  return Samples(y, z=z, info={"finite_fraction": _finite_fraction(y)})


def prior(model: Model, params, key, sc, *, train, value_range) -> Samples:
  """Dec(z), z ~ the model's prior."""
  del train, value_range
  z = model.sample_prior(params, key, int(sc.num_samples))
  y = jax.jit(model.decode)(params, z)
  return Samples(y, z=z, info={"finite_fraction": _finite_fraction(y)})
