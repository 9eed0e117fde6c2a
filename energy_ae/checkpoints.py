"""Orbax checkpoints of the train state: save every N steps, keep the last few, resume.

Orbax writes each checkpoint into a temporary folder and renames it when complete,
so a process killed mid-write leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

# JAX and Orbax are imported where a checkpoint is written or read, not here: the entry points
# import this module for quiet_orbax_logging, and `--help`, a mistyped flag or a tool that reads
# no checkpoint should not pay for them (Orbax's import is a large part of a command's start-up).


class _HideOrbaxChatter(logging.Filter):
  """Orbax logs every file it writes at INFO; keep its warnings and errors only."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def quiet_orbax_logging() -> None:
  """Drops orbax's INFO records from the absl / root log handlers (entry points call it)."""
  chatter = _HideOrbaxChatter()
  for name in ("absl", ""):
    logger = logging.getLogger(name)
    logger.addFilter(chatter)
    for handler in logger.handlers:
      handler.addFilter(chatter)


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored into this run's state."""


# Written beside each finished checkpoint: the SHA-256 of every file orbax wrote, so a
# damaged checkpoint is named before orbax reads it (orbax fails deep inside tensorstore).
DIGEST_FILE = "energy_ae_digest.json"
EXTRA_FILE = "energy_ae_extra.json"  # what the run saves beside the state (the data pipeline's)


def _file_digests(step_dir: str) -> dict[str, str]:
  digests = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel.startswith(DIGEST_FILE):
        continue
      with open(path, "rb") as f:
        digests[rel] = hashlib.file_digest(f, "sha256").hexdigest()
  return digests


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):  # dict key, attribute (named tuple) or sequence index
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _describe(tree) -> dict[str, tuple[int, ...]]:
  """{'params/encoder/dense_0/kernel': shape, ...} for live arrays and for stored metadata."""
  import jax

  return {"/".join(_key_name(k) for k in path): tuple(x.shape)
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def _first_line(error: Exception, limit: int = 200) -> str:
  text = (str(error).splitlines() or [""])[0].rstrip(".:")
  return text if len(text) <= limit else text[:limit] + " ..."


class Manager:
  def __init__(self, directory: str, *, max_to_keep: int = 3):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False),
        item_handlers=ocp.StandardCheckpointHandler())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, extra: dict | None = None) -> None:
    """Saves ``state`` at ``step`` and, beside it, ``extra``: a JSON record (the data
    pipeline's state), covered by the digest like the arrays."""
    if step in self._manager.all_steps():
      return
    import jax

    ocp = self._ocp
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      step_dir = self._step_dir(step)
      if extra:
        with open(os.path.join(step_dir, EXTRA_FILE), "w") as f:
          json.dump(extra, f)
      digests = _file_digests(step_dir)
      tmp = os.path.join(step_dir, DIGEST_FILE + ".tmp")
      with open(tmp, "w") as f:
        json.dump(digests, f)
      os.replace(tmp, os.path.join(step_dir, DIGEST_FILE))

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _verify(self, step: int, where: str, advice: str) -> None:
    """Compares the files of a checkpoint with the digests written when it was saved."""
    path = os.path.join(self._step_dir(step), DIGEST_FILE)
    if not os.path.exists(path):  # killed between orbax's commit and the digest: unverified
      return
    with open(path) as f:
      saved = json.load(f)
    found = _file_digests(self._step_dir(step))
    changed = sorted(k for k in saved if found.get(k) != saved[k])
    if changed:
      missing = [k for k in changed if k not in found]
      one = len(changed) == 1  # "1 of the 15 files has changed", "2 of them have"
      what = (("is" if one else "are") + " missing or changed" if missing
              else ("has" if one else "have") + " changed")
      raise CheckpointError(
          f"{where} is damaged: {len(changed)} of the {len(saved)} files saved {what} "
          f"since it was saved "
          f"({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}). {advice}")

  def read_extra(self, step: int | None) -> dict:
    """The JSON record saved beside the checkpoint at ``step`` ({} if none)."""
    path = os.path.join(self._step_dir(step), EXTRA_FILE) if step is not None else ""
    if not path or not os.path.isfile(path):
      return {}
    with open(path) as f:
      return json.load(f)

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest(self, target, step: int | None = None):
    """The latest checkpoint (or the one at ``step``) restored into ``target``'s structure
    and shardings, or ``target`` when there is none.

    The stored array shapes are compared with ``target``'s before reading any data,
    so another model or changed shapes is a ``CheckpointError`` naming the arrays,
    and so is a checkpoint whose files are damaged.
    """
    step = self._manager.latest_step() if step is None else step
    if step is None:
      return target
    where = f"the checkpoint at step {step} in {self.directory}"
    advice = "Use another --workdir, or delete that checkpoint to resume from an earlier one."
    self._verify(step, where, advice)
    try:
      metadata = self._manager.item_metadata(step)
    except Exception as e:  # orbax raises many types for unreadable metadata
      raise CheckpointError(f"{where} is damaged ({type(e).__name__}: {_first_line(e)}). "
                            f"{advice}") from e
    stored = getattr(metadata, "tree", None)
    if stored is None:
      raise CheckpointError(f"{where} is damaged: its metadata is missing. {advice}")
    want, got = _describe(target), _describe(stored)
    if want != got:
      missing = sorted(set(want) - set(got))
      extra = sorted(set(got) - set(want))
      differ = [f"{k} {got[k]} vs {want[k]}" for k in sorted(set(want) & set(got))
                if want[k] != got[k]]
      parts = ([f"shapes differ (stored vs this run): {', '.join(differ[:4])}"] if differ else [])
      parts += [f"not stored: {', '.join(missing[:4])}"] if missing else []
      parts += [f"not in this model: {', '.join(extra[:4])}"] if extra else []
      raise CheckpointError(f"{where} belongs to another model or config; "
                            f"{'; '.join(parts)}. {advice}")
    import jax

    ocp = self._ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # shapes matched: the array files themselves are damaged
      raise CheckpointError(f"{where} is damaged ({type(e).__name__}: {_first_line(e)}). "
                            f"{advice}") from e

  def close(self) -> None:
    self._manager.close()
