"""A feature network behind one interface: images in, features and class probabilities out."""
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from gan_jax.errors import UsageError

ApplyFn = Callable[[Any, jax.Array], Tuple[jax.Array, jax.Array]]
"""``(variables, images (B, H, W, C) in [-1, 1]) -> (features (B, D), logits (B, K))``."""


def check_variables(variables: Any, template: Any, problem: str, remedy: str) -> None:
  """Raises UsageError unless ``variables`` has the structure and array shapes of ``template``.

  Args:
    variables: loaded weights (a pytree of arrays).
    template: the expected pytree, e.g. ``jax.eval_shape`` of the network's ``init``.
    problem: what is wrong, e.g. ``"'w.npz' does not hold Inception weights"``.
    remedy: what to do about it.
  """
  paths = {jax.tree_util.keystr(p): np.shape(x)
           for p, x in jax.tree_util.tree_flatten_with_path(variables)[0]}
  expected = {jax.tree_util.keystr(p): tuple(x.shape)
              for p, x in jax.tree_util.tree_flatten_with_path(template)[0]}
  if paths != expected:
    differences = sorted(set(paths.items()) ^ set(expected.items()))
    raise UsageError(f"{problem} ({len(differences)} arrays missing, unexpected or misshapen, "
                     f"e.g. {differences[0][0]} {differences[0][1]}); {remedy}")


class FeatureExtractor:
  """Runs a jitted network over images in fixed-size batches, returning numpy arrays.

  The last batch is padded to ``batch_size``, so each image shape compiles once. Each batch is
  split over ``devices`` (the weights on each), so a machine with several GPUs or TPU chips
  extracts on all of them; results are deterministic for given devices and input. With devices
  of several processes (``on(jax.devices())``) a call is a collective: every process must make
  it, with the same images, and gets all the results.

  Args:
    apply_fn: pure function of ``(variables, images)``, see :data:`ApplyFn`; it maps any image
      size and channel count it accepts to the network's input itself.
    variables: the network's weights (a pytree), passed to ``apply_fn``.
    batch_size: images per network call, rounded up to a multiple of the device count.
    devices: where to run (default: this process's devices).
  """

  def __init__(self, apply_fn: ApplyFn, variables: Any, batch_size: int = 200,
               devices: Optional[Sequence[jax.Device]] = None):
    def run(variables, images):
      features, logits = apply_fn(variables, images)
      return features, jax.nn.softmax(logits, axis=-1)

    self._apply_fn, self._batch_size = apply_fn, batch_size
    self.devices = jax.local_devices() if devices is None else list(np.ravel(devices))
    mesh = jax.sharding.Mesh(np.array(self.devices), ("images",))
    self._batches = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("images"))
    self._run = jax.jit(run)
    self.variables = jax.tree.map(
        lambda x: _place(np.asarray(x), jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec())), variables)
    self.batch_size = -(-batch_size // len(self.devices)) * len(self.devices)

  def on(self, devices: Sequence[jax.Device]) -> "FeatureExtractor":
    """The same network and weights, run on ``devices``."""
    replicated = jax.tree.map(lambda x: x.addressable_data(0), self.variables)
    return FeatureExtractor(self._apply_fn, replicated, self._batch_size, devices)

  def __call__(self, images) -> Tuple[np.ndarray, np.ndarray]:
    """Features and class probabilities of images.

    Args:
      images: ``(N, H, W, C)`` images in [-1, 1], C = 1 or 3.

    Returns:
      ``(features, probabilities)``: float32 ``(N, D)`` and ``(N, K)`` (softmax of the logits).

    Raises:
      UsageError: on arrays of another shape, or values outside [-1, 1].
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
      raise UsageError(f"expected images (N, H, W, C) with N >= 1 and C = 1 or 3, in [-1, 1]; "
                       f"got shape {images.shape}")
    if not np.all(np.abs(images) <= 1.0 + 1e-3):  # also catches NaN
      raise UsageError(f"images must be finite and in [-1, 1], got values in [{np.min(images)}, "
                       f"{np.max(images)}]; map uint8 pixels with x / 127.5 - 1")
    features, probabilities = [], []
    for start in range(0, len(images), self.batch_size):
      batch = images[start:start + self.batch_size]
      padded = np.pad(batch, ((0, self.batch_size - len(batch)), (0, 0), (0, 0), (0, 0)))
      batch_features, batch_probabilities = _gathered(
          self._run(self.variables, _place(padded, self._batches)))
      features.append(batch_features[:len(batch)])
      probabilities.append(batch_probabilities[:len(batch)])
    return np.concatenate(features), np.concatenate(probabilities)

  def features(self, images) -> np.ndarray:
    """``(N, D)`` float32 features of images ``(N, H, W, C)`` in [-1, 1]."""
    return self(images)[0]


def _place(array: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """``array``, held whole by this process, as a JAX array laid out by ``sharding``, which may
  span devices of other processes (each then places its own slices)."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _gathered(arrays: Tuple[jax.Array, ...]) -> Tuple[np.ndarray, ...]:
  """The whole of each array on the host, gathered in one collective from the other processes
  where they span them."""
  if all(array.is_fully_addressable for array in arrays):
    return tuple(np.asarray(array) for array in arrays)
  return tuple(np.asarray(array)
               for array in multihost_utils.process_allgather(arrays, tiled=True))
