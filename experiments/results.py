r"""Final test numbers over several seeds, with error bars, written to RESULTS.md.

  python -m experiments.results --config=experiments/vae_binarized.py --seeds=5
  python -m experiments.results --config=experiments/vae_binarized.py:quick --seeds=2 \
      --only=elbo --workdir=/tmp/results --out=/tmp/RESULTS.md

Trains every variant of the config file's ``RESULTS_VARIANTS`` ({name: config overrides};
one variant, the config itself, if it has none) with N seeds, ``config.seed`` + 0 … N−1
(``--config.key=value`` overrides apply to every run), each in ``WORKDIR/<variant>/seed_<s>``:
a finished run is reused, an interrupted one resumes. Then writes a Markdown table, per
variant, of the mean ± the standard deviation over seeds (n − 1 in the denominator) of each
run's final test record: every number in it comes from those records, and running the same
command again rewrites it from them (training only what is missing).
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

from energy_ae import checkpoints, data, train
from experiments import common

FLAGS = flags.FLAGS
flags.DEFINE_integer("seeds", 5, "Seeds per variant: 0 … N−1.")
flags.DEFINE_string("workdir", "runs/results", "Runs under WORKDIR/<variant>/seed_<s>.")
flags.DEFINE_string("out", "RESULTS.md", "The Markdown file to write.")
flags.DEFINE_list("only", [], "Variants to run (default: all of the config's RESULTS_VARIANTS).")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)

# Columns of the table: (metric in the final test record, heading); those no run reports
# are left out. The importance-weighted metric is nll_iw on binary data, bce_iw otherwise.
# Not mutual_info: its estimate cannot exceed log N of the test split (6.9 nats for 1,000
# digits), where a trained VAE's already sits; it is in each run's metrics.jsonl.
COLUMNS = (
    ("nelbo", "test −ELBO (nats)"),
    ("nll_iw", "test −log p(y) ≈ −L_k (nats)"),
    ("bce_iw", "test −L_k, cross-entropy (nats)"),
    ("KL", "KL (nats)"),
    ("active_units", "active units"),
    ("probe_accuracy", "probe accuracy (ridge)"),
    ("probe_accuracy_logistic", "probe accuracy (logistic)"),
)


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
  from energy_ae.metrics_io import read_metrics

  records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  tests = [r for r in records if r["split"] == "test"]
  seconds = sum(v for r in records if r["split"] == "timing" for k, v in r.items()
                if k.endswith("_s"))
  return dict(tests[-1], run_s=seconds) if tests else {}


def run_variants(config, variants: dict[str, dict], seeds: int, workdir: str) -> dict:
  """{variant: [final test record per seed]}, training what is not finished."""
  results = {}
  for name, overrides in variants.items():
    results[name] = []
    for seed in range(seeds):
      run_config = common.apply_overrides(
          config.copy_and_resolve_references(), dict(overrides, seed=config.seed + seed))
      run_dir = os.path.join(workdir, name, f"seed_{seed}")
      os.makedirs(run_dir, exist_ok=True)
      train.train_and_evaluate(run_config, run_dir)
      results[name].append(final_record(run_dir))
  return results


def mean_std(values: list[float]) -> tuple[float, float]:
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, float("nan")
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _format(mean: float, std: float, metric: str) -> str:
  digits = 3 if "accuracy" in metric else 1 if metric == "active_units" else 2
  return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


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


def markdown(results: dict, variants: dict, config, command: str, seeds: int,
             seconds: float) -> str:
  present = [(m, h) for m, h in COLUMNS
             if any(m in r for records in results.values() for r in records)]
  k_final = config.model.get("iw_samples_final", 0) or config.model.get("iw_samples", 0)
  lines = [
      "# Results",
      "",
      f"Written by `{command}` on {datetime.date.today().isoformat()}; regenerate with the same",
      "command (finished runs are reused).",
      "",
      f"- Config: `{FLAGS['config'].config_filename}`, data `{config.data.name}` "
      f"(binarize = {config.data.get('binarize', 'none')}), {config.train.num_epochs} epochs "
      f"at batch {config.train.batch_size}; the importance-weighted metric with k = {k_final} "
      "samples at the final evaluation.",
      f"- Each cell: mean ± standard deviation over {seeds} seeds (0 … {seeds - 1}) of the final "
      "test record of each run.",
      f"- Machine: {machine()}.",
      f"- Time: the {sum(len(r) for r in results.values())} runs took "
      f"{sum(r.get('run_s', 0.0) for rs in results.values() for r in rs) / 60:.1f} min (the sum "
      "of their timing records: data, compilation, training, evaluation, probes, checkpoints); "
      f"this command {seconds / 60:.1f} min (runs found finished are read, not trained).",
      "",
      "| variant | overrides | " + " | ".join(h for _, h in present) + " |",
      "|---|---|" + "---|" * len(present),
  ]
  for name, records in results.items():
    overrides = ", ".join(f"{k}={v}" for k, v in variants[name].items()) or "—"
    cells = []
    for metric, _ in present:
      values = [float(r[metric]) for r in records if metric in r]
      cells.append(_format(*mean_std(values), metric) if values else "—")
    lines.append(f"| {name} | {overrides} | " + " | ".join(cells) + " |")
  lines += ["", "Per run (final step, metrics, seconds from its timing records):", ""]
  for name, records in results.items():
    for seed, r in enumerate(records):
      lines.append(f"- {name} seed {seed}: step {r.get('step')}, "
                   + ", ".join(f"{m} {float(r[m]):.4g}" for m, _ in present if m in r)
                   + f"; {r.get('run_s', 0.0):.0f} s")
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.config is None:
    raise ValueError("--config=FILE is required, e.g. --config=experiments/vae_binarized.py")
  if FLAGS.seeds < 1:
    raise ValueError(f"--seeds={FLAGS.seeds}: must be >= 1")
  module = config_module(FLAGS["config"].config_filename)
  variants = variants_of(module, FLAGS.only)
  for overrides in variants.values():  # every variant's config errors before any training
    train.validate_config(common.apply_overrides(FLAGS.config.copy_and_resolve_references(),
                                                 overrides))
  train.enable_compilation_cache(FLAGS.config)
  start = time.perf_counter()
  results = run_variants(FLAGS.config, variants, FLAGS.seeds, FLAGS.workdir)
  command = "python -m experiments.results " + " ".join(sys.argv[1:])
  text = markdown(results, variants, FLAGS.config, command, FLAGS.seeds,
                  time.perf_counter() - start)
  with open(FLAGS.out, "w") as f:
    f.write(text)
  with open(os.path.join(FLAGS.workdir, "results.json"), "w") as f:  # every record, for tools
    json.dump(results, f, indent=1)
  print(text)
  print(f"wrote {FLAGS.out}")


def run():
  checkpoints.quiet_orbax_logging()
  try:
    app.run(main)
  except (ValueError, data.DataError, train.TrainingError, checkpoints.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  run()
