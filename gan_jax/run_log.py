"""What a run reports while it trains: a progress line, ``metrics.jsonl`` and TensorBoard events.

``metrics.jsonl`` has one JSON object per logged step (always with ``step``). When a run resumes
from a checkpoint at step s, rows after s (logged by the interrupted run after its last
checkpoint, and about to be logged again) are dropped first, so the file reads as one run; so are
the TensorBoard events after s. A row cut off by a crash or a full disk is dropped on reading.

Every JSON file is strict JSON (RFC 8259, which has no NaN or Infinity): a non-finite value (the
losses of steps whose updates were skipped, a reverse KL without high-quality samples) is written
as ``null``; ``read_metrics`` (and ``checkpointing``, for checkpoint records) read it back as NaN.
"""
import contextlib
import io
import json
import logging as std_logging
import math
import os
import time
from typing import Dict, Optional, Union

import numpy as np
from absl import logging
from tensorboardX import summary as tensorboard_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog

from gan_jax.errors import RunError, UsageError

# Non-finite metrics are logged on purpose (they are counted and acted on); no warning per value.
std_logging.getLogger("tensorboardX.x2num").setLevel(std_logging.ERROR)

PROGRESS_KEYS = (("d_loss", "d_loss"), ("g_loss", "g_loss"), ("d_real", "D(x)"),
                 ("d_fake", "D(G(z))"))


def _format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _replace_file(path: str, content: Union[str, bytes]) -> None:
  """Writes ``content`` to ``path`` through a temporary file, so that a failed write (a full
  disk) leaves any earlier file whole, and no part of the new one taking space; OSError if it
  fails."""
  try:
    with open(path + ".tmp", "wb" if isinstance(content, bytes) else "w") as f:
      f.write(content)
    os.replace(path + ".tmp", path)
  except OSError:
    with contextlib.suppress(OSError):
      os.remove(path + ".tmp")
    raise


def finite_or_none(value):
  """``value`` with every non-finite float in it (in dicts and lists too) replaced by None."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: finite_or_none(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [finite_or_none(v) for v in value]
  return value


def to_json(data, indent=None) -> str:
  """``data`` as strict JSON text: non-finite floats become null."""
  return json.dumps(finite_or_none(data), indent=indent, allow_nan=False)


def nan_for_null(row: dict) -> dict:
  """A flat row read from strict JSON with its nulls (non-finite values) back as NaN."""
  return {k: math.nan if v is None else v for k, v in row.items()}


def write_file(path: str, content: Union[str, bytes]) -> None:
  """Writes ``content`` to ``path`` whole or not at all (``_replace_file``); the failure is a
  RunError naming the file."""
  try:
    _replace_file(path, content)
  except OSError as e:
    raise RunError(f"could not write {path} ({e}); free space or fix the folder's permissions, "
                   "then run again") from e


def write_json(path: str, data) -> None:
  """Writes ``data`` as indented JSON, whole or not at all (``write_file``)."""
  write_file(path, to_json(data, indent=2))


def write_npy(path: str, array: np.ndarray) -> None:
  """Writes ``array`` as a ``.npy`` file, whole or not at all (``write_file``)."""
  buffer = io.BytesIO()
  np.save(buffer, array)
  write_file(path, buffer.getvalue())


def read_json_object(path: str, what: str, advice: str) -> Optional[dict]:
  """The JSON object in ``path`` (a run's ``what``, e.g. "run's configuration"), or None if there
  is no file; UsageError ending in ``advice`` if it cannot be read as one."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:  # a folder, unreadable, not JSON
    raise UsageError(f"cannot read {path} as a {what} ({e}); {advice}") from None
  if not isinstance(value, dict):
    raise UsageError(f"{path} holds no {what} (a JSON object); {advice}")
  return value


def read_metrics(workdir: str) -> list:
  """The rows of ``workdir/metrics.jsonl`` (empty if there is none; null values as NaN), without
  a last row cut off by a crash or a full disk."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  rows = []
  for number, line in enumerate(lines, 1):
    try:
      rows.append(nan_for_null(json.loads(line)))
    except json.JSONDecodeError:
      if number < len(lines):
        raise UsageError(f"line {number} of {path} is not JSON; repair or delete the "
                         "line") from None
      logging.warning("dropping the cut-off last row of %s", path)
  return rows


class IntervalMeans:
  """Per-step metrics gathered between two rows: each row holds their means since the previous
  row, not one step's values. A metric is averaged over the steps where it was finite (NaN if it
  never was); ``nonfinite``, always finite, becomes the skipped updates per step.

  ``state()`` is plain JSON (floats round-trip exactly), for a checkpoint's record: a run resumed
  from it logs the rows an uninterrupted run would.
  """
  def __init__(self, state: Optional[dict] = None):
    state = state or {"sums": {}, "finite_steps": {}}
    self._sums, self._finite_steps = dict(state["sums"]), dict(state["finite_steps"])

  def add(self, metrics: Dict[str, float]) -> None:
    """Adds one step's metrics."""
    for name, value in metrics.items():
      counted = math.isfinite(value)
      self._sums[name] = self._sums.get(name, 0.0) + (float(value) if counted else 0.0)
      self._finite_steps[name] = self._finite_steps.get(name, 0) + int(counted)

  def means(self) -> Dict[str, float]:
    """The row of the interval so far."""
    return {name: total / self._finite_steps[name] if self._finite_steps[name] else math.nan
            for name, total in self._sums.items()}

  def reset(self) -> None:
    """Starts the next interval."""
    self._sums, self._finite_steps = {}, {}

  def state(self) -> dict:
    return {"sums": dict(self._sums), "finite_steps": dict(self._finite_steps)}


