"""README.md and docs/*.md work as written.

Every fenced block of every page is accounted for (fast): a ``bash`` / ``sh`` block is run, a
``python`` block is run, and any other block says how it is handled in an HTML comment on the
line before it:

* ``<!-- not run: WHY -->``: not run, for the reason given;
* ``<!-- fails -->`` (before a shell block): each of its commands must fail with exit status 1
  and a last line ``error: ...``;
* ``<!-- output of the command above -->`` (before a text block): what the shell block before
  it prints; each line must appear in the real output (for a ``fails`` block: the i-th error
  line), numbers and ``…`` standing for whatever the run prints there.

In a shell block, ``make TARGET`` lines are checked with ``make -n TARGET`` (the target exists
and its recipe expands), and lines that install packages or reach the network (``pip install``,
``python3 -m venv``, ``tfds build``, ``git clone``) are checked for form only, never run: the
machines that run the tests cannot download. Everything else runs (slow): each page in a scratch
directory of its own, top to bottom, where ``experiments/`` is the checkout's, so that a page's
commands read what its earlier commands wrote; ``python -m experiments.X --config=FILE`` runs as
``--config=FILE:quick``. Python blocks run in a fresh process in that directory.

docs/extending.md is left to tests/extending_test.py, which runs its files and commands.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from typing import NamedTuple

import pytest

from conftest import ROOT, run_python

PAGES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))
    if os.path.basename(p) != "extending.md")
LINKED = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                                for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))

NOT_RUN, FAILS, OUTPUT = "not run:", "fails", "output of the command above"
SHELL, PYTHON = ("bash", "sh"), ("python",)
# The commands a shell block may run; anything else is an error of the page (or of this list).
RUNNABLE = {"python", "python3", ".venv/bin/python", "for", "do", "done", "wait", "mkdir", "cd",
            "ls", "cat", "cp", "rm", "echo"}


class Block(NamedTuple):
  page: str
  line: int  # of the opening fence, 1-based
  lang: str
  text: str
  marker: str  # the HTML comment on the line before the fence ('' if none)

  @property
  def where(self) -> str:
    return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
  """The fenced blocks of ``page`` (indented ones inside list items too), dedented."""
  lines = open(os.path.join(ROOT, page), encoding="utf-8").read().splitlines()
  found, i = [], 0
  while i < len(lines):
    opening = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
    if not opening:
      i += 1
      continue
    indent, lang = len(opening.group(1)), opening.group(2)
    j = i + 1
    while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
      j += 1
    previous = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
    comment = re.fullmatch(r"<!--\s*(.*?)\s*-->", previous)
    text = "\n".join(line[indent:] for line in lines[i + 1:j]) + "\n"
    found.append(Block(page, i + 1, lang, text, comment.group(1) if comment else ""))
    i = j + 1
  return found


def logical_lines(text: str) -> list[str]:
  """The block's lines with backslash continuations joined, blank and comment lines dropped."""
  joined = text.replace("\\\n", " ")
  return [line for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def commands(line: str) -> list[list[str]]:
  """The words of each simple command of a shell line (split at ``&&``, ``;``, ``|``, ``&``
  outside quotes), without the comment and leading VAR=value assignments."""
  lex = shlex.shlex(line, posix=True, punctuation_chars=True)
  lex.whitespace_split = True
  found, words = [], []
  for token in lex:
    if set(token) <= set("&;|"):
      found.append(words)
      words = []
    else:
      words.append(token)
  found.append(words)
  for words in found:
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
      words.pop(0)
  return [w for w in found if w]


# ----------------------------------------------------------------------------
# What each shell line is: make, an installation (form only), or a command to run
# ----------------------------------------------------------------------------


def _extras() -> set[str]:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return set(tomllib.load(f)["project"]["optional-dependencies"])


def _install_problem(words: list[str]) -> str | None:
  """None if ``words`` are a well-formed install / network command, else what is wrong;
  ``"not an install"`` if they are none."""
  if words[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"]):
    return None if len(words) == 4 else f"python -m venv takes one directory: {words}"
  if words[:2] == ["git", "clone"]:
    return None if len(words) >= 3 and words[2].startswith("https://") else f"git clone URL: {words}"
  if words[:2] == ["tfds", "build"]:
    return None if "--file_format=array_record" in words else (
        f"tfds build must write array_record files (the format energy_ae reads): {words}")
  pip = (words[:2] == ["pip", "install"] or (words[0].endswith("/pip") and words[1:2] == ["install"])
         or words[1:4] == ["-m", "pip", "install"])
  if not pip:
    return "not an install"
  args = words[words.index("install") + 1:]
  while args:
    arg = args.pop(0)
    if arg in ("--no-deps", "--upgrade", "--quiet", "-U", "-q"):
      continue
    if arg == "-r":
      path = args.pop(0) if args else ""
      if not os.path.isfile(os.path.join(ROOT, path)):
        return f"pip install -r {path}: no such file in the checkout"
    elif arg == "-e":
      target = args.pop(0) if args else ""
      match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
      if not match:
        return f"pip install -e {target}: expected . or .[extra,...] (the checkout)"
      unknown = set((match.group(1) or "").split(",")) - _extras() - {""}
      if unknown:
        return f"pip install -e {target}: pyproject.toml has no extra {sorted(unknown)}"
    elif re.match(r"energy[_-]ae\b", arg, re.I):
      return (f"pip install {arg} reads as an install from a registry, where this project is "
              "not: install the checkout with pip install -e '.[extra]'")
    elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[\w,-]+\])?([<>=!~]=?[\w.*]+)?", arg):
      return f"pip install: unexpected argument {arg!r}"
  return None


