"""Stopping cleanly on a signal: SIGTERM (a preempted VM, a scheduler's stop) or a first Ctrl-C."""
import signal
from typing import Optional


class Preemption:
  """Remembers a SIGTERM or a first Ctrl-C (SIGINT) while installed, so that a training loop can
  save what it has and stop cleanly; ``requested`` is the signal's name. A second Ctrl-C
  interrupts at once. With several processes, ``relay`` replaces it with the signal they agreed
  to stop for (``relayed`` then says that another process received it)."""
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
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested, self.relayed = signal.Signals(signum).name, False
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def exit_status(signal_name: Optional[str]) -> int:
  """The shell's status for a run that a signal stopped early (128 + the signal's number), else
  0. Not 0 after a clean stop either: the run did not finish, and a scheduler that restarts
  failed jobs must rerun it to resume."""
  return 0 if signal_name is None else 128 + signal.Signals[signal_name].value
