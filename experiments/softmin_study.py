r"""How many draws the Monte Carlo soft minimum F̂_β rests on, per proposal (issue #20).

  python -m experiments.softmin_study --workdir=runs/softmin_study
  python -m experiments.softmin_study --quick --workdir=/tmp/softmin_study   # the test's
  python -m experiments.softmin_study --target_prop_run=runs/tp --ellipse_run=runs/ellipse

F_β(y) = −(1/β) log((1/|Z|) ∫ exp(−βE(y, z)) dz) by importance sampling
(``inference.free_energy_softmin_mc``) on trained models: the ellipse (1-D; reference: the
``fine_grid``-point rectangle rule, exact to float rounding for this smooth periodic
integrand) and target propagation (d = 64; reference: ``reference_draws`` draws from the
proposal with the larger ESS, its standard error stated). Each model is trained inside the
command with a short config (under WORKDIR/runs/, reused when run again) or taken from
``--target_prop_run`` / ``--ellipse_run`` (a run directory, at its latest checkpoint).

Per proposal and number of draws n, over R independent key sets on N test examples:

* mean ESS: Kish's (Σw)²/Σw² of the importance weights, out of n;
* bias: the mean over examples of (mean over key sets of F̂_β) − reference, ± its standard
  error (the spread over the R key sets of the example-mean, /√R; the reference's own error
  is stated apart);
* sd: the estimator's standard deviation over key sets, root mean square over examples.

The table goes to ``--out`` (default WORKDIR/softmin_study.md) and to stdout.
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from energy_ae import config_keys, models, run_dir, train
from experiments import common

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags, defined only when run as a program: importing this module
  (a test, another tool) must not claim flag names that other tools define too."""
  flags.DEFINE_string("workdir", "runs/softmin_study", "Where the models are trained and the "
                      "table is written.")
  flags.DEFINE_string("out", "", "The Markdown table's path (default WORKDIR/softmin_study.md).")
  flags.DEFINE_bool("quick", False, "A small study (seconds): fewer draws, key sets, examples.")
  flags.DEFINE_string("target_prop_run", "", "A trained target-propagation run directory to "
                      "study instead of training one.")
  flags.DEFINE_string("ellipse_run", "", "A trained ellipse run directory to study instead of "
                      "training one.")


class Settings(NamedTuple):
  draws: tuple[int, ...]  # n of each row
  repeats: int  # R: independent key sets per row
  target_prop_examples: int  # N test digits
  ellipse_examples: int  # N test points
  ellipse_betas: tuple[float, ...]
  fine_grid: int  # the ellipse's reference rule
  reference_draws: int  # target prop's reference estimate, in chunks of max(draws) draws
  target_prop_epochs: float
  ellipse_epochs: float


FULL = Settings(draws=(8, 32, 128, 512), repeats=16, target_prop_examples=32,
                ellipse_examples=240, ellipse_betas=(1.0, 10.0), fine_grid=20_000,
                reference_draws=2**16, target_prop_epochs=5, ellipse_epochs=300)
QUICK = Settings(draws=(8, 32), repeats=16, target_prop_examples=16, ellipse_examples=60,
                 ellipse_betas=(1.0,), fine_grid=20_000, reference_draws=2**12,
                 target_prop_epochs=1, ellipse_epochs=20)

# Target propagation at the documented soft-minimum settings (experiments/target_prop.py:
# β = 1, 32 draws around z̃ at σ = 0.75), trained on F_β as a softmin user would.
TARGET_PROP_TRAINING = {"model.free_energy": "softmin", "model.beta": 1.0}
PROPOSALS = {"target_prop": ("encoder", "laplace"), "ellipse": ("wrapped", "laplace")}


# ----------------------------------------------------------------------------
# Models: trained here, or a run trained elsewhere
# ----------------------------------------------------------------------------


def _run_config(name: str, workdir: str):
  """A run's config.json over the experiment's defaults, so that keys added since the run was
  trained (the proposals') take their defaults."""
  config = common.load_config(name)
  for key, value in config_keys.flatten(run_dir.load_config_dict(workdir)).items():
    if config_keys.has(config, key):
      config_keys.set_value(config, key, tuple(value) if isinstance(value, list) else value)
  return config


