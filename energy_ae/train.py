"""The generic trainer: one pure, jitted, data-parallel step for every model, the build of a
run (model, optimiser, initial state) and the program the loop runs. Knows models only
through ``energy_ae.models.make``; the loop itself is ``energy_ae.loop``, shared with sweeps.

Data parallelism is written in the pmap style with ``jax.shard_map`` over a one-axis
``data`` mesh of every device (since JAX 0.8 ``jax.pmap`` is in maintenance mode and is itself
``jit(shard_map)``): each device gathers its shard of the global batch from the data set
resident on it, computes its gradients, and ``lax.pmean`` averages gradients and metrics. On
one device the same code runs.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from energy_ae import config_checks, data as data_lib, evaluation, feeds, keys as keys_lib, loop
from energy_ae import models
from energy_ae.devices import (AXIS, check_memory, enable_compilation_cache,  # noqa: F401
                               make_mesh, maybe_initialize_distributed, replicate)
from energy_ae.loop import Interrupted, PhaseTimer, TrainingError  # noqa: F401
from energy_ae.optimizers import (LR_SCHEDULES, OPTIMIZERS, burda_schedule,  # noqa: F401
                                  make_optimizer)

# ----------------------------------------------------------------------------
# Config checks
# ----------------------------------------------------------------------------


def validate_config(config) -> None:
  """Rejects out-of-range values before any work, naming the field and the value: the keys
  every config shares (``config_checks``), the trainer's names, then the model's own keys
  (its ``validate``; the trainer knows no model's keys)."""
  config_checks.check_config(config)
  t = config.train

  def bad(field, value, why):
    raise ValueError(f"config.{field} = {value!r}: {why}")

  if t.optimizer not in OPTIMIZERS:
    bad("train.optimizer", t.optimizer, f"unknown optimiser; valid names: {', '.join(sorted(OPTIMIZERS))}")
  if t.get("lr_schedule", "constant") not in LR_SCHEDULES:
    bad("train.lr_schedule", t.lr_schedule, f"must be one of {', '.join(LR_SCHEDULES)}")
  make_optimizer(t, total_steps=1)  # optimizer_kwargs it does not take: one line, before data
  module = models.get_model_module(config.model.name)  # unknown model: listed names
  if hasattr(module, "validate"):  # the model's own keys, before any data is loaded
    module.validate(config)


# ----------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------

def run_keys(seed: int) -> jax.Array:
  """The (init, data order, step, evaluation) keys of a run: a pure function of the seed."""
  return jax.random.split(jax.random.key(seed), 4)


def init_state(model: models.Model, tx, key, example_batch) -> dict:
  params = model.init(key, example_batch)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


# ----------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def device_step(model: models.Model, tx, *, local_batch: int, binarize: str,
                data_parallel: bool, collectives: bool, rollback: bool = False,
                placement: str = "replicated"):
  """The body that ``make_train_step`` and the sweep's vmapped step (``energy_ae.sweep``)
  compile: one optimiser step on this device's shard of the global batch. Resident data
  (``placement`` replicated or sharded): ``per_device(state, data, perm, offset, key)``, the
  batch at ``offset`` of the epoch's order ``perm`` gathered inside the step
  (``feeds.gather_rows``); streamed: ``per_device(state, batch, key)``, this device's rows.

  ``finite`` in the metrics says whether the step's metrics, gradients and new state are all
  finite. With ``rollback`` (``train.on_nonfinite = 'skip'``) a step that is not leaves the
  state unchanged: a select over the whole state, which costs ~30% of a small step (the
  VAE at batch 32). Without it (``'stop'``, the default) the new state is kept whatever it
  is and the loop stops the run at that step, before anything is evaluated or saved; the
  check is then read off values the step computes anyway: the metrics, ‖g‖² (finite ‖g‖²
  bounds every gradient and, by induction, the moments of Adam and momentum, convex or
  geometric sums of them) and ‖θ‖ of the new parameters (an update that overflows them).
  """

  def positions():
    device = lax.axis_index(AXIS) if data_parallel else 0
    return device * local_batch + jnp.arange(local_batch)

  def step_on(state, batch, positions, key):
    step_key = jax.random.fold_in(key, state["step"])
    data_keys = keys_lib.per_example_keys(jax.random.fold_in(step_key, 0), positions)
    model_keys = keys_lib.per_example_keys(jax.random.fold_in(step_key, 1), positions)
    batch = data_lib.prepare_batch(batch, data_keys, binarize=binarize)
    batch["step"] = state["step"]  # the optimiser step, for schedules inside a loss (warm-up)

    # Mark the replicated parameters as varying per device, so that each device takes
    # the gradient of its own shard's loss (pmap semantics); without it shard_map
    # would psum the gradients w.r.t. the unvarying parameters by itself.
    local_params = state["params"]
    if collectives:
      local_params = lax.pcast(local_params, AXIS, to="varying")
    (_, metrics), grads = jax.value_and_grad(model.loss, has_aux=True)(
        local_params, batch, model_keys)
    if collectives:
      grads = lax.pmean(grads, AXIS)
      metrics = lax.pmean(metrics, AXIS)
    # Finite gradients can still overflow in the update (a huge learning rate, Adam's squared
    # gradients): the new parameters and optimiser state are checked too.
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    grad_norm = optax.tree.norm(grads)
    if rollback:
      finite = (_all_finite(metrics) & _all_finite(grads) & _all_finite(params)
                & _all_finite(opt_state))
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
      params, opt_state = keep(params, state["params"]), keep(opt_state, state["opt_state"])
    else:
      finite = (_all_finite(metrics) & jnp.isfinite(jnp.square(grad_norm))
                & jnp.isfinite(optax.tree.norm(params)))
    new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
    metrics = dict(metrics, grad_norm=grad_norm, finite=finite.astype(jnp.int32))
    return new_state, metrics

  if placement == "stream":
    return lambda state, batch, key: step_on(state, dict(batch), positions(), key)

  def per_device(state, data, perm, offset, key):
    where = positions()
    batch = feeds.gather_rows(data, perm, offset, where, sharded=placement == "sharded",
                              collectives=collectives, global_batch=local_batch * (
                                  lax.axis_size(AXIS) if data_parallel else 1))
    return step_on(state, batch, where, key)

  return per_device


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """Each device's share of the global batch (which the devices must divide)."""
  if global_batch % mesh.size:
    raise ValueError(f"config.train.batch_size = {global_batch} is not divisible by the "
                     f"{mesh.size} devices")
  return global_batch // mesh.size


