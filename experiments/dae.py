r"""Over-complete denoising autoencoder of the practicum: d = 500, dropout corruption p = 0.5.

  python -m experiments.run --config=experiments/dae.py
  python -m experiments.run --config=experiments/dae.py --config.model.corruption=gaussian
  python -m experiments.run --config=experiments/dae.py --config.model.corruption=gaussian \
      --config.model.corruption_kwargs.gaussian.sigma=0.3
"""

from experiments import ae


def get_config(arg: str | None = None):
  config = ae.get_config(arg)
  config.model.name = "dae"
  config.model.latent_dim = 500
  config.model.corruption = "dropout"  # dropout, mask, gaussian, salt_and_pepper
  # One dict per corruption, so that switching `corruption` alone brings its own arguments;
  # salt_and_pepper's low / high default to the data's range.
  config.model.corruption_kwargs = {
      "dropout": {"p": 0.5},
      "mask": {"p": 0.5, "value": 0.0},
      "gaussian": {"sigma": 0.5},
      "salt_and_pepper": {"p": 0.2},
  }
  return config
