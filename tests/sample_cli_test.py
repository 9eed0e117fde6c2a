"""experiments.sample end to end on quick runs, in subprocesses: every sampler a model supports
by name, its PNGs and quality.json, one-line errors for the ones it does not."""

import json
import os

import matplotlib.image as mpimg
import numpy as np

from conftest import run_python


def _train(workdir, config, *overrides):
  run_python(["-m", "experiments.run", f"--config=experiments/{config}.py:quick",
              f"--workdir={workdir}", "--config.train.linear_probe=False", *overrides])


def _sample(workdir, *args, check=True):
  return run_python(["-m", "experiments.sample", f"--workdir={workdir}", *args], check=check)


def _one_line_error(proc):
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  return proc.stderr.strip().splitlines()[-1]


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
