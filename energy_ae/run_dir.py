"""A run directory, the ``--workdir`` of a run: the one place that knows its layout.

::

  WORKDIR/config.json     the resolved config the run was started with
  WORKDIR/metrics.jsonl   one record per line: {"step", "split": train | test | timing | end, ...}
  WORKDIR/tensorboard/    the same scalars as TensorBoard events
  WORKDIR/checkpoints/    Orbax checkpoints of the train state, one folder per step

A sweep's variants are run directories of their own under ``WORKDIR/sweep/``. The loop writes
through these functions; ``compare``, ``sample``, ``results``, the figures and the benchmark
read through them.
"""

from __future__ import annotations

import json
import os

from energy_ae.metrics_io import read_metrics

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"


class NotARunDirectory(ValueError):
  """A path that holds no run (no config.json)."""


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS_FILE)


def checkpoints_path(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINTS_DIR)


def is_run_dir(workdir: str) -> bool:
  return os.path.isfile(config_path(workdir))


def require(workdir: str, what: str = "") -> None:
  """Raises NotARunDirectory naming ``workdir`` (and ``what`` asked for it) if it holds no run."""
  if not is_run_dir(workdir):
    prefix = f"{what}: " if what else ""
    kind = "no such directory" if not os.path.exists(workdir) else "it has no config.json"
    raise NotARunDirectory(f"{prefix}{workdir} is not a run directory ({kind})")


def load_config_dict(workdir: str, what: str = "") -> dict:
  """The run's config.json as a plain nested dict."""
  require(workdir, what)
  with open(config_path(workdir)) as f:
    return json.load(f)


def load_config(workdir: str, what: str = ""):
  """The run's config as an ``ml_collections.ConfigDict`` (tuples come back as lists)."""
  import ml_collections

  return ml_collections.ConfigDict(load_config_dict(workdir, what))


def write_config(workdir: str, config) -> None:
  """Writes ``config`` (a ConfigDict) as the run's config.json, atomically."""
  os.makedirs(workdir, exist_ok=True)
  tmp = config_path(workdir) + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, config_path(workdir))


def records(workdir: str, split: str | None = None) -> list[dict]:
  """The run's complete metric records, of one ``split`` or all."""
  found = read_metrics(metrics_path(workdir))
  return found if split is None else [r for r in found if r.get("split") == split]


def last_record(workdir: str, split: str = "test") -> dict:
  """The run's last record of ``split`` without its ``split`` key ({} if none)."""
  found = records(workdir, split)
  return {k: v for k, v in found[-1].items() if k != "split"} if found else {}
