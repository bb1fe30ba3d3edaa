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
several times slower). No multiply-add meets the zeros of a dilated input; the only wasted ones
are those at the 1-pixel border, as in any padded convolution. Higher-order gradients (R1, the
gradient penalty) go through the same functions.

Parameters are the same ``kernel`` of shape ``(4, 4, C_in, C_out)`` in both forms, so checkpoints
are interchangeable; ``method="auto"`` picks the form that is faster on the backend (measured by
``benchmarks/dcgan_throughput.py``).

Mixed precision: every layer here rounds its operands to its ``dtype`` (bfloat16, say) and
returns float32 (``accumulation_dtype``). The matmul forms accumulate in float32 too, as a TPU's
default-precision float32 product does, and their gradients between layers stay float32. The
"xla" forms are flax's usual mixed precision: the library's bfloat16 result and bfloat16
gradients, widened to float32. Batch norm and activations stay float32. In bfloat16,
``scatter_matmul`` takes a third form (``scatter_by_phases``), which suits XLA's CPU backend
better there.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
METHODS = ("auto", "xla", "matmul")
_PHASE_FORM_MIN_CHANNELS = 16  # see _scatter_products


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


def accumulation_dtype(dtype: Any) -> Any:
  """The dtype products of ``dtype`` operands accumulate and return in: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


# The products below round their operands to a static ``dtype`` (``nondiff_argnums``) inside;
# their inputs, outputs and cotangents stay in the callers' dtypes, so gradients are not rounded
# to bfloat16 between layers (JAX's own rules would return them in the operands' dtype).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def wide_product(a: Array, b: Array, dtype: Any) -> Array:
  """``a (M, K) @ b (K, N) -> (M, N)`` with operands rounded to ``dtype``, accumulated and
  returned in ``accumulation_dtype(dtype)`` (XLA's CPU backend runs bfloat16 products with a
  bfloat16 result several times slower)."""
  return jnp.matmul(a.astype(dtype), b.astype(dtype),
                    preferred_element_type=accumulation_dtype(dtype))


def _wide_product_bwd(dtype, residuals, g):
  """Cotangents of ``wide_product`` for ``g (M, N)``, products of ``dtype`` operands too."""
  a, b = residuals
  return (wide_product(g, b.T, dtype).astype(a.dtype),
          wide_product(a.T, g, dtype).astype(b.dtype))


def _times(x: Array, matrix: Array, dtype: Any) -> Array:
  """``x (..., K) @ matrix (K, N) -> (..., N)`` as one 2-D ``wide_product``."""
  product = wide_product(x.reshape(-1, x.shape[-1]), matrix, dtype)
  return product.reshape(x.shape[:-1] + matrix.shape[1:])


def wide_dot_general(dtype: Any):
  """A ``dot_general`` for ``flax.linen.Dense`` (built with its default ``dtype=None``) that
  multiplies through ``wide_product``."""
  def dot_general(x: Array, kernel: Array, dimension_numbers, precision=None) -> Array:
    del precision  # the operands' dtype sets it
    if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())):
      raise ValueError(f"wide_dot_general contracts the last axis of x with the first of the "
                       f"kernel, as nn.Dense does; got {dimension_numbers}")
    return _times(x, kernel, dtype)
  return dot_general


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def gather_matmul(x: Array, matrix: Array, dtype: Any) -> Array:
  """``gather_windows(x) @ matrix``: ``(B, H, W, C), (16 C, O) -> (B, H/2, W/2, O)``, from
  ``dtype`` operands accumulated in ``accumulation_dtype(dtype)``."""
  return _times(gather_windows(x.astype(dtype)), matrix, dtype)


def phase_windows(x: Array) -> Array:
  """The 2x2 neighbourhoods of the 1-padded ``x`` that feed each output parity of a scatter:
  ``(B, h, w, O) -> (4, B h w, 4 O)``.

  Entry ``((s, t), (b, i, j), (a, c, o))`` is ``padded[b, i + s + a, j + t + c, o]``: output pixel
  ``(2i + s, 2j + t)`` of ``scatter_windows(x @ matrix.T)`` is that neighbourhood times
  ``phase_matrices(matrix)[(s, t)]``.
  """
  batch, rows, cols, channels = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.stack([jnp.stack([padded[:, s + a:s + a + rows, t + c:t + c + cols]
                               for a in (0, 1) for c in (0, 1)], axis=-2)
                    for s in (0, 1) for t in (0, 1)]).reshape(4, batch * rows * cols, 4 * channels)


def phase_matrices(matrix: Array) -> Array:
  """``(16 C, O) -> (4, 4 O, C)``: entry ``((s, t), (a, c, o), k)`` is tap ``(3 - s - 2a,
  3 - t - 2c)`` of ``matrix.reshape(4, 4, C, O)`` at ``(k, o)``, the tap through which padded
  pixel ``(i + s + a, j + t + c)`` reaches output pixel ``(2i + s, 2j + t)``."""
  channels, features = matrix.shape[0] // 16, matrix.shape[1]
  # Reversed, tap 3 - s - 2a sits at 2a + s: rows (a, s), columns (c, t).
  taps = matrix.reshape(4, 4, channels, features)[::-1, ::-1].reshape(
      2, 2, 2, 2, channels, features)
  return taps.transpose(1, 3, 0, 2, 5, 4).reshape(4, 4 * features, channels)


def scatter_by_phases(x: Array, matrix: Array, dtype: Any) -> Array:
  """``scatter_windows(x @ matrix.T)`` as four products, one per output parity, from ``dtype``
  operands accumulated in ``accumulation_dtype(dtype)``: ``(B, h, w, O), (16 C, O) ->
  (B, 2h, 2w, C)``."""
  batch, rows, cols, _ = x.shape
  products = lax.dot_general(phase_windows(x.astype(dtype)), phase_matrices(matrix).astype(dtype),
                             (((2,), (1,)), ((0,), (0,))),
                             preferred_element_type=accumulation_dtype(dtype))
  channels = products.shape[-1]  # (s, t, b, i, j, k) -> (b, i, s, j, t, k)
  return products.reshape(2, 2, batch, rows, cols, channels).transpose(2, 3, 0, 4, 1, 5).reshape(
      batch, 2 * rows, 2 * cols, channels)


def _scatter_products(x: Array, matrix: Array, dtype: Any) -> Array:
  """``scatter_windows(x @ matrix.T)`` from ``dtype`` operands, accumulated in float32 or wider.

  16-bit operands and at least 16 output channels take the phase form, whose products contract
  the 2x2 neighbourhoods of ``x`` (``4 O`` long) instead of ``O`` and write a quarter as much.
  XLA's CPU backend runs those short bfloat16 contractions, with their large float32 results,
  1.7x slower here. In float32, and for few output channels (an image's), the scatter form is
  the faster one.
  """
  if jnp.dtype(dtype).itemsize < 4 and matrix.shape[0] // 16 >= _PHASE_FORM_MIN_CHANNELS:
    return scatter_by_phases(x, matrix, dtype)
  return scatter_windows(_times(x, matrix.T, dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def scatter_matmul(x: Array, matrix: Array, dtype: Any) -> Array:
  """``scatter_windows(x @ matrix.T)``: ``(B, h, w, O), (16 C, O) -> (B, 2h, 2w, C)``, from
  ``dtype`` operands accumulated in ``accumulation_dtype(dtype)``; the adjoint of
  ``gather_matmul(., matrix)``."""
  return _scatter_products(x, matrix, dtype)


def _window_products(image: Array, values: Array, dtype: Any) -> Array:
  """``gather_windows(image)`` rows times ``values`` rows, summed over every window:
  ``(B, H, W, C), (B, H/2, W/2, O) -> (16 C, O)``; the weight-gradient of both products."""
  windows = gather_windows(image.astype(dtype))
  return wide_product(windows.reshape(-1, windows.shape[-1]).T,
                      values.reshape(-1, values.shape[-1]), dtype)


def _gather_matmul_bwd(dtype, residuals, dy):
  """Cotangents of ``gather_matmul`` for ``dy (B, H/2, W/2, O)``: ``dx = scatter_matmul(dy)``."""
  x, matrix = residuals
  return (scatter_matmul(dy, matrix, dtype).astype(x.dtype),
          _window_products(x, dy, dtype).astype(matrix.dtype))


def _scatter_matmul_bwd(dtype, residuals, dy):
  """Cotangents of ``scatter_matmul`` for ``dy (B, 2h, 2w, C)``: ``dx = gather_matmul(dy)``."""
  x, matrix = residuals
  return (gather_matmul(dy, matrix, dtype).astype(x.dtype),
          _window_products(dy, x, dtype).astype(matrix.dtype))


def _saving_inputs(product):
  """The forward rule of ``product``: its value, with its inputs kept for the backward rule."""
  return lambda x, matrix, dtype: (product(x, matrix, dtype), (x, matrix))


wide_product.defvjp(_saving_inputs(wide_product), _wide_product_bwd)
gather_matmul.defvjp(_saving_inputs(gather_matmul), _gather_matmul_bwd)
scatter_matmul.defvjp(_saving_inputs(scatter_matmul), _scatter_matmul_bwd)


def upsample_matmul(x: Array, kernel: Array, dtype: Any = jnp.float32) -> Array:
  """Matmul form of the stride-2 4x4 transposed convolution, ``(B, H, W, I) -> (B, 2H, 2W, O)``,
  from ``dtype`` operands accumulated in ``accumulation_dtype(dtype)``.

  Equal to ``lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)))``, which correlates the
  dilated input with ``kernel``: as a scatter, input pixel (i, j) meets the spatially flipped
  kernel.
  """
  flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)  # (ky, kx, O, I)
  return scatter_matmul(x, flipped.reshape(-1, kernel.shape[2]), dtype)


def downsample_matmul(x: Array, kernel: Array, dtype: Any = jnp.float32) -> Array:
  """Matmul form of the stride-2 4x4 convolution, ``(B, H, W, I) -> (B, H/2, W/2, O)``,
  from ``dtype`` operands accumulated in ``accumulation_dtype(dtype)``.

  Equal to ``lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)))`` for even H, W.
  """
  return gather_matmul(x, kernel.reshape(-1, kernel.shape[-1]), dtype)


def _widened(y: Array) -> Array:
  """A library convolution's result, in its own dtype as flax's convolutions keep it (GPU
  libraries accumulate bfloat16 in float32 but may not return float32), cast to
  ``accumulation_dtype``."""
  return y.astype(accumulation_dtype(y.dtype))


class UpConv(nn.Module):
  """4x4 stride-2 transposed convolution without bias: ``(B, H, W, I) -> (B, 2H, 2W, features)``.

  Attributes:
    features: output channels.
    method: "xla" (``lax.conv_transpose``), "matmul" or "auto".
    dtype: dtype of the product's operands; it returns ``accumulation_dtype(dtype)``, float32
      for bfloat16 (the "matmul" form also accumulates in it).
  """
  features: int
  method: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", dcgan_init(), (4, 4, x.shape[-1], self.features), jnp.float32)
    if resolve_method(self.method) == "matmul":
      return upsample_matmul(x, kernel, self.dtype)
    return _widened(lax.conv_transpose(x.astype(self.dtype), kernel.astype(self.dtype), (2, 2),
                                       ((2, 2), (2, 2)), dimension_numbers=_DIMENSIONS))


class DownConv(nn.Module):
  """4x4 stride-2 convolution, padding 1, no bias: ``(B, H, W, I) -> (B, H/2, W/2, features)``.

  Attributes:
    features: output channels.
    method: "xla" (strided convolution), "matmul" or "auto".
    dtype: dtype of the product's operands; it returns ``accumulation_dtype(dtype)``, float32
      for bfloat16 (the "matmul" form also accumulates in it).
  """
  features: int
  method: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", dcgan_init(), (4, 4, x.shape[-1], self.features), jnp.float32)
    if resolve_method(self.method) == "matmul":
      return downsample_matmul(x, kernel, self.dtype)
    return _widened(lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype),
                                             (2, 2), ((1, 1), (1, 1)),
                                             dimension_numbers=_DIMENSIONS))


class WholeImageConv(nn.Module):
  """A valid convolution whose window is the whole input, without bias:
  ``(B, k, k, C) -> (B, features)``.

  The kernel ``(k, k, C, features)`` is that of ``nn.Conv(features, (k, k), padding="VALID")``;
  applied as one matrix product over the flattened input (XLA's CPU backend runs the gradients
  of the convolution form, whose window is the whole image, slowly).

  Attributes:
    features: output features.
    dtype: dtype of the product's operands; it accumulates and returns
      ``accumulation_dtype(dtype)``, float32 for bfloat16.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param("kernel", dcgan_init(), x.shape[1:] + (self.features,), jnp.float32)
    return wide_product(x.reshape(x.shape[0], -1), kernel.reshape(-1, self.features), self.dtype)
