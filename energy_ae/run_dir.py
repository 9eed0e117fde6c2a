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
SEGMENTS_KEY = "segments"  # in config.json: config changes accepted on resume, with their step


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


def require(workdir: str, flag: str = "") -> None:
  """Raises NotARunDirectory naming ``workdir`` if it holds no run; ``flag`` is how the user
  gave it (``--workdir=``), put before it in the message."""
  if not is_run_dir(workdir):
    kind = "no such directory" if not os.path.exists(workdir) else "it has no config.json"
    raise NotARunDirectory(f"{flag}{workdir} is not a run directory: {kind}")


def load_config_dict(workdir: str, flag: str = "") -> dict:
  """The run's config.json as a plain nested dict (without its ``segments``, the history of
  changes accepted on resume: ``segments``)."""
  require(workdir, flag)
  with open(config_path(workdir)) as f:
    config = json.load(f)
  config.pop(SEGMENTS_KEY, None)
  return config


def load_config(workdir: str, flag: str = ""):
  """The run's config as an ``ml_collections.ConfigDict`` (tuples come back as lists)."""
  import ml_collections

  return ml_collections.ConfigDict(load_config_dict(workdir, flag))


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


def checkpoint_manager(workdir: str, max_to_keep: int = 3):
  """The Orbax checkpoint manager of the run's checkpoints/ (created if absent)."""
  from energy_ae import checkpoints

  return checkpoints.Manager(checkpoints_path(workdir), max_to_keep=max_to_keep)


# How the run's last segment ended, in status.json: ``running`` while it trains (a run killed
# by SIGKILL or a lost machine stays there), then ``finished``, ``interrupted`` (SIGINT /
# SIGTERM, checkpoint saved) or ``diverged`` (non-finite values; ``frozen``: a sweep's variant
# that stopped while the others went on).
STATUS_FILE = "status.json"
STATUSES = ("running", "finished", "interrupted", "diverged")


def write_status(workdir: str, status: str, step: int, reason: str = "", *,
                 frozen: bool = False) -> None:
  if status not in STATUSES:
    raise ValueError(f"run status {status!r}: must be one of {', '.join(STATUSES)}")
  record = {"status": status, "step": int(step), "reason": reason}
  if frozen:
    record["frozen"] = True
  tmp = os.path.join(workdir, STATUS_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(record, f)
  os.replace(tmp, os.path.join(workdir, STATUS_FILE))


def read_status(workdir: str) -> dict:
  """The run's status.json ({} for a run written before it existed, or none)."""
  path = os.path.join(workdir, STATUS_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


# ----------------------------------------------------------------------------
# Resume only what was started
# ----------------------------------------------------------------------------

# Keys a resumed run may change: when and how often it logs, evaluates and saves, how it is
# dispatched and displayed, where it caches compiled programs and how its processes meet —
# none changes what is trained nor what a metric means. ``train.num_epochs`` extends (or
# shortens) the run; a constant rate or Burda's stages are unaffected, a cosine schedule is
# rebuilt for the new number of steps, so its rate jumps at the resume step (logged).
SAFE_ON_RESUME = ("train.num_epochs", "train.log_every", "train.eval_every",
                  "train.checkpoint_every", "train.checkpoints_to_keep", "train.progress",
                  "train.steps_per_dispatch", "train.eval_batch_size", "compilation_cache_dir",
                  "compilation_cache_min_seconds", "compilation_cache_max_gb",
                  # how the data is read, not which: the same batches in the same order
                  "data.stream_threads", "data.stream_prefetch", "data.memory_budget_gb")
# sample.*: read by experiments.sample after training, never by the training loop
SAFE_PREFIXES_ON_RESUME = ("distributed.", "sample.")


class ConfigChanged(ValueError):
  """A run directory resumed with a config it was not started with."""


def _flat_json(config) -> dict:
  from energy_ae import config_keys

  tree = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
      else config
  tree.pop(SEGMENTS_KEY, None)
  return config_keys.flatten(tree)


def config_changes(workdir: str, config) -> dict[str, tuple]:
  """{key: (stored value, new value)} of every key whose value differs between the run's
  config.json and ``config`` (a key only one of them has counts, as None on the other side)."""
  if not is_run_dir(workdir):
    return {}
  stored, new = _flat_json(load_config_dict(workdir)), _flat_json(config)
  return {k: (stored.get(k), new.get(k)) for k in sorted(set(stored) | set(new))
          if stored.get(k) != new.get(k)}


def is_safe_on_resume(key: str) -> bool:
  return key in SAFE_ON_RESUME or key.startswith(SAFE_PREFIXES_ON_RESUME)


def check_resume(workdir: str, config, *, allow_changes: bool) -> dict[str, tuple]:
  """The changes of ``config`` against the run in ``workdir`` that are not safe on resume;
  ConfigChanged (one line naming them and the two ways on) unless ``allow_changes``."""
  changes = config_changes(workdir, config)
  unsafe = {k: v for k, v in changes.items() if not is_safe_on_resume(k)}
  if unsafe and not allow_changes:
    listed = ", ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in list(unsafe.items())[:6])
    more = f" and {len(unsafe) - 6} more" if len(unsafe) > 6 else ""
    raise ConfigChanged(
        f"{workdir} holds a run started with another config ({listed}{more}); a run resumes "
        "only what it started: train the new config in a new --workdir, or pass "
        "--allow_config_change to continue this run with it, recorded as a new segment in "
        "config.json and metrics.jsonl")
  return unsafe


def segments(workdir: str) -> list[dict]:
  """The config changes accepted on resume: [{"step": s, "changes": {key: [old, new]}}]."""
  if not is_run_dir(workdir):
    return []
  with open(config_path(workdir)) as f:
    return json.load(f).get(SEGMENTS_KEY, [])


def write_config_with_segments(workdir: str, config, history: list[dict]) -> None:
  """config.json: ``config`` and, if any, the ``segments`` of accepted changes."""
  if not history:
    write_config(workdir, config)
    return
  tree = json.loads(config.to_json_best_effort())
  tree[SEGMENTS_KEY] = history
  tmp = config_path(workdir) + ".tmp"
  with open(tmp, "w") as f:
    json.dump(tree, f, indent=2)
  os.replace(tmp, config_path(workdir))
