r"""Runs one experiment: a thin main; the logic lives in ``energy_ae.train``.

  python -m experiments.run --config=experiments/dae.py [--config.key=value ...] [--workdir=DIR]
  python -m experiments.run --list      # models, data sets, energy terms, corruptions, ...

Without --workdir, a fresh folder under runs/ named after the config and the time.
Errors in the config or the data end the run with one clear last line and exit 1
(--verbose keeps the traceback).
"""

import datetime
import logging as std_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

# The library (JAX, Flax, Orbax) is imported in main, after the flags parsed: `--help` and a
# mistyped flag answer without it.
from experiments import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined only when run as a program: importing this module
  (a test, another tool) must not claim flag names that other tools define too."""
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
  flags.DEFINE_bool("verbose", False, "Print tracebacks of errors.")
  flags.DEFINE_bool("allow_config_change", False, "Continue the run in --workdir with a config "
                    "it was not started with, recording the change as a new segment in its "
                    "config.json and metrics.jsonl (without it, such a resume is refused).")
  flags.DEFINE_bool("list", False, "List the models, data sets, energy terms (with the quantities "
                    "each reads and its keywords), corruptions and inner optimisers, then exit.")
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", f"{name}-{stamp}")


def listing() -> str:
  """What a config can name, with the quantities and keywords of each energy term."""
  import inspect

  from energy_ae import corruptions, data, energies, models
  from energy_ae.models import target_prop

  def keywords(fn):
    params = inspect.signature(fn).parameters.values()
    return ", ".join(f"{p.name}={p.default!r}" for p in params if p.kind is p.KEYWORD_ONLY)

  def first_line(obj):
    return (inspect.getdoc(obj) or "").splitlines()[0] if inspect.getdoc(obj) else ""

  lines = ["models (config.model.name; or your own module path my_pkg.my_model):"]
  for name in models.model_names():
    lines.append(f"  {name:22s} {first_line(models.get_model_module(name))}")
  lines.append("data sets (config.data.name):")
  lines += [f"  {name}" for name in data.dataset_names()]
  lines.append("energy terms (config.model.energy.<role>.term; or an import path "
               "my_terms:my_function):")
  for name in energies.term_names():
    fn = energies.get_term(name)
    inputs = ", ".join(energies.parse_term("?", name).inputs)
    lines.append(f"  {name:22s} reads ({inputs}); keywords: {keywords(fn) or '-'}")
    lines.append(f"  {'':22s} {first_line(fn)}")
  lines.append("corruptions (config.model.corruption, keywords in model.corruption_kwargs.<name>):")
  for name in corruptions.corruption_names():
    lines.append(f"  {name:22s} keywords: {keywords(corruptions.get_corruption(name))}")
  lines.append("inner optimisers (config.model.inner_optimizer; model.inner_lr = 0: the default):")
  for name in target_prop.inner_optimizer_names():
    lines.append(f"  {name:22s} default inner_lr {target_prop.INNER_LR_DEFAULTS[name]}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.list:
    print(listing())
    return
  if FLAGS.config is None:
    raise ValueError("--config=FILE is required, e.g. --config=experiments/dae.py")
  config = FLAGS.config
  from energy_ae import sweep, train

  train.maybe_initialize_distributed(config)  # before any device is touched
  import jax

  train.enable_compilation_cache(config)

  workdir = FLAGS.workdir or default_workdir(flags.FLAGS["config"].config_filename)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is an existing file, not a directory")
  os.makedirs(workdir, exist_ok=True)
  logging.info("JAX process %d of %d; local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  logging.info("Workdir: %s", workdir)
  rounded = lambda metrics: {k: round(v, 4) for k, v in metrics.items()
                             if isinstance(v, float)}  # vectors (kl_per_dim): metrics.jsonl
  if sweep.sweep_key(config):
    sweep.train_and_evaluate(config, workdir, allow_config_change=FLAGS.allow_config_change)
    return  # the sweep logged each variant's final test metrics
  final = train.train_and_evaluate(config, workdir, allow_config_change=FLAGS.allow_config_change)
  logging.info("Final test metrics: %s", rounded(final))


def run():
  define_flags()
  std_logging.getLogger("absl").setLevel(std_logging.INFO)
  cli.run(main)


if __name__ == "__main__":
  run()
