"""Type and range checks of the keys every config shares, before any work.

Each rule names a dotted key, what it must be and why; ``check_config`` raises one
``ValueError`` naming the first key that breaks its rule (``config.train.batch_size = 0: must
be a positive integer``). A key the config does not have is skipped (a model's own keys are
checked by its ``validate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from energy_ae import config_keys


def is_traced(value) -> bool:
  """A value traced by JAX: a hyper-parameter of a sweep's variant (``energy_ae.sweep``),
  whose range each variant's concrete config was checked for before tracing."""
  import jax

  return isinstance(value, jax.core.Tracer)


class Rule(NamedTuple):
  key: str
  ok: Callable[[Any], bool]
  must: str


def _int(low: int) -> Callable[[Any], bool]:
  return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(low: float, *, strict: bool = False, allow_inf: bool = False) -> Callable[[Any], bool]:
  def ok(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
      return False
    if math.isinf(v) and not allow_inf:
      return False
    return v > low if strict else v >= low

  return ok


def _bool(v) -> bool:
  return isinstance(v, bool)


def _choice(*names) -> Callable[[Any], bool]:
  return lambda v: v in names


def _str(v) -> bool:
  return isinstance(v, str)


RULES = (
    Rule("seed", _int(0), "be an integer >= 0"),
    Rule("compilation_cache_dir", _str, "be a directory (or empty: no cache)"),
    Rule("compilation_cache_min_seconds", _number(0), "be finite and >= 0"),
    Rule("compilation_cache_max_gb", _number(0, strict=True), "be > 0"),
    Rule("train.optimizer_kwargs", lambda v: hasattr(v, "items"),
         "be a mapping of keyword arguments of the optimiser (or empty)"),
    Rule("data.name", lambda v: isinstance(v, str) and bool(v), "name a data set"),
    Rule("data.range", _choice("unit", "symmetric", "raw"), "be one of unit, symmetric, raw"),
    Rule("data.flatten", _bool, "be True or False"),
    Rule("data.binarize", _choice("none", "dynamic"), "be one of none, dynamic"),
    Rule("data.data_dir", _str, "be a path (or empty)"),
    Rule("data.train_split", lambda v: isinstance(v, str) and bool(v), "name a split"),
    Rule("data.test_split", lambda v: isinstance(v, str) and bool(v), "name a split"),
    Rule("data.pipeline", _choice("resident", "stream"), "be one of resident, stream"),
    Rule("data.placement", _choice("sharded", "replicated"), "be one of sharded, replicated"),
    Rule("data.memory_budget_gb", _number(0), "be finite and >= 0 (0: the available memory)"),
    Rule("data.stream_threads", _int(1), "be a positive integer"),
    Rule("data.stream_prefetch", _int(1), "be a positive integer"),
    Rule("data.test_binarization_seed", _int(0), "be an integer >= 0"),
    Rule("data.max_test_examples", _int(0), "be an integer >= 0 (0: the whole test split)"),
    Rule("train.batch_size", _int(1), "be a positive integer"),
    Rule("train.num_epochs", _number(0, strict=True), "be > 0"),
    Rule("train.learning_rate", _number(0, strict=True), "be finite and > 0"),
    Rule("train.grad_clip_norm", _number(0), "be finite and >= 0 (0: no clipping)"),
    Rule("train.log_every", _int(1), "be a positive integer"),
    Rule("train.steps_per_dispatch", _int(1), "be a positive integer"),
    Rule("train.eval_every", _int(1), "be a positive integer"),
    Rule("train.checkpoint_every", _int(1), "be a positive integer"),
    Rule("train.checkpoints_to_keep", _int(1), "be a positive integer"),
    Rule("train.eval_batch_size", _int(1), "be a positive integer"),
    Rule("train.eval_at_start", _bool, "be True or False"),
    Rule("train.linear_probe", _bool, "be True or False"),
    Rule("train.linear_probe_max_iter", _int(1), "be a positive integer"),
    Rule("train.linear_probe_l2", _number(0), "be finite and >= 0"),
    Rule("train.lr_schedule", _choice("constant", "cosine", "burda"),
         "be one of constant, cosine, burda"),
    Rule("train.linear_probe_examples", _int(0), "be an integer >= 0 (0: all)"),
    Rule("train.progress", _bool, "be True or False"),
    Rule("train.on_nonfinite", _choice("stop", "skip"), "be one of stop, skip"),
    Rule("train.max_consecutive_nonfinite", _int(1), "be a positive integer"),
    Rule("model.name", lambda v: isinstance(v, str) and bool(v), "name a model"),
    Rule("model.latent_dim", _int(1), "be > 0 (a positive integer)"),
    Rule("sweep.key", _str, "name a config key (or be empty: no sweep)"),
    Rule("sweep.values", lambda v: isinstance(v, (tuple, list)), "be a tuple of values"),
    Rule("sweep.on_nonfinite", _choice("freeze", "stop"), "be one of freeze, stop"),
    Rule("distributed.enabled", _bool, "be True or False"),
    Rule("distributed.num_processes", lambda v: isinstance(v, int) and (v == -1 or v >= 1),
         "be a positive integer (-1: from the environment)"),
    Rule("distributed.process_id", lambda v: isinstance(v, int) and v >= -1,
         "be an integer >= 0 (-1: from the environment)"),
)

def check_config(config, rules=RULES) -> None:
  """Raises ValueError naming the first key of ``rules`` whose value breaks its rule."""
  for rule in rules:
    value = config_keys.get(config, rule.key, config_keys.MISSING)
    if value is config_keys.MISSING:
      continue
    if not rule.ok(value):
      raise ValueError(f"config.{rule.key} = {value!r}: must {rule.must}")
