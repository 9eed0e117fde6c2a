"""The deterministic autoencoder shared by ``ae``, ``dae`` and ``cae``.

h = f(W_h y + b_h) (encoder), ỹ = g(W_y h + b_y) (decoder), F(y) = C(y, ỹ) + R(h).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from energy_ae import energies, metrics
from energy_ae.models import modules

class AutoEncoder(nn.Module):
  latent_dim: int
  example_shape: tuple[int, ...]
  config: dict

  def setup(self):
    self.encoder = modules.make_encoder(
        self.config, self.latent_dim, example_shape=self.example_shape,
        output_activation=self.config.get("latent_activation", "tanh"))
    self.decoder = modules.make_decoder(
        self.config, example_shape=self.example_shape,
        output_activation=self.config.get("output_activation", "tanh"))

  def encode(self, y):
    return self.encoder(y)

  def decode(self, h):
    return self.decoder(h)

  def __call__(self, y):
    return self.decode(self.encode(y))


def build(config, example_shape) -> AutoEncoder:
  mc = config.model
  return AutoEncoder(int(mc.latent_dim), tuple(example_shape), mc.to_dict())


def encoder_fn(net: AutoEncoder, params) -> Callable[[jax.Array], jax.Array]:
  """h = Enc(y) for one example (no batch axis; flat or not), for Jacobian penalties."""
  return lambda y: net.apply(params, y[None], method=AutoEncoder.encode)[0]


# What an energy term of an autoencoder may read (``quantities``; ``kernel`` only for a
# one-dense-layer encoder).
QUANTITIES = ("y", "y_tilde", "z", "h", "encode", "kernel")


def quantities(net: AutoEncoder, params, y_in: jax.Array, y: jax.Array) -> dict:
  """Everything an energy term may read: y (flat target), y_tilde, z = h, encode, kernel."""
  h = net.apply(params, y_in, method=AutoEncoder.encode)
  y_tilde = net.apply(params, h, method=AutoEncoder.decode)
  q = {"y": y.reshape(y.shape[0], -1), "y_tilde": y_tilde, "z": h, "h": h,
       "encode": encoder_fn(net, params)}
  kernel = quantities_kernel(params)
  if kernel is not None:  # one dense layer: W is known
    q["kernel"] = kernel
  return q


def jacobian_fro(net: AutoEncoder, params, y: jax.Array) -> jax.Array:
  """‖∂h/∂y‖_F per example (the encoders reshape flat examples themselves)."""
  return metrics.jacobian_frobenius(encoder_fn(net, params), y)


def make_autoencoder_model(config, example_shape, energy: energies.Energy, corrupt=None, *,
                           value_range: tuple[float, float] | None = None):
  """Model functions for an AE whose input is ``corrupt(keys, y)`` (identity if None);
  ``value_range`` (the data's) enables the PSNR metrics."""
  from energy_ae.models import Model

  net = build(config, example_shape)
  vrange = value_range

  def init(key, batch):
    return net.init(key, batch["y"][:1])

  def _inputs(batch, keys):
    y = batch["y"]
    return (y if corrupt is None else corrupt(keys, y)), y

  def loss(params, batch, keys):
    y_in, y = _inputs(batch, keys)
    total, terms = energy(**quantities(net, params, y_in, y))
    return metrics.mean_metrics(total, terms)

  def evaluate(params, batch, keys):
    y_in, y = _inputs(batch, keys)
    q = quantities(net, params, y_in, y)
    total, terms = energy(**q)
    out = {"loss": total, "reconstruction_error": energies.squared_error(q["y"], q["y_tilde"]),
           "jacobian_fro": jacobian_fro(net, params, y)}
    out.update(terms)
    if corrupt is not None and vrange is not None:
      out["psnr_in"] = metrics.psnr(y_in, y, vrange)
      out["psnr_out"] = metrics.psnr(q["y_tilde"], y, vrange)
    return out

  def encode(params, y):
    return net.apply(params, y, method=AutoEncoder.encode)

  def decode(params, h):
    return net.apply(params, h, method=AutoEncoder.decode)

  def reconstruct(params, y):
    return net.apply(params, y)

  def kernel(params):
    """W_h of a one-dense-layer encoder, (input, d); None for deeper encoders."""
    return quantities_kernel(params)

  return Model(init, loss, evaluate, encode, decode, reconstruct, corrupt=corrupt,
               extras={"encoder_kernel": kernel, "corrupt": corrupt})


def quantities_kernel(params):
  encoder_params = params["params"]["encoder"]
  if len(encoder_params) == 1 and "dense_0" in encoder_params:
    return encoder_params["dense_0"]["kernel"]
  return None