def scan_steps(per_device, steps: int, global_batch: int, *, streamed: bool = False):
  """k = ``steps`` consecutive optimiser steps in one ``lax.scan``: of resident
  ``per_device(state, data, perm, offset, ...)`` over the batches at ``offset``,
  ``offset + global_batch``, ... of the same order; of streamed ``per_device(state, batch,
  ...)`` over the k batches stacked along axis 0. The same computation as k calls, one
  dispatch; metrics stacked, shape (k, ...)."""
  if steps == 1:
    return per_device
  if streamed:
    return lambda state, batches, *rest: lax.scan(
        lambda s, batch: per_device(s, batch, *rest), state, batches)

  def body(state, data, perm, offset, *rest):
    def one(state, i):
      return per_device(state, data, perm, offset + i * global_batch, *rest)

    return lax.scan(one, state, jnp.arange(steps))

  return body


def make_train_step(model: models.Model, tx, mesh: Mesh, *, global_batch: int, binarize: str,
                    data_parallel: bool = True, steps: int = 1, rollback: bool = False,
                    placement: str = "replicated"):
  """``step(state, data, perm, offset, key) -> (state, metrics)`` (resident data) or
  ``step(state, batch, key)`` (``placement = 'stream'``), jitted, state donated.

  Resident: ``data`` is the training split on the devices (``{"y": ...}``, with ``"x"`` for a
  conditional model: every array is gathered by the same indices), replicated or sharded by
  rows (``feeds``); ``perm`` the epoch's example order and ``offset`` the position of this
  global batch in it: each device gathers its own ``global_batch / num_devices`` examples
  inside the compiled step, so no batch is copied from the host. Streamed: ``batch`` is the
  global batch, sharded over the devices. The step's randomness is ``fold_in(key, step)``, one
  key per example by its global batch position. A step whose loss, gradients, new parameters
  or optimiser state are not finite reports ``finite = 0`` and, with ``rollback``, leaves the
  state unchanged (``device_step``). ``data_parallel=False`` compiles the same step as a
  plain ``jit`` on one device, without ``shard_map`` (the benchmark's baseline).

  ``steps`` = k > 1 runs k consecutive optimiser steps in one compiled call (``scan_steps``),
  the same computation as k calls, with one dispatch: each metric comes back stacked, (k,).
  """
  num_devices = mesh.size
  local_batch = local_batch_size(global_batch, mesh)
  if not data_parallel and num_devices != 1:
    raise ValueError("a step without data parallelism runs on a mesh of one device")

  # With one device the mean over devices is the identity, but XLA still emits the
  # all-reduce (a copy of every gradient and a fusion barrier, ~15% of a small step):
  # the collectives are left out there, with shard_map's replication checks.
  collectives = data_parallel and num_devices > 1
  per_device = device_step(model, tx, local_batch=local_batch, binarize=binarize,
                           data_parallel=data_parallel, collectives=collectives,
                           rollback=rollback, placement=placement)

  body = scan_steps(per_device, steps, global_batch, streamed=placement == "stream")
  if not data_parallel:
    return jax.jit(body, donate_argnums=0)
  specs = (P(), *feeds.data_specs(placement, steps=steps), P())
  sharded = jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=(P(), P()),
                          check_vma=collectives)
  return jax.jit(sharded, donate_argnums=0)


