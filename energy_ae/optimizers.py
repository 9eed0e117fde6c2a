"""Optimisers by name and learning-rate schedules: ``train.optimizer``, ``train.lr_schedule``."""

from __future__ import annotations

import optax

OPTIMIZERS = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
    "momentum": lambda lr, **kwargs: optax.sgd(lr, **{"momentum": 0.9, **kwargs}),
}


# The learning rate over the run's T steps: constant; cosine, η·(0.01 + 0.99·(1 + cos πt/T)/2);
# or burda, Burda et al. (2015)'s stages: 3^i epochs at η·10^(−i/7), i = 0, 1, ... (their
# 8 stages are 3,280 epochs; a shorter run stops inside a stage).
LR_SCHEDULES = ("constant", "cosine", "burda")


def burda_schedule(learning_rate: float, steps_per_epoch: int) -> optax.Schedule:
  """η_t = η·10^(−i/7) during stage i, which lasts 3^i epochs (Burda et al. 2015, §5)."""
  boundaries, start = {}, 0
  for i in range(1, 40):
    start += 3 ** (i - 1) * steps_per_epoch
    if start >= 2**31:  # past any run (and the int32 step count)
      break
    boundaries[start] = 10 ** (-1 / 7)  # each boundary multiplies the rate by this
  return optax.piecewise_constant_schedule(learning_rate, boundaries)


def make_optimizer(train_config, total_steps: int | None = None) -> optax.GradientTransformation:
  """The optimiser of ``train_config`` (``optimizer_kwargs`` passed to it, e.g. Adam's
  ``eps``); a ``cosine`` or ``burda`` ``lr_schedule`` needs the run's ``total_steps``."""
  lr = train_config.learning_rate
  schedule = train_config.get("lr_schedule", "constant")
  if schedule != "constant" and not total_steps:
    raise ValueError(f"train.lr_schedule = {schedule!r} needs the run's number of steps")
  if schedule == "cosine":
    lr = optax.cosine_decay_schedule(lr, total_steps, alpha=0.01)
  elif schedule == "burda":
    lr = burda_schedule(lr, max(1, round(total_steps / train_config.num_epochs)))
  kwargs = dict(train_config.get("optimizer_kwargs", None) or {})
  try:
    tx = OPTIMIZERS[train_config.optimizer](lr, **kwargs)
  except TypeError as e:
    raise ValueError(f"config.train.optimizer_kwargs = {kwargs!r}: {train_config.optimizer!r} "
                     f"does not take them ({e})") from None
  clip = train_config.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip else tx
