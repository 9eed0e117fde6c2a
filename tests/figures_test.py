"""`python -m experiments.figures` writes every figure and the numbers that make it right.

Each lecture section's facts live in ``figure_facts_<section>.py`` as ``check(summary, quick)``:
the quick run (fast suite) checks what holds for any model, the full run (``make test-slow``)
also what only a trained model shows.
"""

import importlib
import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest

from conftest import run_python
from experiments import figures


def _check_written(workdir, quick):
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
  assert all(entry["quick"] == quick for entry in summary.values())
  for section in sorted(set(figures.SECTIONS.values())):
    importlib.import_module(f"figure_facts_{section}").check(summary, quick=quick)
  return summary


def test_quick_figures_are_valid_pngs_with_their_numbers(tmp_path):
  run_python(["-m", "experiments.figures", f"--workdir={tmp_path}", "--quick"], timeout=900)
  _check_written(tmp_path, quick=True)


@pytest.mark.slow
def test_full_figures_show_the_lectures_facts(tmp_path):
  # The same command as `make figures`, from an empty workdir (trains every model).
  run_python(["-m", "experiments.figures", f"--workdir={tmp_path}"], timeout=1800)
  _check_written(tmp_path, quick=False)


def test_only_makes_the_named_figure_and_rejects_unknown_names(tmp_path):
  run_python(["-m", "experiments.figures", f"--workdir={tmp_path}", "--quick",
              "--only=vae_kl_potential"])
  assert sorted(os.listdir(tmp_path / "figures")) == ["summary.json", "vae_kl_potential.png"]
  proc = run_python(["-m", "experiments.figures", f"--workdir={tmp_path}", "--only=nope"],
                    check=False)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown figure(s) ['nope']")
