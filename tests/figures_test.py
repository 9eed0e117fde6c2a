"""`python -m experiments.figures` writes every figure and the numbers that make it right.

Each lecture section's facts live in ``figure_facts_<section>.py`` as ``check(summary, quick)``:
with ``quick`` what holds for any model, without it also what only a trained model shows. The
full run (``make test-slow``, the command of ``make figures``) checks both on every figure; the
``--quick`` form (a smoke run of every figure, ~2 min) adds nothing to it and is run here on one
figure.
"""

import importlib
import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest

from conftest import run_python
from experiments import figures


def _check_written(workdir):
  written = sorted(os.listdir(workdir / "figures"))
  assert written == sorted([f"{name}.png" for name in figures.FIGURES] + ["summary.json"])
  for name in (n for n in written if n.endswith(".png")):
    path = workdir / "figures" / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    image = mpimg.imread(path)[..., :3]
    assert image.shape[0] > 150 and image.shape[1] > 300, name
    assert np.std(image) > 0.02, f"{name} looks blank"
  summary = json.loads((workdir / "figures" / "summary.json").read_text())
  assert sorted(summary) == sorted(figures.FIGURES)
  assert not any(entry["quick"] for entry in summary.values())
  for section in sorted(set(figures.SECTIONS.values())):
    importlib.import_module(f"figure_facts_{section}").check(summary, quick=False)
  return summary


@pytest.mark.slow
def test_full_figures_show_the_lectures_facts(tmp_path):
  # The same command as `make figures`, from an empty workdir (trains every model).
  run_python(["-m", "experiments.figures", f"--workdir={tmp_path}"], timeout=1800)
  _check_written(tmp_path)


def test_only_makes_the_named_figure_and_rejects_unknown_names(tmp_path):
  run_python(["-m", "experiments.figures", f"--workdir={tmp_path}", "--quick",
              "--only=vae_kl_potential"])
  assert sorted(os.listdir(tmp_path / "figures")) == ["summary.json", "vae_kl_potential.png"]
  proc = run_python(["-m", "experiments.figures", f"--workdir={tmp_path}", "--only=nope"],
                    check=False)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown figure(s) ['nope']")


# ----------------------------------------------------------------------------
# The facts can fail: each on the wrong model, picture or output it guards against (no training)
# ----------------------------------------------------------------------------


def test_target_prop_fact_fails_when_the_energies_merely_shrink():
  import figure_facts_target_prop as facts

  # E(y, z̃) = s(t)·12, E(y, ž) = s(t)·10: every energy shrinks by the same factor s(t), the
  # encoder learns nothing, r = 0.2 throughout (standard errors 0.5 % of it).
  s = np.geomspace(1.0, 0.02, 31)
  enc, inf = 12 * s, 10 * s
  gap = enc - inf
  summary = {"relative_gap": (gap / inf).tolist(), "relative_gap_se": [1e-3] * 31,
             "relative_gap_closes": False}
  # The fact the figure used to assert holds for this run: the absolute gap "closes".
  assert gap[-1] < 0.5 * gap.max()
  with pytest.raises(AssertionError, match="never moves"):
    facts.relative_gap_moves(summary)
  # A relative gap that grows (the encoder falling behind) or falls does move.
  for rel in (np.linspace(0.03, 0.8, 31), np.linspace(0.3, 0.05, 31)):
    facts.relative_gap_moves({"relative_gap": rel.tolist(), "relative_gap_se": [1e-3] * 31})


def test_target_prop_verdict_must_clear_the_noise():
  import figure_facts_target_prop as facts

  rel = [0.04, 0.6, 0.31]  # ends 0.01 above half its peak, with standard errors of 0.02
  summary = {"relative_gap": rel, "relative_gap_se": [0.02] * 3, "relative_gap_closes": False}
  with pytest.raises(AssertionError, match="cannot say"):
    facts.verdict_beyond_noise(summary)
  facts.verdict_beyond_noise(dict(summary, relative_gap=[0.04, 0.6, 0.55]))
  with pytest.raises(AssertionError):  # a verdict that contradicts the numbers
    facts.verdict_beyond_noise(dict(summary, relative_gap=[0.04, 0.6, 0.55], relative_gap_closes=True))


