r"""Variational autoencoder of the practicum: 784-400-20, Bernoulli decoder, β = 1, Adam 1e-3.

  python -m experiments.run --config=experiments/vae.py
  python -m experiments.run --config=experiments/vae.py --config.model.beta=4.0
"""

from experiments import common


def get_config(arg: str | None = None):
  config = common.base_config(arg)
  config.data.range = "unit"  # not normalised, not binarised
  config.model.name = "vae"
  config.model.latent_dim = 20
  config.model.architecture = "mlp"
  config.model.encoder_widths = (400,)
  config.model.decoder_widths = (400,)
  config.model.activation = "relu"
  config.model.likelihood = "bernoulli"  # or 'gaussian' with model.decoder_std
  config.model.decoder_std = 1.0
  config.model.beta = 1.0
  config.model.iw_samples = 100  # k of the importance-weighted −log p(y) at evaluation
  config.model.iw_chunk = 100
  if arg == "quick":
    common.quick(config)
    config.model.iw_samples = 10
    config.model.iw_chunk = 10
  return config
