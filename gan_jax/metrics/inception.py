"""The FID Inception-v3 network in Flax: pool3 features (2048-d) and 1008-way logits.

This is the network of the TensorFlow FID code (Heusel et al. 2017, graph
``inception-2015-12-05``) as pytorch-fid ports it: torchvision's Inception-v3 with the FID
patches (``FIDInceptionA/C/E_1``: average pooling that ignores the zero padding;
``FIDInceptionE_2``: max pooling in the pool branch), 1008 output classes and no auxiliary head.
Modules and parameters carry pytorch-fid's names (``Mixed_6b/branch7x7dbl_2/conv/kernel`` is
``Mixed_6b.branch7x7dbl_2.conv.weight``), so converting the weights is a renaming plus a transpose.

Inputs are images ``(N, H, W, C)`` in [-1, 1] with C = 1 or 3: gray is repeated to RGB and every
size is resized to 299x299 bilinearly without antialiasing, as pytorch-fid does
(``F.interpolate(mode="bilinear", align_corners=False)``; the [0, 1] -> [-1, 1] scaling it does
afterwards commutes with the resize, so [-1, 1] images go in directly). Images are not quantized
to 8 bits first. Convolutions run at float32 precision on every backend (no TF32 or bfloat16
passes on GPU and TPU), so features agree across machines up to float32 round-off.

Weights file: an ``.npz`` whose keys are the ``/``-joined paths of the Flax variables
(``params/Conv2d_1a_3x3/conv/kernel``, ``batch_stats/Mixed_5b/branch1x1/bn/mean``, ...,
``params/fc/kernel``), float32, written by :func:`save_weights`. Make it from pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` with ``python -m experiments.convert_inception_weights``
(needs torch) on a machine that has the file.
"""
from typing import Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from gan_jax.errors import UsageError, first_line
from gan_jax.metrics.extractor import FeatureExtractor, check_variables

Array = jax.Array
RESOLUTION = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
PYTORCH_FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                           "pt_inception-2015-12-05-6726825d.pth")


class BasicConv2d(nn.Module):
  """Convolution without bias, batch norm (eps 1e-3, running statistics), ReLU.

  Attributes:
    features: output channels.
    kernel_size: ``(kh, kw)``.
    strides: ``(sh, sw)``.
    padding: ``(ph, pw)`` zero pixels on each side, as PyTorch's ``padding``.
  """
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  padding: Tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, self.strides, padding=((ph, ph), (pw, pw)),
                use_bias=False, precision=lax.Precision.HIGHEST, name="conv")(x)
    return nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x))


def _pool_3x3_same(x: Array, kind: str) -> Array:
  """3x3 stride-1 pooling with 1 pixel of padding: "avg" ignores the padding (TensorFlow's
  ``count_include_pad=False``), "max" pads with -inf."""
  if kind == "avg":
    return nn.avg_pool(x, (3, 3), padding=((1, 1), (1, 1)), count_include_pad=False)
  return nn.max_pool(x, (3, 3), padding=((1, 1), (1, 1)))


def _max_pool_3x3_stride_2(x: Array) -> Array:
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
  """35x35 block (``FIDInceptionA``): 64 + 64 + 96 + ``pool_features`` channels."""
  pool_features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    branch1x1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
    branch5x5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
    branch5x5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
    branch3x3dbl = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(
        _pool_3x3_same(x, "avg"))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """Reduction 35x35 -> 17x17 (torchvision ``InceptionB``, ``Mixed_6a``): 384 + 96 + input."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    branch3x3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    branch3x3dbl = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = BasicConv2d(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorized 7x7 convolutions (``FIDInceptionC``): 4 x 192 channels."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c7 = self.channels_7x7
    branch1x1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
    branch7x7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
    branch7x7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
    branch7x7dbl = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
    for i, (features, kernel, padding) in enumerate(
        [(c7, (7, 1), (3, 0)), (c7, (1, 7), (0, 3)), (c7, (7, 1), (3, 0)),
         (192, (1, 7), (0, 3))], start=2):
      branch7x7dbl = BasicConv2d(features, kernel, padding=padding,
                                 name=f"branch7x7dbl_{i}")(branch7x7dbl)
    branch_pool = BasicConv2d(192, (1, 1), name="branch_pool")(_pool_3x3_same(x, "avg"))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """Reduction 17x17 -> 8x8 (torchvision ``InceptionD``, ``Mixed_7a``): 320 + 192 + input."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    branch3x3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
    branch3x3 = BasicConv2d(320, (3, 3), strides=(2, 2), name="branch3x3_2")(branch3x3)
    branch7x7x3 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
    branch7x7x3 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = BasicConv2d(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with expanded filter banks: 320 + 768 + 768 + 192 = 2048 channels.

  Attributes:
    pool: "avg" for ``Mixed_7b`` (``FIDInceptionE_1``), "max" for ``Mixed_7c``
      (``FIDInceptionE_2``, a quirk of the TensorFlow graph that FID keeps).
  """
  pool: str

  @nn.compact
  def __call__(self, x: Array) -> Array:
    branch1x1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
    branch3x3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
    branch3x3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)], axis=-1)
    branch3x3dbl = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl)], axis=-1)
    branch_pool = BasicConv2d(192, (1, 1), name="branch_pool")(_pool_3x3_same(x, self.pool))
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionV3(nn.Module):
  """``images (B, 299, 299, 3)`` in [-1, 1] -> ``(pool3 features (B, 2048), logits (B, 1008))``.

  The logits are ``features @ fc.kernel`` without the bias, as the original Inception Score code
  (Salimans et al. 2016) computes them from this graph.
  """

  @nn.compact
  def __call__(self, x: Array) -> Tuple[Array, Array]:
    x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)  # 149x149
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147x147
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride_2(x)  # 73x73
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71x71
    x = _max_pool_3x3_stride_2(x)  # 35x35
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)  # 17x17
    for name, channels_7x7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                               ("Mixed_6e", 192)]:
      x = InceptionC(channels_7x7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)  # 8x8
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    features = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(NUM_CLASSES, use_bias=False, precision=lax.Precision.HIGHEST,
                      name="fc")(features)
    return features, logits


def inception_inputs(images: Array) -> Array:
  """Images ``(N, H, W, C)`` in [-1, 1], C = 1 or 3 -> network inputs ``(N, 299, 299, 3)``.

  Gray is repeated to RGB; the resize is bilinear with half-pixel centres and no antialiasing,
  which is PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)`` used by pytorch-fid.
  """
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  return jax.image.resize(images, (images.shape[0], RESOLUTION, RESOLUTION, 3), "bilinear",
                          antialias=False)


def variables_template() -> dict:
  """The shapes and dtypes of :class:`InceptionV3`'s variables (``jax.ShapeDtypeStruct`` leaves),
  without computing anything."""
  return jax.eval_shape(InceptionV3().init, jax.random.key(0),
                        jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))


def save_weights(variables: Mapping, path: str) -> None:
  """Writes Inception variables (``{"params": ..., "batch_stats": ...}``) to an ``.npz`` whose
  keys are the ``/``-joined variable paths, float32. ``path`` is used as given (``np.savez``
  would add ``.npz`` to any other name)."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  with open(path, "wb") as f:
    np.savez(f, **{name: np.asarray(value, np.float32) for name, value in flat.items()})


