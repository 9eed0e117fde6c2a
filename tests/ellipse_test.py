"""The ellipse's soft minimum F_β in training: the grid rule against Monte Carlo, and β → ∞.

F_β(y) = −(1/β) log((1/2π) ∫₀^{2π} exp(−βE(y, z)) dz) by the model's two estimators:
``softmin_estimator = 'grid'`` (a rectangle rule, exact to exponential order for this smooth
periodic integrand on a fine grid) and ``'mc'`` (importance sampling from the per-example keys).
Every Monte Carlo tolerance comes from the estimator's own spread over R independent key sets:
the mean of R estimates has standard error s/√R (s their sample standard deviation), and the
log biases F̂_β upward by about β s²/2 (δ-method: F̂ = F − (1/β) log(1 + δ), E[δ²] = (βs)²).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from energy_ae import data, inference, models, train
from energy_ae.metrics_io import read_metrics
from experiments import common

REPEATS = 32  # independent key sets per Monte Carlo comparison
NUM_SE = 4  # a Gaussian mean is > 4 standard errors off once in 16,000 comparisons
FINE_GRID = 2000


def _model(**model_overrides):
  config = common.load_config("ellipse", **{f"model.{k}": v for k, v in model_overrides.items()})
  return config, models.make(config, (2,))


def _train_points(config):
  return jnp.asarray(data.load(config.data).train["y"])


def _mc_repeats(model, params, y, seed=0):
  """R Monte Carlo estimates of F_β(y), each from its own key per example: (R, B)."""
  def one(key):
    return model.extras["free_energy"](params, y, jax.random.split(key, y.shape[0]))[0]
  return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), REPEATS)),
                    np.float64)


def _mc_tolerance(estimates, beta):
  """NUM_SE standard errors of the mean of the R estimates, plus the log's bias β s²/2."""
  s = estimates.std(0, ddof=1)
  return NUM_SE * s / math.sqrt(len(estimates)) + beta * s**2 / 2


@pytest.mark.parametrize("proposal", ["wrapped", "laplace"])
@pytest.mark.parametrize("beta", [1.0, 10.0])
def test_monte_carlo_softmin_agrees_with_the_fine_grid(beta, proposal):
  """The lecture's untrained model on the 24 training points and the origin (F_β of the
  two-minima cusp): grid F_β (2,000 points) against the mean of R Monte Carlo estimates, with
  either width of the wrapped Gaussian."""
  config, grid_model = _model(free_energy="softmin", beta=beta, num_latent_points=FINE_GRID)
  y = jnp.concatenate([_train_points(config), jnp.zeros((1, 2))])
  params = grid_model.init(jax.random.key(0), {"y": y})
  reference = np.asarray(grid_model.extras["free_energy"](params, y)[0], np.float64)
  _, mc_model = _model(free_energy="softmin", beta=beta, softmin_estimator="mc",
                       softmin_proposal=proposal)
  estimates = _mc_repeats(mc_model, params, y)
  assert np.all(estimates.std(0) > 0)  # the keys are used: each repetition draws anew
  error = np.abs(estimates.mean(0) - reference)
  tolerance = _mc_tolerance(estimates, beta)
  assert np.all(error <= tolerance), (error / tolerance, reference, estimates.mean(0))
  # A wrong measure (∫ dz instead of (1/2π) ∫ dz) would be off by log(2π)/β ≫ the tolerance.
  assert np.all(tolerance < 0.1 * math.log(2 * math.pi) / beta)


def _trained_radii(config, model, num_seeds, num_steps):
  """|w₁|, |w₂| after ``num_steps`` full-batch steps of the config's optimiser, for
  ``num_seeds`` runs that differ only in their Monte Carlo keys (the keys as the trainer makes
  them: one per example, from fold_in(run key, step)): shape (num_seeds, 2)."""
  y = _train_points(config)
  tx = train.make_optimizer(config.train)

  def run(key):
    params = model.init(key, {"y": y})

    def step(carry, t):
      params, opt_state = carry
      keys = jax.random.split(jax.random.fold_in(key, t), y.shape[0])
      grads = jax.grad(lambda p: model.loss(p, {"y": y}, keys)[0])(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(num_steps))
    return jnp.abs(params["w"])

  keys = jax.random.split(jax.random.key(0), num_seeds)
  return np.asarray(jax.jit(jax.vmap(run))(keys), np.float64)


