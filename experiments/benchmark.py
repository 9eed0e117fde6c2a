r"""Benchmarks: this project's train steps against PyTorch eager and the machine's matmul rate.

  python -m experiments.benchmark [--out=runs/benchmark.json] [--quick]
  make bench        # installs the optional `bench` extra (torch==2.13.0, CPU build) first

In one process, side by side, so that ratios hold on a noisy machine:

* the lecture's VAE (784-400-20, Bernoulli, Adam 1e-3) train step at batch 32, 256 and
  1024, and the target-propagation step (784-256-64, L1 code, 20 inner SGD steps) at
  batch 256: samples/s through the project's own training path (``train.make_train_step``:
  ``shard_map``, data resident on the device), the same step as a plain ``jit``, and a
  PyTorch eager implementation of the same model, loss and optimiser;
* achieved GFLOP/s (matmul FLOPs of the dense layers, counted from their shapes) against
  the float32 rate of a jitted 2048 × 2048 matmul measured in the same run;
* time to the first step (compilation) of every default config, and XLA's memory estimate
  of each step;
* inner-loop energy against wall time for the target-propagation inner optimisers;
* parity: test NELBO of the default VAE trained here and in PyTorch (same data, model,
  optimiser, epochs);
* data placements (``experiments.bench_data`` on 8 simulated devices): replicated, sharded and
  streamed training data, samples/s and the data each device holds, and the streamed run as 2
  processes;
* ``experiments.results`` of one VAE variant over 5 seeds: as one seed sweep against seeds one
  after another, whole processes;
* on an accelerator (not a CPU), the accelerator table (``bench_data.accelerator_table``);
* end to end, as whole processes: the 60-epoch VAE CLI run (empty and warm compilation cache,
  with its own phase timings) against ``experiments.torch_vae_run``; start-up: ``python -m
  experiments.run --help``, ``import jax`` with its CPU client, ``import torch``.

Writes a JSON with a list ``results`` (one row per model and batch size) and the rest.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from typing import NamedTuple

from absl import app, flags

import jax
import jax.numpy as jnp
import numpy as np

from energy_ae import checkpoints, data as data_lib, feeds, train
from experiments import common
from experiments.torch_models import TorchTargetProp, TorchVAE, torch_available

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The command's flags, defined when it runs (not on import: experiments.bench_data imports
  this module and defines flags of the same names)."""
  flags.DEFINE_string("out", "runs/benchmark.json", "Where to write the JSON results.")
  flags.DEFINE_bool("quick", False, "Fewer repeats and no parity training (a smoke test).")
  flags.DEFINE_float("min_time", 1.0, "Seconds each timing runs for (median of --repeats).")
  flags.DEFINE_integer("repeats", 3, "Timings per measurement; the median is reported, with the "
                       "lowest and highest.")
  flags.DEFINE_list("only", [], f"Measure only these parts ({', '.join(PARTS)}); default all. "
                    "The JSON then holds only their sections.")
  flags.DEFINE_bool("end_to_end", True, "Also time the 60-epoch VAE CLI run against the PyTorch "
                    "script, as whole processes (about 2 minutes).")


DEFAULT_CONFIGS = ("ellipse", "target_prop", "ae", "dae", "cae", "vae")
# The measurements --only can name: each fills its own section of the JSON ("steps" the
# per-step rows; "torch" the parity run, the end-to-end CLI row and the PyTorch columns of the
# step rows, which stay empty under --only=steps alone).
PARTS = ("steps", "first_steps", "inner_loop", "data_placements", "results_sweep", "accelerator",
         "torch", "startup")


# ----------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------


class Rate(NamedTuple):
  """Steps per second over ``repeats`` timings: the median, and the lowest and highest."""

  median: float
  low: float
  high: float

  def scaled(self, factor: float) -> Rate:
    return Rate(self.median * factor, self.low * factor, self.high * factor)