def skips_nonfinite(config) -> bool:
  """``train.on_nonfinite = 'skip'``: a non-finite step is rolled back and the run goes on."""
  return config.train.get("on_nonfinite", "stop") == "skip"


# ----------------------------------------------------------------------------
# Build: model, optimiser and initial state, for a run, a restore and a sweep
# ----------------------------------------------------------------------------


def num_steps(train_config, dataset: data_lib.Dataset) -> int:
  """The optimiser steps of a run: num_epochs full batches per epoch."""
  steps_per_epoch = data_lib.num_batches(dataset.train["y"].shape[0], train_config.batch_size)
  return int(train_config.num_epochs * steps_per_epoch)


class Built(NamedTuple):
  """A run's model, optimiser and initial train state (on the host)."""

  model: models.Model
  tx: optax.GradientTransformation
  state: dict
  total_steps: int


def example_batch(dataset: data_lib.Dataset) -> dict:
  """One training example as a model's batch: y and, for a conditional model E(x, y, z), x."""
  return {k: jnp.asarray(v[:1]) for k, v in data_lib.model_inputs(dataset.train).items()}


def build(config, dataset: data_lib.Dataset, key: jax.Array | None = None) -> Built:
  """The model, optimiser and initial state of ``config`` on ``dataset`` (``key``: the run's
  init key by default), the one build of a run, a restore and each variant of a sweep. Fails
  with one line, before anything is allocated, when the train state cannot fit in memory."""
  model = models.make(config, dataset.train["y"].shape[1:], dataset.value_range)
  total_steps = num_steps(config.train, dataset)
  tx = make_optimizer(config.train, total_steps)  # a schedule's step count is in its state
  example = example_batch(dataset)
  initialize = functools.partial(init_state, model, tx)
  check_memory(initialize, example, config)
  key = run_keys(config.seed)[0] if key is None else key
  return Built(model, tx, jax.device_get(initialize(key, example)), total_steps)


class StepSetup(NamedTuple):
  """Everything a train step needs, built one way for the benchmark and the tests."""

  model: models.Model
  tx: optax.GradientTransformation
  dataset: data_lib.Dataset
  mesh: Mesh
  train_data: dict  # the training split's model inputs on the devices
  state: dict  # the initial train state, replicated
  step: Any  # make_train_step(...)
  total_steps: int


def setup_step(config, mesh: Mesh, *, dataset: data_lib.Dataset | None = None,
               batch_size: int | None = None, init_key: jax.Array | None = None,
               data_parallel: bool = True, steps: int = 1,
               placement: str = "replicated") -> StepSetup:
  """The model, optimiser, resident data (``placement``: replicated or sharded), initial
  state and jitted step of ``config`` on ``mesh`` (``dataset``: already loaded;
  ``batch_size``: the config's by default; ``init_key``: the run's init key by default)."""
  dataset = dataset if dataset is not None else data_lib.load(config.data)
  built = build(config, dataset, init_key)
  step = make_train_step(built.model, built.tx, mesh,
                         global_batch=batch_size or config.train.batch_size,
                         binarize=config.data.get("binarize", "none"),
                         data_parallel=data_parallel, steps=steps,
                         rollback=skips_nonfinite(config), placement=placement)
  return StepSetup(built.model, built.tx, dataset, mesh,
                   feeds.place_split(mesh, data_lib.model_inputs(dataset.train), placement),
                   replicate(mesh, built.state), step, built.total_steps)


