"""Every model trains end to end on real data; model-specific facts against closed forms."""

import math
import textwrap

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import ml_collections

from energy_ae import corruptions, models, train
from energy_ae.metrics_io import read_metrics
from experiments import common

CONFIGS = ["ellipse", "target_prop", "ae", "dae", "cae", "vae"]


def quick_config(name):
  return common.load_config(name, "quick")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_model_trains_on_real_data_and_its_loss_falls(name, tmp_path):
  config = quick_config(name)
  final = train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(str(tmp_path / "metrics.jsonl"))
  losses = [r["loss"] for r in records if r["split"] == "train"]
  assert len(losses) >= 3
  assert losses[-1] < 0.9 * losses[0], losses
  assert all(math.isfinite(v) for v in final.values() if not isinstance(v, list))
  tests = [r for r in records if r["split"] == "test"]
  assert tests[-1]["step"] == records[-1]["step"]


def test_model_shapes_and_named_terms():
  config = quick_config("vae")
  model = models.make(config, (784,))
  batch = {"y": jnp.full((3, 784), 0.5)}
  params = model.init(jax.random.key(0), batch)
  keys = jax.random.split(jax.random.key(1), 3)
  loss, metrics = model.loss(params, batch, keys)
  assert loss.shape == () and {"loss", "C", "KL"} <= set(metrics)
  evaluation = model.evaluate(params, batch, keys)
  assert all(v.shape == (3,) for v in evaluation.values())


def test_unknown_model_lists_the_valid_names():
  config = quick_config("ae")
  config.model.name = "autoencoder"
  with pytest.raises(ValueError, match="unknown model 'autoencoder'.*cae, dae, ellipse"):
    models.make(config, (784,))


def test_a_new_model_trains_through_the_generic_trainer(tmp_path, monkeypatch):
  pkg = tmp_path / "mymodels"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "tied_linear.py").write_text(textwrap.dedent('''
      import jax, jax.numpy as jnp
      from energy_ae import energies
      from energy_ae.models import Model

      def make(config, example_shape):
        d, n = config.model.latent_dim, example_shape[0]
        energy = energies.make_energy(config.model.energy)

        def reconstruct(params, y):
          return (y @ params["W"]) @ params["W"].T   # linear autoencoder, tied weights

        def init(key, batch):
          return {"W": 0.01 * jax.random.normal(key, (n, d))}

        def loss(params, batch, keys):
          total, terms = energy(y=batch["y"], y_tilde=reconstruct(params, batch["y"]))
          return jnp.mean(total), {"loss": jnp.mean(total), **{k: jnp.mean(v) for k, v in terms.items()}}

        def evaluate(params, batch, keys):
          return {"loss": energy(y=batch["y"], y_tilde=reconstruct(params, batch["y"]))[0]}

        return Model(init, loss, evaluate)
  '''))
  monkeypatch.syspath_prepend(str(tmp_path))
  config = quick_config("ae")
  config.model.name = "mymodels.tied_linear"
  config.train.learning_rate = 1e-2
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  losses = [r["loss"] for r in read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
            if r["split"] == "train"]
  assert losses[-1] < 0.8 * losses[0] and math.isfinite(final["loss"])


def test_dropout_corruption_is_the_lectures():
  y = jnp.ones((2000, 100))
  keys = jax.random.split(jax.random.key(0), 2000)
  y_hat = corruptions.dropout(keys, y, p=0.5)
  assert set(np.unique(y_hat)) == {0.0, 2.0}  # half dropped, kept ones doubled
  assert abs(float((y_hat == 0).mean()) - 0.5) < 0.01
  assert abs(float(y_hat.mean()) - 1.0) < 0.02  # unbiased


def test_other_corruptions():
  y = jnp.full((1000, 50), 0.5)
  keys = jax.random.split(jax.random.key(1), 1000)
  assert abs(float((corruptions.mask(keys, y, p=0.25) == 0).mean()) - 0.25) < 0.01
  noise = corruptions.gaussian(keys, y, sigma=0.3) - y
  assert abs(float(noise.std()) - 0.3) < 0.01
  sp = corruptions.salt_and_pepper(keys, y, p=0.2)
  assert abs(float((sp == 0).mean()) - 0.1) < 0.01 and abs(float((sp == 1).mean()) - 0.1) < 0.01
  with pytest.raises(ValueError, match="unknown corruption 'blur'.*dropout"):
    corruptions.get_corruption("blur")


