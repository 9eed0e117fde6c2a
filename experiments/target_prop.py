r"""Target propagation with an L1 code (predictive sparse decomposition) on the embedded digits.

  python -m experiments.run --config=experiments/target_prop.py
  python -m experiments.run --config=experiments/target_prop.py --config.model.inner_steps=50
"""

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.range = "unit"
  config.model.name = "target_prop"
  config.model.latent_dim = 64
  config.model.architecture = "mlp"
  config.model.encoder_widths = (256,)
  config.model.decoder_widths = (256,)
  config.model.activation = "relu"
  config.model.output_activation = "sigmoid"
  config.model.energy = {
      "C": {"term": "squared_error", "weight": 1.0},
      "R": {"term": "l1", "weight": 0.05},
      "D": {"term": "squared_distance", "weight": 1.0},
  }
  config.model.inner_steps = 20
  config.model.inner_optimizer = "sgd"  # sgd, momentum, adam
  config.model.inner_lr = 0.05
  if arg == "quick":
    common.quick(config)
  return config
