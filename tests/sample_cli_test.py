"""experiments.sample end to end on quick runs, in subprocesses: every sampler a model supports
by name, its PNGs and quality.json, one-line errors for the ones it does not."""

import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest

from conftest import run_python


def _train(workdir, config, *overrides):
  run_python(["-m", "experiments.run", f"--config=experiments/{config}.py:quick",
              f"--workdir={workdir}", "--config.train.linear_probe=False", *overrides])


def _sample(workdir, *args, check=True):
  return run_python(["-m", "experiments.sample", f"--workdir={workdir}", *args], check=check)


def _one_line_error(proc):
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow  # trains a VAE and a classifier (~1 min); the samplers' own tests are quick
def test_vae_samples_by_prior_and_mixture_with_their_quality_and_refuses_mala(tmp_path):
  run, classifier = tmp_path / "vae", tmp_path / "classifier"
  _train(run, "vae", "--config.train.num_epochs=1")
  _sample(run, "--num=8", f"--classifier_dir={classifier}")  # the default sampler: the prior
  for name in ("samples", "reconstructions", "interpolation"):
    image = mpimg.imread(run / "samples" / f"{name}.png")[..., :3]
    assert np.std(image) > 0.02, name
  stamp = os.path.getmtime(classifier / "classifier.msgpack")
  proc = _sample(run, "--sampler=gmm", "--seed=3", f"--classifier_dir={classifier}")
  assert os.path.getmtime(classifier / "classifier.msgpack") == stamp  # cached, not retrained
  assert (run / "samples" / "samples_gmm.png").is_file()
  quality = json.loads((run / "samples" / "quality.json").read_text())
  assert set(quality) == {"prior", "gmm"}  # one entry per sampler, the earlier one kept
  gmm = quality["gmm"]
  assert gmm["seed"] == 3 and gmm["sample_config"]["sampler"] == "gmm"
  # The quick config's 200 samples, at least --num; every metric of the digits.
  assert gmm["metrics"]["num_samples"] == 200
  assert {"fd", "kid", "precision", "recall", "label_entropy", "label_counts"} <= set(gmm["metrics"])
  assert sum(gmm["metrics"]["label_counts"]) == 200
  assert 0.0 <= gmm["metrics"]["label_entropy"] <= np.log(10) + 1e-9
  assert gmm["features"]["test_accuracy"] > 0.5  # the quick classifier, reported
  assert "gmm: fd" in proc.stdout
  assert _one_line_error(_sample(run, "--sampler=mala", check=False)) == (
      "error: --sampler=mala: the vae model supports gmm, prior")
  assert _one_line_error(_sample(run, "--sampler=nuts", check=False)) == (
      "error: config.sample.sampler = 'nuts': must be one of langevin, mala, walkback, gmm, prior")


@pytest.mark.slow  # a quick ellipse training, two samplings
def test_ellipse_samples_by_mala_and_a_diverging_langevin_is_one_line(tmp_path):
  run = tmp_path / "ellipse"
  _train(run, "ellipse")
  _sample(run)
  entry = json.loads((run / "samples" / "quality.json").read_text())["mala"]
  assert 0.0 < entry["info"]["acceptance_rate"] <= 1.0
  assert {"fd", "kid", "precision", "recall"} <= set(entry["metrics"])
  assert "label_entropy" not in entry["metrics"]  # no classifier for 2-D data
  assert entry["features"] == {"features": "coordinates"}
  assert (run / "samples" / "samples.png").is_file()
  # ULA at ε = 10 on a density of curvature 2β = 400 across the curve: every chain explodes.
  line = _one_line_error(_sample(run, "--sampler=langevin", "--step_size=10", check=False))
  assert line.startswith("error: config.sample.step_size = 10.0: ") and "diverged" in line, line


@pytest.mark.slow  # four quick trainings, eight samplings, the reference rows
def test_sample_quality_table_is_the_mean_and_spread_of_its_records_and_reuses_them(tmp_path):
  from experiments.sample_quality import cell

  workdir, out = tmp_path / "sq", tmp_path / "table.md"
  argv = ["-m", "experiments.sample_quality", "--quick", "--seeds=2", "--only=vae,ellipse",
          f"--workdir={workdir}", f"--out={out}"]
  out.write_text("# Results\n\nanother tool's table\n")  # kept: the table is a section of it
  run_python(argv)
  records = json.loads((workdir / "quality.json").read_text())
  assert {(r["config"], r["label"], r["seed"]) for r in records} == {
      (c, s, seed) for c, s in (("vae", "prior"), ("vae", "gmm"), ("ellipse", "mala"),
                                ("ellipse", "langevin")) for seed in (0, 1)}
  text = out.read_text()
  prior = [r for r in records if (r["config"], r["label"]) == ("vae", "prior")]
  row = next(line for line in text.splitlines() if line.startswith("| vae | prior |"))
  assert row.split(" | ")[2] == cell([r["metrics"]["fd"] for r in prior])
  for reference in ("held-out real data", "uniform noise", "one training example"):
    assert text.count(f"| reference | {reference}") == 2  # the digits' and the ellipse's tables
  assert (workdir / "samples_digits.png").is_file() and (workdir / "samples_2d.png").is_file()
  saved = {r["samples_file"]: os.path.getmtime(r["samples_file"]) for r in records}
  run_python(argv)  # again: every run and every drawn sample reused
  assert json.loads((workdir / "quality.json").read_text()) == records
  assert {p: os.path.getmtime(p) for p in saved} == saved
  text = out.read_text()
  assert text.startswith("# Results\n\nanother tool's table\n")
  assert text.count("<!-- begin section experiments.sample_quality -->") == 1  # replaced, not added
  proc = run_python([*argv[:4], "--only=gan"], check=False)
  assert _one_line_error(proc).startswith("error: --only: unknown config(s) ['gan']; known: ae, ")
