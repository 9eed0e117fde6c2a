"""The VAE's estimators do what their names claim: the k-sample ELBO, free bits in both forms
(and the same on 1 or 2 devices), DReG for the IWAE bound, chunked importance sampling.

Most checks use a linear-Gaussian VAE, p(z) = N(0, I), p(y | z) = N(W z + b, σ² I), whose ELBO
is a closed form; Monte Carlo bounds are 4 standard errors computed from the draws themselves.
"""

import functools
import json
import math
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import flatten_util
from scipy import stats

from conftest import run_python
from energy_ae import collectives, keys as keys_lib, models, train
from energy_ae.models import vae
from experiments import common

N, D, SIGMA = 5, 2, 0.5  # data and latent dimensions, the decoder's σ


def _linear_gaussian(batch=4, mu_offset=(0.4, 0.4), logvar_offset=0.5, **model_overrides):
  """(model, params, y): a linear-Gaussian VAE whose encoder is the exact posterior's, moved
  by ``mu_offset`` and ``logvar_offset`` (a wrong q, so that estimators have something to
  estimate), and ``batch`` examples."""
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(N, D)))
  w = q * np.array([1.5, 0.8])  # orthogonal columns: the exact posterior is diagonal
  b = rng.normal(size=N)
  post_var = 1.0 / (1.0 + (w**2).sum(0) / SIGMA**2)
  a = (post_var[:, None] * w.T) / SIGMA**2  # the posterior mean is A (y − b)
  model_config = dict(name="vae", latent_dim=D, architecture="mlp", encoder_widths=(),
                      decoder_widths=(), activation="relu", likelihood="gaussian",
                      decoder_std=SIGMA, beta=1.0, iw_samples=10, iw_chunk=10)
  model_config.update(model_overrides)
  config = ml_collections.ConfigDict(dict(data=dict(range="raw"), model=model_config))
  model = models.make(config, (N,))
  y = jnp.asarray(rng.normal(size=(batch, N)) + b, jnp.float32)
  enc_kernel = np.concatenate([a.T, np.zeros((N, D))], axis=1)
  enc_bias = np.concatenate([-a @ b + np.asarray(mu_offset), np.log(post_var) + logvar_offset])
  dense = lambda kernel, bias: {"kernel": jnp.asarray(kernel, jnp.float32),
                                "bias": jnp.asarray(bias, jnp.float32)}
  params = {"params": {"encoder": {"dense_0": dense(enc_kernel, enc_bias)},
                       "decoder": {"dense_0": dense(w.T, b)}}}
  return model, params, y


def _negative_elbo(params, y):
  """−ELBO per example in closed form: E_q C = (‖y − W μ − b‖² + Σ_j v_j ‖W_j‖²) / 2σ²
  + (n/2) log 2πσ², plus KL(N(μ, v) ‖ N(0, I)); μ, log v and W, b read from ``params``."""
  enc, dec = params["params"]["encoder"]["dense_0"], params["params"]["decoder"]["dense_0"]
  stats_ = y @ enc["kernel"] + enc["bias"]
  mu, logvar = stats_[:, :D], stats_[:, D:]
  residual = y - mu @ dec["kernel"] - dec["bias"]
  spread = jnp.exp(logvar) @ jnp.sum(dec["kernel"] ** 2, 1)
  expected_c = ((jnp.sum(residual**2, -1) + spread) / (2 * SIGMA**2)
                + 0.5 * N * math.log(2 * math.pi * SIGMA**2))
  kl = 0.5 * jnp.sum(jnp.exp(logvar) - logvar - 1.0 + mu**2, -1)
  return expected_c + kl


def _keys(seed, batch):
  return jax.random.split(jax.random.key(seed), batch)


# ----------------------------------------------------------------------------
# k-sample ELBO
# ----------------------------------------------------------------------------


