"""Command-line conventions shared by every experiment.

* Flags are generated from a config dataclass (one field = one flag, its help in the field's
  metadata), so a config and its flags cannot drift apart.
* Bad input raises :class:`UsageError` with a message that says what is wrong and what to do; a
  run that has to stop raises :class:`RunError`. :func:`run` prints either as one ``error:`` line
  (after its traceback with ``--verbose``) and exits with status 2 or 1.
"""
import dataclasses
import logging as std_logging
import math
import os
import socket
import sys
import textwrap
import threading
import traceback
import types
import typing
from typing import Any, Callable, Sequence, Type, Union

import jax
from absl import app, flags, logging

from gan_jax import train_step
from gan_jax.errors import RunError, UsageError, first_line  # pylint: disable=unused-import

flags.DEFINE_bool("verbose", False, "Show full tracebacks for errors.")


class _QuietLibraries:
  """Drops INFO lines of libraries that narrate their work (orbax's every save, JAX's backend
  probing); their warnings and errors still show, but orbax's without their tracebacks: a save
  that failed (a full disk, a folder made read-only) is told once, by the run's error line."""
  NARRATORS = ("/orbax/", "/jax/_src/")

  def filter(self, record) -> bool:
    if "/orbax/" in record.pathname:
      record.exc_info, record.exc_text = None, None
    return record.levelno > std_logging.INFO or not any(
        part in record.pathname for part in self.NARRATORS)


