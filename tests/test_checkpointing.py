"""Checkpoints: a failed write names what is intact; a read-only restore changes nothing; an older
step is refused by save and taken by replace."""
import errno

import numpy as np
import pytest

from gan_jax import checkpointing
from gan_jax.cli import RunError, UsageError
from tests import dcgan_runs

STATE = {"w": np.ones(3, np.float32)}


def tree_contents(root) -> dict:
  """Every path under ``root``, with the bytes of each file (None for a folder)."""
  return {str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
          for path in root.rglob("*")}


def test_a_failed_checkpoint_write_is_one_run_error_naming_what_is_intact(tmp_path, monkeypatch):
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
  checkpoints.save(1, STATE, {"data_position": 1}, wait=True)

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(checkpoints._manager, "save", full_disk)
  with pytest.raises(RunError, match=r"could not write a checkpoint .*No space left on device.*"
                                     r"\(the newest: 1\)"):
    checkpoints.save(2, STATE, {"data_position": 2})
  assert checkpoints.all_steps() == [1]
  checkpoints.close()


def test_a_checkpoint_that_would_not_fit_is_refused_before_orbax_writes_anything(tmp_path,
                                                                                 monkeypatch):
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
  state = {"w": np.ones(2**20, np.float32)}  # 4 MiB
  checkpoints.save(1, state, {"data_position": 1}, wait=True)
  usage = checkpointing.shutil.disk_usage(tmp_path)
  monkeypatch.setattr(checkpointing.shutil, "disk_usage",
                      lambda path: usage._replace(free=5 * 2**20))
  monkeypatch.setattr(checkpoints._manager, "save", lambda *args, **kwargs: pytest.fail("wrote"))
  with pytest.raises(RunError, match=r"No space left on device: the checkpoint needs about 5\.4 "
                                     r"MiB and 5\.0 MiB are free\); .*\(the newest: 1\)"):
    checkpoints.save(2, state, {"data_position": 2})
  monkeypatch.undo()
  assert checkpoints.all_steps() == [1]
  checkpoints.close()


@pytest.mark.parametrize("error, is_storage", [
    (ValueError('RESOURCE_EXHAUSTED: Error writing "state/w" in OCDBT database at local file '
                '"x": No space left on device\n(and a long tensorstore trace)'), True),
    (ValueError("a bug of the caller"), False),
])
def test_tensorstore_storage_errors_are_run_errors_and_other_errors_pass(tmp_path, monkeypatch,
                                                                          error, is_storage):
  """tensorstore reports a full disk as a ValueError with its status code: one RunError line with
  the first line of it; any other ValueError is a bug and passes unchanged."""
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))

  def failing_wait():
    raise error

  monkeypatch.setattr(checkpoints._manager, "wait_until_finished", failing_wait)
  expected = RunError if is_storage else ValueError
  with pytest.raises(expected) as raised:
    checkpoints.wait()
  if is_storage:
    assert "No space left on device" in str(raised.value) and "\n" not in str(raised.value)
    assert "the newest: none" in str(raised.value)
  else:
    assert raised.value is error
  monkeypatch.undo()
  checkpoints.close()


def test_a_read_only_restore_skips_an_unreadable_checkpoint_and_leaves_it_in_place(tmp_path):
  directory = tmp_path / "checkpoints"
  checkpoints = checkpointing.Checkpointer(str(directory))
  for step in (1, 2):
    checkpoints.save(step, {"w": np.full(3, step, np.float32)}, {"data_position": step})
  checkpoints.close()
  dcgan_runs.damage(directory / "2")
  before = tree_contents(tmp_path)

  reader = checkpointing.Checkpointer(str(directory), read_only=True)
  step, state, record = reader.restore_latest(STATE)
  with pytest.raises(ValueError, match="read-only"):
    reader.save(3, STATE, {"data_position": 3})
  reader.close()
  assert step == record["data_position"] == 1
  np.testing.assert_array_equal(state["w"], np.ones(3))
  assert tree_contents(tmp_path) == before


def saved_steps_1_to_3(directory) -> checkpointing.Checkpointer:
  checkpoints = checkpointing.Checkpointer(str(directory))
  for step in (1, 2, 3):
    checkpoints.save(step, {"w": np.full(3, step, np.float32)}, {"data_position": step})
  checkpoints.close()
  return checkpointing.Checkpointer(str(directory))


@pytest.mark.parametrize("error", [
    OSError(errno.ESTALE, "Stale file handle"), OSError(errno.EIO, "Input/output error"),
    PermissionError(errno.EACCES, "Permission denied"), MemoryError(),
    # tensorstore's, as it reports a stale handle and an I/O error of the mount
    ValueError("ABORTED: Error reading local file \"/mnt/run/checkpoints/3/state/d/12ab\": "
               "[OS error 116: Stale file handle] [source locations='tensorstore/internal/os/"
               "file_util_posix.cc:181'] [os_error_code='116']"),
    ValueError("UNKNOWN: Error reading local file \"/mnt/run/checkpoints/3/state/d/12ab\": "
               "[OS error 5: Input/output error] [os_error_code='5']"),
])
def test_a_read_failing_outside_the_checkpoint_stops_and_moves_nothing(tmp_path, monkeypatch,
                                                                       error):
  """A flaky network mount or low memory fails every read alike: setting the checkpoints aside
  for it would restart the run from step 0 (and cut metrics.jsonl back) with exit status 0."""
  checkpoints = saved_steps_1_to_3(tmp_path / "checkpoints")
  before = tree_contents(tmp_path)

  def failing_restore(*args, **kwargs):
    raise error

  monkeypatch.setattr(checkpoints._manager, "restore", failing_restore)
  with pytest.raises(RunError, match=r"could not read checkpoint 3 in .* the file system or the "
                                     r"memory failed, .* nothing was moved"):
    checkpoints.restore_latest(STATE)
  checkpoints.close()
  assert tree_contents(tmp_path) == before


