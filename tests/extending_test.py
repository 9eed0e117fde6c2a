"""docs/extending.md works as written: its files in an empty folder, its commands through the CLI."""

import json
import os
import re
import shlex

import pytest

from conftest import ROOT, run_python

DOC = os.path.join(ROOT, "docs", "extending.md")


def _files_and_commands():
  """{relative path: source} of the python blocks (named in the line before each block) and
  the shell commands (continuations joined) of docs/extending.md."""
  text = open(DOC).read()
  files = {}
  for match in re.finditer(r"([^\n]*)\n\n```python\n(.*?)```", text, re.S):
    names = re.findall(r"`([\w/]+\.py)`", match.group(1))
    if names:
      files[names[-1]] = match.group(2)
      for name in names[:-1]:  # named as empty (package __init__ files)
        files.setdefault(name, "")
  commands = []
  for block in re.findall(r"```sh\n(.*?)```", text, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("#")[0].strip()
      if line.startswith("python -m experiments.run"):
        commands.append(shlex.split(line.replace("$ENERGY_AE", ROOT)))
  return files, commands


@pytest.mark.slow  # the README's worked example: a fresh folder, a quick training
def test_the_worked_example_runs_from_an_empty_folder(tmp_path):
  files, commands = _files_and_commands()
  assert set(files) == {"my_terms.py", "my_pkg/__init__.py", "my_pkg/tied_ae.py"}
  assert len(commands) == 3
  for name, source in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(source)
  workdirs = []
  for argv in commands:
    quick = [f"{a}:quick" if a.startswith("--config=") else a for a in argv[1:]]
    quick.append("--config.train.num_epochs=1")
    proc = run_python(quick, cwd=tmp_path)
    assert "Final test metrics" in proc.stderr
    workdirs.append(tmp_path / next(a for a in argv if a.startswith("--workdir="))[10:])
  # The run records where its terms live, and restores from them in a new process.
  config = json.loads((workdirs[1] / "config.json").read_text())
  assert config["model"]["energy"]["C"]["term"] == "my_terms:log_cosh"
  assert config["model"]["energy"]["R"]["term"] == "my_terms:cauchy"
  restore = (
      "import json, sys, ml_collections\n"
      "from energy_ae import train\n"
      "config = ml_collections.ConfigDict(json.load(open(sys.argv[1] + '/config.json')))\n"
      "model, _, latest, _ = train.restore_run(config, sys.argv[1])\n"
      "print('restored step', int(latest['step']))\n")
  for workdir in workdirs:
    proc = run_python(["-c", restore, str(workdir)], cwd=tmp_path)
    assert proc.stdout.strip().startswith("restored step 15"), proc.stdout


def test_bad_import_paths_are_one_clear_line(tmp_path):
  (tmp_path / "my_terms.py").write_text("def log_cosh(y, y_tilde, *, scale=1.0):\n  return y\n"
                                        "def odd(q):\n  return q\n")
  cases = [
      ("nosuch:log_cosh", "energy term 'nosuch:log_cosh': cannot import module 'nosuch'"),
      ("my_terms:nope", "energy term 'my_terms:nope': module 'my_terms' has no function 'nope'"),
      ("my_terms:odd", "energy term 'C' (my_terms:odd) reads ['q'], which the dae model does not "
                       "provide"),
  ]
  for term, expected in cases:
    proc = run_python(["-m", "experiments.run", f"--config={ROOT}/experiments/dae.py:quick",
                       f"--config.model.energy.C.term={term}", f"--workdir={tmp_path / 'run'}"],
                      cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {expected}"), \
        proc.stderr[-500:]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # before any work


def test_list_names_what_a_config_can_use():
  proc = run_python(["-m", "experiments.run", "--list"])
  for expected in ("models (config.model.name", "target_prop", "energy terms", "l1 ",
                   "reads (z)", "corruptions", "salt_and_pepper", "keywords: p=0.2",
                   "inner optimisers", "fista", "data sets", "mnist5k"):
    assert expected in proc.stdout, expected


def test_a_disabled_role_is_switched_on_from_the_command_line(tmp_path):
  proc = run_python(["-m", "experiments.run", f"--config={ROOT}/experiments/dae.py:quick",
                     "--config.model.energy.R.term=l1", "--config.model.energy.R.weight=0.01",
                     "--config.train.num_epochs=1", f"--workdir={tmp_path}"])
  final = proc.stderr.split("Final test metrics: ")[1]
  assert "'R':" in final  # the L1 term is computed and reported