def test_vae_importance_weighted_nll_on_a_linear_gaussian_model():
  """p(z) = N(0, I), p(y|z) = N(W z + b, σ² I): log p(y) = log N(y; b, W Wᵀ + σ² I)."""
  n, d, sigma = 5, 2, 0.5
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(n, d)))
  w = q * np.array([1.5, 0.8])  # orthogonal columns: the exact posterior is diagonal
  b = rng.normal(size=n)
  post_var = 1.0 / (1.0 + (w**2).sum(0) / sigma**2)
  a = (post_var[:, None] * w.T) / sigma**2  # μ_post = A (y − b)

  config = ml_collections.ConfigDict(dict(
      data=dict(range="raw"),
      model=dict(name="vae", latent_dim=d, architecture="mlp", encoder_widths=(),
                 decoder_widths=(), activation="relu", likelihood="gaussian", decoder_std=sigma,
                 beta=1.0, iw_samples=5000, iw_chunk=500)))
  model = models.make(config, (n,))
  y = jnp.asarray(rng.normal(size=(4, n)) + b, jnp.float32)
  params = model.init(jax.random.key(0), {"y": y})
  # A slightly wrong posterior, so that the estimate has variance to average away.
  enc_kernel = np.concatenate([a.T, np.zeros((n, d))], axis=1)
  enc_bias = np.concatenate([-a @ b + 0.2, np.log(post_var) + 0.3])
  params = {"params": {
      "encoder": {"dense_0": {"kernel": jnp.asarray(enc_kernel, jnp.float32),
                              "bias": jnp.asarray(enc_bias, jnp.float32)}},
      "decoder": {"dense_0": {"kernel": jnp.asarray(w.T, jnp.float32),
                              "bias": jnp.asarray(b, jnp.float32)}}}}
  keys = jax.random.split(jax.random.key(2), 4)
  metrics = jax.jit(model.evaluate)(params, {"y": y}, keys)
  cov = w @ w.T + sigma**2 * np.eye(n)
  diff = np.asarray(y, np.float64) - b
  exact = 0.5 * (np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
                 + np.linalg.slogdet(2 * np.pi * cov)[1])
  np.testing.assert_allclose(metrics["nll_iw"], exact, atol=0.1)


def test_vae_sampling_and_interpolation_helpers():
  from energy_ae.models import vae

  config = quick_config("vae")
  model = models.make(config, (784,))
  params = model.init(jax.random.key(0), {"y": jnp.zeros((1, 784))})
  samples = vae.sample(params, config, (784,), jax.random.key(1), 16)
  assert samples.shape == (16, 784) and float(samples.min()) >= 0 and float(samples.max()) <= 1
  path = vae.interpolate(params, config, (784,), jnp.zeros(784), jnp.ones(784), num=16)
  assert path.shape == (16, 784)
  np.testing.assert_allclose(path[0], model_recon(params, config, jnp.zeros((1, 784)))[0], rtol=1e-5)


def model_recon(params, config, y):
  from energy_ae.models import vae

  net = vae.build(config, (784,))
  return jax.nn.sigmoid(net.apply(params, y))


def test_cae_penalties_agree_and_the_closed_form_refuses_other_encoders():
  from experiments import cae

  config = cae.get_config("quick")
  y = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 784)), jnp.float32)
  losses = {}
  for penalty in ("contractive", "contractive_sigmoid"):
    config.model.contractive_penalty = penalty
    model = models.make(config, (784,))
    params = model.init(jax.random.key(0), {"y": y})
    losses[penalty] = model.evaluate(params, {"y": y}, None)["R"]
  np.testing.assert_allclose(losses["contractive"], losses["contractive_sigmoid"], rtol=1e-4)
  config.model.encoder_widths = (64,)
  with pytest.raises(ValueError, match="closed form for one sigmoid layer"):
    models.make(config, (784,))


