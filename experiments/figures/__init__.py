r"""Reproduces the lecture's figures (``../shared/reference/figures.md``) on the embedded data.

  python -m experiments.figures --workdir=runs/figures [--only=ellipse_manifold ...] [--quick]
  python -m experiments.figures --only=vae_samples --run=vae=runs/my_vae   # your own run
  make figures

Trains what each figure needs with the experiment configs (or reuses the finished runs in
``WORKDIR/runs/<name>``: a run resumes from its checkpoint and stops at once when it is
complete), then writes one PNG per figure to ``WORKDIR/figures/<figure>.png`` and the numbers
that make each figure right to ``WORKDIR/figures/summary.json``. ``--quick`` trains for a
few steps only: every figure in a few minutes, not faithful. ``--run=NAME=DIR`` draws a run
trained elsewhere (``experiments.run --workdir=DIR``) in place of the figures' run NAME (the
run names are those of ``WORKDIR/runs``: ``vae``, ``dae``, ``ellipse`` ...), at its latest
checkpoint, without training it further; it must be the same model with the values the
figure sets (e.g. ``model.latent_dim = 2`` for the 2-D VAE).

One module per lecture section: ``ellipse`` (§A, with the conditional horn model),
``target_prop`` (§B), ``autoencoders`` (§C, §D: AE, DAE, spiral DAE, CAE) and ``vae`` (§E).
Choices the lecture leaves open live in the experiment configs and at the top of each module.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import matplotlib.pyplot as plt

from experiments.figures import autoencoders, ellipse, target_prop, vae  # noqa: F401 (registers)
from experiments.figures.common import FIGURES, SECTIONS, Runs

__all__ = ["FIGURES", "SECTIONS", "make_figures"]


def make_figures(workdir: str, names: list[str] | None = None, *, quick: bool = False,
                 existing: dict[str, str] | None = None) -> list[str]:
  """Writes WORKDIR/figures/<name>.png for each figure and summary.json; returns the paths.

  summary.json holds, per figure, the numbers its function recorded; figures not made in
  this call keep the numbers of an earlier call. ``existing``: {run name: run directory}
  of runs trained elsewhere, drawn as they are instead of training the figure's own.
  """
  unknown = sorted(set(names or []) - set(FIGURES))
  if unknown:
    raise ValueError(f"unknown figure(s) {unknown}; valid names: {', '.join(FIGURES)}")
  runs = Runs(workdir, quick, existing)
  out_dir = os.path.join(workdir, "figures")
  os.makedirs(out_dir, exist_ok=True)
  summary_path = os.path.join(out_dir, "summary.json")
  summary = {}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
  paths = []
  for name in names or list(FIGURES):
    start = time.perf_counter()
    numbers: dict = {}
    fig = FIGURES[name](runs, numbers)
    path = os.path.join(out_dir, f"{name}.png")
    summary[name] = dict(numbers, quick=quick)
    if jax.process_index() == 0:  # several processes train together; one writes
      fig.savefig(path, dpi=110, bbox_inches="tight")
      with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    plt.close(fig)
    paths.append(path)
    logging.info("Wrote %s (%.1f s)", path, time.perf_counter() - start)
  unused = sorted(set(runs.existing) - runs.used)
  if unused:
    raise ValueError(f"no figure made here draws the run(s) {unused} given by --run; the runs "
                     f"these figures use: {', '.join(sorted(runs.used)) or 'none'}")
  return paths
