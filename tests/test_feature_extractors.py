"""Feature networks: the shipped MNIST classifier, the FID Inception-v3 and its weight converter."""
import json
import math
import os

import jax
import numpy as np
import pytest
from flax import serialization, traverse_util

from gan_jax import input_pipeline
from gan_jax.cli import UsageError
from gan_jax.metrics import inception, mnist_classifier
from gan_jax.metrics.extractor import FeatureExtractor

# --- FeatureExtractor -------------------------------------------------------------------------


def test_extractor_batches_pad_and_return_softmax():
  weights = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)

  def apply_fn(w, images):
    features = images.reshape(len(images), -1)
    return features, features @ w

  images = np.random.default_rng(1).uniform(-1, 1, size=(10, 2, 2, 3)).astype(np.float32)
  features, probabilities = FeatureExtractor(apply_fn, weights, batch_size=4)(images)
  logits = images.reshape(10, -1).astype(np.float64) @ weights
  expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  np.testing.assert_array_equal(features, images.reshape(10, -1))
  np.testing.assert_allclose(probabilities, expected, rtol=1e-5)
  with pytest.raises(UsageError, match=r"\(N, H, W, C\)"):
    FeatureExtractor(apply_fn, weights)(images[0])
  with pytest.raises(UsageError, match=r"in \[-1, 1\].*x / 127.5 - 1"):
    FeatureExtractor(apply_fn, weights)(images * 127.5 + 127.5)


def test_batches_split_over_the_devices_give_the_features_of_one_device(mnist):
  """The MNIST classifier on the 4 CPU devices of the tests (each image on one of them), on two
  and on one: the same features and probabilities, but for float32 round-off (XLA blocks the
  convolutions of 25 and of 100 images differently). Two processes share the work the same way
  (tests/test_multiprocess.py)."""
  images = mnist[0][:250, :, :, None] / 127.5 - 1.0
  four = mnist_classifier.load_mnist_classifier(batch_size=98)
  one = FeatureExtractor(mnist_classifier._apply, four.variables,
                         devices=np.array(jax.devices()[:1]))  # a mesh's array is taken too
  two = four.on(jax.devices()[2:])
  assert len(four.devices) == 4 and four.batch_size == 100 and two.batch_size == 98
  for a, b, c in zip(four(images), one(images), two(images)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c, b, rtol=1e-4, atol=1e-5)


# --- MNIST classifier -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
  digits, labels = input_pipeline.load_mnist_arrays()
  return digits, labels


@pytest.fixture(scope="module")
def classifier():
  return mnist_classifier.load_mnist_classifier()


def test_heldout_split_is_stratified_and_disjoint(mnist):
  _, labels = mnist
  train, heldout = mnist_classifier.heldout_split(labels)
  assert len(train) == 4500 and len(heldout) == 500
  np.testing.assert_array_equal(np.sort(np.concatenate([train, heldout])), np.arange(5000))
  np.testing.assert_array_equal(np.bincount(labels[heldout]), np.full(10, 50))


def test_shipped_classifier_reaches_its_recorded_heldout_accuracy(mnist, classifier):
  digits, labels = mnist
  _, heldout = mnist_classifier.heldout_split(labels)
  images = digits[heldout, :, :, None] / 127.5 - 1.0
  features, probabilities = classifier(images)
  accuracy = np.mean(np.argmax(probabilities, axis=1) == labels[heldout])
  with open(os.path.splitext(mnist_classifier.WEIGHTS_PATH)[0] + ".json") as f:
    recorded = json.load(f)
  assert accuracy >= 0.97
  assert accuracy == pytest.approx(recorded["heldout_accuracy"], abs=1e-9)
  assert features.shape == (500, mnist_classifier.FEATURE_DIM)
  np.testing.assert_array_equal(classifier.features(images), features)  # deterministic
  assert os.path.getsize(mnist_classifier.WEIGHTS_PATH) < 1 << 20


