r"""Runs one experiment: a thin main; the logic lives in ``energy_ae.train``.

  python -m experiments.run --config=experiments/dae.py [--config.key=value ...] [--workdir=DIR]

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

from energy_ae import checkpoints, data, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
flags.DEFINE_bool("verbose", False, "Print tracebacks of errors.")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)

EXPECTED_ERRORS = (ValueError, data.DataError, train.TrainingError, checkpoints.CheckpointError,
                   FileNotFoundError, KeyError, TypeError)


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  return os.path.join("runs", f"{name}-{stamp}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  train.maybe_initialize_distributed(config)  # before any device is touched
  import jax

  workdir = FLAGS.workdir or default_workdir(flags.FLAGS["config"].config_filename)
  os.makedirs(workdir, exist_ok=True)
  logging.info("JAX process %d of %d; local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  logging.info("Workdir: %s", workdir)
  final = train.train_and_evaluate(config, workdir)
  logging.info("Final test metrics: %s", {k: round(v, 4) for k, v in final.items()})


class _HideOrbaxChatter(std_logging.Filter):
  """Orbax logs every file it renames at INFO; keep its warnings and errors only."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def run():
  std_logging.getLogger("absl").setLevel(std_logging.INFO)
  std_logging.getLogger("absl").addFilter(_HideOrbaxChatter())
  try:
    app.run(main)
  except EXPECTED_ERRORS as e:
    if "--verbose" in sys.argv:
      traceback.print_exc()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  run()
