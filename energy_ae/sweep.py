"""Sweeps in one step: V variants of one experiment, trained at once by the same loop as a run.

``config.sweep.key`` names one scalar hyper-parameter that does not change any shape
(``seed``, ``train.learning_rate``, or a model key the model uses as a number, such as the
VAE's ``model.beta`` or the CAE's ``model.contractive_weight``) and ``config.sweep.values``
its values; several keys separated by commas make a grid, with one tuple of values per key
(``--config.sweep.key=model.beta,seed --config.sweep.values='(0.5,2),(0,1,2)'``: 6 variants).
The V train states are stacked along a leading axis and one compiled step ``vmap``s the train
step over them, with the hyper-parameters traced values: each variant builds the model and
the optimiser from the config with its own values inside the trace, so nothing is baked in as
a Python float. The data and the data parallelism are shared: every device gathers its shard
of each variant's batch, and ``lax.pmean`` averages each variant's gradients as in a run.

Variant v is the run of the config with its values: the same initial parameters, data order
and noise as that run alone (a ``seed`` sweep gives each its own), the same metrics to float
rounding. The loop is ``energy_ae.loop``'s, as a run's: k steps per dispatch, logs,
evaluations, checkpoints, signals, resume. A variant whose step turns non-finite (after
``train.on_nonfinite`` gave up on it) is frozen and reported, the others go on
(``sweep.on_nonfinite = 'freeze'``), or ends the sweep (``'stop'``). Each variant writes its own
run directory ``WORKDIR/sweep/<key>=<value>[,<key>=<value>...]`` (``metrics.jsonl``,
``config.json`` with its values, ``status.json``, Orbax checkpoints), so that the tools read a
variant as any run.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from energy_ae import config_keys, data as data_lib, evaluation, feeds, loop, models, train

# Keys the trainer itself reads per variant; any other key must be one the model reads as a
# number (it is traced when the model is built).
TRAINER_KEYS = ("seed", "train.learning_rate")
ON_NONFINITE = ("freeze", "stop")


class Sweep(NamedTuple):
  keys: tuple[str, ...]  # the swept keys (one, or several for a grid)
  values: tuple[tuple, ...]  # each variant's values, one per key
  configs: list  # each variant's own config: the experiment's with its values, no sweep
  dirs: list  # each variant's run directory
  names: list  # each variant's name, e.g. "model.beta=0.5,seed=1"

  @property
  def key(self) -> str:
    return ",".join(self.keys)


def sweep_key(config) -> str:
  """The swept key(s) ('' for none)."""
  sweep = config.get("sweep", None)
  return (sweep.get("key", "") or "") if sweep is not None else ""


def variant_name(key: str, value) -> str:
  return f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"


def _axes(config) -> tuple[tuple[str, ...], list[tuple]]:
  """(keys, [values of each key]) of ``config.sweep``, checked."""
  keys = tuple(k.strip() for k in sweep_key(config).split(","))
  values = tuple(config.sweep.get("values", ()))
  if len(keys) == 1:
    return keys, [values]
  if len(values) != len(keys) or not all(isinstance(v, (tuple, list)) for v in values):
    raise ValueError(f"config.sweep.values = {values!r}: a grid over {len(keys)} keys "
                     f"({', '.join(keys)}) takes one tuple of values per key, e.g. "
                     "--config.sweep.values='(0.5,2),(0,1,2)'")
  if len(set(keys)) != len(keys):
    raise ValueError(f"config.sweep.key = {sweep_key(config)!r}: each key once")
  return keys, [tuple(v) for v in values]


def _check_axis(config, key: str, values: tuple) -> tuple:
  """The values of one swept key, cast to the key's type; ValueError naming what is wrong."""
  if key not in TRAINER_KEYS and not key.startswith("model."):
    raise ValueError(f"config.sweep.key = {key!r}: a sweep varies {', '.join(TRAINER_KEYS)} or a "
                     "model.* key; the loop reads the other train.* and data.* keys once for "
                     "all variants (batch size, epochs, schedule), so train those as separate runs")
  current = config_keys.get(config, key, None)
  if current is None:
    raise ValueError(f"config.sweep.key = {key!r}: the config has no such key")
  if isinstance(current, bool) or not isinstance(current, (int, float)):
    raise ValueError(f"config.sweep.key = {key!r}: a sweep varies one number, and {key} is "
                     f"{current!r}")
  if len(values) < 1:
    raise ValueError(f"config.sweep.values = {values!r}: give the values of {key} to train, "
                     "e.g. --config.sweep.values=0.1,1,10")
  if len(set(values)) != len(values):
    raise ValueError(f"config.sweep.values = {values!r}: each value once")
  cast = []
  for value in values:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f"config.sweep.values = {values!r}: {value!r} is not a number")
    if isinstance(current, int) and not float(value).is_integer():
      raise ValueError(f"config.sweep.values = {values!r}: {key} is an integer, {value!r} is not")
    cast.append(int(value) if isinstance(current, int) else float(value))
  return tuple(cast)