def _drop_closed_event_loop_reports(unraisable) -> None:
  """``sys.unraisablehook``: once a restore from a damaged checkpoint has failed, its event loop
  is closed, and each of orbax's reads still under way reports a RuntimeError it cannot raise
  (about 50 tracebacks) after the one warning that names the checkpoint; those are dropped."""
  if not (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed"):
    sys.__unraisablehook__(unraisable)


def _parse_flags(argv):
  """absl's flag parsing, with its errors printed as one line."""
  try:
    return flags.FLAGS(argv)
  except UnicodeDecodeError as e:  # a --flagfile that is not text
    print(f"error: a --flagfile is not text ({e.reason} at byte {e.start})", file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    message = str(e).removeprefix("ERROR:: ")  # absl's prefix for an unreadable --flagfile
    print(f"error: {message} (see --helpshort for the flags)", file=sys.stderr)
    sys.exit(2)


def run(main: Callable) -> None:
  """``absl.app.run(main)``; a UsageError exits with status 2, a RunError with 1, as one line;
  so does running out of host or device memory (1); a Ctrl-C that ``main`` does not handle
  itself with 130 (the shell's status for it), also as one line."""

  def fail(message, status: int) -> None:
    logging.flush()
    if flags.FLAGS.verbose:
      traceback.print_exc()
    else:  # library threads failing after this (orbax's) only repeat it
      sys.excepthook = threading.excepthook = lambda *args: None
    print(f"error: {message}", file=sys.stderr)
    _exit(status)

  def guarded_main(argv):
    logging.get_absl_handler().addFilter(_QuietLibraries())
    sys.unraisablehook = _drop_closed_event_loop_reports
    try:
      unexpected = " ".join(argv[1:])  # a text file given as --flagfile: all of it
      require(len(argv) == 1, f"unexpected arguments {textwrap.shorten(unexpected, 200)}; flags "
              "look like --name=value")
      return main(argv)
    except (UsageError, RunError) as e:
      fail(e, 2 if isinstance(e, UsageError) else 1)
    except (MemoryError, jax.errors.JaxRuntimeError) as e:
      if isinstance(e, jax.errors.JaxRuntimeError) and not is_out_of_memory(e):
        raise
      fail(f"out of memory ({first_line(e)}); lower the batch size, the "
           "model's size or the sample counts (outputs already written are kept)", 1)
    except KeyboardInterrupt:
      logging.flush()
      print("interrupted (Ctrl-C); outputs already written are kept", file=sys.stderr)
      _exit(130)

  app.run(guarded_main, flags_parser=_parse_flags)


def is_out_of_memory(error: Exception) -> bool:
  """Whether a JAX runtime error is an allocation that failed: XLA says RESOURCE_EXHAUSTED where
  it checks a buffer's size first, "Out of memory allocating ..." where it dispatches one."""
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def _exit(status: int) -> None:
  """Exits with ``status``, without waiting for library threads that a failure left stuck
  (orbax's, after a checkpoint write failed, wait for signals that never come)."""
  if any(thread.is_alive() and not thread.daemon and thread is not threading.main_thread()
         for thread in threading.enumerate()):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)


def require(condition: bool, message: str) -> None:
  """Raises ``UsageError(message)`` unless ``condition``."""
  if not condition:
    raise UsageError(message)


def require_positive(config: Any, names: Sequence[str]) -> None:
  """Raises ``UsageError`` naming the first of the ``config`` fields ``names`` that is not > 0."""
  for name in names:
    require(getattr(config, name) > 0, f"--{name} must be positive, got {getattr(config, name)}")


def require_one_of(config: Any, name: str, choices: Sequence[Any]) -> None:
  """Raises ``UsageError`` unless the ``config`` field ``name`` is one of ``choices``."""
  value = getattr(config, name)
  require(value in choices, f"--{name} must be one of {', '.join(map(str, choices))}, got "
          f"{value!r}")


def require_gan_settings(config: Any) -> None:
  """Raises ``UsageError`` naming the first bad setting of those every GAN experiment's config
  has: ``loss``, ``n_critic``, the Adam settings, the penalty weights, ``ema_decay`` and ``seed``
  (with ``num_seeds``, where the config has it)."""
  try:  # the step's own checks: the loss, n_critic, the penalties and the EMA decay
    train_step.StepConfig.of(config)
  except ValueError as e:
    raise UsageError(f"--{e}") from None
  require_positive(config, ("g_learning_rate", "d_learning_rate"))
  for name in ("beta1", "beta2"):
    require(0.0 <= getattr(config, name) < 1.0,
            f"--{name} must be in [0, 1), got {getattr(config, name)}")
  require_seed(config.seed, getattr(config, "num_seeds", 1))


def require_seed(seed: int, runs: int = 1) -> None:
  """Raises ``UsageError`` unless ``--seed`` and the ``runs - 1`` seeds after it (runs seed,
  seed + 1, ...) are 32-bit key seeds."""
  require(0 <= seed and seed + runs <= 2**32, f"--seed must be in [0, {2**32 - runs}]"
          f"{f' with --num_seeds={runs}' if runs > 1 else ''}, got {seed}")


def make_writable_dir(path: Union[str, os.PathLike], flag: str = "--workdir") -> None:
  """Creates the folder ``path`` (``--workdir``, a folder in it, or the folder of the file that
  ``flag`` names) if needed and checks that files can be written in it (UsageError if not). The
  runs write with ordinary file I/O, so a URL (``gs://...``) is refused rather than taken for a
  local folder named ``gs:``."""
  require("://" not in os.fspath(path), f"{flag}={path} is a URL; the run writes its files "
          "with ordinary file I/O: mount the bucket (gcsfuse, say) and pass the mounted path")
  link = os.path.normpath(path)  # without a trailing slash, which would follow the link
  require(not os.path.islink(link) or os.path.exists(link), f"{flag}={path} is a link to "
          f"{os.readlink(link) if os.path.islink(link) else ''}, which does not exist; create "
          "that folder or mend the link")
  try:
    os.makedirs(path, exist_ok=True)
    # one name per host and process: processes of one run may probe a shared folder at once
    probe = os.path.join(path, f".write_probe.{socket.gethostname()}.{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UsageError(f"cannot write to {path!r} ({flag}: {e.strerror}); choose a folder you "
                     "can write to") from None


def require_file_path(path: str, flag: str) -> str:
  """Checks, without touching the disk, that ``flag`` names a file: ``path`` is given and is
  not a folder; UsageError otherwise."""
  require(path, f"{flag} names no file")
  require(not os.path.isdir(path), f"{flag}={path} is a folder; name a file")
  return path


def require_writable_file(path: str, flag: str) -> str:
  """Checks before any work that the file ``flag`` names can be written: ``require_file_path``,
  and its folder is made and writable (``make_writable_dir``); UsageError otherwise."""
  require_file_path(path, flag)
  make_writable_dir(os.path.dirname(path) or ".", flag)
  return path


def field(default: Any, help: str) -> Any:  # pylint: disable=redefined-builtin
  """A config dataclass field with the help text of its flag."""
  return dataclasses.field(default=default, metadata={"help": help})


_DEFINERS = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string,
             bool: flags.DEFINE_bool}


def _flag_type(name: str, annotation) -> type:
  """The flag type of a field annotated ``T``, ``Optional[T]`` or ``T | None``."""
  if typing.get_origin(annotation) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    annotation = args[0] if len(args) == 1 else annotation
  if annotation not in _DEFINERS:
    raise TypeError(f"config field {name!r} is annotated {annotation}; a flag's type must be "
                    "one of int, float, str, bool, optionally with None")
  return annotation


def define_flags(config_class: Type, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines one absl flag per field of ``config_class``, with its default and help."""
  hints = typing.get_type_hints(config_class)
  for f in dataclasses.fields(config_class):
    _DEFINERS[_flag_type(f.name, hints[f.name])](f.name, f.default, f.metadata["help"],
                                                 flag_values=flag_values)


def config_from_flags(config_class: Type, flag_values: flags.FlagValues = flags.FLAGS) -> Any:
  """An instance of ``config_class`` with every field read from its (parsed) flag; UsageError
  for a float flag that is not finite (no setting means inf or nan, and strict JSON, as
  ``config.json`` is written, has neither)."""
  values = {f.name: flag_values[f.name].value for f in dataclasses.fields(config_class)}
  for name, value in values.items():
    require(not isinstance(value, float) or math.isfinite(value),
            f"--{name} must be a finite number, got {value}")
  return config_class(**values)
