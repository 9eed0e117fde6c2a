"""Latent inference on the lecture's ellipse energy against grids, quadrature and finite differences."""

import math

import numpy as np
import optax
import pytest
import jax
import jax.numpy as jnp
from scipy import integrate

from energy_ae import inference, models

W1, W2 = 2.0, 1.5


def ellipse_energy(y, z, w=(W1, W2)):
  """E(y, z) = (y₁ − w₁ cos z)² + (y₂ − w₂ sin z)², z of shape (..., 1)."""
  z = z[..., 0]
  return (y[..., 0] - w[0] * jnp.cos(z)) ** 2 + (y[..., 1] - w[1] * jnp.sin(z)) ** 2


def _points(n, seed=0):
  rng = np.random.default_rng(seed)
  theta = rng.uniform(0, 2 * np.pi, n)
  radius = rng.uniform(0.0, 1.3, n)
  return jnp.asarray(np.stack([radius * W1 * np.cos(theta), radius * W2 * np.sin(theta)], -1),
                     jnp.float32)


def test_argmin_from_100_random_starts_reaches_the_fine_grid_minimum():
  y = _points(10)
  z0 = jax.random.uniform(jax.random.key(0), (100, 10, 1), minval=0, maxval=2 * np.pi)

  @jax.jit
  def solve(y, z0):
    run = lambda z0: inference.argmin(
        lambda z: ellipse_energy(y, z), z0, num_steps=300, optimizer=optax.adam(0.05))
    return jax.vmap(run)(z0)  # 100 starts, each a batch of 10 points

  result = solve(y, z0)
  assert result.trace.shape == (100, 301, 10)
  found = ellipse_energy(y[None], result.z)  # (100, 10)
  grid = inference.uniform_grid(0, 2 * np.pi, 200_000)
  grid_min = ellipse_energy(y, inference.argmin_grid(lambda z: ellipse_energy(y, z), grid).z)
  np.testing.assert_array_less(found.min(0), grid_min + 1e-4)
  # Every run ends at a stationary point (a start may fall into the other, local, minimum).
  slope = jax.vmap(jax.grad(lambda z, y: ellipse_energy(y, z).sum()), (0, None))(result.z, y)
  np.testing.assert_allclose(slope, 0.0, atol=1e-3)
  # The trace starts at the initial energies.
  np.testing.assert_allclose(result.trace[:, 0], ellipse_energy(y[None], z0), rtol=1e-6)


def test_argmin_best_of_starts_matches_grid_to_1e4():
  y = _points(100, seed=1)
  starts = jnp.linspace(0, 2 * np.pi, 8, endpoint=False)[:, None, None] * jnp.ones((8, 100, 1))

  @jax.jit
  def solve(y, starts):
    run = lambda z0: inference.argmin(
        lambda z: ellipse_energy(y, z), z0, num_steps=200, learning_rate=0.1)
    result = jax.vmap(run)(starts)  # (8, 100, 1)
    energies = ellipse_energy(y[None], result.z)
    best = jnp.argmin(energies, axis=0)
    return jnp.take_along_axis(result.z, best[None, :, None], axis=0)[0]

  z_check = solve(y, starts)
  grid = inference.uniform_grid(0, 2 * np.pi, 200_000)
  grid_min = ellipse_energy(y, inference.argmin_grid(lambda z: ellipse_energy(y, z), grid).z)
  np.testing.assert_array_less(ellipse_energy(y, z_check), grid_min + 1e-4)


def test_argmin_grid_finds_the_exhaustive_minimum():
  y = _points(7)
  grid = inference.uniform_grid(0, 2 * np.pi, 48)
  result = inference.argmin_grid(lambda z: ellipse_energy(y, z), grid)
  assert result.energies.shape == (7, 48) and result.z.shape == (7, 1)
  brute = np.array([[float(ellipse_energy(y[i], grid[k])) for k in range(48)] for i in range(7)])
  np.testing.assert_allclose(result.energies, brute, rtol=1e-6)
  np.testing.assert_allclose(ellipse_energy(y, result.z), brute.min(1), rtol=1e-6)