def plan(config, workdir: str) -> Sweep:
  """The variants of ``config.sweep`` (the grid of its keys' values, the first key slowest),
  each config checked as a run of its own would be."""
  keys, axes = _axes(config)
  axes = [_check_axis(config, key, values) for key, values in zip(keys, axes)]
  on_nonfinite = config.sweep.get("on_nonfinite", "freeze")
  if on_nonfinite not in ON_NONFINITE:
    raise ValueError(f"config.sweep.on_nonfinite = {on_nonfinite!r}: must be one of "
                     f"{', '.join(ON_NONFINITE)}")
  configs, dirs, names, values = [], [], [], []
  for combination in itertools.product(*axes):
    variant = config.copy_and_resolve_references()
    with variant.unlocked():
      config_keys.apply(variant, dict(zip(keys, combination)))
      variant.sweep.key = ""
      variant.sweep.values = ()
    train.validate_config(variant)
    name = ",".join(variant_name(k, v) for k, v in zip(keys, combination))
    configs.append(variant)
    names.append(name)
    dirs.append(os.path.join(workdir, "sweep", name))
    values.append(tuple(combination))
  return Sweep(keys, tuple(values), configs, dirs, names)


def traced_config(config, keys: tuple[str, ...], values) -> ml_collections.ConfigDict:
  """A copy of ``config`` whose ``keys`` hold ``values`` (traced arrays; no type checks)."""
  traced = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for j, key in enumerate(keys):
    config_keys.set_value(traced, key, values[j])
  return traced


def _builder(sweep: Sweep, example_shape, value_range, total_steps: int):
  """``build(values) -> (model, optimiser)`` of the variant whose swept keys hold ``values``
  ((K,): one per key); the seed only chooses keys, which the trainer passes per variant."""
  base = sweep.configs[0]
  traced_keys = tuple(k for k in sweep.keys if k != "seed")
  columns = [j for j, k in enumerate(sweep.keys) if k != "seed"]

  def build(values):
    config = (traced_config(base, traced_keys, [values[j] for j in columns]) if traced_keys
              else base)
    model = models.make(config, example_shape, value_range)
    return model, train.make_optimizer(config.train, total_steps)

  return build


def _untraceable(key: str, model_name: str, error: Exception) -> ValueError:
  return ValueError(
      f"config.sweep.key = {key!r} cannot be swept in one step: the {model_name} model reads "
      f"it as a Python number when it is built ({type(error).__name__}). Sweepable: "
      f"{', '.join(TRAINER_KEYS)} and the model keys a model computes with (e.g. model.beta of "
      "the vae, model.contractive_weight of the cae); or train the values as separate runs")