def test_training_with_monte_carlo_softmin_reaches_the_grid_radii():
  """300 Adam steps (lr 0.02, the config's) on the 24 points at β = 10, from the lecture's
  untrained w: the grid-trained radii (deterministic; 480 points) against the mean of 16 runs
  with different Monte Carlo keys, within 4 standard errors of that mean (s/√16, s the
  seed-to-seed spread; with 15 degrees of freedom |t| > 4 has probability 0.1%)."""
  beta, steps, seeds = 10.0, 300, 16
  config, model = _model(free_energy="softmin", beta=beta, num_latent_points=480)
  grid_radii = _trained_radii(config, model, 1, steps)[0]
  config, model = _model(free_energy="softmin", beta=beta, softmin_estimator="mc")
  mc_radii = _trained_radii(config, model, seeds, steps)
  spread = mc_radii.std(0, ddof=1)
  assert np.all(spread > 0)
  error = np.abs(mc_radii.mean(0) - grid_radii)
  assert np.all(error <= NUM_SE * spread / math.sqrt(seeds)), (grid_radii, mc_radii.mean(0), spread)
  # and training did something: from |w| = (1.5, 0.4) to near the data's radii (2, 1.5)
  assert np.all(np.abs(grid_radii - (2.0, 1.5)) < 0.1), grid_radii


def test_monte_carlo_softmin_approaches_f_infinity_as_beta_grows():
  """F∞ ≤ F_β ≤ F∞ + (1/2β) log(2πβM) − (1/β) log erf(π√(βM/2)), M ≥ max_z ∂²E/∂z²: the lower
  bound as (1/2π)∫exp(−βE) ≤ exp(−βF∞); the upper one from E(ž + u) ≤ F∞ + Mu²/2 integrated
  over u ∈ [−π, π]. With E'' = 2(a² − b²)(sin²z − cos²z) + 2a y₁ cos z + 2b y₂ sin z,
  M = 2|a² − b²| + 2|a y₁| + 2|b y₂| per example. The gap bound falls as log β / β."""
  config, min_model = _model()
  y = jnp.concatenate([_train_points(config)[:8], jnp.array([[0.0, 0.0], [0.5, -0.3]])])
  params = {"w": jnp.array([2.0, 1.5])}  # a trained model: the cusp at 0 has two minima
  f_inf = np.asarray(min_model.extras["free_energy"](params, y)[0], np.float64)
  a, b = 2.0, 1.5
  yn = np.asarray(y, np.float64)
  curvature = 2 * abs(a * a - b * b) + 2 * np.abs(a * yn[:, 0]) + 2 * np.abs(b * yn[:, 1])
  gaps = []
  for beta in (1.0, 30.0, 1000.0):
    _, model = _model(free_energy="softmin", beta=beta, softmin_estimator="mc")
    estimates = _mc_repeats(model, params, y, seed=int(beta))
    mean, tolerance = estimates.mean(0), _mc_tolerance(estimates, beta)
    erf = np.vectorize(math.erf)(math.pi * np.sqrt(beta * curvature / 2))
    gap_bound = np.log(2 * math.pi * beta * curvature) / (2 * beta) - np.log(erf) / beta
    # ž is refined by gradient descent: F∞ sits above the true minimum by ≤ 1e-4
    # (figure_facts_ellipse.DESCENT_EXCESS), which loosens the lower bound by as much.
    assert np.all(mean >= f_inf - 1e-4 - tolerance), (beta, mean - f_inf, tolerance)
    assert np.all(mean <= f_inf + gap_bound + tolerance), (beta, mean - f_inf, gap_bound)
    gaps.append(np.max(mean - f_inf))
  assert gaps[-1] < 0.01 and np.all(np.diff(gaps) < 0), gaps


def test_a_finite_beta_with_free_energy_min_is_the_grid_softmin_as_before():
  """Configs that set only model.beta (the figures' F_β sections) keep the grid F_β."""
  _, legacy = _model(beta=1.0)
  _, explicit = _model(free_energy="softmin", beta=1.0)
  y = jnp.array([[0.3, -0.7], [0.0, 0.0]])
  params = legacy.init(jax.random.key(0), {"y": y})
  np.testing.assert_array_equal(legacy.extras["free_energy"](params, y)[0],
                                explicit.extras["free_energy"](params, y)[0])


