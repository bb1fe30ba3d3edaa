"""The DCGAN resampling convolutions, each in two exactly equivalent forms.

``UpConv`` is the 4x4, stride-2 transposed convolution that doubles the resolution (PyTorch's
``ConvTranspose2d(k=4, s=2, p=1)``; ``flax.linen.ConvTranspose`` with padding ``((2, 2), (2, 2))``).
``DownConv`` is the 4x4, stride-2 convolution that halves it (``Conv2d(k=4, s=2, p=1)``).

XLA's CPU backend runs a transposed convolution as a convolution over the zero-dilated input, and
the input-gradient of a strided convolution the same way: three quarters of the multiply-adds hit
zeros and the loops are slow. Its weight gradients are slow too. The "matmul" form instead writes
both layers with one matrix product and a reshuffle of memory:

* ``gather_windows`` lists every 4x4 stride-2 window of the 1-padded input as one row: with the
  input viewed as ``(B, H/2 + 1, 2, W/2 + 1, 2 C)`` (a free reshape), a window is 8 contiguous
  runs of ``2 C`` values. ``DownConv`` is ``gather_windows(x) @ kernel.reshape(16 C, O)``.
* ``scatter_windows`` is its adjoint: it adds each row back onto the 16 pixels it came from.
  ``UpConv`` multiplies every input pixel by all 16 taps at once and scatters the products.

The two are each other's gradient: the input-gradient of ``DownConv`` is a scatter, that of
``UpConv`` a gather, and both weight-gradients are a product of gathered windows
(``jax.custom_vjp``; JAX's own transpose of the gather is a chain of pads and adds that runs
several times slower). Every multiply-add of the matmul form is one of the layer's own; none
hits padding. Higher-order gradients (R1, the gradient penalty) go through the same functions.

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
METHODS = ("auto", "xla", "matmul")


def dcgan_init(stddev: float = 0.02):
  """N(0, stddev) initializer of Radford et al. 2016."""
  return nn.initializers.normal(stddev)


def resolve_method(method: str) -> str:
  """"auto" -> "matmul" on CPU (several times faster there) and "xla" on other backends."""
  if method not in METHODS:
    raise ValueError(f"unknown convolution method {method!r}; choose one of {', '.join(METHODS)}")
  if method == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
  return method


def gather_windows(x: Array) -> Array:
  """The 4x4 stride-2 windows of the 1-padded ``x``: ``(B, H, W, C) -> (B, H/2, W/2, 16 C)``.

  Entry ``(b, i, j, (ky, kx, c))`` is ``padded[b, 2i + ky, 2j + kx, c]``: the window order of a
  kernel ``(4, 4, C, O)`` reshaped to ``(16 C, O)``. H and W must be even.
  """
  batch, height, width, channels = x.shape
  if height % 2 or width % 2:
    raise ValueError(f"stride-2 windows need even height and width, got {height}x{width}")
  rows, cols = height // 2, width // 2
  # Tap ky = 2a + p sits in row pair i + a at parity p; kx = 2b + q likewise, and the (q, c)
  # values of one column pair are contiguous.
  pairs = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(
      batch, rows + 1, 2, cols + 1, 2 * channels)
  # One stack on a new axis, not a concatenate: XLA's CPU backend then writes the windows in one
  # pass instead of copying out the 8 runs first (2x faster here).
  runs = jnp.stack([pairs[:, a:a + rows, p, b:b + cols]
                    for a in (0, 1) for p in (0, 1) for b in (0, 1)], axis=-2)
  return runs.reshape(batch, rows, cols, 16 * channels)


def scatter_windows(windows: Array) -> Array:
  """Adjoint of ``gather_windows``: ``(B, h, w, 16 C) -> (B, 2h, 2w, C)``, each window entry
  added onto the pixel it was gathered from (entries that fall on the padding are dropped)."""
  batch, rows, cols, size = windows.shape
  channels = size // 16
  windows = windows.reshape(batch, rows, cols, 2, 2, 2, 2 * channels)  # (a, p, b, (q, c))
  # Window entry (a, p, b) of window (i, j) lands in row pair i + a at parity p, column pair j + b.
  pairs = sum(jnp.pad(windows[:, :, :, a, :, b].transpose(0, 1, 3, 2, 4),  # (B, rows, p, cols, 2C)
                      ((0, 0), (a, 1 - a), (0, 0), (b, 1 - b), (0, 0)))
              for a in (0, 1) for b in (0, 1))
  return pairs.reshape(batch, 2 * rows + 2, 2 * cols + 2, channels)[:, 1:-1, 1:-1]


def _times(x: Array, matrix: Array) -> Array:
  """``x (..., K) @ matrix (K, N) -> (..., N)`` as one 2-D matrix product."""
  return (x.reshape(-1, x.shape[-1]) @ matrix).reshape(x.shape[:-1] + matrix.shape[1:])


@jax.custom_vjp
def gather_matmul(x: Array, matrix: Array) -> Array:
  """``gather_windows(x) @ matrix``: ``(B, H, W, C), (16 C, O) -> (B, H/2, W/2, O)``."""
  return _times(gather_windows(x), matrix)


@jax.custom_vjp
def scatter_matmul(x: Array, matrix: Array) -> Array:
  """``scatter_windows(x @ matrix.T)``: ``(B, h, w, O), (16 C, O) -> (B, 2h, 2w, C)``; the
  adjoint of ``gather_matmul(., matrix)``."""
  return scatter_windows(_times(x, matrix.T))


def _window_products(image: Array, values: Array) -> Array:
  """``gather_windows(image)`` rows times ``values`` rows, summed over every window:
  ``(B, H, W, C), (B, H/2, W/2, O) -> (16 C, O)``; the weight-gradient of both products."""
  windows = gather_windows(image)
  return windows.reshape(-1, windows.shape[-1]).T @ values.reshape(-1, values.shape[-1])


def _gather_matmul_bwd(residuals, dy):
  """Cotangents of ``gather_matmul`` for ``dy (B, H/2, W/2, O)``: ``dx = scatter_matmul(dy)``."""
  x, matrix = residuals
  return scatter_matmul(dy, matrix), _window_products(x, dy)


def _scatter_matmul_bwd(residuals, dy):
  """Cotangents of ``scatter_matmul`` for ``dy (B, 2h, 2w, C)``: ``dx = gather_matmul(dy)``."""
  x, matrix = residuals
  return gather_matmul(dy, matrix), _window_products(dy, x)


def _saving_inputs(product):
  """The forward rule of ``product``: its value, with its inputs kept for the backward rule."""
  return lambda x, matrix: (product(x, matrix), (x, matrix))


gather_matmul.defvjp(_saving_inputs(gather_matmul), _gather_matmul_bwd)
scatter_matmul.defvjp(_saving_inputs(scatter_matmul), _scatter_matmul_bwd)


def upsample_matmul(x: Array, kernel: Array) -> Array:
  """Matmul form of the stride-2 4x4 transposed convolution, ``(B, H, W, I) -> (B, 2H, 2W, O)``.

  Equal to ``lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)))``, which correlates the
  dilated input with ``kernel``: as a scatter, input pixel (i, j) meets the spatially flipped
  kernel.
  """
  flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)  # (ky, kx, O, I)
  return scatter_matmul(x, flipped.reshape(-1, kernel.shape[2]))


def downsample_matmul(x: Array, kernel: Array) -> Array:
  """Matmul form of the stride-2 4x4 convolution, ``(B, H, W, I) -> (B, H/2, W/2, O)``.

  Equal to ``lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)))`` for even H, W.
  """
  return gather_matmul(x, kernel.reshape(-1, kernel.shape[-1]))


class UpConv(nn.Module):
  """4x4 stride-2 transposed convolution without bias: ``(B, H, W, I) -> (B, 2H, 2W, features)``.

  Attributes:
    features: output channels.
    method: "xla" (``lax.conv_transpose``), "matmul" or "auto".
    dtype: computation dtype (params stay float32).
  """
  features: int
  method: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", dcgan_init(), (4, 4, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_method(self.method) == "matmul":
      return upsample_matmul(x, kernel)
    return lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)), dimension_numbers=_DIMENSIONS)


class DownConv(nn.Module):
  """4x4 stride-2 convolution, padding 1, no bias: ``(B, H, W, I) -> (B, H/2, W/2, features)``.

  Attributes:
    features: output channels.
    method: "xla" (strided convolution), "matmul" or "auto".
    dtype: computation dtype (params stay float32).
  """
  features: int
  method: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", dcgan_init(), (4, 4, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_method(self.method) == "matmul":
      return downsample_matmul(x, kernel)
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
