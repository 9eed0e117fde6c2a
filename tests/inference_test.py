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


@pytest.mark.parametrize("optimizer", ["ista", "fista", "fista_bt_restart"])
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


# ----------------------------------------------------------------------------
# The soft minimum's effective sample size and the Laplace proposal
# ----------------------------------------------------------------------------


def test_effective_sample_size_is_kishs_and_survives_huge_log_weights():
  """(Σw)²/Σw²: n for equal weights, 1 for one weight, (1 + 2·0.5)²/(1 + 2·0.25) = 8/3 for
  (1, ½, ½); unchanged by a common factor e^{±1000} (which would overflow a naive exp)."""
  with jax.enable_x64(True):  # float32 would round log ½ + 1000 at 6e-5
    log_w = jnp.log(jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.5, 0.5, 0.0]]).T)  # (n = 4, 2)
    for shift in (0.0, 1000.0, -1000.0):
      np.testing.assert_allclose(inference.effective_sample_size(log_w + shift), [4.0, 8 / 3],
                                 rtol=1e-12)


def test_monte_carlo_free_energy_returns_the_ess_of_its_own_weights():
  """The ``ess`` of an estimate is that of the weights exp(−βE)/q of the very draws it used."""
  beta, n = 1.5, 64
  y = _points(3, seed=5)
  energy = lambda z: ellipse_energy(y, z)
  proposal = inference.gaussian_proposal(jnp.full((3, 1), 1.0), 0.7)
  key = jax.random.key(2)
  mc = inference.free_energy_softmin_mc(energy, key, beta=beta, proposal=proposal, num_samples=n)
  z = proposal.sample(key, n)
  log_w = -beta * jax.vmap(energy)(z) - proposal.log_prob(z)
  w = np.exp(np.asarray(log_w, np.float64))
  np.testing.assert_allclose(mc.ess, w.sum(0) ** 2 / (w**2).sum(0), rtol=1e-5)
  assert np.all((mc.ess >= 1) & (mc.ess <= n))


