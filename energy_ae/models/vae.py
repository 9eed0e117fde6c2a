"""Variational autoencoder (08-3, Figs. 5-8).

Encoder y ↦ (μ, log v); z = μ + ε √v, ε ~ N(0, I) (reparameterisation); decoder
z ↦ logits of a Bernoulli likelihood (or the mean of a Gaussian one). Free energy
F̃(y) = C(y, ỹ) + β KL(N(μ, v) ‖ N(0, I)) [+ R(z)], β = ``model.beta``. C = −log p(y | z) is
fixed by ``model.likelihood`` (the importance-weighted metrics need its normaliser) and KL by
β; ``model.energy`` lists the role a user may add, R, a regulariser of the sampled code
(disabled: ``term = ""``; it reads ``z``, ``mu`` or ``logvar``, e.g.
``--config.model.energy.R.term=l1 --config.model.energy.R.weight=0.1`` for sparse codes).

Training objective ``model.objective``:

* ``elbo``: the free energy above, C (and R) averaged over ``model.train_samples`` = k
  reparameterised codes z_1 … z_k per example (the mean of k one-sample ELBO estimates, whose
  variance is 1/k of one's; Burda et al.'s "VAE, k = 5 / 50" rows), the KL analytic. Options:
  free bits λ = ``model.free_bits`` (nats per latent dimension, Kingma et al. 2016) in one of
  two forms, ``model.free_bits_form``: ``kingma`` (the default, the method of that name) floors
  the batch mean, Σ_j max(λ, mean_b KL_bj), the mean over the global batch across devices;
  ``per_example`` floors each example's, mean_b Σ_j max(λ, KL_bj). With B = 2 and KLs (0, 3λ)
  on one latent they give 1.5λ and 2λ: Kingma's keeps the gradient of the example below the
  floor while the batch is above it. A KL warm-up: β_t = β·min(1, t / ``model.kl_warmup_steps``)
  at optimiser step t, rising linearly from 0 (Sønderby et al. 2016).
* ``iwae``: −L_k with L_k = log (1/k) Σ_k p(y, z_k) / q(z_k | y) over k = ``model.train_samples``
  samples (Burda et al. 2015; β does not enter it). ``model.iwae_gradient``: ``standard`` (the
  gradient of −L_k) or ``dreg``, the doubly reparameterised estimator (Tucker, Lawson, Gu &
  Maddison 2019): the same loss value and decoder gradient Σ_k w̃_k ∇_θ log w_k, with the
  encoder's Σ_k w̃_k² (∂log w_k/∂z_k)(∂z_k/∂φ), q's parameters stopped inside log q(z_k | y);
  w̃_k = w_k / Σ_l w_l. The standard encoder gradient's signal-to-noise ratio falls like 1/√k
  (Rainforth et al. 2018), DReG's does not.

Test metrics: ``nelbo`` = C + KL (β = 1, one z sample, nats per example) and the
importance-weighted estimate with ``model.iw_samples`` samples (Burda et al., 2015) of
−log p(y), named ``nll_iw`` where the likelihood is normalised for the data (a Gaussian, or a
Bernoulli on binary data: ``data.binarize = 'dynamic'``, whose test split is binarised once),
``bce_iw`` otherwise: on grey-level pixels a Bernoulli "likelihood" is a cross-entropy and the
estimate bounds that, not −log p(y). The final evaluation draws ``model.iw_samples_final``
samples instead (0: as many as the others), e.g. the literature's k = 5,000.
Posterior collapse, at every evaluation over the test split: ``kl_per_dim`` (a list: the
mean KL of each latent), ``active_units`` (latents with Cov_y(E_q[z_j]) >
``model.active_units_threshold``, Burda et al.'s 0.01) and ``mutual_info`` (I_q(y; z), see
``metrics.mutual_information``). Reconstructions use z = μ.
"""

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from energy_ae import collectives, config_checks, energies, keys as keys_lib
from energy_ae import metrics as metrics_lib
from energy_ae.models import Model, modules

LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("elbo", "iwae")
FREE_BITS_FORMS = ("kingma", "per_example")
IWAE_GRADIENTS = ("standard", "dreg")
LOG_2PI = math.log(2 * math.pi)


