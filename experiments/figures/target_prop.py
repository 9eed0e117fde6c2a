r"""§B: target propagation / amortised inference (08-3, Fig. 1).

E = C + R is the energy of a code as an explanation of y (D left out: it is 0 at z̃); the
amortisation gap is E(y, z̃) − E(y, ž) and the relative gap r = Σ_y [E(y, z̃) − E(y, ž)] /
Σ_y E(y, ž) over the test images. The lecture says the gap closes as the encoder learns to
predict ž; the absolute gap also shrinks when every energy merely shrinks (the decoder learning
to reconstruct), r does not: if E(y, z̃) and E(y, ž) both scale by s(t), r stays constant. Each
``*_se`` in the summary is a standard error over the test images at a saved checkpoint (delta
method for the ratio: sd(g − r e) / (√n ē), g the per-image gap, e the per-image E(y, ž)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.figures.common import figure, saved_params, show_rows, subplots

# Test evaluations over training: enough points for a curve (≥ 20).
CURVE_POINTS = 30
# The practicum's budget that the AE, DAE and VAE figures train with (figures.md §D): 300
# epochs of the 4,000 embedded digits at batch 256, 4,500 optimiser steps.
FIGURE_OVERRIDES = {"train.num_epochs": 300}


def _run(runs):
  overrides = {} if runs.quick else dict(FIGURE_OVERRIDES)
  steps = runs.get_total_steps("target_prop", **overrides)
  every = max(1, steps // CURVE_POINTS)
  overrides.update({"train.eval_every": every, "train.eval_at_start": True})
  if not runs.quick:  # a checkpoint at every evaluation: per-image errors along the curve
    overrides.update({"train.checkpoint_every": every,
                      "train.checkpoints_to_keep": steps // every + 2})
  return runs.get("target_prop", **overrides)


def _relative_gap(run, params, y) -> tuple[float, float]:
  """(r, its standard error over the images) of the test images ``y`` at ``params``."""
  keys = jax.random.split(jax.random.key(0), len(y))  # unused by F∞'s evaluation
  out = jax.jit(run.model.evaluate)(params, {"y": y}, keys)
  gap, e = np.asarray(out["amortisation_gap"], np.float64), np.asarray(out["energy_inferred"],
                                                                         np.float64)
  r = gap.sum() / e.sum()
  return float(r), float(np.std(gap - r * e, ddof=1) / (np.sqrt(len(e)) * e.mean()))


def _verdict(r_last: float, r_max: float) -> str:
  return ("closes: it ends below half its peak" if r_last < 0.5 * r_max else
          f"does not close: it ends at {r_last / r_max:.0%} of its peak")


@figure
def target_prop_energies(runs, summary):
  run = _run(runs)
  records = run.records()
  steps = np.array([r["step"] for r in records])
  enc = np.array([r["energy_encoder"] for r in records])
  inf = np.array([r["energy_inferred"] for r in records])
  gap = np.array([r["amortisation_gap"] for r in records])
  rel = gap / inf
  y = jnp.asarray(run.dataset.test["y"])
  se = {s: _relative_gap(run, p, y) for s, p in saved_params(run, list(steps)).items()}
  at = np.array([s in se for s in steps])  # evaluations with per-image errors
  rel_se = np.array([se[s][1] if s in se else np.nan for s in steps])
  k_max = int(np.argmax(rel))
  verdict = _verdict(rel[-1], rel[k_max])
  fig, (ax, ax_gap, ax_rel) = subplots(1, 3, (17, 4.6))
  ax.plot(steps, enc, "o-", ms=3, label=r"$E(y, \tilde z)$: the encoder's guess")
  ax.plot(steps, inf, "s-", ms=3, label=r"$E(y, ž)$: after inference")
  ax.set(xlabel="training step", ylabel="mean test energy $E = C + R$", yscale="log",
         title="Energies of the two codes")
  ax.legend()
  ax_gap.plot(steps, gap, "o-", ms=3, c="C2")
  ax_gap.axhline(0, c="k", lw=0.6)
  ax_gap.set(xlabel="training step", ylabel=r"amortisation gap $E(y, \tilde z) - E(y, ž)$",
             ylim=(0, None), title="Absolute gap")
  ax_rel.plot(steps, 100 * rel, "o-", ms=3, c="C3")
  ax_rel.errorbar(steps[at], 100 * rel[at], yerr=300 * rel_se[at], fmt="none", c="C3",
                  capsize=2, lw=0.8, label="± 3 standard errors over the test images")
  ax_rel.set(xlabel="training step", ylim=(0, None),
             ylabel=r"relative gap $[E(y, \tilde z) - E(y, ž)] \,/\, E(y, ž)$ (%)",
             title="Relative gap (a uniform shrinking of E keeps it flat)")
  ax_rel.legend(fontsize=8, loc="lower right")
  fig.suptitle(f"Target propagation, {steps[-1]:,} steps: $E(y, ž)$ falls from {inf[0]:.3g} to "
               f"{inf[-1]:.3g}, the gap goes {gap[0]:.2g} → {gap[-1]:.2g} (lowest {gap.min():.2g})"
               f"\nrelative to $E(y, ž)$: {100 * rel[0]:.1f} % → {100 * rel[-1]:.0f} % (peak "
               f"{100 * rel[k_max]:.0f} % at step {steps[k_max]:,}) — the relative gap {verdict}",
               fontsize=11, y=1.04)
  summary.update(num_points=len(steps), steps=int(steps[-1]), gap_first=float(gap[0]),
                 gap_last=float(gap[-1]), gap_max=float(gap.max()),
                 energy_inferred_first=float(inf[0]), energy_inferred_last=float(inf[-1]),
                 energy_encoder_last=float(enc[-1]), relative_gap=rel.tolist(),
                 relative_gap_se=[None if np.isnan(s) else float(s) for s in rel_se],
                 relative_gap_first=float(rel[0]), relative_gap_last=float(rel[-1]),
                 relative_gap_max=float(rel[k_max]), relative_gap_max_step=int(steps[k_max]),
                 gap_min=float(gap.min()),
                 relative_gap_closes=bool(rel[-1] < 0.5 * rel[k_max]),
                 inner_relative_change_first=records[0].get("inner_relative_change"),
                 inner_relative_change_last=records[-1].get("inner_relative_change"),
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
