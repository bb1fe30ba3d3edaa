"""Stopping cleanly on a signal: SIGTERM (a preempted VM, a scheduler's stop) or a first Ctrl-C."""
import signal


class Preemption:
  """Remembers a SIGTERM or a first Ctrl-C (SIGINT) while installed, so that a training loop can
  save what it has and stop cleanly; ``requested`` is the signal's name. A second Ctrl-C
  interrupts at once."""
  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = None

  def __enter__(self):
    self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested = signal.Signals(signum).name
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