def test_the_k_sample_elbo_averages_the_reconstruction_over_k_codes():
  # The reported symptom: a quick VAE gave the same loss for train_samples 1 and 5.
  y = jnp.asarray(np.random.default_rng(0).random((8, 784)) > 0.5, jnp.float32)
  keys = _keys(1, 8)
  losses = {}
  for k in (1, 5):
    model = models.make(common.load_config("vae", "quick", **{"model.train_samples": k}), (784,))
    params = model.init(jax.random.key(0), {"y": y})
    losses[k] = float(model.loss(params, {"y": y}, keys)[0])
  assert abs(losses[5] - losses[1]) > 0.1, losses  # k = 5 draws 4 more codes per example

  # Independently (float64): mean_b [(1/k) Σ_k C(y_b, μ_b + σ_b ε_bk)] + KL, ε_bk from keys[b].
  k = 5
  model, params, y = _linear_gaussian(objective="elbo", train_samples=k)
  keys = _keys(2, 4)
  value, metrics = model.loss(params, {"y": y}, keys)
  mu, logvar = (np.asarray(v, np.float64) for v in model.extras["posterior"](params, y))
  eps = np.asarray(keys_lib.normal(keys, (k, D)), np.float64)  # (B, k, d)
  z = mu[:, None] + np.exp(0.5 * logvar)[:, None] * eps
  dec = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"]["decoder"]["dense_0"])
  y64 = np.asarray(y, np.float64)[:, None]
  c = (np.sum((y64 - z @ dec["kernel"] - dec["bias"]) ** 2, -1) / (2 * SIGMA**2)
       + 0.5 * N * math.log(2 * math.pi * SIGMA**2))  # (B, k)
  kl = 0.5 * np.sum(np.exp(logvar) - logvar - 1.0 + mu**2, -1)
  np.testing.assert_allclose(float(metrics["C"]), c.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(value), c.mean() + kl.mean(), rtol=1e-5)


def _relative_se_of_variance(x):
  """The relative standard error of a sample variance of M draws: √(2/(M−1) + γ₂/M), γ₂ the
  excess kurtosis (the large-M sampling distribution of s², Var(s²) = σ⁴ (2/(M−1) + γ₂/M))."""
  return math.sqrt(2 / (len(x) - 1) + stats.kurtosis(x) / len(x))


def test_the_k_sample_elbo_is_unbiased_and_its_variance_is_one_kth():
  draws = 4000
  exact = float(jnp.mean(_negative_elbo(*_linear_gaussian()[1:])))
  values = {}
  for k in (1, 5, 50):
    model, params, y = _linear_gaussian(objective="elbo", train_samples=k)
    loss = jax.jit(jax.vmap(lambda key, m=model, p=params, y=y: m.loss(
        p, {"y": y}, jax.random.split(key, 4))[0]))
    values[k] = np.asarray(loss(jax.random.split(jax.random.key(k), draws)), np.float64)
  for k, x in values.items():
    # E over codes of the k-sample estimate is −ELBO for every k: 4 standard errors of the mean.
    assert abs(x.mean() - exact) < 4 * x.std(ddof=1) / math.sqrt(draws), (k, x.mean(), exact)
    if k == 1:
      continue
    # k independent codes: Var_k = Var_1 / k. k · s²_k / s²_1 is 1 within 4 standard errors of
    # a ratio of independent sample variances (relative errors added in quadrature). Ignoring
    # k gives k, reusing one ε for all k codes gives k too.
    ratio = k * x.var(ddof=1) / values[1].var(ddof=1)
    bound = 4 * math.hypot(_relative_se_of_variance(x), _relative_se_of_variance(values[1]))
    assert abs(ratio - 1) < bound, (k, ratio, bound)


# ----------------------------------------------------------------------------
# Free bits
# ----------------------------------------------------------------------------