def make_sweep_step(build, mesh, *, global_batch: int, binarize: str, rollback: bool = False,
                    steps: int = 1, placement: str = "replicated"):
  """``step(states, data, perms, offset, keys, values) -> (states, metrics)`` (resident data;
  ``perms`` (V, N)) or ``step(states, batches, keys, values)`` (streamed: each variant's batch,
  (V, B, ...)): ``steps`` optimiser steps of every variant (states and metrics stacked along
  the variants' axis, after the steps' axis for k > 1), jitted, states donated; ``keys``
  (V, ...) key data, ``values`` (V, K) the swept values."""
  local_batch = train.local_batch_size(global_batch, mesh)
  collectives = mesh.size > 1
  streamed = placement == "stream"

  def per_device(states, *args):
    *inputs, keys, values = args

    def one(state, key, value, *variant_inputs):
      model, tx = build(value)
      step = train.device_step(model, tx, local_batch=local_batch, binarize=binarize,
                               data_parallel=True, collectives=collectives, rollback=rollback,
                               placement=placement)
      return step(state, *variant_inputs, jax.random.wrap_key_data(key))

    if streamed:  # (batches,): one batch per variant
      return jax.vmap(one)(states, keys, values, *inputs)
    data, perms, offset = inputs  # the split and the offset are shared, the orders are not
    return jax.vmap(lambda state, key, value, perm: one(state, key, value, data, perm, offset))(
        states, keys, values, perms)

  body = train.scan_steps(per_device, steps, global_batch, streamed=streamed)
  specs = (P(), *feeds.data_specs(placement, steps=steps, stacked=True), P(), P())
  sharded = jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=(P(), P()),
                          check_vma=collectives)
  return jax.jit(sharded, donate_argnums=0)


def stack(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


class SweepSetup(NamedTuple):
  """What the sweep's step needs, built one way for the loop and the benchmark."""

  initial: list  # each variant's initial train state, on the host
  build: object  # build(values) -> (model, optimiser), traceable in the values
  values: jax.Array  # (V, K) the swept values, replicated
  data_keys: jax.Array  # (V, ...) key data of each variant's data order, replicated
  step_keys: jax.Array
  eval_keys: jax.Array
  step: object  # make_sweep_step(...)
  models: list  # each variant's concrete model
  multi_step: object = None  # make_sweep_step(..., steps=k) for k steps per dispatch


def _abstract_data(dataset, placement: str, num_variants: int, batch_size: int) -> tuple:
  """Shapes of the step's data arguments, to trace it once before any data is placed."""
  inputs = data_lib.model_inputs(dataset.train)
  shape = lambda x, lead: jax.ShapeDtypeStruct((*lead, *x.shape[1:]), jnp.float32)
  if placement == "stream":
    return ({k: shape(v, (num_variants, batch_size)) for k, v in inputs.items()},)
  num = len(inputs["y"])
  return ({k: shape(v, (num,)) for k, v in inputs.items()},
          jax.ShapeDtypeStruct((num_variants, num), jnp.int32), 0)


def setup_sweep_step(sweep: Sweep, config, mesh, dataset, *, batch_size: int | None = None,
                     steps_per_dispatch: int = 1, placement: str = "replicated") -> SweepSetup:
  """Initial states, keys and the jitted step of every variant; fails with one line, before
  anything is written, when a value changes shapes or the model cannot take the key traced."""
  total_steps = train.num_steps(config.train, dataset)
  run_keys = [train.run_keys(c.seed) for c in sweep.configs]  # (init, data, step, eval)
  builts = [train.build(c, dataset, keys[0]) for c, keys in zip(sweep.configs, run_keys)]
  shapes = [jax.tree.map(np.shape, b.state) for b in builts]
  for values, s in zip(sweep.values[1:], shapes[1:]):
    if s != shapes[0]:
      what = f"the value {values[0]!r}" if len(values) == 1 else f"the values {values!r}"
      raise ValueError(f"config.sweep.key = {sweep.key!r}: {what} changes the shapes of the "
                       "parameters; a sweep varies a scalar that does not")
  build = _builder(sweep, dataset.train["y"].shape[1:], dataset.value_range, total_steps)
  values = train.replicate(mesh, np.asarray(sweep.values, np.float32))
  key_data = lambda i: train.replicate(mesh, np.stack([train.key_data(k[i]) for k in run_keys]))
  batch = batch_size or config.train.batch_size
  make = functools.partial(make_sweep_step, build, mesh, global_batch=batch,
                           binarize=config.data.get("binarize", "none"), placement=placement,
                           rollback=train.skips_nonfinite(config))
  step_fn = make()
  # Every variant's step traced once: a key the model reads as a Python number fails here.
  try:
    jax.eval_shape(step_fn, train.replicate(mesh, stack([b.state for b in builts])),
                   *_abstract_data(dataset, placement, len(builts), batch), key_data(1),
                   values)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
          jax.errors.TracerIntegerConversionError) as e:
    raise _untraceable(sweep.key, config.model.name, e) from None
  except (ValueError, TypeError) as e:  # a model's check or cast that met the traced value
    if "Tracer" not in str(e):
      raise
    raise _untraceable(sweep.key, config.model.name, e) from None
  return SweepSetup([b.state for b in builts], build, values, key_data(1), key_data(2),
                    key_data(3), step_fn, [b.model for b in builts],
                    make(steps=steps_per_dispatch) if steps_per_dispatch > 1 else None)


