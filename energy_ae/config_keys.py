"""Dotted config keys (``"model.beta"``): the one helper that reads, writes and lists them.

Works on ``ml_collections.ConfigDict`` and on plain nested dicts (a run's ``config.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MISSING = object()  # a default that says the key is absent
_REQUIRED = object()


def get(config, dotted: str, default: Any = _REQUIRED) -> Any:
  """``config[a][b][c]`` for ``"a.b.c"``; ``default`` (or KeyError naming the key) if absent."""
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      if default is _REQUIRED:
        raise KeyError(dotted)
      return default
    node = node[part]
  return node


def has(config, dotted: str) -> bool:
  return get(config, dotted, MISSING) is not MISSING


def set_value(config, dotted: str, value: Any) -> None:
  """``config[a][b][c] = value`` for an existing parent ``a.b`` (KeyError naming it if not)."""
  *path, last = dotted.split(".")
  parent = get(config, ".".join(path)) if path else config
  parent[last] = value


def apply(config, overrides: Mapping[str, Any]):
  """Sets each ``{"dotted.key": value}`` of ``overrides`` (existing parents only, as the CLI)."""
  for dotted, value in overrides.items():
    set_value(config, dotted, value)
  return config


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
  """``{"model": {"beta": 1}}`` → ``{"model.beta": 1}`` (ConfigDicts and dicts alike)."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items") and not isinstance(value, (str, bytes)):
      out.update(flatten(value, f"{name}."))
    else:
      out[name] = value
  return out
