"""Generic trainer: one pure, jitted, data-parallel step for every model; the loop,
checkpoints and metrics. Knows models only through ``energy_ae.models.make``.

Data parallelism is written in the pmap style with ``jax.shard_map`` over a
one-axis ``data`` mesh of every device (since JAX 0.8 ``jax.pmap`` is in
maintenance mode and is itself ``jit(shard_map)``): each device gathers its shard
of the global batch from the data set resident on it, computes its gradients, and
``lax.pmean`` averages gradients and metrics. On one device the same code runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from energy_ae import checkpoints, config_checks, data as data_lib, evaluation, keys as keys_lib
from energy_ae import models
from energy_ae.metrics_io import MetricWriter

AXIS = "data"
# What a step with a non-finite loss, gradient or parameter does: stop the run, or skip
# the step (it is never applied) and count it in the train metrics as `nonfinite_steps`.
ON_NONFINITE = ("stop", "skip")


class TrainingError(RuntimeError):
  """Training cannot go on (non-finite values, bad checkpoint); the message says why."""


class Interrupted(Exception):
  """SIGINT / SIGTERM stopped the run after saving a checkpoint; ``signum`` says which."""

  def __init__(self, signum: int, step: int, workdir: str):
    name = signal.Signals(signum).name
    super().__init__(f"interrupted by {name} at step {step}; the checkpoint of step {step} is "
                     f"saved in {workdir}: run the same command again to resume")
    self.signum, self.step = signum, step


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
# Mesh and multi-host
# ----------------------------------------------------------------------------


def maybe_initialize_distributed(config) -> None:
  """jax.distributed.initialize() when the config or the environment asks for it.

  Must run before any device is touched. ``config.distributed`` holds
  ``coordinator_address``, ``num_processes`` and ``process_id`` (empty: from the
  environment / cluster auto-detection).
  """
  dist = config.get("distributed", None)
  wanted = (dist is not None and dist.get("enabled", False)) or "JAX_COORDINATOR_ADDRESS" in os.environ
  if not wanted or jax.distributed.is_initialized():
    return
  kwargs = {}
  if dist is not None:
    for key in ("coordinator_address", "num_processes", "process_id"):
      value = dist.get(key, None)
      if value not in (None, "", -1):
        kwargs[key] = value
  jax.distributed.initialize(**kwargs)


def enable_compilation_cache(config) -> str | None:
  """JAX's persistent compilation cache in ``config.compilation_cache_dir`` ('' for none):
  a repeated run loads its compiled programs instead of compiling them again. Every program
  is cached, however fast it compiled (``compilation_cache_min_seconds``, default 0)."""
  directory = os.path.expanduser(config.get("compilation_cache_dir", "") or "")
  if not directory or jax.config.jax_compilation_cache_dir:  # off, or set by the environment
    return jax.config.jax_compilation_cache_dir
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(config.get("compilation_cache_min_seconds", 0.0)))
  # Bounded (least recently used entries go first); a run's programs take a few MB.
  jax.config.update("jax_compilation_cache_max_size",
                    int(config.get("compilation_cache_max_gb", 1.0) * 1e9))
  return directory


def make_mesh(devices=None) -> Mesh:
  """A one-axis ``data`` mesh over ``devices`` (default: every device of every process)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (AXIS,))


def replicate(mesh: Mesh, tree):
  """Places host arrays on every device of the mesh (every process passes the same)."""
  sharding = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


# ----------------------------------------------------------------------------
# Optimiser and state
# ----------------------------------------------------------------------------

OPTIMIZERS = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
    "momentum": lambda lr, **kwargs: optax.sgd(lr, **{"momentum": 0.9, **kwargs}),
}


# The learning rate over the run's T steps: constant; cosine, η·(0.01 + 0.99·(1 + cos πt/T)/2);
# or burda, Burda et al. (2015)'s stages: 3^i epochs at η·10^(−i/7), i = 0, 1, ... (their
# 8 stages are 3,280 epochs; a shorter run stops inside a stage).
LR_SCHEDULES = ("constant", "cosine", "burda")


