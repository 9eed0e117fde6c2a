"""What a user installs and cites says one thing: the version, the Python versions, the tested
dependency ranges and the lock file agree with one another (pure file checks: no network)."""

import os
import re
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import energy_ae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name: str) -> str:
  with open(os.path.join(ROOT, name), encoding="utf-8") as f:
    return f.read()


def _pyproject() -> dict:
  return tomllib.loads(_read("pyproject.toml"))


def _locked() -> dict[str, Version]:
  """{normalised name: pinned version} of requirements.lock (markers ignored)."""
  pins = {}
  for line in _read("requirements.lock").splitlines():
    match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
    if match:
      pins[_norm(match.group(1))] = Version(match.group(2))
  return pins


def _norm(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def _ranged_requirements() -> list[Requirement]:
  """The runtime dependencies and the extras the lock holds (test, tfds), self-references out."""
  project = _pyproject()["project"]
  extras = project["optional-dependencies"]
  reqs = [Requirement(r) for r in project["dependencies"] + extras["test"] + extras["tfds"]]
  return [r for r in reqs if _norm(r.name) != "energy-ae"]


def test_one_version_everywhere():
  # A release that bumps __version__ but forgets the changelog or the citation (or the other
  # way round) fails here.
  version = energy_ae.__version__
  Version(version)  # a PEP 440 version
  first_entry = re.search(r"^## (\S+)", _read("CHANGELOG.md"), re.M)
  assert first_entry and first_entry.group(1) == version, (first_entry, version)
  cited = re.search(r"^version:\s*['\"]?([^'\"\s]+)", _read("CITATION.cff"), re.M)
  assert cited and cited.group(1) == version, (cited, version)
  assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {
      "attr": "energy_ae.__version__"}


def test_python_versions_claimed_are_the_ones_supported():
  # requires-python once said >= 3.10 while the code needs 3.11 (hashlib.file_digest).
  project = _pyproject()["project"]
  assert project["requires-python"] == ">=3.11"
  claimed = sorted(c.rsplit(":: ", 1)[1] for c in project["classifiers"]
                   if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
  assert claimed == ["3.11", "3.12", "3.13"]
  assert sys.version_info >= (3, 11)


def test_every_range_is_tested_by_the_lock():
  # Each direct dependency is pinned by the lock inside its range, and its lower end is the
  # locked release (same major.minor): a range widened or narrowed without `make lock`, or a
  # floor below anything tested, fails here.
  locked = _locked()
  for req in _ranged_requirements():
    name = _norm(req.name)
    assert name in locked, f"{req.name} is not in requirements.lock (run make lock)"
    pin = locked[name]
    assert pin in req.specifier, f"requirements.lock pins {req.name}=={pin}, outside {req}"
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    uppers = [s for s in req.specifier if s.operator in ("<", "<=", "==")]
    assert floors and uppers, f"{req} needs a tested lower and upper end"
    assert floors[0].release[:2] == pin.release[:2], (
        f"{req}: its lower end {floors[0]} is not the locked release {pin}")


def test_lock_holds_one_version_of_each_package():
  # One lock for Python 3.11 to 3.13 (uv's --fork-strategy fewest): the same versions tested
  # on every Python; a resolution forked by Python version would list a package twice.
  names = [_norm(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==", _read(
      "requirements.lock"), re.M)]
  assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("extra", ["cuda12", "cuda13", "tpu"])
def test_accelerator_extras_follow_the_jax_range(extra):
  # pip install 'energy_ae[cuda12]' must not pull a JAX outside the tested range.
  (req,) = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"][extra]]
  (jax_req,) = [Requirement(r) for r in _pyproject()["project"]["dependencies"]
                if Requirement(r).name == "jax"]
  assert req.name == "jax" and req.extras == {extra} and req.specifier == jax_req.specifier


def test_licence_is_apache_2():
  text = _read("LICENSE")
  assert "Apache License" in text and "Version 2.0, January 2004" in text
  assert _pyproject()["project"]["license"] == "Apache-2.0"
  assert re.search(r"^license:\s*Apache-2\.0\s*$", _read("CITATION.cff"), re.M)
