"""Samplers on known targets (energy_ae.samplers).

Every Markov chain test runs n independent chains and reads one sample from each (its last
state), so the n samples are independent and a mean over them has the standard error σ/√n
of independent draws. Tolerances are NUM_SE such standard errors (a Gaussian mean lands
beyond 4 of them once in 16,000 comparisons), plus a stated bound where a known bias remains.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate

from energy_ae import data, models, samplers
from experiments import common

NUM_SE = 4


def _run(log_density, init, *, step_size, num_steps, adjusted, seed=0):
  run = jax.jit(lambda k, v: samplers.langevin_chains(
      lambda v_, c: log_density(v_), k, v, step_size=step_size, num_steps=num_steps,
      adjusted=adjusted))
  last, acceptance = run(jax.random.key(seed), init)
  return np.asarray(last, np.float64), np.asarray(acceptance)


def _check_mean_and_covariance(samples, mean, cov):
  """Mean within NUM_SE·√(Σ_ii/n); each covariance entry within NUM_SE·√((Σ_ii Σ_jj + Σ_ij²)/n),
  the standard error of a sample covariance of n independent Gaussian draws."""
  n = len(samples)
  np.testing.assert_array_less(np.abs(samples.mean(0) - mean), NUM_SE * np.sqrt(np.diag(cov) / n))
  se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
  np.testing.assert_array_less(np.abs(np.cov(samples.T) - cov), NUM_SE * se)


# A correlated 2-D Gaussian: eigenvalues 1.8 and 0.2 of Σ.
MEAN = np.array([1.0, -2.0])
COV = np.array([[1.0, 0.8], [0.8, 1.0]])
STEP = 0.2  # large on purpose: ULA's stationary covariance is then far from Σ


def test_langevin_on_a_gaussian_has_its_closed_form_stationary_law_and_mala_removes_its_bias():
  """ULA on N(m, Σ) is a linear autoregression v' = v − εΣ⁻¹(v − m) + √(2ε) ξ whose stationary
  law is N(m, Σ (I − εΣ⁻¹/2)⁻¹) (eigenvalue λ becomes λ / (1 − ε/2λ): 0.2 → 0.4 at ε = 0.2).
  MALA's Metropolis–Hastings step makes N(m, Σ) itself stationary. 4,000 chains of 600 steps
  from (4, 3): the slowest mode contracts by (1 − ε/1.8)^600 ≈ 1e-31, so no start remains."""
  precision = np.linalg.inv(COV)
  log_density = lambda v: -0.5 * (v - MEAN) @ jnp.asarray(precision, jnp.float32) @ (v - MEAN)
  init = jnp.tile(jnp.array([4.0, 3.0]), (4000, 1))
  ula, _ = _run(log_density, init, step_size=STEP, num_steps=600, adjusted=False)
  ula_cov = COV @ np.linalg.inv(np.eye(2) - STEP * precision / 2)
  _check_mean_and_covariance(ula, MEAN, ula_cov)
  # The bias is real and this test sees it: ULA's variance along (1, −1) is off by >> NUM_SE.
  u = np.array([1.0, -1.0]) / math.sqrt(2)
  assert u @ np.cov(ula.T) @ u - u @ COV @ u > 10 * NUM_SE * (u @ COV @ u) * math.sqrt(2 / 4000)
  mala, acceptance = _run(log_density, init, step_size=STEP, num_steps=600, adjusted=True)
  _check_mean_and_covariance(mala, MEAN, COV)
  assert 0.2 < acceptance.mean() < 1.0  # moves are both accepted and rejected


RADIUS, WIDTH = 1.0, 0.1  # the ring p(y) ∝ exp(−(‖y‖ − r)² / 2s²)


def _ring_moments():
  """E[ρ], Var[ρ] of the radius ρ = ‖y‖, whose density is ∝ ρ exp(−(ρ − r)²/2s²) (the ρ of
  polar coordinates), by quadrature: E[ρ] ≈ r + s²/r, above r."""
  weight = lambda rho, k: rho**k * rho * math.exp(-(rho - RADIUS) ** 2 / (2 * WIDTH**2))
  norm, first, second = (integrate.quad(weight, 0, RADIUS + 20 * WIDTH, args=(k,))[0]
                         for k in (0, 1, 2))
  return first / norm, second / norm - (first / norm) ** 2


@pytest.mark.parametrize("adjusted, step_size", [(False, 2e-4), (True, 2e-3)])
def test_langevin_and_mala_on_a_ring_reproduce_its_radius_mean_and_covariance(adjusted, step_size):
  """4,000 chains start at radius 0.5 with uniform angles (the angle's law is then uniform at
  every step, by symmetry; the radius has to relax, in ~s²/ε steps).

  ULA's own bias, at ε/2s² = 1% (the Gaussian's λ/(1 − ε/2λ) across the ring), inflates
  Var[ρ] by ~1% and shifts E[ρ] by ~1% of s²/r: 0.45 and 0.06 standard errors, inside the
  tolerance. A sampler that dropped the ρ of the polar density would centre the radius on r,
  6.4 standard errors of E[ρ] low: caught.
  """
  log_density = lambda v: -(jnp.linalg.norm(v) - RADIUS) ** 2 / (2 * WIDTH**2)
  n = 4000
  angle = jax.random.uniform(jax.random.key(1), (n,), maxval=2 * math.pi)
  init = 0.5 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)
  samples, _ = _run(log_density, init, step_size=step_size,
                    num_steps=int(40 * WIDTH**2 / step_size), adjusted=adjusted)
  rho = np.linalg.norm(samples, axis=-1)
  mean_rho, var_rho = _ring_moments()
  assert abs(rho.mean() - mean_rho) < NUM_SE * math.sqrt(var_rho / n)
  # The sample variance of n draws of a near-Gaussian ρ has standard error Var·√(2/n).
  assert abs(rho.var(ddof=1) - var_rho) < NUM_SE * var_rho * math.sqrt(2 / n)
  second = var_rho + mean_rho**2  # E[ρ²]: Cov(y) = E[ρ²]/2 · I by rotational symmetry
  _check_mean_and_covariance(samples, np.zeros(2), np.eye(2) * second / 2)


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------


def _sample_config(name, **overrides):
  sc = common.load_config(name).sample
  for key, value in overrides.items():
    sc[key] = value
  return sc


@pytest.mark.parametrize("sampler", ["langevin", "mala"])
def test_ellipse_samples_lie_on_the_learned_ellipse(sampler):
  """y ~ exp(−β F∞(y)) for the ellipse w = (2, 1.5): across the curve the offset t has density
  ∝ exp(−β t²)(1 − κt), so F∞ = t² has mean 1/2β up to a curvature term of relative order
  κ²/2β ≤ 0.2% (κ ≤ w₁/w₂² = 0.9 at β = 200). ULA's bias across the curve is the Gaussian's:
  1/2β becomes 1/2β / (1 − εβ). t²/(1/2β) is χ²₁, so the mean of n has standard error
  √(2/n)/2β. The samples also go all round: every eighth of the angle holds some."""
  config = common.load_config("ellipse")
  model = models.make(config, (2,))
  params = {"w": jnp.array([2.0, 1.5])}
  train = {"y": np.zeros((4, 2), np.float32)}
  sc = _sample_config("ellipse", sampler=sampler, num_samples=2000, step_size=1e-3,
                      num_steps=600, beta=200.0)
  s = samplers.draw(model, params, jax.random.key(0), sc, train=train, value_range=(-2.5, 2.5))
  f = np.asarray(model.free_energy(params, s.y)[0], np.float64)
  expected = 1 / (2 * sc.beta) / (1 if sampler == "mala" else 1 - sc.step_size * sc.beta)
  assert abs(f.mean() - expected) < NUM_SE * math.sqrt(2 / len(f)) / (2 * sc.beta) + 0.002 * expected
  assert f.max() < 30 / (2 * sc.beta)  # no sample stuck off the curve (P(χ²₁ > 30) ≈ 4e-8)
  angle = np.arctan2(np.asarray(s.y)[:, 1] / 1.5, np.asarray(s.y)[:, 0] / 2.0)
  assert len(np.unique(np.floor((angle + math.pi) / (math.pi / 4)))) == 8
  assert s.info["finite_fraction"] == 1.0


def test_horn_samples_lie_on_the_ellipse_of_their_x():
  """The horn at the x of each chain (drawn from the training x): the same χ²₁ law of
  β F∞(x, y) as the ellipse's, on any f (here its initialisation)."""
  config = common.load_config("horn")
  dataset = data.load(config.data)
  model = models.make(config, (2,))
  params = model.init(jax.random.key(0), {k: jnp.asarray(v[:2]) for k, v in dataset.train.items()
                                          if k in ("y", "x")})
  sc = _sample_config("horn", sampler="mala", num_samples=500, num_steps=200)
  s = samplers.draw(model, params, jax.random.key(1), sc, train=dataset.train,
                    value_range=dataset.value_range)
  assert set(np.unique(np.asarray(s.x))) <= set(np.unique(dataset.train["x"]))
  f = np.asarray(model.free_energy(params, s.y, s.x)[0], np.float64)
  tol = NUM_SE * math.sqrt(2 / len(f)) / (2 * sc.beta) + 0.05 / (2 * sc.beta)  # + curvature
  assert abs(f.mean() - 1 / (2 * sc.beta)) < tol, (f.mean(), s.info)


