"""Sweeps in one step: V variants of one experiment, trained at once.

``config.sweep.key`` names one scalar hyper-parameter that does not change any shape
(``seed``, ``train.learning_rate``, or a model key the model uses as a number, such as the
VAE's ``model.beta`` or the CAE's ``model.contractive_weight``) and ``config.sweep.values``
its V values. The V train states are stacked along a leading axis and one compiled step
``vmap``s the train step over them, with the hyper-parameter a traced value: each variant
builds the model and the optimiser from the config with its own value inside the trace, so
nothing is baked in as a Python float. The data and the data parallelism are shared: every
device gathers its shard of each variant's batch, and ``lax.pmean`` averages each variant's
gradients as in a single run.

Variant v is the run of the config with ``key = values[v]``: the same initial parameters,
data order and noise as that run alone (a ``seed`` sweep gives each its own), the same
metrics to float rounding. A non-finite step of any variant ends the sweep as it ends a run
(``train.on_nonfinite``: at once, or after ``max_consecutive_nonfinite`` skipped steps in a row
of that variant): a diverging variant calls for other values, not for training the others on.
Each writes its own run directory ``WORKDIR/sweep/<key>=<value>``
(``metrics.jsonl``, ``config.json`` with its value, Orbax checkpoints), so that the tools
(``experiments.compare WORKDIR/sweep/*``, ``experiments.sample``, ``train.restore_run``)
read a variant as any run; the sweep resumes from the newest step every variant has saved.
"""

from __future__ import annotations

import logging
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from energy_ae import checkpoints, data as data_lib, evaluation, models, train
from energy_ae.metrics_io import MetricWriter

# Keys the trainer itself reads per variant; any other key must be one the model reads as a
# number (it is traced when the model is built).
TRAINER_KEYS = ("seed", "train.learning_rate")


class Sweep(NamedTuple):
  key: str
  values: tuple
  configs: list  # each variant's own config: the experiment's with key = value, no sweep
  dirs: list  # each variant's run directory


def sweep_key(config) -> str:
  """The swept key ('' for none)."""
  sweep = config.get("sweep", None)
  return (sweep.get("key", "") or "") if sweep is not None else ""


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise KeyError(part)
    node = node[part]
  return node


def _set(config, dotted: str, value) -> None:
  *path, last = dotted.split(".")
  node = config
  for part in path:
    node = node[part]
  node[last] = value


def variant_name(key: str, value) -> str:
  return f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"


def plan(config, workdir: str) -> Sweep:
  """The variants of ``config.sweep``, each config checked as a run of its own would be."""
  key = sweep_key(config)
  values = tuple(config.sweep.get("values", ()))
  if key not in TRAINER_KEYS and not key.startswith("model."):
    raise ValueError(f"config.sweep.key = {key!r}: a sweep varies {', '.join(TRAINER_KEYS)} or a "
                     "model.* key; the loop reads the other train.* and data.* keys once for "
                     "all variants (batch size, epochs, schedule), so train those as separate runs")
  try:
    current = _get(config, key)
  except KeyError:
    raise ValueError(f"config.sweep.key = {key!r}: the config has no such key") from None
  if isinstance(current, bool) or not isinstance(current, (int, float)):
    raise ValueError(f"config.sweep.key = {key!r}: a sweep varies one number, and {key} is "
                     f"{current!r}")
  if len(values) < 1:
    raise ValueError(f"config.sweep.values = {values!r}: give the values of {key} to train, "
                     "e.g. --config.sweep.values=0.1,1,10")
  if len(set(values)) != len(values):
    raise ValueError(f"config.sweep.values = {values!r}: each value once")
  configs, dirs = [], []
  for value in values:
    if isinstance(current, int) and not (isinstance(value, int) or float(value).is_integer()):
      raise ValueError(f"config.sweep.values = {values!r}: {key} is an integer, {value!r} is not")
    value = int(value) if isinstance(current, int) else float(value)
    variant = config.copy_and_resolve_references()
    with variant.unlocked():
      _set(variant, key, value)
      variant.sweep.key = ""
      variant.sweep.values = ()
    train.validate_config(variant)
    configs.append(variant)
    dirs.append(os.path.join(workdir, "sweep", variant_name(key, value)))
  values = tuple(_get(c, key) for c in configs)
  return Sweep(key, values, configs, dirs)