def test_laplace_width_is_one_over_root_beta_times_the_curvature_at_z_check():
  """The model's Laplace estimate against the same mixture built by hand with the closed-form
  E''(ž) = 2(a² − b²)(sin²ž − cos²ž) + 2a y₁ cos ž + 2b y₂ sin ž (trained radii a = 2, b = 1.5):
  the same draws, so F̂_β and the ESS agree to float rounding (a wrong width or centre moves
  every weight). At β = 1, where 1/√(βE'') ≈ 0.3 rad is 3× proposal_scale, the weights are
  more even than with the fixed width: a larger ESS on the test points."""
  beta, alpha = 1.0, 0.5
  config, model = _model(free_energy="softmin", beta=beta, softmin_estimator="mc",
                         softmin_proposal="laplace", num_samples=64)
  y = jnp.asarray(data.load(config.data).test["y"][:40])
  params = {"w": jnp.array([2.0, 1.5])}
  keys = jax.random.split(jax.random.key(5), len(y))
  got = jax.jit(model.extras["free_energy_mc"])(params, y, keys)
  _, z_check = jax.jit(model.extras["free_energy"])(params, y, keys)
  z, yn = np.asarray(z_check[:, 0], np.float64), np.asarray(y, np.float64)
  curvature = (2 * (2.0**2 - 1.5**2) * (np.sin(z) ** 2 - np.cos(z) ** 2)
               + 2 * 2.0 * yn[:, 0] * np.cos(z) + 2 * 1.5 * yn[:, 1] * np.sin(z))
  sigma = np.minimum(1 / np.sqrt(beta * np.maximum(curvature, 1e-12)), 1.0)
  energy = model.extras["energy"]

  def by_hand(y_i, z_i, sigma_i, key):
    q = inference.mixture_proposal(
        (inference.uniform_proposal(0.0, 2 * math.pi, (1,)),
         inference.wrapped_gaussian_proposal(z_i, sigma_i, 0.0, 2 * math.pi, max_sigma=1.0)),
        (alpha, 1 - alpha))
    return inference.free_energy_softmin_mc(
        lambda z: energy(params, y_i[None])(z)[0], key, beta=beta, proposal=q, num_samples=64,
        log_volume=math.log(2 * math.pi))

  expected = jax.jit(jax.vmap(by_hand))(y, z_check, jnp.asarray(sigma[:, None], jnp.float32),
                                        keys)
  # float32: E'' by Hessian-vector products vs the closed form, ~1e-6 relative in σ.
  np.testing.assert_allclose(got.free_energy, expected.free_energy, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got.ess, expected.ess, rtol=1e-3)
  _, fixed = _model(free_energy="softmin", beta=beta, softmin_estimator="mc", num_samples=64)
  fixed_ess = jax.jit(fixed.extras["free_energy_mc"])(params, y, keys).ess
  assert np.mean(got.ess) > 1.3 * np.mean(fixed_ess), (np.mean(got.ess), np.mean(fixed_ess))


@pytest.mark.parametrize("key,value,message", [
    ("free_energy", "soft", "config.model.free_energy = 'soft': must be one of min, softmin"),
    ("softmin_estimator", "quadrature", "config.model.softmin_estimator = 'quadrature'"),
    ("num_samples", 1, "config.model.num_samples = 1: must be an integer >= 2"),
    ("proposal_scale", 0.0, "config.model.proposal_scale = 0.0: must be > 0"),
    ("proposal_uniform_weight", 1.5, "config.model.proposal_uniform_weight = 1.5"),
    ("softmin_proposal", "encoder", "config.model.softmin_proposal = 'encoder': must be one of "
     "wrapped, laplace"),
    ("laplace_max_scale", 4.0, "config.model.laplace_max_scale = 4.0: must be in ]0, π]"),
])
def test_bad_free_energy_keys_are_one_clear_error(key, value, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    _model(**{key: value})


def test_softmin_at_infinite_beta_is_an_error():
  with pytest.raises(ValueError, match="config.model.free_energy = 'softmin': .*finite"):
    _model(free_energy="softmin")


def test_monte_carlo_softmin_trains_through_the_trainer(tmp_path):
  config = common.load_config("ellipse", "quick", **{
      "model.free_energy": "softmin", "model.beta": 10.0, "model.softmin_estimator": "mc"})
  final = train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(str(tmp_path / "metrics.jsonl"))
  losses = [r["loss"] for r in records if r["split"] == "train"]
  assert losses[-1] < 0.9 * losses[0], losses
  assert all(math.isfinite(v) for v in final.values())
  # The importance weights' effective sample size, in both splits: within [1, num_samples].
  for split in ("train", "test"):
    last = [r for r in records if r["split"] == split][-1]
    assert 1.0 <= last["softmin_ess"] <= config.model.num_samples, last
