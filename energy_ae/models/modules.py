"""Flax Linen building blocks: MLP and small convolutional encoders/decoders.

Encoders take examples in their natural shape (an MLP flattens them, a conv net
reads them as H × W × C images); decoders return flat vectors, which is what the
energy terms compare (C sums over the one feature axis).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "identity": lambda x: x,
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "softplus": nn.softplus,
    "elu": nn.elu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(
        f"unknown activation {name!r}; valid names: {', '.join(sorted(ACTIVATIONS))}") from None


class MLP(nn.Module):
  """x ↦ f_L(W_L … f_1(W_1 x + b_1) … + b_L); hidden layers use ``activation``."""

  features: Sequence[int]
  activation: str = "relu"
  output_activation: str = "identity"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    hidden, out = activation(self.activation), activation(self.output_activation)
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f"dense_{i}")(x)
      x = out(x) if i == len(self.features) - 1 else hidden(x)
    return x


class ConvEncoder(nn.Module):
  """Two stride-2 3 × 3 convolutions (28 → 14 → 7), then a dense layer to ``out_dim``."""

  out_dim: int
  channels: Sequence[int] = (32, 64)
  activation: str = "relu"
  output_activation: str = "identity"
  image_shape: Sequence[int] = (28, 28, 1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], *self.image_shape)
    act = activation(self.activation)
    for i, c in enumerate(self.channels):
      x = act(nn.Conv(c, (3, 3), strides=(2, 2), name=f"conv_{i}")(x))
    x = nn.Dense(self.out_dim, name="dense_out")(x.reshape(x.shape[0], -1))
    return activation(self.output_activation)(x)


class ConvDecoder(nn.Module):
  """Dense to a 7 × 7 map, two stride-2 transposed convolutions (7 → 14 → 28), flat output."""

  channels: Sequence[int] = (64, 32)
  activation: str = "relu"
  output_activation: str = "identity"
  image_shape: Sequence[int] = (28, 28, 1)

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h, w, c_out = self.image_shape
    scale = 2 ** len(self.channels)
    if h % scale or w % scale:
      raise ValueError(f"ConvDecoder: image {tuple(self.image_shape)} is not divisible by {scale}")
    act = activation(self.activation)
    x = act(nn.Dense(h // scale * w // scale * self.channels[0], name="dense_in")(z))
    x = x.reshape(z.shape[0], h // scale, w // scale, self.channels[0])
    for i, c in enumerate(self.channels[1:]):
      x = act(nn.ConvTranspose(c, (3, 3), strides=(2, 2), name=f"deconv_{i}")(x))
    x = nn.ConvTranspose(c_out, (3, 3), strides=(2, 2), name="deconv_out")(x)
    return activation(self.output_activation)(x.reshape(z.shape[0], -1))


def _image_shape(example_shape: Sequence[int]) -> tuple:
  """The image shape a conv net reads; flattened examples are refused with the key that
  flattened them (they would fail deep inside the first convolution)."""
  shape = tuple(example_shape)
  if len(shape) < 2:
    raise ValueError(f"model.architecture = 'conv' needs image examples, got examples of shape "
                     f"{shape}: set data.flatten=False")
  return shape


def make_encoder(config, out_dim: int, *, example_shape: Sequence[int], output_activation: str):
  """The encoder chosen by ``config.architecture`` ('mlp' or 'conv')."""
  arch = config.get("architecture", "mlp")
  if arch == "mlp":
    return MLP((*config.get("encoder_widths", ()), out_dim), config.get("activation", "relu"),
               output_activation)
  if arch == "conv":
    return ConvEncoder(out_dim, activation=config.get("activation", "relu"),
                       output_activation=output_activation,
                       image_shape=_image_shape(example_shape))
  raise ValueError(f"unknown model.architecture {arch!r}; valid names: conv, mlp")


def make_decoder(config, *, example_shape: Sequence[int], output_activation: str):
  arch = config.get("architecture", "mlp")
  out_dim = math.prod(example_shape)
  if arch == "mlp":
    return MLP((*config.get("decoder_widths", ()), out_dim), config.get("activation", "relu"),
               output_activation)
  if arch == "conv":
    return ConvDecoder(activation=config.get("activation", "relu"),
                       output_activation=output_activation,
                       image_shape=_image_shape(example_shape))
  raise ValueError(f"unknown model.architecture {arch!r}; valid names: conv, mlp")