def burda_schedule(learning_rate: float, steps_per_epoch: int) -> optax.Schedule:
  """η_t = η·10^(−i/7) during stage i, which lasts 3^i epochs (Burda et al. 2015, §5)."""
  boundaries, start = {}, 0
  for i in range(1, 40):
    start += 3 ** (i - 1) * steps_per_epoch
    if start >= 2**31:  # past any run (and the int32 step count)
      break
    boundaries[start] = 10 ** (-1 / 7)  # each boundary multiplies the rate by this
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def make_optimizer(train_config, total_steps: int | None = None) -> optax.GradientTransformation:
  """The optimiser of ``train_config`` (``optimizer_kwargs`` passed to it, e.g. Adam's
  ``eps``); a ``cosine`` or ``burda`` ``lr_schedule`` needs the run's ``total_steps``."""
  lr = train_config.learning_rate
  schedule = train_config.get("lr_schedule", "constant")
  if schedule != "constant" and not total_steps:
    raise ValueError(f"train.lr_schedule = {schedule!r} needs the run's number of steps")
  if schedule == "cosine":
    lr = optax.cosine_decay_schedule(lr, total_steps, alpha=0.01)
  elif schedule == "burda":
    lr = burda_schedule(lr, max(1, round(total_steps / train_config.num_epochs)))
  kwargs = dict(train_config.get("optimizer_kwargs", None) or {})
  try:
    tx = OPTIMIZERS[train_config.optimizer](lr, **kwargs)
  except TypeError as e:
    raise ValueError(f"config.train.optimizer_kwargs = {kwargs!r}: {train_config.optimizer!r} "
                     f"does not take them ({e})") from None
  clip = train_config.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx


def run_keys(seed: int) -> jax.Array:
  """The (init, data order, step, evaluation) keys of a run: a pure function of the seed."""
  return jax.random.split(jax.random.key(seed), 4)


def init_state(model: models.Model, tx, key, example_batch) -> dict:
  params = model.init(key, example_batch)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}


def available_memory_bytes(device=None) -> int | None:
  """What the device can still allocate: the accelerator's limit, or the host's available
  memory for CPU devices (None when unknown)."""
  device = device or jax.local_devices()[0]
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # not every backend implements it
    pass
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def _gigabytes(num_bytes: float) -> str:
  return f"{num_bytes / 1e9:.3g} GB"


def check_memory(model: models.Model, tx, example_batch, config) -> None:
  """Fails at once, naming the size and what asked for it, when the train state cannot fit.

  Shapes come from ``jax.eval_shape`` (nothing is allocated); a step holds the parameters,
  the optimiser state, the gradients and the update. Activations are not counted: this is a
  lower bound, so a run refused here cannot fit (XLA would otherwise hang or abort).
  """
  shapes = jax.eval_shape(functools.partial(init_state, model, tx), jax.random.key(0),
                          example_batch)
  nbytes = lambda tree: sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))
  params_bytes = nbytes(shapes["params"])
  needed = nbytes(shapes) + 2 * params_bytes
  available = available_memory_bytes()
  if available is None or needed <= available:
    return
  leaves = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
  path, largest = max(leaves, key=lambda kv: math.prod(kv[1].shape))
  name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
  dims = set(largest.shape)
  culprits = [f"model.{k} = {v}" for k, v in config.model.items()
              if isinstance(v, int) and not isinstance(v, bool) and v in dims and v > 1]
  raise ValueError(
      f"the model does not fit in memory: its parameters, gradients and optimiser state need "
      f"at least {_gigabytes(needed)} but {_gigabytes(available)} are available (largest "
      f"array: {name} {tuple(largest.shape)} {largest.dtype}, {_gigabytes(nbytes(largest))})"
      + (f"; set by {', '.join(culprits)}" if culprits else ""))


