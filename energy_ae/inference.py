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

import functools
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
  # The accepted Lipschitz estimate L_k of each step (its step is 1/L_k), shape
  # (num_steps, *batch): ``argmin_proximal_backtracking`` only.
  lipschitz: Array | None = None


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


# Rounding allowance of the sufficient-decrease test, in units of float epsilon times |f(y)|:
# near a minimum f(p) − f(y) and the quadratic model's terms fall below the rounding of f, and
# a test without it would count rounding as a failed trial and drive L up for nothing.
_DECREASE_ULPS = 16


def _expand(a: Array, ndim: int) -> Array:
  """A per-example array (*batch) broadcastable against latents of ``ndim`` dimensions."""
  return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def proximal_backtracking_step(
    smooth_energy_fn: EnergyFn, y: Array, lipschitz: Array, *, l1_weight: float,
    backtrack_factor: float, max_backtracks: int) -> tuple[Array, Array, Array]:
  """p_L(y) = S_{λ/L}(y − ∇f(y)/L) with Beck & Teboulle's (2009) backtracking on L, per example.

  L = η^i L_prev (η = ``backtrack_factor``, L_prev = ``lipschitz``, shape (*batch)) for the
  smallest i ≥ 0 with the sufficient decrease

    f(p_L(y)) ≤ f(y) + ⟨p_L(y) − y, ∇f(y)⟩ + (L/2)‖p_L(y) − y‖²   (+ 16 ε |f(y)| for rounding),

  i ≤ ``max_backtracks`` (static, so the trials are a ``lax.scan``; once every example of the
  batch has passed, the remaining trials are skipped by a ``lax.cond``). An example that fails
  every trial takes the last one, L = η^max L_prev, which the next step starts from. Returns
  (p, L, f(p)). With L ≥ the Lipschitz constant of ∇f the test always passes (the descent
  lemma), so L never exceeds η times that constant when it starts below it.
  """
  batch_ndim = 1 if y.ndim > 1 else 0
  axes = tuple(range(batch_ndim, y.ndim))
  (_, f_y), g = jax.value_and_grad(lambda v: (jnp.sum(smooth_energy_fn(v)),
                                              smooth_energy_fn(v)), has_aux=True)(y)
  slack = _DECREASE_ULPS * jnp.finfo(y.dtype).eps * jnp.abs(f_y)

  def trial(lip):
    p = soft_threshold(y - g / _expand(lip, y.ndim), l1_weight / _expand(lip, y.ndim))
    f_p, diff = smooth_energy_fn(p), p - y
    bound = f_y + jnp.sum(diff * g, axis=axes) + 0.5 * lip * jnp.sum(diff * diff, axis=axes)
    return p, f_p, f_p <= bound + slack

  def retry(carry):
    lip, p, f_p, ok = carry
    lip = jnp.where(ok, lip, lip * backtrack_factor)
    p_new, f_new, ok_new = trial(lip)
    return (lip, jnp.where(_expand(ok, y.ndim), p, p_new), jnp.where(ok, f_p, f_new),
            ok | ok_new)

  def body(carry, _):
    return lax.cond(jnp.all(carry[3]), lambda c: c, retry, carry), None

  (lip, p, f_p, _), _ = lax.scan(body, (lipschitz, *trial(lipschitz)), None,
                                 length=max_backtracks)
  return p, lip, f_p


