r"""Data placement benchmark: the VAE's train step fed by a replicated, a sharded and a streamed
training split, on the devices this process sees, with the memory each device holds.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.bench_data \
      --out=runs/bench_data.json
  python -m experiments.bench_data --accelerator --out=runs/bench_accelerator.json   # on a GPU

The first form is what ``experiments.benchmark`` runs (8 simulated CPU devices): for each
placement, samples/s of the loop's own dispatches (``feed.args`` then the step: the streamed
batch read by the grain pipeline and placed on the devices is inside the time) — the median of
``--repeats`` timings, with the lowest and highest — and the training data each device holds
(resident: the bytes of device 0's share of the split; streamed: device 0's slice of a batch,
plus the host's prefetch buffer, per process). ``--processes=2`` runs the streamed placement as
two processes joined by ``jax.distributed`` (each its own half of the devices and its own rows
of each batch) through ``experiments.run``, and reads their ``samples_per_s``.

``--accelerator`` writes the accelerator table: the VAE step at batch 256 … 4096, a sweep of 64
variants in one step, and streamed against resident data, on the default device. It runs on any
backend (the test runs it on a CPU with tiny sizes); its numbers mean something on a GPU.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command's flags, defined when it runs (not on import: it imports
  experiments.benchmark, which has flags of the same names)."""
  flags.DEFINE_string("out", "runs/bench_data.json", "Where to write the JSON results.")
  flags.DEFINE_integer("steps", 40, "Steps per timing.")
  flags.DEFINE_integer("repeats", 3, "Timings per placement (median reported).")
  flags.DEFINE_integer("batch_size", 256, "Global batch of the placement rows.")
  flags.DEFINE_integer("processes", 0, "Also run the streamed VAE as this many processes "
                       "(jax.distributed on localhost) through experiments.run (0: not).")
  flags.DEFINE_bool("accelerator", False, "Write the accelerator table instead.")
  flags.DEFINE_list("accelerator_batches", ["256", "1024", "4096"], "Batches of its step rows.")
  flags.DEFINE_integer("accelerator_sweep", 64, "Variants of its sweep row.")


def _config(**overrides):
  from experiments import common

  config = common.load_config("vae", None, **{
      "train.linear_probe": False, "train.progress": False, **overrides})
  return config


def _timed_dispatches(prog, state, steps: int, repeats: int) -> tuple[float, list[float]]:
  """Steps per second of the loop's dispatches (feed, then step), median and all timings."""
  import jax
  import numpy as np

  prog.feed.start(0, None)
  step = 0
  for _ in range(2):  # compile and warm up
    state, metrics = prog.step(state, *prog.feed.args(step, 1))
    step += 1
  jax.block_until_ready(state)
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = prog.step(state, *prog.feed.args(step, 1))
      step += 1
    jax.block_until_ready((state, metrics))
    rates.append(steps / (time.perf_counter() - start))
  prog.feed.close()
  return float(np.median(rates)), rates


def _data_bytes_on_device_0(prog, config, pipeline: str, example_size: int) -> dict:
  """Training data device 0 holds: its share of the resident split, or its slice of one
  streamed batch plus this process's prefetch buffer on the host."""
  import jax

  batch_bytes = config.train.batch_size * example_size * 4
  if pipeline == "stream":
    return {"device_mib": round(batch_bytes / jax.device_count() / 2**20, 3),
            "host_prefetch_mib": round(config.data.stream_prefetch * batch_bytes
                                       / jax.process_count() / 2**20, 3)}
  data, _, _ = prog.feed.args(0, 1)
  shard = data["y"].addressable_shards[0].data
  return {"device_mib": round(shard.nbytes / 2**20, 3), "host_prefetch_mib": 0.0}