def trained_model(name: str, settings: Settings, workdir: str, existing: str = ""):
  """(config, model, params, dataset): ``existing`` at its latest checkpoint, or a short run of
  ``experiments/<name>.py`` trained (or resumed) in WORKDIR/runs/<name>."""
  if existing:
    config = _run_config(name, existing)
    run = existing
  else:
    quick = settings is QUICK
    overrides = TARGET_PROP_TRAINING if name == "target_prop" else {}
    config = common.load_config(name, "quick" if quick else None, **overrides)
    config.train.num_epochs = (settings.target_prop_epochs if name == "target_prop"
                               else settings.ellipse_epochs)
    config.train.progress = False
    config.train.linear_probe = False
    config.train.eval_at_start = False
    config.train.eval_every = config.train.checkpoint_every = 10**9  # once, at the end
    run = os.path.join(workdir, "runs", name)
    os.makedirs(run, exist_ok=True)
    train.train_and_evaluate(config, run)
  model, _, latest, dataset = train.restore_run(config, run)
  return config, model, latest["params"], dataset


# ----------------------------------------------------------------------------
# Estimates over key sets
# ----------------------------------------------------------------------------


def repeated(estimate, params, y, key, repeats: int):
  """``estimate(params, y, keys)`` (a MonteCarloFreeEnergy) for R = ``repeats`` independent
  key sets, one after another (lax.map: the draws of one set at a time in memory)."""

  def one(r):
    return estimate(params, y, jax.random.split(jax.random.fold_in(key, r), y.shape[0]))

  return jax.lax.map(one, jnp.arange(repeats))


def row_stats(estimates: np.ndarray, ess: np.ndarray, reference: np.ndarray) -> dict:
  """The table's numbers from F̂_β and ESS of shape (R, N) against the reference (N,)."""
  per_set = (estimates - reference).mean(1)  # the example-mean error of each key set
  return {"mean_ess": float(ess.mean()), "bias": float(per_set.mean()),
          "bias_se": float(per_set.std(ddof=1) / math.sqrt(len(per_set))),
          "sd": float(np.sqrt(estimates.var(0, ddof=1).mean()))}