def test_dae_interpolation_fact_fails_on_the_endpoint_offset_alone():
  from experiments.figures import autoencoders
  import figure_facts_autoencoders as facts

  # Both paths rise by the same bump in the middle; the latent path sits 15 lower all along
  # (its ends are reconstructions, not real digits). Per-pair noise makes standard errors real.
  rng = np.random.default_rng(0)
  t = np.linspace(0, 1, 16)
  bump = 10 * np.sin(np.pi * t)
  e_input = 20 + bump + rng.normal(0, 1, (10, 16))
  e_latent = 5 + bump + rng.normal(0, 1, (10, 16))
  numbers = autoencoders.interpolation_numbers(e_input, e_latent)
  # The old fact, the raw middles' difference over 3 standard errors, passes on the offset.
  assert numbers["middle_input_minus_latent"] > 3 * numbers["middle_input_minus_latent_se"]
  with pytest.raises(AssertionError, match="rise over the latent"):
    facts._interpolation(numbers)
  # An input path that rises above its ends more than the latent path does passes.
  facts._interpolation(autoencoders.interpolation_numbers(e_input + 2 * bump, e_latent))


def _denoising_summary(output, clean, corrupted, run_like):
  from experiments.figures import autoencoders

  vr = run_like.dataset.value_range
  psnr_out, psnr_in = autoencoders._psnr(output, clean, vr), autoencoders._psnr(corrupted, clean, vr)
  summary = {}
  summary["psnr_gain"], summary["psnr_gain_se"] = autoencoders._mean_se(psnr_out - psnr_in)
  autoencoders._record_beats(summary, "out", psnr_out, autoencoders._trivial_psnr(run_like, clean))
  return summary


def test_dae_facts_fail_for_trivial_outputs():
  import types

  import figure_facts_autoencoders as facts
  from energy_ae import data as data_lib
  from experiments import common

  dataset = data_lib.load(common.load_config("dae", "quick").data)
  run_like = types.SimpleNamespace(dataset=dataset)
  clean = dataset.test["y"][:200].reshape(200, -1).astype(np.float64)
  keep = np.random.default_rng(1).random(clean.shape) > 0.5
  corrupted = np.where(keep, clean / 0.5, 0.0)  # the lecture's dropout on [−1, 1] images
  black = np.full_like(clean, dataset.value_range[0])
  mean_image = np.broadcast_to(dataset.train["y"].reshape(len(dataset.train["y"]), -1).mean(0), clean.shape)
  for name, output in (("black", black), ("the mean image", mean_image)):
    summary = _denoising_summary(output, clean, corrupted, run_like)
    if name == "black":  # the old fact alone: an all-black output "denoises" (~+1 dB)
      assert summary["psnr_gain"] > 3 * summary["psnr_gain_se"], summary
    with pytest.raises(AssertionError):
      facts._dae(summary)
  # The clean image itself, slightly blurred by rounding, passes every comparison.
  facts._dae(_denoising_summary(np.round(clean, 1), clean, corrupted, run_like))


def test_vae_balance_fact_fails_off_the_balance():
  from experiments.figures import vae
  import figure_facts_vae as facts

  # A d = 2 posterior as Adam leaves it: E[μᵢ² + vᵢ] ≈ 2.
  rng = np.random.default_rng(0)
  mu, var = rng.normal(0, np.sqrt(2), (4000, 2)), np.full((4000, 2), 0.01)
  _, drawn = vae.balance(mu, var, True)
  facts.kl_balanced(drawn)
  _, as_trained = vae.balance(mu, var, False)
  with pytest.raises(AssertionError, match="not drawn at its KL balance"):
    facts.kl_balanced(as_trained)
  with pytest.raises(AssertionError, match="is not 1"):  # the raw moments, claimed balanced
    facts.kl_balanced(dict(as_trained, balanced=True))
  # A map that scales v by a instead of a².
  a = 1 / np.sqrt((mu**2 + var).mean(0))
  wrong = dict(drawn, train_second_moment=((a * mu) ** 2 + a * var).mean(0).tolist())
  with pytest.raises(AssertionError, match="is not 1"):
    facts.kl_balanced(wrong)
  # Collapsed bubbles (β = 0) against kept ones, in the cloud's own units: any rescaling of
  # the β = 0 run leaves the comparison unchanged; two runs with the same relative size fail.
  _, collapsed = vae.balance(10 * mu, np.full_like(var, 1e-6), False)
  facts.bubbles_collapse_without_kl({"beta0": collapsed, "beta1": drawn})
  _, rescaled = vae.balance(0.1 * mu, 0.01 * var, False)
  with pytest.raises(AssertionError):
    facts.bubbles_collapse_without_kl({"beta0": rescaled, "beta1": drawn})


def test_reconstruction_by_epoch_fact_fails_when_the_energy_stalls():
  import figure_facts_autoencoders as facts

  s = {"notebook_epochs": [0, 1, 2, 3], "energy": [900, 100, 60, 60],
       "energy_drop": [800, 40, 0.1], "energy_drop_se": [5, 1, 0.2]}
  with pytest.raises(AssertionError, match="epoch 2 to 3"):
    facts._epochs(s)
  facts._epochs(dict(s, energy_drop=[800, 40, 3]))
