"""Evaluation during and after training: the jitted test-set metrics and the linear probe.

Everything here runs on the device in a few compiled calls, so that evaluating costs a small
fraction of training:

* ``make_eval_step`` / ``evaluate``: the model's per-example test metrics summed over padded
  batches of one shape (one compiled program whatever the test-set size);
* ``make_ridge_probe``: the linear probe of a model with an encoder: codes of the training
  split standardised, a ridge-regularised least-squares classifier on one-hot targets solved
  in closed form, W = (XᵀX + λ n I)⁻¹ XᵀY, its test accuracy as ``probe_accuracy``;
* ``logistic_probe``: scikit-learn's logistic regression on the same codes, for the final
  evaluation only (``probe_accuracy_logistic``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from energy_ae import keys as keys_lib, metrics as metrics_lib, models


def eval_sums(model: models.Model, params, data, offset, key, *, eval_batch: int):
  """(sums, count): each test metric summed over the test batch at ``offset`` (padded to
  ``eval_batch``; the padding weighs 0), and the number of real examples in it."""
  n = jax.tree.leaves(data)[0].shape[0]
  positions = offset + jnp.arange(eval_batch)
  valid = positions < n
  index = jnp.minimum(positions, n - 1)
  batch = jax.tree.map(lambda x: x[index], data)
  metrics = model.evaluate(params, batch, keys_lib.per_example_keys(key, positions))
  weights = valid.astype(jnp.float32)
  sums = {k: jnp.sum(jnp.broadcast_to(v, (eval_batch,)) * weights) for k, v in metrics.items()}
  return sums, jnp.sum(weights)


def make_eval_step(model: models.Model, *, eval_batch: int):
  """``eval(params, data, offset, key) -> (sums, count)`` over one (padded) test batch."""
  return jax.jit(lambda params, data, offset, key: eval_sums(model, params, data, offset, key,
                                                              eval_batch=eval_batch))


def evaluate(eval_step, params, test_data, key, *, eval_batch: int) -> dict[str, float]:
  """The mean of every test metric over the test split (one host transfer at the end)."""
  totals, count = evaluate_sums(eval_step, (params,), test_data, key, eval_batch=eval_batch)
  return {k: float(v) / float(count) for k, v in totals.items()}


def evaluate_sums(eval_step, args: tuple, test_data, key, *, eval_batch: int):
  """(totals, count) on the host: ``eval_step(*args, test_data, offset, key)`` summed over
  the test split's batches (``args``: the parameters, or a sweep's stacked parameters and
  values, whose sums then carry the variants' axis)."""
  n = jax.tree.leaves(test_data)[0].shape[0]
  totals, count = None, 0.0
  for offset in range(0, n, eval_batch):
    sums, c = eval_step(*args, test_data, offset, key)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    count = count + c
  return jax.device_get((totals, count))


def ridge_classifier_accuracy(train_codes, train_labels, test_codes, test_labels, *,
                              num_classes: int, l2: float = 1e-3) -> jax.Array:
  """Test accuracy of the closed-form ridge classifier on standardised codes (jittable).

  X: training codes standardised by their own mean and standard deviation, with a bias
  column; Y: one-hot labels. W = (XᵀX + λ n I)⁻¹ XᵀY (the bias unpenalised), prediction
  argmax_c (x W)_c.
  """
  train_codes = train_codes.reshape(train_codes.shape[0], -1).astype(jnp.float32)
  test_codes = test_codes.reshape(test_codes.shape[0], -1).astype(jnp.float32)
  mean = jnp.mean(train_codes, 0)
  std = jnp.std(train_codes, 0) + 1e-6
  design = lambda c: jnp.concatenate([(c - mean) / std, jnp.ones((c.shape[0], 1))], axis=1)
  x = design(train_codes)
  y = jax.nn.one_hot(train_labels, num_classes)
  n, d = x.shape
  penalty = l2 * n * jnp.eye(d).at[-1, -1].set(0.0)
  weights = jnp.linalg.solve(x.T @ x + penalty, x.T @ y)
  predictions = jnp.argmax(design(test_codes) @ weights, axis=1)
  return jnp.mean((predictions == test_labels).astype(jnp.float32))


def make_ridge_probe(model: models.Model, *, num_classes: int, l2: float
                     ) -> Callable[..., jax.Array]:
  """``probe(params, train_y, train_labels, test_y, test_labels) -> accuracy``, one jitted
  program: encode both splits, fit the ridge classifier, score it."""

  def probe(params, train_y, train_labels, test_y, test_labels):
    return ridge_classifier_accuracy(model.encode(params, train_y), train_labels,
                                     model.encode(params, test_y), test_labels,
                                     num_classes=num_classes, l2=l2)

  return jax.jit(probe)


def logistic_probe(model: models.Model, params, train_y, train_labels, test_y, test_labels, *,
                   max_iter: int) -> float:
  """Test accuracy of scikit-learn's logistic regression on the codes (host; final only)."""
  encode = jax.jit(model.encode)
  train_codes = np.asarray(jax.device_get(encode(params, train_y)))
  test_codes = np.asarray(jax.device_get(encode(params, test_y)))
  return metrics_lib.linear_probe_accuracy(
      train_codes.reshape(len(train_codes), -1), np.asarray(train_labels),
      test_codes.reshape(len(test_codes), -1), np.asarray(test_labels), max_iter=max_iter)