def combine_chunks(chunks: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
  """F_β from C equal chunks' estimates F̂_c (C, N): the mean weight of all draws is the mean
  of the chunks' mean weights exp(−βF̂_c); its standard error from their spread (delta
  method: se(F) = sd(m_c)/(√C · mean m_c)/β)."""
  log_m = -beta * np.asarray(chunks, np.float64)
  top = log_m.max(0)
  m = np.exp(log_m - top)
  reference = -(top + np.log(m.mean(0))) / beta
  se = m.std(0, ddof=1) / (math.sqrt(len(m)) * m.mean(0)) / beta
  return reference, se


@functools.cache
def _estimator(free_energy_mc, n: int, proposal: str, beta: float):
  """``repeated`` for one row, compiled once per (model's estimator, n, proposal, β)."""
  return jax.jit(functools.partial(
      repeated, functools.partial(free_energy_mc, beta=beta, num_samples=n, proposal=proposal)),
      static_argnums=3)


def estimates(model, params, y, *, beta: float, proposals, settings: Settings, key) -> dict:
  """{(proposal, n): (F̂_β, ESS), each (R, N)}, every row from its own keys."""
  out = {}
  for p, proposal in enumerate(proposals):
    for n in settings.draws:
      result = _estimator(model.extras["free_energy_mc"], n, proposal, beta)(
          params, y, jax.random.fold_in(key, 1000 * p + n), settings.repeats)
      out[proposal, n] = (np.asarray(result.free_energy, np.float64),
                          np.asarray(result.ess, np.float64))
  return out


def table_rows(label: str, found: dict, reference: np.ndarray, beta: float) -> list[dict]:
  return [{"model": label, "beta": beta, "proposal": proposal, "draws": n,
           **row_stats(f, ess, reference)} for (proposal, n), (f, ess) in found.items()]


# ----------------------------------------------------------------------------
# The two models
# ----------------------------------------------------------------------------


def study_ellipse(settings: Settings, workdir: str, existing: str = "") -> tuple[list, dict]:
  config, model, params, dataset = trained_model("ellipse", settings, workdir, existing)
  y = jnp.asarray(dataset.test["y"][:settings.ellipse_examples])
  rows, notes = [], {}
  for beta in settings.ellipse_betas:
    grid_config = common.apply_overrides(config.copy_and_resolve_references(), {
        "model.free_energy": "softmin", "model.beta": beta, "model.softmin_estimator": "grid",
        "model.num_latent_points": settings.fine_grid})
    grid_model = models.make(grid_config, (2,))
    reference = np.asarray(jax.jit(grid_model.free_energy)(params, y)[0], np.float64)
    found = estimates(model, params, y, beta=beta, proposals=PROPOSALS["ellipse"],
                      settings=settings, key=jax.random.key(int(10 * beta)))
    rows += table_rows("ellipse", found, reference, beta)
  notes["ellipse"] = (f"ellipse: |w| = ({abs(float(params['w'][0])):.3f}, "
                      f"{abs(float(params['w'][1])):.3f}), N = {len(y)} test points, "
                      f"reference: the {settings.fine_grid:,}-point grid rule; proposals "
                      f"α U + (1 − α) wrapped 𝒩(ž, σ²), α = {config.model.proposal_uniform_weight},"
                      f" σ = {config.model.proposal_scale} ('wrapped') or 1/√(βE''(ž)) "
                      "('laplace')")
  return rows, notes


def study_target_prop(settings: Settings, workdir: str, existing: str = "") -> tuple[list, dict]:
  config, model, params, dataset = trained_model("target_prop", settings, workdir, existing)
  y = jnp.asarray(dataset.test["y"][:settings.target_prop_examples])
  beta = float(config.model.beta) if math.isfinite(float(config.model.beta)) else 1.0
  found = estimates(model, params, y, beta=beta, proposals=PROPOSALS["target_prop"],
                    settings=settings, key=jax.random.key(9))
  # The reference: reference_draws draws from the proposal of the larger ESS at the largest
  # n, in chunks of that n (the rows' compiled estimator), from keys no row uses.
  n_max = max(settings.draws)
  best = max(PROPOSALS["target_prop"], key=lambda p: found[p, n_max][1].mean())
  result = _estimator(model.extras["free_energy_mc"], n_max, best, beta)(
      params, y, jax.random.key(8), settings.reference_draws // n_max)
  reference, reference_se = combine_chunks(np.asarray(result.free_energy), beta)
  rows = table_rows("target_prop", found, reference, beta)
  notes = {"target_prop": (
      f"target prop: {config.data.name}, d = {config.model.latent_dim}, trained on "
      f"free_energy = {config.model.free_energy} (β = {config.model.beta}); N = {len(y)} test "
      f"digits; reference: {settings.reference_draws:,} draws from the '{best}' proposal (the "
      f"larger ESS), standard error {np.sqrt(np.mean(reference_se**2)):.4f} per digit (rms), "
      f"{np.sqrt(np.sum(reference_se**2)) / len(y):.4f} for the mean over digits"),
      "reference_se": float(np.sqrt(np.sum(reference_se**2)) / len(y)), "reference_proposal": best}
  return rows, notes


# ----------------------------------------------------------------------------
# Table and command
# ----------------------------------------------------------------------------


def markdown(rows: list[dict], notes: dict, settings: Settings) -> str:
  lines = [
      "| model | β | proposal | draws n | mean ESS | ESS / n | bias of F̂_β | ± se | sd over keys |",
      "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['model']} | {r['beta']:g} | {r['proposal']} | {r['draws']} | "
                 f"{r['mean_ess']:.2f} | {r['mean_ess'] / r['draws']:.3f} | {r['bias']:+.4f} | "
                 f"{r['bias_se']:.4f} | {r['sd']:.4f} |")
  lines += ["", f"R = {settings.repeats} independent key sets per row."]
  lines += [f"- {notes[k]}" for k in ("ellipse", "target_prop") if k in notes]
  return "\n".join(lines) + "\n"


def run_study(settings: Settings, workdir: str, *, target_prop_run: str = "",
              ellipse_run: str = "") -> tuple[list[dict], dict, str]:
  """(rows, notes, the Markdown table)."""
  rows, notes = study_ellipse(settings, workdir, ellipse_run)
  tp_rows, tp_notes = study_target_prop(settings, workdir, target_prop_run)
  rows, notes = rows + tp_rows, {**notes, **tp_notes}
  return rows, notes, markdown(rows, notes, settings)


def output_path(out: str, workdir: str) -> str:
  """``--out``, or WORKDIR/softmin_study.md: never a committed file unless asked for."""
  return out or os.path.join(workdir, "softmin_study.md")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  settings = QUICK if FLAGS.quick else FULL
  _, _, table = run_study(settings, FLAGS.workdir, target_prop_run=FLAGS.target_prop_run,
                          ellipse_run=FLAGS.ellipse_run)
  out = output_path(FLAGS.out, FLAGS.workdir)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    f.write(table)
  print(table)
  print(f"written to {out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