# ----------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def device_step(model: models.Model, tx, *, local_batch: int, binarize: str,
                data_parallel: bool, collectives: bool, rollback: bool = False):
  """``per_device(state, data, perm, offset, key) -> (state, metrics)``: one optimiser step on
  this device's shard of the global batch at ``offset`` of ``perm`` (see make_train_step), the
  body that ``make_train_step`` and the sweep's vmapped step (``energy_ae.sweep``) compile.

  ``finite`` in the metrics says whether the step's metrics, gradients and new state are all
  finite. With ``rollback`` (``train.on_nonfinite = 'skip'``) a step that is not leaves the
  state unchanged: a select over the whole state, which costs ~30% of a small step (the
  VAE at batch 32). Without it (``'stop'``, the default) the new state is kept whatever it
  is and the loop stops the run at that step, before anything is evaluated or saved; the
  check is then read off values the step computes anyway: the metrics, ‖g‖² (finite ‖g‖²
  bounds every gradient and, by induction, the moments of Adam and momentum, convex or
  geometric sums of them) and ‖θ‖ of the new parameters (an update that overflows them).
  """

  def per_device(state, data, perm, offset, key):
    device = lax.axis_index(AXIS) if data_parallel else 0
    positions = device * local_batch + jnp.arange(local_batch)
    batch = jax.tree.map(lambda x: x[perm[offset + positions]], data)
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

  return per_device


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """Each device's share of the global batch (which the devices must divide)."""
  if global_batch % mesh.size:
    raise ValueError(f"config.train.batch_size = {global_batch} is not divisible by the "
                     f"{mesh.size} devices")
  return global_batch // mesh.size