class VAE(nn.Module):
  latent_dim: int
  example_shape: tuple
  config: dict

  def setup(self):
    self.encoder = modules.make_encoder(self.config, 2 * self.latent_dim,
                                        example_shape=self.example_shape,
                                        output_activation="identity")
    self.decoder = modules.make_decoder(self.config, example_shape=self.example_shape,
                                        output_activation="identity")

  def encode(self, y):
    stats = self.encoder(y)
    return stats[:, : self.latent_dim], stats[:, self.latent_dim:]  # μ, log v

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, y):
    mu, _ = self.encode(y)
    return self.decode(mu)


def _log_likelihood(likelihood, decoder_std):
  """log p(y | z) per example from the decoder output."""
  if likelihood == "bernoulli":
    return lambda y, out: -energies.bernoulli_nll(y, out)
  log_norm = math.log(2 * math.pi * decoder_std**2)
  return lambda y, out: -0.5 * (energies.squared_error(y, out) / decoder_std**2
                                + y.shape[-1] * log_norm)


def build(config, example_shape) -> VAE:
  mc = config.model
  return VAE(int(mc.latent_dim), tuple(example_shape), mc.to_dict())


# ----------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------


def _check_count(mc, field, default, low, why):
  value = mc.get(field, default)
  if not isinstance(value, int) or isinstance(value, bool) or value < low:
    raise ValueError(f"config.model.{field} = {value!r}: must be an integer >= {low}{why}")
  return value


def _check_name(mc, field, default, names):
  value = mc.get(field, default)
  if value not in names:
    raise ValueError(f"config.model.{field} = {value!r}: unknown; valid names: {', '.join(names)}")
  return value


def validate(config) -> None:
  """The VAE's own keys, before any data is loaded."""
  mc = config.model
  if mc.likelihood not in LIKELIHOODS:
    raise ValueError(f"unknown model.likelihood {mc.likelihood!r}; valid names: "
                     f"{', '.join(LIKELIHOODS)}")
  if not config_checks.is_traced(mc.beta) and (
      not isinstance(mc.beta, (int, float)) or not mc.beta >= 0):
    raise ValueError(f"config.model.beta = {mc.beta!r}: must be >= 0")
  for field in ("iw_samples", "iw_chunk"):
    value = mc.get(field, 1)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"config.model.{field} = {value!r}: must be a positive integer "
                       "(k of the importance sampler)")
  std = mc.get("decoder_std", 1.0)
  if not isinstance(std, (int, float)) or not std > 0:
    raise ValueError(f"config.model.decoder_std = {std!r}: must be > 0")
  objective = mc.get("objective", "elbo")
  if objective not in OBJECTIVES:
    raise ValueError(f"config.model.objective = {objective!r}: unknown objective; valid names: "
                     f"{', '.join(OBJECTIVES)}")
  _check_count(mc, "train_samples", 1, 1, "")
  free_bits = mc.get("free_bits", 0.0)
  if not isinstance(free_bits, (int, float)) or not free_bits >= 0:
    raise ValueError(f"config.model.free_bits = {free_bits!r}: must be >= 0 (nats per latent "
                     "dimension)")
  _check_name(mc, "free_bits_form", "kingma", FREE_BITS_FORMS)
  gradient = _check_name(mc, "iwae_gradient", "standard", IWAE_GRADIENTS)
  warmup = _check_count(mc, "kl_warmup_steps", 0, 0, " (0: no warm-up)")
  _check_count(mc, "iw_samples_final", 0, 0, " (0: model.iw_samples)")
  threshold = mc.get("active_units_threshold", 0.01)
  if not isinstance(threshold, (int, float)) or not threshold >= 0:
    raise ValueError(f"config.model.active_units_threshold = {threshold!r}: must be >= 0")
  regulariser = _regulariser(mc)
  if regulariser is not None:
    regulariser.check_inputs(("z", "mu", "logvar"), model="vae")
  if objective == "elbo" and gradient != "standard":
    raise ValueError(f"config.model.iwae_gradient = {gradient!r} is an estimator of the IWAE "
                     "bound's gradient; model.objective = 'elbo' takes 'standard' (or use 'iwae')")
  if objective == "iwae":  # the bound has no KL term for these to act on
    for field, value in (("free_bits", free_bits), ("kl_warmup_steps", warmup)):
      if value:
        raise ValueError(f"config.model.{field} = {value!r} acts on the ELBO's KL term; "
                         "model.objective = 'iwae' has none (set it to 0, or use 'elbo')")
    if regulariser is not None:
      raise ValueError("config.model.energy.R is a term of the ELBO's free energy; "
                       "model.objective = 'iwae' takes none (set its term to '')")