@pytest.mark.parametrize("error, outside", [
    (FileNotFoundError(errno.ENOENT, "No such file"), False),
    (ValueError("NOT_FOUND: Error opening file [os_error_code='2']"), False),
    (ValueError("DATA_LOSS: Error reading \"x\": checksum mismatch"), False),
    (ValueError("UNKNOWN: Failed to open [os_error_code='40']"), True),  # a symlink loop
    (OSError(errno.EIO, "Input/output error"), True),
])
def test_read_errors_are_told_apart_by_what_they_say_of_the_files(error, outside):
  assert checkpointing._outside_the_checkpoint(error) == outside


def test_damaged_checkpoints_are_set_aside_only_once_an_older_one_is_read(tmp_path):
  checkpoints = saved_steps_1_to_3(tmp_path / "checkpoints")
  for step in (2, 3):
    dcgan_runs.damage(tmp_path / "checkpoints" / str(step))
  step, state, _ = checkpoints.restore_latest(STATE)
  assert step == 1 and checkpoints.all_steps() == [1]
  np.testing.assert_array_equal(state["w"], np.ones(3))
  assert sorted(p.name for p in (tmp_path / "unreadable_checkpoints").iterdir()) == ["2", "3"]
  checkpoints.close()
  # none readable: the run would start from step 0; nothing moves, the restore stops
  checkpoints = saved_steps_1_to_3(tmp_path / "other")
  for step in (1, 2, 3):
    dcgan_runs.damage(tmp_path / "other" / str(step))
  before = tree_contents(tmp_path)
  with pytest.raises(RunError, match=r"none of the 3 checkpoint\(s\) in .*other can be read "
                                     r"\(the newest, 3: .*nothing was moved. If they are "
                                     r"damaged, use a new --workdir"):
    checkpoints.restore_latest(STATE)
  checkpoints.close()
  assert tree_contents(tmp_path) == before


def test_a_checkpoint_whose_layers_have_other_names_is_another_model_left_in_place(tmp_path):
  """A layer renamed between versions, with the same shapes (gan_jax once renamed the
  discriminator's Conv_0 to WholeImageConv_0), must not pass for corruption: that would move the
  run's checkpoints aside and start it again from step 0."""
  old = {"D": {"Conv_0": {"kernel": np.ones((4, 4, 8, 1), np.float32)},
               "Dense_0": {"kernel": np.ones(3, np.float32)}}}
  new = {"D": {"WholeImageConv_0": old["D"]["Conv_0"], "Dense_0": old["D"]["Dense_0"]}}
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
  checkpoints.save(5, old, {"data_position": 5}, wait=True)
  before = tree_contents(tmp_path)
  with pytest.raises(UsageError, match="checkpoint 5 in .* holds another model .* other names "
                                       "or shapes"):
    checkpoints.restore_latest(new)
  assert checkpoints.restore_latest(old)[0] == 5
  checkpoints.close()
  assert tree_contents(tmp_path) == before


def test_a_read_only_checkpointer_creates_no_folder(tmp_path):
  reader = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
  assert reader.restore_latest(STATE) is None
  reader.close()
  assert not (tmp_path / "checkpoints").exists()


def test_save_refuses_an_older_step_and_replace_takes_any_step(tmp_path):
  """Orbax skips a step older than its newest without a word; the best checkpoint of a resumed
  run can be such a step."""
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "best"), max_to_keep=None)
  checkpoints.save(600, STATE, {"fid": 10.0}, wait=True)
  with pytest.raises(ValueError, match="step 550 is older than the newest checkpoint .* 600"):
    checkpoints.save(550, STATE, {"fid": 5.0})
  for step, fid in ((550, 5.0), (550, 4.0), (700, 3.0)):
    checkpoints.replace(step, {"w": np.full(3, fid, np.float32)}, {"fid": fid})
    assert checkpoints.all_steps() == [step]
    assert checkpoints.latest_record() == (step, {"fid": fid})
    restored_step, state, _ = checkpoints.restore_latest(STATE)
    assert restored_step == step and np.all(state["w"] == fid)
  checkpoints.close()


def test_records_are_strict_json_and_read_back_non_finite_values_as_nan(tmp_path):
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "best"))
  checkpoints.save(5, STATE, {"fid": 3.5, "kid_std": float("nan"), "x": float("inf")}, wait=True)
  for path in (tmp_path / "best" / "5").rglob("*"):  # orbax's record file among them
    if path.is_file() and b"fid" in path.read_bytes():
      text = path.read_text()
      assert "NaN" not in text and "Infinity" not in text and "null" in text
      break
  else:
    raise AssertionError("no record file written")
  step, record = checkpoints.latest_record()
  assert step == 5 and record["fid"] == 3.5 and np.isnan(record["kid_std"])
  assert np.isnan(record["x"])  # inf is not JSON either: it reads back as NaN
  assert np.isnan(checkpoints.restore_latest(STATE)[2]["kid_std"])
  checkpoints.close()