def placements(steps: int, repeats: int, batch_size: int) -> list[dict]:
  import jax

  from energy_ae import loop, train

  rows = []
  for name, overrides in (("replicated", {"data.placement": "replicated"}),
                          ("sharded", {"data.placement": "sharded"}),
                          ("stream", {"data.pipeline": "stream"})):
    config = _config(**overrides, **{"train.batch_size": batch_size})
    phases = loop.PhaseTimer()
    shared = train.prepare(config, phases, "")
    with tempfile.TemporaryDirectory() as workdir:
      prog = train.program(config, workdir, shared)
    state = prog.place(prog.initial)
    rate, rates = _timed_dispatches(prog, state, steps, repeats)
    row = {"placement": name, "devices": jax.device_count(), "batch_size": batch_size,
           "samples_per_s": round(rate * batch_size, 1),
           "samples_per_s_range": [round(min(rates) * batch_size, 1),
                                   round(max(rates) * batch_size, 1)],
           **_data_bytes_on_device_0(prog, config, "stream" if name == "stream" else "resident",
                                     math.prod(shared.dataset.train["y"].shape[1:]))}
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def multi_process_stream(processes: int, batch_size: int) -> dict:
  """The streamed VAE as ``processes`` processes of experiments.run, each with this process's
  devices split between them; samples/s from process 0's train records."""
  import jax

  from energy_ae import run_dir

  per_process = max(1, jax.device_count() // processes)
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={per_process}")
  address = f"localhost:{_free_port()}"
  with tempfile.TemporaryDirectory() as workdir:
    argv = [sys.executable, "-m", "experiments.run", "--config=experiments/vae.py",
            f"--workdir={workdir}", "--config.data.pipeline=stream",
            f"--config.train.batch_size={batch_size}", "--config.train.num_epochs=4",
            "--config.train.linear_probe=False", "--config.train.progress=False",
            "--config.train.eval_every=1000000", "--config.train.checkpoint_every=1000000",
            "--config.distributed.enabled=True",
            f"--config.distributed.coordinator_address={address}",
            f"--config.distributed.num_processes={processes}"]
    procs = [subprocess.Popen([*argv, f"--config.distributed.process_id={i}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    if any(p.returncode for p in procs):
      raise RuntimeError(f"the {processes}-process streamed run failed:\n{errors[0][-2000:]}")
    rates = [r["samples_per_s"] for r in run_dir.records(workdir, "train")
             if "samples_per_s" in r]
  import numpy as np

  row = {"placement": "stream", "processes": processes, "devices": per_process * processes,
         "batch_size": batch_size, "samples_per_s": round(float(np.median(rates)), 1),
         "samples_per_s_range": [round(min(rates), 1), round(max(rates), 1)]}
  print(json.dumps(row), flush=True)
  return row


def accelerator_table(batches: list[int], sweep_size: int, steps: int, repeats: int) -> dict:
  """The VAE step per batch, a sweep of ``sweep_size`` seeds, streamed against resident."""
  import jax

  from experiments import benchmark

  table = {"device": str(jax.devices()[0]), "steps": [], "sweep": None, "stream": []}
  for batch in batches:
    step = benchmark.ProjectStep(_config(), batch)
    rate = benchmark.rate_stats(step.run, min_time=0.5, repeats=repeats).scaled(batch)
    table["steps"].append({"batch_size": batch, "samples_per_s": round(rate.median, 1),
                           "first_step_s": round(step.first_step_s, 2)})
    print(json.dumps(table["steps"][-1]), flush=True)
  run = benchmark.SweepRun(_config(), "seed", range(sweep_size), batches[0])
  rate = benchmark.rate_stats(run.run, min_time=0.5, repeats=repeats).scaled(
      batches[0] * sweep_size)
  table["sweep"] = {"variants": sweep_size, "batch_size": batches[0],
                    "samples_per_s": round(rate.median, 1)}
  print(json.dumps(table["sweep"]), flush=True)
  table["stream"] = placements(steps, repeats, batches[min(1, len(batches) - 1)])
  return table


def main(argv):
  del argv
  from energy_ae import checkpoints

  checkpoints.quiet_orbax_logging()
  import jax

  if FLAGS.accelerator:
    out = {"accelerator": accelerator_table([int(b) for b in FLAGS.accelerator_batches],
                                            FLAGS.accelerator_sweep, FLAGS.steps, FLAGS.repeats)}
  else:
    out = {"devices": jax.device_count(), "platform": jax.devices()[0].platform,
           "placements": placements(FLAGS.steps, FLAGS.repeats, FLAGS.batch_size)}
    if FLAGS.processes:
      out["multi_process"] = multi_process_stream(FLAGS.processes, FLAGS.batch_size)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(out, f, indent=2)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
