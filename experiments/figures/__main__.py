"""``python -m experiments.figures``: see the package docstring."""

import os

from absl import app, flags

from energy_ae import checkpoints
from experiments.figures import make_figures

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/figures", "Runs under WORKDIR/runs, PNGs under WORKDIR/figures.")
flags.DEFINE_multi_string("only", None, "Make only these figures (repeatable); default: all.")
flags.DEFINE_bool("quick", False, "Train for a few steps only (smoke test of every figure).")
flags.DEFINE_multi_string("run", [], "NAME=DIR: draw the run trained in DIR instead of training "
                          "the figures' run NAME (repeatable).")


def main(argv):
  checkpoints.quiet_orbax_logging()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from energy_ae import train
  from experiments import common

  train.enable_compilation_cache(common.base_config())  # as experiments.run does
  existing = {}
  for item in FLAGS.run:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
      raise SystemExit(f"error: --run={item}: expected NAME=DIR, e.g. --run=vae=runs/my_vae")
    existing[name] = path
  try:
    paths = make_figures(FLAGS.workdir, FLAGS.only, quick=FLAGS.quick, existing=existing)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None
  print(f"wrote {len(paths)} figures and summary.json to {os.path.join(FLAGS.workdir, 'figures')}")


if __name__ == "__main__":
  app.run(main)