def make_train_step(model: models.Model, tx, mesh: Mesh, *, global_batch: int, binarize: str,
                    data_parallel: bool = True, steps: int = 1, rollback: bool = False):
  """``step(state, data, perm, offset, key) -> (state, metrics)``, jitted, state donated.

  ``data`` is the training split resident on every device (``{"y": ...}``, with ``"x"`` for a
  conditional model: every array is gathered by the same indices), ``perm`` the epoch's
  example order and ``offset`` the position of this global batch in it: each
  device gathers its own ``global_batch / num_devices`` examples inside the
  compiled step, so no batch is copied from the host. The step's randomness is
  ``fold_in(key, step)``, one key per example by its global batch position.
  A step whose loss, gradients, new parameters or optimiser state are not finite reports
  ``finite = 0`` and, with ``rollback``, leaves the state unchanged (``device_step``).
  ``data_parallel=False`` compiles the same step
  as a plain ``jit`` on one device, without ``shard_map`` (the benchmark's baseline).

  ``steps`` = k > 1 runs k consecutive optimiser steps in one compiled call (a ``lax.scan``
  over the batches at ``offset``, ``offset + global_batch``, ... of the same ``perm``), the
  same computation as k calls, with one dispatch: each metric comes back stacked, shape (k,).
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
                           rollback=rollback)

  body = per_device
  if steps > 1:
    def body(state, data, perm, offset, key):
      def one(state, i):
        return per_device(state, data, perm, offset + i * global_batch, key)

      return lax.scan(one, state, jnp.arange(steps))

  if not data_parallel:
    return jax.jit(body, donate_argnums=0)
  sharded = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P(), P(), P()),
                          out_specs=(P(), P()), check_vma=collectives)
  return jax.jit(sharded, donate_argnums=0)


def skips_nonfinite(config) -> bool:
  """``train.on_nonfinite = 'skip'``: a non-finite step is rolled back and the run goes on."""
  return config.train.get("on_nonfinite", "stop") == "skip"


class StepSetup(NamedTuple):
  """Everything a train step needs, built one way for the loop, the benchmark and the tests."""

  model: models.Model
  tx: optax.GradientTransformation
  dataset: data_lib.Dataset
  mesh: Mesh
  train_data: dict  # the training split's model inputs, replicated on every device
  state: dict  # the initial train state, replicated
  step: Any  # make_train_step(...)
  total_steps: int


def setup_step(config, mesh: Mesh, *, dataset: data_lib.Dataset | None = None,
               batch_size: int | None = None, init_key: jax.Array | None = None,
               data_parallel: bool = True, steps: int = 1) -> StepSetup:
  """The model, optimiser, replicated data, initial state and jitted step of ``config`` on
  ``mesh`` (``dataset``: already loaded; ``batch_size``: the config's by default;
  ``init_key``: the run's init key by default)."""
  dataset = dataset if dataset is not None else data_lib.load(config.data)
  model = models.make(config, dataset.train["y"].shape[1:], dataset.value_range)
  total_steps = num_steps(config.train, dataset)
  tx = make_optimizer(config.train, total_steps)
  inputs = data_lib.model_inputs(dataset.train)
  # A model's batch: y and, for a conditional model E(x, y, z), the input x beside it; the
  # step gathers every array of it by the same example indices.
  check_memory(model, tx, {k: v[:1] for k, v in inputs.items()}, config)
  train_data = replicate(mesh, inputs)
  key = run_keys(config.seed)[0] if init_key is None else init_key
  state = replicate(mesh, jax.device_get(
      init_state(model, tx, key, {k: jnp.asarray(v[:1]) for k, v in inputs.items()})))
  step = make_train_step(model, tx, mesh, global_batch=batch_size or config.train.batch_size,
                         binarize=config.data.get("binarize", "none"),
                         data_parallel=data_parallel, steps=steps,
                         rollback=skips_nonfinite(config))
  return StepSetup(model, tx, dataset, mesh, train_data, state, step, total_steps)


def num_steps(train_config, dataset: data_lib.Dataset) -> int:
  """The optimiser steps of a run: num_epochs full batches per epoch."""
  steps_per_epoch = data_lib.num_batches(dataset.train["y"].shape[0], train_config.batch_size)
  return int(train_config.num_epochs * steps_per_epoch)


def restore_run(config, workdir: str) -> tuple[models.Model, dict, dict, data_lib.Dataset]:
  """(model, initial state, latest state, dataset) of a run in ``workdir``, on the host's
  default device; the initial state is the one the run started from (same seed)."""
  dataset = data_lib.load(config.data)
  model = models.make(config, dataset.train["y"].shape[1:], dataset.value_range)
  # The same optimiser as the run's (a schedule's step count is part of its state).
  tx = make_optimizer(config.train, num_steps(config.train, dataset))
  example = {k: jnp.asarray(v[:1]) for k, v in data_lib.model_inputs(dataset.train).items()}
  initial = init_state(model, tx, run_keys(config.seed)[0], example)
  manager = checkpoints.Manager(os.path.join(workdir, "checkpoints"))
  try:
    latest = manager.restore_latest(initial)
  finally:
    manager.close()
  return model, initial, latest, dataset


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------


class StopRequest:
  """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and returns."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handler, no graceful stop
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _nonfinite_names(metrics: Mapping[str, Any]) -> list[str]:
  return [k for k, v in metrics.items() if k != "finite" and not np.all(np.isfinite(v))]


class NonFiniteGuard:
  """Decides what a step reported as non-finite does: stop the run (``on_nonfinite =
  'stop'``) or skip it, counting, until ``max_consecutive`` skipped steps come in a row."""

  def __init__(self, *, skip: bool, max_consecutive: int, total: int, intact: Callable[[], str]):
    self.skip, self.max_consecutive, self.intact = skip, max_consecutive, intact
    self.total, self.consecutive = total, 0

  def __call__(self, step_metrics, step: int) -> dict:
    """The metrics of the step(s) ending at ``step`` on the host (stacked, shape (k,), for k
    steps of one dispatch: checked one by one); raises TrainingError if the run must stop.
    Returns the last step's metrics."""
    host = jax.device_get(step_metrics)
    if np.ndim(host["finite"]):
      k = len(host["finite"])
      for j in range(k):
        last = self.check_one({name: v[j] for name, v in host.items()}, step - k + 1 + j)
      return last
    return self.check_one(host, step)

  def check_one(self, host: dict, step: int) -> dict:
    if host["finite"]:
      self.consecutive = 0
      return host
    self.total += 1
    self.consecutive += 1
    names = _nonfinite_names(host) or ["the updated parameters or optimiser state (an overflow "
                                       "in the update)"]
    what = (f"non-finite values at step {step}: {', '.join(names)} "
            f"({', '.join(f'{k}={host[k]}' for k in names if k in host)})")
    if self.skip and self.consecutive < self.max_consecutive:
      logging.warning("%s; step skipped (%d skipped in all)", what, self.total)
      return host
    if self.skip:
      what += (f", {self.max_consecutive} skipped steps in a row "
               f"(train.max_consecutive_nonfinite = {self.max_consecutive})")
      raise TrainingError(f"{what}; the state was not updated; {self.intact()}")
    raise TrainingError(f"{what}; the run stopped there, before that state was evaluated or "
                        f"saved; {self.intact()}")


class PhaseTimer:
  """Wall time per phase of a run (data, compile, train, evaluation, probe, checkpoint)."""

  def __init__(self):
    self.seconds: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, phase: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.add(phase, time.perf_counter() - start)

  def add(self, phase: str, seconds: float) -> None:
    self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

  def summary(self) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains ``config.model.name`` on ``config.data.name``; returns the last test metrics.

  Writes ``workdir/metrics.jsonl`` (with a ``timing`` record of the wall time per phase at
  the end), TensorBoard events, ``config.json`` and Orbax checkpoints; a workdir that holds
  a checkpoint resumes from it.
  """
  validate_config(config)
  if config.get("sweep", {}).get("key", ""):
    raise ValueError("config.sweep.key is set: train the sweep with "
                     "energy_ae.sweep.train_and_evaluate (experiments.run does)")
  tc = config.train
  is_main = jax.process_index() == 0
  phases = PhaseTimer()
  with phases("data"):
    dataset = data_lib.load(config.data)
  mesh = make_mesh()
  num_train = dataset.train["y"].shape[0]
  if tc.batch_size > num_train:
    raise ValueError(f"config.train.batch_size = {tc.batch_size} exceeds the {num_train} "
                     f"training examples of {dataset.name!r}")
  steps_per_epoch = data_lib.num_batches(num_train, tc.batch_size)
  total_steps = num_steps(tc, dataset)
  logging.info("Training %s on %s: %d steps (%d per epoch) on %d device(s) [%s], process %d of %d",
               config.model.name, dataset.name, total_steps, steps_per_epoch, mesh.size,
               jax.devices()[0].platform, jax.process_index(), jax.process_count())

  init_key, data_key, step_key, eval_key = run_keys(config.seed)
  with phases("data"):
    setup = setup_step(config, mesh, dataset=dataset, init_key=init_key)
    test_data = replicate(mesh, data_lib.model_inputs(dataset.test))
  model, tx, train_data, state, train_step = (setup.model, setup.tx, setup.train_data,
                                              setup.state, setup.step)
  replicated = NamedSharding(mesh, P())

  manager = checkpoints.Manager(os.path.join(workdir, "checkpoints"),
                                max_to_keep=tc.get("checkpoints_to_keep", 3))
  try:
    with phases("checkpoint"):
      state = manager.restore_latest(state)
  except checkpoints.CheckpointError:
    manager.close()  # else orbax's background threads die noisily at exit
    raise
  start_step = int(state["step"])
  writer = MetricWriter(workdir, enabled=is_main, resume_step=start_step)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  if start_step:
    logging.info("Resumed from the checkpoint at step %d in %s", start_step, workdir)

  # k steps per dispatch from every multiple of k where k consecutive steps stay inside one
  # epoch and the run (single steps elsewhere), so that logs, evaluations and checkpoints at
  # multiples of k fall where they would with k = 1; signals are handled between dispatches.
  k = tc.get("steps_per_dispatch", 1)
  multi_step = (make_train_step(model, tx, mesh, global_batch=tc.batch_size,
                                binarize=config.data.get("binarize", "none"), steps=k,
                                rollback=skips_nonfinite(config))
                if k > 1 else None)
  eval_batch = tc.get("eval_batch_size", 500)
  eval_step = evaluation.make_eval_step(model, eval_batch=eval_batch)
  # A model may evaluate more expensively once at the end (a VAE's k = 5,000 importance
  # samples) and report metrics of the whole split (active units, mutual information).
  final_model = (model._replace(evaluate=model.evaluate_final)
                 if model.evaluate_final is not None else None)
  split_metrics = jax.jit(model.split_metrics) if model.split_metrics is not None else None
  permutation = jax.jit(data_lib.epoch_permutation, static_argnums=2, out_shardings=replicated)

  # The linear probe (models with an encoder, data with labels): the ridge classifier on the
  # device at every evaluation, scikit-learn's logistic regression once at the end.
  labels = dataset.train["label"]
  probe = (model.encode is not None and tc.get("linear_probe", True)
           and len(np.unique(labels)) > 1)
  if probe:
    max_train = tc.get("linear_probe_examples", 0) or num_train
    num_classes = int(max(labels.max(), dataset.test["label"].max())) + 1
    probe_data = replicate(mesh, {
        "train_y": dataset.train["y"][:max_train], "train_labels": labels[:max_train],
        "test_y": dataset.test["y"], "test_labels": dataset.test["label"]})
    ridge_probe = evaluation.make_ridge_probe(model, num_classes=num_classes,
                                              l2=tc.get("linear_probe_l2", 1e-3))

  def run_eval(step, *, final=False):
    with phases("evaluation"):
      step_fn = eval_step
      if final and final_model is not None:
        step_fn = evaluation.make_eval_step(final_model, eval_batch=eval_batch)
      metrics = evaluation.evaluate(step_fn, state["params"], test_data, eval_key,
                                    eval_batch=eval_batch)
      if split_metrics is not None:
        values = jax.device_get(split_metrics(state["params"], test_data["y"],
                                              jax.random.fold_in(eval_key, 1)))
        metrics.update({k: float(v) if np.ndim(v) == 0 else np.asarray(v, float).tolist()
                        for k, v in values.items()})
    if probe:
      with phases("probe"):
        metrics["probe_accuracy"] = float(ridge_probe(
            state["params"], probe_data["train_y"], probe_data["train_labels"],
            probe_data["test_y"], probe_data["test_labels"]))
        if final:
          metrics["probe_accuracy_logistic"] = evaluation.logistic_probe(
              model, state["params"], probe_data["train_y"], labels[:max_train],
              probe_data["test_y"], dataset.test["label"],
              max_iter=tc.get("linear_probe_max_iter", 1000))
    writer.write(step, "test", metrics)
    return metrics

  last_eval: dict[str, float] = {}
  perm, perm_epoch = None, -1
  pending = None  # the previous step's metrics, checked one step behind to keep dispatch async
  progress = _progress(total_steps, start_step, enabled=is_main and tc.get("progress", True))
  # samples_per_s counts training steps only: the clock stops (after the dispatched steps
  # finish) for evaluations and checkpoints.
  throughput = {"steps": 0, "seconds": 0.0, "mark": time.perf_counter()}

  def pause_clock():
    jax.block_until_ready(state)
    now = time.perf_counter()
    throughput["seconds"] += now - throughput["mark"]
    phases.add("train", now - throughput["mark"])

  def restart_clock():
    throughput["mark"] = time.perf_counter()

  previous_train = writer.last.get("train") or {}

  def intact() -> str:
    saved = manager.latest_step()
    last = "no checkpoint was saved yet" if saved is None else f"the last checkpoint (step {saved})"
    return f"{last} and metrics.jsonl are intact"

  guard = NonFiniteGuard(skip=skips_nonfinite(config),
                         max_consecutive=tc.get("max_consecutive_nonfinite", 10),
                         total=int(previous_train.get("nonfinite_steps", 0)), intact=intact)

  def save(step):
    with phases("checkpoint"):
      manager.save(step, state)  # finite: a step that is not is never applied

  with StopRequest() as stop:
    try:
      step = start_step
      if step == 0 and tc.get("eval_at_start", True):  # the untrained model: where curves start
        run_eval(0, final=total_steps == 0)
      first = True
      restart_clock()
      while step < total_steps:
        epoch, index = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
          perm, perm_epoch = permutation(data_key, epoch, num_train), epoch
        n = k if (multi_step is not None and step % k == 0 and index + k <= steps_per_epoch
                  and step + k <= total_steps) else 1
        state, metrics = (multi_step if n > 1 else train_step)(
            state, train_data, perm, index * tc.batch_size, step_key)
        if first:  # compilation and the first dispatch: a phase of its own
          jax.block_until_ready(state)
          phases.add("compile", time.perf_counter() - throughput["mark"])
          first = False
          restart_clock()
        else:
          throughput["steps"] += n
        if pending is not None:
          guard(*pending)
        step += n
        pending = (metrics, step)

        def crossed(every: int, step=step, n=n) -> bool:  # a multiple of every in (step − n, step]
          return step // every > (step - n) // every or step == total_steps

        if crossed(tc.log_every):
          host = guard(*pending)
          pending = None
          pause_clock()
          if throughput["steps"]:
            host["samples_per_s"] = throughput["steps"] * tc.batch_size / max(
                throughput["seconds"], 1e-9)
          throughput.update(steps=0, seconds=0.0)
          host.pop("finite")
          if guard.skip:
            host["nonfinite_steps"] = guard.total
          writer.write(step, "train", host)
          if "samples_per_s" in host:
            progress.set_postfix(loss=f"{host['loss']:.4g}",
                                 samples_s=f"{host['samples_per_s']:.0f}")
          restart_clock()
        progress.update(n)
        evaluate_now = crossed(tc.eval_every)
        save_now = crossed(tc.checkpoint_every)
        if evaluate_now or save_now or stop.signal is not None:
          pause_clock()
          if pending is not None:
            guard(*pending)
            pending = None
          if evaluate_now:
            last_eval = run_eval(step, final=step == total_steps)
          if save_now or stop.signal is not None:
            save(step)
          restart_clock()
        if stop.signal is not None:
          logging.warning("Stopped by signal %d at step %d; checkpoint saved in %s",
                          stop.signal, step, workdir)
          # No final evaluation: an interrupted run must not look like a finished one.
          raise Interrupted(stop.signal, step, workdir)
      if not last_eval:  # resumed at the end: the final evaluation is already written
        previous = writer.last.get("test")
        last_eval = ({k: v for k, v in previous.items() if k not in ("step", "split")}
                     if previous and previous["step"] == step else run_eval(step, final=True))
      if step > start_step:  # a run that trained (not a rerun of a finished one)
        writer.write(step, "timing", {f"{k}_s": v for k, v in phases.seconds.items()})
      logging.info("Time: %s", phases.summary())
    finally:
      progress.close()
      manager.close()
      writer.close()
  return last_eval


def _progress(total: int, initial: int, *, enabled: bool):
  from tqdm.auto import tqdm

  return tqdm(total=total, initial=initial, disable=(not enabled) or None, unit="step",
              dynamic_ncols=True, leave=False)