def test_salt_and_pepper_takes_its_extremes_from_the_data_range():
  keys = jax.random.split(jax.random.key(0), 64)
  y = jnp.zeros((64, 100))
  config = {"corruption": "salt_and_pepper", "corruption_kwargs": {"salt_and_pepper": {"p": 0.5}}}
  corrupt = corruptions.from_config(config, (-1.0, 1.0))
  values = set(np.unique(np.asarray(corrupt(keys, y))).tolist())
  assert values == {-1.0, 0.0, 1.0}  # black and white of [−1, 1] images, not 0 and 1


def test_corruption_kwargs_per_name_or_flat_and_checked_against_the_signature():
  per_name = {"corruption": "gaussian",
              "corruption_kwargs": {"dropout": {"p": 0.5}, "gaussian": {"sigma": 0.1}}}
  assert corruptions.kwargs_from_config(per_name) == {"sigma": 0.1}
  assert corruptions.kwargs_from_config({"corruption": "mask", "corruption_kwargs": {"p": 0.1}}) \
      == {"p": 0.1}
  with pytest.raises(ValueError, match=r"corruption 'gaussian' has no keyword 'p'; its keywords: "
                                       r"sigma"):
    corruptions.from_config({"corruption": "gaussian", "corruption_kwargs": {"p": 0.5}})


def _linear_gaussian_vae(mu_offset=(0.4, 0.4), **model_overrides):
  """A VAE whose decoder is linear-Gaussian, p(y|z) = N(W z + b, σ² I) with p(z) = N(0, I),
  so that log p(y) = log N(y; b, W Wᵀ + σ² I) in closed form; (model, params, y, exact)."""
  n, d, sigma = 5, 2, 0.5
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(n, d)))
  w = q * np.array([1.5, 0.8])
  b = rng.normal(size=n)
  post_var = 1.0 / (1.0 + (w**2).sum(0) / sigma**2)
  a = (post_var[:, None] * w.T) / sigma**2
  model_config = dict(name="vae", latent_dim=d, architecture="mlp", encoder_widths=(),
                      decoder_widths=(), activation="relu", likelihood="gaussian",
                      decoder_std=sigma, beta=1.0, iw_samples=10, iw_chunk=10)
  model_config.update(model_overrides)
  config = ml_collections.ConfigDict(dict(data=dict(range="raw"), model=model_config))
  model = models.make(config, (n,))
  y = jnp.asarray(rng.normal(size=(4, n)) + b, jnp.float32)
  enc_kernel = np.concatenate([a.T, np.zeros((n, d))], axis=1)
  enc_bias = np.concatenate([-a @ b + np.asarray(mu_offset), np.log(post_var) + 0.5])  # wrong q
  params = {"params": {
      "encoder": {"dense_0": {"kernel": jnp.asarray(enc_kernel, jnp.float32),
                              "bias": jnp.asarray(enc_bias, jnp.float32)}},
      "decoder": {"dense_0": {"kernel": jnp.asarray(w.T, jnp.float32),
                              "bias": jnp.asarray(b, jnp.float32)}}}}
  cov = w @ w.T + sigma**2 * np.eye(n)
  diff = np.asarray(y, np.float64) - b
  exact = -0.5 * (np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
                  + np.linalg.slogdet(2 * np.pi * cov)[1])
  return model, params, y, exact, (w, b, sigma)


def test_iwae_bound_with_one_sample_is_the_elbo_estimate_of_that_sample():
  from energy_ae import keys as keys_lib

  model, params, y, _, (w, b, sigma) = _linear_gaussian_vae()
  keys = jax.random.split(jax.random.key(3), 4)
  bound = np.asarray(model.extras["iwae_bound"](params, y, keys, 1))
  # Independently: log p(y|z) + log p(z) − log q(z|y) at z = μ + σ_q ε with the same ε.
  mu, logvar = (np.asarray(a, np.float64) for a in model.extras["posterior"](params, y))
  eps = np.asarray(keys_lib.normal(keys, (1, 2)), np.float64)[:, 0]
  z = mu + np.exp(0.5 * logvar) * eps
  gauss = lambda x, m, var: -0.5 * np.sum((x - m) ** 2 / var + np.log(2 * np.pi * var), -1)
  expected = (gauss(np.asarray(y, np.float64), z @ w.T + b, sigma**2) + gauss(z, 0.0, 1.0)
              - gauss(z, mu, np.exp(logvar)))
  np.testing.assert_allclose(bound, expected, rtol=1e-5, atol=1e-4)


