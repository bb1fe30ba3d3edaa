"""A small CNN classifier of MNIST digits, the feature network for MNIST FID, KID and IS.

Inception-v3 features describe 299x299 natural images and say little about 28x28 digits, so MNIST
GANs are usually scored with a classifier trained on MNIST itself: its penultimate activations
stand in for the Inception pool3 features (FID, KID, precision/recall) and its softmax for the
Inception classes (Inception Score, at most 10 here). Numbers from different classifiers are not
comparable; the shipped weights (``weights/mnist_classifier.msgpack``, trained by :func:`train`
through ``python -m experiments.train_classifier --output=...`` on 4,500 of the embedded
digits, accuracy on the other 500 in ``weights/mnist_classifier.json``) fix one for this project.
"""
import dataclasses
import os
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import serialization
from flax.training import train_state
from jax import lax

from gan_jax import cli, input_pipeline
from gan_jax.errors import UsageError
from gan_jax.metrics.extractor import FeatureExtractor, check_variables

Array = jax.Array
WEIGHTS_PATH = os.path.join(os.path.dirname(__file__), "weights", "mnist_classifier.msgpack")
RESOLUTION = 28
NUM_CLASSES = 10
FEATURE_DIM = 128
HELDOUT_PER_CLASS = 50
# float32 matrix products on every backend (no TF32/bfloat16 passes), so features and accuracy
# agree between CPU, GPU and TPU up to float32 round-off.
_PRECISION = lax.Precision.HIGHEST


class MnistClassifier(nn.Module):
  """``images (B, 28, 28, 1)`` in [-1, 1] -> ``(features (B, 128), logits (B, 10))``.

  Three 3x3 convolutions (32, 64, 64 channels, ReLU, each followed by 2x2 max pooling: 28 -> 14
  -> 7 -> 3), a 128-unit ReLU layer whose activations are the features, dropout (training only)
  and a linear classifier: 131k parameters, 0.5 MB.

  Attributes:
    dropout_rate: dropout on the features while training.
  """
  dropout_rate: float = 0.3

  @nn.compact
  def __call__(self, images: Array, train: bool = False) -> Tuple[Array, Array]:
    x = images
    for channels in (32, 64, 64):
      x = nn.relu(nn.Conv(channels, (3, 3), precision=_PRECISION)(x))
      x = nn.max_pool(x, (2, 2), (2, 2))
    features = nn.relu(nn.Dense(FEATURE_DIM, precision=_PRECISION)(x.reshape(x.shape[0], -1)))
    features_in_training = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    logits = nn.Dense(NUM_CLASSES, precision=_PRECISION)(features_in_training)
    return features, logits


def init_variables(key: Array) -> dict:
  """Freshly initialized variables of :class:`MnistClassifier` (``{"params": ...}``)."""
  return MnistClassifier().init(key, jnp.zeros((1, RESOLUTION, RESOLUTION, 1)))


def classifier_inputs(images: Array) -> Array:
  """Generator images ``(N, H, W, C)`` in [-1, 1] -> classifier inputs ``(N, 28, 28, 1)``.

  RGB becomes luminance (ITU-R 601, as in ``input_pipeline.fit_image``). Sizes undo what
  ``fit_image`` did to the 28x28 digits: a thin padding (32x32: 2 pixels a side of background) is
  cropped; any other size was resized, and is resized back (bilinear, antialiased).
  """
  if images.shape[-1] == 3:
    images = jnp.matmul(images, jnp.array([0.299, 0.587, 0.114], images.dtype)[:, None],
                        precision=jax.lax.Precision.HIGHEST)
  n, height, width, _ = images.shape
  pad = input_pipeline.border(RESOLUTION, height) if height == width else None
  if pad is not None:
    return images[:, pad:pad + RESOLUTION, pad:pad + RESOLUTION]
  return jax.image.resize(images, (n, RESOLUTION, RESOLUTION, 1), "bilinear")