def rate_stats(run_steps, *, min_time: float, repeats: int) -> Rate:
  """Steps per second: ``repeats`` timings of at least ``min_time`` seconds each.

  ``run_steps(n)`` runs n steps and blocks until they are done.
  """
  run_steps(2)  # warm up (compilation happened before)
  n, elapsed = 1, 0.0
  while True:  # how many steps fill min_time
    start = time.perf_counter()
    run_steps(n)
    elapsed = time.perf_counter() - start
    if elapsed >= min_time / 4 or n >= 1 << 14:
      break
    n *= 2
  n = max(1, int(n * min_time / max(elapsed, 1e-9)))
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    run_steps(n)
    rates.append(n / (time.perf_counter() - start))
  return Rate(float(np.median(rates)), min(rates), max(rates))


def matmul_gflops(*, min_time: float, repeats: int, size: int = 2048) -> float:
  """float32 rate of JAX's own jitted ``a @ b`` on this machine's default device."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  matmul = jax.jit(lambda a, b: a @ b)
  matmul(a, b).block_until_ready()

  def run(n):
    out = None
    for _ in range(n):
      out = matmul(a, b)
    out.block_until_ready()

  return 2 * size**3 * rate_stats(run, min_time=min_time, repeats=repeats).median / 1e9


def dense_flops(widths: list[int]) -> int:
  """Forward matmul FLOPs per example of dense layers widths[0] → widths[1] → …"""
  return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))


def vae_flops_per_example(d_in=784, hidden=400, latent=20) -> int:
  """Matmul FLOPs of one train step per example, counted layer by layer.

  A dense layer a → b costs 2ab forward, 2ab for its weight gradient and 2ab for its input
  gradient, the last only where a gradient must flow further down: every layer but the
  encoder's first (784 → 400), whose input is the data. Decoder 20-400-784 and encoder
  784-400-40 give 2·(784·400 + 400·40 + 20·400 + 400·784)·3 − 2·784·400 ≈ 3.28 MFLOP.
  (Element-wise work — activations, the loss, Adam — is not counted.)
  """
  forward = dense_flops([d_in, hidden, 2 * latent]) + dense_flops([latent, hidden, d_in])
  return 3 * forward - 2 * d_in * hidden


def target_prop_flops_per_example(inner_steps, d_in=784, hidden=256, latent=64) -> int:
  """Matmul FLOPs of one train step per example, counted layer by layer (see above).

  Inner loop, per step: decoder forward (2ab per layer) and the gradient w.r.t. z (input
  gradients only, 2ab per layer), no weight gradients. Outer step: encoder and decoder
  forward and weight gradients; input gradients everywhere except the first layer of each
  (the encoder's input is the data, the decoder's is ž, held fixed by stop_gradient).
  """
  encoder, decoder = dense_flops([d_in, hidden, latent]), dense_flops([latent, hidden, d_in])
  outer = 3 * (encoder + decoder) - 2 * d_in * hidden - 2 * latent * hidden
  return inner_steps * 2 * decoder + outer


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------
# This project's steps
# ----------------------------------------------------------------------------


def experiment_config(name: str, **model_overrides):
  return common.load_config(name, **{f"model.{k}": v for k, v in model_overrides.items()})


class ProjectStep:
  """A model's train step built exactly as ``train.train_and_evaluate`` builds it."""

  def __init__(self, config, batch_size: int, *, data_parallel: bool = True):
    self.config = config
    mesh = train.make_mesh(jax.devices()[:1])
    setup = train.setup_step(config, mesh, batch_size=batch_size, data_parallel=data_parallel)
    self.num_train = setup.dataset.train["y"].shape[0]
    self.batch_size = batch_size
    self.tx, self.data, self.state, self.step = setup.tx, setup.train_data, setup.state, setup.step
    key = jax.random.key(config.seed)
    self.perm = train.replicate(mesh, np.asarray(data_lib.epoch_permutation(key, 0, self.num_train)))
    self.key = key
    self.batches = self.num_train // batch_size
    self.i = 0
    start = time.perf_counter()
    self.run(1)
    self.first_step_s = time.perf_counter() - start  # compilation and the first step
    self.memory = _memory_estimate(self.step, (self.state, self.data, self.perm, 0, self.key))

  def run(self, n: int):
    metrics = None
    for _ in range(n):
      offset = (self.i % self.batches) * self.batch_size
      self.state, metrics = self.step(self.state, self.data, self.perm, offset, self.key)
      self.i += 1
    jax.block_until_ready((self.state, metrics))
    return metrics


