"""Helpers for tests that run the DCGAN experiment, in this process or as a command."""
import collections
import contextlib
import os
import subprocess
import sys
import tempfile
from typing import Sequence

import jax
from absl import flags

from gan_jax import checkpointing, cli, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
# A run of 4 steps of narrow models that writes every kind of output twice.
TINY_RUN = ["--g_width=8", "--d_width=8", "--batch_size=8", "--num_steps=4", "--log_every_steps=2",
            "--sample_every_steps=2", "--checkpoint_every_steps=2"]


def config_from(flagfile=None, *overrides: str) -> trainer.TrainConfig:
  """A TrainConfig parsed by absl exactly as `python -m experiments.dcgan` parses it."""
  values = flags.FlagValues()
  cli.define_flags(trainer.TrainConfig, values)
  argv = ["dcgan"] + ([f"--flagfile={os.path.join(CONFIGS, flagfile)}"] if flagfile else [])
  values(argv + list(overrides))
  return cli.config_from_flags(trainer.TrainConfig, values)


def command(workdir, args: Sequence[str]) -> list:
  return [sys.executable, "-m", "experiments.dcgan", f"--workdir={workdir}", *args]


def run_command(workdir, args: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
  """Runs the experiment as a user does; returns the finished process (output captured)."""
  return subprocess.run(command(workdir, args), cwd=ROOT, capture_output=True, text=True,
                        **kwargs)


def start_command(workdir, args: Sequence[str], **kwargs) -> subprocess.Popen:
  """Starts the experiment as a command and returns at once; its output goes to a file (a pipe
  nobody reads could fill up and stall it), read by :func:`output`."""
  log = tempfile.TemporaryFile("w+")
  process = subprocess.Popen(command(workdir, args), cwd=ROOT, stdout=log,
                             stderr=subprocess.STDOUT, text=True, **kwargs)
  process.log = log
  return process


def output(process: subprocess.Popen, tail: int = 3000) -> str:
  """The end of what a process from :func:`start_command` printed."""
  process.log.seek(0)
  return process.log.read()[-tail:]


def latest_checkpoint(workdir, config: trainer.TrainConfig):
  """``(step, state, record)`` of the newest readable checkpoint in ``workdir``."""
  target = trainer.initial_state(config, *trainer.build_models(config, None))
  checkpoints = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return checkpoints.restore_latest(target)
  finally:
    checkpoints.close()


def damage(folder) -> None:
  """Overwrites every file under ``folder`` with bytes no reader accepts, as disk corruption or a
  partial copy would leave a checkpoint."""
  for root, _, files in os.walk(folder):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\0garbage")


def leaves(tree) -> list:
  return [jax.device_get(x) for x in jax.tree_util.tree_leaves(tree)]


# What JAX records for each program it lowers to MLIR (each compilation, from the persistent
# cache or not).
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


@contextlib.contextmanager
def lowered_programs():
  """Yields a Counter, filled while the context lasts, of the programs lowered by name:
  ``jit(train_step)`` for the jitted train step, ``jit(_fun)`` for the pmapped one."""
  names = collections.Counter()

  def listen(event, duration, fun_name=None, **kwargs):
    del duration, kwargs
    if event == LOWERING_EVENT:
      names[fun_name] += 1

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
