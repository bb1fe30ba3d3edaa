"""Trains the MNIST classifier behind MNIST FID/KID/IS, whose weights ship in the package.

    python -m experiments.train_classifier --output=classifier.msgpack

Deterministic (see ``mnist_classifier.train``): the default flags give the shipped weights, byte
for byte (``cmp classifier.msgpack gan_jax/metrics/weights/mnist_classifier.msgpack``), on a CPU
of the architecture and core count that the record names (the count changes the order of XLA's
sums: one core instead of two changed the weights by up to 2e-6). Writes
the weights (flax msgpack) to ``--output`` and, beside them, a JSON file with the held-out
accuracy and the command (``--output`` with the extension ``.json``, so ``--output`` must not end
in ``.json``). An existing file (of either) is replaced only with ``--overwrite``, so the shipped
weights change only when asked to.
"""
import dataclasses
import os
import platform
import sys
import time

import jax
import numpy as np
from absl import flags, logging
from flax import serialization

from gan_jax import cli, input_pipeline, run_log
from gan_jax.metrics import mnist_classifier

cli.define_flags(mnist_classifier.TrainConfig)
flags.adopt_module_key_flags(cli)  # --helpshort lists them
flags.DEFINE_string("output", None, "Where to write the weights (the shipped ones: "
                    f"{os.path.relpath(mnist_classifier.WEIGHTS_PATH)}).")
flags.DEFINE_bool("overwrite", False, "Replace --output and its .json record if they exist.")
flags.mark_flag_as_required("output")
FLAGS = flags.FLAGS


def validate(config: mnist_classifier.TrainConfig, train_examples: int, size: int) -> None:
  """UsageError naming the first setting out of range (``size``: the images' side)."""
  cli.require_positive(config, ("epochs", "learning_rate"))
  cli.require(1 <= config.batch_size <= train_examples, f"--batch_size must be in [1, "
              f"{train_examples}] (the training digits), got {config.batch_size}")
  cli.require(0 <= config.max_shift < size, f"--max_shift must be in [0, {size}) (the image "
              f"size), got {config.max_shift}")
  cli.require_seed(config.seed)


def main(argv):
  start = time.time()
  digits, labels = input_pipeline.load_mnist_arrays()
  images = digits[..., None].astype(np.float32) / 127.5 - 1.0
  train_indices, heldout_indices = mnist_classifier.heldout_split(labels)
  config = cli.config_from_flags(mnist_classifier.TrainConfig)
  validate(config, len(train_indices), images.shape[1])
  stem = os.path.splitext(FLAGS.output)[0]
  record_path = stem + ".json"
  cli.require(record_path != FLAGS.output, f"--output={FLAGS.output} ends in .json, the extension "
              f"of the accuracy record written beside the weights; pass --output={stem}.msgpack")
  for path, name in ((FLAGS.output, f"--output={FLAGS.output}"),
                     (record_path, f"{record_path} (the accuracy record beside --output)")):
    cli.require(FLAGS.overwrite or not os.path.exists(path), f"{name} exists; pass --overwrite "
                "to replace it, or name another file")
  cli.require_writable_file(FLAGS.output, "--output")
  variables, heldout_accuracy = mnist_classifier.train(
      images[train_indices], labels[train_indices], images[heldout_indices],
      labels[heldout_indices], config)
  run_log.write_file(FLAGS.output, serialization.to_bytes(variables))
  record = {
      "heldout_accuracy": heldout_accuracy,
      "train_examples": len(train_indices),
      "heldout_examples": len(heldout_indices),
      "command": " ".join(["python -m experiments.train_classifier"] + sys.argv[1:]),
      "flags": dataclasses.asdict(config),
      "seconds": round(time.time() - start, 1),
      "jax_version": jax.__version__,
      "machine": platform.machine(),
      "cpu_cores": len(os.sched_getaffinity(0)),  # the results depend on it
  }
  run_log.write_json(record_path, record)
  logging.info("held-out accuracy %.2f%%; wrote %s", 100 * heldout_accuracy, FLAGS.output)


if __name__ == "__main__":
  cli.run(main)
