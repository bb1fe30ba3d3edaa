"""The progress line's rate and ETA, on a fake clock; the means of a row's interval; the metrics
file of a resumed run, of a cut-off write and of a full disk; TensorBoard's purge of a resumed
run's old steps."""
import errno
import json
import math
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from gan_jax import run_log
from gan_jax.cli import RunError, UsageError


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def test_rate_and_eta_leave_out_the_compilation_and_the_work_between_steps(tmp_path, monkeypatch):
  clock = FakeClock()
  monkeypatch.setattr(run_log.time, "time", clock)
  log = run_log.RunLog(str(tmp_path), start_step=0, num_steps=101)
  clock.now += 30.0  # the first step compiles
  log.restart_clock(1)
  assert math.isnan(log.progress(1, {}))  # nothing timed yet
  clock.now += 10.0
  assert log.progress(51, {"d_loss": 1.0}) == 5.0  # 50 steps in 10 s, not 51 in 40 s
  clock.now += 4.0  # 20 steps
  with log.off_the_clock():
    clock.now += 60.0  # a sample grid, a checkpoint, an evaluation
  clock.now += 6.0  # 30 more steps
  assert log.progress(101, {}) == 5.0  # 50 steps in 10 s of training, not in 70 s
  log.close()


def test_interval_means_average_finite_values_and_resume_exactly_through_json():
  rng = np.random.default_rng(0)
  steps = [{"d_loss": float(x), "g_loss": float(y), "nonfinite": 0.0}
           for x, y in rng.normal(size=(7, 2))]
  steps[2].update(d_loss=math.nan, g_loss=math.inf, nonfinite=2.0)  # a step with skipped updates
  steps[4].update(g_loss=math.nan, nonfinite=1.0)
  straight = run_log.IntervalMeans()
  for metrics in steps:
    straight.add(metrics)
  means = straight.means()
  d_losses = [m["d_loss"] for m in steps if math.isfinite(m["d_loss"])]
  g_losses = [m["g_loss"] for m in steps if math.isfinite(m["g_loss"])]
  assert len(d_losses) == 6 and len(g_losses) == 5
  np.testing.assert_allclose([means["d_loss"], means["g_loss"]],
                             [np.mean(d_losses, dtype=np.float64), np.mean(g_losses)], rtol=1e-15)
  assert means["nonfinite"] == 3 / 7  # skipped updates per step
  # Stopped after 3 steps: the state goes through a checkpoint record (strict JSON) and back.
  first = run_log.IntervalMeans()
  for metrics in steps[:3]:
    first.add(metrics)
  resumed = run_log.IntervalMeans(json.loads(run_log.to_json(first.state())))
  for metrics in steps[3:]:
    resumed.add(metrics)
  assert resumed.means() == means  # bitwise: the same sums in the same order
  resumed.reset()
  resumed.add({"d_loss": math.nan, "nonfinite": 1.0})
  assert math.isnan(resumed.means()["d_loss"]) and resumed.means()["nonfinite"] == 1.0


def log_6_steps_then_resume_at_4(workdir) -> None:
  """Rows of steps 2, 4 and 6, then a run resumed from a checkpoint at 4 that logs 6 again."""
  log = run_log.RunLog(str(workdir), 0, 10)
  for step in (2, 4, 6):
    log.write(step, {"d_loss": float(step)})
  log.close()
  resumed = run_log.RunLog(str(workdir), start_step=4, num_steps=10)
  resumed.write(6, {"d_loss": 60.0})
  resumed.close()


def test_a_resume_drops_the_rows_after_its_checkpoint(tmp_path):
  log_6_steps_then_resume_at_4(tmp_path)
  assert [(r["step"], r["d_loss"]) for r in run_log.read_metrics(str(tmp_path))] == \
      [(2, 2.0), (4, 4.0), (6, 60.0)]