def test_free_energy_min_gradient_equals_finite_difference_of_f_infinity():
  """∂F∞/∂w = ∂E(y, ž)/∂w with ž held fixed (envelope theorem)."""
  with jax.enable_x64(True):
    y = jnp.asarray(_points(5, seed=3), jnp.float64)
    grid = inference.uniform_grid(0, 2 * np.pi, 64)

    def f_inf(w):
      energy = lambda z: ellipse_energy(y, z, w)
      start = inference.argmin_grid(energy, grid).z  # best start, then refine
      z_check = inference.argmin(energy, start, num_steps=500, learning_rate=0.05).z
      return jnp.sum(inference.free_energy_min(energy, z_check))

    w = jnp.array([1.7, 0.9])
    grad = jax.grad(f_inf)(w)
    eps = 1e-5
    fd = [(f_inf(w + eps * e) - f_inf(w - eps * e)) / (2 * eps) for e in jnp.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.1, 0.3, 1.0, 3.2, 10.0])
def test_softmin_matches_scipy_quadrature(beta):
  y = np.array([[0.3, -0.7], [1.8, 0.2], [0.0, 0.0]])
  grid = inference.uniform_grid(0, 2 * np.pi, 2000)
  with jax.enable_x64(True):
    energies = inference.argmin_grid(lambda z: ellipse_energy(jnp.asarray(y), z), grid).energies
    got = inference.free_energy_softmin(energies, beta)
  for i in range(len(y)):
    def e(z, i=i):
      return (y[i, 0] - W1 * np.cos(z)) ** 2 + (y[i, 1] - W2 * np.sin(z)) ** 2
    # Break points at the quadrants: the integrand's peaks for large β sit there.
    integral, _ = integrate.quad(lambda z, e=e: np.exp(-beta * e(z)), 0, 2 * np.pi, limit=200,
                                 points=[np.pi / 2, np.pi, 3 * np.pi / 2], epsabs=0)
    expected = -np.log(integral / (2 * np.pi)) / beta
    np.testing.assert_allclose(got[i], expected, rtol=1e-4)


def test_softmin_limits_and_monotonicity():
  y = jnp.array([[0.0, 0.0], [1.0, 1.0]])
  grid = inference.uniform_grid(0, 2 * np.pi, 48)
  energies = inference.argmin_grid(lambda z: ellipse_energy(y, z), grid).energies
  betas = [0.0, 1e-8, 1e-3, 0.1, 0.3, 1, 3.2, 10, 100, 1e4, 1e6, float("inf")]
  values = np.stack([np.asarray(inference.free_energy_softmin(energies, b)) for b in betas])
  assert np.isfinite(values).all()
  np.testing.assert_allclose(values[0], energies.mean(-1), rtol=1e-6)
  np.testing.assert_allclose(values[1], energies.mean(-1), rtol=1e-5)  # β → 0 is the mean
  np.testing.assert_allclose(values[-1], energies.min(-1), rtol=1e-6)
  np.testing.assert_allclose(values[-2], energies.min(-1), atol=1e-4)  # β = 1e6 ≈ min
  assert np.all(np.diff(values, axis=0) <= 1e-6)  # decreasing in β


def test_softmin_is_differentiable_and_jittable():
  energies = jnp.array([[0.5, 1.0, 3.0]])
  grad = jax.jit(jax.grad(lambda e: inference.free_energy_softmin(e, 2.0).sum()))(energies)
  weights = jax.nn.softmax(-2.0 * energies)  # ∂F_β/∂E_k = softmax(−βE)_k
  np.testing.assert_allclose(grad, weights, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.3, 1.0, 10.0])
