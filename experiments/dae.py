r"""Over-complete denoising autoencoder of the practicum: d = 500, dropout corruption p = 0.5.

  python -m experiments.run --config=experiments/dae.py
  python -m experiments.run --config=experiments/dae.py --config.model.corruption=gaussian
"""

from experiments import ae


def get_config(arg: str | None = None):
  config = ae.get_config(arg)
  config.model.name = "dae"
  config.model.latent_dim = 500
  config.model.corruption = "dropout"  # dropout, mask, gaussian, salt_and_pepper
  config.model.corruption_kwargs = {"p": 0.5}
  return config
