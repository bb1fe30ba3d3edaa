"""Helpers for tests that run the DCGAN experiment, in this process or as a command."""
import os
import subprocess
import sys
from typing import Sequence

import jax
from absl import flags

from gan_jax import checkpointing, cli, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")


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


def start_command(workdir, args: Sequence[str]) -> subprocess.Popen:
  return subprocess.Popen(command(workdir, args), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def latest_checkpoint(workdir, config: trainer.TrainConfig):
  """``(step, state, record)`` of the newest readable checkpoint in ``workdir``."""
  target = trainer.initial_state(config, *trainer.build_models(config, None))
  checkpoints = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return checkpoints.restore_latest(target)
  finally:
    checkpoints.close()


def leaves(tree) -> list:
  return [jax.device_get(x) for x in jax.tree_util.tree_leaves(tree)]
