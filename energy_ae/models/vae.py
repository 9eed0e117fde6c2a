"""Variational autoencoder (08-3, Figs. 5-8).

Encoder y ↦ (μ, log v); z = μ + ε √v, ε ~ N(0, I) (reparameterisation); decoder
z ↦ logits of a Bernoulli likelihood (or the mean of a Gaussian one). Free energy
F̃(y) = C(y, ỹ) + β KL(N(μ, v) ‖ N(0, I)) [+ R(z)], β = ``model.beta``. C = −log p(y | z) is
fixed by ``model.likelihood`` (the importance-weighted metrics need its normaliser) and KL by
β; ``model.energy`` lists the role a user may add, R, a regulariser of the sampled code
(disabled: ``term = ""``; it reads ``z``, ``mu`` or ``logvar``, e.g.
``--config.model.energy.R.term=l1 --config.model.energy.R.weight=0.1`` for sparse codes).

Training objective ``model.objective``: ``elbo`` (the free energy above, with an optional
floor ``model.free_bits`` on the KL per latent dimension, Kingma et al. 2016, and a KL
warm-up: β_t = β·min(1, t / ``model.kl_warmup_steps``) at optimiser step t, rising linearly
from 0, Sønderby et al. 2016) or ``iwae``, −L_k with L_k = log (1/k) Σ_k p(y, z_k) / q(z_k | y)
over ``model.train_samples`` = k samples (Burda et al. 2015; β does not enter it).

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

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from energy_ae import config_checks, energies, keys as keys_lib, metrics as metrics_lib
from energy_ae.models import Model, modules

LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("elbo", "iwae")


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
  k = mc.get("train_samples", 1)
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise ValueError(f"config.model.train_samples = {k!r}: must be an integer >= 1")
  free_bits = mc.get("free_bits", 0.0)
  if not isinstance(free_bits, (int, float)) or not free_bits >= 0:
    raise ValueError(f"config.model.free_bits = {free_bits!r}: must be >= 0 (nats per latent "
                     "dimension)")
  warmup = mc.get("kl_warmup_steps", 0)
  if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
    raise ValueError(f"config.model.kl_warmup_steps = {warmup!r}: must be an integer >= 0 "
                     "(0: no warm-up)")
  final_k = mc.get("iw_samples_final", 0)
  if not isinstance(final_k, int) or isinstance(final_k, bool) or final_k < 0:
    raise ValueError(f"config.model.iw_samples_final = {final_k!r}: must be an integer >= 0 "
                     "(0: model.iw_samples)")
  threshold = mc.get("active_units_threshold", 0.01)
  if not isinstance(threshold, (int, float)) or not threshold >= 0:
    raise ValueError(f"config.model.active_units_threshold = {threshold!r}: must be >= 0")
  regulariser = _regulariser(mc)
  if regulariser is not None:
    regulariser.check_inputs(("z", "mu", "logvar"), model="vae")
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


def make(config, example_shape, value_range=None):
  """The VAE for examples of ``example_shape`` whose values live in ``value_range``."""
  validate(config)
  mc = config.model
  if mc.likelihood == "bernoulli" and value_range is not None and not (
      value_range[0] >= 0.0 and value_range[1] <= 1.0):
    raise ValueError(
        f"model.likelihood = 'bernoulli' needs targets in [0, 1] but data {config.data.name!r} "
        f"spans [{value_range[0]:g}, {value_range[1]:g}]; set data.range='unit'")
  net = build(config, example_shape)
  log_lik = _log_likelihood(mc.likelihood, mc.get("decoder_std", 1.0))
  beta = mc.beta if config_checks.is_traced(mc.beta) else float(mc.beta)  # traced in a sweep

  def init(key, batch):
    return net.init(key, batch["y"][:1])

  # −log p(y) only where the likelihood is normalised for the data: a Gaussian, or a Bernoulli
  # on binary data. On grey-level pixels the same estimator bounds a cross-entropy instead.
  binary = config.get("data", {}).get("binarize", "none") == "dynamic"
  iw_name = "nll_iw" if mc.likelihood == "gaussian" or binary else "bce_iw"
  objective = mc.get("objective", "elbo")
  train_samples = int(mc.get("train_samples", 1))
  free_bits = float(mc.get("free_bits", 0.0))
  warmup_steps = int(mc.get("kl_warmup_steps", 0))
  regulariser = _regulariser(mc)

  def free_energy(params, y, keys):
    flat = y.reshape(y.shape[0], -1)
    mu, logvar = net.apply(params, y, method=VAE.encode)
    z = mu + jnp.exp(0.5 * logvar) * keys_lib.normal(keys, mu.shape[1:], mu.dtype)
    out = net.apply(params, z, method=VAE.decode)
    return -log_lik(flat, out), energies.gaussian_kl(mu, logvar)

  def kl_per_dim(mu, logvar):
    """½ (v − log v − 1 + μ²) per example and latent dimension, (B, d)."""
    return 0.5 * (jnp.exp(logvar) - logvar - 1.0 + jnp.square(mu))

  def kl_weight(step):
    """β_t = β·min(1, t / T_warm-up) at optimiser step t (β without a warm-up or a step)."""
    if not warmup_steps or step is None:
      return beta
    return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)

  def elbo_loss(params, y, keys, step=None):
    """mean_b [C + β_t Σ_j max(λ, KL_j)]: the ELBO, with free bits λ = ``model.free_bits``
    (Kingma et al. 2016) as a floor on each example's KL per latent dimension (per example,
    so that the loss does not depend on how the batch is split across devices; λ = 0 is
    the plain ELBO) and β_t the warm-up's weight at step t (``kl_weight``)."""
    flat = y.reshape(y.shape[0], -1)
    mu, logvar = net.apply(params, y, method=VAE.encode)
    z = mu + jnp.exp(0.5 * logvar) * keys_lib.normal(keys, mu.shape[1:], mu.dtype)
    c = -log_lik(flat, net.apply(params, z, method=VAE.decode))
    per_dim = kl_per_dim(mu, logvar)
    kl = jnp.sum(per_dim, -1)
    penalty = jnp.sum(jnp.maximum(per_dim, free_bits), -1) if free_bits else kl
    weight = kl_weight(step)
    per_example = c + weight * penalty
    metrics = {"C": jnp.mean(c), "KL": jnp.mean(kl)}
    if regulariser is not None:
      weighted, terms = regulariser(z=z, mu=mu, logvar=logvar)
      per_example = per_example + weighted
      metrics["R"] = jnp.mean(terms["R"])  # unweighted, as the other models report terms
    value = jnp.mean(per_example)
    metrics["loss"] = value
    if warmup_steps:
      metrics["kl_weight"] = jnp.asarray(weight, jnp.float32)
    return value, metrics

  def iwae_log_weights(params, y, keys, num_samples):
    """log w_k = log p(y | z_k) + log p(z_k) − log q(z_k | y), z_k = μ + σ ε_k: (k, B)."""
    flat = y.reshape(y.shape[0], -1)
    mu, logvar = net.apply(params, y, method=VAE.encode)
    eps = jnp.moveaxis(keys_lib.normal(keys, (num_samples, mu.shape[-1]), mu.dtype), 1, 0)
    z = mu + jnp.exp(0.5 * logvar) * eps  # (k, B, d)
    out = net.apply(params, z.reshape(-1, z.shape[-1]), method=VAE.decode)
    log_p_y = jax.vmap(lambda o: log_lik(flat, o))(out.reshape(num_samples, *flat.shape))
    log_prior = -0.5 * jnp.sum(z**2 + math.log(2 * math.pi), -1)
    log_q = -0.5 * jnp.sum(eps**2 + logvar + math.log(2 * math.pi), -1)
    return log_p_y + log_prior - log_q

  def iwae_bound(params, y, keys, num_samples):
    """L_k = log (1/k) Σ_k w_k (Burda et al. 2015) per example: L_1 is the ELBO's one-sample
    estimate, and E[L_k] rises with k towards log p(y)."""
    log_w = iwae_log_weights(params, y, keys, num_samples)
    return jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)

  def loss(params, batch, keys):
    if objective == "elbo":
      return elbo_loss(params, batch["y"], keys, batch.get("step"))
    value = -jnp.mean(iwae_bound(params, batch["y"], keys, train_samples))
    return value, {"loss": value}

  def make_evaluate(iw_samples):
    def evaluate(params, batch, keys):
      k_elbo, k_iw = keys_lib.split(keys, 2)
      c, kl = free_energy(params, batch["y"], k_elbo)
      metrics = {"C": c, "KL": kl, "nelbo": c + kl, "loss": c + beta * kl}
      metrics[iw_name] = importance_weighted_nll(params, batch["y"], k_iw, num_samples=iw_samples,
                                                 chunk=min(mc.get("iw_chunk", 100), iw_samples))
      return metrics

    return evaluate

  evaluate = make_evaluate(mc.iw_samples)
  evaluate_final = (make_evaluate(mc.iw_samples_final)
                    if mc.get("iw_samples_final", 0) and mc.iw_samples_final != mc.iw_samples
                    else None)

  def split_metrics(params, y, key):
    """Posterior collapse over a split: KL per latent, active units, I_q(y; z)."""
    mu, logvar = posterior(params, y)
    return {"kl_per_dim": metrics_lib.kl_per_dimension(mu, logvar),
            "active_units": metrics_lib.active_units(mu, mc.get("active_units_threshold", 0.01)),
            "mutual_info": metrics_lib.mutual_information(mu, logvar, key)}

  def importance_weighted_nll(params, y, keys, *, num_samples, chunk):
    """−log p(y) ≈ −(logsumexp_k log w_k − log k), w_k = p(y|z_k) p(z_k) / q(z_k|y).

    The k samples are drawn in chunks inside a ``lax.map`` so that k = 5000 fits
    in memory.
    """
    flat = y.reshape(y.shape[0], -1)
    mu, logvar = net.apply(params, y, method=VAE.encode)
    std = jnp.exp(0.5 * logvar)

    def chunk_log_w(i):
      chunk_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, i)
      eps = jnp.moveaxis(keys_lib.normal(chunk_keys, (chunk, mu.shape[-1]), mu.dtype), 1, 0)
      z = mu + std * eps  # (chunk, B, d)
      out = net.apply(params, z.reshape(-1, z.shape[-1]), method=VAE.decode)
      out = out.reshape(chunk, *flat.shape)
      log_p_y = jax.vmap(lambda o: log_lik(flat, o))(out)
      log_prior = -0.5 * jnp.sum(z**2 + math.log(2 * math.pi), -1)
      log_q = -0.5 * jnp.sum(eps**2 + logvar + math.log(2 * math.pi), -1)
      return log_p_y + log_prior - log_q

    return metrics_lib.importance_weighted_nll(chunk_log_w, num_samples=num_samples, chunk=chunk)

  def encode(params, y):
    return net.apply(params, y, method=VAE.encode)[0]  # μ

  def posterior(params, y):
    return net.apply(params, y, method=VAE.encode)  # (μ, log v)

  def decode(params, z):
    out = net.apply(params, z, method=VAE.decode)
    return jax.nn.sigmoid(out) if mc.likelihood == "bernoulli" else out

  def reconstruct(params, y):
    return decode(params, encode(params, y))

  extras = dict(posterior=posterior, iwae_bound=iwae_bound,
                kl_per_dim=lambda params, y: kl_per_dim(*posterior(params, y)))
  return Model(init, loss, evaluate, encode, decode, reconstruct, extras=extras,
               evaluate_final=evaluate_final, split_metrics=split_metrics,
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
