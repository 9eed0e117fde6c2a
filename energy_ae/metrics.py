"""Evaluation metrics, written to ``metrics.jsonl`` at every evaluation.

Per-example JAX functions (jittable, used inside the models' ``evaluate``) and one
host-side metric, the linear probe, which the trainer runs on any model that can
encode.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from energy_ae import energies


def mean_metrics(total: jax.Array, terms: dict) -> tuple[jax.Array, dict]:
  """(L, metrics): L = 1/m Σ F(y) over the batch, and the batch mean of every term."""
  loss = jnp.mean(total)
  metrics = {"loss": loss}
  metrics.update({k: jnp.mean(v) for k, v in terms.items()})
  return loss, metrics


def psnr(a: jax.Array, b: jax.Array, value_range: tuple[float, float]) -> jax.Array:
  """PSNR = 10 log₁₀(1 / MSE) in dB on [0, 1] images (both mapped from ``value_range``
  and clipped), per example."""
  low, high = value_range
  to_unit = lambda x: jnp.clip((x.reshape(x.shape[0], -1) - low) / (high - low), 0.0, 1.0)
  mse = jnp.mean(jnp.square(to_unit(a) - to_unit(b)), axis=-1)
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-12))


def jacobian_frobenius(encode: Callable[[jax.Array], jax.Array], y: jax.Array) -> jax.Array:
  """‖∂h/∂y‖_F per example, h = encode(y) for one flat example."""
  return jnp.sqrt(energies.contractive(encode, y.reshape(y.shape[0], -1)))


def amortisation_gap(energy_encoder: jax.Array, energy_inferred: jax.Array) -> jax.Array:
  """E(y, z̃) − E(y, ž): how much inference improves on the encoder's guess."""
  return energy_encoder - energy_inferred


def importance_weighted_nll(chunk_log_weights: Callable[[jax.Array], jax.Array], *,
                            num_samples: int, chunk: int) -> jax.Array:
  """−log p(y) ≈ −(logsumexp_k log w_k − log k) over k = ``num_samples`` samples.

  ``chunk_log_weights(i)`` returns the (chunk, B) log weights
  log w = log p(y|z) + log p(z) − log q(z|y) of the i-th chunk of samples; chunks
  run one after another in a ``lax.map``, so k = 5000 fits in memory.
  """
  if num_samples <= 0 or chunk <= 0:
    raise ValueError(f"importance sampling needs k > 0 and chunk > 0, got {num_samples}, {chunk}")
  num_chunks = -(-num_samples // chunk)

  def masked(i):
    log_w = chunk_log_weights(i)
    valid = (i * chunk + jnp.arange(chunk)) < num_samples  # the last chunk may be partial
    return jnp.where(valid[:, None], log_w, -jnp.inf)

  log_w = jax.lax.map(masked, jnp.arange(num_chunks))  # (chunks, chunk, B)
  log_w = log_w.reshape(num_chunks * chunk, -1)
  return -(jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples))


def linear_probe_accuracy(train_codes: np.ndarray, train_labels: np.ndarray,
                          test_codes: np.ndarray, test_labels: np.ndarray, *,
                          max_iter: int = 1000, inverse_regularisation: float = 1.0) -> float:
  """Test accuracy of a logistic regression (scikit-learn) fitted on the training codes.

  Codes are standardised with the training statistics first, so that one setting
  of the solver suits codes of any scale.
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  if len(np.unique(train_labels)) < 2:
    raise ValueError("a linear probe needs at least two classes in the training labels")
  probe = make_pipeline(StandardScaler(),
                        LogisticRegression(max_iter=max_iter, C=inverse_regularisation))
  probe.fit(np.asarray(train_codes, np.float64), np.asarray(train_labels))
  return float(probe.score(np.asarray(test_codes, np.float64), np.asarray(test_labels)))


# ----------------------------------------------------------------------------
# Posterior collapse: diagnostics of a diagonal Gaussian posterior q(z | y) = N(μ(y), v(y))
# over a split of N examples (whole-split statistics, not means of per-example values)
# ----------------------------------------------------------------------------


def kl_per_dimension(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """E_y[KL(q(z_j | y) ‖ N(0, 1))] = mean_y ½ (v_j − log v_j − 1 + μ_j²) per latent j, (d,)."""
  return jnp.mean(0.5 * (jnp.exp(logvar) - logvar - 1.0 + jnp.square(mu)), axis=0)


def active_units(mu: jax.Array, threshold: float = 0.01) -> jax.Array:
  """A_u = #{j : Cov_y(E_q[z_j | y]) > threshold} (Burda et al. 2015, §5.2; 0.01 in theirs):
  the latents whose posterior mean moves with the data; a collapsed one stays at the prior."""
  return jnp.sum(jnp.var(mu, axis=0) > threshold)


def mutual_information(mu: jax.Array, logvar: jax.Array, key: jax.Array, *,
                       chunk: int = 100) -> jax.Array:
  """I_q(y; z) = E_y E_{q(z|y)}[log q(z | y) − log q(z)] under the encoder, with the aggregate
  posterior q(z) = (1/N) Σ_n q(z | y_n) over the N examples (Hoffman & Johnson 2016; the
  estimator of He et al. 2019), at one z_i ~ q(z | y_i) per example. Both logs are taken at
  the same z_i, so the estimate never exceeds log N (the sum over n holds q(z_i | y_i) / N):
  N must exceed exp(I) for it to be close, and an estimate near log N says only that I is at
  least about that.
  """
  n, d = mu.shape
  var = jnp.exp(logvar)
  eps = jax.random.normal(key, mu.shape, mu.dtype)
  z = mu + jnp.sqrt(var) * eps
  log_q_own = jnp.mean(-0.5 * jnp.sum(math.log(2 * math.pi) + logvar + jnp.square(eps), axis=-1))
  num_chunks = -(-n // chunk)
  z_padded = jnp.concatenate([z, jnp.zeros((num_chunks * chunk - n, d), z.dtype)])

  def log_q_aggregate(z_chunk):  # log (1/N) Σ_n N(z_i; μ_n, v_n) for a chunk of z_i: (chunk,)
    log_density = -0.5 * jnp.sum(
        jnp.square(z_chunk[:, None, :] - mu[None]) / var[None] + logvar[None]
        + math.log(2 * math.pi), axis=-1)
    return jax.nn.logsumexp(log_density, axis=1) - math.log(n)

  log_q_z = jax.lax.map(log_q_aggregate, z_padded.reshape(num_chunks, chunk, d)).reshape(-1)[:n]
  return log_q_own - jnp.mean(log_q_z)