def traced_config(config, key: str, value) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose ``key`` holds ``value``, a traced array (no type checks)."""
  traced = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  _set(traced, key, value)
  return traced


def _builder(sweep: Sweep, example_shape, value_range, total_steps: int):
  """``build(value) -> (model, optimiser)`` of the variant whose swept key is ``value``."""
  base = sweep.configs[0]

  def build(value):
    if sweep.key == "seed":  # the seed only chooses keys, which the trainer passes per variant
      config = base
    else:
      config = traced_config(base, sweep.key, value)
    model = models.make(config, example_shape, value_range)
    return model, train.make_optimizer(config.train, total_steps)

  return build


def _untraceable(key: str, model_name: str, error: Exception) -> ValueError:
  return ValueError(
      f"config.sweep.key = {key!r} cannot be swept in one step: the {model_name} model reads "
      f"it as a Python number when it is built ({type(error).__name__}). Sweepable: "
      f"{', '.join(TRAINER_KEYS)} and the model keys a model computes with (e.g. model.beta of "
      "the vae, model.contractive_weight of the cae); or train the values as separate runs")


def make_sweep_step(build, mesh, *, global_batch: int, binarize: str, rollback: bool = False):
  """``step(states, data, perms, offset, keys, values) -> (states, metrics)``: one optimiser
  step of every variant (states and metrics stacked along axis 0), jitted, states donated;
  ``perms`` (V, N) and ``keys`` (V,) key data, ``values`` (V,) the swept values."""
  local_batch = train.local_batch_size(global_batch, mesh)
  collectives = mesh.size > 1

  def per_device(states, data, perms, offset, keys, values):
    def one(state, perm, key, value):
      model, tx = build(value)
      step = train.device_step(model, tx, local_batch=local_batch, binarize=binarize,
                               data_parallel=True, collectives=collectives, rollback=rollback)
      return step(state, data, perm, offset, jax.random.wrap_key_data(key))

    return jax.vmap(one)(states, perms, keys, values)

  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P(),) * 6, out_specs=(P(), P()),
                          check_vma=collectives)
  return jax.jit(sharded, donate_argnums=0)


def make_sweep_eval(build, *, eval_batch: int, final: bool = False):
  """``eval(params, values, data, offset, keys) -> (sums, count)`` of every variant."""

  def eval_step(params, values, data, offset, keys):
    def one(p, value, key):
      model = build(value)[0]
      if final and model.evaluate_final is not None:
        model = model._replace(evaluate=model.evaluate_final)
      return evaluation.eval_sums(model, p, data, offset, jax.random.wrap_key_data(key),
                                  eval_batch=eval_batch)

    return jax.vmap(one)(params, values, keys)

  return jax.jit(eval_step)


def _stack(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _slice(tree, v: int):
  return jax.tree.map(lambda x: x[v], tree)


def _host_list(value) -> float | list:
  return float(value) if np.ndim(value) == 0 else np.asarray(value, float).tolist()


class SweepSetup(NamedTuple):
  """What the sweep's step needs, built one way for the loop and the benchmark."""

  initial: list  # each variant's initial train state, on the host
  build: object  # build(value) -> (model, optimiser), traceable in the value
  values: jax.Array  # (V,) the swept values, replicated
  data_keys: jax.Array  # (V, ...) key data of each variant's data order, replicated
  step_keys: jax.Array
  eval_keys: jax.Array
  train_data: dict  # the training split's model inputs, replicated
  step: object  # make_sweep_step(...)


