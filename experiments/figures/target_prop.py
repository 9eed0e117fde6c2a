"""§B: target propagation / amortised inference (08-3, Fig. 1)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from experiments.figures.common import figure, show_rows, subplots

# Test evaluations over training: enough points for a curve (≥ 20).
CURVE_POINTS = 30


def _run(runs):
  steps = runs.get_total_steps("target_prop")
  return runs.get("target_prop", **{"train.eval_every": max(1, steps // CURVE_POINTS),
                                    "train.eval_at_start": True})


@figure
def target_prop_energies(runs, summary):
  run = _run(runs)
  records = run.records()
  steps = np.array([r["step"] for r in records])
  enc = np.array([r["energy_encoder"] for r in records])
  inf = np.array([r["energy_inferred"] for r in records])
  gap = np.array([r["amortisation_gap"] for r in records])
  fig, (ax, ax_gap) = subplots(1, 2, (12, 4))
  ax.plot(steps, enc, "o-", ms=3, label=r"$E(y, \tilde z)$: the encoder's guess")
  ax.plot(steps, inf, "s-", ms=3, label=r"$E(y, ž)$: after inference")
  ax.set(xlabel="training step", ylabel="mean test energy $E = C + R$", yscale="log",
         title="Target propagation: energies of the two codes")
  ax.legend()
  ax_gap.plot(steps, gap, "o-", ms=3, c="C2")
  ax_gap.axhline(0, c="k", lw=0.6)
  ax_gap.set(xlabel="training step",
             ylabel=r"amortisation gap $E(y, \tilde z) - E(y, ž)$",
             title="The gap closes as the encoder learns to predict $ž$")
  summary.update(num_points=len(steps), gap_first=float(gap[0]), gap_last=float(gap[-1]),
                 gap_max=float(gap.max()), energy_inferred_last=float(inf[-1]),
                 energy_encoder_last=float(enc[-1]),
                 inference_never_worse=bool(np.all(inf <= enc + 1e-6 * np.abs(enc))))
  return fig


@figure
def target_prop_reconstructions(runs, summary):
  run = _run(runs)
  y = jnp.asarray(run.dataset.test["y"][:10])
  z_tilde, z_check = run.model.extras["infer"](run.params, y)
  decode = lambda z: np.asarray(run.model.decode(run.params, z))
  rows = [np.asarray(y), decode(z_tilde), decode(z_check)]
  fig, ax = subplots(1, 1, (8, 3.4))
  show_rows(ax, rows, ["$y$", r"Dec($\tilde z$)", r"Dec($ž$)"],
            r"Target propagation: reconstructions from $\tilde z$ and from $ž$")
  flat = rows[0].reshape(len(y), -1)
  summary.update(
      reconstruction_error_encoder=float(np.mean(np.sum((rows[1] - flat) ** 2, -1))),
      reconstruction_error_inferred=float(np.mean(np.sum((rows[2] - flat) ** 2, -1))))
  return fig