def test_monte_carlo_softmin_agrees_with_grid(beta):
  y = jnp.array([[0.3, -0.7], [1.8, 0.2], [0.0, 0.0]])
  energy = lambda z: ellipse_energy(y, z)
  grid = inference.uniform_grid(0, 2 * np.pi, 10_000)
  reference = inference.free_energy_softmin(inference.argmin_grid(energy, grid).energies, beta)
  proposal = inference.uniform_proposal(0.0, 2 * np.pi, (3, 1))
  mc = jax.jit(
      lambda key: inference.free_energy_softmin_mc(
          energy, key, beta=beta, proposal=proposal, num_samples=100_000,
          log_volume=math.log(2 * np.pi))
  )(jax.random.key(0))
  assert np.all(mc.stderr > 0)
  assert np.all(np.abs(mc.free_energy - reference) < 3 * mc.stderr + 1e-6), (mc, reference)


def test_monte_carlo_with_gaussian_proposal_on_a_gaussian_energy():
  """E(z) = ½‖z − m‖² in d = 3: −(1/β) log ∫ exp(−βE) dz = −(d / 2β) log(2π/β)."""
  beta, d = 2.0, 3
  m = jnp.array([[0.5, -1.0, 2.0]])
  energy = lambda z: 0.5 * jnp.sum((z - m) ** 2, -1)
  proposal = inference.gaussian_proposal(m + 0.3, sigma=1.0)
  mc = inference.free_energy_softmin_mc(
      energy, jax.random.key(1), beta=beta, proposal=proposal, num_samples=100_000)
  exact = -(d / (2 * beta)) * math.log(2 * math.pi / beta)
  assert abs(float(mc.free_energy[0]) - exact) < 3 * float(mc.stderr[0]) + 1e-6
  assert abs(float(mc.free_energy[0]) - exact) < 0.01 * abs(exact)


# ----------------------------------------------------------------------------
# Proximal inner loops: ISTA and FISTA
# ----------------------------------------------------------------------------


