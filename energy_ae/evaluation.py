"""Evaluation during and after training: the jitted test-set metrics and the linear probe.

Everything here runs on the device in a few compiled calls, so that evaluating costs a small
fraction of training. ``make_evaluator`` writes the evaluation once, for a run and for a
sweep (the same functions ``vmap``ped over the variants):

* the model's per-example test metrics (``Model.evaluate``; ``evaluate_final`` at the final
  evaluation) summed over padded batches of one shape (one compiled program whatever the
  test-set size), and the model's ``split_metrics`` of the whole split;
* the linear probe of a model with an encoder: codes of the training split standardised, a
  ridge-regularised least-squares classifier on one-hot targets solved in closed form,
  W = (XᵀX + λ n I)⁻¹ XᵀY, its test accuracy as ``probe_accuracy``; at the final evaluation
  also scikit-learn's logistic regression on the same codes (``probe_accuracy_logistic``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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


def logistic_probe(model: models.Model, params, train_y, train_labels, test_y, test_labels, *,
                   max_iter: int) -> float:
  """Test accuracy of scikit-learn's logistic regression on the codes (host; final only)."""
  encode = jax.jit(model.encode)
  train_codes = np.asarray(jax.device_get(encode(params, train_y)))
  test_codes = np.asarray(jax.device_get(encode(params, test_y)))
  return metrics_lib.linear_probe_accuracy(
      train_codes.reshape(len(train_codes), -1), np.asarray(train_labels),
      test_codes.reshape(len(test_codes), -1), np.asarray(test_labels), max_iter=max_iter)


# Training codes the probe of a streamed set is fitted on when train.linear_probe_examples = 0.
STREAMED_PROBE_EXAMPLES = 10_000


class ProbeData(NamedTuple):
  """The probe's codes come from these splits (on the devices; labels also on the host)."""

  train_y: Any
  train_labels: Any
  test_y: Any
  test_labels: Any
  host_train_labels: np.ndarray
  host_test_labels: np.ndarray
  num_classes: int
  l2: float
  max_iter: int


def probe_data(dataset, train_config, place: Callable) -> ProbeData | None:
  """The linear probe's data (``train.linear_probe``, a data set with several labels), placed
  on the devices by ``place``; None when there is no probe."""
  if not train_config.get("linear_probe", True):
    return None
  # The first n training codes (a streamed set: at most STREAMED_PROBE_EXAMPLES, read once).
  n = train_config.get("linear_probe_examples", 0) or (
      min(len(dataset.train["y"]), STREAMED_PROBE_EXAMPLES) if dataset.streamed
      else len(dataset.train["y"]))
  labels = np.asarray(dataset.train["label"][:n])
  if len(np.unique(labels)) < 2:
    return None
  on_device = place({"train_y": np.asarray(dataset.train["y"][:n]), "train_labels": labels,
                     "test_y": dataset.test["y"], "test_labels": dataset.test["label"]})
  return ProbeData(**on_device, host_train_labels=labels,
                   host_test_labels=dataset.test["label"],
                   num_classes=int(max(labels.max(), dataset.test["label"].max())) + 1,
                   l2=train_config.get("linear_probe_l2", 1e-3),
                   max_iter=train_config.get("linear_probe_max_iter", 1000))


def _host_value(value) -> float | list:
  return float(value) if np.ndim(value) == 0 else np.asarray(value, float).tolist()


def make_evaluator(model_for: Callable, models_: Sequence[models.Model], *, values, eval_keys,
                   test_data, eval_batch: int, probe: ProbeData | None, stacked: bool):
  """``evaluate(params, *, final, phases) -> [test metrics of each variant]``.

  ``model_for(value)`` builds a variant's model from its swept value (traced inside the
  sweep's vmap; a run's ignores it), ``models_`` the variants' concrete models (for the
  logistic probe on the host), ``values`` (V,) and ``eval_keys`` (V, ...) key data — a run's
  without the variants' axis and ``stacked`` False: the same functions, not vmapped.
  """
  batched = (lambda f, axes: jax.jit(jax.vmap(f, in_axes=axes))) if stacked else (
      lambda f, axes: jax.jit(f))
  wrap = jax.random.wrap_key_data

  def sums(final: bool):
    def one(params, value, key, data, offset):
      model = model_for(value)
      if final and model.evaluate_final is not None:
        model = model._replace(evaluate=model.evaluate_final)
      return eval_sums(model, params, data, offset, wrap(key), eval_batch=eval_batch)

    return batched(one, (0, 0, 0, None, None))

  # Without evaluate_final the final evaluation is the same program: one compilation, not two.
  final_differs = any(m.evaluate_final is not None for m in models_)
  sum_steps = {False: sums(False)}
  sum_steps[True] = sums(True) if final_differs else sum_steps[False]
  # Data enter the compiled functions as arguments: closed over, they would be baked into
  # the program as constants.
  split = (batched(lambda p, value, key, y: model_for(value).split_metrics(
      p, y, jax.random.fold_in(wrap(key), 1)), (0, 0, 0, None))
      if models_[0].split_metrics is not None else None)

  def ridge_accuracy(p, value, train_y, train_labels, test_y, test_labels):
    model = model_for(value)
    return ridge_classifier_accuracy(model.encode(p, train_y), train_labels,
                                     model.encode(p, test_y), test_labels,
                                     num_classes=probe.num_classes, l2=probe.l2)

  ridge = (batched(ridge_accuracy, (0, 0, None, None, None, None))
           if models_[0].encode is not None and probe is not None else None)
  num = len(models_)
  unstack = (lambda tree, i: jax.tree.map(lambda x: x[i], tree)) if stacked else (
      lambda tree, i: tree)

  def evaluate(params, *, final: bool, phases) -> list[dict]:
    with phases("evaluation"):
      n = jax.tree.leaves(test_data)[0].shape[0]
      totals, count = None, 0.0
      for offset in range(0, n, eval_batch):
        s, c = sum_steps[final](params, values, eval_keys, test_data, offset)
        totals = s if totals is None else jax.tree.map(jnp.add, totals, s)
        count = count + c
      totals, count = jax.device_get((totals, count))
      out = [{k: float(v) / float(unstack(count, i)) for k, v in unstack(totals, i).items()}
             for i in range(num)]
      if split is not None:
        host = jax.device_get(split(params, values, eval_keys, test_data["y"]))
        for i, metrics in enumerate(out):
          metrics.update({k: _host_value(v) for k, v in unstack(host, i).items()})
    if ridge is not None:
      with phases("probe"):
        accuracy = jax.device_get(ridge(params, values, probe.train_y, probe.train_labels,
                                        probe.test_y, probe.test_labels))
        for i, metrics in enumerate(out):
          metrics["probe_accuracy"] = float(unstack(accuracy, i))
          if final:
            metrics["probe_accuracy_logistic"] = logistic_probe(
                models_[i], unstack(params, i), probe.train_y, probe.host_train_labels,
                probe.test_y, probe.host_test_labels, max_iter=probe.max_iter)
    return out

  return evaluate
