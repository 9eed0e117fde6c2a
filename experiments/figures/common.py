"""What every figure module shares: the trained runs, the registry and image helpers.

A figure is a function ``fn(runs, summary) -> matplotlib Figure`` registered with
``@figure``; it trains (or reuses) what it needs through ``runs.get`` and writes into
``summary`` (a dict) the numbers that make it right, which ``make_figures`` collects in
``WORKDIR/figures/summary.json`` and the slow test checks against the lecture's facts.
Figures use the models' public functions only (``Model.encode`` / ``decode`` /
``reconstruct`` / ``extras``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from energy_ae import config_keys, data as data_lib, models, run_dir, train  # noqa: E402
from experiments import common  # noqa: E402

# mathtext everywhere: z̃ and ž as combining accents are indistinguishable at small sizes;
# write $\tilde z$ and $ž$ (the precomposed ž: mathtext's \check sets its caron before the z).
plt.rcParams.update({"mathtext.fontset": "dejavusans", "legend.framealpha": 0.9})

FIGURES: dict[str, Callable] = {}
SECTIONS: dict[str, str] = {}  # figure name -> the lecture section's module


def figure(fn: Callable) -> Callable:
  """Registers ``fn`` as the figure named after it."""
  FIGURES[fn.__name__] = fn
  SECTIONS[fn.__name__] = fn.__module__.rsplit(".", 1)[-1]
  return fn


# ----------------------------------------------------------------------------
# Trained models
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Trained:
  config: object
  model: models.Model
  params: object
  init_params: object
  dataset: data_lib.Dataset
  workdir: str

  @property
  def example_shape(self):
    return self.dataset.train["y"].shape[1:]

  def records(self, split="test"):
    return run_dir.records(self.workdir, split)


def experiment_config(name: str, quick: bool, **overrides):
  config = common.load_config(name, "quick" if quick else None)
  config.train.progress = False
  config.train.linear_probe = False  # no figure needs it
  if quick:  # evaluate and save once at the end (a figure that draws a curve asks for more)
    config.train.eval_every = config.train.checkpoint_every = 10**9
    config.train.eval_at_start = False
  return common.apply_overrides(config, overrides)  # after the figure defaults: they win


def trained(config, workdir: str) -> Trained:
  """Trains ``config`` in ``workdir`` (resuming any checkpoint) and returns its parameters."""
  os.makedirs(workdir, exist_ok=True)
  train.train_and_evaluate(config, workdir)
  model, initial, latest, dataset = train.restore_run(config, workdir)
  return Trained(config, model, latest["params"], initial["params"], dataset, workdir)


class Runs:
  """Trains each named run once per invocation; figures share them. ``existing`` maps run
  names to directories of runs trained elsewhere (``--run=NAME=DIR``), used as they are."""

  def __init__(self, workdir: str, quick: bool, existing: dict[str, str] | None = None):
    self.workdir, self.quick = workdir, quick
    self.existing = dict(existing or {})
    self.used: set[str] = set()

  def get_total_steps(self, experiment: str, **overrides) -> int:
    """The number of optimiser steps the run of ``experiment`` will take."""
    config = experiment_config(experiment, self.quick, **overrides)
    return train.num_steps(config.train, data_lib.load(config.data))

  @functools.cache  # noqa: B019 (one Runs per process)
  def get(self, name: str, experiment: str | None = None, **overrides) -> Trained:
    """The run ``WORKDIR/runs/<name>`` of ``experiments/<experiment>.py`` (default: name)
    with ``overrides`` ({"model.latent_dim": 2, ...}), trained once and then reused; or the
    run given for ``name`` in ``existing``, not trained further."""
    self.used.add(name)
    config = experiment_config(experiment or name, self.quick, **overrides)
    if name in self.existing:
      return existing_run(self.existing[name], config, overrides, name)
    return trained(config, os.path.join(self.workdir, "runs", name))


def saved_params(run: Trained, steps) -> dict:
  """{step: the parameters ``run`` saved at that optimiser step} for each of ``steps`` it kept
  (step 0: the initial parameters; a run keeps the checkpoints its ``train.checkpoint_every``
  and ``train.checkpoints_to_keep`` say): curves of what only the parameters tell."""
  manager = run_dir.checkpoint_manager(run.workdir, run.config.train.checkpoints_to_keep)
  try:
    kept = set(manager.all_steps())
    out = {0: run.init_params} if 0 in steps else {}
    target = None
    for step in sorted(set(steps) & kept - {0}):
      target = train.build(run.config, run.dataset).state if target is None else target
      out[step] = manager.restore_latest(target, step)["params"]
  finally:
    manager.close()
  return out


def existing_run(workdir: str, expected, overrides: dict, name: str) -> Trained:
  """A run trained elsewhere, with its own config.json, at its latest checkpoint. It must be
  the figure's model, with the values the figure sets (``overrides``); other keys (epochs,
  seed, β ...) may differ: that is the point of drawing someone's own run."""
  config = run_dir.load_config(workdir, f"--run={name}=")
  wanted = {"model.name": expected.model.name, **{k: v for k, v in overrides.items()
                                                   if k.startswith(("model.", "data."))}}
  for key, value in wanted.items():
    node = config_keys.get(config, key, None)
    if node != value and not (isinstance(value, tuple) and list(value) == node):
      raise ValueError(f"--run={name}={workdir}: the figure needs {key} = {value!r}, "
                       f"the run has {node!r}")
  if not os.path.isdir(run_dir.checkpoints_path(workdir)):
    raise ValueError(f"--run={name}={workdir}: the run has no checkpoint yet")
  model, initial, latest, dataset = train.restore_run(config, workdir)
  return Trained(config, model, latest["params"], initial["params"], dataset, workdir)


