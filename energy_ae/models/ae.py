"""Basic autoencoder (08-3, Fig. 2), under- or over-complete by ``model.latent_dim``.

h = f(W_h y + b_h), ỹ = g(W_y h + b_y), F(y) = C(y, ỹ) + R(h), with C and the
optional R named in ``model.energy`` (e.g. {"C": "squared_error", "R": ("l1", 0.01)}).
"""

from energy_ae import energies
from energy_ae.models import _autoencoder


def validate(config) -> None:
  """Unknown energy terms or keywords, before any data is loaded."""
  energies.make_energy(config.model.energy).check_inputs(
      _autoencoder.QUANTITIES, model=config.model.name)


def make(config, example_shape, value_range=None):
  model = _autoencoder.make_autoencoder_model(
      config, example_shape, energies.make_energy(config.model.energy), value_range=value_range)
  return model