def classify(line: str) -> str:
  """'make', 'install' or 'run' for one logical line of a shell block."""
  parts = commands(line)
  if parts and parts[0][0] == "make":
    return "make"
  if parts and all(_install_problem(w) != "not an install" for w in parts):
    return "install"
  return "run"


def line_problems(line: str) -> list[str]:
  """What is wrong with one logical shell line, read without running it."""
  kind = classify(line)
  problems = []
  if kind == "make":
    words = commands(line)[0]
    proc = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
      problems.append(f"make -n {' '.join(words[1:])} fails: {proc.stderr.strip()[-300:]}")
  elif kind == "install":
    problems += [p for words in commands(line) for p in [_install_problem(words)] if p]
  else:
    for words in commands(line):
      if words[0] not in RUNNABLE:
        problems.append(f"{words[0]!r} is not a command these tests run ({line.strip()})")
      module = next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"), "")
      if module.startswith("experiments."):
        name = module.split(".", 1)[1]
        if not (os.path.isfile(os.path.join(ROOT, "experiments", f"{name}.py"))
                or os.path.isfile(os.path.join(ROOT, "experiments", name, "__main__.py"))):
          problems.append(f"python -m {module}: no such module")
      for w in words:
        if w.startswith("--config="):
          path = w.split("=", 1)[1].split(":")[0]
          if not os.path.isfile(os.path.join(ROOT, path)):
            problems.append(f"{w}: no such config file")
  return problems


def block_problems(block: Block, previous: Block | None) -> list[str]:
  """Why ``block`` is neither runnable nor properly marked (empty: it is fine)."""
  marker = block.marker
  if marker.startswith(NOT_RUN):
    return [] if marker[len(NOT_RUN):].strip() else ["'not run:' without a reason"]
  if marker == OUTPUT:
    if previous is None or previous.lang not in SHELL or previous.marker.startswith(NOT_RUN):
      return ["an output block must follow the shell block it is the output of"]
    return []
  if marker and marker != FAILS:
    return [f"unknown marker <!-- {marker} -->"]
  if block.lang in PYTHON:
    if marker:
      return ["a python block takes no marker but 'not run: why'"]
    try:
      compile(block.text, block.where, "exec")
    except SyntaxError as e:
      return [f"python block does not compile: {e}"]
    return []
  if block.lang not in SHELL:
    return [f"a {block.lang or 'plain'} block is neither runnable nor marked: put "
            "<!-- not run: why --> (or <!-- output of the command above -->) before it"]
  problems = [p for line in logical_lines(block.text) for p in line_problems(line)]
  if marker == FAILS and any(classify(line) != "run" for line in logical_lines(block.text)):
    problems.append("a 'fails' block holds only commands that run")
  return problems


# ----------------------------------------------------------------------------
# Fast: every block accounted for, every link resolves
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_runnable_or_says_why_not(page):
  found = blocks(page)
  problems = [f"{b.where}: {p}" for i, b in enumerate(found)
              for p in block_problems(b, found[i - 1] if i else None)]
  assert not problems, "\n".join(problems)


