"""Devices and processes: the data mesh, placing host arrays on it, multi-host start-up, the
persistent compilation cache and what a device can still allocate.

The mesh has one axis, ``data`` (``collectives.DATA_AXIS``), over every device of every
process: data parallelism in the pmap style, written with ``jax.shard_map``.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from energy_ae.collectives import DATA_AXIS as AXIS


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
  from energy_ae import data  # the host's memory: one reader, data's (it sizes resident sets)

  return data.host_available_bytes()


def _gigabytes(num_bytes: float) -> str:
  return f"{num_bytes / 1e9:.3g} GB"


def check_memory(init_state, example_batch, config) -> None:
  """Fails at once, naming the size and what asked for it, when the train state that
  ``init_state(key, example_batch)`` returns cannot fit.

  Shapes come from ``jax.eval_shape`` (nothing is allocated); a step holds the parameters,
  the optimiser state, the gradients and the update. Activations are not counted: this is a
  lower bound, so a run refused here cannot fit (XLA would otherwise hang or abort).
  """
  shapes = jax.eval_shape(init_state, jax.random.key(0), example_batch)
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