def argmin_proximal_backtracking(
    smooth_energy_fn: EnergyFn,
    z_init: Array,
    *,
    num_steps: int,
    step_size: float,
    l1_weight: float = 0.0,
    accelerated: bool = True,
    restart: bool = False,
    backtrack_factor: float = 2.0,
    max_backtracks: int = 10,
) -> ArgminResult:
  """``argmin_proximal`` with the step found by backtracking, and FISTA's adaptive restart.

  Per example, from L₀ = 1/``step_size``: each step is ``proximal_backtracking_step`` (L only
  grows, by η = ``backtrack_factor``, until the sufficient decrease holds), ISTA from z_k or
  FISTA from the extrapolated x_k (Beck & Teboulle, 2009, FISTA with backtracking). For a convex
  f and L₀ ≤ L(f): E(z_k) − E* ≤ ηL(f)‖z₀ − ž‖²/(2k) (ISTA), 2ηL(f)‖z₀ − ž‖²/(k + 1)² (FISTA).
  ``max_backtracks = 0``: the fixed step 1/L₀, as ``argmin_proximal``.

  ``restart`` (FISTA only): O'Donoghue & Candès's (2015) function-value restart — when
  E(z_{k+1}) > E(z_k) the momentum is reset (t ← 1, x ← z); here the rising step is also
  discarded (z_{k+1} = z_k, as Beck & Teboulle's monotone FISTA), so E(z_k) does not rise: the
  next step is a proximal gradient step from z_k, which the sufficient decrease makes descend
  (up to its rounding allowance: such a step is never discarded, or a rise by rounding would
  stop the loop for good).
  Momentum, restart and L are per example (examples are independent). ``trace``: E at z_0 …
  z_n; ``grad``: the gradient mapping at ž with the last L; ``lipschitz``: L_k per step.
  """
  if num_steps < 0:
    raise ValueError(f"argmin_proximal_backtracking: num_steps must be >= 0, got {num_steps}")
  if not step_size > 0:
    raise ValueError(f"argmin_proximal_backtracking: step_size must be > 0, got {step_size}")
  if not backtrack_factor > 1:
    raise ValueError(f"argmin_proximal_backtracking: backtrack_factor must be > 1, got "
                     f"{backtrack_factor}")
  if not isinstance(max_backtracks, int) or max_backtracks < 0:
    raise ValueError(f"argmin_proximal_backtracking: max_backtracks must be an integer >= 0, got "
                     f"{max_backtracks!r}")
  if restart and not accelerated:
    raise ValueError("argmin_proximal_backtracking: restart resets FISTA's momentum: it needs "
                     "accelerated=True")
  z0 = lax.stop_gradient(z_init)
  ndim, batch_shape = z0.ndim, z0.shape[:1 if z0.ndim > 1 else 0]
  feature_axes = tuple(range(len(batch_shape), ndim))
  l1 = lambda z: l1_weight * jnp.sum(jnp.abs(z), axis=feature_axes)
  take = functools.partial(proximal_backtracking_step, smooth_energy_fn, l1_weight=l1_weight,
                           backtrack_factor=backtrack_factor, max_backtracks=max_backtracks)

  def step(carry, _):
    z, x, t, lip, e = carry  # z_k, the point the step starts from, FISTA's t_k, L, E(z_k)
    z_next, lip, f_next = take(x, lip)
    e_next = f_next + l1(z_next)
    # Only a momentum step (t > 1) is discarded: a step from z itself is a proximal gradient
    # step, whose rise can only be rounding, and discarding it would repeat it forever.
    rose = (e_next > e) & (t > 1) if restart else jnp.zeros_like(e, bool)
    z_next, e_next = jnp.where(_expand(rose, ndim), z, z_next), jnp.where(rose, e, e_next)
    if accelerated:
      t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
      x_next = z_next + _expand((t - 1.0) / t_next, ndim) * (z_next - z)
      t_next = jnp.where(rose, 1.0, t_next)
      x_next = jnp.where(_expand(rose, ndim), z_next, x_next)
    else:
      t_next, x_next = t, z_next
    return (z_next, x_next, t_next, lip, e_next), (e_next, lip)

  e0 = smooth_energy_fn(z0) + l1(z0)
  init = (z0, z0, jnp.ones(batch_shape, z0.dtype),
          jnp.full(batch_shape, 1.0 / step_size, z0.dtype), e0)
  (z_final, _, _, lip, _), (trace, lipschitz) = lax.scan(step, init, None, length=num_steps)
  inv = 1.0 / _expand(lip, ndim)
  grad = jax.grad(lambda z: jnp.sum(smooth_energy_fn(z)))(z_final)
  mapping = (z_final - soft_threshold(z_final - inv * grad, inv * l1_weight)) / inv
  return ArgminResult(lax.stop_gradient(z_final), jnp.concatenate([e0[None], trace]), mapping,
                      lipschitz)


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