def program(config, workdir: str, sweep: Sweep, shared: train.Shared) -> loop.Program:
  """The loop's program of a sweep: the vmapped step over the stacked variants."""
  tc, mesh = config.train, shared.mesh
  k = tc.get("steps_per_dispatch", 1)
  data_keys = np.stack([train.key_data(train.run_keys(c.seed)[1]) for c in sweep.configs])
  feed = feeds.make(config, mesh, shared.dataset, data_keys, stacked=True,
                    steps_per_epoch=shared.steps_per_epoch, total_steps=shared.total_steps)
  setup = setup_sweep_step(sweep, config, mesh, shared.dataset, steps_per_dispatch=k,
                           placement=feed.placement)
  rest = (setup.step_keys, setup.values)
  evaluate = evaluation.make_evaluator(
      lambda value: setup.build(value)[0], setup.models, values=setup.values,
      eval_keys=setup.eval_keys, test_data=shared.test_data,
      eval_batch=tc.get("eval_batch_size", 500),
      probe=evaluation.probe_data(shared.dataset, tc, functools.partial(train.replicate, mesh)),
      stacked=True)
  return loop.Program(
      variants=[loop.Variant(n, c, d) for n, c, d in zip(sweep.names, sweep.configs, sweep.dirs)],
      stacked=True, initial=setup.initial,
      place=lambda states: train.replicate(mesh, stack(states)),
      step=lambda state, *args: setup.step(state, *args, *rest),
      multi_step=(lambda state, *args: setup.multi_step(state, *args, *rest)) if k > 1 else None,
      steps_per_dispatch=k, feed=feed, evaluate=evaluate, total_steps=shared.total_steps,
      steps_per_epoch=shared.steps_per_epoch, train=tc,
      freeze=config.sweep.get("on_nonfinite", "freeze") == "freeze", root=workdir)


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False
                       ) -> list[dict[str, float]]:
  """Trains every variant of ``config.sweep`` at once; returns each one's last test metrics
  (a frozen variant's last written ones)."""
  train.validate_config(config)
  sweep = plan(config, workdir)
  phases = loop.PhaseTimer()
  shared = train.prepare(config, phases, f"; a sweep of {len(sweep.names)} variants over "
                                         f"{sweep.key}, trained together")
  with phases("data"):
    prog = program(config, workdir, sweep, shared)
  finals = loop.run(prog, phases, allow_config_change=allow_config_change)
  logging.info("Sweep time (all %d variants): %s", len(sweep.names), phases.summary())
  for name, final in zip(sweep.names, finals):  # vectors (kl_per_dim) are in metrics.jsonl
    logging.info("Final test metrics of %s: %s", name,
                 {k: round(v, 4) for k, v in final.items() if isinstance(v, float)})
  return finals
