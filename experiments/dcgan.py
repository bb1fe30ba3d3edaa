"""Trains a DCGAN: `python -m experiments.dcgan --flagfile=experiments/configs/dcgan_mnist.flags`.

Every field of `gan_jax.trainer.TrainConfig` is a flag; `--workdir` is where the run lives (rerun
the same command to resume it). On a multi-host TPU slice or several processes, pass
`--distributed` (or run where the TPU environment sets it up) so each process joins the job.
"""
from absl import flags, logging

from gan_jax import cli, distributed, host_memory, preemption, trainer

cli.define_flags(trainer.TrainConfig)
flags.adopt_module_key_flags(cli)  # --helpshort lists them
flags.DEFINE_string("workdir", None, "Folder for checkpoints, samples and metrics.")
flags.DEFINE_bool("distributed", False, "Join a multi-process job first (jax.distributed); on "
                  "Cloud TPU VMs and SLURM the next three flags are found automatically.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for --distributed.")
flags.DEFINE_integer("num_processes", None, "Processes in the job, for --distributed.")
flags.DEFINE_integer("process_id", None, "This process's index, for --distributed.")
flags.DEFINE_integer("distributed_timeout_s", distributed.DEFAULT_TIMEOUT_S,
                     "Seconds the processes of a --distributed job wait for each other to join.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
  given = [f"--{name}" for name in ("coordinator_address", "num_processes", "process_id",
                                    "distributed_timeout_s") if FLAGS[name].present]
  cli.require(FLAGS.distributed or not given, f"{', '.join(given)} without --distributed: each "
              "process would train alone; add --distributed")
  config = cli.config_from_flags(trainer.TrainConfig)
  if config.keep_freed_memory and host_memory.only_cpu_backend():  # before JAX's CPU threads
    host_memory.keep_freed_memory()
  if FLAGS.distributed:
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           FLAGS.distributed_timeout_s)
  summary = trainer.train_and_evaluate(config, FLAGS.workdir)
  logging.info("done: %s", {k: round(v, 4) if isinstance(v, float) else v
                            for k, v in summary.items()})
  return preemption.exit_status(summary["preempted"])


if __name__ == "__main__":
  cli.run(main)
