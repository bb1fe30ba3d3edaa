"""Stopping cleanly on a signal: SIGTERM (a preempted VM, a scheduler's stop) or a first Ctrl-C."""
import contextlib
import os
import signal
import threading
from typing import Optional

from absl import logging

_STOP_READING = b"\0"  # no signal has the number 0


class Preemption:
  """Remembers a SIGTERM or a first Ctrl-C (SIGINT) while installed, so that a training loop can
  save what it has and stop cleanly; ``requested`` is the signal's name. A second Ctrl-C
  interrupts (KeyboardInterrupt) once the computation under way returns. With several
  processes, ``relay`` replaces it with the signal they agreed to stop for (``relayed`` then says
  that another process received it). Enter it in the main thread.

  Python runs signal handlers in the main thread between instructions: only once a step (or
  chunk of steps) under way returns, which can take minutes, and once for all the signals of
  one kind that arrived meanwhile. So that each is acknowledged as it arrives, and a second
  Ctrl-C is not lost in the first, a thread reads the signal numbers that Python's C handler
  writes to a wake-up pipe (``signal.set_wakeup_fd``), logs them, and passes them on to the
  wake-up file an event loop may have set before.
  """
  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None
    self.relayed = False
    self._interrupts = 0  # SIGINTs read from the pipe

  def relay(self, signum: int) -> None:
    """Stops for ``signum``, the signal all processes agreed on, as if this one had received it;
    so all exit with one status."""
    name = signal.Signals(signum).name
    if name != self.requested:
      self.requested, self.relayed = name, True

  def __enter__(self):
    self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
    self._wakeup_read, self._wakeup_write = os.pipe()
    os.set_blocking(self._wakeup_write, False)  # a C signal handler must never block
    self._previous_wakeup = signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
    # an event loop's, not an enclosing Preemption's, which would log each signal again
    outer = {preemption._wakeup_write for preemption in _installed}
    self._forward_to = -1 if self._previous_wakeup in outer else self._previous_wakeup
    _installed.append(self)
    self._reader = threading.Thread(target=self._read_signals, name="signal reader", daemon=True)
    self._reader.start()
    return self

  def _handle(self, signum, frame):
    self.requested, self.relayed = signal.Signals(signum).name, False
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, self._previous[signal.SIGINT])
      if self._interrupts > 1:  # a second Ctrl-C came before this handler ran for the first
        signal.raise_signal(signal.SIGINT)  # for the handler before this one

  def _read_signals(self):
    """Logs each SIGTERM or SIGINT read from the wake-up pipe, until it reads _STOP_READING;
    then closes the pipe's reading end."""
    with os.fdopen(self._wakeup_read, "rb", buffering=0) as pipe:
      while self._pass_on(pipe.read(64)):
        pass

  def _pass_on(self, received: bytes) -> bool:
    """Logs and forwards the signal numbers ``received``; False once they end the reading."""
    if self._forward_to >= 0:
      try:
        os.write(self._forward_to, received.replace(_STOP_READING, b""))
      except OSError:  # full or closed: the signal is not lost, only the loop's wake-up
        pass
    for signum in received:
      if signum == signal.SIGTERM:
        logging.warning("SIGTERM: stopping once the step (or chunk of steps) under way ends")
      elif signum == signal.SIGINT:
        self._interrupts += 1
        if self._interrupts <= 2:
          logging.warning(
              "SIGINT: stopping once the step (or chunk of steps) under way ends; Ctrl-C again "
              "interrupts without saving" if self._interrupts == 1 else
              "SIGINT again: interrupting once the computation under way returns")
    return bool(received) and _STOP_READING not in received

  def __exit__(self, *exc):
    try:  # a second Ctrl-C may interrupt this anywhere: the handlers first
      for signum, handler in self._previous.items():
        signal.signal(signum, handler)
    finally:
      signal.set_wakeup_fd(self._previous_wakeup)
      _installed.remove(self)
      os.write(self._wakeup_write, _STOP_READING)  # the reader closes its end and returns
      os.close(self._wakeup_write)
    self._reader.join()


_installed = []  # the Preemptions entered, innermost last


def _forget_wakeup_in_child() -> None:
  """A process forked while a Preemption is installed would write its own signals to the
  parent's wake-up pipe (a single Ctrl-C to both would read as two): it writes to the file set
  before the first one instead."""
  if _installed:
    with contextlib.suppress(ValueError):  # forked from another thread than the main one
      signal.set_wakeup_fd(_installed[0]._previous_wakeup)  # pylint: disable=protected-access


os.register_at_fork(after_in_child=_forget_wakeup_in_child)


def exit_status(signal_name: Optional[str]) -> int:
  """The shell's status for a run that a signal stopped early (128 + the signal's number), else
  0. Not 0 after a clean stop either: the run did not finish, and a scheduler that restarts
  failed jobs must rerun it to resume."""
  return 0 if signal_name is None else 128 + signal.Signals[signal_name].value