def test_soft_threshold_is_the_prox_of_the_l1_norm():
  z = jnp.array([-2.0, -0.3, 0.0, 0.2, 1.5])
  np.testing.assert_allclose(inference.soft_threshold(z, 0.5), [-1.5, 0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("accelerated", [False, True], ids=["ista", "fista"])
def test_proximal_loop_solves_the_lasso_with_an_orthogonal_dictionary(accelerated):
  """E(z) = ‖y − D z‖² + λ‖z‖₁ with DᵀD = I: ž = S_{λ/2}(Dᵀ y) in closed form."""
  rng = np.random.default_rng(0)
  d, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  y = rng.normal(size=(5, 16))
  lam = 0.8
  expected = np.sign(y @ d) * np.maximum(np.abs(y @ d) - lam / 2, 0.0)
  dj, yj = jnp.asarray(d, jnp.float32), jnp.asarray(y, jnp.float32)
  smooth = lambda z: jnp.sum(jnp.square(yj - z @ dj.T), axis=-1)
  # ∇f = 2Dᵀ(Dz − y) has Lipschitz constant L = 2: η = 1/L.
  result = inference.argmin_proximal(smooth, jnp.zeros((5, 16)), num_steps=50, step_size=0.5,
                                     l1_weight=lam, accelerated=accelerated)
  np.testing.assert_allclose(result.z, expected, atol=1e-5)
  assert np.all(np.asarray(result.z)[expected == 0] == 0)  # exact zeros, not ±1e-8


def test_fista_converges_as_one_over_k_squared_and_ista_as_one_over_k():
  """Beck & Teboulle (2009): E(z_k) − E* ≤ L‖z₀ − ž‖²/(2k) (ISTA), 2L‖z₀ − ž‖²/(k+1)² (FISTA)
  for η = 1/L; the reference ž is scikit-learn's coordinate-descent Lasso."""
  from sklearn.linear_model import Lasso

  rng = np.random.default_rng(1)
  m, n = 40, 60
  a = rng.normal(size=(m, n)) * np.logspace(0, -1.5, n)  # ill-conditioned columns
  y = rng.normal(size=m)
  lam = 0.1
  # sklearn minimises ‖y − A z‖²/(2m) + α‖z‖₁: the same minimiser for α = λ/(2m).
  z_star = Lasso(alpha=lam / (2 * m), fit_intercept=False, tol=1e-14, max_iter=10**6).fit(a, y).coef_
  e_star = np.sum((y - a @ z_star) ** 2) + lam * np.abs(z_star).sum()
  lipschitz = 2 * np.linalg.norm(a, 2) ** 2
  steps = 300
  gaps = {}
  with jax.enable_x64(True):
    aj, yj = jnp.asarray(a, jnp.float64), jnp.asarray(y, jnp.float64)
    smooth = lambda z: jnp.sum(jnp.square(yj - z @ aj.T), axis=-1)
    for accelerated in (False, True):
      trace = inference.argmin_proximal(smooth, jnp.zeros((1, n), jnp.float64), num_steps=steps,
                                        step_size=1 / lipschitz, l1_weight=lam,
                                        accelerated=accelerated).trace[:, 0]
      gaps[accelerated] = np.asarray(trace) - e_star
  k = np.arange(1, steps + 1)
  r2 = np.sum(z_star**2)  # ‖z₀ − ž‖² with z₀ = 0
  slack = 1e-9 * e_star  # the reference's own tolerance
  assert np.all(gaps[False][1:] <= lipschitz * r2 / (2 * k) + slack)
  assert np.all(gaps[True][1:] <= 2 * lipschitz * r2 / (k + 1) ** 2 + slack)
  assert gaps[True][-1] < 0.1 * gaps[False][-1]  # and FISTA is far ahead after 300 steps


@pytest.mark.parametrize("optimizer", ["ista", "fista"])
def test_target_prop_trains_with_a_proximal_inner_loop(optimizer):
  from experiments import target_prop as tp_config

  config = tp_config.get_config("quick")
  config.model.inner_optimizer = optimizer
  config.model.inner_lr = 0.0  # its own default
  model = models.make(config, (784,))
  y = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 784)), jnp.float32)
  params = model.init(jax.random.key(0), {"y": y})
  z_tilde, z_check = model.extras["infer"](params, y)
  assert np.mean(np.asarray(z_check) == 0) > np.mean(np.asarray(z_tilde) == 0)  # sparse codes
  (value, _), grads = jax.value_and_grad(model.loss, has_aux=True)(params, {"y": y}, None)
  assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


# ----------------------------------------------------------------------------
# Stationarity of ž and the inner loop's convergence
# ----------------------------------------------------------------------------


def test_argmin_returns_the_energys_gradient_at_its_last_z():
  """∂E/∂z = 2(y₁ − w₁ cos z) w₁ sin z − 2(y₂ − w₂ sin z) w₂ cos z at z₀ (0 steps), and ≈ 0
  once converged (float32: E'' ≤ 20 times the rounding of z, 1e-6, is far below 1e-3)."""
  y = _points(10, seed=4)
  z0 = jnp.linspace(0.1, 6.0, 10)[:, None]
  at_start = inference.argmin(lambda z: ellipse_energy(y, z), z0, num_steps=0, learning_rate=0.1)
  z, yn = np.asarray(z0[:, 0], np.float64), np.asarray(y, np.float64)
  slope = (2 * (yn[:, 0] - W1 * np.cos(z)) * W1 * np.sin(z)
           - 2 * (yn[:, 1] - W2 * np.sin(z)) * W2 * np.cos(z))
  np.testing.assert_allclose(at_start.grad[:, 0], slope, rtol=1e-5, atol=1e-5)
  converged = inference.argmin(lambda z: ellipse_energy(y, z), z0, num_steps=500,
                               learning_rate=0.05)
  np.testing.assert_allclose(converged.grad, 0.0, atol=1e-3)


