"""The DCGAN resampling convolutions, each in two exactly equivalent forms.

``UpConv`` is the 4x4, stride-2 transposed convolution that doubles the resolution (PyTorch's
``ConvTranspose2d(k=4, s=2, p=1)``; ``flax.linen.ConvTranspose`` with padding ``((2, 2), (2, 2))``).
``DownConv`` is the 4x4, stride-2 convolution that halves it (``Conv2d(k=4, s=2, p=1)``).

XLA's CPU backend runs a transposed convolution as a convolution over the zero-dilated input, and
the input-gradient of a strided convolution the same way: three quarters of the multiply-adds hit
zeros and the loops are slow. Its weight gradients, convolutions whose window is the whole image,
are slow too. Both layers can instead be written with a stride-1, 2x2 convolution:

* sub-pixel (phase) form of ``UpConv``: output pixel (2m + p, 2n + q) only sees the taps
  ``W[2a + p, 2b + q]``; so one 2x2 convolution of the 1-padded input with the kernel regrouped to
  ``(2, 2, C_in, 4 C_out)`` computes the four phases at once, and depth-to-space interleaves them;
* space-to-depth form of ``DownConv``: pixel pairs folded into channels turn the stride-2 4x4
  convolution into a stride-1 2x2 convolution over ``4 C_in`` channels.

and that 2x2 convolution is one matrix product of the four shifted copies of the input
(``conv2x2``): its gradients are matrix products and shifted sums, no convolution is left.

Parameters are the same ``kernel`` of shape ``(4, 4, C_in, C_out)`` in both forms, so checkpoints
are interchangeable; ``method="auto"`` picks the form that is faster on the backend (measured by
``benchmarks/dcgan_throughput.py``).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
METHODS = ("auto", "xla", "phase")


def dcgan_init(stddev: float = 0.02):
  """N(0, stddev) initializer of Radford et al. 2016."""
  return nn.initializers.normal(stddev)


def resolve_method(method: str) -> str:
  """"auto" -> "phase" on CPU (several times faster there) and "xla" on other backends."""
  if method not in METHODS:
    raise ValueError(f"unknown convolution method {method!r}; choose one of {', '.join(METHODS)}")
  if method == "auto":
    return "phase" if jax.default_backend() == "cpu" else "xla"
  return method


def _regroup(kernel: Array) -> Array:
  """``(4, 4, I, O) -> (a_y, p_y, a_x, p_x, I, O)`` with tap ``k = 2a + p`` on each axis."""
  _, _, c_in, c_out = kernel.shape
  return kernel.reshape(2, 2, 2, 2, c_in, c_out)


def conv2x2(x: Array, kernel: Array) -> Array:
  """Valid 2x2 stride-1 convolution as one matrix product: ``(B, H, W, I) -> (B, H-1, W-1, O)``.

  Equal to ``lax.conv_general_dilated(x, kernel, (1, 1), "VALID")`` for ``kernel (2, 2, I, O)``.
  """
  batch, height, width, c_in = x.shape
  shifted = [x[:, a:a + height - 1, b:b + width - 1] for a in (0, 1) for b in (0, 1)]
  patches = jnp.concatenate(shifted, axis=-1).reshape(-1, 4 * c_in)  # taps in (a, b, I) order
  return (patches @ kernel.reshape(4 * c_in, -1)).reshape(batch, height - 1, width - 1, -1)


def upsample_phase(x: Array, kernel: Array) -> Array:
  """Sub-pixel form of the stride-2 4x4 transposed convolution, ``(B, H, W, I) -> (B, 2H, 2W, O)``.

  Equal to ``lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)))``.
  """
  batch, height, width, _ = x.shape
  c_out = kernel.shape[-1]
  # (a_y, a_x, I, p_y, p_x, O): a 2x2 kernel producing the four output phases as channels.
  phase_kernel = _regroup(kernel).transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, -1, 4 * c_out)
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = conv2x2(padded, phase_kernel).reshape(batch, height + 1, width + 1, 2, 2, c_out)
  # Output (2m + p, 2n + q) is phase (p, q) of the window starting at padded pixel (m + p, n + q).
  rows = [jnp.stack([y[:, p:p + height, q:q + width, p, q] for q in (0, 1)], axis=3)
          for p in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(batch, 2 * height, 2 * width, c_out)


def downsample_space_to_depth(x: Array, kernel: Array) -> Array:
  """Space-to-depth form of the stride-2 4x4 convolution, ``(B, H, W, I) -> (B, H/2, W/2, O)``.

  Equal to ``lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)))`` for even H, W.
  """
  batch, height, width, c_in = x.shape
  if height % 2 or width % 2:
    raise ValueError(f"space-to-depth needs even height and width, got {height}x{width}")
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  folded = padded.reshape(batch, height // 2 + 1, 2, width // 2 + 1, 2, c_in)
  folded = folded.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height // 2 + 1, width // 2 + 1, -1)
  # (a_y, a_x, p_y, p_x, I, O): pixel pair p of window offset a uses tap 2a + p.
  s2d_kernel = _regroup(kernel).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c_in, -1)
  return conv2x2(folded, s2d_kernel)


class UpConv(nn.Module):
  """4x4 stride-2 transposed convolution without bias: ``(B, H, W, I) -> (B, 2H, 2W, features)``.

  Attributes:
    features: output channels.
    method: "xla" (``lax.conv_transpose``), "phase" (sub-pixel form) or "auto".
    dtype: computation dtype (params stay float32).
  """
  features: int
  method: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", dcgan_init(), (4, 4, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_method(self.method) == "phase":
      return upsample_phase(x, kernel)
    return lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)), dimension_numbers=_DIMENSIONS)


class DownConv(nn.Module):
  """4x4 stride-2 convolution, padding 1, no bias: ``(B, H, W, I) -> (B, H/2, W/2, features)``.

  Attributes:
    features: output channels.
    method: "xla" (strided convolution), "phase" (space-to-depth form) or "auto".
    dtype: computation dtype (params stay float32).
  """
  features: int
  method: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", dcgan_init(), (4, 4, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_method(self.method) == "phase":
      return downsample_space_to_depth(x, kernel)
    return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                    dimension_numbers=_DIMENSIONS)


class WholeImageConv(nn.Module):
  """A valid convolution whose window is the whole input, without bias:
  ``(B, k, k, C) -> (B, features)``.

  The kernel ``(k, k, C, features)`` is that of ``nn.Conv(features, (k, k), padding="VALID")``;
  applied as one matrix product over the flattened input (XLA's CPU backend runs the gradients
  of the convolution form, whose window is the whole image, slowly).

  Attributes:
    features: output features.
    dtype: computation dtype (params stay float32).
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", dcgan_init(), x.shape[1:] + (self.features,), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    return x.reshape(x.shape[0], -1) @ kernel.reshape(-1, self.features)
