r"""Under-complete autoencoder of the practicum: 784 → 30 (tanh) → 784 (tanh) on [−1, 1] images.

  python -m experiments.run --config=experiments/ae.py
  python -m experiments.run --config=experiments/ae.py --config.model.latent_dim=500
"""

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.range = "symmetric"  # (x − 0.5) / 0.5
  config.model.name = "ae"
  config.model.latent_dim = 30
  config.model.architecture = "mlp"  # or 'conv'
  config.model.encoder_widths = ()  # hidden layers before the code h
  config.model.decoder_widths = ()
  config.model.activation = "relu"  # hidden layers
  config.model.latent_activation = "tanh"  # f
  config.model.output_activation = "tanh"  # g
  config.model.energy = {"C": {"term": "squared_error", "weight": 1.0}}
  if arg == "quick":
    common.quick(config)
  return config
