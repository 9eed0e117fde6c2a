"""Where a train step's batch comes from: the training split resident on the devices, or
streamed from disk.

* ``replicated``: every device holds the whole split and gathers its rows of each batch
  inside the compiled step — the embedded digits' default on one device.
* ``sharded`` (``data.pipeline = 'resident'``, the default placement): each device holds its
  1/D share of the rows; each gathers, for the whole global batch, the rows it owns (zeros
  elsewhere), and one ``lax.psum_scatter`` hands each device its own slice of the batch: the
  same examples as replicated at the cost of one reduce-scatter of the batch.
* ``stream`` (``data.pipeline = 'stream'``): the split stays on disk (``sources.LazyArray``);
  a grain pipeline reads, in background threads, each step's rows of this process (its
  devices' slices of the global batch) ahead of the step, and the batch enters the step
  sharded over the devices. The iterator's state (the next step) is saved with every
  checkpoint, so a run resumed after SIGKILL reads the batches an uninterrupted run reads.

Every placement draws the same global batch at each step: the epoch's order is
``data.epoch_permutation(key, epoch, N)`` (computed on the host for the stream), batch b its
entries b·B … (b + 1)·B − 1, and the per-example randomness follows the position in the
global batch; so a run's numbers do not depend on the placement nor on the device count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from energy_ae import data as data_lib
from energy_ae.devices import AXIS

PLACEMENTS = ("sharded", "replicated")


def gather_rows(data, perm, offset, positions, *, sharded: bool, collectives: bool,
                global_batch: int):
  """This device's rows of the global batch at ``offset`` of ``perm`` (inside shard_map):
  ``positions`` are its positions in the global batch."""
  if not (sharded and collectives):  # every row is local (replicated, or one device)
    return jax.tree.map(lambda x: x[perm[offset + positions]], data)
  device = lax.axis_index(AXIS)
  index = perm[offset + jnp.arange(global_batch)]  # the whole global batch

  def gather(x):
    n_local = x.shape[0]
    mine = (index // n_local) == device
    rows = x[jnp.where(mine, index - device * n_local, 0)]
    rows = jnp.where(mine.reshape(-1, *([1] * (x.ndim - 1))), rows, jnp.zeros_like(rows))
    # Each row is owned by one device, zeros elsewhere: the sum is that row, exactly.
    return lax.psum_scatter(rows, AXIS, scatter_dimension=0, tiled=True)

  return jax.tree.map(gather, data)


def data_specs(placement: str, *, steps: int = 1, stacked: bool = False) -> tuple:
  """shard_map's in_specs of a step's data arguments: (data, perm, offset) resident — the
  data replicated or split by rows —, (batch,) streamed, split along its batch axis (after
  the steps' and the variants' axes)."""
  if placement == "stream":
    return (P(*(None,) * (int(steps > 1) + int(stacked)), AXIS),)
  return (P(AXIS) if placement == "sharded" else P(), P(), P())


def place_split(mesh: Mesh, inputs: dict, placement: str) -> dict:
  """The training split's model inputs on the devices: every row on every device, or rows
  split over them (padded with zero rows to a multiple of the device count; a permutation of
  the N real rows never reads a pad). Each process reads only the rows of its own devices."""
  if placement == "replicated":
    sharding = NamedSharding(mesh, P())
  else:
    sharding = NamedSharding(mesh, P(AXIS))

  def put(x):
    n = len(x)
    padded = -(-n // mesh.size) * mesh.size if placement == "sharded" else n
    shape = (padded, *x.shape[1:])

    def rows(index):
      start, stop, _ = index[0].indices(padded)
      block = np.zeros((stop - start, *x.shape[1:]), np.float32)
      block[:max(0, min(stop, n) - start)] = np.asarray(x[start:min(stop, n)], np.float32)
      return block[(slice(None), *index[1:])]

    return jax.make_array_from_callback(shape, sharding, rows)

  return jax.tree.map(put, inputs, is_leaf=lambda x: hasattr(x, "shape"))


class Feed(NamedTuple):
  """A step's data arguments: ``args(step, n)`` for the dispatch of n steps from ``step``;
  ``state()`` the pipeline's state to save with a checkpoint, ``start(step, saved)`` to
  resume at ``step`` from a saved state (or none), ``close()`` to stop its threads."""

  args: Callable[[int, int], tuple]
  state: Callable[[], dict]
  start: Callable[[int, dict | None], None]
  close: Callable[[], None]
  placement: str


def _epoch_orders(data_keys, num_examples: int, stacked: bool):
  """epoch -> the epoch's order(s), (V, N) or (N,), computed on the host's CPU device (the
  pipeline's threads ask for it; the last epoch's is cached)."""
  cpu = jax.local_devices(backend="cpu")[0]
  fn = (jax.vmap(data_lib.epoch_permutation, in_axes=(0, None, None)) if stacked
        else data_lib.epoch_permutation)
  compiled = jax.jit(fn, static_argnums=2)
  keys = jax.device_put(data_keys, cpu)
  lock, cache = threading.Lock(), {}

  def order(epoch: int) -> np.ndarray:
    with lock:
      if epoch not in cache:
        cache.clear()
        cache[epoch] = np.asarray(compiled(keys, epoch, num_examples))
      return cache[epoch]

  return order


def resident(mesh: Mesh, inputs: dict, data_keys, *, placement: str, stacked: bool,
             batch_size: int, steps_per_epoch: int) -> Feed:
  """The split placed on the devices; a dispatch's arguments are (data, order, offset)."""
  placed = place_split(mesh, inputs, placement)
  num = len(next(iter(inputs.values())))
  fn = (jax.vmap(data_lib.epoch_permutation, in_axes=(0, None, None)) if stacked
        else data_lib.epoch_permutation)
  permutation = jax.jit(fn, static_argnums=2, out_shardings=NamedSharding(mesh, P()))
  current = {"epoch": -1, "order": None}

  def args(step: int, n: int) -> tuple:
    epoch, index = divmod(step, steps_per_epoch)
    if epoch != current["epoch"]:
      current.update(epoch=epoch, order=permutation(data_keys, epoch, num))
    return placed, current["order"], index * batch_size

  return Feed(args, lambda: {}, lambda step, saved: None, lambda: None, placement)