def _memory_estimate(step, args) -> dict[str, float]:
  """XLA's own estimate of a compiled step's memory, in MiB."""
  try:
    analysis = step.lower(*args).compile().memory_analysis()
  except Exception:  # not every backend reports it
    return {}
  if analysis is None:
    return {}
  mib = lambda b: round(b / 2**20, 2)
  return {"argument_mib": mib(analysis.argument_size_in_bytes),
          "temp_mib": mib(analysis.temp_size_in_bytes),
          "output_mib": mib(analysis.output_size_in_bytes)}


def torch_rate(model, y_all: np.ndarray, batch_size: int, *, min_time, repeats) -> Rate:
  torch = model.torch
  torch.set_num_threads(os.cpu_count() or 1)
  y_all = torch.from_numpy(np.asarray(y_all, np.float32))
  batches = len(y_all) // batch_size
  perm = torch.randperm(len(y_all))
  state = {"i": 0}

  def run(n):
    for _ in range(n):
      i = state["i"] % batches
      model.step(y_all[perm[i * batch_size:(i + 1) * batch_size]])
      state["i"] += 1

  return rate_stats(run, min_time=min_time, repeats=repeats)


def _spread(rate: Rate) -> list[float]:
  return [round(rate.low, 1), round(rate.high, 1)]


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------


def bench_step(name, config, batch_size, flops_per_example, torch_model, peak, *, min_time,
               repeats, y_train):
  project = ProjectStep(config, batch_size)
  stats = rate_stats(project.run, min_time=min_time, repeats=repeats).scaled(batch_size)
  rate = stats.median
  plain = ProjectStep(config, batch_size, data_parallel=False)
  plain_rate = rate_stats(plain.run, min_time=min_time, repeats=repeats).median * batch_size
  torch_stats = (torch_rate(torch_model(), y_train, batch_size, min_time=min_time,
                            repeats=repeats).scaled(batch_size) if torch_model else None)
  torch_rate_ = torch_stats.median if torch_stats else None
  gflops = rate * flops_per_example / 1e9
  row = {
      "model": name, "batch_size": batch_size,
      "samples_per_s": round(rate, 1),
      "samples_per_s_range": _spread(stats),
      "plain_jit_samples_per_s": round(plain_rate, 1),
      "shard_map_overhead": round(plain_rate / rate - 1.0, 4),
      "torch_samples_per_s": round(torch_rate_, 1) if torch_rate_ else None,
      "torch_samples_per_s_range": _spread(torch_stats) if torch_stats else None,
      "speedup_vs_torch": round(rate / torch_rate_, 2) if torch_rate_ else None,
      "gflops": round(gflops, 1),
      "torch_gflops": round(torch_rate_ * flops_per_example / 1e9, 1) if torch_rate_ else None,
      "fraction_of_matmul_peak": round(gflops / peak, 3),
      "first_step_s": round(project.first_step_s, 2),
      "memory": project.memory,
  }
  print(json.dumps(row), flush=True)
  return row


