r"""Trained runs side by side: the config values that differ between them and their final
test metrics, as a table on stdout and a CSV.

  python -m experiments.compare runs/vae_b1 runs/vae_b4 [--csv=compare.csv]

Each RUN_DIR is a ``--workdir`` of ``experiments.run`` (``config.json`` + ``metrics.jsonl``);
a β sweep reads as one table with a ``model.beta`` column. The metrics are each run's last
test record; its step and the run's ``status`` are columns: ``finished``, or how it stopped —
``diverged`` (non-finite values; a sweep's variant frozen while the others went on),
``interrupted`` (SIGINT / SIGTERM) or ``unfinished`` (killed, or still running) — with the
step, and the reasons listed under the table.
"""

from __future__ import annotations

import csv
import json
import math
import sys

from absl import app, flags

from energy_ae import config_keys, run_dir

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined only when run as a program: importing this module
  (a test, another tool) must not claim flag names that other tools define too."""
  flags.DEFINE_string("csv", "compare.csv", "Where to write the table as CSV ('' for none).")


def run_status(workdir: str) -> tuple[str, str]:
  """(status, reason) of a run: ``finished``, or ``diverged@N`` / ``interrupted@N`` /
  ``unfinished@N`` with the step N it stopped at."""
  status = run_dir.read_status(workdir)
  records = run_dir.records(workdir)
  last_step = max((r["step"] for r in records), default=0)
  kind = status.get("status")
  if kind is None:  # a run written before status.json: finished if it wrote its timing
    kind = "finished" if any(r["split"] == "timing" for r in records) else "running"
  if kind == "finished":
    return "finished", ""
  if kind == "running":  # no end was written: the process was killed, or still runs
    return f"unfinished@{last_step}", "no end was recorded: killed, or still running"
  return f"{kind}@{status['step']}", status.get("reason", "")


def load_run(workdir: str) -> tuple[dict, dict]:
  """(flat config, last test record with the run's status); NotARunDirectory names what is
  missing."""
  config = config_keys.flatten(run_dir.load_config_dict(workdir))
  last = run_dir.last_record(workdir, "test")
  last["status"], last["status_reason"] = run_status(workdir)
  return config, last


def compare(workdirs: list[str]) -> tuple[list[str], list[list]]:
  """(header, rows): run, the differing config keys, then the test metrics."""
  runs = [load_run(w) for w in workdirs]
  keys = sorted({k for config, _ in runs for k in config})
  differing = [k for k in keys
               if len({json.dumps(config.get(k), sort_keys=True) for config, _ in runs}) > 1]
  differing = [k for k in differing if not k.startswith("distributed.")] or differing
  metric_names = sorted({k for _, metrics in runs for k in metrics}
                        - {"step", "status", "status_reason"})
  header = ["run", *differing, "step", "status", *metric_names]
  rows = []
  for workdir, (config, metrics) in zip(workdirs, runs):
    rows.append([workdir, *(config.get(k, "") for k in differing), metrics.get("step", ""),
                 metrics["status"], *(metrics.get(k, "") for k in metric_names)])
  return header, rows


def stop_reasons(workdirs: list[str]) -> list[str]:
  """One line per run that did not finish: where it stopped and why."""
  lines = []
  for workdir in workdirs:
    status, reason = run_status(workdir)
    if status != "finished":
      lines.append(f"{workdir}: {status.replace('@', ' at step ')}: {reason}")
  return lines


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
  stopped = stop_reasons(workdirs)
  if stopped:
    print("\nRuns that did not finish:\n" + "\n".join(stopped))
  if FLAGS.csv:
    with open(FLAGS.csv, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(header)
      writer.writerows([[json.dumps(v) if isinstance(v, (list, tuple)) else v for v in row]
                        for row in rows])  # full precision
    print(f"wrote {FLAGS.csv}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
