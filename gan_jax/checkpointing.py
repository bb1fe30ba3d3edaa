"""Checkpoints of a run: orbax ``CheckpointManager`` over ``workdir/checkpoints/<step>/``.

Each checkpoint holds the whole ``GANState`` (params, optimizer states, batch statistics, EMA,
step, root key) and a small JSON record with the data iterator position, so a resumed run repeats
exactly what the interrupted one would have done. Orbax writes each step into a temporary folder
and renames it when complete, so a crash mid-save never leaves a half checkpoint behind.
A checkpoint that still cannot be read (damaged or missing files, a partial copy) is moved
aside to ``workdir/unreadable_checkpoints/`` with one log line once an older one is read, and
the run resumes from that; when none can be read, or a read fails for a reason outside the
checkpoint (memory, permissions, an I/O error of the mount), nothing is moved and the restore
stops with a ``RunError``. Nothing is deleted but the oldest of the run's own checkpoints beyond
``max_to_keep`` and those that ``replace`` replaces (the single slot of a run's best
checkpoint). A readable checkpoint of another model (arrays of other names or shapes) is not
corrupt: it is left in place and the restore stops with a ``UsageError``. A ``read_only``
checkpointer (an evaluation of someone's run) changes nothing on disk: it skips an unreadable
checkpoint and leaves it where it is.
"""
import contextlib
import errno
import os
import re
import shutil
from typing import Any, Optional, Tuple

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from gan_jax import parallel, run_log
from gan_jax.errors import RunError, UsageError, first_line