def test_classifier_inputs_undo_the_pipeline_padding_and_resizing(mnist):
  digits, _ = mnist
  at_28 = np.stack([input_pipeline.fit_image(x, 28, 1) for x in digits[:8]])
  padded = np.stack([input_pipeline.fit_image(x, 32, 1) for x in digits[:8]])
  np.testing.assert_array_equal(mnist_classifier.classifier_inputs(padded), at_28)
  resized = np.stack([input_pipeline.fit_image(x, 64, 1) for x in digits[:8]])
  back = mnist_classifier.classifier_inputs(resized)  # up and down again: blurred a little
  assert float(np.mean(np.abs(back - at_28))) < 0.1
  rgb = np.stack([input_pipeline.fit_image(x, 32, 3) for x in digits[:8]])
  np.testing.assert_allclose(mnist_classifier.classifier_inputs(rgb), at_28, atol=1e-6)
  assert mnist_classifier.classifier_inputs(np.zeros((2, 20, 20, 1))).shape == (2, 28, 28, 1)


def test_load_mnist_classifier_explains_bad_files(tmp_path):
  with pytest.raises(UsageError, match="train_classifier"):
    mnist_classifier.load_mnist_classifier(str(tmp_path / "missing.msgpack"))
  garbage = tmp_path / "garbage.msgpack"
  garbage.write_bytes(b"\xc1 not msgpack")
  with pytest.raises(UsageError, match="cannot read"):
    mnist_classifier.load_mnist_classifier(str(garbage))
  other = tmp_path / "other.msgpack"
  other.write_bytes(serialization.to_bytes({"params": {"Dense_0": {"kernel": np.zeros((3, 3))}}}))
  with pytest.raises(UsageError, match="does not hold MnistClassifier weights"):
    mnist_classifier.load_mnist_classifier(str(other))


@pytest.mark.slow
def test_training_is_deterministic(mnist):
  digits, labels = mnist
  images = digits[::50, :, :, None].astype(np.float32) / 127.5 - 1.0  # 100 digits, 10 a class
  labels, heldout = labels[::50], np.arange(100) % 5 == 0
  args = (images[~heldout], labels[~heldout], images[heldout], labels[heldout])
  config = mnist_classifier.TrainConfig(epochs=2, batch_size=40, seed=3)
  first, accuracy = mnist_classifier.train(*args, config)
  second, accuracy_again = mnist_classifier.train(*args, config)
  assert serialization.to_bytes(first) == serialization.to_bytes(second)
  assert accuracy == accuracy_again


# --- FID Inception-v3 -------------------------------------------------------------------------

# Parameters of torchvision's inception_v3 (27,161,264), less its auxiliary classifier
# (3,326,696) and its 1000-way fc layer (2,049,000): the convolutions and batch norms.
TORCHVISION_CONV_AND_BN_PARAMETERS = 21_785_568


@pytest.fixture(scope="module")
def template():
  return inception.variables_template()


def torch_state_dict(template, rng, draw=None):
  """A random state dict named and shaped as pytorch-fid's, built from the Flax variables:
  standard normal values, or ``draw(variable name, shape)``."""
  leaf_to_torch = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                   "var": "running_var"}
  draw = draw or (lambda variable, shape: rng.normal(size=shape))
  state_dict, expected = {}, {}
  for path, leaf in sorted(traverse_util.flatten_dict(template).items()):
    _, *modules, variable = path
    value = np.asarray(draw(variable, leaf.shape), np.float32)
    expected[path] = value
    if variable == "kernel":  # Flax (kh, kw, I, O) and (in, out); PyTorch (O, I, kh, kw), (out, in)
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    state_dict[".".join(modules + [leaf_to_torch[variable]])] = value
    if variable == "var":
      state_dict[".".join(modules + ["num_batches_tracked"])] = np.array(0)
  state_dict["fc.bias"] = np.zeros(inception.NUM_CLASSES, np.float32)
  return state_dict, expected


