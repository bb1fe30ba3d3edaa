"""Trains the MNIST classifier behind MNIST FID/KID/IS and ships its weights in the package.

    python -m experiments.train_classifier

Deterministic (see ``mnist_classifier.train``): the same flags give the same weights, byte for
byte. Writes the weights (flax msgpack) to ``--output`` and, beside them, a JSON file with the
held-out accuracy and the command.
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
flags.DEFINE_string("output", mnist_classifier.WEIGHTS_PATH, "Where to write the weights.")
FLAGS = flags.FLAGS


def main(argv):
  start = time.time()
  digits, labels = input_pipeline.load_mnist_arrays()
  images = digits[..., None].astype(np.float32) / 127.5 - 1.0
  train_indices, heldout_indices = mnist_classifier.heldout_split(labels)
  config = cli.config_from_flags(mnist_classifier.TrainConfig)
  variables, heldout_accuracy = mnist_classifier.train(
      images[train_indices], labels[train_indices], images[heldout_indices],
      labels[heldout_indices], config)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "wb") as f:
    f.write(serialization.to_bytes(variables))
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