def setup_sweep_step(sweep: Sweep, config, mesh, dataset, *,
                     batch_size: int | None = None) -> SweepSetup:
  """Initial states, keys, replicated data and the jitted step of every variant; fails with
  one line, before anything is written, when a value changes shapes or the model cannot
  take the key traced."""
  total_steps = train.num_steps(config.train, dataset)
  example_shape = dataset.train["y"].shape[1:]
  inputs = data_lib.model_inputs(dataset.train)
  example = {k: jnp.asarray(v[:1]) for k, v in inputs.items()}
  run_keys = [train.run_keys(c.seed) for c in sweep.configs]  # (init, data, step, eval)
  initial = []
  for c, keys in zip(sweep.configs, run_keys):
    model = models.make(c, example_shape, dataset.value_range)
    tx = train.make_optimizer(c.train, total_steps)
    initial.append(jax.device_get(train.init_state(model, tx, keys[0], example)))
  shapes = [jax.tree.map(np.shape, s) for s in initial]
  for value, s in zip(sweep.values[1:], shapes[1:]):
    if s != shapes[0]:
      raise ValueError(f"config.sweep.key = {sweep.key!r}: the value {value!r} changes the "
                       "shapes of the parameters; a sweep varies a scalar that does not")
  build = _builder(sweep, example_shape, dataset.value_range, total_steps)
  values = train.replicate(mesh, np.asarray(sweep.values, np.float32))
  key_data = lambda i: train.replicate(mesh, np.stack(
      [np.asarray(jax.random.key_data(k[i])) for k in run_keys]))
  train_data = train.replicate(mesh, inputs)
  step_fn = make_sweep_step(build, mesh, global_batch=batch_size or config.train.batch_size,
                            binarize=config.data.get("binarize", "none"),
                            rollback=train.skips_nonfinite(config))
  # Every variant's step traced once: a key the model reads as a Python number fails here.
  num_train = dataset.train["y"].shape[0]
  try:
    jax.eval_shape(step_fn, train.replicate(mesh, _stack(initial)), train_data,
                   jnp.zeros((len(initial), num_train), jnp.int32), 0, key_data(1), values)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
          jax.errors.TracerIntegerConversionError) as e:
    raise _untraceable(sweep.key, config.model.name, e) from None
  except (ValueError, TypeError) as e:  # a model's check or cast that met the traced value
    if "Tracer" not in str(e):
      raise
    raise _untraceable(sweep.key, config.model.name, e) from None
  return SweepSetup(initial, build, values, key_data(1), key_data(2), key_data(3), train_data,
                    step_fn)


def train_and_evaluate(config, workdir: str) -> list[dict[str, float]]:
  """Trains every variant of ``config.sweep`` at once; returns each one's last test metrics.

  The loop is ``train.train_and_evaluate``'s (logs, evaluations, checkpoints at the same
  steps, signals, non-finite steps) over the variants' axis; ``train.steps_per_dispatch``
  must be 1.
  """
  train.validate_config(config)
  sweep = plan(config, workdir)
  tc = config.train
  if tc.get("steps_per_dispatch", 1) != 1:
    raise ValueError(f"config.train.steps_per_dispatch = {tc.steps_per_dispatch}: a sweep "
                     "runs one step of every variant per dispatch; set "
                     "--config.train.steps_per_dispatch=1")
  num_variants = len(sweep.values)
  is_main = jax.process_index() == 0
  phases = train.PhaseTimer()
  with phases("data"):
    dataset = data_lib.load(config.data)
  mesh = train.make_mesh()
  replicated = NamedSharding(mesh, P())
  num_train = dataset.train["y"].shape[0]
  if tc.batch_size > num_train:
    raise ValueError(f"config.train.batch_size = {tc.batch_size} exceeds the {num_train} "
                     f"training examples of {dataset.name!r}")
  steps_per_epoch = data_lib.num_batches(num_train, tc.batch_size)
  total_steps = train.num_steps(tc, dataset)
  logging.info("Sweep of %s over %s: %d variants trained together, %d steps each, on %d "
               "device(s)", config.model.name, sweep.key, num_variants, total_steps, mesh.size)

  with phases("data"):
    setup = setup_sweep_step(sweep, config, mesh, dataset)
    test_data = train.replicate(mesh, data_lib.model_inputs(dataset.test))
  initial, build, values, step_fn = setup.initial, setup.build, setup.values, setup.step
  data_keys, step_keys, eval_keys = setup.data_keys, setup.step_keys, setup.eval_keys
  train_data = setup.train_data

  managers = [checkpoints.Manager(os.path.join(d, "checkpoints"),
                                  max_to_keep=tc.get("checkpoints_to_keep", 3))
              for d in sweep.dirs]
  writers = []
  try:
    # Resume from the newest step every variant saved (a sweep stopped while saving has
    # some variants one checkpoint ahead; they go back to the common one, which they keep
    # unless checkpoints_to_keep = 1: then the sweep starts over).
    shared = set.intersection(*(set(m.all_steps()) for m in managers))
    common = max(shared) if shared else None
    with phases("checkpoint"):
      restored = [m.restore_latest(s, step=common) if common is not None else s
                  for m, s in zip(managers, initial)]
    start_step = int(restored[0]["step"])
    state = train.replicate(mesh, _stack(restored))
    for c, d in zip(sweep.configs, sweep.dirs):
      writers.append(MetricWriter(d, enabled=is_main, resume_step=start_step))
      if is_main:
        with open(os.path.join(d, "config.json"), "w") as f:
          f.write(c.to_json_best_effort(indent=2))
    if start_step:
      logging.info("Resumed the sweep from step %d", start_step)
    return _loop(config, sweep, dataset, mesh, replicated, state, start_step, total_steps,
                 steps_per_epoch, step_fn, build, values, data_keys, step_keys, eval_keys,
                 train_data, test_data, managers, writers, phases)
  finally:
    for m in managers:
      m.close()
    for w in writers:
      w.close()


