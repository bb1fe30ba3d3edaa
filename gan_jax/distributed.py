"""Joining a multi-process job (``jax.distributed.initialize``) with one clear error line for
every way it can fail: bad settings, no job to join, a busy coordinator port, or processes that
never all join (where JAX itself would abort with a C++ stack trace).
"""
import contextlib
import errno
import os
import socket
import sys
import threading
from typing import Callable, Optional, Tuple

import jax
from absl import logging

from gan_jax.errors import RunError, UsageError, first_line

# jax.distributed.initialize's own initialization_timeout: how long the processes wait for each
# other (and for the coordinator) before the job fails.
DEFAULT_TIMEOUT_S = 300
# JAX is given this much longer than our deadline: when JAX's passes, XLA aborts the process with
# a C++ stack trace, so ours must come first and say what went wrong in one line.
_JAX_TIMEOUT_MARGIN_S = 30


def _split_address(address: str, source: str) -> Tuple[str, int]:
  """``(host, port)`` of ``HOST:PORT`` (``[IPv6]:PORT`` too); UsageError naming ``source``."""
  host, colon, port = address.rpartition(":")
  try:
    host.strip("[]").encode("idna")  # what the socket layer checks a host name with
  except UnicodeError:
    host = ""
  if not (colon and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
    raise UsageError(f"{source}={address!r} is not HOST:PORT; pass process 0's host and a free "
                     "port on it, e.g. --coordinator_address=10.0.0.1:12345")
  return host, int(port)


def _require_free_port(coordinator_address: str) -> None:
  """UsageError unless process 0 can listen on the port of ``coordinator_address``, on every
  address as JAX's coordinator does (``[::]:PORT``). jaxlib's own failure to start its server
  there is an exception at best and a segmentation fault at worst."""
  port = _split_address(coordinator_address, "--coordinator_address")[1]
  for family, anywhere in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    try:
      with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        if family == socket.AF_INET6:  # both stacks, as gRPC's socket
          probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind((anywhere, port))
      return
    except OSError as e:
      if e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):  # no IPv6 here: try IPv4
        continue
      reason = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be used ({e.strerror})"
      raise UsageError(f"port {port} of --coordinator_address={coordinator_address} {reason} "
                       "on this host, where process 0 runs the coordinator; pick a free port "
                       "(the same one for every process)") from None