def test_a_row_cut_off_by_a_crash_is_dropped_and_a_bad_row_before_the_end_is_an_error(tmp_path):
  rows = [{"step": 1, "d_loss": 1.0}, {"step": 2, "d_loss": 2.0}]
  text = "".join(json.dumps(row) + "\n" for row in rows)
  (tmp_path / "metrics.jsonl").write_text(text + '{"step": 3, "d_lo')
  assert run_log.read_metrics(str(tmp_path)) == rows
  resumed = run_log.RunLog(str(tmp_path), start_step=2, num_steps=4)  # the resume works
  resumed.write(3, {"d_loss": 3.0})
  resumed.close()
  assert [row["step"] for row in run_log.read_metrics(str(tmp_path))] == [1, 2, 3]
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "d_lo\n' + text)
  with pytest.raises(UsageError, match="line 1 of .*metrics.jsonl is not JSON"):
    run_log.read_metrics(str(tmp_path))


def test_a_failed_write_keeps_the_earlier_file_and_leaves_no_part_of_the_new_one(tmp_path,
                                                                                  monkeypatch):
  """A disk that fills up part way through a write: the earlier file stays whole, and the
  partly written temporary file is removed (it took the space a rerun needs)."""
  path = tmp_path / "final_samples.npy"
  run_log.write_file(str(path), b"earlier")

  class FillingUp:
    """A file that takes 3 bytes, then finds the disk full."""
    def __init__(self, name, mode):
      self.file = open(name, mode)

    def __enter__(self):
      return self

    def __exit__(self, *error):
      self.file.close()

    def write(self, content):
      self.file.write(content[:3])
      self.file.flush()
      raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(run_log, "open", FillingUp, raising=False)
  with pytest.raises(RunError, match="could not write .*final_samples.npy .*No space left"):
    run_log.write_file(str(path), b"the new content")
  assert path.read_bytes() == b"earlier"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["final_samples.npy"]


def test_a_full_disk_while_logging_is_a_run_error_saying_what_to_do(tmp_path):
  log = run_log.RunLog(str(tmp_path), 0, 10, after_failure="resume as the trainer says")

  class FullDisk:
    def write(self, text):
      raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
      pass

  log._file = FullDisk()
  with pytest.raises(RunError, match=r"could not write .*metrics.jsonl \(.*No space left on "
                                     r"device\); resume as the trainer says$"):
    log.write(1, {"d_loss": 1.0})
  log.close()


def test_a_full_disk_under_the_tensorboard_events_is_a_run_error_not_a_hang(tmp_path,
                                                                            monkeypatch):
  """tensorboardX's own writer thread died on a full disk, and the next writes waited for it
  forever; the events are written in the caller's thread, which gets the error."""
  log = run_log.RunLog(str(tmp_path), 0, 10, after_failure="resume as the trainer says")
  log.write(1, {"d_loss": 1.0})

  def full_disk(*args):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(log._tensorboard._events, "write_event", full_disk)
  for _ in range(20):  # more than tensorboardX's queue of 10
    with pytest.raises(RunError, match=r"could not write .*tensorboard \(.*No space left on "
                                       r"device\); resume as the trainer says$"):
      log.write(2, {f"metric_{i}": 1.0 for i in range(3)})
  assert [row["step"] for row in run_log.read_metrics(str(tmp_path))] == [1] + [2] * 20
  monkeypatch.undo()
  log.close()


def test_write_json_keeps_the_old_file_when_the_write_fails(tmp_path):
  path = tmp_path / "config.json"
  run_log.write_json(str(path), {"a": 1})
  assert json.loads(path.read_text()) == {"a": 1}
  (tmp_path / "config.json.tmp").mkdir()  # the temporary file cannot be opened
  with pytest.raises(RunError, match="could not write .*config.json"):
    run_log.write_json(str(path), {"a": 2})
  assert json.loads(path.read_text()) == {"a": 1}


def read_events(folder) -> list:
  """Every event of the TensorBoard files in ``folder`` (records: 8-byte length, 4-byte CRC, the
  event, 4-byte CRC)."""
  events = []
  for path in sorted(folder.iterdir()):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
      offset += 12 + length + 4
  return events


def test_each_start_tells_tensorboard_to_purge_the_steps_after_it(tmp_path):
  """A fresh start purges from step 1 (an attempt that died before its first checkpoint), a
  resume from step 4 from step 5: TensorBoard then drops the earlier events of those steps."""
  log_6_steps_then_resume_at_4(tmp_path)
  starts = [e.step for e in read_events(tmp_path / "tensorboard")
            if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
  assert starts == [1, 5]