def test_free_bits_forms_against_closed_forms_with_one_example_each_side_of_the_floor():
  lam = 0.5
  # B = 2 examples, 2 latents. Latent 0: KLs (0, 3λ) straddle the floor, mean 1.5λ above it.
  # Latent 1: (0.2λ, 0.4λ), both below, mean below.
  kl = jnp.asarray([[0.0, 0.2 * lam], [3 * lam, 0.4 * lam]])
  cases = {
      # Σ_j max(λ, mean_b KL_bj) = 1.5λ + λ; ∂/∂KL_bj = 1/B where mean_b KL_bj > λ.
      "kingma": (2.5 * lam, [[0.5, 0.0], [0.5, 0.0]]),
      # mean_b Σ_j max(λ, KL_bj) = ((λ + λ) + (3λ + λ)) / 2; ∂/∂KL_bj = 1/B where KL_bj > λ.
      "per_example": (3.0 * lam, [[0.0, 0.0], [0.5, 0.0]]),
  }
  for form, (value, grad) in cases.items():
    got, got_grad = jax.value_and_grad(vae.free_bits_penalty)(kl, lam, form)
    np.testing.assert_allclose(float(got), value, rtol=1e-6, err_msg=form)
    np.testing.assert_array_equal(np.asarray(got_grad), grad, err_msg=form)
    # λ = 0: the plain ELBO's mean_b Σ_j KL_bj in both forms, every KL with gradient 1/B.
    plain, plain_grad = jax.value_and_grad(vae.free_bits_penalty)(kl, 0.0, form)
    np.testing.assert_allclose(float(plain), 1.8 * lam, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(plain_grad), np.full((2, 2), 0.5))


def test_the_vae_loss_carries_the_free_bits_form_it_is_given():
  # Two examples whose KL on latent 0 lies on either side of λ, λ below their mean: the two
  # forms give other losses and other gradients, each the one its closed form predicts.
  model, params, y = _linear_gaussian(batch=2, mu_offset=(1.5, 0.0))
  kl = np.asarray(model.extras["kl_per_dim"](params, y), np.float64)
  low, high = sorted(kl[:, 0])
  assert high - low > 0.1, kl  # the examples' KLs differ enough to straddle a floor
  lam = low + (kl[:, 0].mean() - low) / 2  # above one example's KL, below the batch mean
  keys = _keys(3, 2)

  def loss_and_grad(p_model, p):
    (value, metrics), grad = jax.value_and_grad(p_model.loss, has_aux=True)(p, {"y": y}, keys)
    return value, metrics, flatten_util.ravel_pytree(grad)[0]

  plain_value, plain_metrics, plain_grad = loss_and_grad(model, params)
  kl_of = lambda p: model.extras["kl_per_dim"](p, y)
  penalties = {  # the KL term by hand, the plain ELBO's taken off
      "kingma": lambda p: jnp.sum(jnp.maximum(jnp.mean(kl_of(p), 0), lam)),
      "per_example": lambda p: jnp.mean(jnp.sum(jnp.maximum(kl_of(p), lam), -1)),
  }
  values = {}
  for form, penalty in penalties.items():
    floored, _, _ = _linear_gaussian(batch=2, mu_offset=(1.5, 0.0), free_bits=float(lam),
                                     free_bits_form=form)
    value, metrics, grad = loss_and_grad(floored, params)
    extra = lambda p, penalty=penalty: penalty(p) - jnp.mean(jnp.sum(kl_of(p), -1))
    np.testing.assert_allclose(float(value), float(plain_value + extra(params)), rtol=1e-6)
    expected = plain_grad + flatten_util.ravel_pytree(jax.grad(extra)(params))[0]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6 * float(jnp.abs(expected).max()))
    assert float(metrics["KL"]) == pytest.approx(float(plain_metrics["KL"]))  # reported unfloored
    values[form] = float(value)
  assert values["per_example"] > values["kingma"] + 0.01, values  # the example below λ pays λ


