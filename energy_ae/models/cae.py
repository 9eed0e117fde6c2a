"""Contractive autoencoder (08-3, Fig. 4): F(y) = C(y, ỹ) + λ ‖∂h/∂y‖²_F.

The penalty is exact for any encoder (``energies.contractive``); λ is
``model.contractive_weight``. The test metric ``jacobian_fro`` is ‖∂h/∂y‖_F.
"""

from energy_ae import energies
from energy_ae.models import _autoencoder


def make(config, example_shape):
  mc = config.model
  if mc.contractive_weight < 0:
    raise ValueError(f"model.contractive_weight must be >= 0, got {mc.contractive_weight}")
  terms = dict(mc.energy)
  terms["R"] = ("contractive", mc.contractive_weight)
  model, _ = _autoencoder.make_autoencoder_model(
      config, example_shape, energies.make_energy(terms))
  return model
