"""Reliability: exact resume after any stop, preemption, checkpoints never lost, divergence.

Every run uses the default flagfile (dcgan_mnist) with narrow models and a fixed seed. Runs that
must be stopped from outside (SIGKILL, SIGTERM) are commands; the others run in this process. All
see the same 4 CPU devices (tests/conftest.py sets XLA_FLAGS, which the commands inherit), so all
compile the same program, and "equal" below means bitwise equal.
"""
import logging
import os
import random
import re
import shutil
import signal
import socket
import threading
import time
import types
import warnings

import jax
import numpy as np
import pytest

from gan_jax import checkpointing, preemption, trainer, workdir_lock
from gan_jax.cli import RunError, UsageError
from tests import dcgan_runs

FLAGFILE = "dcgan_mnist.flags"
# Narrow models: the properties are about the loop and checkpoints, not the model's size.
ARGS = ["--g_width=16", "--d_width=16", "--num_steps=40", "--max_train_minutes=0",
        "--checkpoint_every_steps=10", "--log_every_steps=3", "--sample_every_steps=0",
        "--num_final_samples=64", "--seed=7", "--eval_extractor=none"]
ARGV = [f"--flagfile={os.path.join(dcgan_runs.CONFIGS, FLAGFILE)}"] + ARGS


def config(*overrides):
  return dcgan_runs.config_from(FLAGFILE, *ARGS, *overrides)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """A run of 40 steps without interruption: the reference."""
  workdir = tmp_path_factory.mktemp("straight")
  trainer.train_and_evaluate(config(), str(workdir))
  return workdir


def wait_for_checkpoint(workdir, step, process, timeout=300):
  path = os.path.join(workdir, "checkpoints", str(step))
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert process.poll() is None, dcgan_runs.output(process)
    assert time.time() < deadline, f"no checkpoint {step} after {timeout} s"
    time.sleep(0.05)


def training_rows(workdir) -> dict:
  """step -> the metrics row of ``workdir`` without its timing, in the file's order."""
  rows = [row for row in trainer.read_metrics(str(workdir)) if "d_loss" in row]
  assert len({row["step"] for row in rows}) == len(rows), "a step logged twice"
  return {row["step"]: {k: v for k, v in row.items() if k != "steps_per_sec"} for row in rows}


