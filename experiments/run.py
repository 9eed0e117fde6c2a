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
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from energy_ae import checkpoints, data, sweep, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
flags.DEFINE_bool("verbose", False, "Print tracebacks of errors.")
flags.DEFINE_bool("list", False, "List the models, data sets, energy terms (with the quantities "
                  "each reads and its keywords), corruptions and inner optimisers, then exit.")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)

EXPECTED_ERRORS = (ValueError, data.DataError, train.TrainingError, checkpoints.CheckpointError,
                   FileNotFoundError, KeyError, TypeError)


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", f"{name}-{stamp}")


def listing() -> str:
  """What a config can name, with the quantities and keywords of each energy term."""
  import inspect

  from energy_ae import corruptions, energies, models
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
    finals = sweep.train_and_evaluate(config, workdir)
    for value, final in zip(sweep.plan(config, workdir).values, finals):
      logging.info("Final test metrics of %s: %s", sweep.variant_name(config.sweep.key, value),
                   rounded(final))
    return
  final = train.train_and_evaluate(config, workdir)
  logging.info("Final test metrics: %s", rounded(final))


def _config_path(argv: list[str], variant: bool = False) -> str:
  """The file of --config=FILE[:arg] (or --config FILE[:arg]) on the command line."""
  for i, arg in enumerate(argv):
    value = (arg.split("=", 1)[1] if arg.startswith("--config=")
             else argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
    if value is not None:
      return value if variant else value.split(":")[0]
  return "(none given)"


def _explain_flag_error(e: Exception, argv: list[str]) -> str | None:
  """Says which --config flag failed to parse, or None for an error of ours."""
  while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(...))
    e = e.args[0]
  text = str(e.args[0]) if e.args else ""
  if "has no attribute 'get_config'" in text:
    return f"config file {_config_path(argv)} has no get_config() function"
  lines = text.splitlines() or [""]
  missing, hint = lines[0].strip("\"'"), " ".join(lines[1:])
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      key = arg[len("--config."):].split("=", 1)[0]
      if missing and missing in key.split("."):
        return (f"{arg}: the config has no key {key!r} (overrides can only change existing "
                f"keys){'; ' + hint if hint else ''}")
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with an error raised by the config file's get_config() (an unknown
  variant, a bad value) turned into one line instead of absl's traceback dump."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if "Error whilst parsing config file" not in text:
      raise
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    _fail(f"--config={_config_path(argv, variant=True)}: {last.split(': ', 1)[-1]}")


def run():
  std_logging.getLogger("absl").setLevel(std_logging.INFO)
  checkpoints.quiet_orbax_logging()
  try:
    app.run(main, flags_parser=_parse_flags)
  except (KeyError, AttributeError) as e:  # ml_collections: no such key / no get_config
    message = _explain_flag_error(e, sys.argv)
    if message is None and isinstance(e, KeyError):
      message = str(e.args[0]) if e.args else repr(e)  # str() of a KeyError is its repr
    if message is None:
      raise
    _fail(message)
  except OSError as e:
    if "Configuration is not available" not in str(e):  # ml_collections: unreadable config file
      if isinstance(e, FileNotFoundError):
        _fail(str(e))
      raise
    _fail(f"config file {_config_path(sys.argv)} cannot be loaded: "
          f"{str(e).strip().splitlines()[-1].strip()}")
  except EXPECTED_ERRORS as e:
    _fail(str(e))
  except train.Interrupted as e:  # checkpoint saved; exit as a signal-killed process would
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(128 + e.signum)
  except KeyboardInterrupt:  # before the loop installed its handler: nothing to save yet
    print("stopped: interrupted before training started; nothing was written",
          file=sys.stderr)
    sys.exit(130)


def _fail(message: str):
  if "--verbose" in sys.argv:
    traceback.print_exc()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


if __name__ == "__main__":
  run()