def heldout_split(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Stratified split of a labelled set: the last 50 examples of each class are held out.

  On the embedded MNIST (500 digits per class) that is 4,500 training and 500 held-out digits.

  Args:
    labels: ``(N,)`` integer class labels.

  Returns:
    ``(train_indices, heldout_indices)``, sorted int arrays that partition ``range(N)``.
  """
  heldout = np.sort(np.concatenate([np.flatnonzero(labels == c)[-HELDOUT_PER_CLASS:]
                                    for c in range(NUM_CLASSES)]))
  return np.setdiff1d(np.arange(len(labels)), heldout), heldout


def random_shift(key: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Translates each image ``(B, H, W, C)`` by up to ``max_shift`` pixels, filling with -1."""
  if max_shift == 0:
    return images
  margins = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
  padded = jnp.pad(images, margins, constant_values=-1.0)
  offsets = jax.random.randint(key, (len(images), 2), 0, 2 * max_shift + 1)
  return jax.vmap(lambda image, o: lax.dynamic_slice(image, (o[0], o[1], 0), images.shape[1:]))(
      padded, offsets)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How the shipped weights were trained; every field is a flag of experiments.train_classifier."""
  epochs: int = cli.field(30, "Passes over the 4,500 training digits.")
  batch_size: int = cli.field(64, "Training batch size.")
  learning_rate: float = cli.field(2e-3, "Initial Adam learning rate, cosine-decayed to 0.")
  max_shift: int = cli.field(2, "Random translations of up to this many pixels per axis.")
  seed: int = cli.field(0, "Seed of initialization, batch order, augmentation and dropout.")


def train(train_images: np.ndarray, train_labels: np.ndarray, heldout_images: np.ndarray,
          heldout_labels: np.ndarray, config: TrainConfig) -> Tuple[dict, float]:
  """Trains :class:`MnistClassifier` deterministically, logging the held-out accuracy per epoch.

  Batches follow a permutation drawn from ``(seed, epoch)`` (the last partial batch of an epoch
  is dropped); random shifts (:func:`random_shift`) and dropout are keyed by
  ``fold_in(seed, step)``; Adam's learning rate decays from ``learning_rate`` to 0 on a cosine.

  Args:
    train_images: ``(N, 28, 28, 1)`` float32 digits in [-1, 1].
    train_labels: ``(N,)`` int class labels.
    heldout_images: ``(M, 28, 28, 1)`` digits to measure the accuracy on.
    heldout_labels: ``(M,)`` their labels.
    config: the hyperparameters.

  Returns:
    ``(variables, heldout_accuracy)``: the trained ``{"params": ...}`` and the final accuracy.
  """
  epochs, batch_size, max_shift = config.epochs, config.batch_size, config.max_shift
  model = MnistClassifier()
  key = jax.random.key(config.seed)
  steps_per_epoch = len(train_images) // batch_size
  schedule = optax.cosine_decay_schedule(config.learning_rate, epochs * steps_per_epoch)
  state = train_state.TrainState.create(apply_fn=model.apply, params=init_variables(key)["params"],
                                        tx=optax.adam(schedule))

  @jax.jit
  def train_step(state, images, labels):
    step_key = jax.random.fold_in(key, state.step)
    images = random_shift(jax.random.fold_in(step_key, 0), images, max_shift)

    def loss_fn(params):
      _, logits = state.apply_fn({"params": params}, images, train=True,
                                 rngs={"dropout": jax.random.fold_in(step_key, 1)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  @jax.jit
  def predict(params, images):
    return jnp.argmax(model.apply({"params": params}, images)[1], axis=-1)

  for epoch in range(epochs):
    order = np.random.default_rng([config.seed, epoch]).permutation(len(train_images))
    losses = []
    for step in range(steps_per_epoch):
      batch = order[step * batch_size:(step + 1) * batch_size]
      state, loss = train_step(state, train_images[batch], train_labels[batch])
      losses.append(loss)
    heldout_accuracy = float(np.mean(np.asarray(predict(state.params, heldout_images))
                                     == heldout_labels))
    logging.info("epoch %d/%d: training loss %.4f, held-out accuracy %.2f%%", epoch + 1, epochs,
                 float(np.mean(losses)), 100 * heldout_accuracy)
  return {"params": state.params}, heldout_accuracy


def _apply(variables, images: Array) -> Tuple[Array, Array]:
  return MnistClassifier().apply(variables, classifier_inputs(images))


def load_mnist_classifier(path: str = WEIGHTS_PATH, batch_size: int = 500) -> FeatureExtractor:
  """The trained classifier as a :class:`FeatureExtractor` (128-d features, 10 classes).

  Args:
    path: weights written by ``python -m experiments.train_classifier`` (flax msgpack).
    batch_size: images per network call.

  Returns:
    A :class:`FeatureExtractor` that accepts images of any size (see :func:`classifier_inputs`).

  Raises:
    UsageError: if the file is missing or does not hold this network's weights.
  """
  if not os.path.isfile(path):
    raise UsageError(f"MNIST classifier weights {path!r} not found; train them with "
                     f"`python -m experiments.train_classifier --output={path}`")
  retrain = ("retrain them with `python -m experiments.train_classifier "
             f"--output={path} --overwrite`")
  with open(path, "rb") as f:
    try:
      variables = serialization.msgpack_restore(f.read())
    except Exception as e:  # msgpack raises several types for corrupt data
      raise UsageError(f"cannot read {path!r} ({type(e).__name__}); {retrain}") from None
  check_variables(variables, jax.eval_shape(init_variables, jax.random.key(0)),
                  f"{path!r} does not hold MnistClassifier weights", retrain)
  return FeatureExtractor(_apply, jax.tree.map(jnp.asarray, variables), batch_size)
