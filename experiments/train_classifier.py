"""Trains the MNIST classifier behind MNIST FID/KID/IS, whose weights ship in the package.

    python -m experiments.train_classifier --output=classifier.msgpack

Deterministic (see ``mnist_classifier.train``): the default flags give the shipped weights, byte
for byte (``cmp classifier.msgpack gan_jax/metrics/weights/mnist_classifier.msgpack``). Writes
the weights (flax msgpack) to ``--output`` and, beside them, a JSON file with the held-out
accuracy and the command. An existing file is replaced only with ``--overwrite``, so the shipped
weights change only when asked to.
"""
import dataclasses
import os
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
flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
flags.mark_flag_as_required("output")
FLAGS = flags.FLAGS


def validate(config: mnist_classifier.TrainConfig, train_examples: int) -> None:
  """UsageError naming the first setting out of range."""
  cli.require_positive(config, ("epochs", "learning_rate"))
  cli.require(1 <= config.batch_size <= train_examples, f"--batch_size must be in [1, "
              f"{train_examples}] (the training digits), got {config.batch_size}")
  cli.require(config.max_shift >= 0, f"--max_shift must be >= 0, got {config.max_shift}")
  cli.require_seed(config.seed)


def main(argv):
  start = time.time()
  digits, labels = input_pipeline.load_mnist_arrays()
  images = digits[..., None].astype(np.float32) / 127.5 - 1.0
  train_indices, heldout_indices = mnist_classifier.heldout_split(labels)
  config = cli.config_from_flags(mnist_classifier.TrainConfig)
  validate(config, len(train_indices))
  cli.require(FLAGS.overwrite or not os.path.exists(FLAGS.output), f"--output={FLAGS.output} "
              "exists; pass --overwrite to replace it, or name another file")
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
  }
  run_log.write_json(os.path.splitext(FLAGS.output)[0] + ".json", record)
  logging.info("held-out accuracy %.2f%%; wrote %s", 100 * heldout_accuracy, FLAGS.output)


if __name__ == "__main__":
  cli.run(main)
