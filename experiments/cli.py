"""What every command-line tool with a ``--config`` shares: the flags parsed so that each mistake
is one line, and the expected errors turned into one line and exit status 1.

``--config.KEY=VALUE`` overrides change existing keys only, as ml_collections does, with three
rules of ours:

* a key given twice with two values is refused (absl would keep the last silently);
* a value of the wrong type names the key, the value and the type the key takes (absl prints a
  traceback), and a tuple's elements must have the default's element type;
* keyword arguments of a term, an optimiser or a corruption may be new keys: below a
  ``kwargs`` mapping (``model.energy.C.kwargs.delta``, ``train.optimizer_kwargs.eps``,
  ``model.corruption_kwargs.gaussian.sigma``) a key is created, its value read as a Python
  literal; whoever takes the mapping checks the keyword (an energy term names one it lacks).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import traceback

from absl import app, flags

from energy_ae import config_keys

FLAGS = flags.FLAGS
# The errors a user can act on end a command in one line. The library's own types are named by
# module, and looked up only where that module is already imported (an error raised before it
# cannot be one of its own): `--help` or a mistyped flag import no JAX, no Orbax.
EXPECTED_ERRORS = (ValueError, FileNotFoundError, KeyError, TypeError)
_LIBRARY_ERRORS = (("energy_ae.data", "DataError"), ("energy_ae.loop", "TrainingError"),
                   ("energy_ae.checkpoints", "CheckpointError"))

# Overrides below a keyword-argument mapping that the config does not have yet, applied
# after absl parsed the rest (``apply_keyword_overrides``).
_KEYWORD_OVERRIDES: dict[str, object] = {}


def fail(message: str):
  if "--verbose" in sys.argv:
    traceback.print_exc()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def config_path(argv: list[str], variant: bool = False) -> str:
  """The file of --config=FILE[:arg] (or --config FILE[:arg]) on the command line."""
  for i, arg in enumerate(argv):
    value = (arg.split("=", 1)[1] if arg.startswith("--config=")
             else argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
    if value is not None:
      return value if variant else value.split(":")[0]
  return "(none given)"


def default_config(argv: list[str]):
  """The config file's ``get_config(variant)`` without overrides (None if it cannot load: the
  parser then reports why)."""
  path, _, variant = config_path(argv, variant=True).partition(":")
  try:
    spec = importlib.util.spec_from_file_location("_cli_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant or None)
  except Exception:  # noqa: BLE001 — absl's own loading names the problem
    return None


def _overrides(argv: list[str]) -> list[tuple[int, str, str | None]]:
  """(position, key, value) of every --config.KEY=VALUE (value None: the next argument)."""
  found = []
  for i, arg in enumerate(argv):
    if arg.startswith("--config."):
      key, sep, value = arg[len("--config."):].partition("=")
      found.append((i, key, value if sep else None))
  return found


def _type_name(value) -> str:
  for kind, name in ((bool, "True or False"), (int, "an integer"), (float, "a number"),
                     (str, "a string"), (tuple, "a tuple")):
    if isinstance(value, kind):
      return name
  return type(value).__name__


def _keyword_override(defaults, key: str) -> bool:
  """A new key below an existing config node's keyword-argument mapping."""
  parts = key.split(".")
  for j, part in enumerate(parts[:-1]):
    if part.endswith("kwargs"):
      return config_keys.has(defaults, ".".join(parts[:j])) and not config_keys.has(defaults, key)
  return False


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (SyntaxError, ValueError):
    return text  # a string, as ml_collections reads an untyped value


def _check_argv(argv: list[str], defaults) -> list[str]:
  """Refuses repeated keys; takes the keyword overrides out of ``argv`` (kept for later)."""
  seen, kept, skip = {}, [], set()
  for i, key, value in _overrides(argv):
    if key in seen and seen[key] != value:
      fail(f"--config.{key} is given twice ({seen[key]!r} and {value!r}); give each key once"
           + ("; several swept keys make a grid: --config.sweep.key=K1,K2 "
              "--config.sweep.values='(v1,v2),(w1,w2)'" if key.startswith("sweep.") else ""))
    seen[key] = value
    if defaults is not None and _keyword_override(defaults, key):
      if value is None:
        value = argv[i + 1] if i + 1 < len(argv) else ""
        skip.add(i + 1)
      _KEYWORD_OVERRIDES[key] = _literal(value)
      skip.add(i)
  kept = [a for i, a in enumerate(argv) if i not in skip]
  return kept


def _illegal_value(error: Exception, defaults) -> str | None:
  """absl's 'flag --config.K=V: could not convert ...' as one line naming the type K takes."""
  match = re.search(r"flag --config\.([^=\s]+)=(.*?): (.*)", str(error).splitlines()[0])
  if match is None:
    return None
  key, value, why = match.groups()
  default = config_keys.get(defaults, key, None) if defaults is not None else None
  takes = _type_name(default) if default is not None else "another value"
  return f"--config.{key}={value}: {key} takes {takes}, got {value!r} ({why})"


