"""Working with trained runs through the CLI: experiments.compare, experiments.sample, the figures
drawn from a given run, and experiments.results (slow)."""

import csv

import matplotlib.image as mpimg
import numpy as np
import pytest

from conftest import run_python


def _train(workdir, *overrides):
  run_python(["-m", "experiments.run", "--config=experiments/vae.py:quick", f"--workdir={workdir}",
              "--config.train.num_epochs=1", "--config.train.linear_probe=False", *overrides])


@pytest.mark.slow  # two quick trainings, compare and sample
def test_compare_sample_and_their_errors(tmp_path):
  _train(tmp_path / "b1")
  _train(tmp_path / "b4", "--config.model.beta=4.0")
  out = tmp_path / "table.csv"
  proc = run_python(["-m", "experiments.compare", str(tmp_path / "b1"), str(tmp_path / "b4"),
                     f"--csv={out}"])
  header = proc.stdout.splitlines()[0].split()
  assert header[:3] == ["run", "model.beta", "step"] and "nelbo" in header
  with open(out) as f:
    rows = list(csv.DictReader(f))
  assert [float(r["model.beta"]) for r in rows] == [1.0, 4.0]
  assert all(int(r["step"]) == 15 for r in rows)
  # β = 4 pays more for the KL: its posterior carries less information.
  assert float(rows[1]["KL"]) < float(rows[0]["KL"])

  proc = run_python(["-m", "experiments.sample", f"--workdir={tmp_path / 'b1'}", "--num=8"])
  for name in ("samples", "reconstructions", "interpolation"):
    image = mpimg.imread(tmp_path / "b1" / "samples" / f"{name}.png")[..., :3]
    assert np.std(image) > 0.02, name

  # The figures drawn from that run instead of their own: nothing trained, nothing of it changed.
  metrics_before = (tmp_path / "b4" / "metrics.jsonl").read_text()
  figures = tmp_path / "figures"
  run_python(["-m", "experiments.figures", f"--workdir={figures}", "--only=vae_reconstructions",
              f"--run=vae={tmp_path / 'b4'}", "--quick"])
  assert (figures / "figures" / "vae_reconstructions.png").is_file()
  assert not (figures / "runs" / "vae").exists()
  assert (tmp_path / "b4" / "metrics.jsonl").read_text() == metrics_before
  proc = run_python(["-m", "experiments.figures", f"--workdir={figures}", "--only=vae_bubbles",
                     f"--run=vae_2d={tmp_path / 'b4'}", "--quick"], check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: --run=vae_2d={tmp_path / 'b4'}: the figure needs model.latent_dim = 2, the run "
      "has 20")

  for argv in (["-m", "experiments.compare", str(tmp_path)],
               ["-m", "experiments.sample", f"--workdir={tmp_path}"]):
    proc = run_python(argv, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {'' if 'compare' in argv[1] else '--workdir='}{tmp_path} is not a run "
        "directory: it has no config.json")


@pytest.mark.slow  # four quick trainings and a k = 50 final evaluation each
def test_results_writes_mean_and_spread_of_the_final_records_and_reuses_runs(tmp_path):
  import json
  import re

  out, workdir = tmp_path / "RESULTS.md", tmp_path / "runs"
  argv = ["-m", "experiments.results", "--config=experiments/vae_binarized.py:quick", "--seeds=2",
          "--only=elbo", f"--workdir={workdir}", f"--out={out}",
          "--config.train.linear_probe=False"]
  run_python(argv)
  records = [json.loads([line for line in open(workdir / "elbo" / "sweep" / f"seed={s}" / "metrics.jsonl")
                         if '"test"' in line][-1]) for s in (0, 1)]
  assert records[0]["nll_iw"] != records[1]["nll_iw"]  # two seeds, two runs
  text = out.read_text()
  row = next(line for line in text.splitlines() if line.startswith("| elbo |"))
  values = [r["nll_iw"] for r in records]
  mean, std = np.mean(values), np.std(values, ddof=1)
  assert f"{mean:.2f} ± {std:.2f}" in row, (row, values)
  assert "k = 50 samples at the final evaluation" in text  # the quick variant's final k
  # Again: the finished runs are reused (their records unchanged), the table rewritten.
  before = (workdir / "elbo" / "sweep" / "seed=0" / "metrics.jsonl").read_text()
  run_python(argv)
  assert (workdir / "elbo" / "sweep" / "seed=0" / "metrics.jsonl").read_text() == before
  assert re.search(r"\| elbo \| — \|", out.read_text())

  proc = run_python([*argv[:4], "--only=vae"], check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: unknown variant(s) ['vae']; this config's variants: elbo, elbo_k5, elbo_k50, "
      "iwae_k5, iwae_k50")