DEVICES_SCRIPT = textwrap.dedent('''
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from energy_ae import collectives, data, train
    from experiments import common

    GLOBAL_BATCH = 64
    key = jax.random.key(0)
    overrides = {"train.optimizer": "sgd", "train.learning_rate": 0.01}
    base = common.load_config("vae", "quick", **overrides)
    ds = data.load(base.data)
    perm = data.epoch_permutation(key, 0, ds.train["y"].shape[0])

    # λ between one latent's KL averaged over the global batch and over the half of the batch
    # where it is larger: the global mean is floored, one device's local mean is not.
    one = train.make_mesh(jax.devices()[:1])
    setup = train.setup_step(base, one, dataset=ds, batch_size=GLOBAL_BATCH, init_key=key)
    y = jnp.asarray(ds.train["y"][np.asarray(perm[:GLOBAL_BATCH])])
    kl = np.asarray(setup.model.extras["kl_per_dim"](jax.device_get(setup.state["params"]), y))
    halves = kl.reshape(2, GLOBAL_BATCH // 2, -1).mean(1)
    j = int(np.argmax(np.abs(halves[0] - halves[1]) / kl.mean(0)))
    floor = float((kl.mean(0)[j] + halves[:, j].max()) / 2)
    config = common.load_config("vae", "quick", **overrides, **{"model.free_bits": floor})
    real = collectives.global_mean

    def run(num_devices, bug=False, data_parallel=True):
      """(parameters before, after one step, loss) on the first num_devices devices."""
      collectives.global_mean = (lambda x, axis=0: jnp.mean(x, axis)) if bug else real
      mesh = train.make_mesh(jax.devices()[:num_devices])
      s = train.setup_step(config, mesh, dataset=ds, batch_size=GLOBAL_BATCH, init_key=key,
                           data_parallel=data_parallel)
      before = jax.tree.leaves(jax.device_get(s.state["params"]))
      state, metrics = s.step(s.state, s.train_data, perm, 0, key)
      return before, jax.tree.leaves(jax.device_get(state["params"])), float(metrics["loss"])

    before, single, loss = run(1)
    result = {"devices": len(jax.devices()), "straddles": bool(halves[:, j].min() < floor)}
    for name, args in (("two", (2,)), ("plain_jit", (1, False, False)), ("local_mean_bug", (2, True))):
      _, many, many_loss = run(*args)
      # ‖Δ₁ − Δ‖ / ‖Δ₁‖ per parameter array, Δ the change of the parameters in the step.
      result[name] = max(float(np.linalg.norm(a - b) / np.linalg.norm(a - p))
                         for a, b, p in zip(single, many, before))
      result[name + "_loss"] = abs(many_loss - loss) / abs(loss)
    collectives.global_mean = real

    # global_mean itself: x of shape (V, B) sharded over the batch, each variant's mean (a
    # sweep vmaps the step inside shard_map); outside any mesh, the local mean.
    x = jnp.arange(24.0).reshape(3, 8) ** 2
    mesh = train.make_mesh(jax.devices()[:2])
    sharded = jax.jit(jax.shard_map(lambda x: jax.vmap(collectives.global_mean)(x), mesh=mesh,
                                    in_specs=P(None, "data"), out_specs=P()))
    result["vmapped_mean_error"] = float(jnp.max(jnp.abs(sharded(x) - x.mean(1))))
    unbound = jax.jit(lambda x: collectives.global_mean(x, axis=1))(x)
    result["unbound_mean_error"] = float(jnp.max(jnp.abs(unbound - x.mean(1))))
    print(json.dumps(result))
''')


def test_kingma_free_bits_give_the_same_step_on_one_and_two_devices():
  proc = run_python(["-c", DEVICES_SCRIPT], devices=2)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 2 and result["straddles"], result
  # Bound as tests/parallel_test.py derives it: float32 reduction-order noise of a mean over
  # B = 64 examples, ≤ B·u·κ relative (u = 2⁻²⁴, κ the cancellation factor): 1e-4 ≈ 26·B·u.
  bound = 1e-4
  assert result["two"] < bound and result["two_loss"] < bound, result
  assert result["plain_jit"] < bound and result["plain_jit_loss"] < bound, result  # no axis bound
  # Each device flooring its own local mean (the bug global_mean prevents) is another loss:
  # the latent whose local means straddle λ moves the update far past float rounding (its
  # loss moves by ~1e-5 relative only, a KL of a few hundredths in C's hundreds of nats).
  assert result["local_mean_bug"] > bound, result
  assert result["vmapped_mean_error"] == 0.0 and result["unbound_mean_error"] == 0.0, result


