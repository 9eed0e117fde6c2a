"""Every command a config's docstring documents runs as written, in its quick form (slow)."""

import glob
import os
import re
import shlex

import pytest

from conftest import ROOT, run_python


def documented_commands() -> list[tuple[str, list[str]]]:
  """(config file, argv after ``python``) for each ``python -m experiments.run`` line of each
  config docstring (backslash continuations joined)."""
  commands = []
  for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
    text = open(path).read()
    if "def get_config" not in text:
      continue
    docstring = re.match(r'r?"""(.*?)"""', text, re.S).group(1).replace("\\\n", " ")
    for line in docstring.splitlines():
      line = line.strip()
      if line.startswith("python -m experiments.run"):
        commands.append((os.path.relpath(path, ROOT), shlex.split(line)[1:]))
  return commands


COMMANDS = documented_commands()


def test_every_config_documents_a_command():
  configs = {c for c, _ in COMMANDS}
  expected = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
              if "def get_config" in open(p).read()}
  assert configs == expected


@pytest.mark.slow
@pytest.mark.parametrize("config,argv", COMMANDS, ids=[" ".join(a[2:]) for _, a in COMMANDS])
def test_documented_command_runs_in_its_quick_form(tmp_path, config, argv):
  quick = [f"{a}:quick" if a.startswith("--config=") and ":" not in a else a for a in argv]
  if any(a.endswith("data_dir=DIR") for a in quick):
    # A tfds set prepared where the network is reachable: here, a set of the same format and
    # features prepared locally stands in for it (the downloads cannot run on this machine).
    from feeds_test import _tfds_set

    name = _tfds_set(str(tmp_path / "tfds"))
    quick = [a.replace("=DIR", f"={tmp_path / 'tfds'}") for a in quick]
    quick += [f"--config.data.name=tfds:{name}", "--config.train.batch_size=16"]
  proc = run_python([*quick, f"--workdir={tmp_path / 'run'}"])
  assert "Final test metrics" in proc.stderr, proc.stderr[-3000:]