def assert_same_run(workdir, reference, stopped_at=()):
  """The same final state, samples and metrics rows (the rows are means over 3 steps, however
  the run was interrupted), plus a row at each step in ``stopped_at``."""
  step, state, record = dcgan_runs.latest_checkpoint(str(workdir), config())
  ref_step, ref_state, _ = dcgan_runs.latest_checkpoint(str(reference), config())
  assert step == ref_step == 40 and record["data_position"] == 40
  for a, b in zip(dcgan_runs.leaves(state), dcgan_runs.leaves(ref_state)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(np.load(workdir / "final_samples.npy"),
                                np.load(reference / "final_samples.npy"))
  rows, reference_rows = training_rows(workdir), training_rows(reference)
  assert list(reference_rows) == list(range(3, 40, 3)) + [40]
  assert list(rows) == sorted(set(reference_rows) | set(stopped_at))
  assert {s: rows[s] for s in reference_rows} == reference_rows


def test_stop_at_20_and_resume_to_40_is_bitwise_identical(straight, tmp_path, caplog):
  trainer.train_and_evaluate(config("--num_steps=20"), str(tmp_path))
  caplog.set_level(logging.INFO, logger="absl")
  with dcgan_runs.lowered_programs() as lowered:
    summary = trainer.train_and_evaluate(config(), str(tmp_path))
  assert lowered["jit(_fun)"] == 1  # the pmapped step, once (flax's replicate made it twice)
  assert summary["start_step"] == 20
  assert "resuming from checkpoint 20" in caplog.text
  assert "trained on version" not in caplog.text  # the embedded digits have no TFDS version
  assert_same_run(tmp_path, straight, stopped_at=[20])  # its row at 21: the mean of 19 to 21


def test_a_run_on_one_device_compiles_its_step_once_also_when_it_resumes(tmp_path):
  """Restored scalars came back as NumPy arrays, placed otherwise than the step's outputs: the
  second step of every resume compiled again (6 s here, counted in the rate and the budget)."""
  for num_steps in (2, 4):
    with dcgan_runs.lowered_programs() as lowered:
      trainer.train_and_evaluate(config("--num_devices=1", f"--num_steps={num_steps}",
                                        "--log_every_steps=1"), str(tmp_path))
    assert lowered["jit(train_step)"] == 1, num_steps


def test_rows_are_the_means_of_the_steps_since_the_previous_row(straight, tmp_path):
  """The first 6 steps, logged one by one: their means over 1-3 and 4-6 are the rows at 3 and 6
  of the run that logs every 3 steps."""
  trainer.train_and_evaluate(config("--num_steps=6", "--log_every_steps=1"), str(tmp_path))
  steps, reference = training_rows(tmp_path), training_rows(straight)
  assert list(steps) == [1, 2, 3, 4, 5, 6]
  for end in (3, 6):
    interval = [steps[step] for step in range(end - 2, end + 1)]
    assert len({row["d_loss"] for row in interval}) == 3  # the steps differ: a mean, not a copy
    for name, value in reference[end].items():
      if name != "step":
        np.testing.assert_allclose(np.mean([row[name] for row in interval]), value,
                                   rtol=1e-12, err_msg=name)


def test_time_limit_stops_after_a_step_finishes_the_outputs_and_a_rerun_continues(straight,
                                                                                  tmp_path):
  summary = trainer.train_and_evaluate(config("--max_train_minutes=1e-9"), str(tmp_path))
  assert summary["time_limited"] and summary["step"] == 1
  assert np.load(tmp_path / "final_samples.npy").shape == (64, 32, 32, 1)
  assert [r["step"] for r in trainer.read_metrics(str(tmp_path))] == [1]  # the last step's row
  summary = trainer.train_and_evaluate(config(), str(tmp_path))
  assert summary["start_step"] == 1 and not summary["time_limited"]
  assert_same_run(tmp_path, straight, stopped_at=[1])


def test_sigkill_at_a_random_moment_then_resume_is_bitwise_identical(straight, tmp_path):
  process = dcgan_runs.start_command(tmp_path, ARGV)
  wait_for_checkpoint(tmp_path, 10, process)
  # A different moment on each run (during a checkpoint write, a step, a log line); pytest
  # shows the printed delay with a failure, to replay it.
  delay = random.Random(os.getpid()).uniform(0.0, 1.5)
  print(f"killed {delay:.3f} s after checkpoint 10 appeared")
  time.sleep(delay)
  process.kill()
  assert process.wait() == -signal.SIGKILL
  finished = dcgan_runs.run_command(tmp_path, ARGV)
  assert finished.returncode == 0, finished.stderr[-2000:]
  assert_same_run(tmp_path, straight)


def test_sigterm_saves_current_step_exits_143_and_resumes_exactly(straight, tmp_path):
  """A clean stop, but not a finished run: the status is the shell's for SIGTERM, so that a
  scheduler that restarts failed jobs reruns it."""
  process = dcgan_runs.start_command(tmp_path, ARGV)
  wait_for_checkpoint(tmp_path, 10, process)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=30) == 128 + signal.SIGTERM  # the timeout guards against a hang
  assert "SIGTERM: saved checkpoint" in dcgan_runs.output(process)
  step, _, record = dcgan_runs.latest_checkpoint(str(tmp_path), config())
  last_logged = trainer.read_metrics(str(tmp_path))[-1]["step"]
  assert step == record["data_position"] == last_logged >= 10
  assert not (tmp_path / "final_samples.npy").exists()
  trainer.train_and_evaluate(config(), str(tmp_path))
  assert_same_run(tmp_path, straight, stopped_at=[step] if step % 3 else [])


