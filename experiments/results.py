r"""Final test numbers over several seeds, with error bars, as a Markdown table.

  python -m experiments.results --config=experiments/vae_binarized.py --seeds=5 --out=RESULTS.md
  python -m experiments.results --config=experiments/dae.py:quick --seeds=2 --workdir=/tmp/dae

Trains every variant of the config file's ``RESULTS_VARIANTS`` ({name: config overrides};
one variant, the config itself, if it has none) with N seeds, ``config.seed`` + 0 … N−1
(``--config.key=value`` overrides apply to every run). The seeds of a variant train as one
seed sweep (``energy_ae.sweep``: one vmapped step; ``--sequential`` trains them one after
another instead), each seed its own run directory ``WORKDIR/<variant>/sweep/seed=<s>``: a
finished run is reused, an unfinished one resumes. Then writes a Markdown table, per variant,
of the mean ± the standard deviation over seeds (n − 1 in the denominator) of every scalar
metric of each run's final test record — the model's own metrics, whatever the model — to
``--out`` (default ``WORKDIR/RESULTS.md``: the repository's RESULTS.md only when asked for).
Every number comes from those records; running the same command again rewrites the table
from them, training only what is missing.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import platform
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from energy_ae import run_dir, sweep, train
from experiments import cli, common

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined only when run as a program: importing this module
  (a test, another tool) must not claim flag names that other tools define too."""
  flags.DEFINE_integer("seeds", 5, "Seeds per variant: config.seed + 0 … N−1.")
  flags.DEFINE_string("workdir", "runs/results", "Runs under WORKDIR/<variant>/.")
  flags.DEFINE_string("out", "", "The Markdown file to write (default: WORKDIR/RESULTS.md).")
  flags.DEFINE_list("only", [], "Variants to run (default: all of the config's RESULTS_VARIANTS).")
  flags.DEFINE_bool("sequential", False, "Train the seeds one after another (runs in "
                    "WORKDIR/<variant>/seed=<s>) instead of as one seed sweep.")
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)

# Metrics shown first, with their headings, when a model reports them; every other scalar of
# the final test record follows under its own name.
HEADINGS = {
    "nelbo": "test −ELBO (nats)",
    "nll_iw": "test −log p(y) ≈ −L_k (nats)",
    "bce_iw": "test −L_k, cross-entropy (nats)",
    "KL": "KL (nats)",
    "active_units": "active units",
    "C": "C",
    "psnr_in": "PSNR in (dB)",
    "psnr_out": "PSNR out (dB)",
    "loss": "loss",
    "probe_accuracy": "probe accuracy (ridge)",
    "probe_accuracy_logistic": "probe accuracy (logistic)",
}
# Not mutual_info: its estimate cannot exceed log N of the test split (6.9 nats for 1,000
# digits), where a trained VAE's already sits; it is in each run's metrics.jsonl.
LEFT_OUT = ("mutual_info", "step", "run_s")