def test_inception_has_pytorch_fid_parameters(template):
  params = traverse_util.flatten_dict(template["params"])
  conv_and_bn = sum(math.prod(v.shape) for k, v in params.items() if k[0] != "fc")
  assert conv_and_bn == TORCHVISION_CONV_AND_BN_PARAMETERS
  assert params[("fc", "kernel")].shape == (2048, 1008)
  state_dict, _ = torch_state_dict(template, np.random.default_rng(0))
  # Names and PyTorch shapes read off torchvision's and pytorch-fid's inception.py.
  for name, shape in [("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)),
                      ("Conv2d_4a_3x3.bn.running_var", (192,)),
                      ("Mixed_5b.branch_pool.conv.weight", (32, 192, 1, 1)),
                      ("Mixed_6a.branch3x3dbl_3.conv.weight", (96, 96, 3, 3)),
                      ("Mixed_6e.branch7x7_2.conv.weight", (192, 192, 1, 7)),
                      ("Mixed_6e.branch7x7dbl_5.conv.weight", (192, 192, 1, 7)),
                      ("Mixed_7a.branch7x7x3_4.conv.weight", (192, 192, 3, 3)),
                      ("Mixed_7b.branch_pool.conv.weight", (192, 1280, 1, 1)),
                      ("Mixed_7c.branch3x3dbl_3b.conv.weight", (384, 384, 3, 1)),
                      ("fc.weight", (1008, 2048))]:
    assert state_dict[name].shape == shape, name
  assert sum(name.endswith(".conv.weight") for name in state_dict) == 94


def working_network_state_dict(template):
  """pytorch-fid-named weights that keep every activation finite and non-zero through the 94
  layers: He-normal kernels, batch norms near the identity. Drawn from numpy's legacy
  ``RandomState``, whose streams numpy keeps fixed, so ``tests/data/fid_inception_reference.npz``
  stays valid."""
  rng = np.random.RandomState(2015)

  def draw(variable, shape):
    if variable == "kernel":
      return rng.standard_normal(shape) * np.sqrt(2.0 / math.prod(shape[:-1]))
    if variable in ("scale", "var"):
      return rng.uniform(0.5, 1.5, shape)
    return rng.uniform(-0.1, 0.1, shape)  # bias, mean

  return torch_state_dict(template, None, draw)[0]


def reference_inputs():
  """Two network inputs ``(2, 299, 299, 3)`` in [-1, 1]."""
  return np.random.RandomState(1).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)


def test_inception_features_equal_pytorch_fid_on_the_same_weights(template):
  """The features of pytorch-fid's own network (its FID blocks on torchvision's Inception-v3),
  computed once by ``tests/data/make_fid_inception_reference.py`` from the same weights and
  inputs: a check of every layer, of pytorch-fid's quirks (average pools that ignore the padding,
  a max pool in Mixed_7c) and of the converter."""
  reference = np.load(os.path.join(os.path.dirname(__file__), "data",
                                   "fid_inception_reference.npz"))
  variables = inception.convert_pytorch_state_dict(working_network_state_dict(template))
  features, logits = inception.InceptionV3().apply(variables, reference_inputs())
  assert float(np.std(reference["features"])) > 0.1
  np.testing.assert_allclose(features, reference["features"], rtol=1e-3,
                             atol=1e-4 * float(np.max(reference["features"])))
  np.testing.assert_allclose(logits, reference["features"] @ variables["params"]["fc"]["kernel"],
                             rtol=1e-3, atol=1e-3)


def test_converter_maps_every_tensor(template):
  state_dict, expected = torch_state_dict(template, np.random.default_rng(0))
  converted = traverse_util.flatten_dict(inception.convert_pytorch_state_dict(state_dict))
  assert converted.keys() == expected.keys()
  for path, value in expected.items():
    np.testing.assert_array_equal(converted[path], value, err_msg=str(path))
  with pytest.raises(UsageError, match="unexpected tensor 'Mixed_5b.branch1x1.scale'"):
    inception.convert_pytorch_state_dict({**state_dict, "Mixed_5b.branch1x1.scale": np.ones(2)})
  with pytest.raises(UsageError, match=r"not pytorch-fid's FID Inception \(1 arrays .*AuxLogits"):
    inception.convert_pytorch_state_dict({**state_dict, "AuxLogits.fc.weight": np.zeros((2, 2))})
  with pytest.raises(UsageError, match="unexpected tensor 'a'"):
    inception.convert_pytorch_state_dict({**state_dict, "a": np.ones(2)})
  with pytest.raises(UsageError, match=r"'Conv2d_1a_3x3.conv.weight' has shape \(32, 3\)"):
    inception.convert_pytorch_state_dict({**state_dict,
                                          "Conv2d_1a_3x3.conv.weight": np.ones((32, 3))})
  del state_dict["Mixed_6b.branch1x1.bn.running_mean"]
  with pytest.raises(UsageError, match=r"\(1 arrays .*Mixed_6b"):
    inception.convert_pytorch_state_dict(state_dict)


