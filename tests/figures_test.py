"""`figures --quick` writes every figure as a valid, non-blank PNG."""

import os

import matplotlib.image as mpimg
import numpy as np

from conftest import run_python
from experiments import figures


def test_quick_figures_are_valid_non_blank_pngs(tmp_path):
  run_python(["-m", "experiments.figures", f"--workdir={tmp_path}", "--quick"], timeout=900)
  written = sorted(os.listdir(tmp_path / "figures"))
  assert written == sorted(f"{name}.png" for name in figures.FIGURES)
  for name in written:
    path = tmp_path / "figures" / name
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    image = mpimg.imread(path)[..., :3]
    assert image.shape[0] > 150 and image.shape[1] > 400, name
    assert np.std(image) > 0.02, f"{name} looks blank"


def test_only_makes_the_named_figure_and_rejects_unknown_names(tmp_path):
  run_python(["-m", "experiments.figures", f"--workdir={tmp_path}", "--quick",
              "--only=vae_kl_potential"])
  assert os.listdir(tmp_path / "figures") == ["vae_kl_potential.png"]
  proc = run_python(["-m", "experiments.figures", f"--workdir={tmp_path}", "--only=nope"],
                    check=False)
  assert proc.returncode != 0 and "unknown figure(s) ['nope']" in proc.stderr