def test_hessian_diagonal_is_the_diagonal_of_jax_hessian_per_example():
  """A non-separable energy (cross terms z₁z₂, sin(z₁ + z₃)) on a batch of 4: each example's
  diagonal against jax.hessian of that example alone (a bug mixing examples or taking a row
  instead of the diagonal breaks it)."""
  a = jnp.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]])

  def energy(z):  # (..., 3) -> (...)
    return (0.5 * jnp.einsum("...i,ij,...j->...", z, a, z) + jnp.sin(z[..., 0] + z[..., 2])
            + 0.25 * z[..., 1] ** 4)

  z = jax.random.normal(jax.random.key(0), (4, 3))
  got = inference.hessian_diagonal(energy, z)
  expected = jnp.diagonal(jax.jit(jax.vmap(jax.hessian(energy)))(z), axis1=-2, axis2=-1)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_laplace_proposal_is_the_posterior_of_a_diagonal_quadratic_energy():
  """E(z) = c + ½ Σ_j h_j (z_j − m_j)²: p_β = N(m, diag 1/(βh)), so q = p_β; every weight is
  exp(−βc) ∏_j √(2π/(βh_j)), the ESS is the number of draws and F̂_β is the closed form
  c − (1/2β) Σ_j log(2π/(βh_j)) from any key (float64: to rounding, 1e-12)."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    beta, n, d = 2.0, 32, 5
    h = jnp.asarray(rng.uniform(0.3, 20.0, size=(3, d)))
    m = jnp.asarray(rng.normal(size=(3, d)))
    c = jnp.asarray([0.0, 1.5, -4.0])
    energy = lambda z: c + 0.5 * jnp.sum(h * (z - m) ** 2, -1)
    proposal = inference.laplace_proposal(energy, m, beta=beta, max_scale=10.0)
    exact = np.asarray(c) - np.sum(np.log(2 * np.pi / (beta * np.asarray(h))), -1) / (2 * beta)
    for seed in range(3):
      mc = inference.free_energy_softmin_mc(energy, jax.random.key(seed), beta=beta,
                                            proposal=proposal, num_samples=n)
      np.testing.assert_allclose(mc.ess, n, rtol=1e-12)
      np.testing.assert_allclose(mc.free_energy, exact, rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(mc.stderr, 0.0, atol=1e-12)
    # The encoder-style fixed-σ Gaussian at the same mode is not p_β: fewer effective draws.
    fixed = inference.free_energy_softmin_mc(
        energy, jax.random.key(0), beta=beta, proposal=inference.gaussian_proposal(m, 0.75),
        num_samples=n)
    assert np.all(fixed.ess < 0.9 * n), fixed.ess


def test_laplace_scale_floors_curvature_that_is_not_positive():
  """E = ½(4z₁² − z₂² + 0·z₃²) at 0: σ = (1/√(βh₁), σ_max, σ_max) — the concave and the flat
  direction take the floor h = 1/(βσ_max²); a curvature below the floor (h = 0.01) too."""
  beta, max_scale = 2.0, 1.5
  energy = lambda z: 0.5 * (4.0 * z[..., 0] ** 2 - z[..., 1] ** 2 + 0.01 * z[..., 3] ** 2)
  sigma = inference.laplace_scale(energy, jnp.zeros((2, 4)), beta=beta, max_scale=max_scale)
  np.testing.assert_allclose(sigma, [[1 / math.sqrt(beta * 4.0), max_scale, max_scale,
                                      max_scale]] * 2, rtol=1e-6)
  with pytest.raises(ValueError, match="max_scale must be > 0"):
    inference.laplace_scale(energy, jnp.zeros((2, 4)), beta=beta, max_scale=0.0)
  with pytest.raises(ValueError, match="beta must be finite and > 0"):
    inference.laplace_scale(energy, jnp.zeros((2, 4)), beta=math.inf, max_scale=1.0)


def test_laplace_proposal_stays_consistent_on_a_non_quadratic_energy():
  """E = ½(z − m)ᵀA(z − m) + ¼z₁⁴ + 0.5 sin(2z₂) in d = 2 with a non-diagonal A: the diagonal
  Laplace q is no longer p_β (ESS < n), but 200,000 draws give the fine-grid F_β within 4
  of their own standard errors plus the log's bias (rel. se²/(2β)): the weights' variance is
  finite because 2A − diag(h) is positive definite and the quartic only thins p_β's tails.
  Reference: a 1,201² rectangle rule over [−8, 8]², where exp(−βE) < e⁻⁶⁰ at the edges."""
  beta = 1.0
  a = np.array([[2.0, 0.5], [0.5, 1.0]])
  m = np.array([0.3, -0.5])

  def energy_np(z):
    u = z - m
    return (0.5 * np.einsum("...i,ij,...j->...", u, a, u) + 0.25 * z[..., 0] ** 4
            + 0.2 * np.sin(2 * z[..., 1]))

  with jax.enable_x64(True):
    aj, mj = jnp.asarray(a), jnp.asarray(m)

    def energy(z):
      u = z - mj
      return (0.5 * jnp.einsum("...i,ij,...j->...", u, aj, u) + 0.25 * z[..., 0] ** 4
              + 0.2 * jnp.sin(2 * z[..., 1]))

    mode = inference.argmin(energy, mj[None], num_steps=2000, learning_rate=0.05).z
    proposal = inference.laplace_proposal(energy, mode, beta=beta, max_scale=5.0)
    mc = inference.free_energy_softmin_mc(energy, jax.random.key(0), beta=beta,
                                          proposal=proposal, num_samples=200_000)
  axis = np.linspace(-8, 8, 1201)
  zz = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1)
  cell = (axis[1] - axis[0]) ** 2
  e = energy_np(zz)
  reference = e.min() - np.log(np.sum(np.exp(-beta * (e - e.min()))) * cell) / beta
  se, estimate = float(mc.stderr[0]), float(mc.free_energy[0])
  assert abs(estimate - reference) <= 4 * se + beta * se**2 / 2, (estimate, reference, se)
  assert 0.1 * 200_000 < float(mc.ess[0]) < 0.9 * 200_000  # a fair, not an exact, proposal
  assert se < 0.01  # the comparison is sharp: a wrong normaliser (e.g. log σ missing) fails


def test_wrapped_gaussian_with_per_coordinate_scales():
  """An array σ gives each coordinate its own wrapped Gaussian: the same density as the scalar
  version coordinate by coordinate; without max_sigma (the number of images) one clear error."""
  period = 2 * math.pi
  mean = jnp.array([[0.5, 3.0]])
  z = jnp.linspace(0.0, period, 50, endpoint=False)[:, None, None] * jnp.ones((1, 1, 2))
  both = inference.wrapped_gaussian_proposal(mean, jnp.array([0.2, 2.5]), 0.0, period,
                                             max_sigma=3.0)
  first = inference.wrapped_gaussian_proposal(mean[:, :1], 0.2, 0.0, period)
  second = inference.wrapped_gaussian_proposal(mean[:, 1:], 2.5, 0.0, period)
  np.testing.assert_allclose(both.log_prob(z), first.log_prob(z[..., :1])
                             + second.log_prob(z[..., 1:]), rtol=1e-5)
  with pytest.raises(ValueError, match="needs max_sigma"):
    inference.wrapped_gaussian_proposal(mean, jnp.array([0.2, 2.5]), 0.0, period)


# ----------------------------------------------------------------------------
# Proximal loops with backtracking and FISTA's adaptive restart
# ----------------------------------------------------------------------------


def _lasso(m, n, seed, lam=0.1):
  """‖y − Az‖² + λ‖z‖₁ with ill-conditioned columns; its minimum by scikit-learn's coordinate
  descent (‖y − Az‖²/(2m) + α‖z‖₁ has the same minimiser at α = λ/(2m)); L = 2‖A‖²."""
  from sklearn.linear_model import Lasso

  rng = np.random.default_rng(seed)
  a = rng.normal(size=(m, n)) * np.logspace(0, -1.5, n)
  y = rng.normal(size=m)
  z_star = Lasso(alpha=lam / (2 * m), fit_intercept=False, tol=1e-14,
                 max_iter=10**6).fit(a, y).coef_
  e_star = np.sum((y - a @ z_star) ** 2) + lam * np.abs(z_star).sum()
  return a, y, lam, z_star, e_star, 2 * np.linalg.norm(a, 2) ** 2


def _smooth(a, y):
  aj, yj = jnp.asarray(a), jnp.asarray(y)
  return lambda z: jnp.sum(jnp.square(yj - z @ aj.T), axis=-1)


@pytest.mark.parametrize("accelerated", [False, True], ids=["ista", "fista"])
def test_no_backtracks_is_the_fixed_step_loop(accelerated):
  """max_backtracks = 0 takes the step 1/L₀ every time: the trace and gradient mapping of
  argmin_proximal, to float rounding (a different momentum or prox scale would not be)."""
  a, y, lam, *_, lipschitz = _lasso(40, 60, seed=1)
  with jax.enable_x64(True):
    kwargs = dict(num_steps=100, step_size=1 / lipschitz, l1_weight=lam, accelerated=accelerated)
    z0 = jnp.zeros((2, 60))
    plain = inference.argmin_proximal(_smooth(a, y), z0, **kwargs)
    fixed = inference.argmin_proximal_backtracking(_smooth(a, y), z0, max_backtracks=0, **kwargs)
  np.testing.assert_allclose(fixed.trace, plain.trace, rtol=1e-12)
  np.testing.assert_allclose(fixed.grad, plain.grad, rtol=1e-9, atol=1e-12)
  np.testing.assert_array_equal(fixed.lipschitz, lipschitz)


@pytest.mark.parametrize("accelerated", [False, True], ids=["ista_bt", "fista_bt"])
def test_backtracking_converges_from_a_step_where_plain_ista_diverges(accelerated):
  """From the step 100/L (L = 2‖A‖², the Lipschitz constant of ∇f) plain ISTA blows up
  (each step multiplies the error along A's top singular vector by |1 − 100| ≫ 1); with
  backtracking (η = 2) the same start converges, L_k never falls and stays ≤ ηL, and Beck &
  Teboulle's bounds with α = η hold: E(z_k) − E* ≤ ηL‖z₀ − ž‖²/(2k) (ISTA),
  2ηL‖z₀ − ž‖²/(k + 1)² (FISTA); ž from scikit-learn, whose tolerance is the slack."""
  a, y, lam, z_star, e_star, lipschitz = _lasso(40, 60, seed=1)
  steps, eta = 300, 2.0
  with jax.enable_x64(True):
    z0 = jnp.zeros((1, 60))
    diverged = np.asarray(inference.argmin_proximal(
        _smooth(a, y), z0, num_steps=30, step_size=100 / lipschitz, l1_weight=lam,
        accelerated=False).trace[:, 0])
    result = inference.argmin_proximal_backtracking(
        _smooth(a, y), z0, num_steps=steps, step_size=100 / lipschitz, l1_weight=lam,
        accelerated=accelerated, backtrack_factor=eta)
  assert not np.isfinite(diverged[-1]) or diverged[-1] > 1e6 * diverged[0], diverged[-1]
  gaps = np.asarray(result.trace[:, 0]) - e_star
  k = np.arange(1, steps + 1)
  r2 = np.sum(z_star**2)
  slack = 1e-9 * e_star
  bound = (2 * eta * lipschitz * r2 / (k + 1) ** 2 if accelerated
           else eta * lipschitz * r2 / (2 * k))
  assert np.all(gaps[1:] <= bound + slack), np.max(gaps[1:] - bound)
  lips = np.asarray(result.lipschitz[:, 0])
  assert np.all(np.diff(lips) >= 0) and lips[0] > lipschitz / 100 and lips[-1] <= eta * lipschitz


def _replay(a, y, lam, z0, lipschitz, eta, restart):
  """FISTA in numpy (float64) with the recorded L_k: returns the trace of E, and per step
  the sufficient-decrease margin at L_k (≥ 0: the test holds) and at L_k/η where L rose
  (< 0: a smaller L had failed, i.e. L_k is the smallest of the trials)."""
  f = lambda z: np.sum((y - a @ z) ** 2)
  grad = lambda z: -2 * a.T @ (y - a @ z)
  energy = lambda z: f(z) + lam * np.abs(z).sum()

  def prox_step(x, lip):
    p = x - grad(x) / lip
    p = np.sign(p) * np.maximum(np.abs(p) - lam / lip, 0.0)
    slack = 16 * np.finfo(float).eps * abs(f(x))
    return p, f(x) + (p - x) @ grad(x) + lip / 2 * np.sum((p - x) ** 2) + slack - f(p)

  z, x, t, e = z0, z0, 1.0, energy(z0)
  trace, margins, smaller = [e], [], []
  previous = lipschitz[0] / eta ** 20  # the first step may rise from L₀ itself
  for lip in lipschitz:
    z_next, margin = prox_step(x, lip)
    margins.append(margin)
    if lip > previous * (1 + 1e-12) and len(trace) > 1:
      smaller.append(prox_step(x, lip / eta)[1])
    previous = lip
    e_next = energy(z_next)
    rose = restart and e_next > e and t > 1
    if rose:
      z_next, e_next = z, e
    t_next = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
    x = z_next if rose else z_next + (t - 1) / t_next * (z_next - z)
    z, t, e = z_next, 1.0 if rose else t_next, e_next
    trace.append(e)
  return np.array(trace), np.array(margins), np.array(smaller)


@pytest.mark.parametrize("restart", [False, True], ids=["fista_bt", "fista_bt_restart"])
def test_every_accepted_step_passes_the_sufficient_decrease_test(restart):
  """A numpy FISTA driven by the L_k the loop reports reproduces its trace (so those are the
  steps it took), and at each step f(p) ≤ f(x) + ⟨p − x, ∇f(x)⟩ + (L_k/2)‖p − x‖² (with the
  documented 16 ε|f(x)| rounding allowance); where L rose, L_k/η had failed it (the smallest
  i). From the step 100/L on the lasso, so that the first step backtracks ~7 times."""
  a, y, lam, *_, lipschitz = _lasso(40, 60, seed=2)
  eta = 2.0
  with jax.enable_x64(True):
    result = inference.argmin_proximal_backtracking(
        _smooth(a, y), jnp.zeros((1, 60)), num_steps=60, step_size=100 / lipschitz,
        l1_weight=lam, restart=restart, backtrack_factor=eta)
  lips = np.asarray(result.lipschitz[:, 0])
  trace, margins, smaller = _replay(a, y, lam, np.zeros(60), lips, eta, restart)
  np.testing.assert_allclose(result.trace[:, 0], trace, rtol=1e-10)
  assert np.all(margins >= 0), margins.min()
  assert len(smaller) >= 1 and np.all(smaller < 0), smaller  # L rose at least once after step 1
  assert lips[0] * 100 / lipschitz >= 2**5  # the first step backtracked (6 times here)


def test_restart_makes_fista_monotone_and_faster_on_a_strongly_convex_lasso():
  """m = 100 > n = 30 with condition number κ(AᵀA) ≈ 1.5e3: E is strongly convex and plain
  FISTA's momentum overshoots, E rising on many of 600 steps; with the function-value restart
  E never rises, and it gets within 1e-9 of E* (scikit-learn's) in fewer steps — plain FISTA
  does not within the 600 (its ripples decay as (1 − 1/√κ)^k only after a restart). Both at
  the fixed step 1/L and with backtracking from 10/L."""
  a, y, lam, _, e_star, lipschitz = _lasso(100, 30, seed=3)
  with jax.enable_x64(True):
    for step, backtracks in ((1 / lipschitz, 0), (10 / lipschitz, 10)):
      traces = {}
      for restart in (False, True):
        traces[restart] = np.asarray(inference.argmin_proximal_backtracking(
            _smooth(a, y), jnp.zeros((1, 30)), num_steps=600, step_size=step, l1_weight=lam,
            restart=restart, max_backtracks=backtracks).trace[:, 0])
      # A rise above float64 rounding (1e-12 of E ≈ 10; a step from z itself may round up).
      rises = {r: int(np.sum(np.diff(t) > 1e-12 * t[1:])) for r, t in traces.items()}
      assert rises[False] >= 20 and rises[True] == 0, rises
      reached = {r: np.flatnonzero(t - e_star < 1e-9 * e_star) for r, t in traces.items()}
      assert len(reached[True]) > 0, traces[True][-1] - e_star
      assert len(reached[False]) == 0 or reached[False][0] > reached[True][0]


@pytest.mark.parametrize("kwargs,message", [
    ({"backtrack_factor": 1.0}, "backtrack_factor must be > 1, got 1.0"),
    ({"max_backtracks": -1}, "max_backtracks must be an integer >= 0, got -1"),
    ({"restart": True, "accelerated": False}, "restart resets FISTA's momentum"),
    ({"step_size": 0.0}, "step_size must be > 0, got 0.0"),
])
def test_backtracking_arguments_are_one_clear_error(kwargs, message):
  args = dict(num_steps=3, step_size=0.1, l1_weight=0.1) | kwargs
  with pytest.raises(ValueError, match=message):
    inference.argmin_proximal_backtracking(lambda z: jnp.sum(z**2, -1), jnp.zeros((2, 3)), **args)