# How tensorstore, which writes the arrays, reports a full disk or a folder it may not write to:
# as a ValueError carrying the status code.
_STORAGE_ERRORS = ("RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "No space left on device")
_METADATA_BYTES = 2**20  # what orbax writes besides the arrays, generously

PyTree = Any


class Checkpointer:
  """Saves and restores ``(state, record)`` pairs by step under ``directory``.

  Args:
    directory: where the numbered step folders live (created if missing, unless ``read_only``).
    max_to_keep: how many of the newest checkpoints to keep (None: all).
    read_only: only restore; nothing under ``directory`` is created, moved or deleted.
  """

  def __init__(self, directory: str, max_to_keep: Optional[int] = 3, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    # Several managers (checkpoints/, best/) may save at once: with several processes their
    # barriers must not share keys, or one manager's processes meet at the other's.
    multiprocessing = ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix=os.path.basename(self.directory))
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only,
            multiprocessing_options=multiprocessing),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "record": ocp.JsonCheckpointHandler()})

  def all_steps(self) -> list:
    """The saved steps, oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    """The newest saved step, or None if there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: PyTree, record: dict, wait: bool = False) -> None:
    """Starts saving ``state`` and the JSON-able ``record`` as ``step`` (in the background unless
    ``wait``, which also waits for a save of ``step`` already under way); a step that is already
    saved is left as it is. ValueError for a step older than the newest saved one (orbax would
    skip it without a word; see ``replace``)."""
    self._check_writable()
    steps = self.all_steps()
    if step not in steps:
      if steps and step < steps[-1]:
        raise ValueError(f"step {step} is older than the newest checkpoint in "
                         f"{self.directory}, {steps[-1]}")
      self._start_save(step, state, record)
    if wait:
      self.wait()

  def replace(self, step: int, state: PyTree, record: dict) -> None:
    """Makes ``(state, record)`` at ``step`` the only checkpoint, whatever the steps already
    there (a run's best, which a resumed run may find at an earlier step than the one kept).
    The new one is written before the others are deleted, except when it has their step."""
    self._check_writable()
    if step in self.all_steps():
      self._manager.delete(step)
    self._start_save(step, state, record, force=True)  # force: orbax skips older steps
    self.wait()
    for old in self.all_steps():
      if old != step:
        self._manager.delete(old)

  def _check_writable(self) -> None:
    if self.read_only:
      raise ValueError(f"{self.directory} was opened read-only")

  def _start_save(self, step: int, state: PyTree, record: dict, force: bool = False) -> None:
    with self._writing(step):  # also raises what an earlier background save ran into
      # A disk that fills during orbax's background write fails noisily in its threads: check
      # first that the arrays fit, with room for orbax's metadata.
      needed = sum(getattr(leaf, "nbytes", 8) for leaf in jax.tree_util.tree_leaves(state))
      free = shutil.disk_usage(self.directory).free
      if jax.process_count() > 1:  # the least on any process: one saving alone would hang
        mib = multihost_utils.process_allgather(np.float32(free / 2**20))
        free = float(np.min(mib)) * 2**20
      required = 1.1 * needed + _METADATA_BYTES
      if free < required:
        raise OSError(errno.ENOSPC, f"No space left on device: the checkpoint needs about "
                      f"{required / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free")
      strict = run_log.finite_or_none(record)  # orbax would write NaN and Infinity
      self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       record=ocp.args.JsonSave(strict)),
                         force=force)

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    with self._writing(None):
      self._manager.wait_until_finished()

  @contextlib.contextmanager
  def _writing(self, step: Optional[int]):
    """Turns a failed write (a full disk, a folder made read-only) into a RunError that says
    which checkpoints are intact."""
    try:
      yield
    except (OSError, ValueError) as e:
      if not isinstance(e, OSError) and not any(code in str(e) for code in _STORAGE_ERRORS):
        raise
      intact = [s for s in self.all_steps() if step is None or s < step]
      reason = (str(e).strip() or type(e).__name__).splitlines()[0]
      if len(reason) > 200:  # tensorstore's: the status, paths, then the cause at the end
        reason = f"{reason[:90]} ... {reason[-90:]}"
      newest = intact[-1] if intact else "none"
      raise RunError(f"could not write a checkpoint to {self.directory} ({reason}); the "
                     f"checkpoints on disk are intact (the newest: {newest}); free space or fix "
                     "the folder's permissions and run the same command to resume") from e

  def restore_latest(self, target: PyTree) -> Optional[Tuple[int, PyTree, dict]]:
    """The newest readable checkpoint as ``(step, state, record)``, or None if there is none.

    Args:
      target: a state with the structure, shapes and dtypes to restore into.

    Raises:
      UsageError: if the newest readable checkpoint holds arrays of other names or shapes than
        ``target`` (another model or optimizer); it is left where it is.
      RunError: if checkpoints exist and none can be read (unless ``read_only``: None), or a
        read failed for a reason outside the checkpoint (``_outside_the_checkpoint``); nothing
        is moved.
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    unreadable = []  # (step, reason), newest first: set aside once an older one is read
    for step in reversed(self.all_steps()):
      error = None
      try:
        stored = _leaf_shapes(self._manager.item_metadata(step)["state"].tree)
        other_model = stored != _leaf_shapes(flax.serialization.to_state_dict(abstract))
        if not other_model:
          restored = self._manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
      except Exception as e:  # any failure to read means: try the previous checkpoint
        error = e
      # Several processes agree, so that all restore one step: a checkpoint that one of them
      # cannot read (a damaged file, a flaky mount) is skipped by all, and set aside by one.
      if parallel.any_process(error is not None):
        reason = (f"{type(error).__name__}: {first_line(error, 200)}" if error is not None
                  else "another process could not read it")
        if parallel.any_process(error is not None and _outside_the_checkpoint(error)):
          way_out = ("" if self.read_only else f" (if it persists, move {step} out of the "
                     "folder to resume from the one before)")
          raise RunError(f"could not read checkpoint {step} in {self.directory} ({reason}): the "
                         "file system or the memory failed, not (as far as can be told) the "
                         f"checkpoint; nothing was moved: fix that and run the same command"
                         f"{way_out}")
        unreadable.append((step, reason))
        continue
      if other_model:
        raise UsageError(f"checkpoint {step} in {self.directory} holds another model than the "
                         f"flags build (its arrays have other names or shapes); use the flags "
                         f"and the gan_jax version it was trained with, or a new --workdir")
      self._set_aside(unreadable)
      return step, restored.state, run_log.nan_for_null(restored.record)
    if unreadable and not self.read_only:  # a run would start again from step 0: the user's
      # decision (a read-only reader, which moves nothing anyway, reports None)
      newest, reason = unreadable[0]
      raise RunError(f"none of the {len(unreadable)} checkpoint(s) in {self.directory} can be "
                     f"read (the newest, {newest}: {reason}); nothing was moved. If they are "
                     "damaged, use a new --workdir to train again from step 0")
    self._set_aside(unreadable)  # read-only: each named, left in place
    return None

  def _set_aside(self, unreadable) -> None:
    """Moves the checkpoints ``(step, reason)`` that could not be read to
    ``unreadable_checkpoints/`` (process 0; a read-only checkpointer leaves them), with a log
    line each: the run's next saves must not meet them."""
    for step, reason in unreadable:
      where = ("left it in place" if self.read_only
               else f"moved it to {self._move_aside(step)}" if jax.process_index() == 0
               else "process 0 moves it aside")
      logging.warning("checkpoint %d is unreadable (%s); %s", step, reason, where)
    if unreadable and not self.read_only and jax.process_count() > 1:  # all forget them
      multihost_utils.sync_global_devices("gan_jax: unreadable checkpoints moved aside")
      self._manager.reload()

  def latest_record(self) -> Optional[Tuple[int, dict]]:
    """``(step, record)`` of the newest checkpoint whose record is readable, without its state;
    None if there is none."""
    for step in reversed(self.all_steps()):
      try:
        return step, run_log.nan_for_null(self._manager.restore(step, args=ocp.args.Composite(
            record=ocp.args.JsonRestore())).record)
      except Exception as e:  # as restore_latest: an unreadable one is skipped (here, kept)
        logging.warning("the record of checkpoint %d is unreadable (%s); trying the previous one",
                        step, type(e).__name__)
    return None

  def _move_aside(self, step: int) -> str:
    aside = os.path.join(os.path.dirname(self.directory), "unreadable_checkpoints", str(step))
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    if os.path.exists(aside):
      aside = f"{aside}.{len(os.listdir(os.path.dirname(aside)))}"
    shutil.move(os.path.join(self.directory, str(step)), aside)
    self._manager.reload()
    return aside

  def close(self) -> None:
    self.wait()
    self._manager.close()


