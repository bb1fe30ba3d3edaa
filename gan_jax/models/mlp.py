"""Fully connected ("vanilla") GAN players, as in Goodfellow et al. 2014.

Both take flat vectors. Options that matter for convergence on the 2-D mixtures are attributes:
width, depth, activation, spectral normalization of the discriminator (Miyato et al. 2018) and
PacGAN packing (Lin et al. 2018), where the discriminator judges ``packing`` samples at once.
"""
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

ACTIVATIONS = {
    "relu": nn.relu,
    "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
    "elu": nn.elu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
}


def get_activation(name: str) -> Callable[[Array], Array]:
  """The elementwise activation ``ACTIVATIONS[name]``; ValueError naming the choices if none."""
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _dense(features: int) -> nn.Dense:
  """A dense layer whose float32 product is float32 on every backend: TPUs and recent GPUs would
  otherwise round its operands (to bfloat16 or TF32), and the toy targets' modes, 0.01 wide on a
  ring of radius 1, would be blurred by the rounding. These layers are small: it costs little."""
  return nn.Dense(features, precision=jax.lax.Precision.HIGHEST)


class MLPGenerator(nn.Module):
  """``latents (batch, latent_dim) -> samples (batch, output_dim)``.

  Attributes:
    latent_dim: size of the noise vector.
    output_dim: size of a sample (2 for the toy targets, 784 for flat MNIST).
    width: units per hidden layer.
    depth: number of hidden layers.
    activation: hidden nonlinearity, a name in ``ACTIVATIONS``.
    output_activation: "tanh" for data in [-1, 1], None for unbounded data.
  """
  latent_dim: int
  output_dim: int
  width: int = 128
  depth: int = 3
  activation: str = "relu"
  output_activation: Optional[str] = None

  @nn.compact
  def __call__(self, z: Array, train: bool = True) -> Array:
    del train  # no batch statistics
    act = get_activation(self.activation)
    x = z
    for _ in range(self.depth):
      x = act(_dense(self.width)(x))
    x = _dense(self.output_dim)(x)
    return x if self.output_activation is None else get_activation(self.output_activation)(x)


class MLPDiscriminator(nn.Module):
  """``samples (batch, ...) -> logits (batch // packing,)``.

  Attributes:
    width: units per hidden layer.
    depth: number of hidden layers.
    activation: hidden nonlinearity, a name in ``ACTIVATIONS``.
    spectral_norm: normalize every weight matrix by its largest singular value (one power
      iteration per training call; the iteration vector lives in ``batch_stats``).
    packing: PacGAN degree m: consecutive groups of m samples are concatenated and judged as
      one, so the discriminator sees the joint of m samples and detects missing modes.
  """
  width: int = 128
  depth: int = 3
  activation: str = "leaky_relu"
  spectral_norm: bool = False
  packing: int = 1
  scores_examples_independently = True  # each pack's logit depends on that pack only

  def _dense(self, features: int, x: Array, train: bool) -> Array:
    layer = _dense(features)
    if self.spectral_norm:  # its power iteration in full float32 too, as the layer's product
      with jax.default_matmul_precision("highest"):
        return nn.SpectralNorm(layer)(x, update_stats=train)
    return layer(x)

  @nn.compact
  def __call__(self, x: Array, train: bool = True) -> Array:
    act = get_activation(self.activation)
    if x.shape[0] % self.packing:
      raise ValueError(f"batch of {x.shape[0]} is not a multiple of packing={self.packing}")
    x = x.reshape((x.shape[0] // self.packing, -1))
    for _ in range(self.depth):
      x = act(self._dense(self.width, x, train))
    return self._dense(1, x, train)[:, 0]
