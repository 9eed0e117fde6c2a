"""Every model trains end to end on real data; model-specific facts against closed forms."""

import importlib
import math
import textwrap

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import ml_collections

from energy_ae import corruptions, models, train
from energy_ae.metrics_io import read_metrics

CONFIGS = ["ellipse", "target_prop", "ae", "dae", "cae", "vae"]


def quick_config(name):
  return importlib.import_module(f"experiments.{name}").get_config("quick")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_model_trains_on_real_data_and_its_loss_falls(name, tmp_path):
  config = quick_config(name)
  final = train.train_and_evaluate(config, str(tmp_path))
  records = read_metrics(str(tmp_path / "metrics.jsonl"))
  losses = [r["loss"] for r in records if r["split"] == "train"]
  assert len(losses) >= 3
  assert losses[-1] < 0.9 * losses[0], losses
  assert all(math.isfinite(v) for v in final.values())
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
