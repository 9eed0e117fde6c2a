"""Latent inference: ž = argmin_z E(y, z), F∞(y) = min_z E and the soft minimum F_β.

All functions are pure and jit/vmap friendly; the inner loops are ``lax.scan``s
with a static number of steps, so reverse-mode differentiation through them
works when it is wanted, and the whole loop compiles into the caller's step.

How gradients reach the parameters θ. With ž = argmin_z E_θ(y, z), the envelope
theorem gives ∂F∞/∂θ = ∂E_θ(y, z)/∂θ evaluated at z = ž, *holding ž fixed*:
the term ∂E/∂z · ∂ž/∂θ vanishes because ∂E/∂z = 0 at a minimum. ``argmin``
therefore returns ž under ``stop_gradient``, and ``free_energy_min`` evaluates
E(y, ž) so that differentiating it w.r.t. θ gives exactly ∂F∞/∂θ — without
back-propagating through the inner loop.

Energy functions passed here take the latent ``z`` only (close over y and θ) and
return one energy per example: an array of the batch shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

Array = jax.Array
EnergyFn = Callable[[Array], Array]


class ArgminResult(NamedTuple):
  z: Array  # ž, gradient-stopped, same shape as z_init
  trace: Array  # E(y, z_t) for t = 0..num_steps, shape (num_steps + 1, *batch)
  # How stationary ž is, same shape as z: ∇_z E(y, ž) (``argmin``), or the proximal gradient
  # mapping (ž − S_ηλ(ž − η∇f(ž)))/η (``argmin_proximal``); 0 at a stationary ž. Computed
  # with the last energy of the trace: a caller that does not read it pays nothing under jit
  # (XLA drops the unused backward pass).
  grad: Array | None = None


def argmin(
    energy_fn: EnergyFn,
    z_init: Array,
    *,
    num_steps: int,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float | None = None,
) -> ArgminResult:
  """ž = argmin_z E(y, z) by ``num_steps`` steps of a gradient-based optimiser.

  Starts from ``z_init`` (e.g. the encoder's guess z̃ or random starts) and runs
  inside one ``lax.scan``. ``optimizer`` is any optax transformation; without it
  plain gradient descent z ← z − η ∂E/∂z with η = ``learning_rate``. Examples of
  a batch are independent because the gradient of Σ_batch E w.r.t. z is the
  per-example gradient; keep to element-wise optimisers (sgd, momentum, adam, ...)
  so that they stay independent.
  """
  if num_steps < 0:
    raise ValueError(f"argmin: num_steps must be >= 0, got {num_steps}")
  if optimizer is None:
    if learning_rate is None:
      raise ValueError("argmin: give an optax optimizer or a learning_rate for gradient descent")
    optimizer = optax.sgd(learning_rate)

  def total_energy(z: Array) -> tuple[Array, Array]:
    energies = energy_fn(z)
    return jnp.sum(energies), energies

  grad_fn = jax.grad(total_energy, has_aux=True)

  def step(carry, _):
    z, opt_state = carry
    grads, energies = grad_fn(z)
    updates, opt_state = optimizer.update(grads, opt_state, z)
    return (optax.apply_updates(z, updates), opt_state), energies

  z0 = lax.stop_gradient(z_init)
  (z_final, _), trace = lax.scan(step, (z0, optimizer.init(z0)), None, length=num_steps)
  final_grad, final_energy = grad_fn(z_final)
  trace = jnp.concatenate([trace, final_energy[None]], axis=0)
  return ArgminResult(lax.stop_gradient(z_final), trace, final_grad)


def soft_threshold(z: Array, threshold: float | Array) -> Array:
  """prox_{τ‖·‖₁}(z) = sign(z) · max(|z| − τ, 0), element-wise (τ = ``threshold``)."""
  return jnp.sign(z) * jnp.maximum(jnp.abs(z) - threshold, 0.0)


def argmin_proximal(
    smooth_energy_fn: EnergyFn,
    z_init: Array,
    *,
    num_steps: int,
    step_size: float,
    l1_weight: float = 0.0,
    accelerated: bool = True,
) -> ArgminResult:
  """ž = argmin_z f(z) + λ‖z‖₁ by proximal gradient steps: ISTA, or FISTA if ``accelerated``.

  f = ``smooth_energy_fn`` (the differentiable part of E, e.g. C + D), λ = ``l1_weight``
  (0: the prox is the identity and ISTA is gradient descent). With η = ``step_size``:

    ISTA:  z_{k+1} = S_{ηλ}(z_k − η ∇f(z_k)),
    FISTA: z_{k+1} = S_{ηλ}(x_k − η ∇f(x_k)),  t_{k+1} = (1 + √(1 + 4 t_k²)) / 2,
           x_{k+1} = z_{k+1} + (t_k − 1) / t_{k+1} · (z_{k+1} − z_k),  t_0 = 1, x_0 = z_0,

  S_τ the soft threshold. For η ≤ 1/L (L the Lipschitz constant of ∇f) E(z_k) − E(ž)
  ≤ L‖z_0 − ž‖² / (2k) for ISTA and 2L‖z_0 − ž‖² / (k + 1)² for FISTA (Beck & Teboulle,
  2009). Unlike a (sub)gradient step on λ‖z‖₁, the soft threshold sets codes exactly to 0
  and does not oscillate around the kink. ``trace`` holds E = f + λ‖z‖₁ at each z_k.

  ``grad`` is the gradient mapping G_η(ž) = (ž − S_ηλ(ž − η∇f(ž)))/η, the stationarity
  measure of the composite E, since λ‖·‖₁ has no gradient at 0: G_η = ∇f + λ sign ž where
  no code reaches 0, and G_η(ž) = 0 iff 0 ∈ ∇f(ž) + λ∂‖ž‖₁ (for a convex f: iff ž minimises E).
  """
  if num_steps < 0:
    raise ValueError(f"argmin_proximal: num_steps must be >= 0, got {num_steps}")
  if not step_size > 0:
    raise ValueError(f"argmin_proximal: step_size must be > 0, got {step_size}")
  feature_axes = tuple(range(1, jnp.ndim(z_init))) or None

  def energy(z: Array) -> Array:
    return smooth_energy_fn(z) + l1_weight * jnp.sum(jnp.abs(z), axis=feature_axes)

  grad_fn = jax.grad(lambda z: jnp.sum(smooth_energy_fn(z)))

  def step(carry, _):
    z, x, t = carry
    z_next = soft_threshold(x - step_size * grad_fn(x), step_size * l1_weight)
    if accelerated:
      t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
      x_next = z_next + ((t - 1.0) / t_next) * (z_next - z)
    else:
      t_next, x_next = t, z_next
    return (z_next, x_next, t_next), energy(z)

  z0 = lax.stop_gradient(z_init)
  one = jnp.ones((), z0.dtype)
  (z_final, _, _), trace = lax.scan(step, (z0, z0, one), None, length=num_steps)
  trace = jnp.concatenate([trace, energy(z_final)[None]], axis=0)
  prox_step = soft_threshold(z_final - step_size * grad_fn(z_final), step_size * l1_weight)
  mapping = (z_final - prox_step) / step_size
  return ArgminResult(lax.stop_gradient(z_final), trace, mapping)


def relative_change(trace: Array, window: int) -> Array:
  """|E(y, z_{n−m}) − E(y, z_n)| / |E(y, z_n)| over the last m = ``window`` steps of a trace.

  ``trace``: E at z_0 … z_n along the inner loop, shape (n + 1, *batch) (``ArgminResult``);
  m is clipped to n. What m more steps of a loop that still moves as it did would gain, as a
  fraction of E: a small value says ``num_steps`` is enough. The absolute value keeps a
  loop that oscillates (momentum overshooting) from cancelling one that descends when the
  caller averages over examples. E(z_n) = 0 is guarded by the smallest normal number.
  """
  if window < 1:
    raise ValueError(f"relative_change: window must be >= 1, got {window}")
  if trace.shape[0] < 2:
    raise ValueError("relative_change: a trace of 0 steps has no change")
  m = min(window, trace.shape[0] - 1)
  last = trace[-1]
  tiny = jnp.finfo(trace.dtype).tiny
  return jnp.abs(trace[-1 - m] - last) / jnp.maximum(jnp.abs(last), tiny)


class GridResult(NamedTuple):
  z: Array  # ž on the grid, shape (*batch, *z_shape)
  energies: Array  # E(y, z_k) for every grid point, shape (*batch, N)


def argmin_grid(energy_fn: EnergyFn, grid: Array) -> GridResult:
  """Exhaustive search ž = argmin_{z ∈ grid} E(y, z) for low-dimensional latents.

  ``grid`` has shape (N, *z_shape); ``energy_fn`` is called with one grid point
  (shape z_shape, broadcast against the batch) and returns energies (*batch).
  """
  energies = jax.vmap(energy_fn)(grid)  # (N, *batch)
  energies = jnp.moveaxis(energies, 0, -1)
  index = jnp.argmin(energies, axis=-1)
  return GridResult(lax.stop_gradient(grid[index]), energies)


def uniform_grid(low: float, high: float, num: int, *, endpoint: bool = False) -> Array:
  """A uniform 1-D latent grid of shape (num, 1); [low, high[ by default (periodic z)."""
  return jnp.linspace(low, high, num, endpoint=endpoint)[:, None]


def free_energy_min(energy_fn: EnergyFn, z_check: Array) -> Array:
  """F∞(y) = E(y, ž), with ž held fixed so that ∂F∞/∂θ = ∂E(y, ž)/∂θ."""
  return energy_fn(lax.stop_gradient(z_check))


def free_energy_softmin(energies: Array, beta: float | Array, axis: int = -1) -> Array:
  """F_β(y) = −(1/β) log( (1/|Z|) ∫ exp(−β E(y, z)) dz ) from energies on a uniform grid.

  On a uniform grid of N points over the latent domain Z this is
  −(1/β) logsumexp_z(−β E) + (1/β) log N. ``beta = inf`` gives F∞ = min_z E,
  β → 0 the mean energy ⟨E⟩_z. Stable for β from 0 to 1e6 and beyond: the
  minimum is factored out, and for small β·(E − min E) the log-mean-exp is taken
  as log1p(mean(expm1(·))) so that it does not round to zero.
  """
  energies = jnp.asarray(energies)
  beta = jnp.asarray(beta, dtype=energies.dtype)
  e_min = jnp.min(energies, axis=axis, keepdims=True)
  shifted = energies - e_min  # >= 0
  finite_beta = jnp.where(jnp.isfinite(beta) & (beta > 0), beta, 1.0)
  scaled = -finite_beta * shifted
  log_mean_small = jnp.log1p(jnp.mean(jnp.expm1(scaled), axis=axis))
  n = energies.shape[axis]
  log_mean_large = jax.nn.logsumexp(scaled, axis=axis) - math.log(n)
  small = jnp.max(-scaled, axis=axis) < 1.0
  log_mean = jnp.where(small, log_mean_small, log_mean_large)
  e_min = jnp.squeeze(e_min, axis=axis)
  soft = e_min - log_mean / finite_beta
  mean = jnp.mean(energies, axis=axis)
  return jnp.where(beta == 0, mean, jnp.where(jnp.isinf(beta), e_min, soft))


class Proposal(NamedTuple):
  """An importance-sampling proposal q(z) over latents of shape (*batch, *z_shape)."""

  sample: Callable[[Array, int], Array]  # (key, n) -> (n, *batch, *z_shape)
  log_prob: Callable[[Array], Array]  # (n, *batch, *z_shape) -> (n, *batch)


def gaussian_proposal(mean: Array, sigma: float) -> Proposal:
  """q(z) = N(z; z̃, σ² I) around the encoder's guess z̃ = ``mean`` (shape (*batch, d))."""
  mean = jnp.asarray(mean)
  d = mean.shape[-1]

  def sample(key: Array, n: int) -> Array:
    return mean + sigma * jax.random.normal(key, (n, *mean.shape), mean.dtype)

  def log_prob(z: Array) -> Array:
    return -0.5 * jnp.sum(jnp.square((z - mean) / sigma), axis=-1) - d * (
        math.log(sigma) + 0.5 * math.log(2 * math.pi)
    )

  return Proposal(sample, log_prob)


def uniform_proposal(low: float, high: float, shape: tuple[int, ...]) -> Proposal:
  """q(z) = U([low, high]^d) for latents of ``shape`` = (*batch, d)."""
  d = shape[-1]

  def sample(key: Array, n: int) -> Array:
    return jax.random.uniform(key, (n, *shape), minval=low, maxval=high)

  def log_prob(z: Array) -> Array:
    return jnp.full(z.shape[:-1], -d * math.log(high - low), z.dtype)

  return Proposal(sample, log_prob)


def wrapped_gaussian_proposal(mean: Array, sigma: float, low: float, high: float) -> Proposal:
  """q(z) = Σ_k N(z + kP; ž, σ²) on the periodic [low, high[ (P = high − low), per coordinate.

  For a periodic latent (the ellipse's angle) a Gaussian around ž = ``mean`` (shape
  (*batch, d)) wrapped onto one period: samples are ž + σε taken modulo P. The density sums
  the images k = −K … K with K = ⌈6σ/P⌉ + 1: z and ž both lie in one period, so an omitted
  image is ≥ 6σ + P away and weighs < e⁻¹⁸ of the nearest.
  """
  period = high - low
  mean = low + jnp.mod(jnp.asarray(mean) - low, period)
  num_images = math.ceil(6 * sigma / period) + 1
  shifts = period * jnp.arange(-num_images, num_images + 1, dtype=mean.dtype)

  def sample(key: Array, n: int) -> Array:
    z = mean + sigma * jax.random.normal(key, (n, *mean.shape), mean.dtype)
    return low + jnp.mod(z - low, period)

  def log_prob(z: Array) -> Array:
    u = (z - mean)[..., None] + shifts  # (..., d, images)
    log_1d = jax.nn.logsumexp(-0.5 * jnp.square(u / sigma), axis=-1) - (
        math.log(sigma) + 0.5 * math.log(2 * math.pi))
    return jnp.sum(log_1d, axis=-1)

  return Proposal(sample, log_prob)


def mixture_proposal(components: tuple[Proposal, ...], weights: tuple[float, ...]) -> Proposal:
  """q(z) = Σᵢ αᵢ qᵢ(z), each draw from component i with probability αᵢ (``weights``, sum 1).

  A defensive mixture (Hesterberg, 1995): with a broad component of weight α the importance
  weights p/q are at most p/(α q_broad), so the estimate keeps a finite variance even where
  the narrow component misses a mode.
  """
  if len(components) != len(weights) or not components:
    raise ValueError("mixture_proposal: one weight per component")
  if min(weights) < 0 or not math.isclose(sum(weights), 1.0, rel_tol=1e-6):
    raise ValueError(f"mixture_proposal: weights must be >= 0 and sum to 1, got {weights}")
  log_weights = jnp.log(jnp.asarray(weights))

  def sample(key: Array, n: int) -> Array:
    k_choice, *k_components = jax.random.split(key, len(components) + 1)
    draws = jnp.stack([c.sample(k, n) for c, k in zip(components, k_components)])
    batch_shape = draws.shape[1:-1]  # (n, *batch): one component per draw and example
    choice = jax.random.categorical(k_choice, log_weights, shape=batch_shape)
    return jnp.take_along_axis(draws, choice[None, ..., None], axis=0)[0]

  def log_prob(z: Array) -> Array:
    return jax.nn.logsumexp(
        jnp.stack([w + c.log_prob(z) for c, w in zip(components, log_weights)]), axis=0)

  return Proposal(sample, log_prob)


class MonteCarloFreeEnergy(NamedTuple):
  free_energy: Array  # F_β estimate, shape (*batch)
  stderr: Array  # its standard error (delta method), shape (*batch)


def free_energy_softmin_mc(
    energy_fn: EnergyFn,
    key: Array,
    *,
    beta: float,
    proposal: Proposal,
    num_samples: int,
    log_volume: float = 0.0,
) -> MonteCarloFreeEnergy:
  """Importance-sampled F_β(y) = −(1/β) log( (1/|Z|) ∫ exp(−β E(y, z)) dz ).

  With z_k ~ q: (1/|Z|) ∫ exp(−βE) dz = E_q[exp(−β E(y, z)) / (|Z| q(z))], averaged
  over ``num_samples`` draws in log space. ``log_volume`` = log |Z| (0 for an
  unbounded latent space, where F_β is −(1/β) log ∫ exp(−βE) dz). The standard
  error of F_β follows from that of the mean weight by the delta method.
  """
  if not beta > 0 or not math.isfinite(beta):
    raise ValueError(f"free_energy_softmin_mc: beta must be finite and > 0, got {beta}")
  z = proposal.sample(key, num_samples)
  energies = jax.vmap(energy_fn)(z)  # (n, *batch)
  log_w = -beta * energies - proposal.log_prob(z) - log_volume
  log_mean = jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)
  w = jnp.exp(log_w - jnp.max(log_w, axis=0))  # scaled weights in [0, 1]
  rel_se = jnp.std(w, axis=0, ddof=1) / (math.sqrt(num_samples) * jnp.mean(w, axis=0))
  return MonteCarloFreeEnergy(-log_mean / beta, rel_se / beta)