def bench_first_steps() -> list[dict]:
  """Time to the first step (build + compile + run) of every default config."""
  rows = []
  for name in DEFAULT_CONFIGS:
    config = experiment_config(name)
    step = ProjectStep(config, config.train.batch_size)
    rows.append({"config": name, "batch_size": config.train.batch_size,
                 "first_step_s": round(step.first_step_s, 2), "memory": step.memory})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def bench_inner_loop(y: np.ndarray, *, num_steps: int, min_time: float) -> list[dict]:
  """Mean E(y, z) = C + R + D of the target-propagation inner loop against steps and wall
  time, from the encoder's guess z̃ of the default model after 300 training steps, for
  each inner optimiser (batch 256)."""
  from energy_ae.models import target_prop

  config = experiment_config("target_prop")
  project = ProjectStep(config, 256)
  project.run(300)
  params = jax.device_get(project.state["params"])
  batch = jnp.asarray(y[:256])
  at_steps = [s for s in (0, 5, 10, 20, 50, 100, 200) if s <= num_steps]
  rows = []
  for optimizer in target_prop.inner_optimizer_names():
    config.model.inner_optimizer = optimizer
    config.model.inner_lr = 0.0  # each optimiser's own default step
    nets = target_prop.build(config, y.shape[1:])

    run = jax.jit(lambda params, batch, nets=nets: jnp.mean(
        target_prop.infer(nets, params, batch, num_steps=num_steps)[3], axis=1))

    trace = np.asarray(run(params, batch))
    seconds = 1.0 / rate_stats(lambda n: [run(params, batch).block_until_ready()  # noqa: B023
                                          for _ in range(n)], min_time=min_time,
                               repeats=3).median
    rows.append({"inner_optimizer": optimizer, "inner_lr": nets.inner_lr,
                 "ms_per_inner_step": round(1e3 * seconds / num_steps, 3),
                 "at_steps": at_steps, "energy": [round(float(trace[s]), 3) for s in at_steps]})
    print(json.dumps(rows[-1]), flush=True)
  return rows


class SweepRun:
  """The sweep's step (``energy_ae.sweep``) of ``config`` over ``key`` = ``values``, built as
  ``sweep.train_and_evaluate`` builds it, on one device."""

  def __init__(self, config, key: str, values, batch_size: int):
    import tempfile

    from energy_ae import sweep

    config = common.apply_overrides(config, {"sweep.key": key, "sweep.values": tuple(values)})
    plan = sweep.plan(config, tempfile.gettempdir())  # the directories are never written
    mesh = train.make_mesh(jax.devices()[:1])
    dataset = data_lib.load(config.data)
    setup = sweep.setup_sweep_step(plan, config, mesh, dataset, batch_size=batch_size)
    self.step, self.values = setup.step, setup.values
    self.data = feeds.place_split(mesh, data_lib.model_inputs(dataset.train), "replicated")
    self.keys = setup.step_keys
    self.state = train.replicate(mesh, jax.tree.map(lambda *xs: np.stack(xs), *setup.initial))
    num_train = dataset.train["y"].shape[0]
    self.perms = train.replicate(mesh, np.stack([np.asarray(data_lib.epoch_permutation(
        jax.random.key(i), 0, num_train)) for i in range(len(values))]))
    self.batches, self.batch_size, self.i = num_train // batch_size, batch_size, 0
    self.run(1)

  def run(self, n: int):
    metrics = None
    for _ in range(n):
      offset = (self.i % self.batches) * self.batch_size
      self.state, metrics = self.step(self.state, self.data, self.perms, offset, self.keys,
                                      self.values)
      self.i += 1
    jax.block_until_ready((self.state, metrics))


def bench_sweep(single_row: dict, *, sweep_size: int, min_time: float, repeats: int) -> dict:
  """The VAE at batch 32 as a sweep of ``sweep_size`` seeds in one step, against the same
  step run for each variant in turn (the single step's rate, measured above in this run)
  and against PyTorch's step."""
  batch = single_row["batch_size"]
  run = SweepRun(experiment_config("vae"), "seed", range(sweep_size), batch)
  stats = rate_stats(run.run, min_time=min_time, repeats=repeats).scaled(batch * sweep_size)
  torch_rate_ = single_row["torch_samples_per_s"]
  row = {
      "model": "vae", "batch_size": batch, "sweep_size": sweep_size,
      "samples_per_s": round(stats.median, 1),  # summed over the variants
      "samples_per_s_range": _spread(stats),
      "sequential_samples_per_s": single_row["samples_per_s"],
      "speedup_vs_sequential": round(stats.median / single_row["samples_per_s"], 2),
      "torch_samples_per_s": torch_rate_,
      "speedup_vs_torch": round(stats.median / torch_rate_, 2) if torch_rate_ else None,
  }
  print(json.dumps(row), flush=True)
  return row