def test_the_collectives_axis_is_the_train_steps_mesh_axis():
  assert collectives.DATA_AXIS == train.AXIS


# ----------------------------------------------------------------------------
# DReG for the IWAE bound
# ----------------------------------------------------------------------------

GRADIENT_DRAWS = 16384


@functools.lru_cache(maxsize=None)
def _gradient_draws(estimator, k):
  """(loss values, encoder bias gradients (M, 2d), decoder gradients (M, ·)) of the IWAE loss
  on one example over M = GRADIENT_DRAWS independent draws of the k codes (the same keys for
  both estimators: paired draws)."""
  model, params, y = _linear_gaussian(batch=1, objective="iwae", train_samples=k,
                                      iwae_gradient=estimator)

  def one(key):
    value, grad = jax.value_and_grad(lambda p: model.loss(p, {"y": y}, key[None])[0])(params)
    return (value, grad["params"]["encoder"]["dense_0"]["bias"],
            flatten_util.ravel_pytree(grad["params"]["decoder"])[0])

  keys = jax.random.split(jax.random.key(k), GRADIENT_DRAWS)
  return tuple(np.asarray(x, np.float64) for x in jax.jit(jax.vmap(one))(keys))


def _snr(g):
  """SNR = |E g| / sd(g) per column and its standard error by the delta method:
  Var(r̂) ≈ (1 − r γ₁ + r² (κ − 1) / 4) / M with r = mean / sd (signed), γ₁ the skewness and κ
  the kurtosis of g ((1 + r²/2) / M for a normal g)."""
  r = g.mean(0) / g.std(0, ddof=1)
  variance = (1 - r * stats.skew(g) + r**2 * (stats.kurtosis(g, fisher=False) - 1) / 4)
  return np.abs(r), np.sqrt(variance / len(g))


def test_dreg_keeps_the_loss_value_and_the_decoder_gradient():
  for k in (1, 10, 100):
    standard, dreg = _gradient_draws("standard", k), _gradient_draws("dreg", k)
    np.testing.assert_allclose(dreg[0], standard[0], rtol=1e-6)  # −L_k, draw by draw
    # Σ_k w̃_k ∇_θ log w_k is the standard decoder gradient itself: equal draw by draw (float32
    # rounding), not only in expectation.
    np.testing.assert_allclose(dreg[2], standard[2], rtol=1e-4,
                               atol=1e-5 * np.abs(standard[2]).max())