def _apply(variables, images: Array) -> Tuple[Array, Array]:
  return InceptionV3().apply(variables, inception_inputs(images))


def load_inception(path: str, batch_size: int = 50) -> FeatureExtractor:
  """The FID Inception-v3 as a :class:`FeatureExtractor` (2048-d pool3 features, 1008 classes).

  Args:
    path: an ``.npz`` weights file (see the module docstring).
    batch_size: images per network call.

  Returns:
    A :class:`FeatureExtractor` accepting images ``(N, H, W, C)`` of any size in [-1, 1].

  Raises:
    UsageError: if the file is missing, unreadable or does not hold this network's variables.
  """
  def how_to_get(output: str) -> str:
    return (f"download {PYTORCH_FID_WEIGHTS_URL} and convert it with `python -m "
            "experiments.convert_inception_weights "
            f"--input=pt_inception-2015-12-05-6726825d.pth --output={output}` (needs torch)")

  try:
    with np.load(path) as npz:
      flat = {name: npz[name] for name in npz.files}
  except FileNotFoundError:
    raise UsageError(f"Inception weights {path!r} not found; {how_to_get(path)}") from None
  except Exception as e:  # not an .npz: numpy and zipfile raise several types
    cause = first_line(e, 120)
    raise UsageError(f"cannot read Inception weights {path!r} as an .npz ({type(e).__name__}: "
                     f"{cause}); pass the .npz made this way: "
                     f"{how_to_get('inception_fid.npz')}") from None
  variables = traverse_util.unflatten_dict(flat, sep="/")
  check_variables(variables, variables_template(),
                  f"{path!r} does not hold FID Inception weights", how_to_get(path))
  return FeatureExtractor(_apply, jax.tree.map(jnp.asarray, variables), batch_size)


# PyTorch (module, tensor) -> (Flax collection, variable, layout change).
_FROM_PYTORCH = {
    ("conv", "weight"): ("params", "kernel", (2, 3, 1, 0)),  # (O, I, kh, kw) -> (kh, kw, I, O)
    ("bn", "weight"): ("params", "scale", None),
    ("bn", "bias"): ("params", "bias", None),
    ("bn", "running_mean"): ("batch_stats", "mean", None),
    ("bn", "running_var"): ("batch_stats", "var", None),
    ("fc", "weight"): ("params", "kernel", (1, 0)),  # (out, in) -> (in, out)
}
# Tensors with no Flax counterpart: batch-norm step counters, and the fc bias, which the Inception
# Score code of Salimans et al. leaves out (see InceptionV3).
_SKIPPED_PYTORCH = ("num_batches_tracked", "fc.bias")


def convert_pytorch_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
  """The state dict of pytorch-fid's FID Inception-v3 -> :class:`InceptionV3`
  variables.

  Args:
    state_dict: tensor name -> numpy array, e.g. ``{k: v.numpy() for k, v in
      torch.load("pt_inception-2015-12-05-6726825d.pth").items()}``.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays, ready for
    :func:`save_weights`.

  Raises:
    UsageError: if a tensor has no counterpart or the result misses or misshapes a variable.
  """
  flat = {}
  for name, value in state_dict.items():
    if name.endswith(_SKIPPED_PYTORCH):
      continue
    parts = name.split(".")
    if tuple(parts[-2:]) not in _FROM_PYTORCH:
      raise UsageError(f"unexpected tensor {name!r} in the state dict; pass pytorch-fid's "
                       "pt_inception-2015-12-05-6726825d.pth")
    *modules, layer, tensor = parts
    collection, variable, axes = _FROM_PYTORCH[(layer, tensor)]
    array = np.asarray(value, np.float32)
    if axes and array.ndim != len(axes):
      raise UsageError(f"tensor {name!r} has shape {array.shape}, not that of pytorch-fid's "
                       "FID Inception; pass pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    flat[(collection, *modules, layer, variable)] = array.transpose(axes) if axes else array
  variables = traverse_util.unflatten_dict(flat)
  check_variables(variables, variables_template(), "the state dict is not pytorch-fid's FID "
                  "Inception", "pass pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
  return variables