def gaussian_proposal(mean: Array, sigma: float | Array) -> Proposal:
  """q(z) = N(z; μ, diag σ²) around μ = ``mean`` (shape (*batch, d)), e.g. the encoder's guess z̃.

  ``sigma``: one scale for every coordinate, or one per coordinate (broadcast against ``mean``,
  e.g. the Laplace scales of ``laplace_scale``)."""
  mean = jnp.asarray(mean)
  sigma = jnp.broadcast_to(jnp.asarray(sigma, mean.dtype), mean.shape)
  d = mean.shape[-1]

  def sample(key: Array, n: int) -> Array:
    return mean + sigma * jax.random.normal(key, (n, *mean.shape), mean.dtype)

  def log_prob(z: Array) -> Array:
    return (-0.5 * jnp.sum(jnp.square((z - mean) / sigma), axis=-1)
            - jnp.sum(jnp.log(sigma), axis=-1) - 0.5 * d * math.log(2 * math.pi))

  return Proposal(sample, log_prob)


def hessian_diagonal(energy_fn: EnergyFn, z: Array) -> Array:
  """∂²E/∂z_j² at ``z`` (shape (*batch, d)), per example: shape (*batch, d).

  d Hessian-vector products H e_j (forward over reverse, vmapped over the basis vectors e_j);
  each is the same vector for every example, and examples are independent (∂/∂z of Σ_batch E
  is the per-example gradient), so one product gives H_i e_j for every example i at once. d
  products cost about d gradients: meant for the small d of a latent code.
  """
  d = z.shape[-1]
  grad_fn = jax.grad(lambda z: jnp.sum(energy_fn(z)))
  basis = jnp.broadcast_to(
      jnp.eye(d, dtype=z.dtype).reshape((d,) + (1,) * (z.ndim - 1) + (d,)), (d, *z.shape))
  columns = jax.vmap(lambda v: jax.jvp(grad_fn, (z,), (v,))[1])(basis)  # (d, *batch, d)
  return jnp.diagonal(jnp.moveaxis(columns, 0, -1), axis1=-2, axis2=-1)


def laplace_scale(energy_fn: EnergyFn, mode: Array, *, beta: float, max_scale: float) -> Array:
  """σ_j = 1/√(β ∂²E/∂z_j²) at the mode ž = ``mode`` (shape (*batch, d)), at most ``max_scale``.

  The Laplace approximation of p_β(z|y) ∝ exp(−βE(y, z)) with a diagonal precision: around ž,
  βE ≈ βE(ž) + ½ Σ_j β h_j (z_j − ž_j)², h_j = ∂²E/∂z_j² (``hessian_diagonal``). Where h_j is
  not positive (a saddle or a flat direction: no Gaussian there) or below 1/(β σ_max²), the
  curvature floor h_j ← 1/(β σ_max²) gives σ_j = σ_max = ``max_scale``; a non-finite h_j too.
  Gradient-stopped: the proposal is held fixed, as the draws are (``free_energy_softmin_mc``).
  """
  if not beta > 0 or not math.isfinite(beta):
    raise ValueError(f"laplace_scale: beta must be finite and > 0, got {beta}")
  if not max_scale > 0:
    raise ValueError(f"laplace_scale: max_scale must be > 0, got {max_scale}")
  mode = lax.stop_gradient(mode)
  curvature = hessian_diagonal(energy_fn, mode)
  floor = 1.0 / (beta * max_scale**2)
  curvature = jnp.where(curvature > floor, curvature, floor)  # NaN > floor is False: floored
  return lax.stop_gradient(1.0 / jnp.sqrt(beta * curvature))


def laplace_proposal(energy_fn: EnergyFn, mode: Array, *, beta: float,
                     max_scale: float) -> Proposal:
  """q(z) = N(z; ž, diag σ²) with the Laplace scales σ of ``laplace_scale`` at ž = ``mode``.

  Where E(y, ·) is exactly quadratic with a diagonal Hessian around ž, q is the posterior
  p_β(z|y) itself: every importance weight exp(−βE)/q is the same, the effective sample size is
  the number of draws and F̂_β is exact. Otherwise q is a local fit: its tails are those of
  the curvature at ž, lighter than p_β's where E grows slower than quadratically far from ž.
  """
  sigma = laplace_scale(energy_fn, mode, beta=beta, max_scale=max_scale)
  return gaussian_proposal(lax.stop_gradient(mode), sigma)