def test_iwae_bound_rises_with_k_towards_log_p_y():
  model, params, y, exact, _ = _linear_gaussian_vae()
  means = {}
  for k in (1, 10, 100, 1000):
    keys = jax.random.split(jax.random.key(k), 4)
    # E[L_k] over 200 independent draws per example; each L_k ≤ log p(y) only in expectation.
    draws = jax.vmap(lambda kk, k=k: model.extras["iwae_bound"](
        params, y, jax.random.split(kk, 4), k))(jax.random.split(keys[0], 200))
    means[k] = np.asarray(draws).mean(0)
  gaps = {k: exact - m for k, m in means.items()}
  assert np.all(gaps[1] > gaps[10]) and np.all(gaps[10] > gaps[100])
  assert np.all(gaps[1000] > -0.02) and np.all(gaps[1000] < 0.05)  # MC error of the mean


def test_iwae_objective_trains_on_the_bound():
  model, params, y, _, _ = _linear_gaussian_vae(objective="iwae", train_samples=5)
  keys = jax.random.split(jax.random.key(0), 4)
  value, metrics = model.loss(params, {"y": y}, keys)
  np.testing.assert_allclose(value, -np.mean(model.extras["iwae_bound"](params, y, keys, 5)),
                             rtol=1e-6)


def test_free_bits_remove_the_kl_gradient_of_dimensions_below_the_floor():
  keys = jax.random.split(jax.random.key(0), 4)
  offset = (1.5, 0.0)  # μ₁ far from the prior's mean: dimension 0 pays far more KL than 1
  model, params, y, _, _ = _linear_gaussian_vae(offset)
  kl = np.asarray(model.extras["kl_per_dim"](params, y))  # (4 examples, 2 dimensions)
  assert kl[:, 1].max() < kl[:, 0].min(), kl
  floor = float(kl[:, 1].max() + kl[:, 0].min()) / 2  # above every KL of dim 1, below dim 0's
  grads = {}
  for name, overrides in (("elbo", {}), ("free_bits", {"free_bits": floor}),
                          ("no_kl", {"beta": 0.0})):
    model, params, y, _, _ = _linear_gaussian_vae(offset, **overrides)
    grads[name] = np.asarray(jax.grad(lambda p, m=model, y=y: m.loss(p, {"y": y}, keys)[0])(
        params)["params"]["encoder"]["dense_0"]["bias"])
  # ∂/∂θ mean_b Σ_j max(λ, KL_bj) is the KL gradient of the (b, j) with KL_bj > λ only: none of
  # dimension 1 (its biases get the reconstruction gradient alone), all of dimension 0.
  # The encoder bias is (μ₀, μ₁, log v₀, log v₁).
  for index, target in ((0, "elbo"), (2, "elbo"), (1, "no_kl"), (3, "no_kl")):
    np.testing.assert_allclose(grads["free_bits"][index], grads[target][index], rtol=1e-5,
                               atol=1e-6)
  assert not np.allclose(grads["elbo"][1], grads["no_kl"][1])  # the KL does act on dimension 1


@pytest.mark.parametrize("binarize,name", [("none", "bce_iw"), ("dynamic", "nll_iw")])
def test_the_importance_weighted_metric_is_called_a_likelihood_only_on_binary_data(binarize, name):
  config = quick_config("vae")
  config.data.binarize = binarize
  model = models.make(config, (784,))
  y = jnp.asarray(np.random.default_rng(0).integers(0, 2, (4, 784)), jnp.float32)
  params = model.init(jax.random.key(0), {"y": y})
  metrics = model.evaluate(params, {"y": y}, jax.random.split(jax.random.key(1), 4))
  assert name in metrics and ({"nll_iw", "bce_iw"} - {name}).isdisjoint(metrics)