def _timed_process(argv: list[str], env: dict | None = None, *,
                   exit_codes=(0,)) -> tuple[float, dict]:
  """Wall seconds of ``python ARGV`` as a whole process, and its last JSON line (if any);
  an exit code outside ``exit_codes`` is an error."""
  import subprocess
  import sys

  start = time.perf_counter()
  proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                        env=dict(os.environ, **(env or {})), check=False)
  seconds = time.perf_counter() - start
  if proc.returncode not in exit_codes:
    raise RuntimeError(f"python {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
  last = {}
  for line in proc.stdout.splitlines()[::-1]:
    if line.startswith("{"):
      last = json.loads(line)
      break
  return seconds, last


def bench_startup(*, repeats: int, have_torch: bool) -> dict:
  """Start-up, whole processes (median of ``repeats``, with the range): ``python -m
  experiments.run --help`` (the flags only: the library is imported after they parse),
  ``python -c "import jax; jax.devices()"`` (what every run pays before its first program:
  JAX's import and the CPU client) and, where installed, ``python -c "import torch"``."""
  commands = {"help": ["-m", "experiments.run", "--help"],
              "import_jax": ["-c", "import jax; jax.devices()"]}
  if have_torch:
    commands["import_torch"] = ["-c", "import torch"]
  row = {"model": "startup"}
  for name, argv in commands.items():
    # absl's --help prints the flags and exits with status 1.
    exit_codes = (0, 1) if name == "help" else (0,)
    seconds = sorted(_timed_process(argv, exit_codes=exit_codes)[0] for _ in range(repeats))
    row[f"{name}_seconds"] = round(seconds[len(seconds) // 2], 3)
    row[f"{name}_seconds_range"] = [round(seconds[0], 3), round(seconds[-1], 3)]
  print(json.dumps(row), flush=True)
  return row


def bench_vae_cli(*, epochs: int) -> dict:
  """Time to result, whole processes: ``experiments.run`` of the default VAE for ``epochs``
  epochs (its evaluations, probes and checkpoints included) with an empty compilation cache
  and again with the cache the first run filled, against ``experiments.torch_vae_run`` (the
  same training and test nelbo / importance-weighted evaluations, PyTorch eager)."""
  import tempfile

  from energy_ae.metrics_io import read_metrics

  with tempfile.TemporaryDirectory() as tmp:
    def jax_run(name: str, cache: str) -> tuple[float, float, dict]:
      workdir = os.path.join(tmp, name)
      seconds, _ = _timed_process(
          ["-m", "experiments.run", "--config=experiments/vae.py", f"--workdir={workdir}",
           f"--config.train.num_epochs={epochs}", "--config.train.progress=False",
           f"--config.compilation_cache_dir={cache}"], env={"JAX_COMPILATION_CACHE_DIR": ""})
      records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
      test = [r for r in records if r["split"] == "test"]
      timing = [r for r in records if r["split"] == "timing"]
      phases = {k[:-2]: round(v, 2) for k, v in (timing[-1] if timing else {}).items()
                if k.endswith("_s")}
      return seconds, test[-1]["nelbo"], phases

    cache = os.path.join(tmp, "cache")
    cold, nelbo, phases = jax_run("cold", cache)
    warm, _, warm_phases = jax_run("warm", cache)
    torch_s, torch_out = _timed_process(["-m", "experiments.torch_vae_run", f"--epochs={epochs}"])
  row = {
      "model": "vae_cli", "epochs": epochs, "seconds": round(cold, 2),
      "seconds_warm_cache": round(warm, 2), "nelbo": round(nelbo, 2),
      "torch_seconds": round(torch_s, 2), "torch_nelbo": torch_out.get("nelbo"),
      "speedup_vs_torch": round(torch_s / cold, 2),
      "speedup_vs_torch_warm_cache": round(torch_s / warm, 2),
      # Where the cold run's time goes, from its own timing record; the rest of the process
      # (Python, imports, JAX's start-up, exit) is what no phase holds.
      "phases": phases, "outside_phases": round(cold - sum(phases.values()), 2),
      "phases_warm_cache": warm_phases,
      "outside_phases_warm_cache": round(warm - sum(warm_phases.values()), 2),
  }
  print(json.dumps(row), flush=True)
  return row


def bench_data_placements(*, quick: bool) -> dict:
  """``experiments.bench_data`` in a process of 8 simulated CPU devices: replicated, sharded
  and streamed data (samples/s, training data per device), and the streamed VAE as 2
  processes joined by jax.distributed."""
  import tempfile

  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "data.json")
    _timed_process(["-m", "experiments.bench_data", f"--out={out}", "--processes=2",
                    f"--steps={10 if quick else 40}", f"--repeats={1 if quick else 3}"],
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8",
                        "JAX_PLATFORMS": "cpu"})
    with open(out) as f:
      return json.load(f)


def bench_results_sweep(*, seeds: int, quick: bool) -> dict:
  """``experiments.results`` of one variant over ``seeds`` seeds as whole processes: the
  seeds trained as one seed sweep against one after another (``--sequential``).

  Each form has its own compilation cache, empty at its first run (cold: what a first command
  pays) and filled by it for the second (warm). Sharing the user's cache would time one form's
  programs compiled and the other's read from earlier runs.
  """
  import tempfile

  argv = ["-m", "experiments.results", "--config=experiments/vae_binarized.py:quick",
          "--only=elbo", f"--seeds={seeds}", "--config.train.progress=False"]
  if quick:
    argv.append("--config.train.num_epochs=1")
  seconds = {}
  with tempfile.TemporaryDirectory() as tmp:
    for form, extra in (("sweep", []), ("sequential", ["--sequential"])):
      cache = f"--config.compilation_cache_dir={tmp}/cache_{form}"
      for cached in ("cold", "warm"):  # a new workdir each time: finished runs are reused
        seconds[form, cached], _ = _timed_process(
            [*argv, *extra, cache, f"--workdir={tmp}/{form}_{cached}"])
  row = {"command": "python " + " ".join(argv), "seeds": seeds,
         "sweep_s": round(seconds["sweep", "cold"], 1),
         "sequential_s": round(seconds["sequential", "cold"], 1),
         "speedup_vs_sequential": round(seconds["sequential", "cold"] / seconds["sweep", "cold"], 2),
         "sweep_s_warm_cache": round(seconds["sweep", "warm"], 1),
         "sequential_s_warm_cache": round(seconds["sequential", "warm"], 1),
         "speedup_vs_sequential_warm_cache": round(
             seconds["sequential", "warm"] / seconds["sweep", "warm"], 2)}
  print(json.dumps(row), flush=True)
  return row


def vae_parity(*, epochs: int) -> dict:
  """Test NELBO of the default VAE trained by this project and by PyTorch (same data,
  architecture, Adam 1e-3, batch 256, epochs), one z sample per test image."""
  import tempfile

  import torch

  config = experiment_config("vae")
  config.train.num_epochs = epochs
  config.train.progress = False
  config.train.linear_probe = False
  with tempfile.TemporaryDirectory() as workdir:
    jax_metrics = train.train_and_evaluate(config, workdir)
  dataset = data_lib.load(config.data)
  model = TorchVAE()
  torch.set_num_threads(os.cpu_count() or 1)
  y_train = torch.from_numpy(dataset.train["y"])
  gen = torch.Generator().manual_seed(0)
  batch = config.train.batch_size
  for _ in range(epochs):
    perm = torch.randperm(len(y_train), generator=gen)
    for i in range(len(y_train) // batch):
      model.step(y_train[perm[i * batch:(i + 1) * batch]])
  torch_nelbo = model.nelbo(torch.from_numpy(dataset.test["y"]))
  result = {"epochs": epochs, "jax_nelbo": round(jax_metrics["nelbo"], 2),
            "torch_nelbo": round(torch_nelbo, 2),
            "difference": round(jax_metrics["nelbo"] - torch_nelbo, 2)}
  print(json.dumps(result), flush=True)
  return result


# ----------------------------------------------------------------------------


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.only) - set(PARTS))
  if unknown:
    raise app.UsageError(f"--only: unknown part(s) {unknown}; valid: {', '.join(PARTS)}")
  want = lambda part: not FLAGS.only or part in FLAGS.only
  checkpoints.quiet_orbax_logging()  # the last line a user sees is the result
  min_time = 0.3 if FLAGS.quick else FLAGS.min_time
  repeats = 1 if FLAGS.quick else FLAGS.repeats
  torch_installed = torch_available()
  have_torch = torch_installed and want("torch")
  if not torch_installed:
    print("PyTorch is not installed: pip install 'energy_ae[bench]' (torch==2.13.0, CPU build); "
          "its columns stay empty.")
  peak = matmul_gflops(min_time=min_time, repeats=repeats)
  print(f"jitted float32 2048 x 2048 matmul: {peak:.1f} GFLOP/s", flush=True)

  y_train = data_lib.load(experiment_config("vae").data).train["y"]
  results = bench_steps(peak, y_train, have_torch, min_time=min_time,
                        repeats=repeats) if want("steps") else []
  out = {
      "machine": {"platform": platform.platform(), "processor": platform.processor(),
                  "cpu_count": os.cpu_count(), "jax": jax.__version__,
                  "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind},
      "command": "python -m experiments.benchmark" + (" --quick" if FLAGS.quick else "") + (
          f" --only={','.join(FLAGS.only)}" if FLAGS.only else ""),
      "matmul_gflops": round(peak, 1),
      "results": results,
  }
  if want("first_steps"):
    out["first_steps"] = bench_first_steps()
  if want("inner_loop"):
    out["inner_loop"] = bench_inner_loop(y_train, num_steps=50 if FLAGS.quick else 200,
                                         min_time=min_time)
  if want("data_placements"):
    out["data_placements"] = bench_data_placements(quick=FLAGS.quick)
  if want("results_sweep"):
    out["results_sweep"] = bench_results_sweep(seeds=2 if FLAGS.quick else 5, quick=FLAGS.quick)
  if jax.devices()[0].platform != "cpu" and want("accelerator"):  # where there is one
    from experiments import bench_data

    out["accelerator"] = bench_data.accelerator_table(
        [256, 1024, 4096], 64, steps=40, repeats=1 if FLAGS.quick else 3)
  if have_torch:
    import torch

    out["machine"]["torch"] = torch.__version__
    out["vae_parity"] = vae_parity(epochs=2 if FLAGS.quick else 20)
    if FLAGS.end_to_end:
      results.append(bench_vae_cli(epochs=2 if FLAGS.quick else 60))
  if want("startup"):
    out["startup"] = bench_startup(repeats=repeats, have_torch=torch_installed)
  out["peak_rss_mib"] = round(peak_rss_mib(), 1)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(out, f, indent=2)
  print(f"wrote {FLAGS.out}")


def bench_steps(peak: float, y_train, have_torch: bool, *, min_time: float,
                repeats: int) -> list[dict]:
  """The per-step rows: the VAE at three batch sizes, with rollback, as a sweep of 8, and
  target propagation (each against PyTorch where ``have_torch``)."""
  results = []
  for batch_size in (32, 256, 1024):
    results.append(bench_step("vae", experiment_config("vae"), batch_size,
                              vae_flops_per_example(), TorchVAE if have_torch else None, peak,
                              min_time=min_time, repeats=repeats, y_train=y_train))
  # The rollback of non-finite steps (train.on_nonfinite = skip) against the default (stop).
  skip_config = experiment_config("vae")
  skip_config.train.on_nonfinite = "skip"
  skip_row = bench_step("vae", skip_config, 32, vae_flops_per_example(), None, peak,
                        min_time=min_time, repeats=repeats, y_train=y_train)
  skip_row["on_nonfinite"] = "skip"
  vae_32 = next(r for r in results if r["model"] == "vae" and r["batch_size"] == 32)
  skip_row["relative_to_stop"] = round(skip_row["samples_per_s"] / vae_32["samples_per_s"], 3)
  results.append(skip_row)
  results.append(bench_sweep(vae_32, sweep_size=8, min_time=min_time, repeats=repeats))
  tp_config = experiment_config("target_prop")
  results.append(bench_step(
      "target_prop", tp_config, 256, target_prop_flops_per_example(tp_config.model.inner_steps),
      TorchTargetProp if have_torch else None, peak, min_time=min_time, repeats=repeats,
      y_train=y_train))
  return results


if __name__ == "__main__":
  _define_flags()
  app.run(main)
