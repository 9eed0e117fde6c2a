"""Evaluation metrics against closed forms and independent references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from energy_ae import metrics, train
from energy_ae.metrics_io import read_metrics
from experiments import ae


def test_psnr_of_a_known_error():
  clean = jnp.full((2, 16), 0.5)
  noisy = clean + jnp.array([0.1, 0.01])[:, None]  # MSE 1e-2 and 1e-4
  np.testing.assert_allclose(metrics.psnr(noisy, clean, (0.0, 1.0)), [20.0, 40.0], rtol=1e-5)
  # The same images on [-1, 1]: errors halve on the unit scale, +6.02 dB.
  np.testing.assert_allclose(metrics.psnr(2 * noisy - 1, 2 * clean - 1, (-1.0, 1.0)), [20.0, 40.0],
                             rtol=1e-5)


def test_jacobian_frobenius_of_a_linear_encoder_is_the_weight_norm():
  w = jax.random.normal(jax.random.key(0), (5, 3))
  y = jax.random.normal(jax.random.key(1), (4, 5))
  np.testing.assert_allclose(metrics.jacobian_frobenius(lambda v: v @ w, y),
                             np.full(4, np.linalg.norm(w)), rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 7, 10])
def test_importance_weighted_nll_is_logmeanexp_of_the_weights_whatever_the_chunk(chunk):
  k, batch = 7, 4
  log_w = jax.random.normal(jax.random.key(0), (k, batch)) * 3.0

  def chunk_log_weights(i):
    index = jnp.minimum(i * chunk + jnp.arange(chunk), k - 1)
    return log_w[index]

  expected = -np.log(np.mean(np.exp(np.asarray(log_w, np.float64)), axis=0))
  got = metrics.importance_weighted_nll(chunk_log_weights, num_samples=k, chunk=chunk)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_linear_probe_reads_labels_from_informative_codes_and_not_from_noise():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 2000)
  informative = np.eye(10)[labels] * 5 + rng.normal(size=(2000, 10))
  noise = rng.normal(size=(2000, 10))
  good = metrics.linear_probe_accuracy(informative[:1500], labels[:1500], informative[1500:],
                                       labels[1500:])
  chance = metrics.linear_probe_accuracy(noise[:1500], labels[:1500], noise[1500:], labels[1500:])
  assert good > 0.95 and abs(chance - 0.1) < 0.05
  with pytest.raises(ValueError, match="two classes"):
    metrics.linear_probe_accuracy(noise, np.zeros(2000), noise, np.zeros(2000))


def test_every_evaluation_of_an_encoder_writes_the_probe_accuracy(tmp_path):
  config = ae.get_config("quick")
  final = train.train_and_evaluate(config, str(tmp_path))
  tests = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if r["split"] == "test"]
  assert [r["step"] for r in tests] == [0, 10, 20, 30]
  assert all(0.1 < r["probe_accuracy"] <= 1.0 for r in tests)
  assert final["probe_accuracy"] > 0.5  # 30-d codes of real digits after two epochs (chance 0.1)
  assert math.isfinite(final["jacobian_fro"])


def test_ridge_probe_matches_the_least_squares_classifier_and_reads_informative_codes():
  from energy_ae import evaluation

  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 2000)
  informative = np.eye(10)[labels] * 5 + rng.normal(size=(2000, 10))
  noise = rng.normal(size=(2000, 10))
  ridge = jax.jit(lambda a, la, b, lb: evaluation.ridge_classifier_accuracy(
      a, la, b, lb, num_classes=10, l2=1e-3))
  good = float(ridge(informative[:1500], labels[:1500], informative[1500:], labels[1500:]))
  chance = float(ridge(noise[:1500], labels[:1500], noise[1500:], labels[1500:]))
  # 500 test points: the accuracy's standard error is at most 0.5/√500 ≈ 0.022, so 0.05 is 2.2σ
  # on either side of chance.
  assert good > 0.95 and abs(chance - 0.1) < 0.05
  # Independently: numpy's least squares on the same standardised design (λ → 0).
  x = (informative[:1500] - informative[:1500].mean(0)) / informative[:1500].std(0)
  x = np.concatenate([x, np.ones((1500, 1))], 1)
  w = np.linalg.lstsq(x, np.eye(10)[labels[:1500]], rcond=None)[0]
  xt = (informative[1500:] - informative[:1500].mean(0)) / informative[:1500].std(0)
  expected = np.mean(np.argmax(np.concatenate([xt, np.ones((500, 1))], 1) @ w, 1) == labels[1500:])
  exact = float(jax.jit(lambda a, la, b, lb: evaluation.ridge_classifier_accuracy(
      a, la, b, lb, num_classes=10, l2=0.0))(informative[:1500], labels[:1500],
                                                informative[1500:], labels[1500:]))
  assert abs(exact - expected) <= 1 / 500  # at most one test point on a float32 tie
