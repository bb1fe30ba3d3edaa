"""Data parallelism end to end: one run on 1 device, on 4, and on two processes of 2 devices.

The two processes join through `jax.distributed` on the loopback address (collectives through
gloo); each reads its half of every global batch. All three see the same latents and data and
keep global-batch batch norm, so a different layout only reorders float reductions: they must
reach the same parameters and samples. A signal to one of the processes stops both at one step.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from gan_jax import checkpointing, distributed, trainer
from gan_jax.errors import UsageError
from tests import dcgan_runs
from tests.xla_flags import with_cpu_devices

ARGS = ["--resolution=28", *dcgan_runs.TINY_RUN, "--num_final_samples=16", "--eval_extractor=none"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def devices_env(n):
  return dict(os.environ, XLA_FLAGS=with_cpu_devices(os.environ["XLA_FLAGS"], n))


def start_two_processes(workdir, args) -> list:
  address = f"127.0.0.1:{free_port()}"
  return [dcgan_runs.start_command(workdir, args + [
      "--distributed", f"--coordinator_address={address}", "--num_processes=2",
      f"--process_id={i}"], env=devices_env(2)) for i in range(2)]


def wait_while(processes, condition, seconds=600, expected_status=0) -> None:
  """Polls ``processes`` together while ``condition()`` holds: when one fails (exits with another
  status than ``expected_status``), its peer would wait for it in a collective, so the test fails
  at once with the failed one's output (and kills both); likewise when the time runs out (a guard
  against a hang only)."""
  deadline = time.monotonic() + seconds
  while condition():
    failed = [p for p in processes if p.returncode not in (None, expected_status)]
    if failed or time.monotonic() > deadline:
      for process in processes:
        process.kill()
      pytest.fail(dcgan_runs.output(failed[0]) if failed else "the processes hung")
    time.sleep(0.2)
    for process in processes:
      process.poll()


# Scored during training too: best/ and checkpoints/ then save at the same steps, each a
# collective of the processes.
SCORED_ARGS = [*ARGS[:-1], "--eval_extractor=mnist_classifier", "--eval_every_steps=2",
               "--num_eval_real=100"]


@pytest.mark.slow
def test_one_device_four_devices_and_two_processes_reach_the_same_run(tmp_path):
  workdir = tmp_path / "two_processes"
  processes = start_two_processes(workdir, SCORED_ARGS)
  wait_while(processes, lambda: any(p.returncode is None for p in processes))
  for process in processes:
    assert process.returncode == 0, dcgan_runs.output(process)
  one_device = tmp_path / "one_device"
  result = dcgan_runs.run_command(one_device, SCORED_ARGS, env=devices_env(1))
  assert result.returncode == 0, result.stderr[-3000:]
  four_devices = tmp_path / "four_devices"  # this process has 4 CPU devices (conftest)
  config = dcgan_runs.config_from(None, *SCORED_ARGS)
  trainer.train_and_evaluate(config, str(four_devices))

  step, state, _ = dcgan_runs.latest_checkpoint(str(workdir), config)
  ref_step, ref_state, _ = dcgan_runs.latest_checkpoint(str(four_devices), config)
  assert step == ref_step == 4
  # Gloo sums the replicas in another order than one process does; Adam divides by sqrt(v), so
  # the rounding of a near-zero gradient can move a weight by a few 1e-6 (one step is 2e-4).
  for a, b in zip(dcgan_runs.leaves(state), dcgan_runs.leaves(ref_state)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  samples = {path.name: np.load(path / "final_samples.npy")
             for path in (workdir, one_device, four_devices)}
  # Measured 1e-8 apart; per-device batch statistics (2 examples) would put them 4e-4 apart,
  # against samples of standard deviation 2e-3 this early in training.
  assert np.std(samples["one_device"]) > 1e-3
  for name in ("one_device", "two_processes"):
    np.testing.assert_allclose(samples[name], samples["four_devices"], atol=1e-5, err_msg=name)
  scores = {path.name: [row["fid"] for row in trainer.read_metrics(str(path)) if "fid" in row]
            for path in (workdir, four_devices)}
  assert len(scores["four_devices"]) == 2  # steps 2 and 4
  np.testing.assert_allclose(scores["two_processes"], scores["four_devices"], rtol=1e-3)
  assert os.listdir(workdir / "best") == os.listdir(four_devices / "best")


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_at_one_checkpointed_step(tmp_path):
  """A preemption notice may reach one host only, or the hosts at different steps."""
  args = [*ARGS, "--num_steps=100000", "--checkpoint_every_steps=100000", "--log_every_steps=10",
          "--sample_every_steps=0"]
  processes = start_two_processes(tmp_path, args)
  metrics = tmp_path / "metrics.jsonl"
  wait_while(processes, lambda: not (metrics.exists() and metrics.stat().st_size))  # training
  processes[1].send_signal(signal.SIGTERM)
  wait_while(processes, lambda: any(p.returncode is None for p in processes), seconds=120,
             expected_status=128 + signal.SIGTERM)
  for process in processes:  # both with the shell's status for SIGTERM: the run did not finish
    assert process.returncode == 128 + signal.SIGTERM, dcgan_runs.output(process)
  steps = checkpointing.saved_steps(tmp_path / "checkpoints")
  assert len(steps) == 1 and steps[0] > 0 and steps[0] % trainer.PREEMPTION_SYNC_STEPS == 0
  assert f"SIGTERM: saved checkpoint {steps[0]}" in dcgan_runs.output(processes[1])
  assert (f"SIGTERM (to another process): saved checkpoint {steps[0]}"
          in dcgan_runs.output(processes[0]))
  assert not os.path.exists(tmp_path / "final_samples.npy")  # stopped, not finished


@pytest.mark.slow
def test_a_time_budget_stops_both_processes_at_one_step_and_writes_the_outputs(tmp_path):
  """Each process has its own clock; they agree on the step, as on a signal."""
  args = [*ARGS, "--num_steps=100000", "--max_train_minutes=0.05", "--log_every_steps=10",
          "--checkpoint_every_steps=100000", "--sample_every_steps=0"]
  processes = start_two_processes(tmp_path, args)
  wait_while(processes, lambda: any(p.returncode is None for p in processes))
  for process in processes:
    assert process.returncode == 0, dcgan_runs.output(process)
  steps = checkpointing.saved_steps(tmp_path / "checkpoints")
  assert len(steps) == 1 and steps[0] > 0 and steps[0] % trainer.PREEMPTION_SYNC_STEPS == 0
  for process in processes:
    assert f"--max_train_minutes=0.05 reached at step {steps[0]}" in dcgan_runs.output(process)
  assert np.load(tmp_path / "final_samples.npy").shape == (16, 28, 28, 1)


@pytest.mark.slow
def test_an_unreadable_newest_checkpoint_is_skipped_by_both_processes(tmp_path):
  """Both processes must restore one step: the damaged one is moved aside once, by process 0.
  (The checkpoints come from this process's 4 devices: they hold the same host arrays.)"""
  trainer.train_and_evaluate(dcgan_runs.config_from(None, *ARGS), str(tmp_path))
  dcgan_runs.damage(tmp_path / "checkpoints" / "4")
  processes = start_two_processes(tmp_path, [*ARGS, "--num_steps=6"])
  wait_while(processes, lambda: any(p.returncode is None for p in processes), seconds=300)
  for process in processes:
    assert process.returncode == 0, dcgan_runs.output(process)
    assert "resuming from checkpoint 2" in dcgan_runs.output(process)
  assert (tmp_path / "unreadable_checkpoints" / "4").is_dir()
  assert checkpointing.saved_steps(tmp_path / "checkpoints")[-1] == 6


def process_1_fails_a_start_up_check(workdirs, args) -> list:
  """Runs processes 0 and 1 of a job, process i in ``workdirs[i]`` with ``args[i]``, where
  process 1 fails a start-up check: both stop with status 2, and process 0's one error line names
  process 1 rather than waiting for it in a collective. Returns process 1's error lines."""
  address = f"127.0.0.1:{free_port()}"
  processes = [dcgan_runs.start_command(workdirs[i], ARGS + args[i] + [
      "--distributed", f"--coordinator_address={address}", "--num_processes=2",
      f"--process_id={i}"], env=devices_env(2)) for i in range(2)]
  for process in processes:
    process.wait(timeout=120)  # a guard against a hang only
  errors = [[line for line in dcgan_runs.output(p).splitlines() if line.startswith("error:")]
            for p in processes]
  assert [p.returncode for p in processes] == [2, 2]
  assert errors[0] == ["error: process 1 failed a start-up check (its error line says which); "
                       "every process stopped"]
  return errors[1]


@pytest.mark.slow
def test_a_host_without_the_shared_workdir_stops_both_processes_with_one_line_each(tmp_path):
  """Process 1's --workdir is another folder (its host lacks the mount): it says so."""
  errors = process_1_fails_a_start_up_check([tmp_path / "host0", tmp_path / "host1"], [[], []])
  assert len(errors) == 1 and "is not the folder process 0 writes to" in errors[0]
  assert not (tmp_path / "host0" / "checkpoints" / "2").exists()


@pytest.mark.slow
def test_hosts_that_read_different_datasets_stop_both_processes_with_one_line_each(tmp_path):
  """Process 1's host holds another image in place of one (a lagging copy): every global batch
  slices one shuffled order of the data, which the processes would no longer share. (The sizes
  agree, so the file names must tell; the decoded-image cache is on, as by default.)"""
  for host, last in (("host0", 7), ("host1", 8)):
    (tmp_path / host).mkdir()
    for i in [*range(7), last]:
      Image.fromarray(np.full((28, 28), 20 * i, np.uint8)).save(tmp_path / host / f"{i}.png")
  errors = process_1_fails_a_start_up_check(
      [tmp_path / "run"] * 2, [[f"--dataset=folder:{tmp_path / f'host{i}'}"] for i in range(2)])
  assert errors == ["error: process 1 reads other file names than process 0 (8 images each): "
                    "every host must read the same dataset (sync the image folder, or prepare "
                    "the same TFDS version on each host)"]


# experiments.dcgan with every step reported non-finite (its update kept)
NONFINITE_STEPS = """
import jax.numpy as jnp
from gan_jax import cli, train_step
make = train_step.make_train_step
def make_nonfinite(*args, **kwargs):
  step = make(*args, **kwargs)
  def nonfinite_step(state, batch):
    state, metrics = step(state, batch)
    return state, dict(metrics, nonfinite=jnp.ones_like(metrics["nonfinite"]))
  return nonfinite_step
train_step.make_train_step = make_nonfinite
from experiments import dcgan
cli.run(dcgan.main)
"""


@pytest.mark.slow
def test_a_nonfinite_stop_at_a_sample_grid_step_stops_both_processes_with_one_line(tmp_path):
  """Process 0 alone writes the grids, but every process must read a grid step's metrics at
  once: when process 0 found the stop there and the other read it a step later, both hung."""
  address = f"127.0.0.1:{free_port()}"
  args = [*ARGS, f"--workdir={tmp_path}", "--max_nonfinite_steps=1", "--sample_every_steps=1",
          "--checkpoint_every_steps=1000", "--log_every_steps=1000", "--num_steps=50",
          "--distributed", f"--coordinator_address={address}", "--num_processes=2"]
  processes = [subprocess.Popen([sys.executable, "-c", NONFINITE_STEPS, *args,
                                 f"--process_id={i}"], cwd=dcgan_runs.ROOT, env=devices_env(1),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(2)]
  try:
    outputs = [process.communicate(timeout=120)[0] for process in processes]  # a hang guard
  finally:
    for process in processes:
      process.kill()
  assert [p.returncode for p in processes] == [1, 1], outputs
  for output in outputs:
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: 1 steps in a row up to step 1 "), output


# Without the variables a cluster sets, JAX finds no job to join (JAX_COORDINATOR_ADDRESS stands
# in for --coordinator_address).
NO_CLUSTER_ENV = {name: value for name, value in os.environ.items() if not name.startswith(
    ("SLURM_", "OMPI_", "PMI_", "TPU_", "MEGASCALE_", "JAX_COORDINATOR", "CLOUD_TPU"))}


def the_error_line(result: subprocess.CompletedProcess) -> str:
  """The one ``error:`` line of a finished command, which printed no traceback."""
  output = result.stdout + result.stderr
  assert "Traceback" not in output and "Fatal Python error" not in output, output[-3000:]
  errors = [line for line in output.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, output[-3000:]
  return errors[0]


def test_distributed_without_a_job_to_join_stops_with_one_line(tmp_path):
  """JAX's own ValueError (no cluster environment to read the settings from), as one line."""
  result = dcgan_runs.run_command(tmp_path, [*ARGS, "--distributed"], env=NO_CLUSTER_ENV,
                                  timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert the_error_line(result).startswith(
      "error: --distributed found no job to join (coordinator_address should be defined.); "
      "pass --coordinator_address=HOST:PORT (process 0's), --num_processes and --process_id, or "
      "run under Slurm, Open MPI or on a Cloud TPU pod")


@pytest.mark.parametrize("settings, message", [
    (("127.0.0.1:1234", 2, 5), "--process_id=5 is not below --num_processes=2; give the "
     "processes the ids 0 to 1"),
    (("notahost", 1, 0), "--coordinator_address='notahost' is not HOST:PORT; pass process 0's "
     "host and a free port on it"),
    (("127.0.0.1:http", None, None), "--coordinator_address='127.0.0.1:http' is not HOST:PORT"),
    (("node..cluster:1234", 2, 1), "--coordinator_address='node..cluster:1234' is not HOST:PORT"),
    (("127.0.0.1:1234", 0, None), "--num_processes must be at least 1, got 0"),
    (("127.0.0.1:1234", None, -1), "--process_id must be >= 0, got -1"),
], ids=["process_id_too_large", "no_port", "port_not_a_number", "not_a_host_name",
        "no_processes", "negative_process_id"])
def test_bad_distributed_settings_are_one_usage_error_before_jax_sees_them(settings, message):
  """JAX's own checks end in tracebacks (an IndexError for an address without a port)."""
  with pytest.raises(UsageError, match=re.escape(message)):
    distributed.check_settings(*settings)
  with pytest.raises(UsageError, match="--distributed_timeout_s must be positive, got 0"):
    distributed.check_settings(None, None, None, timeout_s=0)


def test_a_busy_coordinator_port_is_refused_on_process_0():
  """jaxlib fails to start its server on a taken port with an exception or a segfault."""
  with socket.socket(socket.AF_INET6) as taken:
    taken.bind(("::", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(UsageError, match=re.escape(
        f"port {port} of --coordinator_address=127.0.0.1:{port} is in use on this host, where "
        "process 0 runs the coordinator; pick a free port (the same one for every process)")):
      distributed.check_settings(f"127.0.0.1:{port}", 1, 0)
    distributed.check_settings(f"127.0.0.1:{port}", 2, 1)  # another process: not its port


def test_an_empty_coordinator_address_in_the_environment_is_refused(monkeypatch):
  """JAX falls back on JAX_COORDINATOR_ADDRESS even when it is empty, then fails on its split."""
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "")
  with pytest.raises(UsageError, match="JAX_COORDINATOR_ADDRESS='' is not HOST:PORT"):
    distributed.check_settings(None, 1, 0)


# The watchdog of distributed.initialize around a body of BODY_S seconds, whose message takes
# MESSAGE_S to make (a connection attempt) or fails; it prints what the process saw.
WATCHDOG_SCRIPT = """
import sys, time
from gan_jax import distributed
body_s, message_s, fails = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "fails"
def message():
  time.sleep(message_s)
  if fails:
    raise UnicodeError("label empty or too long")
  return "the job did not gather"
with distributed._exit_when_late(0.2, message):
  time.sleep(body_s)
time.sleep(1.5)  # training goes on
print("joined")
"""


@pytest.mark.parametrize("body_s, message_s, fails, status, output", [
    (0.5, 1.0, "no", 0, "joined"),  # joined while the message was made: no false error
    (3.0, 0.0, "no", 1, "error: the job did not gather"),
    (3.0, 0.0, "fails", 1, "error: the job did not gather within 0.2 s"),  # the exit still comes
])
def test_the_join_watchdog_exits_once_late_and_never_after_a_join(body_s, message_s, fails,
                                                                   status, output):
  result = subprocess.run([sys.executable, "-c", WATCHDOG_SCRIPT, str(body_s), str(message_s),
                           fails], capture_output=True, text=True, cwd=dcgan_runs.ROOT, timeout=60)
  assert result.returncode == status, result.stderr[-2000:]
  assert (result.stdout + result.stderr).strip().splitlines()[-1].startswith(output)


@pytest.mark.parametrize("process_id, message", [
    (1, "error: no coordinator answered at --coordinator_address={address} within 5 s "
     "(--distributed_timeout_s) (Connection refused); start process 0 (--process_id=0)"),
    (0, "error: the coordinator at {address} is up, but not all 2 processes joined within 5 s "
     "(--distributed_timeout_s); start every --process_id from 0 to 1"),
], ids=["no_coordinator", "no_peer"])
def test_a_job_that_does_not_gather_stops_after_the_timeout_with_one_line(tmp_path, process_id,
                                                                          message):
  """Alone, process 1 finds no coordinator and process 0 no peer: both say so at the deadline
  (JAX itself would wait 300 s, then abort with a C++ stack trace)."""
  address = f"127.0.0.1:{free_port()}"
  result = dcgan_runs.run_command(tmp_path, [
      *ARGS, "--distributed", f"--coordinator_address={address}", "--num_processes=2",
      f"--process_id={process_id}", "--distributed_timeout_s=5"], env=NO_CLUSTER_ENV,
      timeout=120)  # a guard against a hang only
  assert result.returncode == 1, result.stderr[-3000:]
  assert (f"joining the job at {address} as process {process_id} of 2; waiting up to 5 s for "
          "all processes to join" in result.stderr)
  assert the_error_line(result).startswith(message.format(address=address))
