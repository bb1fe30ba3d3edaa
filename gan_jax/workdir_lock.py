"""One run at a time per workdir: an exclusive lock (``flock``) on ``workdir/.lock``.

Two runs on one workdir (a command launched twice, a job restarted while its old process lives)
would destroy each other's work: orbax deletes a checkpoint folder of a step it does not know
before it writes its own, and the metrics would interleave. The operating system releases the
lock when its process ends, however it ends, so a rerun after a crash or a kill is never refused.
On a file system without ``flock`` (some network mounts) the run goes on unlocked, with a
warning.
"""
import contextlib
import errno
import fcntl
import os
import socket
from typing import Iterator

from absl import logging

from gan_jax.errors import UsageError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds the lock of the existing folder ``workdir`` for the block; UsageError, naming the
  process that holds it, if another one does."""
  path = os.path.join(workdir, LOCK_FILE)
  try:
    lock = open(path, "a+")
  except OSError as e:
    raise UsageError(f"cannot open {path}, the lock that keeps other runs out of --workdir "
                     f"({e.strerror}); remove whatever is there") from None
  with lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):  # no flock here: ENOLCK, EOPNOTSUPP
        logging.warning("cannot lock %s (%s): nothing keeps a second run out of this workdir",
                        path, e.strerror)
      else:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        raise UsageError(f"--workdir={workdir} is in use by another run ({holder}); wait for it "
                         "to end or stop it, or use a new --workdir") from None
    else:
      lock.seek(0)
      lock.truncate()
      lock.write(f"process {os.getpid()} on {socket.gethostname()}\n")
      lock.flush()
    yield