def _regulariser(model_config):
  """The optional R(z) of ``model.energy`` (None when absent or disabled)."""
  spec = model_config.get("energy", None)
  if not spec or all(energies.is_disabled(term) for term in spec.values()):
    return None
  unknown = sorted(set(spec) - {"R"})
  if unknown:
    raise ValueError(f"config.model.energy has roles {unknown} the VAE does not take; its C is "
                     "model.likelihood, its KL weight model.beta, and R the one role to add")
  return energies.make_energy(spec)


def _check_value_range(config, value_range) -> None:
  mc = config.model
  if mc.likelihood == "bernoulli" and value_range is not None and not (
      value_range[0] >= 0.0 and value_range[1] <= 1.0):
    raise ValueError(
        f"model.likelihood = 'bernoulli' needs targets in [0, 1] but data {config.data.name!r} "
        f"spans [{value_range[0]:g}, {value_range[1]:g}]; set data.range='unit'")


class Settings(NamedTuple):
  """The hyper-parameters the VAE's functions read, taken from ``config.model`` once."""

  objective: str
  train_samples: int  # k of the k-sample ELBO or of L_k
  beta: Any  # a float, or a traced value in a sweep (energy_ae.sweep)
  free_bits: float
  free_bits_form: str
  warmup_steps: int
  iwae_gradient: str
  iw_samples: int
  iw_samples_final: int
  iw_chunk: int
  iw_name: str  # nll_iw or bce_iw
  active_units_threshold: float


def settings(config) -> Settings:
  mc = config.model
  # −log p(y) only where the likelihood is normalised for the data: a Gaussian, or a Bernoulli
  # on binary data. On grey-level pixels the same estimator bounds a cross-entropy instead.
  binary = config.get("data", {}).get("binarize", "none") == "dynamic"
  return Settings(
      objective=mc.get("objective", "elbo"), train_samples=int(mc.get("train_samples", 1)),
      beta=mc.beta if config_checks.is_traced(mc.beta) else float(mc.beta),
      free_bits=float(mc.get("free_bits", 0.0)),
      free_bits_form=mc.get("free_bits_form", "kingma"),
      warmup_steps=int(mc.get("kl_warmup_steps", 0)),
      iwae_gradient=mc.get("iwae_gradient", "standard"),
      iw_samples=int(mc.iw_samples), iw_samples_final=int(mc.get("iw_samples_final", 0)),
      iw_chunk=int(mc.get("iw_chunk", 100)),
      iw_name="nll_iw" if mc.likelihood == "gaussian" or binary else "bce_iw",
      active_units_threshold=float(mc.get("active_units_threshold", 0.01)))


# ----------------------------------------------------------------------------
# Terms
# ----------------------------------------------------------------------------


def kl_per_dim(mu, logvar):
  """KL_bj = ½ (v − log v − 1 + μ²) per example b and latent dimension j, (B, d)."""
  return 0.5 * (jnp.exp(logvar) - logvar - 1.0 + jnp.square(mu))