def config_module(config_path: str):
  """The config file as a module (for its RESULTS_VARIANTS)."""
  path = config_path.split(":")[0]
  spec = importlib.util.spec_from_file_location("_results_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def variants_of(module, only: list[str]) -> dict[str, dict]:
  variants = getattr(module, "RESULTS_VARIANTS", None) or {"default": {}}
  unknown = [name for name in only if name not in variants]
  if unknown:
    raise ValueError(f"unknown variant(s) {unknown}; this config's variants: "
                     f"{', '.join(variants)}")
  return {name: v for name, v in variants.items() if not only or name in only}


def final_record(workdir: str) -> dict:
  """The run's last test record, with ``run_s``: the seconds its phases took (its timing
  records: data, compile, training, evaluation, probe, checkpoint), resumed parts included."""
  seconds = sum(v for r in run_dir.records(workdir, "timing") for k, v in r.items()
                if k.endswith("_s"))
  last = run_dir.last_record(workdir, "test")
  return dict(last, run_s=seconds) if last else {}


def _finished(workdir: str) -> bool:
  return run_dir.read_status(workdir).get("status") == "finished"


def run_variant(config, overrides: dict, seeds: int, workdir: str, *, sequential: bool) -> list:
  """The final test record of each seed of one variant, training what is not finished."""
  config = common.apply_overrides(config.copy_and_resolve_references(), overrides)
  seed_values = [config.seed + s for s in range(seeds)]
  if sequential:
    dirs = [os.path.join(workdir, f"seed={s}") for s in seed_values]
    for seed, directory in zip(seed_values, dirs):
      if not _finished(directory):
        train.train_and_evaluate(common.apply_overrides(
            config.copy_and_resolve_references(), {"seed": seed}), directory)
    return [final_record(d) for d in dirs]
  dirs = [os.path.join(workdir, "sweep", sweep.variant_name("seed", s)) for s in seed_values]
  missing = tuple(s for s, d in zip(seed_values, dirs) if not _finished(d))
  if missing:  # one sweep of the seeds not finished (a finished run is read, not retrained)
    with config.unlocked():
      config.sweep.key, config.sweep["values"] = "seed", missing
    sweep.train_and_evaluate(config, workdir)
  return [final_record(d) for d in dirs]


def mean_std(values: list[float]) -> tuple[float, float]:
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, float("nan")
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _format(mean: float, std: float, metric: str) -> str:
  digits = 3 if "accuracy" in metric else 1 if metric == "active_units" else 2
  return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def columns(results: dict) -> list[str]:
  """The scalar metrics the runs report: the known ones in HEADINGS' order, then the rest."""
  present = {k for records in results.values() for r in records for k, v in r.items()
             if isinstance(v, (int, float)) and k not in LEFT_OUT}
  return [k for k in HEADINGS if k in present] + sorted(present - set(HEADINGS))


def machine() -> str:
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  devices = jax.devices()
  return (f"{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on {len(devices)} "
          f"{devices[0].platform} device(s); Python {platform.python_version()}")


def describe(config) -> str:
  """What was trained, from the config: model, data (and its binarisation), budget, and the
  VAE's importance-sampled k where there is one."""
  text = (f"model `{config.model.name}`, data `{config.data.name}`"
          + (" binarised dynamically" if config.data.get("binarize", "none") == "dynamic"
             else "")
          + f", {config.train.num_epochs} epoch{'' if config.train.num_epochs == 1 else 's'} at batch "
          f"{config.train.batch_size}")
  k = config.model.get("iw_samples_final", 0) or config.model.get("iw_samples", 0)
  if k:
    text += f"; the importance-weighted metric with k = {k} samples at the final evaluation"
  return text


def total_minutes(results: dict, sequential: bool) -> float:
  """Minutes the runs took: each run's own in turn, or each variant's sweep once (every seed
  of a sweep records the whole sweep's phases)."""
  per_variant = [[r.get("run_s", 0.0) for r in records] for records in results.values()]
  seconds = sum(sum(v) if sequential else max(v, default=0.0) for v in per_variant)
  return seconds / 60


def markdown(results: dict, variants: dict, config, command: str, seconds: float,
             sequential: bool) -> str:
  present = columns(results)
  seeds = len(next(iter(results.values())))
  runs = [r for records in results.values() for r in records]
  lines = [
      "# Results", "",
      f"Written by `{command}` on {datetime.date.today().isoformat()}; regenerate with the same",
      "command (finished runs are reused).", "",
      f"- Config: `{FLAGS['config'].config_filename}`: {describe(config)}.",
      f"- Each cell: mean ± standard deviation over {seeds} seeds ({config.seed} … "
      f"{config.seed + seeds - 1}) of the final test record of each run.",
      f"- Machine: {machine()}.",
      f"- Time: the {len(runs)} runs took {total_minutes(results, sequential):.1f} min of "
      "training by their timing records (data, compilation, training, evaluation, probes, "
      "checkpoints; "
      + ("seeds one after another" if sequential else
         "the seeds of a variant as one sweep, whose time each seed's record holds")
      + f"); this command {seconds / 60:.1f} min (runs found finished are read, not trained).",
      "",
      "| variant | overrides | " + " | ".join(HEADINGS.get(m, m) for m in present) + " |",
      "|---|---|" + "---|" * len(present),
  ]
  for name, records in results.items():
    overrides = ", ".join(f"{k}={v}" for k, v in variants[name].items()) or "—"
    cells = []
    for metric in present:
      values = [float(r[metric]) for r in records if metric in r]
      cells.append(_format(*mean_std(values), metric) if values else "—")
    lines.append(f"| {name} | {overrides} | " + " | ".join(cells) + " |")
  lines += ["", "Per run (final step, metrics, seconds from its timing records):", ""]
  for name, records in results.items():
    for seed, r in enumerate(records):
      lines.append(f"- {name} seed {config.seed + seed}: step {r.get('step')}, "
                   + ", ".join(f"{m} {float(r[m]):.4g}" for m in present if m in r)
                   + f"; {r.get('run_s', 0.0):.0f} s")
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.config is None:
    raise ValueError("--config=FILE is required, e.g. --config=experiments/vae_binarized.py")
  if FLAGS.seeds < 1:
    raise ValueError(f"--seeds={FLAGS.seeds}: must be >= 1")
  if sweep.sweep_key(FLAGS.config):
    raise ValueError("experiments.results sweeps the seeds itself: leave config.sweep.key empty")
  module = config_module(FLAGS["config"].config_filename)
  variants = variants_of(module, FLAGS.only)
  for overrides in variants.values():  # every variant's config errors before any training
    train.validate_config(common.apply_overrides(FLAGS.config.copy_and_resolve_references(),
                                                 overrides))
  out = FLAGS.out or os.path.join(FLAGS.workdir, "RESULTS.md")
  train.enable_compilation_cache(FLAGS.config)
  start = time.perf_counter()
  results = {name: run_variant(FLAGS.config, overrides, FLAGS.seeds,
                               os.path.join(FLAGS.workdir, name), sequential=FLAGS.sequential)
             for name, overrides in variants.items()}
  command = "python -m experiments.results " + " ".join(sys.argv[1:])
  text = markdown(results, variants, FLAGS.config, command, time.perf_counter() - start,
                  FLAGS.sequential)
  common.write_section(out, "experiments.results", text)  # other tools' sections are kept
  with open(os.path.join(FLAGS.workdir, "results.json"), "w") as f:  # every record, for tools
    json.dump(results, f, indent=1)
  print(text)
  print(f"wrote {out}")


def run():
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  run()