def _check_tuple_elements(config, argv: list[str], defaults) -> None:
  """A tuple override whose elements are not of the default's one element type."""
  if defaults is None:
    return
  for _, key, _ in _overrides(argv):
    default, value = config_keys.get(defaults, key, None), config_keys.get(config, key, None)
    if not (isinstance(default, tuple) and default and isinstance(value, tuple)):
      continue
    kinds = {type(v) for v in default}
    if len(kinds) != 1 or kinds.pop() not in (int, float, str):
      continue
    kind = type(default[0])
    bad = [v for v in value if isinstance(v, bool) or not (
        isinstance(v, kind) or (kind is float and isinstance(v, int)))]
    if bad:
      fail(f"--config.{key}={','.join(map(str, value))}: {key} takes a tuple of "
           f"{kind.__name__}, got {value!r} ({bad[0]!r} is not)")


def apply_keyword_overrides(config) -> None:
  """Sets the new keyword-argument keys given on the command line (after absl's parsing)."""
  for key, value in _KEYWORD_OVERRIDES.items():
    *path, last = key.split(".")
    node = config
    with config.unlocked():
      for part in path:
        if part not in node:
          node[part] = {}
        node = node[part]
      node[last] = value


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser with our rules (see the module docstring); an error raised by the config
  file's get_config() (an unknown variant, a bad value) is one line too."""
  defaults = default_config(argv) if any(a.startswith("--config") for a in argv) else None
  argv = _check_argv(argv, defaults)
  # ml_collections reads the overrides from sys.argv itself: it must not see the keyword ones.
  sys.argv[:] = argv
  try:
    rest = FLAGS(argv)
  except flags.Error as e:  # IllegalFlagValueError for a bad override and for get_config()'s own
    message = _illegal_value(e, defaults) if isinstance(e, flags.IllegalFlagValueError) else None
    text = str(e)
    if message is None and "Error whilst parsing config file" in text:
      last = [line.strip() for line in text.splitlines() if line.strip()][-1]
      message = f"--config={config_path(argv, variant=True)}: {last.split(': ', 1)[-1]}"
    if message is None:
      raise
    fail(message)
  if "config" in FLAGS and FLAGS.config is not None:
    _check_tuple_elements(FLAGS.config, argv, defaults)
    apply_keyword_overrides(FLAGS.config)
  return rest


def _explain_flag_error(e: Exception, argv: list[str]) -> str | None:
  """Says which --config flag failed to parse, or None for an error of ours."""
  while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(...))
    e = e.args[0]
  text = str(e.args[0]) if e.args else ""
  if "has no attribute 'get_config'" in text:
    return f"config file {config_path(argv)} has no get_config() function"
  lines = text.splitlines() or [""]
  missing, hint = lines[0].strip("\"'"), " ".join(lines[1:])
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      key = arg[len("--config."):].split("=", 1)[0]
      if missing and missing in key.split("."):
        return (f"{arg}: the config has no key {key!r} (overrides can only change existing "
                f"keys){'; ' + hint if hint else ''}")
  return None


def _imported(module: str, name: str) -> type | None:
  """``module.name`` if that module is imported already, else None (nothing is imported)."""
  return getattr(sys.modules[module], name) if module in sys.modules else None


def expected_errors(expected=EXPECTED_ERRORS) -> tuple[type[BaseException], ...]:
  """``expected`` and the library's error types of the modules imported so far."""
  library = [_imported(module, name) for module, name in _LIBRARY_ERRORS]
  return tuple(expected) + tuple(kind for kind in library if kind is not None)


def run(main, *, expected=EXPECTED_ERRORS) -> None:
  """``app.run(main)`` with our flag parser; expected errors end in one line and exit 1,
  SIGINT / SIGTERM after a saved checkpoint in 128 + the signal's number."""
  # Orbax's INFO chatter filtered on the log handlers without importing Orbax (or JAX) here.
  from energy_ae.checkpoints import quiet_orbax_logging

  quiet_orbax_logging()
  try:
    app.run(main, flags_parser=parse_flags)
  except (KeyError, AttributeError) as e:  # ml_collections: no such key / no get_config
    message = _explain_flag_error(e, sys.argv)
    if message is None and isinstance(e, KeyError):
      message = str(e.args[0]) if e.args else repr(e)  # str() of a KeyError is its repr
    if message is None:
      raise
    fail(message)
  except OSError as e:
    if "Configuration is not available" not in str(e):  # ml_collections: unreadable config file
      if isinstance(e, FileNotFoundError):
        fail(str(e))
      raise
    fail(f"config file {config_path(sys.argv)} cannot be loaded: "
         f"{str(e).strip().splitlines()[-1].strip()}")
  except Exception as e:  # noqa: BLE001 — the expected ones end in one line, the rest re-raised
    interrupted = _imported("energy_ae.loop", "Interrupted")
    if interrupted is not None and isinstance(e, interrupted):
      # checkpoint saved; exit as a signal-killed process would
      print(f"stopped: {e}", file=sys.stderr)
      sys.exit(128 + e.signum)
    if not isinstance(e, expected_errors(expected)):
      raise
    fail(str(e))
  except KeyboardInterrupt:  # before the loop installed its handler: nothing to save yet
    print("stopped: interrupted before training started; nothing was written",
          file=sys.stderr)
    sys.exit(130)