class RunLog:
  """Appends metrics rows, writes TensorBoard events and logs progress with steps/s and ETA.

  Args:
    workdir: the run's folder.
    start_step: the step the run starts (or resumes) from.
    num_steps: the step it will stop at, for the ETA.
    write: False in every process of a multi-process run but the first: it then only measures.
    after_failure: what the error of a failed write (a full disk) tells the user to do.
  """

  def __init__(self, workdir: str, start_step: int, num_steps: int, write: bool = True,
               after_failure: str = "free space and run the command again in a new --workdir"):
    self.num_steps, self.write_files, self._after_failure = num_steps, write, after_failure
    self._last_time, self._last_step = time.time(), start_step
    if write:
      self._path = os.path.join(workdir, "metrics.jsonl")
      self._events_path = os.path.join(workdir, "tensorboard")
      kept = [row for row in read_metrics(workdir) if row["step"] <= start_step]
      with self._appending(self._path):
        _replace_file(self._path, "".join(to_json(row) + "\n" for row in kept))
        self._file = open(self._path, "a")
      with self._appending(self._events_path):
        # The suffix keeps a restart within the same second from overwriting the earlier file.
        self._tensorboard = TensorBoardFile(self._events_path, purge_step=start_step + 1,
                                            suffix=f".{os.getpid()}.{start_step}")

  @contextlib.contextmanager
  def _appending(self, path: str):
    try:
      yield
    except OSError as e:
      raise RunError(f"could not write {path} ({e}); {self._after_failure}") from e

  def write(self, step: int, scalars: Dict[str, float]) -> None:
    """One metrics row and its TensorBoard scalars."""
    if not self.write_files:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with self._appending(self._path):
      self._file.write(to_json(row) + "\n")
      self._file.flush()
    with self._appending(self._events_path):
      for name, value in scalars.items():
        self._tensorboard.add(step, tensorboard_summary.scalar(name, float(value)))
      self._tensorboard.flush()

  def restart_clock(self, step: int) -> None:
    """Measures the next rate from ``step`` on, now: called once the first step has compiled,
    so that the compilation does not count as training time in the rate and the ETA."""
    self._last_time, self._last_step = time.time(), step

  @contextlib.contextmanager
  def off_the_clock(self):
    """Work between steps (sample grids, checkpoints, evaluations) that the next steps/s and ETA
    leave out: they measure the training steps."""
    start = time.time()
    try:
      yield
    finally:
      self._last_time += time.time() - start

  def progress(self, step: int, metrics: Dict[str, float]) -> float:
    """Logs a progress line for ``step`` and returns the steps/s since the previous one (NaN
    when no step has been timed yet)."""
    now = time.time()
    rate = ((step - self._last_step) / max(now - self._last_time, 1e-9)
            if step > self._last_step else float("nan"))
    self._last_time, self._last_step = now, step
    eta = (self.num_steps - step) / rate if rate > 0 else float("inf")
    values = " ".join(f"{label} {metrics[key]:.3f}" for key, label in PROGRESS_KEYS
                      if key in metrics)
    if self.write_files:
      logging.info("step %d/%d (%d%%) | %s steps/s | ETA %s | %s", step, self.num_steps,
                   100 * step // max(self.num_steps, 1),
                   f"{rate:.2f}" if np.isfinite(rate) else "?",
                   _format_duration(eta) if np.isfinite(eta) else "?", values)
    return rate

  def image(self, step: int, name: str, picture: np.ndarray) -> None:
    """A uint8 picture ``(H, W, C)`` as a TensorBoard image."""
    if self.write_files:
      with self._appending(self._events_path):
        self._tensorboard.add(step, tensorboard_summary.image(name, picture, dataformats="HWC"))
        self._tensorboard.flush()

  def close(self) -> None:
    if self.write_files:
      with self._appending(self._path):
        self._file.close()
      with self._appending(self._events_path):
        self._tensorboard.close()


class TensorBoardFile:
  """An event file of TensorBoard, written in the calling thread, so that a failed write (a full
  disk) raises there. (tensorboardX's ``SummaryWriter`` writes from a thread of its own, which
  dies on a full disk; its next writes then wait for it forever.)

  Args:
    folder: where the file goes (created if missing).
    purge_step: TensorBoard drops the events of this step and later ones from earlier files (an
      interrupted attempt's, which a resumed run logs again).
    suffix: the end of the file's name.
  """

  def __init__(self, folder: str, purge_step: int, suffix: str):
    os.makedirs(folder, exist_ok=True)
    self._events = EventsWriter(os.path.join(folder, "events"), suffix)
    self.add(purge_step, session_log=SessionLog(status=SessionLog.START))

  def add(self, step: int, summary=None, **fields) -> None:
    """One event of ``step``: a tensorboardX ``summary``, or other fields of ``Event``."""
    self._events.write_event(Event(wall_time=time.time(), step=step, summary=summary, **fields))

  def flush(self) -> None:
    self._events.flush()

  def close(self) -> None:
    self._events.close()
