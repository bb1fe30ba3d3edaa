"""DCGAN (Radford et al. 2016), laid out as the PyTorch examples DCGAN.

Generator: z -> project to base x base x (width * 2^(n-1)) -> BN + ReLU -> (n - 1) x [4x4 stride-2
transposed conv, BN, ReLU], halving the channels -> 4x4 stride-2 transposed conv -> tanh.
Discriminator: 4x4 stride-2 conv + LeakyReLU(0.2) -> (n - 1) x [4x4 stride-2 conv, BN,
LeakyReLU(0.2)], doubling the channels -> base x base valid conv -> one logit. No pooling, no
fully connected hidden layers, no biases before batch norm, N(0, 0.02) weights. The
discriminator's batch norm can be swapped for a per-image layer norm, for spectral normalization of
every layer's weights instead (Miyato et al. 2018), or for none (``D_NORMS``): the gradient penalty
and R1 need a discriminator that scores each image on its own.

``base`` is 4 for resolutions 32 and 64 (n = 3, 4) and 7 for 28 (n = 2). The projection is a
dense layer with the same weights as PyTorch's 4x4 stride-1 transposed conv on a 1x1 input, so
``width=64, resolution=32, channels=1`` has exactly the PyTorch reference's 1,066,880 generator
and 661,248 discriminator parameters.
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models import layers

Array = jax.Array
RESOLUTIONS = {28: (7, 2), 32: (4, 3), 64: (4, 4)}  # resolution -> (base, resampling layers)
D_NORMS = ("batch", "layer", "spectral", "none")


def resolution_layout(resolution: int):
  """``(base, num_resampling_layers)`` for a supported resolution; ValueError otherwise."""
  if resolution not in RESOLUTIONS:
    raise ValueError(f"unsupported resolution {resolution}; choose one of "
                     f"{', '.join(map(str, RESOLUTIONS))}")
  return RESOLUTIONS[resolution]


def _scale_init(key: Array, shape, dtype) -> Array:
  """The reference's N(1, 0.02) batch-norm scales."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _batch_norm(train: bool, axis_name: Optional[str], momentum: float = 0.9) -> nn.BatchNorm:
  # PyTorch's defaults (momentum 0.1 there is 0.9 here); float32 whatever the products' dtype.
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                      axis_name=axis_name, dtype=jnp.float32, scale_init=_scale_init)


def _layer_norm() -> nn.LayerNorm:
  """Normalizes each image over its height, width and channels, with a scale and an offset per
  channel: the batch norm replacement of Gulrajani et al. 2017's critic."""
  return nn.LayerNorm(epsilon=1e-5, reduction_axes=(-3, -2, -1), feature_axes=-1,
                      dtype=jnp.float32, scale_init=_scale_init)


class Generator(nn.Module):
  """``latents (batch, latent_dim) -> images (batch, resolution, resolution, channels)`` in [-1, 1].

  Attributes:
    resolution: 28, 32 or 64.
    channels: image channels.
    width: channels of the last hidden layer (PyTorch's ``ngf``).
    latent_dim: size of the noise vector (``nz``).
    conv_method: how ``UpConv`` is computed ("auto", "xla", "matmul"); same params either way.
    axis_name: pmap axis for cross-replica batch norm, or None.
    dtype: operand dtype of the matrix products (bfloat16 for mixed precision); they accumulate
      in float32, and params, batch norm and activations stay float32.
    batch_norm_momentum: weight of the old running statistics in each training update; 0 makes
      them the statistics of the last batch (to measure "standing statistics").
  """
  resolution: int = 32
  channels: int = 1
  width: int = 64
  latent_dim: int = 100
  conv_method: str = "auto"
  axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  batch_norm_momentum: float = 0.9

  @nn.compact
  def __call__(self, z: Array, train: bool = True) -> Array:
    base, n_up = resolution_layout(self.resolution)
    features = self.width * 2 ** (n_up - 1)
    x = nn.Dense(base * base * features, use_bias=False, kernel_init=layers.dcgan_init(),
                 dot_general=layers.wide_dot_general(self.dtype))(z)
    x = x.reshape(z.shape[0], base, base, features)
    batch_norm = lambda: _batch_norm(train, self.axis_name, self.batch_norm_momentum)
    x = nn.relu(batch_norm()(x))
    for _ in range(n_up - 1):
      features //= 2
      x = layers.UpConv(features, self.conv_method, self.dtype)(x)
      x = nn.relu(batch_norm()(x))
    x = layers.UpConv(self.channels, self.conv_method, self.dtype)(x)
    return jnp.tanh(x)


class Discriminator(nn.Module):
  """``images (batch, resolution, resolution, channels) -> logits (batch,)``.

  Attributes:
    resolution: 28, 32 or 64.
    width: channels of the first layer (PyTorch's ``ndf``).
    conv_method: how ``DownConv`` is computed ("auto", "xla", "matmul"); same params either way.
    axis_name: pmap axis for cross-replica batch norm, or None.
    dtype: operand dtype of the matrix products (bfloat16 for mixed precision); they accumulate
      in float32, and params, normalization and activations stay float32.
    normalization: one of ``D_NORMS``: of the hidden layers "batch" (the reference; in training
      an image's logit depends on the rest of its batch) or "layer" (per image); "spectral"
      divides every layer's kernel, as a ``(kh * kw * in, out)`` matrix, by its largest singular
      value (``flax.linen.SpectralNorm``: one power iteration per training call, its vectors in
      ``batch_stats``); or "none".
  """
  resolution: int = 32
  width: int = 64
  conv_method: str = "auto"
  axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  normalization: str = "batch"

  @property
  def scores_examples_independently(self) -> bool:
    """Whether each logit depends on its own image only, in training too (what the input
    gradients of the gradient penalty and R1 assume)."""
    return self.normalization != "batch"

  @nn.compact
  def __call__(self, x: Array, train: bool = True) -> Array:
    if self.normalization not in D_NORMS:
      raise ValueError(f"unknown normalization {self.normalization!r}; choose one of "
                       f"{', '.join(D_NORMS)}")
    base, n_down = resolution_layout(self.resolution)

    def conv(layer: nn.Module, x: Array) -> Array:  # its kernel spectrally normalized or not
      if self.normalization == "spectral":
        return nn.SpectralNorm(layer)(x, update_stats=train)
      return layer(x)

    features = self.width
    x = nn.leaky_relu(conv(layers.DownConv(features, self.conv_method, self.dtype), x), 0.2)
    for _ in range(n_down - 1):
      features *= 2
      x = conv(layers.DownConv(features, self.conv_method, self.dtype), x)
      if self.normalization == "batch":
        x = _batch_norm(train, self.axis_name)(x)
      elif self.normalization == "layer":
        x = _layer_norm()(x)
      x = nn.leaky_relu(x, 0.2)
    return conv(layers.WholeImageConv(1, self.dtype), x)[:, 0]
