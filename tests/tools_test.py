"""Working with trained runs through the CLI: experiments.compare and experiments.sample."""

import csv

import matplotlib.image as mpimg
import numpy as np

from conftest import run_python


def _train(workdir, *overrides):
  run_python(["-m", "experiments.run", "--config=experiments/vae.py:quick", f"--workdir={workdir}",
              "--config.train.num_epochs=1", "--config.train.linear_probe=False", *overrides])


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

  for argv in (["-m", "experiments.compare", str(tmp_path)],
               ["-m", "experiments.sample", f"--workdir={tmp_path}"]):
    proc = run_python(argv, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {'' if 'compare' in argv[1] else '--workdir='}{tmp_path} is not a run "
        "directory: it has no config.json")