def streamed(mesh: Mesh, inputs: dict, data_keys, *, stacked: bool, batch_size: int,
             steps_per_epoch: int, total_steps: int, threads: int = 2,
             prefetch: int = 4) -> Feed:
  """A grain pipeline over the lazy split: each step's rows of this process's devices, read
  ``prefetch`` steps ahead by ``threads`` threads; a dispatch's arguments are (batch,)."""
  import grain

  num = len(next(iter(inputs.values())))
  process, processes = jax.process_index(), jax.process_count()
  if batch_size % processes:
    raise ValueError(f"config.train.batch_size = {batch_size} is not divisible by the "
                     f"{processes} processes")
  rows = slice(process * batch_size // processes, (process + 1) * batch_size // processes)
  order = _epoch_orders(data_keys, num, stacked)

  def load(step: int) -> dict:
    epoch, index = divmod(int(step), steps_per_epoch)
    batch = order(epoch)[..., index * batch_size:(index + 1) * batch_size][..., rows]
    return {k: np.stack([np.asarray(x[b], np.float32) for b in batch]) if stacked
            else np.asarray(x[batch], np.float32) for k, x in inputs.items()}

  dataset = grain.MapDataset.range(total_steps).map(load).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
  pipeline = {"iterator": None, "next": 0}

  def start(step: int, saved: dict | None) -> None:
    saved = saved or {"next_index": step}
    if saved.get("next_index") != step:
      raise ValueError(f"the data pipeline's saved state {saved} does not belong to the "
                       f"checkpoint of step {step}")
    pipeline["iterator"] = iter(dataset)
    if step:
      pipeline["iterator"].set_state(saved)
    pipeline["next"] = step

  def args(step: int, n: int) -> tuple:
    if pipeline["iterator"] is None:
      start(step, None)
    if step != pipeline["next"]:
      raise RuntimeError(f"the data pipeline is at step {pipeline['next']}, asked for {step}")
    local = [next(pipeline["iterator"]) for _ in range(n)]
    pipeline["next"] += n
    return (_global_batch(mesh, local, stacked=stacked, multi=n > 1),)

  def state() -> dict:
    return {"next_index": pipeline["next"]}

  return Feed(args, state, start, lambda: pipeline.update(iterator=None), "stream")


def _global_batch(mesh: Mesh, local: list[dict], *, stacked: bool, multi: bool) -> dict:
  """This process's rows of n steps' batches as global arrays sharded over the devices along
  the batch axis (after the steps' and variants' axes)."""
  lead = (None,) * (int(multi) + int(stacked))
  sharding = NamedSharding(mesh, P(*lead, AXIS))
  out = {}
  for key in local[0]:
    value = np.stack([b[key] for b in local]) if multi else local[0][key]
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def check_fits(dataset, mesh: Mesh, placement: str, budget_gb: float = 0.0) -> None:
  """Fails, naming the sizes and the way on, when the resident training split would not fit:
  per device its share (sharded) or all of it (replicated) against the device's memory
  (``memory_stats``), or, for CPU devices, which share the host's memory, every local
  device's copy against the host's available memory; ``budget_gb`` > 0 replaces what is
  available (``data.memory_budget_gb``)."""
  from energy_ae import devices

  total = data_lib.resident_bytes(dataset.train)
  per_device = total / (mesh.size if placement == "sharded" else 1)
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  on_host = local[0].platform == "cpu"
  needed = per_device * len(local) if on_host else per_device
  if budget_gb:
    available, source = budget_gb * 1e9, f"data.memory_budget_gb = {budget_gb:g}"
  else:
    available = devices.available_memory_bytes(local[0])
    source = "the host's available memory" if on_host else f"{local[0].device_kind}'s memory"
  if available is None or needed <= available:
    return
  raise data_lib.DataError(
      f"dataset {dataset.name!r}: its training split ({total / 1e9:.3g} GB as float32) held "
      f"{placement} on {mesh.size} device(s) takes {needed / 1e9:.3g} GB"
      f"{' of host memory' if on_host else ' per device'} but {source} is "
      f"{available / 1e9:.3g} GB: set data.pipeline=stream to read it from disk batch by batch"
      + ("" if placement == "sharded" or mesh.size == 1 else ", or data.placement=sharded"))


def make(config, mesh: Mesh, dataset, data_keys, *, stacked: bool, steps_per_epoch: int,
         total_steps: int) -> Feed:
  """The feed ``config.data`` asks for: streamed (``data.pipeline = 'stream'``) or resident,
  ``data.placement`` replicated or sharded (checked to fit)."""
  inputs = data_lib.model_inputs(dataset.train)
  tc = config.train
  if dataset.streamed:
    return streamed(mesh, inputs, data_keys, stacked=stacked, batch_size=tc.batch_size,
                    steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    threads=config.data.get("stream_threads", 2),
                    prefetch=config.data.get("stream_prefetch", 4))
  placement = config.data.get("placement", "sharded")
  check_fits(dataset, mesh, placement, config.data.get("memory_budget_gb", 0.0))
  return resident(mesh, inputs, data_keys, placement=placement, stacked=stacked,
                  batch_size=tc.batch_size, steps_per_epoch=steps_per_epoch)
