"""Denoising autoencoder (08-3, Fig. 3): corrupt y into ŷ, reconstruct the clean y.

F(y) = C(y, Dec(Enc(ŷ))) with ŷ drawn by the corruption process ``model.corruption``
(``dropout`` — the lecture's, p = 0.5 with kept pixels scaled by 1/(1−p) —, ``mask``,
``gaussian``, ``salt_and_pepper``) with hyper-parameters ``model.corruption_kwargs.<name>``.
Test metrics ``psnr_in`` (ŷ vs y) and ``psnr_out`` (ỹ vs y) in dB on [0, 1] images.
"""

from energy_ae import corruptions, energies
from energy_ae.models import _autoencoder


def validate(config) -> None:
  """Config checks that need no data: the corruption's name and keywords."""
  corruptions.check_kwargs(config.model.corruption,
                           corruptions.kwargs_from_config(config.model))
  energies.make_energy(config.model.energy).check_inputs(
      _autoencoder.QUANTITIES, model=config.model.name)


def make(config, example_shape, value_range=None):
  mc = config.model
  corrupt = corruptions.from_config(mc, value_range)
  model = _autoencoder.make_autoencoder_model(
      config, example_shape, energies.make_energy(mc.energy), corrupt=corrupt,
      value_range=value_range)
  return model