def uniform_proposal(low: float, high: float, shape: tuple[int, ...]) -> Proposal:
  """q(z) = U([low, high]^d) for latents of ``shape`` = (*batch, d)."""
  d = shape[-1]

  def sample(key: Array, n: int) -> Array:
    return jax.random.uniform(key, (n, *shape), minval=low, maxval=high)

  def log_prob(z: Array) -> Array:
    return jnp.full(z.shape[:-1], -d * math.log(high - low), z.dtype)

  return Proposal(sample, log_prob)


def wrapped_gaussian_proposal(mean: Array, sigma: float | Array, low: float, high: float, *,
                              max_sigma: float | None = None) -> Proposal:
  """q(z) = Σ_k N(z + kP; ž, σ²) on the periodic [low, high[ (P = high − low), per coordinate.

  For a periodic latent (the ellipse's angle) a Gaussian around ž = ``mean`` (shape
  (*batch, d)) wrapped onto one period: samples are ž + σε taken modulo P. The density sums
  the images k = −K … K with K = ⌈6σ/P⌉ + 1: z and ž both lie in one period, so an omitted
  image is ≥ 6σ + P away and weighs < e⁻¹⁸ of the nearest. ``sigma``: a number, or an array
  broadcast against ``mean`` (e.g. ``laplace_scale``) with ``max_sigma`` ≥ every σ, a number
  that fixes K before any value is known.
  """
  bound = sigma if isinstance(sigma, (int, float)) else max_sigma
  if bound is None:
    raise ValueError("wrapped_gaussian_proposal: an array sigma needs max_sigma (a number >= "
                     "every sigma) to fix the number of images")
  period = high - low
  mean = low + jnp.mod(jnp.asarray(mean) - low, period)
  sigma = jnp.broadcast_to(jnp.asarray(sigma, mean.dtype), mean.shape)
  num_images = math.ceil(6 * bound / period) + 1
  shifts = period * jnp.arange(-num_images, num_images + 1, dtype=mean.dtype)

  def sample(key: Array, n: int) -> Array:
    z = mean + sigma * jax.random.normal(key, (n, *mean.shape), mean.dtype)
    return low + jnp.mod(z - low, period)

  def log_prob(z: Array) -> Array:
    u = (z - mean)[..., None] + shifts  # (..., d, images)
    log_1d = jax.nn.logsumexp(-0.5 * jnp.square(u / sigma[..., None]), axis=-1) - (
        jnp.log(sigma) + 0.5 * math.log(2 * math.pi))
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
  # Kish's effective sample size (Σ w)² / Σ w² of the importance weights, shape (*batch):
  # n when every draw weighs the same (q = p_β), 1 when one draw carries all the weight.
  ess: Array


def effective_sample_size(log_weights: Array, axis: int = 0) -> Array:
  """Kish's n_eff = (Σ_k w_k)² / Σ_k w_k² of importance weights given by their logs.

  Between 1 (one weight dominates) and n (all equal); invariant to a common factor of the
  weights, so the largest is factored out (no overflow however large −βE gets).
  """
  w = jnp.exp(log_weights - jnp.max(log_weights, axis=axis, keepdims=True))
  return jnp.square(jnp.sum(w, axis=axis)) / jnp.sum(jnp.square(w), axis=axis)


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
  error of F_β follows from that of the mean weight by the delta method; ``ess`` is the
  weights' effective sample size (``effective_sample_size``): how many of the draws F̂_β
  really rests on (a few out of n: q misses where exp(−βE) is large, and the standard
  error, itself estimated from those few, is not to be trusted).
  """
  if not beta > 0 or not math.isfinite(beta):
    raise ValueError(f"free_energy_softmin_mc: beta must be finite and > 0, got {beta}")
  z = proposal.sample(key, num_samples)
  energies = jax.vmap(energy_fn)(z)  # (n, *batch)
  log_w = -beta * energies - proposal.log_prob(z) - log_volume
  log_mean = jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)
  w = jnp.exp(log_w - jnp.max(log_w, axis=0))  # scaled weights in [0, 1]
  rel_se = jnp.std(w, axis=0, ddof=1) / (math.sqrt(num_samples) * jnp.mean(w, axis=0))
  return MonteCarloFreeEnergy(-log_mean / beta, rel_se / beta, effective_sample_size(log_w))