def restore_run(config, workdir: str) -> tuple[models.Model, dict, dict, data_lib.Dataset]:
  """(model, initial state, latest state, dataset) of a run in ``workdir``, on the host's
  default device; the initial state is the one the run started from (same seed)."""
  from energy_ae import run_dir

  dataset = data_lib.load(config.data)
  built = build(config, dataset)
  manager = run_dir.checkpoint_manager(workdir)
  try:
    latest = manager.restore_latest(built.state)
  finally:
    manager.close()
  return built.model, built.state, latest, dataset


# ----------------------------------------------------------------------------
# The program the loop runs
# ----------------------------------------------------------------------------


class Shared(NamedTuple):
  """What a run and a sweep share before their steps: data, mesh and step counts."""

  dataset: data_lib.Dataset
  mesh: Mesh
  steps_per_epoch: int
  total_steps: int
  test_data: dict  # the test split's model inputs, replicated
  num_train: int


def prepare(config, phases: PhaseTimer, what: str) -> Shared:
  """Loads the data, makes the mesh and counts the steps; logs what will be trained."""
  tc = config.train
  with phases("data"):
    dataset = data_lib.load(config.data)
  mesh = make_mesh()
  num_train = dataset.train["y"].shape[0]
  if tc.batch_size > num_train:
    raise ValueError(f"config.train.batch_size = {tc.batch_size} exceeds the {num_train} "
                     f"training examples of {dataset.name!r}")
  steps_per_epoch = data_lib.num_batches(num_train, tc.batch_size)
  total_steps = num_steps(tc, dataset)
  logging.info("Training %s on %s: %d steps (%d per epoch) on %d device(s) [%s], process %d of "
               "%d%s", config.model.name, dataset.name, total_steps, steps_per_epoch, mesh.size,
               jax.devices()[0].platform, jax.process_index(), jax.process_count(), what)
  with phases("data"):
    test_data = replicate(mesh, data_lib.model_inputs(dataset.test))
  return Shared(dataset, mesh, steps_per_epoch, total_steps, test_data, num_train)


def key_data(key: jax.Array) -> np.ndarray:
  return np.asarray(jax.random.key_data(key))


def program(config, workdir: str, shared: Shared) -> loop.Program:
  """The loop's program of one run: the plain compiled step (no vmap), the run's keys."""
  tc, mesh = config.train, shared.mesh
  init_key, data_key, step_key, eval_key = run_keys(config.seed)
  built = build(config, shared.dataset, init_key)
  feed = feeds.make(config, mesh, shared.dataset, data_key, stacked=False,
                    steps_per_epoch=shared.steps_per_epoch, total_steps=shared.total_steps)
  make = functools.partial(make_train_step, built.model, built.tx, mesh,
                           global_batch=tc.batch_size, placement=feed.placement,
                           binarize=config.data.get("binarize", "none"),
                           rollback=skips_nonfinite(config))
  one, k = make(), tc.get("steps_per_dispatch", 1)
  multi = make(steps=k) if k > 1 else None
  evaluate = evaluation.make_evaluator(
      lambda _: built.model, [built.model], values=None, eval_keys=key_data(eval_key),
      test_data=shared.test_data, eval_batch=tc.get("eval_batch_size", 500),
      probe=evaluation.probe_data(shared.dataset, tc, functools.partial(replicate, mesh)),
      stacked=False)
  return loop.Program(
      variants=[loop.Variant("", config, workdir)], stacked=False, initial=[built.state],
      place=lambda states: replicate(mesh, states[0]),
      step=lambda state, *args: one(state, *args, step_key),
      multi_step=(lambda state, *args: multi(state, *args, step_key)) if multi else None,
      steps_per_dispatch=k, feed=feed, evaluate=evaluate, total_steps=shared.total_steps,
      steps_per_epoch=shared.steps_per_epoch, train=tc, root=workdir)


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False
                       ) -> dict[str, float]:
  """Trains ``config.model.name`` on ``config.data.name``; returns the last test metrics.

  Writes ``workdir/metrics.jsonl`` (with a ``timing`` record of the wall time per phase at
  the end), TensorBoard events, ``config.json``, ``status.json`` and Orbax checkpoints; a
  workdir that holds a checkpoint resumes from it (``energy_ae.loop``).
  """
  validate_config(config)
  if config.get("sweep", {}).get("key", ""):
    raise ValueError("config.sweep.key is set: train the sweep with "
                     "energy_ae.sweep.train_and_evaluate (experiments.run does)")
  phases = PhaseTimer()
  shared = prepare(config, phases, "")
  with phases("data"):
    prog = program(config, workdir, shared)
  return loop.run(prog, phases, allow_config_change=allow_config_change)[0]