def _outside_the_checkpoint(error: Exception) -> bool:
  """Whether a failure to read a checkpoint comes from its surroundings (memory, permissions,
  an I/O error or stale handle of a network mount), not from damaged or missing files: a
  checkpoint set aside for it would be lost to a run that starts again from an older one."""
  not_there = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)  # missing files: the checkpoint's
  if isinstance(error, OSError):
    return error.errno not in not_there
  # tensorstore's: "<status>: ... [os_error_code='116']" (ESTALE shows as ABORTED, EIO UNKNOWN)
  code = re.search(r"os_error_code='(\d+)'", str(error))
  if code:
    return int(code.group(1)) not in not_there
  return isinstance(error, MemoryError) or any(
      status in str(error) for status in _STORAGE_ERRORS + ("UNAVAILABLE", "DEADLINE_EXCEEDED",
                                                             "ABORTED"))


def saved_steps(directory: str) -> list:
  """The steps of the complete checkpoints in ``directory``, without opening a manager."""
  return sorted(ocp.utils.checkpoint_steps(directory))


def _leaf_shapes(tree: PyTree) -> dict:
  """``{path: shape}`` of a tree's leaves (arrays, shape-dtype structs or orbax metadata), each
  path the tuple of its keys as strings: for orbax's metadata as for flax's state dict of the
  tree it saved. A renamed layer of the same shapes is another model too."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {tuple(str(getattr(key, "key", getattr(key, "idx", key))) for key in path):
          tuple(getattr(leaf, "shape", np.shape(leaf))) for path, leaf in leaves}