def _train_spiral_dae(num_steps=1000):
  """A smaller DAE than experiments/spiral_dae.py's (two hidden layers of 64, d = 32), trained
  for seconds: its outputs lie ~0.025 from the spiral, a third of the corrupted points'."""
  config = common.load_config("spiral_dae", **{"model.encoder_widths": (64, 64),
                                               "model.decoder_widths": (64, 64),
                                               "model.latent_dim": 32})
  dataset = data.load(config.data)
  model = models.make(config, (2,), dataset.value_range)
  y = jnp.asarray(dataset.train["y"])
  params = model.init(jax.random.key(0), {"y": y[:1]})
  tx = optax.adam(optax.cosine_decay_schedule(1e-2, num_steps, 0.05))

  def step(carry, key):
    params, opt = carry
    k_batch, k_corrupt = jax.random.split(key)
    batch = y[jax.random.choice(k_batch, len(y), (200,), replace=False)]
    grads = jax.grad(lambda p: model.loss(p, {"y": batch}, jax.random.split(k_corrupt, 200))[0])(
        params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), None

  (params, _), _ = jax.jit(lambda p, k: jax.lax.scan(step, (p, tx.init(p)), jax.random.split(
      k, num_steps)))(params, jax.random.key(1))
  return config, model, params, dataset