def free_bits_penalty(per_dim, floor: float, form: str = "kingma"):
  """The KL term of the loss from KL_bj (B, d) with free bits λ = ``floor``:

  * ``kingma`` (Kingma et al. 2016): Σ_j max(λ, (1/B) Σ_b KL_bj), the mean over the GLOBAL batch
    (``collectives.global_mean``: the same loss on any number of devices); a latent pays at
    least λ on average over the batch, and while its mean is above λ every example's KL has
    its gradient, those below λ included;
  * ``per_example``: (1/B) Σ_b Σ_j max(λ, KL_bj), each example's own floor (an example below λ
    gets no KL gradient on that latent);
  * λ = 0: (1/B) Σ_b Σ_j KL_bj, the plain ELBO's, in both forms.
  """
  if not floor:
    return jnp.mean(jnp.sum(per_dim, -1))
  if form == "kingma":
    return jnp.sum(jnp.maximum(collectives.global_mean(per_dim, axis=0), floor))
  if form == "per_example":
    return jnp.mean(jnp.sum(jnp.maximum(per_dim, floor), -1))
  raise ValueError(f"config.model.free_bits_form = {form!r}: unknown; valid names: "
                   f"{', '.join(FREE_BITS_FORMS)}")


def _kl_weight(s: Settings, step):
  """β_t = β·min(1, t / T_warm-up) at optimiser step t (β without a warm-up or a step)."""
  if not s.warmup_steps or step is None:
    return s.beta
  return s.beta * jnp.minimum(1.0, step.astype(jnp.float32) / s.warmup_steps)


def _sample_codes(mu, logvar, keys, num_samples):
  """z_k = μ + σ ε_k, ε_k ~ N(0, I), k = 1 … K, example b's noise from keys[b]: (z, ε), each
  (K, B, d). K = 1 draws the ε of ``keys_lib.normal(keys, (d,))``."""
  eps = jnp.moveaxis(keys_lib.normal(keys, (num_samples, mu.shape[-1]), mu.dtype), 1, 0)
  return mu + jnp.exp(0.5 * logvar) * eps, eps


def _log_p_y(net, log_lik, params, flat, z):
  """log p(y | z_k) for codes z of shape (K, B, d): (K, B), one decoder call for all K·B."""
  out = net.apply(params, z.reshape(-1, z.shape[-1]), method=VAE.decode)
  return jax.vmap(lambda o: log_lik(flat, o))(out.reshape(z.shape[0], *flat.shape))


def _log_prior(z):
  """log N(z; 0, I), summed over the latents."""
  return -0.5 * jnp.sum(z**2 + LOG_2PI, -1)


def _log_weights(net, log_lik, params, flat, mu, logvar, keys, num_samples):
  """log w_k = log p(y | z_k) + log p(z_k) − log q(z_k | y), z_k = μ + σ ε_k: (k, B)."""
  z, eps = _sample_codes(mu, logvar, keys, num_samples)
  log_q = -0.5 * jnp.sum(eps**2 + logvar + LOG_2PI, -1)
  return _log_p_y(net, log_lik, params, flat, z) + _log_prior(z) - log_q


def _encode(net, params, y):
  """(y flattened (B, D), μ, log v)."""
  mu, logvar = net.apply(params, y, method=VAE.encode)
  return y.reshape(y.shape[0], -1), mu, logvar


def _iwae_bound(net, log_lik, params, y, keys, num_samples):
  """L_k = log (1/k) Σ_k w_k (Burda et al. 2015) per example: L_1 is the ELBO's one-sample
  estimate, and E[L_k] rises with k towards log p(y)."""
  flat, mu, logvar = _encode(net, params, y)
  log_w = _log_weights(net, log_lik, params, flat, mu, logvar, keys, num_samples)
  return jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------


def _elbo_loss(net, log_lik, s: Settings, regulariser, params, y, keys, step=None):
  """mean_b [(1/k) Σ_k C(y_b, z_bk) (+ R)] + β_t · KL term: the k-sample ELBO
  (k = ``model.train_samples``, KL analytic), the KL term ``free_bits_penalty`` (free bits
  λ = ``model.free_bits`` in ``model.free_bits_form``; λ = 0 the plain ELBO) and β_t the warm-up's
  weight at step t (``_kl_weight``)."""
  flat, mu, logvar = _encode(net, params, y)
  z, _ = _sample_codes(mu, logvar, keys, s.train_samples)  # (k, B, d)
  c = -jnp.mean(_log_p_y(net, log_lik, params, flat, z), 0)
  per_dim = kl_per_dim(mu, logvar)
  weight = _kl_weight(s, step)
  metrics = {"C": jnp.mean(c), "KL": jnp.mean(jnp.sum(per_dim, -1))}
  per_example = c
  if regulariser is not None:
    weighted, terms = jax.vmap(lambda z_k: regulariser(z=z_k, mu=mu, logvar=logvar))(z)
    per_example = per_example + jnp.mean(weighted, 0)
    metrics["R"] = jnp.mean(terms["R"])  # unweighted, as the other models report terms
  value = jnp.mean(per_example) + weight * free_bits_penalty(per_dim, s.free_bits,
                                                             s.free_bits_form)
  metrics["loss"] = value
  if s.warmup_steps:
    metrics["kl_weight"] = jnp.asarray(weight, jnp.float32)
  return value, metrics