def check_settings(coordinator_address: Optional[str], num_processes: Optional[int],
                   process_id: Optional[int], timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
  """UsageError, naming the flag, for settings ``initialize`` would fail on (JAX's
  own checks end in tracebacks, or in an IndexError for an address without a port)."""
  if coordinator_address is not None:
    _split_address(coordinator_address, "--coordinator_address")
  elif "JAX_COORDINATOR_ADDRESS" in os.environ:  # JAX's fallback for the flag, even when empty
    _split_address(os.environ["JAX_COORDINATOR_ADDRESS"], "JAX_COORDINATOR_ADDRESS")
  if num_processes is not None and num_processes < 1:
    raise UsageError(f"--num_processes must be at least 1, got {num_processes}; pass the number "
                     "of processes in the job")
  if process_id is not None and process_id < 0:
    raise UsageError(f"--process_id must be >= 0, got {process_id}; number the processes 0, 1, "
                     "... (process 0 runs the coordinator)")
  if process_id is not None and num_processes is not None and process_id >= num_processes:
    raise UsageError(f"--process_id={process_id} is not below --num_processes={num_processes}; "
                     f"give the processes the ids 0 to {num_processes - 1}, one each")
  if timeout_s < 1:
    raise UsageError(f"--distributed_timeout_s must be positive, got {timeout_s}")
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if (process_id == 0 and coordinator_address is not None
      and not os.environ.get("JAX_COORDINATOR_BIND_ADDRESS")):  # else it binds elsewhere
    _require_free_port(coordinator_address)


def _why_not_joined(coordinator_address: Optional[str], num_processes: Optional[int],
                    timeout_s: int) -> str:
  """The error line for a job that did not gather within ``timeout_s``: whether anything
  answers at the coordinator's address decides which processes are missing."""
  waited = f"within {timeout_s} s (--distributed_timeout_s)"
  if coordinator_address is None:
    return (f"the processes of the multi-process job did not all join {waited}; start every "
            "process of the job, or raise --distributed_timeout_s")
  host, port = _split_address(coordinator_address, "--coordinator_address")
  try:
    socket.create_connection((host.strip("[]"), port), timeout=2).close()
  except OSError as e:  # socket.gaierror (an unknown host) included
    return (f"no coordinator answered at --coordinator_address={coordinator_address} {waited} "
            f"({e.strerror or e}); start process 0 (--process_id=0) with the same address, "
            "which must name process 0's host")
  processes = f"all {num_processes} processes" if num_processes else "all processes"
  return (f"the coordinator at {coordinator_address} is up, but not {processes} joined {waited};"
          " start every --process_id"
          f"{f' from 0 to {num_processes - 1}' if num_processes else ''} with the same "
          "--coordinator_address and --num_processes, or raise --distributed_timeout_s")


@contextlib.contextmanager
def _exit_when_late(seconds: float, message: Callable[[], str]):
  """Runs the ``with`` body; if it has not ended within ``seconds``, prints ``error:
  message()`` (as ``cli.run`` prints an error) and exits with status 1 from a watchdog thread:
  the body is stuck in C++ that Python cannot interrupt, and gives up with a stack trace."""
  done, deciding = threading.Event(), threading.Lock()

  def watch():
    if done.wait(seconds):
      return
    try:
      line = message()
    except Exception:  # pylint: disable=broad-except  # the exit must not be lost to it
      line = f"the job did not gather within {seconds:g} s (--distributed_timeout_s)"
    with deciding:
      if done.is_set():  # the body ended while the message was made: it joined after all
        return
      logging.flush()
      sys.stdout.flush()
      print(f"error: {line}", file=sys.stderr, flush=True)
      os._exit(1)

  threading.Thread(target=watch, name="distributed_timeout", daemon=True).start()
  try:
    yield
  finally:
    with deciding:
      done.set()


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
  """Joins a multi-process job (``jax.distributed.initialize``) before JAX uses any device.

  On Cloud TPU VMs and under SLURM or Open MPI every argument is found automatically; elsewhere
  give the first three. Bad settings, no job to join, or a failed start raise UsageError or
  RunError with one line; when the processes have not all joined within ``timeout_s`` seconds,
  the process prints one ``error:`` line and exits with status 1 (JAX itself would abort with a
  stack trace). CPU devices exchange collectives through gloo (JAX's CPU default has none across
  processes); other platforms are unaffected by that setting.
  """
  check_settings(coordinator_address, num_processes, process_id, timeout_s)
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  where = (f"at {coordinator_address}" if coordinator_address
           else "that the environment describes (Slurm, Open MPI or a TPU pod)")
  who = "".join([f" as process {process_id}" if process_id is not None else "",
                 f" of {num_processes}" if num_processes is not None else ""])
  logging.info("--distributed: joining the job %s%s; waiting up to %d s for all processes to "
               "join (--distributed_timeout_s)", where, who, timeout_s)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    with _exit_when_late(timeout_s, lambda: _why_not_joined(coordinator_address, num_processes,
                                                            timeout_s)):
      jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                 initialization_timeout=timeout_s + _JAX_TIMEOUT_MARGIN_S)
  except ValueError as e:  # e.g. no cluster environment to detect the settings from
    raise UsageError(
        f"--distributed found no job to join ({first_line(e)}); pass --coordinator_address="
        "HOST:PORT (process 0's), --num_processes and --process_id, or run under Slurm, Open "
        "MPI or on a Cloud TPU pod, which provide them") from None
  except RuntimeError as e:  # e.g. the coordinator's port is taken
    raise RunError(
        f"--distributed could not join the job ({first_line(e)}); check that "
        "--coordinator_address names process 0's host and a port free there, and that nothing "
        "used JAX before") from None