def _distance_to(points, curve):
  return np.sqrt(((np.asarray(points)[:, None, :] - curve[None]) ** 2).sum(-1)).min(1)


def test_dae_walkback_chain_stays_on_the_spiral_and_covers_it():
  """From uniform noise in [−1, 1]², 100 steps of corrupt (σ = 0.1) and denoise. The corrupted
  points the DAE undoes lie σ√(2/π) = 0.08 from the curve on average (a half-normal) and
  uniform points 0.19; the chain's samples must lie within half the former (4 standard errors
  of their mean included), and every point of the spiral must have a sample within σ, the
  scale below which the DAE cannot resolve the data (1,000 samples spread evenly along its
  length 6.4 would be 0.006 apart; a chain stuck in a few places leaves gaps of whole turns),
  except within 2σ of arc length of its two ends: there a denoiser pulls points back along the
  curve (the corrupted points near an end come mostly from inside it), shortening it."""
  config, model, params, dataset = _train_spiral_dae()
  sc = _sample_config("spiral_dae", sampler="walkback", num_samples=1000, num_steps=100)
  s = samplers.draw(model, params, jax.random.key(2), sc, train=dataset.train,
                    value_range=dataset.value_range)
  curve = data.spiral_points(20000, turns=config.data.turns)
  d = _distance_to(s.y, curve)
  sigma = config.model.corruption_kwargs.gaussian.sigma
  assert d.mean() + NUM_SE * d.std() / math.sqrt(len(d)) < 0.5 * sigma * math.sqrt(2 / math.pi)
  arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
  inner = curve[(arc > 2 * sigma) & (arc < arc[-1] - 2 * sigma)][::50]
  assert _distance_to(inner, np.asarray(s.y)).max() < sigma


