r"""The lecture's ellipse latent-variable energy model, trained with the energy loss ℓ = F(y).

  python -m experiments.run --config=experiments/ellipse.py
  python -m experiments.run --config=experiments/ellipse.py --config.model.beta=1.0
"""

import math

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.name = "ellipse"
  config.data.range = "raw"
  config.data.num_train = 24
  config.data.num_test = 240
  config.data.noise = 1 / 20

  config.model.name = "ellipse"
  config.model.latent_dim = 1
  config.model.init_w = (-1.5, 0.4)  # the lecture's untrained model
  config.model.num_latent_points = 48  # z ∈ [0 : π/24 : 2π[
  config.model.beta = math.inf  # F∞; finite β gives the soft minimum F_β on the grid
  config.model.inference = "argmin"  # ž from the grid's best point, refined by gradient descent
  config.model.inner_steps = 30
  config.model.inner_lr = 0.1
  config.model.energy = {"C": {"term": "squared_error", "weight": 1.0}}

  config.train.batch_size = 24  # the whole training set in each step
  config.train.num_epochs = 300
  config.train.learning_rate = 0.02
  config.train.log_every = 10
  config.train.eval_every = 50
  config.train.checkpoint_every = 100
  if arg == "quick":
    common.quick(config, num_epochs=20)
  return config