def test_proximal_gradient_mapping_in_closed_form():
  """E = ‖y − Dz‖² + λ‖z‖₁, DᵀD = I, from z₀ = 0: G_η(0) = (0 − S_ηλ(2ηDᵀy))/η = −S_λ(2Dᵀy);
  at the solution ž = S_{λ/2}(Dᵀy) it is 0 (the prox fixed point)."""
  rng = np.random.default_rng(2)
  d, _ = np.linalg.qr(rng.normal(size=(16, 16)))
  y = rng.normal(size=(5, 16))
  lam, eta = 0.8, 0.5
  dj, yj = jnp.asarray(d, jnp.float32), jnp.asarray(y, jnp.float32)
  smooth = lambda z: jnp.sum(jnp.square(yj - z @ dj.T), axis=-1)
  run = lambda steps: inference.argmin_proximal(smooth, jnp.zeros((5, 16)), num_steps=steps,
                                                step_size=eta, l1_weight=lam)
  u = 2 * y @ d
  np.testing.assert_allclose(run(0).grad, -np.sign(u) * np.maximum(np.abs(u) - lam, 0), atol=1e-5)
  np.testing.assert_allclose(run(50).grad, 0.0, atol=1e-5)


def test_relative_change_over_the_last_window_of_a_trace():
  """E_t = 1 + ρᵗ: |E_{n−m} − E_n| / E_n = (ρ^{n−m} − ρⁿ) / (1 + ρⁿ), m clipped to n."""
  rho, n = 0.5, 6
  trace = jnp.asarray(1 + rho ** np.arange(n + 1), jnp.float32)[:, None] * jnp.ones((1, 3))
  for window, m in ((1, 1), (4, 4), (100, n)):
    expected = (rho ** (n - m) - rho**n) / (1 + rho**n)
    np.testing.assert_allclose(inference.relative_change(trace, window), expected, rtol=1e-6)
  with pytest.raises(ValueError, match="window must be >= 1"):
    inference.relative_change(trace, 0)
  with pytest.raises(ValueError, match="0 steps"):
    inference.relative_change(trace[:1], 1)


@pytest.mark.parametrize("mean,sigma", [(0.1, 0.3), (6.2, 0.3), (3.0, 4.0)])
def test_wrapped_gaussian_and_mixture_proposals_are_the_densities_they_sample(mean, sigma):
  """∫₀^{2π} q dz = 1 (a fine rectangle rule, exact to exponential order for these smooth
  periodic densities), and q's own draws follow it, within 4 Monte Carlo standard errors: the
  wrapped Gaussian's E[cos(z − μ)] = exp(−σ²/2) (its characteristic function at 1), and the
  defensive mixture's E_q[1/q(z)] = |Z| = 2π (1/q ≤ 2π/α: a finite variance), which is the
  unbiasedness an importance sampler's weights need."""
  period = 2 * math.pi
  wrapped = inference.wrapped_gaussian_proposal(jnp.full((2, 1), mean), sigma, 0.0, period)
  mixture = inference.mixture_proposal(
      (inference.uniform_proposal(0.0, period, (2, 1)), wrapped), (0.3, 0.7))
  grid = jnp.broadcast_to(inference.uniform_grid(0.0, period, 4000)[:, None, :], (4000, 2, 1))

  def within_4_se(values, expected):
    values = np.asarray(values, np.float64)
    se = values.std(0, ddof=1) / math.sqrt(len(values))
    assert np.all(np.abs(values.mean(0) - expected) <= 4 * se), (values.mean(0), expected, se)

  for q in (wrapped, mixture):
    np.testing.assert_allclose(jnp.mean(jnp.exp(q.log_prob(grid)), 0) * period, 1.0, rtol=1e-5)
    z = q.sample(jax.random.key(0), 200_000)
    assert z.shape == (200_000, 2, 1) and np.all((z >= 0) & (z < period))
  within_4_se(jnp.cos(wrapped.sample(jax.random.key(1), 200_000) - mean)[..., 0],
              math.exp(-sigma**2 / 2))
  within_4_se(jnp.exp(-mixture.log_prob(mixture.sample(jax.random.key(2), 200_000))), period)
