"""Metric writing: ``metrics.jsonl`` (one JSON object per line) and TensorBoard events.

Each record is ``{"step": int, "split": "train" | "test", name: value, ...}`` (a value is a
float, or a list of floats for a vector metric), written
in one ``write`` and flushed, so a killed run leaves at most a torn last line. On
resume from the checkpoint at step s, records after s (and a torn line) are dropped,
so that the file never holds duplicated steps.
"""

from __future__ import annotations

import json
import math
import os


def read_metrics(path: str) -> list[dict]:
  """The complete records of a ``metrics.jsonl`` (a torn last line is skipped)."""
  records = []
  if not os.path.exists(path):
    return records
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def _jsonable(value):
  """A float (non-finite ones as "nan" / "inf" strings), or a list of them for a vector metric
  (e.g. a VAE's ``kl_per_dim``)."""
  if isinstance(value, (list, tuple)) or getattr(value, "ndim", 0):
    return [_jsonable(v) for v in value]
  value = float(value)
  return value if math.isfinite(value) else str(value)


def _summary_writer_class():
  """tensorboardX's ``SummaryWriter``, imported without PyTorch: ``tensorboardX.writer`` tries
  ``import torch`` when it is imported (to accept torch tensors), which would cost every run
  PyTorch's import wherever it is installed (the benchmark's environment) for scalars that
  are floats. A ``None`` in ``sys.modules`` makes that import fail as if torch were absent;
  a process that imported torch itself keeps it."""
  import sys

  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter

    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = None
    self._tb = None
    self.last = {}
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:  # rewrite atomically: no torn line, no step after the checkpoint
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, self.path)
    for r in kept:
      self.last[r["split"]] = r
    self._file = open(self.path, "a")
    SummaryWriter = _summary_writer_class()
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1
                             if resume_step else None)

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({k: _jsonable(v) for k, v in sorted(metrics.items())})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    os.fsync(self._file.fileno())
    self.last[split] = record
    for name, value in record.items():
      if name in ("step", "split"):
        continue
      if isinstance(value, list):  # a vector metric: one curve per component
        for i, v in enumerate(value):
          self._tb.add_scalar(f"{split}/{name}/{i}", float(v), int(step))
      else:
        self._tb.add_scalar(f"{split}/{name}", float(value), int(step))
    self._tb.flush()

  def write_event(self, step: int, split: str, payload: dict) -> None:
    """A record of plain JSON values that are no curves (no TensorBoard scalars), e.g. the
    config changes a resumed segment was allowed (``split = "segment"``)."""
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, **payload}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    os.fsync(self._file.fileno())
    self.last[split] = record

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._tb.close()
      self._file = None