def _dreg_bound(net, log_lik, params, y, keys, num_samples):
  """Per example, L_k in value with the gradient of Tucker et al.'s (2019) DReG estimator:
  ∇_θ = Σ_k w̃_k ∇_θ log w_k (the decoder's, as the standard one) and
  ∇_φ = Σ_k w̃_k² (∂log w_k/∂z_k)(∂z_k/∂φ), z_k = μ_φ + σ_φ ε_k, with φ stopped inside
  log q_φ(z_k | y). A surrogate S of those gradients rides on L_k as S − stop(S) (0 in value):
  its encoder part decodes z_k with the decoder frozen, its decoder part decodes stop(z_k)."""
  flat, mu, logvar = _encode(net, params, y)
  z, eps = _sample_codes(mu, logvar, keys, num_samples)
  stop = jax.lax.stop_gradient
  log_p_path = _log_p_y(net, log_lik, stop(params), flat, z)  # reaches φ through z only
  log_q = -0.5 * jnp.sum(eps**2 + logvar + LOG_2PI, -1)  # the standard bound's value
  log_w = stop(log_p_path + _log_prior(z) - log_q)
  bound = jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)
  weights = jax.nn.softmax(log_w, axis=0)  # w̃_k, constants of the surrogate
  log_q_path = -0.5 * jnp.sum(jnp.square(z - stop(mu)) * jnp.exp(-stop(logvar)) + stop(logvar)
                              + LOG_2PI, -1)  # q's parameters stopped, z live
  encoder_part = jnp.sum(weights**2 * (log_p_path + _log_prior(z) - log_q_path), 0)
  decoder_part = jnp.sum(weights * _log_p_y(net, log_lik, params, flat, stop(z)), 0)
  surrogate = encoder_part + decoder_part
  return bound + surrogate - stop(surrogate)


def _iwae_loss(net, log_lik, s: Settings, params, y, keys):
  """−mean_b L_k, differentiated as it is (``standard``) or by DReG (``dreg``)."""
  bound = _dreg_bound if s.iwae_gradient == "dreg" else _iwae_bound
  value = -jnp.mean(bound(net, log_lik, params, y, keys, s.train_samples))
  return value, {"loss": value}


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------


def _importance_weighted_nll(net, log_lik, params, y, keys, *, num_samples, chunk):
  """−log p(y) ≈ −(logsumexp_k log w_k − log k), w_k = p(y|z_k) p(z_k) / q(z_k|y).

  The k samples are drawn in chunks inside a ``lax.map`` so that k = 5000 fits in memory;
  chunk i draws from every example's key folded with i (chunks draw independent noise).
  """
  flat, mu, logvar = _encode(net, params, y)

  def chunk_log_w(i):
    chunk_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, i)
    return _log_weights(net, log_lik, params, flat, mu, logvar, chunk_keys, chunk)

  return metrics_lib.importance_weighted_nll(chunk_log_w, num_samples=num_samples, chunk=chunk)


def _evaluate(net, log_lik, s: Settings, iw_samples, params, batch, keys):
  """Per example: C and KL of one z sample, nelbo = C + KL, loss = C + β KL and the
  importance-weighted −log p(y) with ``iw_samples`` samples (``s.iw_name``)."""
  k_elbo, k_iw = keys_lib.split(keys, 2)
  flat, mu, logvar = _encode(net, params, batch["y"])
  z, _ = _sample_codes(mu, logvar, k_elbo, 1)
  c = -_log_p_y(net, log_lik, params, flat, z)[0]
  kl = energies.gaussian_kl(mu, logvar)
  metrics = {"C": c, "KL": kl, "nelbo": c + kl, "loss": c + s.beta * kl}
  metrics[s.iw_name] = _importance_weighted_nll(net, log_lik, params, batch["y"], k_iw,
                                                num_samples=iw_samples,
                                                chunk=min(s.iw_chunk, iw_samples))
  return metrics


