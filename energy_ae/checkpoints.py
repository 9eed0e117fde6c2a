"""Orbax checkpoints of the train state: save every N steps, keep the last few, resume.

Orbax writes each checkpoint into a temporary folder and renames it when complete,
so a process killed mid-write leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be restored into this run's state."""


def _describe(tree) -> dict:
  return {jax.tree_util.keystr(path): tuple(x.shape)
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


class Manager:
  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore_latest(self, target):
    """The latest checkpoint restored into ``target``'s structure and shardings, or ``target``."""
    step = self._manager.latest_step()
    if step is None:
      return target
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types for a mismatched or damaged tree
      raise CheckpointError(
          f"the checkpoint at step {step} in {self.directory} cannot be restored into this "
          f"run's state (another model or changed shapes?): {type(e).__name__}: "
          f"{str(e).splitlines()[0] if str(e) else ''}. Use another --workdir or delete it."
      ) from e
    want, got = _describe(target), _describe(restored)
    if want != got:
      diff = sorted(k for k in want if want[k] != got.get(k))
      raise CheckpointError(
          f"the checkpoint at step {step} in {self.directory} does not match this model: "
          f"shapes differ at {diff[:5]}. Use another --workdir or delete it.")
    return restored

  def close(self) -> None:
    self._manager.close()
