"""Stopping cleanly on a signal: SIGTERM (a preempted VM, a scheduler's stop) or a first Ctrl-C."""
import os
import signal
import threading
from typing import Optional

from absl import logging


class Preemption:
  """Remembers a SIGTERM or a first Ctrl-C (SIGINT) while installed, so that a training loop can
  save what it has and stop cleanly; ``requested`` is the signal's name. A second Ctrl-C
  interrupts (KeyboardInterrupt) once the computation under way returns. With several
  processes, ``relay`` replaces it with the signal they agreed to stop for (``relayed`` then says
  that another process received it).

  Each signal is acknowledged in a log line as it arrives. Python runs handlers in the main
  thread between instructions, so only once a step (or chunk of steps) under way returns,
  which can take minutes; the line comes from a thread that reads the signal numbers Python's C
  handler writes to a wake-up pipe (``signal.set_wakeup_fd``) at once. Enter it in the main
  thread."""
  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None
    self.relayed = False

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
    self._acknowledger = threading.Thread(target=self._acknowledge, name="signal acknowledger",
                                          daemon=True)
    self._acknowledger.start()
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested, self.relayed = signal.Signals(signum).name, False
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

  def _acknowledge(self):
    """Logs each SIGTERM or SIGINT read from the wake-up pipe, until the pipe closes."""
    interrupts = 0
    while received := os.read(self._wakeup_read, 64):
      for signum in received:
        if signum == signal.SIGTERM:
          logging.warning("SIGTERM: stopping once the step (or chunk of steps) under way ends")
        elif signum == signal.SIGINT:
          interrupts += 1
          logging.warning(
              "SIGINT: stopping once the step (or chunk of steps) under way ends; Ctrl-C again "
              "interrupts without saving" if interrupts == 1 else
              "SIGINT again: interrupting once the computation under way returns")

  def __exit__(self, *exc):
    signal.set_wakeup_fd(self._previous_wakeup)
    os.close(self._wakeup_write)  # the acknowledger reads the end of the pipe and returns
    self._acknowledger.join()
    os.close(self._wakeup_read)
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def exit_status(signal_name: Optional[str]) -> int:
  """The shell's status for a run that a signal stopped early (128 + the signal's number), else
  0. Not 0 after a clean stop either: the run did not finish, and a scheduler that restarts
  failed jobs must rerun it to resume."""
  return 0 if signal_name is None else 128 + signal.Signals[signal_name].value
