"""What the benchmarks share: checks of their flags, the machine's description, and child
processes whose last output line is a JSON result (the PyTorch references, a part measured in a
fresh process)."""
import json
import os
import platform
import subprocess
from typing import Optional

import jax
from absl import flags

from gan_jax import parallel
from gan_jax.cli import RunError


def host() -> dict:
  """The machine a figure comes from: CPU model (as /proc/cpuinfo names it, where there is one),
  the cores this process may use, and the JAX version."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return {"cpu": model, "cores": parallel.available_cores(), "jax": jax.__version__}


def check_reference_flags() -> None:
  """Registers checks of ``--torch_python`` (an executable file, when given) and of
  ``--torch_reference`` (an existing file, when ``--torch_python`` is given): a typo then gives
  one error line at parse time instead of a traceback after the first measurement."""
  flags.register_validator(
      "torch_python", lambda path: path is None or (os.path.isfile(path) and
                                                    os.access(path, os.X_OK)),
      message="--torch_python must be an executable file: the python of a virtualenv with "
              "torch==2.13.0")
  flags.register_multi_flags_validator(
      ["torch_python", "torch_reference"],
      lambda values: values["torch_python"] is None or os.path.isfile(values["torch_reference"]),
      message="--torch_reference must be an existing file (the PyTorch reference script)")


def last_json_line(command: list, what: str, env: Optional[dict] = None,
                   cwd: Optional[str] = None) -> dict:
  """Runs ``command`` and returns the JSON object on the last line it printed; RunError with
  the end of its error output if it fails or prints no such line."""
  result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
  if result.returncode:
    tail = " | ".join(result.stderr.strip().splitlines()[-3:])
    raise RunError(f"{what} failed with status {result.returncode}: {tail}")
  last = (result.stdout.strip().splitlines() or [""])[-1]
  try:
    value = json.loads(last)
  except json.JSONDecodeError:
    value = None
  if not isinstance(value, dict):
    raise RunError(f"{what} ({' '.join(command[:2])}) printed no JSON object last, but "
                   f"{last[:200]!r}; is it the right script?")
  return value
