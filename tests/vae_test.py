"""The VAE's training schedule (KL warm-up), final evaluation and posterior-collapse
diagnostics, each against a closed form or a case whose answer is known."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import flatten_util

from energy_ae import metrics, models, train
from energy_ae.metrics_io import read_metrics
from experiments import common


def _gaussian_posteriors(n, seed, a=1.0, s=0.5, active=2, collapsed=2):
  """y ~ N(0, I_active); q(z_j | y) = N(a y_j, s²) on the active latents and N(0, 1) (the
  prior: collapsed) on the others. Then I_q(y; z) = active · ½ log(1 + a²/s²) and
  E_y KL_j = ½ (s² − log s² − 1 + a²) on an active latent, 0 on a collapsed one."""
  k_y, k_z = jax.random.split(jax.random.key(seed))
  y = jax.random.normal(k_y, (n, active))
  mu = jnp.concatenate([a * y, jnp.zeros((n, collapsed))], 1)
  logvar = jnp.concatenate([jnp.full((n, active), 2 * math.log(s)), jnp.zeros((n, collapsed))], 1)
  return mu, logvar, k_z


def test_mutual_information_of_linear_gaussian_posteriors_against_the_closed_form():
  exact = 2 * 0.5 * math.log(1 + 1.0 / 0.25)
  estimates = [float(metrics.mutual_information(*_gaussian_posteriors(4000, seed)))
               for seed in range(8)]
  # Bound: 4 standard errors of the mean, from the repetitions' own spread (the estimator's
  # bias, from the aggregate posterior being a mixture of N = 4,000 kernels, is far below it).
  standard_error = np.std(estimates, ddof=1) / math.sqrt(len(estimates))
  assert abs(np.mean(estimates) - exact) < 4 * standard_error + 1e-3, (estimates, exact)
  # Collapsed posteriors carry no information: all of them give ~0 (at most a sampling error).
  n = 4000
  mu, logvar, key = _gaussian_posteriors(n, 0, active=0, collapsed=4)
  assert abs(float(metrics.mutual_information(mu, logvar, key))) < 0.01


def test_active_units_and_kl_per_dimension_on_half_collapsed_posteriors():
  n = 4000
  mu, logvar, _ = _gaussian_posteriors(n, 1)
  assert int(metrics.active_units(mu)) == 2
  kl = np.asarray(metrics.kl_per_dimension(mu, logvar))
  expected_active = 0.5 * (0.25 - math.log(0.25) - 1 + 1.0)
  # The sampling error of mean_y ½ a² y²: sd ½·√2 a² per example, 5 standard errors.
  np.testing.assert_allclose(kl[:2], expected_active, atol=5 * 0.5 * math.sqrt(2) / math.sqrt(n))
  np.testing.assert_array_equal(kl[2:], 0.0)
  # The threshold is Burda et al.'s on the variance of E_q[z]: a latent whose mean moves by
  # sd 0.05 (variance 0.0025) is inactive, one by sd 0.2 (0.04) active.
  assert int(metrics.active_units(jnp.stack([0.05 * mu[:, 0], 0.2 * mu[:, 1]], 1))) == 1


def _quick_vae(**overrides):
  config = common.load_config("vae", "quick", **overrides)
  config.train.progress = False
  return config


def test_the_trainer_writes_the_collapse_diagnostics_and_they_see_collapsed_latents(tmp_path):
  config = _quick_vae()
  train.train_and_evaluate(config, str(tmp_path))
  tests = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if r["split"] == "test"]
  d = config.model.latent_dim
  for record in tests:  # every evaluation, the untrained one included
    assert len(record["kl_per_dim"]) == d and 0 <= record["active_units"] <= d
    assert 0 <= record["mutual_info"] <= math.log(config.data.max_test_examples) + 1e-5
    np.testing.assert_allclose(sum(record["kl_per_dim"]), record["KL"], rtol=1e-4)
  # Collapse half the latents of the trained model by hand: their posterior becomes the prior
  # (zero weights and bias of their μ and log v outputs), so their KL is exactly 0 and they
  # are not active; the other half's statistics do not change.
  model, _, latest, dataset = train.restore_run(config, str(tmp_path))
  params = jax.tree.map(np.array, latest["params"])
  last = params["params"]["encoder"][max(params["params"]["encoder"])]
  collapsed = np.r_[d // 2:d, d + d // 2:2 * d]  # μ and log v of latents d/2 … d − 1
  last["kernel"][:, collapsed] = 0.0
  last["bias"][collapsed] = 0.0
  y = jnp.asarray(dataset.test["y"][:200])
  before = model.split_metrics(latest["params"], y, jax.random.key(0))
  after = model.split_metrics(params, y, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(after["kl_per_dim"])[d // 2:], 0.0)
  np.testing.assert_allclose(np.asarray(after["kl_per_dim"])[:d // 2],
                             np.asarray(before["kl_per_dim"])[:d // 2], rtol=1e-6)
  mu_kept = np.asarray(model.extras["posterior"](latest["params"], y)[0])[:, :d // 2]
  assert int(after["active_units"]) == int((mu_kept.var(0) > 0.01).sum())


def test_kl_warm_up_weights_the_kl_linearly_from_zero():
  config = _quick_vae(**{"model.kl_warmup_steps": 100})
  model = models.make(config, (784,))
  y = jnp.asarray(np.random.default_rng(0).random((8, 784)) > 0.5, jnp.float32)
  params = model.init(jax.random.key(0), {"y": y})
  keys = jax.random.split(jax.random.key(1), 8)

  def loss_and_grad(step):
    batch = {"y": y} if step is None else {"y": y, "step": jnp.asarray(step, jnp.int32)}
    (value, aux), grad = jax.value_and_grad(model.loss, has_aux=True)(params, batch, keys)
    return value, aux, flatten_util.ravel_pytree(grad)[0]

  v0, aux0, g0 = loss_and_grad(0)
  v_full, aux_full, g_full = loss_and_grad(None)  # no step (evaluation, tools): β itself
  np.testing.assert_allclose(v0, aux0["C"], rtol=1e-6)  # β_0 = 0: the reconstruction alone
  np.testing.assert_allclose(v_full, aux_full["C"] + aux_full["KL"], rtol=1e-6)
  for step, weight in ((25, 0.25), (50, 0.5), (100, 1.0), (400, 1.0)):
    value, aux, grad = loss_and_grad(step)
    assert float(aux["kl_weight"]) == pytest.approx(weight)
    np.testing.assert_allclose(value, aux["C"] + weight * aux["KL"], rtol=1e-6)
    # ∇(C + β_t KL) = ∇C + β_t (∇(C + KL) − ∇C): the gradient moves linearly with β_t.
    np.testing.assert_allclose(grad, g0 + weight * (g_full - g0), rtol=1e-4,
                               atol=1e-5 * float(jnp.max(jnp.abs(g_full))))


def test_the_trainer_passes_the_step_to_the_warm_up(tmp_path):
  config = _quick_vae(**{"model.kl_warmup_steps": 20, "train.log_every": 1})
  train.train_and_evaluate(config, str(tmp_path))
  records = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
  # The record of step s is the step that ran from state step s − 1.
  for r in records:
    assert r["kl_weight"] == pytest.approx(min(1.0, (r["step"] - 1) / 20)), r


def test_the_final_evaluation_draws_iw_samples_final(tmp_path):
  # k = 1: the importance-weighted estimate is a one-sample nelbo; k = 300 at the end only.
  config = _quick_vae(**{"model.iw_samples": 1, "model.iw_chunk": 1,
                         "model.iw_samples_final": 300})
  train.train_and_evaluate(config, str(tmp_path))
  tests = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if r["split"] == "test"]
  # Jensen: E[L_k] rises with k, so the final −L_300 lies well below the nelbo, while a
  # one-sample estimate scatters around it (its mean is the nelbo: a few nats of noise).
  for r in tests[:-1]:
    assert abs(r["bce_iw"] - r["nelbo"]) < 0.03 * r["nelbo"], r
  final = tests[-1]
  assert final["bce_iw"] < final["nelbo"] - 3.0, final


@pytest.mark.parametrize("override,message", [
    ({"model.kl_warmup_steps": -1}, "kl_warmup_steps = -1: must be an integer >= 0"),
    ({"model.iw_samples_final": -3}, "iw_samples_final = -3: must be an integer >= 0"),
    ({"model.objective": "iwae", "model.kl_warmup_steps": 10},
     "kl_warmup_steps = 10 acts on the ELBO's KL term"),
    ({"model.objective": "iwae", "model.free_bits": 0.5}, "free_bits = 0.5 acts on the ELBO"),
])
def test_bad_vae_settings_are_one_clear_error(override, message):
  with pytest.raises(ValueError, match=message):
    train.validate_config(_quick_vae(**override))


def test_burda_schedule_and_optimizer_kwargs():
  tc = _quick_vae(**{"train.lr_schedule": "burda", "train.num_epochs": 50,
                     "train.optimizer_kwargs": {"eps": 1e-4}}).train
  schedule = train.burda_schedule(1e-3, steps_per_epoch=10)
  # Stage i lasts 3^i epochs at 10^(−i/7)·η: stages start at epochs 0, 1, 4, 13, 40.
  for epoch, stage in ((0, 0), (0.9, 0), (1, 1), (3.9, 1), (4, 2), (13, 3), (39.9, 3), (40, 4)):
    assert float(schedule(int(epoch * 10))) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-5)
  tx = train.make_optimizer(tc, total_steps=500)
  state = tx.init({"w": jnp.zeros(())})
  # Adam's first update is −η g / (|g| + ε): ε = 1e-4 shows for a tiny gradient.
  update, _ = tx.update({"w": jnp.asarray(1e-4)}, state)
  assert float(update["w"]) == pytest.approx(-1e-3 * 1e-4 / (1e-4 + 1e-4), rel=1e-3)
  with pytest.raises(ValueError, match="optimizer_kwargs = {'epsilon': 0.0001}: 'adam' does not"):
    train.validate_config(_quick_vae(**{"train.optimizer_kwargs": {"epsilon": 1e-4}}))


def test_a_regulariser_of_the_code_switched_on_from_the_config():
  from energy_ae import energies, keys as keys_lib

  y = jnp.asarray(np.random.default_rng(0).random((6, 784)) > 0.5, jnp.float32)
  keys = jax.random.split(jax.random.key(1), 6)
  plain = models.make(_quick_vae(), (784,))
  params = plain.init(jax.random.key(0), {"y": y})
  regularised = models.make(_quick_vae(**{"model.energy.R.term": "l1",
                                          "model.energy.R.weight": 0.3}), (784,))
  value, aux = regularised.loss(params, {"y": y}, keys)
  base, base_aux = plain.loss(params, {"y": y}, keys)
  # Independently: the same reparameterised z = μ + σ ε, its L1 norm.
  mu, logvar = plain.extras["posterior"](params, y)
  z = mu + jnp.exp(0.5 * logvar) * keys_lib.normal(keys, mu.shape[1:], mu.dtype)
  l1 = float(jnp.mean(energies.l1(z)))
  np.testing.assert_allclose(float(aux["R"]), l1, rtol=1e-5)
  np.testing.assert_allclose(float(value), float(base) + 0.3 * l1, rtol=1e-5)
  assert float(aux["C"]) == pytest.approx(float(base_aux["C"]))
  with pytest.raises(ValueError, match="model.energy has roles \\['C'\\] the VAE does not take"):
    train.validate_config(_quick_vae(**{"model.energy": {"C": {"term": "squared_error"}}}))
  with pytest.raises(ValueError, match="energy.R is a term of the ELBO's free energy"):
    train.validate_config(_quick_vae(**{"model.objective": "iwae", "model.energy.R.term": "l1"}))
  with pytest.raises(ValueError, match="reads \\['h', 'kernel'\\], which the vae model does not"):
    train.validate_config(_quick_vae(**{"model.energy.R.term": "contractive_sigmoid"}))