def test_unreadable_newest_checkpoint_falls_back_and_nothing_foreign_is_deleted(straight,
                                                                                tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  (workdir / "notes.txt").write_text("mine")
  (workdir / "checkpoints" / "README.txt").write_text("also mine")
  dcgan_runs.damage(workdir / "checkpoints" / "40")
  summary = trainer.train_and_evaluate(config(), str(workdir))
  assert summary["start_step"] == 30
  assert_same_run(workdir, straight)
  assert (workdir / "unreadable_checkpoints" / "40").is_dir()  # moved aside, not deleted
  assert (workdir / "notes.txt").read_text() == "mine"
  assert (workdir / "checkpoints" / "README.txt").read_text() == "also mine"


@pytest.mark.parametrize("flags, saved_dataset, refused", [
    ([], "tfds:mnist", None),
    (["--split=test"], "tfds:mnist", "--split=test differs from train"),  # a record before it
    (["--image_feature=digit"], "tfds:mnist", "--image_feature=digit differs from image"),
    (["--dataset=tfds:mnist:3.0.1"], "tfds:mnist", None),  # a version pinned after an upgrade
    (["--dataset=tfds:mnist:3.0.1"], "tfds:mnist:2.0.0", "differs from tfds:mnist:2.0.0"),
    (["--dataset=tfds:mnist_corrupted"], "tfds:mnist", "differs from tfds:mnist of"),
])
def test_resume_settings_of_records_before_split_and_image_feature(flags, saved_dataset,
                                                                    refused):
  """Records of versions before --split and --image_feature hold neither: they trained on
  TFDS's train split and its image feature, which a resume must keep."""
  settings = {name: getattr(config("--dataset=tfds:mnist"), name) for name in trainer.RESUME_FIXED
              if name not in trainer.RESUME_FIXED_BEFORE}
  settings["dataset"] = saved_dataset
  resumed = config("--dataset=tfds:mnist", *flags)
  if refused is None:
    trainer.check_resume_settings(resumed, settings, "w")
  else:
    with pytest.raises(UsageError, match=re.escape(refused)):
      trainer.check_resume_settings(resumed, settings, "w")


def test_num_devices_moves_a_run_to_a_device_count_its_batch_does_not_divide(tmp_path, caplog):
  """A run of batch 6 trained on 2 of the 4 devices cannot resume on all 4 (its batch size is
  fixed); --num_devices=3 resumes it, and the move is recorded and logged."""
  workdir, six = str(tmp_path), ("--batch_size=6", "--num_steps=10")
  trainer.train_and_evaluate(config(*six, "--num_devices=2"), workdir)
  checkpoints = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
  assert checkpoints.latest_record()[1]["devices"] == 2
  checkpoints.close()
  longer = ("--batch_size=6", "--num_steps=20")
  with pytest.raises(UsageError, match=r"--batch_size=6 is not divisible by the 4 devices; use a "
                                       r"multiple of 4, or fewer devices with --num_devices"):
    trainer.train_and_evaluate(config(*longer), workdir)
  with pytest.raises(UsageError, match=r"--num_devices=5 must be in \[0, 4\]"):
    trainer.train_and_evaluate(config(*longer, "--num_devices=5"), workdir)
  caplog.set_level(logging.INFO, logger="absl")
  summary = trainer.train_and_evaluate(config(*longer, "--num_devices=3"), workdir)
  assert (summary["start_step"], summary["step"]) == (10, 20)
  assert "written by a run on 2 devices, this one trains on 3" in caplog.text
  assert ("flags changed since the run's config.json: --num_devices 2 -> 3, --num_steps 10 -> 20"
          in caplog.text)


def test_an_image_that_fails_to_decode_is_the_error_told_when_the_save_before_it_fails(caplog):
  """The save of the steps before the damaged image (tests/test_dcgan_experiment.py) may fail
  too, on a full disk: the image remains the error, which a rerun would meet again."""
  def damaged():
    raise UsageError("cannot read image 'x.png' (image file is truncated)")
    yield

  def full_disk(step, wait):
    raise RunError("could not write a checkpoint ([Errno 28] No space left on device)")

  run = types.SimpleNamespace(device_batches=damaged(), start_step=0, save=full_disk)
  caplog.set_level(logging.INFO, logger="absl")
  with pytest.raises(UsageError, match=r"cannot read image 'x.png'"):
    trainer._Run.next_batch(run, 3, None)
  assert ("could not save checkpoint 3 before stopping: could not write a checkpoint ([Errno 28]"
          in caplog.text)


def test_changing_model_or_data_flags_on_resume_names_the_flag(straight, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  for flag, value, saved in [("resolution", 64, 32), ("g_width", 32, 16),
                             ("dataset", "tfds:mnist", "mnist"), ("channels", 3, 1)]:
    with pytest.raises(UsageError, match=f"--{flag}={value} differs from {saved}"):
      trainer.train_and_evaluate(config(f"--{flag}={value}"), str(workdir))
  # without config.json, or with one edited, the checkpoints' records still name the flags
  kept, rows = sorted(os.listdir(workdir / "checkpoints")), trainer.read_metrics(str(workdir))
  for text in (None, '{"note": "edited by hand"}'):
    (workdir / "config.json").unlink(missing_ok=True)
    if text:
      (workdir / "config.json").write_text(text)
    for flag, value, message in [("batch_size", 32, "--batch_size=32 differs from 64"),
                                 ("seed", 8, "--seed=8 differs from 7"),
                                 ("g_width", 32, "--g_width=32 differs from 16")]:
      with pytest.raises(UsageError, match=message):
        trainer.train_and_evaluate(config(f"--{flag}={value}"), str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == kept
  assert not (workdir / "unreadable_checkpoints").exists()
  assert trainer.read_metrics(str(workdir)) == rows
  # flags that do not change the model or the data may change
  summary = trainer.train_and_evaluate(config("--num_steps=41", "--log_every_steps=5"),
                                       str(workdir))
  assert summary["start_step"] == 40 and summary["step"] == 41


def test_a_second_run_on_a_workdir_in_use_is_refused_and_changes_nothing(straight, tmp_path):
  """A command launched twice, or a job restarted while its old process lives, would delete the
  first run's checkpoints (orbax replaces a step folder it does not know): the lock the first run
  holds refuses the second with one line, as a command and as a library call."""
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  contents = lambda: {str(p): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}
  with workdir_lock.hold(str(workdir)):  # the first run, still alive
    before = contents()
    result = dcgan_runs.run_command(workdir, ARGV + ["--num_steps=50"])
    holder = f"process {os.getpid()} on {socket.gethostname()}"
    with pytest.raises(UsageError, match=re.escape(f"is in use by another run ({holder})")):
      trainer.train_and_evaluate(config("--num_steps=50"), str(workdir))
    assert contents() == before
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: --workdir={workdir} is in use by another run ({holder}); wait for it to end or "
      "stop it, or use a new --workdir")
  # once the first run has ended, the same command resumes
  assert trainer.train_and_evaluate(config("--num_steps=41"), str(workdir))["start_step"] == 40


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run_keeping_checkpoints(straight,
                                                                                  tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  kept = sorted(os.listdir(workdir / "checkpoints"))
  # A learning rate of 1e38 puts the weights near float32's limit: every later step overflows.
  with pytest.raises(RunError, match=r"5 steps in a row .* non-finite .* checkpoint is step 40"):
    trainer.train_and_evaluate(
        config("--num_steps=100", "--d_learning_rate=1e38", "--max_nonfinite_steps=5",
               "--log_every_steps=1"), str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == kept
  rows = [r for r in trainer.read_metrics(str(workdir)) if r["step"] > 40]
  assert sum(r["nonfinite"] > 0 for r in rows) >= 5
  assert all(np.isfinite(r["d_grad_norm"]) or r["nonfinite"] > 0 for r in rows)


def test_a_first_ctrl_c_asks_for_a_clean_stop_and_a_second_one_interrupts(caplog):
  """The same path as SIGTERM above (the loop checkpoints and returns; experiments.dcgan then
  exits with the shell's status for Ctrl-C, 130). Each is acknowledged in a log line."""
  assert [preemption.exit_status(name) for name in (None, "SIGINT", "SIGTERM")] == [0, 130, 143]
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a command
  caplog.set_level(logging.INFO, logger="absl")
  try:
    with preemption.Preemption() as stop:
      os.kill(os.getpid(), signal.SIGINT)
      assert stop.requested == "SIGINT"
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.set_wakeup_fd(-1) == -1  # the wake-up pipe is gone with the acknowledger
  finally:
    signal.signal(signal.SIGINT, previous)
  assert [record.getMessage() for record in caplog.records] == [
      "SIGINT: stopping once the step (or chunk of steps) under way ends; Ctrl-C again "
      "interrupts without saving",
      "SIGINT again: interrupting once the computation under way returns"]


def signals_while_blocked(signum: int, count: int, acknowledgement: str) -> bool:
  """Sends ``count`` signals ``signum`` to this process while its main thread is blocked in a
  system call (here a read; in a run, a long XLA computation), where it runs no Python handler
  until the call returns. Another thread sends them and unblocks the main thread once as many
  log lines starting with ``acknowledgement`` appeared, or after 60 s. Returns whether they
  appeared in time."""
  acknowledged = threading.Semaphore(0)

  class Watch(logging.Handler):
    def emit(self, record):
      if record.getMessage().startswith(acknowledgement):
        acknowledged.release()

  watch, (blocked_read, unblock) = Watch(), os.pipe()
  logging.getLogger("absl").addHandler(watch)
  seen_in_time, masked = [], threading.Event()

  def send_and_wait():
    masked.wait()
    for _ in range(count):
      os.kill(os.getpid(), signum)
      seen_in_time.append(acknowledged.acquire(timeout=60))
    os.write(unblock, b"x")

  sender = threading.Thread(target=send_and_wait)
  sender.start()  # before the mask, which new threads inherit
  # Blocked here, the main thread leaves the signals to threads that run no Python handler.
  signal.pthread_sigmask(signal.SIG_BLOCK, [signum])
  try:
    masked.set()
    os.read(blocked_read, 1)
  finally:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    sender.join()
    logging.getLogger("absl").removeHandler(watch)
    os.close(blocked_read)
    os.close(unblock)
  return seen_in_time == [True] * count


def test_a_signal_is_acknowledged_while_the_main_thread_waits_in_native_code():
  """The acknowledgement does not wait for the main thread's return to Python (the test fails
  after 60 s otherwise)."""
  with preemption.Preemption() as stop:
    assert signals_while_blocked(signal.SIGTERM, 1, "SIGTERM: stopping")
    assert stop.requested == "SIGTERM"  # the handler ran, once the read returned


def test_a_second_ctrl_c_during_a_long_computation_interrupts():
  """Python runs its handler once for both Ctrl-Cs that came during one computation; the
  second was lost in the first, and the run stopped cleanly instead."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a command
  try:
    with preemption.Preemption() as stop:
      with pytest.raises(KeyboardInterrupt):
        assert signals_while_blocked(signal.SIGINT, 2, "SIGINT")
        time.sleep(1)  # where the KeyboardInterrupt arrives, at the latest
      assert stop.requested == "SIGINT"
  finally:
    signal.signal(signal.SIGINT, previous)


def test_signals_still_reach_an_earlier_wake_up_file_and_not_from_forked_processes():
  """An event loop's wake-up file (asyncio's) gets the signals that arrive inside; a process
  forked inside writes to it, not to the pipe of the parent, which would count its signals
  twice (a Ctrl-C to both is one)."""
  earlier_read, earlier_write = os.pipe()
  os.set_blocking(earlier_write, False)
  os.set_blocking(earlier_read, False)
  signal.set_wakeup_fd(earlier_write)
  try:
    with preemption.Preemption() as stop:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # JAX's threads: the child runs no JAX
        child = os.fork()
      if not child:
        os._exit(0 if signal.set_wakeup_fd(-1) == earlier_write else 1)
      os.kill(os.getpid(), signal.SIGTERM)
      assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    assert stop.requested == "SIGTERM"
    assert os.read(earlier_read, 16) == bytes([signal.SIGTERM])
  finally:
    signal.set_wakeup_fd(-1)
    os.close(earlier_read)
    os.close(earlier_write)


@pytest.mark.parametrize("own, peer, stop_for, relayed", [
    (None, signal.SIGTERM, "SIGTERM", True),      # the peer's signal, passed on
    ("SIGINT", signal.SIGTERM, "SIGTERM", True),  # two signals: both stop for the higher one
    ("SIGTERM", signal.SIGINT, "SIGTERM", False),
    ("SIGTERM", 0, "SIGTERM", False),
])
def test_processes_agree_on_one_signal_so_they_exit_with_one_status(
    monkeypatch, own, peer, stop_for, relayed):
  """Two processes (the peer's gathered flags stubbed): each stops for the highest signal number
  that any of them received, so both exit with one status."""
  monkeypatch.setattr(trainer.jax, "process_count", lambda: 2)
  monkeypatch.setattr(trainer.multihost_utils, "process_allgather",
                      lambda here: np.stack([here, np.int32([peer, 0])]))
  stop = preemption.Preemption()
  stop.requested = own
  assert trainer.agreed_stop(stop, step=10, out_of_time=False) == stop_for
  assert (stop.requested, stop.relayed) == (stop_for, relayed)
  assert preemption.exit_status(stop.requested) == 128 + signal.Signals[stop_for]



class Folder:
  """An image folder's listing, as a source (``files`` and a size)."""

  def __init__(self, files):
    self.files = files

  def __len__(self):
    return len(self.files)


@pytest.mark.parametrize("files, error", [
    (["a.png", "b.png"], None),
    (["a.png", "c.png"], "process 1 reads other file names than process 0 (2 images each)"),
    (["a.png", os.fsdecode(b"b\xff.png")],  # a name that is not UTF-8, as Linux allows
     "process 1 reads other file names than process 0 (2 images each)"),
    (["a.png", "b.png", "c.png"], "process 1 reads 3 images, process 0 2"),
])
def test_processes_refuse_to_start_on_different_datasets(monkeypatch, files, error):
  """Process 1 against process 0's gathered view of ["a.png", "b.png"] (the gather stubbed): a
  global batch slices one permutation of the data, which a host with another listing (a lagging
  sync) would silently break."""
  gathered = []
  monkeypatch.setattr(trainer.multihost_utils, "process_allgather",
                      lambda here: gathered.append(here) or np.stack([here, here]))
  monkeypatch.setattr(trainer.jax, "process_index", lambda: 0)
  trainer.check_same_dataset(Folder(["a.png", "b.png"]))  # process 0's view of itself
  monkeypatch.setattr(trainer.jax, "process_index", lambda: 1)
  monkeypatch.setattr(trainer.multihost_utils, "process_allgather",
                      lambda here: np.stack([gathered[0], here]))
  if error is None:
    trainer.check_same_dataset(Folder(files))
  else:
    with pytest.raises(UsageError, match=re.escape(error) + ": every host must read the same"):
      trainer.check_same_dataset(Folder(files))


@pytest.mark.parametrize("change", [None, "one weight", "a transposed kernel"])
def test_processes_refuse_to_score_with_different_feature_weights(monkeypatch, change):
  """Process 1 against process 0's gathered checksum (the gather stubbed): hosts with other
  weight files at the same path would each score their share of the samples with their own."""
  weights = {"conv": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)},
             "dense": {"bias": np.ones(3, np.float32)}}
  gathered = []
  monkeypatch.setattr(trainer.multihost_utils, "process_allgather",
                      lambda here: gathered.append(here) or np.stack([here, here]))
  monkeypatch.setattr(trainer.jax, "process_index", lambda: 0)
  trainer.check_same_weights(weights, "--inception_weights=w.npz", "copy it")
  monkeypatch.setattr(trainer.jax, "process_index", lambda: 1)
  monkeypatch.setattr(trainer.multihost_utils, "process_allgather",
                      lambda here: np.stack([gathered[0], here]))
  if change == "one weight":
    weights["conv"]["kernel"][1, 2] = np.nextafter(np.float32(5), np.float32(6))
  elif change == "a transposed kernel":
    weights["conv"]["kernel"] = weights["conv"]["kernel"].T.copy()
  if change is None:
    trainer.check_same_weights(jax.device_put(weights), "--inception_weights=w.npz", "copy it")
  else:
    with pytest.raises(UsageError, match=re.escape(
        "process 1 loaded other weights from --inception_weights=w.npz than process 0: every "
        "host must score with the same feature network (copy it)")):
      trainer.check_same_weights(weights, "--inception_weights=w.npz", "copy it")