def test_the_parser_sees_what_each_rule_is_about():
  # Each rule of the fast test must be able to fail: bad blocks of each kind are reported.
  bad = [Block("x", 1, "text", "output\n", ""), Block("x", 1, "bash", "tensorboard --logdir runs\n", ""),
         Block("x", 1, "bash", "pip install 'energy_ae[tfds]'\n", ""),
         Block("x", 1, "bash", "make no-such-target\n", ""),
         Block("x", 1, "bash", "python -m experiments.nosuch --config=experiments/vae.py\n", ""),
         Block("x", 1, "bash", "python -m experiments.run --config=experiments/nosuch.py\n", ""),
         Block("x", 1, "python", "def (:\n", ""), Block("x", 1, "text", "x\n", "not run:"),
         Block("x", 1, "bash", ".venv/bin/pip install -e '.[nosuch]'\n", "")]
  for block in bad:
    assert block_problems(block, None), block
  good = [Block("x", 1, "bash", "make test\n", ""), Block("x", 1, "text", "x\n", "not run: why"),
          Block("x", 1, "bash",
                "python3 -m venv .venv && .venv/bin/pip install -r requirements.lock\n", ""),
          Block("x", 1, "bash",
                "XLA_FLAGS=--x=4 python -m experiments.run \\\n  --config=experiments/vae.py\n", "")]
  for block in good:
    assert not block_problems(block, None), (block, block_problems(block, None))


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"[`*_]{2,}|`", "", heading.strip().lower())
  return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(path: str) -> set[str]:
  text = open(path, encoding="utf-8").read()
  return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def _links(page: str) -> list[str]:
  text = open(os.path.join(ROOT, page), encoding="utf-8").read()
  text = re.sub(r"```.*?```", "", text, flags=re.S)  # not inside code blocks
  text = re.sub(r"`[^`\n]*`", "", text)  # nor code spans
  return (re.findall(r"\]\(([^)\s]+)\)", text)
          + re.findall(r"(?:href|src)=\"([^\"]+)\"", text))


@pytest.mark.parametrize("page", LINKED)
def test_every_relative_link_points_to_an_existing_file_and_anchor(page):
  problems = []
  for link in _links(page):
    if re.match(r"[a-z]+:", link):  # https:, mailto:
      continue
    path, _, anchor = link.partition("#")
    target = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
        os.path.join(ROOT, page)
    if not os.path.exists(target):
      problems.append(f"{link}: no such file")
    elif anchor and target.endswith(".md") and anchor not in _anchors(target):
      problems.append(f"{link}: no heading with that anchor")
  assert not problems, f"{page}: " + "; ".join(problems)


def test_the_readme_is_a_front_door_to_every_page():
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  assert len(text.splitlines()) <= 200  # the front door stays short: details live in docs/
  linked = set(_links("README.md"))
  missing = [p for p in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
             + [os.path.join(ROOT, "docs", "tutorial.ipynb")]
             if os.path.relpath(p, ROOT) not in linked]
  assert not missing, f"README.md does not link {missing}"


def test_configs_page_lists_every_key_safe_on_resume():
  # docs/configs.md names each key a resume may change; a key added to the code shows here.
  from energy_ae import run_dir

  text = open(os.path.join(ROOT, "docs", "configs.md"), encoding="utf-8").read()
  missing = [k for k in run_dir.SAFE_ON_RESUME if f"`{k}`" not in text]
  missing += [p for p in run_dir.SAFE_PREFIXES_ON_RESUME if f"`{p}*`" not in text]
  assert not missing, f"docs/configs.md does not list {missing}"


def _numbers(value) -> list[float]:
  """Every number in a summary.json value (numeric strings too, e.g. the β labels)."""
  if isinstance(value, dict):
    return [n for v in value.values() for n in _numbers(v)]
  if isinstance(value, list):
    return [n for v in value for n in _numbers(v)]
  if isinstance(value, bool) or value is None:
    return []
  if isinstance(value, str):
    try:
      return [float(value)]
    except ValueError:
      return []
  return [float(value)]


def test_every_decimal_in_the_gallery_comes_from_the_figures():
  # A caption's decimal number is a value of summary.json at the precision written (written by
  # the run that drew the PNGs), or a literal of the figure code (a choice such as 12.5 or 0.03).
  # Integers (counts, steps, epochs) are not checked. This fails when a caption quotes a
  # number from an older gallery.
  with open(os.path.join(ROOT, "docs", "figures", "summary.json")) as f:
    recorded = [abs(n) for n in _numbers(json.load(f))]
  code = "".join(open(p).read() for p in glob.glob(os.path.join(ROOT, "experiments", "figures", "*.py"))
                 + glob.glob(os.path.join(ROOT, "experiments", "*.py")))
  text = open(os.path.join(ROOT, "docs", "gallery.md"), encoding="utf-8").read()
  text = re.sub(r"```.*?```", "", text, flags=re.S)  # code, link targets and headings aside
  text = re.sub(r"`[^`\n]*`|\]\([^)]*\)|^#.*$", "", text, flags=re.M)
  unmatched = []
  for written in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text):
    value, half_ulp = float(written), 0.5 * 10 ** -len(written.split(".")[1])
    if written in code or any(abs(r - value) <= half_ulp * (1 + 1e-9) for r in recorded):
      continue
    unmatched.append(written)
  assert not unmatched, f"gallery numbers in neither summary.json nor the figure code: {unmatched}"


