"""Contractive autoencoder (08-3, Fig. 4): F(y) = C(y, ỹ) + λ ‖∂h/∂y‖²_F.

The penalty is exact for any encoder (``model.contractive_penalty = 'contractive'``, the
default, builds the Jacobian); for one sigmoid layer h = σ(W y + b),
``'contractive_sigmoid'`` is the closed form Σ_i (h_i (1 − h_i))² Σ_j W_ij², equal and much
cheaper. λ is ``model.contractive_weight``. The test metric ``jacobian_fro`` is ‖∂h/∂y‖_F.
"""

from energy_ae import config_checks, energies
from energy_ae.models import _autoencoder


def validate(config) -> None:
  """The CAE's own keys, before any data is loaded."""
  mc = config.model
  if not config_checks.is_traced(mc.contractive_weight) and (
      not isinstance(mc.contractive_weight, (int, float)) or not mc.contractive_weight >= 0):
    raise ValueError(f"model.contractive_weight must be >= 0, got {mc.contractive_weight}")
  penalty = mc.get("contractive_penalty", "contractive")
  if penalty not in ("contractive", "contractive_sigmoid"):
    raise ValueError(f"model.contractive_penalty must be 'contractive' or 'contractive_sigmoid', "
                     f"got {penalty!r}")
  one_sigmoid_layer = (not mc.get("encoder_widths", ()) and mc.get("architecture", "mlp") == "mlp"
                       and mc.get("latent_activation", "tanh") == "sigmoid")
  if penalty == "contractive_sigmoid" and not one_sigmoid_layer:
    raise ValueError("model.contractive_penalty = 'contractive_sigmoid' is the closed form for one "
                     "sigmoid layer h = σ(W y + b) (no encoder_widths, latent_activation "
                     "'sigmoid'); use 'contractive' for this encoder")
  energies.make_energy(mc.energy)  # unknown term names, before any data


def make(config, example_shape, value_range=None):
  validate(config)
  mc = config.model
  terms = dict(mc.energy)
  terms["R"] = (mc.get("contractive_penalty", "contractive"), mc.contractive_weight)
  model = _autoencoder.make_autoencoder_model(
      config, example_shape, energies.make_energy(terms), value_range=value_range)
  return model