def _loop(config, sweep, dataset, mesh, replicated, state, start_step, total_steps,
          steps_per_epoch, step_fn, build, values, data_keys, step_keys, eval_keys,
          train_data, test_data, managers, writers, phases) -> list[dict]:
  tc = config.train
  num_variants = len(sweep.values)
  num_train = dataset.train["y"].shape[0]
  eval_batch = tc.get("eval_batch_size", 500)
  eval_steps = {False: make_sweep_eval(build, eval_batch=eval_batch),
                True: make_sweep_eval(build, eval_batch=eval_batch, final=True)}
  concrete_model = lambda i: models.make(sweep.configs[i], dataset.train["y"].shape[1:],
                                        dataset.value_range)
  model0 = concrete_model(0)
  split_fn = None
  if model0.split_metrics is not None:
    split_fn = jax.jit(jax.vmap(lambda p, value, key: build(value)[0].split_metrics(
        p, test_data["y"], jax.random.fold_in(jax.random.wrap_key_data(key), 1))))
  permutations = jax.jit(jax.vmap(data_lib.epoch_permutation, in_axes=(0, None, None)),
                         static_argnums=2, out_shardings=replicated)
  labels = dataset.train["label"]
  probe = (model0.encode is not None and tc.get("linear_probe", True)
           and len(np.unique(labels)) > 1)
  if probe:
    max_train = tc.get("linear_probe_examples", 0) or num_train
    num_classes = int(max(labels.max(), dataset.test["label"].max())) + 1
    probe_data = train.replicate(mesh, {
        "train_y": dataset.train["y"][:max_train], "train_labels": labels[:max_train],
        "test_y": dataset.test["y"], "test_labels": dataset.test["label"]})
    l2 = tc.get("linear_probe_l2", 1e-3)

    def ridge(p, value):
      model = build(value)[0]
      return evaluation.ridge_classifier_accuracy(
          model.encode(p, probe_data["train_y"]), probe_data["train_labels"],
          model.encode(p, probe_data["test_y"]), probe_data["test_labels"],
          num_classes=num_classes, l2=l2)

    ridge_probe = jax.jit(jax.vmap(ridge))

  def run_eval(step, *, final=False) -> list[dict]:
    with phases("evaluation"):
      totals, count = evaluation.evaluate_sums(eval_steps[final], (state["params"], values),
                                               test_data, eval_keys, eval_batch=eval_batch)
      per_variant = [{k: float(v[i]) / float(count[i]) for k, v in totals.items()}
                     for i in range(num_variants)]
      if split_fn is not None:
        split = jax.device_get(split_fn(state["params"], values, eval_keys))
        for i, metrics in enumerate(per_variant):
          metrics.update({k: _host_list(v[i]) for k, v in split.items()})
    if probe:
      with phases("probe"):
        accuracy = jax.device_get(ridge_probe(state["params"], values))
        for i, metrics in enumerate(per_variant):
          metrics["probe_accuracy"] = float(accuracy[i])
          if final:
            metrics["probe_accuracy_logistic"] = evaluation.logistic_probe(
                concrete_model(i), _slice(state["params"], i), probe_data["train_y"], labels[:max_train],
                probe_data["test_y"], dataset.test["label"],
                max_iter=tc.get("linear_probe_max_iter", 1000))
    for writer, metrics in zip(writers, per_variant):
      writer.write(step, "test", metrics)
    return per_variant

  def intact() -> str:
    saved = managers[0].latest_step()
    last = "no checkpoint was saved yet" if saved is None else f"the last checkpoint (step {saved})"
    return f"{last} and every variant's metrics.jsonl are intact"

  guards = [train.NonFiniteGuard(skip=train.skips_nonfinite(config),
                                 max_consecutive=tc.get("max_consecutive_nonfinite", 10),
                                 total=int((w.last.get("train") or {}).get("nonfinite_steps", 0)),
                                 intact=intact) for w in writers]

  def check(metrics, step) -> list[dict]:
    host = jax.device_get(metrics)
    out = []
    for i, guard in enumerate(guards):
      try:
        out.append(guard.check_one({k: v[i] for k, v in host.items()}, step))
      except train.TrainingError as e:
        raise train.TrainingError(f"variant {variant_label(i)}: {e}") from None
    return out

  def variant_label(i):
    return variant_name(sweep.key, sweep.values[i])

  def save(step):
    with phases("checkpoint"):
      for i, manager in enumerate(managers):
        manager.save(step, _slice(state, i))

  last_eval: list[dict] = []
  perms, perm_epoch, pending = None, -1, None
  clock = {"steps": 0, "seconds": 0.0, "mark": time.perf_counter()}

  def pause_clock():
    jax.block_until_ready(state)
    now = time.perf_counter()
    clock["seconds"] += now - clock["mark"]
    phases.add("train", now - clock["mark"])

  with train.StopRequest() as stop:
    step = start_step
    if step == 0 and tc.get("eval_at_start", True):
      run_eval(0, final=total_steps == 0)
    first = True
    clock["mark"] = time.perf_counter()
    while step < total_steps:
      epoch, index = divmod(step, steps_per_epoch)
      if epoch != perm_epoch:
        perms, perm_epoch = permutations(data_keys, epoch, num_train), epoch
      state, metrics = step_fn(state, train_data, perms, index * tc.batch_size, step_keys,
                               values)
      if first:
        jax.block_until_ready(state)
        phases.add("compile", time.perf_counter() - clock["mark"])
        first = False
        clock["mark"] = time.perf_counter()
      else:
        clock["steps"] += 1
      if pending is not None:  # the previous step's, checked one behind (dispatch stays async)
        check(*pending)
      step += 1
      pending = (metrics, step)
      log_now = step % tc.log_every == 0 or step == total_steps
      evaluate_now = step % tc.eval_every == 0 or step == total_steps
      save_now = step % tc.checkpoint_every == 0 or step == total_steps
      if log_now or evaluate_now or save_now or stop.signal is not None:
        pause_clock()
        host = check(*pending)
        pending = None
        if log_now:
          rate = clock["steps"] * tc.batch_size / max(clock["seconds"], 1e-9)
          for i, (writer, record) in enumerate(zip(writers, host)):
            record = {k: v for k, v in record.items() if k != "finite"}
            if clock["steps"]:
              record["samples_per_s"] = rate  # each variant's; the sweep's is V times it
            if guards[i].skip:
              record["nonfinite_steps"] = guards[i].total
            writer.write(step, "train", record)
          clock.update(steps=0, seconds=0.0)
        if evaluate_now:
          last_eval = run_eval(step, final=step == total_steps)
        if save_now or stop.signal is not None:
          save(step)
        clock["mark"] = time.perf_counter()
      if stop.signal is not None:
        raise train.Interrupted(stop.signal, step, os.path.dirname(sweep.dirs[0]))
    if not last_eval:  # resumed at the end: every variant's final evaluation is written
      last_eval = [{k: v for k, v in (w.last.get("test") or {}).items()
                    if k not in ("step", "split")} for w in writers]
    if step > start_step:
      for writer in writers:
        writer.write(step, "timing", {f"{k}_s": v for k, v in phases.seconds.items()})
    logging.info("Sweep time (all %d variants): %s", num_variants, phases.summary())
  return last_eval

