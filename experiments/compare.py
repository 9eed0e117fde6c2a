r"""Trained runs side by side: the config values that differ between them and their final
test metrics, as a table on stdout and a CSV.

  python -m experiments.compare runs/vae_b1 runs/vae_b4 [--csv=compare.csv]

Each RUN_DIR is a ``--workdir`` of ``experiments.run`` (``config.json`` + ``metrics.jsonl``);
a β sweep reads as one table with a ``model.beta`` column. The metrics are each run's last
test record (its step is a column, so an unfinished run shows as one).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys

from absl import app, flags

from energy_ae.metrics_io import read_metrics

FLAGS = flags.FLAGS
flags.DEFINE_string("csv", "compare.csv", "Where to write the table as CSV ('' for none).")


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"model": {"beta": 1}} → {"model.beta": 1}."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, f"{name}."))
    else:
      out[name] = value
  return out


def load_run(workdir: str) -> tuple[dict, dict]:
  """(flat config, last test record) of a run directory; ValueError names what is missing."""
  config_path = os.path.join(workdir, "config.json")
  if not os.path.isfile(config_path):
    raise ValueError(f"{workdir} is not a run directory: it has no config.json")
  with open(config_path) as f:
    config = flatten(json.load(f))
  tests = [r for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "test"]
  last = {k: v for k, v in (tests[-1] if tests else {}).items() if k != "split"}
  return config, last


def compare(workdirs: list[str]) -> tuple[list[str], list[list]]:
  """(header, rows): run, the differing config keys, then the test metrics."""
  runs = [load_run(w) for w in workdirs]
  keys = sorted({k for config, _ in runs for k in config})
  differing = [k for k in keys
               if len({json.dumps(config.get(k), sort_keys=True) for config, _ in runs}) > 1]
  differing = [k for k in differing if not k.startswith("distributed.")] or differing
  metric_names = sorted({k for _, metrics in runs for k in metrics} - {"step"})
  header = ["run", *differing, "step", *metric_names]
  rows = []
  for workdir, (config, metrics) in zip(workdirs, runs):
    rows.append([workdir, *(config.get(k, "") for k in differing), metrics.get("step", ""),
                 *(metrics.get(k, "") for k in metric_names)])
  return header, rows


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}" if math.isfinite(value) else str(value)
  if isinstance(value, (list, tuple)):  # a vector metric (kl_per_dim): in full in the CSV
    return f"[{len(value)} values]"
  return str(value)


def format_table(header: list[str], rows: list[list]) -> str:
  cells = [header, *[[_cell(v) for v in row] for row in rows]]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError("give one or more run directories: python -m experiments.compare RUN_DIR...")
  try:
    header, rows = compare(workdirs)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(format_table(header, rows))
  if FLAGS.csv:
    with open(FLAGS.csv, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows([[json.dumps(v) if isinstance(v, (list, tuple)) else v for v in row]
                        for row in rows])  # full precision
    print(f"wrote {FLAGS.csv}")


if __name__ == "__main__":
  app.run(main)
