"""Every shared config key is checked for type and range before any work."""

import glob
import importlib
import os
import re

import pytest

from conftest import ROOT
from energy_ae import config_checks, config_keys

CONFIGS = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if "def get_config" in open(p).read())


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("variant", [None, "quick"])
def test_every_experiment_config_passes(name, variant):
  config_checks.check_config(importlib.import_module(f"experiments.{name}").get_config(variant))


@pytest.mark.parametrize("rule", config_checks.RULES, ids=lambda r: r.key)
def test_each_rule_names_its_key_and_what_it_must_be(rule):
  config = importlib.import_module("experiments.vae").get_config("quick")
  good = config_keys.get(config, rule.key)
  assert rule.ok(good), (rule.key, good)
  # The first of these that breaks the rule: a wrong type or a value out of range.
  for bad in ("nonsense-string", -7, 2.5, None, float("nan")):
    if rule.ok(bad):
      continue
    section, key = rule.key.rsplit(".", 1) if "." in rule.key else ("", rule.key)
    node = config
    for part in filter(None, section.split(".")):
      node = node[part]
    with node.unlocked() if hasattr(node, "unlocked") else _nothing():
      node.__dict__["_fields"][key] = bad  # bypass ConfigDict's type-safety, as a JSON load does
    with pytest.raises(ValueError, match=f"^config.{re.escape(rule.key)} = .*: must "
                                         f"{re.escape(rule.must)}$"):
      config_checks.check_config(config)
    node.__dict__["_fields"][key] = good
    return
  pytest.fail(f"no bad value found for {rule.key}")


class _nothing:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False
