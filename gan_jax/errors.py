"""The two errors a command reports as one ``error:`` line (``gan_jax.cli.run``), and the helper
that quotes a cause in such a line.

They live apart from ``gan_jax.cli`` so that library modules can raise them without importing
the command-line layer (which defines absl flags on import).
"""


class UsageError(Exception):
  """An error in the user's input (flags, data, workdir) that the user can fix."""


class RunError(Exception):
  """A run that cannot go on (e.g. diverged); the message says what was kept and what to try."""


def first_line(error: BaseException, limit: int = 160) -> str:
  """The first line of ``error``'s message, at most ``limit`` characters: the cause that an
  ``error:`` line can quote."""
  return (str(error).strip().splitlines() or [""])[0][:limit]