# ----------------------------------------------------------------------------
# Every model: what it supports, and its config's sampler runs
# ----------------------------------------------------------------------------

SUPPORTED = {
    "ellipse": ["langevin", "mala"],
    "horn": ["langevin", "mala"],
    "target_prop": ["langevin", "mala", "gmm"],
    "ae": ["gmm"],
    "cae": ["gmm"],
    "dae": ["walkback", "gmm"],
    "spiral_dae": ["walkback", "gmm"],
    "vae": ["gmm", "prior"],
}


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_every_model_supports_its_samplers_and_its_default_runs(name):
  """At initialisation, a few chains and steps: the config's default sampler gives finite
  samples of the data's shape, and ``supported`` follows the model's public functions."""
  config = common.load_config(name, "quick")
  dataset = data.load(config.data)
  model = models.make(config, dataset.train["y"].shape[1:], dataset.value_range)
  batch = {k: jnp.asarray(v[:2]) for k, v in dataset.train.items() if k in ("y", "x")}
  params = model.init(jax.random.key(0), batch)
  assert samplers.supported(model) == SUPPORTED[name]
  assert config.sample.sampler in SUPPORTED[name]
  sc = config.sample
  sc.num_samples, sc.num_steps = 8, 3
  train = {k: v[:200] for k, v in dataset.train.items()}
  s = samplers.draw(model, params, jax.random.key(0), sc, train=train,
                    value_range=dataset.value_range)
  assert s.y.shape == (8, *dataset.train["y"].shape[1:])
  assert s.info["finite_fraction"] == 1.0


def test_an_unsupported_sampler_and_bad_keys_are_one_line_errors():
  config = common.load_config("ae", "quick")
  model = models.make(config, (784,), (-1.0, 1.0))
  config.sample.sampler = "walkback"
  with pytest.raises(ValueError, match=r"^config.sample.sampler = 'walkback': this model "
                     r"supports gmm$"):
    samplers.draw(model, None, jax.random.key(0), config.sample, train={"y": np.zeros((4, 784))},
                  value_range=(-1.0, 1.0))
  config.sample.step_size = -1.0
  with pytest.raises(ValueError, match=r"^config.sample.step_size = -1.0: must be finite and > 0$"):
    samplers.validate(config.sample)


def test_gaussian_mixture_is_fitted_and_sampled_as_sklearn_does():
  """Codes from two well separated Gaussians: a 2-component fit finds their weights, means and
  covariances, and 20,000 draws reproduce them within NUM_SE standard errors (weights: the
  binomial's √(w(1 − w)/n); means: √(Σ_ii/n_k))."""
  rng = np.random.default_rng(0)
  codes = np.concatenate([rng.normal([5.0, 0.0], [1.0, 0.5], (3000, 2)),
                          rng.normal([-5.0, 2.0], [0.3, 2.0], (1000, 2))])
  mixture = samplers.fit_mixture(codes, jax.random.key(0), components=2)
  order = np.argsort(-np.asarray(mixture.weights))
  np.testing.assert_allclose(np.asarray(mixture.weights)[order], [0.75, 0.25], atol=0.01)
  z = np.asarray(samplers.sample_mixture(mixture, jax.random.key(1), 20000), np.float64)
  upper = z[:, 0] > 0
  n = len(z)
  assert abs(upper.mean() - float(mixture.weights[order[0]])) < NUM_SE * math.sqrt(0.75 * 0.25 / n)
  for mask, k in ((upper, order[0]), (~upper, order[1])):
    cov = np.asarray(mixture.cholesky[k] @ mixture.cholesky[k].T, np.float64)
    _check_mean_and_covariance(z[mask], np.asarray(mixture.means[k], np.float64), cov)