def _split_metrics(net, threshold, params, y, key):
  """Posterior collapse over a split: KL per latent, active units, I_q(y; z)."""
  mu, logvar = net.apply(params, y, method=VAE.encode)
  return {"kl_per_dim": metrics_lib.kl_per_dimension(mu, logvar),
          "active_units": metrics_lib.active_units(mu, threshold),
          "mutual_info": metrics_lib.mutual_information(mu, logvar, key)}


def make(config, example_shape, value_range=None):
  """The VAE for examples of ``example_shape`` whose values live in ``value_range``."""
  validate(config)
  _check_value_range(config, value_range)
  mc = config.model
  s = settings(config)
  net = build(config, example_shape)
  log_lik = _log_likelihood(mc.likelihood, mc.get("decoder_std", 1.0))
  regulariser = _regulariser(mc)

  def init(key, batch):
    return net.init(key, batch["y"][:1])

  def loss(params, batch, keys):
    if s.objective == "elbo":
      return _elbo_loss(net, log_lik, s, regulariser, params, batch["y"], keys, batch.get("step"))
    return _iwae_loss(net, log_lik, s, params, batch["y"], keys)

  evaluate = functools.partial(_evaluate, net, log_lik, s, s.iw_samples)
  evaluate_final = (functools.partial(_evaluate, net, log_lik, s, s.iw_samples_final)
                    if s.iw_samples_final and s.iw_samples_final != s.iw_samples else None)

  def posterior(params, y):
    return net.apply(params, y, method=VAE.encode)  # (μ, log v)

  def encode(params, y):
    return posterior(params, y)[0]  # μ

  def decode(params, z):
    out = net.apply(params, z, method=VAE.decode)
    return jax.nn.sigmoid(out) if mc.likelihood == "bernoulli" else out

  def reconstruct(params, y):
    return decode(params, encode(params, y))

  extras = dict(posterior=posterior, iwae_bound=functools.partial(_iwae_bound, net, log_lik),
                kl_per_dim=lambda params, y: kl_per_dim(*posterior(params, y)))
  return Model(init, loss, evaluate, encode, decode, reconstruct, extras=extras,
               evaluate_final=evaluate_final,
               split_metrics=functools.partial(_split_metrics, net, s.active_units_threshold),
               sample_prior=prior_sampler(int(mc.latent_dim)))


def prior_sampler(latent_dim: int):
  """``sample_prior(params, key, num)``: z ~ N(0, I) of shape (num, latent_dim), the prior
  whose decoded codes are the VAE's samples (``Model.sample_prior``)."""

  def sample_prior(params, key, num):
    del params  # a fixed prior
    return jax.random.normal(key, (num, latent_dim))

  return sample_prior


def sample(net_params, config, example_shape, key, num: int) -> jax.Array:
  """Decoded samples from z ~ N(0, I), as probabilities (Bernoulli) or means."""
  mc = config.model
  net = build(config, example_shape)
  z = jax.random.normal(key, (num, mc.latent_dim))
  out = net.apply(net_params, z, method=VAE.decode)
  return jax.nn.sigmoid(out) if mc.likelihood == "bernoulli" else out


def interpolate(net_params, config, example_shape, y_a, y_b, num: int = 16) -> jax.Array:
  """Decodes a straight line between μ(y_a) and μ(y_b) in latent space."""
  mc = config.model
  net = build(config, example_shape)
  mu, _ = net.apply(net_params, jnp.stack([y_a, y_b]), method=VAE.encode)
  t = jnp.linspace(0.0, 1.0, num)[:, None]
  out = net.apply(net_params, (1 - t) * mu[0] + t * mu[1], method=VAE.decode)
  return jax.nn.sigmoid(out) if mc.likelihood == "bernoulli" else out
