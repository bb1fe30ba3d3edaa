"""Trains a DCGAN: `python -m experiments.dcgan --flagfile=experiments/configs/dcgan_mnist.flags`.

Every field of `gan_jax.trainer.TrainConfig` is a flag; `--workdir` is where the run lives (rerun
the same command to resume it). On a multi-host TPU slice or several processes, pass
`--distributed` (or run where the TPU environment sets it up) so each process joins the job.
"""
from absl import flags, logging

from gan_jax import cli, trainer

cli.define_flags(trainer.TrainConfig)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, samples and metrics.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-process "
                  "runs; on Cloud TPU VMs the coordinator is found automatically).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
  cli.require(len(argv) == 1, f"unexpected arguments {' '.join(argv[1:])}; flags look like "
              "--name=value")
  if FLAGS.distributed:
    import jax
    jax.distributed.initialize()
  config = cli.config_from_flags(trainer.TrainConfig)
  summary = trainer.train_and_evaluate(config, FLAGS.workdir)
  logging.info("done: %s", {k: round(v, 4) if isinstance(v, float) else v
                            for k, v in summary.items()})


if __name__ == "__main__":
  cli.run(main)