def torch_bilinear(image, size):
  """PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)`` of ``(H, W, C)``."""

  def matrix(n_in, n_out):
    source = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), low), 1.0 - (source - low))
    np.add.at(weights, (np.arange(n_out), high), source - low)
    return weights

  rows = np.einsum("oh,hwc->owc", matrix(image.shape[0], size), image)
  return np.einsum("owc,pw->opc", rows, matrix(image.shape[1], size))


def test_inception_inputs_resize_like_pytorch_fid():
  rng = np.random.default_rng(0)
  for shape in [(7, 5, 1), (32, 32, 3), (400, 320, 3)]:
    image = rng.uniform(-1, 1, size=shape).astype(np.float32)
    got = inception.inception_inputs(image[None])[0]
    expected = torch_bilinear(np.broadcast_to(image, shape[:2] + (3,)), 299)
    assert got.shape == (299, 299, 3)
    # Sampling positions (x + 0.5) * H / 299 - 0.5 are float32 in JAX (and in PyTorch): their
    # round-off, ~H * 6e-8 pixels, times pixel differences up to 2, bounds the error.
    np.testing.assert_allclose(got, expected, atol=2 * shape[0] * 6e-8 * 2 + 1e-6)


def test_inception_features_from_a_saved_weights_file(template, tmp_path):
  rng = np.random.default_rng(0)
  variables = {}
  for path, leaf in traverse_util.flatten_dict(template).items():
    if path[-1] == "kernel":  # He initialization keeps the activations finite and non-zero
      value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / math.prod(leaf.shape[:-1]))
    else:
      value = np.ones(leaf.shape) if path[-1] in ("scale", "var") else np.zeros(leaf.shape)
    variables[path] = value
  path = str(tmp_path / "inception.weights")  # not .npz: the file must still be this path
  inception.save_weights(traverse_util.unflatten_dict(variables), path)
  assert os.listdir(tmp_path) == ["inception.weights"]
  extractor = inception.load_inception(path, batch_size=2)
  images = np.random.default_rng(1).uniform(-1, 1, size=(2, 32, 32, 1))
  features, probabilities = extractor(images)
  assert features.shape == (2, inception.FEATURE_DIM)
  assert probabilities.shape == (2, inception.NUM_CLASSES)
  assert np.all(np.isfinite(features)) and np.all(features >= 0) and features.std() > 0
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(extractor.features(images), features)  # deterministic
  # the file's variables, loaded and batched, give what the in-memory ones give
  in_memory = inception.InceptionV3().apply(traverse_util.unflatten_dict(variables),
                                            inception.inception_inputs(images))
  np.testing.assert_allclose(features, in_memory[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(probabilities, jax.nn.softmax(in_memory[1]), rtol=1e-5, atol=1e-7)


def test_load_inception_explains_bad_files(tmp_path):
  with pytest.raises(UsageError, match="pt_inception-2015-12-05-6726825d.pth"):
    inception.load_inception(str(tmp_path / "missing.npz"))
  (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
  with pytest.raises(UsageError, match="cannot read"):
    inception.load_inception(str(tmp_path / "garbage.npz"))
  np.savez(tmp_path / "other.npz", **{"params/fc/kernel": np.zeros((2048, 1008))})
  with pytest.raises(UsageError, match="does not hold FID Inception weights"):
    inception.load_inception(str(tmp_path / "other.npz"))