def test_the_gallery_shows_every_figure():
  shown = set(re.findall(r"\(figures/(\w+)\.png\)", open(os.path.join(ROOT, "docs", "gallery.md")).read()))
  drawn = {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(ROOT, "docs", "figures", "*.png"))}
  assert shown == drawn


# ----------------------------------------------------------------------------
# Slow: every page runs top to bottom
# ----------------------------------------------------------------------------


def _session(tmp_path) -> tuple[str, dict]:
  """A scratch working directory with the checkout's experiments/, and the environment of the
  commands: ``python`` is this interpreter, one CPU device unless a command says otherwise."""
  os.symlink(os.path.join(ROOT, "experiments"), tmp_path / "experiments")
  bin_dir = tmp_path / "_bin"
  bin_dir.mkdir()
  for name in ("python", "python3"):
    shim = bin_dir / name
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1", PYTHONPATH=ROOT)
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  return str(tmp_path), env


def quick(line: str) -> str:
  """The line as it runs here: ``--config=FILE.py`` in its quick form, the venv's python as
  this interpreter."""
  line = re.sub(r"(--config=\S+?\.py)(?=\s|$)", r"\1:quick", line)
  return line.replace(".venv/bin/python ", "python ")


def _bash(script: str, cwd: str, env: dict) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=900)


def _pattern(documented: str) -> re.Pattern:
  """A documented output line as a pattern: ``…`` any text, each number any number."""
  parts = re.split(r"(…|\d+(?:\.\d+)?(?:e[-+]?\d+)?)", documented.strip())
  regex = "".join(".*?" if p == "…" else r"(?:-?[\d.]+(?:e[-+]?\d+)?|nan|inf)"
                  if re.fullmatch(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", p) else re.escape(p)
                  for p in parts)
  return re.compile(regex)


def run_block(block: Block, cwd: str, env: dict) -> list[str]:
  """Runs one block; returns the lines it printed (a 'fails' block: each command's error line)."""
  if block.lang in PYTHON:
    path = os.path.join(cwd, f"_snippet_{block.line}.py")
    with open(path, "w") as f:
      f.write(block.text)
    proc = run_python([path], cwd=cwd, check=False, env_extra={"PYTHONPATH": ROOT})
    assert proc.returncode == 0, f"{block.where} failed:\n{proc.stderr[-3000:]}"
    return (proc.stdout + proc.stderr).splitlines()
  commands = [quick(line) for line in logical_lines(block.text) if classify(line) == "run"]
  if block.marker == FAILS:
    errors = []
    for command in commands:
      proc = _bash(command, cwd, env)
      last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
      assert proc.returncode == 1 and last.startswith("error: ") and "Traceback" not in proc.stderr, \
          f"{block.where}: {command} should fail in one line:\n{proc.stderr[-3000:]}"
      errors.append(last)
    return errors
  if not commands:
    return []
  proc = _bash("\n".join(commands), cwd, env)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"{block.where} failed:\n{out[-4000:]}"
  if "experiments.run" in block.text:
    assert "Final test metrics" in out, f"{block.where}: no run finished:\n{out[-4000:]}"
  return out.splitlines()


def check_output(block: Block, printed: list[str], fails: bool) -> None:
  documented = [line for line in block.text.splitlines() if line.strip()]
  if fails:
    assert len(documented) == len(printed), (block.where, printed)
    for line, got in zip(documented, printed):
      assert _pattern(line).fullmatch(got), f"{block.where}: documented\n  {line}\nprinted\n  {got}"
  else:
    for line in documented:
      assert any(_pattern(line).search(got) for got in printed), \
          f"{block.where}: documented\n  {line}\nnot printed:\n" + "\n".join(printed[-20:])


def test_output_patterns_match_what_they_should():
  # The output check must reject a changed message and accept other numbers.
  line = "error: non-finite values at step 4: … the run stopped there (C=1.5)"
  assert _pattern(line).fullmatch(
      "error: non-finite values at step 12: C, KL (x); the run stopped there (C=nan)")
  assert not _pattern(line).fullmatch(
      "error: non-finite values at step 4: C; the run went on (C=1.5)")


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_command_and_snippet_of_the_page_runs(tmp_path, page):
  cwd, env = _session(tmp_path)
  found = blocks(page)
  printed, previous = [], None
  for block in found:
    if block.marker.startswith(NOT_RUN):
      continue
    if block.marker == OUTPUT:
      check_output(block, printed, fails=previous.marker == FAILS)
      continue
    printed, previous = run_block(block, cwd, env), block