# ----------------------------------------------------------------------------
# Plot helpers
# ----------------------------------------------------------------------------


def subplots(rows: int, cols: int, size: tuple[float, float], **kwargs):
  return plt.subplots(rows, cols, figsize=size, **kwargs)


def image_grid(images: np.ndarray, rows: int, cols: int, shape=(28, 28), *, gap: int = 1,
               gap_value: float = np.nan) -> np.ndarray:
  """(rows·cols, H·W) images → one mosaic with ``gap``-pixel separators between tiles
  (NaN: drawn in the colour map's 'bad' colour, set by ``show_mosaic``)."""
  h, w = shape
  images = np.asarray(images, np.float64)[: rows * cols].reshape(-1, h, w)
  images = np.concatenate([images, np.full((rows * cols - len(images), h, w), gap_value)])
  out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), gap_value)
  for k, image in enumerate(images):
    r, c = divmod(k, cols)
    out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = image
  return out


def show_mosaic(ax, mosaic: np.ndarray, *, cmap="gray", vmin=0.0, vmax=1.0,
                separator="#d62728"):
  """imshow with the separators (NaN) in a colour no pixel has."""
  colormap = plt.get_cmap(cmap).copy()
  colormap.set_bad(separator)
  return ax.imshow(np.ma.masked_invalid(mosaic), cmap=colormap, vmin=vmin, vmax=vmax,
                   interpolation="nearest")


def show_rows(ax, rows: list[np.ndarray], labels: list[str], title: str, shape=(28, 28)):
  """One row of tiles per entry of ``rows`` (values in [0, 1]), labelled on the left."""
  cols = max(len(r) for r in rows)
  mosaic = image_grid(np.concatenate([np.concatenate(
      [np.asarray(r).reshape(len(r), -1),
       np.full((cols - len(r), int(np.prod(shape))), np.nan)]) for r in rows]),
      len(rows), cols, shape)
  show_mosaic(ax, mosaic)
  ax.set_yticks([(i + 0.5) * (shape[0] + 1) for i in range(len(rows))], labels)
  ax.set_xticks([])
  ax.set_title(title)


def to_unit(y: np.ndarray, value_range) -> np.ndarray:
  low, high = value_range
  return np.clip((np.asarray(y) - low) / (high - low), 0, 1)


def colorbar(fig, mappable, ax, **kwargs):
  """A colour bar exactly the height of ``ax`` (an axes divider, not a shrunken guess)."""
  from mpl_toolkits.axes_grid1 import make_axes_locatable

  cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.08)
  return fig.colorbar(mappable, cax=cax, **kwargs)