def test_dreg_is_unbiased_and_its_encoder_snr_does_not_fall_with_k_while_the_standard_falls():
  # At k = 1 both estimate ∇(−ELBO), a closed form here.
  _, params, y = _linear_gaussian(batch=1)
  exact = np.asarray(jax.grad(lambda p: _negative_elbo(p, y)[0])(params)["params"]["encoder"][
      "dense_0"]["bias"])
  snr = {}
  for k in (1, 10, 100):
    standard, dreg = _gradient_draws("standard", k)[1], _gradient_draws("dreg", k)[1]
    # Unbiased: the paired difference of the two estimators averages to 0 within 4 of its
    # standard errors, on every encoder parameter (μ and log v biases).
    diff = dreg - standard
    assert np.all(np.abs(diff.mean(0)) < 4 * diff.std(0, ddof=1) / math.sqrt(len(diff))), k
    if k == 1:
      for g in (standard, dreg):
        se = g.std(0, ddof=1) / math.sqrt(len(g))
        assert np.all(np.abs(g.mean(0) - exact) < 4 * se), (g.mean(0), exact)
    snr[k] = {"standard": _snr(standard[:, :D]), "dreg": _snr(dreg[:, :D])}
  # The μ biases only: the log v biases' expected gradient changes sign between k = 1 and
  # k = 10 on this model (its SNR passes through 0, no power law to see).
  for small, large in ((1, 10), (10, 100)):
    (r_small, se_small), (r_large, se_large) = snr[small]["dreg"], snr[large]["dreg"]
    assert np.all(r_large > r_small - 4 * np.hypot(se_small, se_large)), (small, large, snr)
    (r_small, se_small), (r_large, se_large) = snr[small]["standard"], snr[large]["standard"]
    assert np.all(r_large + 4 * np.hypot(se_small, se_large) < r_small), (small, large, snr)
  # Rainforth et al. (2018): the standard SNR is c/√k for large k, so √k · SNR_k is the same
  # at k = 10 and 100, within 4 standard errors of the two (scaled by √k). SNR falling like
  # 1/k, or not at all, misses by more than 10 of them here.
  (r10, se10), (r100, se100) = snr[10]["standard"], snr[100]["standard"]
  gap = np.abs(math.sqrt(100) * r100 - math.sqrt(10) * r10)
  assert np.all(gap < 4 * np.hypot(math.sqrt(100) * se100, math.sqrt(10) * se10)), snr


# ----------------------------------------------------------------------------
# Chunked importance sampling
# ----------------------------------------------------------------------------


def test_the_chunks_of_the_importance_sampler_draw_independent_noise():
  # −L_k with k = 500 samples drawn in 50 chunks of 10 and in one chunk of 500: the same
  # estimator if the chunks draw independent noise, so the same variance over keys. Chunks
  # that reused one chunk's noise would make it −L_10, whose variance is ~50 times larger.
  draws, k = 200, 500
  variances = {}
  for chunk in (10, 500):
    model, params, y = _linear_gaussian(iw_samples=k, iw_chunk=chunk)
    nll = jax.jit(jax.vmap(lambda key, m=model, p=params, y=y: m.evaluate(
        p, {"y": y}, jax.random.split(key, 4))["nll_iw"]))
    x = np.asarray(nll(jax.random.split(jax.random.key(chunk), draws)), np.float64)  # (M, B)
    variances[chunk] = (x.var(0, ddof=1),
                        [_relative_se_of_variance(column) for column in x.T])
  (v_chunked, se_chunked), (v_whole, se_whole) = variances[10], variances[500]
  # Per example: the variance ratio is 1 within 4 standard errors of a ratio of independent
  # sample variances.
  bound = 4 * np.hypot(se_chunked, se_whole)
  assert np.all(np.abs(v_chunked / v_whole - 1) < bound), (v_chunked / v_whole, bound)


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("override,message", [
    ({"model.free_bits_form": "batch"},
     "config.model.free_bits_form = 'batch': unknown; valid names: kingma, per_example"),
    ({"model.iwae_gradient": "rws"},
     "config.model.iwae_gradient = 'rws': unknown; valid names: standard, dreg"),
    ({"model.iwae_gradient": "dreg"},
     "config.model.iwae_gradient = 'dreg' is an estimator of the IWAE bound's gradient; "
     "model.objective = 'elbo' takes 'standard'"),
    ({"model.train_samples": 0}, "config.model.train_samples = 0: must be an integer >= 1"),
])
def test_bad_estimator_settings_are_one_line_errors_before_any_data(override, message):
  config = common.load_config("vae", "quick", **override)
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
    train.validate_config(config)  # what experiments.run calls before loading data
  assert "\n" not in str(error.value)


def test_dreg_and_kingma_free_bits_are_valid_where_they_apply():
  train.validate_config(common.load_config("vae", "quick", **{
      "model.objective": "iwae", "model.train_samples": 5, "model.iwae_gradient": "dreg"}))
  train.validate_config(common.load_config("vae", "quick", **{
      "model.free_bits": 0.5, "model.free_bits_form": "per_example", "model.train_samples": 5}))
