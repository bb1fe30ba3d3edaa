"""Input pipeline throughput: `python -m benchmarks.input_throughput --dataset=folder:PATH`.

Reads random batches of a decoding dataset (`folder:PATH`, or `tfds:NAME` with `--data_dir`)
the way `experiments.dcgan` reads them: decoded and fitted to the resolution on the decoding
threads, and then again from the cache of decoded images (`input_pipeline.CachedSource`), which
serves every epoch after the first. Compare the rates with a train step's images/s
(`benchmarks.dcgan_throughput`) to see whether the first epoch keeps an accelerator waiting.

Each round prints one JSON line; the last line is one JSON object: decoded_ms_per_batch and
cached_ms_per_batch (the best round), decoded_images_per_sec and cached_images_per_sec, dataset
and its size (images), batch_size, resolution, channels, decoding_threads and host (CPU model,
cores, JAX version).
"""
import json
import time

import numpy as np
from absl import flags

from benchmarks import commands
from gan_jax import cli, input_pipeline

flags.DEFINE_string("dataset", None, "folder:PATH or tfds:NAME (mnist is held in memory).")
flags.mark_flag_as_required("dataset")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, for tfds:NAME.")
flags.DEFINE_string("split", "train", "TFDS split, for tfds:NAME.")
flags.DEFINE_string("image_feature", "image", "TFDS image feature, for tfds:NAME.")
flags.DEFINE_integer("resolution", 64, "Image size the images are fitted to.", lower_bound=1)
flags.DEFINE_integer("channels", 3, "Image channels, 1 or 3.")
flags.register_validator("channels", lambda channels: channels in (1, 3),
                         message="--channels must be 1 or 3")
flags.DEFINE_integer("batch_size", 128, "Images per batch.", lower_bound=1)
flags.DEFINE_integer("batches", 6, "Batches per round.", lower_bound=1)
flags.DEFINE_integer("rounds", 3, "Rounds; each reads the batches decoded, then cached.",
                     lower_bound=1)
FLAGS = flags.FLAGS


def ms_per_batch(read, batches) -> float:
  start = time.perf_counter()
  for batch in batches:
    read(batch)
  return 1e3 * (time.perf_counter() - start) / len(batches)


def main(argv):
  del argv
  source = input_pipeline.make_source(FLAGS.dataset, FLAGS.resolution, FLAGS.channels,
                                      FLAGS.data_dir, FLAGS.split, FLAGS.image_feature)
  cli.require(isinstance(source, (input_pipeline.FolderSource, input_pipeline.TfdsSource)),
              f"--dataset={FLAGS.dataset} is held in memory, with nothing to decode; pass "
              "folder:PATH or tfds:NAME")
  rng = np.random.default_rng(0)
  batches = [rng.choice(len(source), FLAGS.batch_size) for _ in range(FLAGS.batches)]
  cache = input_pipeline.CachedSource(source)
  for batch in batches:  # their first epoch: decoded once, into the cache
    cache[batch]
  decoded, cached = [], []
  for _ in range(FLAGS.rounds):
    decoded.append(ms_per_batch(source.__getitem__, batches))
    cached.append(ms_per_batch(cache.__getitem__, batches))
    print(json.dumps({"round": len(decoded), "decoded_ms_per_batch": decoded[-1],
                      "cached_ms_per_batch": cached[-1]}))
  print(json.dumps({
      "decoded_ms_per_batch": min(decoded), "cached_ms_per_batch": min(cached),
      "decoded_images_per_sec": 1e3 * FLAGS.batch_size / min(decoded),
      "cached_images_per_sec": 1e3 * FLAGS.batch_size / min(cached),
      "dataset": FLAGS.dataset, "images": len(source), "batch_size": FLAGS.batch_size,
      "resolution": FLAGS.resolution, "channels": FLAGS.channels,
      "decoding_threads": input_pipeline.decoding_threads(), "host": commands.host()}))


if __name__ == "__main__":
  cli.run(main)
