"""Converts pytorch-fid's Inception weights into the ``.npz`` that ``load_inception`` reads.

    python -m experiments.convert_inception_weights \
        --input=pt_inception-2015-12-05-6726825d.pth --output=inception_fid.npz

The input is pytorch-fid's port of the TensorFlow FID Inception (download it from
``gan_jax.metrics.inception.PYTORCH_FID_WEIGHTS_URL``); reading it needs ``torch`` (CPU build is
enough), which gan_jax itself does not depend on. See ``gan_jax/metrics/inception.py`` for the
file format. An existing ``--output`` is replaced only with ``--overwrite``.
"""
import os
import pickle

from absl import flags, logging

from gan_jax import cli
from gan_jax.metrics import inception

flags.DEFINE_string("input", None, "pytorch-fid's pt_inception-2015-12-05-6726825d.pth.")
flags.DEFINE_string("output", "inception_fid.npz", "Where to write the converted weights.")
flags.DEFINE_bool("overwrite", False, "Replace --output if it exists.")
FLAGS = flags.FLAGS


def main(argv):
  cli.require(FLAGS.input is not None, "pass --input=pt_inception-2015-12-05-6726825d.pth "
              f"(download it from {inception.PYTORCH_FID_WEIGHTS_URL})")
  cli.require(FLAGS.overwrite or not os.path.isfile(FLAGS.output), f"--output={FLAGS.output} "
              "exists; pass --overwrite to replace it, or name another file")
  cli.require(os.path.isfile(FLAGS.input), f"--input={FLAGS.input} is not a file; download "
              f"pytorch-fid's weights from {inception.PYTORCH_FID_WEIGHTS_URL}")
  cli.require_file_path(FLAGS.output, "--output")
  try:
    import torch
  except ImportError:
    raise cli.UsageError("reading the .pth file needs torch; `pip install torch` (the CPU build "
                         "is enough) and run this again") from None
  cli.require_writable_file(FLAGS.output, "--output")  # makes its folder: torch is there
  try:
    state_dict = torch.load(FLAGS.input, map_location="cpu", weights_only=True)
  except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:  # unreadable, not a .pth
    raise cli.UsageError(f"cannot read {FLAGS.input!r} ({e}); pass pytorch-fid's "
                         "pt_inception-2015-12-05-6726825d.pth") from None
  cli.require(isinstance(state_dict, dict)
              and all(isinstance(value, torch.Tensor) for value in state_dict.values()),
              f"{FLAGS.input} holds no state dict of tensors; pass pytorch-fid's "
              "pt_inception-2015-12-05-6726825d.pth")
  variables = inception.convert_pytorch_state_dict(
      {name: tensor.numpy() for name, tensor in state_dict.items()})
  inception.save_weights(variables, FLAGS.output)
  logging.info("wrote %s; load it with gan_jax.metrics.inception.load_inception(%r)",
               FLAGS.output, FLAGS.output)


if __name__ == "__main__":
  cli.run(main)
