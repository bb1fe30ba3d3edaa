"""The vanilla GAN experiment: end to end from its flagfiles, seeds vmapped == seeds run alone."""
import dataclasses
import json
import os
import signal
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiments import vanilla_gan
from gan_jax import cli, distributions, parallel, preemption, run_log, workdir_lock
from gan_jax.metrics import modes
from tests.xla_flags import with_cpu_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT_RUN = ["--num_steps=20", "--log_every_steps=10", "--snapshot_every_steps=10",
             "--num_seeds=2", "--num_samples=500"]


def run_cli(*flags, timeout=300):
  # without the 4 devices of conftest.py: the command makes its own CPU devices
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=with_cpu_devices(os.environ["XLA_FLAGS"], None))
  return subprocess.run([sys.executable, "-m", "experiments.vanilla_gan", *flags], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def strict_json(text):
  """``text`` parsed as strict JSON: NaN and Infinity, which Python writes by default, fail."""
  def refuse(constant):
    raise AssertionError(f"{constant} is not JSON")
  return json.loads(text, parse_constant=refuse)


def assert_picture(path):
  with Image.open(path) as picture:
    assert picture.width > 100 and picture.height > 100


@pytest.mark.slow
@pytest.mark.parametrize("flagfile", ["ring8", "grid25", "mnist_mlp"])
def test_experiment_runs_from_its_flagfile_and_writes_every_output(flagfile, tmp_path):
  result = run_cli(f"--flagfile=experiments/configs/{flagfile}.flags", f"--workdir={tmp_path}",
                   *SHORT_RUN)
  assert result.returncode == 0, result.stderr[-3000:]
  samples = np.load(tmp_path / "final_samples.npy")
  assert samples.dtype == np.float32 and np.all(np.isfinite(samples))
  with open(tmp_path / "metrics.json") as f:
    results = strict_json(f.read())
  assert results["seeds"] == [0, 1] and results["config"]["num_steps"] == 20
  assert results["steps"] == 20 and results["stopped_by"] is None
  # the training time and rate leave out the two snapshots' pictures
  assert 0 < results["snapshot_s"] < results["wall_s"] - results["train_s"]
  assert results["steps_per_sec"] == pytest.approx(20 / results["train_s"])
  # the command made its own CPU devices: one per seed, and spare cores split the batch
  cores, config = parallel.available_cores(), results["config"]
  seed_blocks, batch_shards = parallel.seed_and_batch_blocks(
      2, config["batch_size"] // config["packing"], parallel.CPU_DEVICES_PER_CORE * cores, cores)
  assert results["mesh"] == {"seed": 2, "batch": batch_shards} and seed_blocks == 2
  assert results["devices"] == 2 * batch_shards
  assert f"2 seed(s) of {flagfile.split('_')[0]} on {2 * batch_shards} device(s)" in result.stderr
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [strict_json(line) for line in f]
  assert [row["step"] for row in rows] == [10, 20]
  assert all(np.isfinite(row["d_loss"]) and 0 < row["d_real"] < 1 for row in rows)
  for name in ("samples/step_000010.png", "samples/step_000020.png", "final_samples.png",
               "curves.png"):
    assert_picture(tmp_path / name)

  if flagfile == "mnist_mlp":
    assert samples.shape == (2 * 500, 28, 28, 1)
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    return
  mixture = distributions.get_toy_dataset(flagfile)
  assert samples.shape == (2, 500, 2)
  # metrics.json holds the mode metrics of exactly these samples, and their mean and std.
  # (a reverse KL without high-quality samples is NaN, written as null)
  for seed_samples, reported in zip(samples, results["per_seed"]):
    expected = modes.mode_metrics(seed_samples, mixture.means, mixture.stds)
    assert {k: np.nan if reported[k] is None else reported[k] for k in expected} == \
        pytest.approx(expected, nan_ok=True)
  for name in vanilla_gan.MODE_METRICS:  # over the seeds where the metric is finite
    values = np.array([m[name] for m in results["per_seed"]], np.float64)
    finite, summary = values[np.isfinite(values)], results["summary"][name]
    assert summary["seeds"] == finite.size
    if finite.size:
      assert (summary["mean"], summary["std"]) == pytest.approx((finite.mean(), finite.std()))
    else:
      assert summary["mean"] is None
  assert all(name in rows[-1] for name in vanilla_gan.MODE_METRICS)


def small_config(**overrides) -> vanilla_gan.VanillaConfig:
  settings = dict(dataset="grid25", num_steps=30, batch_size=64, g_width=32, d_width=32,
                  g_depth=2, d_depth=2, packing=2, ema_decay=0.9, log_every_steps=10,
                  snapshot_every_steps=0, num_samples=500)
  return vanilla_gan.VanillaConfig(**dict(settings, **overrides))


def test_seed_k_of_a_vmapped_run_equals_a_run_of_seed_k_alone(tmp_path, monkeypatch):
  """Three seeds on two devices taken for accelerators (two seeds each: one padding run) against
  one seed on one device."""
  monkeypatch.setattr(parallel, "sharing_cores", lambda devices: None)
  together = vanilla_gan.train_and_evaluate(small_config(seed=3, num_seeds=3), tmp_path / "all",
                                            jax.devices()[:2])
  assert together["mesh"]["seed"] == 2 and together["padding_runs"] == 1
  assert together["seeds"] == [3, 4, 5] and len(together["per_seed"]) == 3
  alone = vanilla_gan.train_and_evaluate(small_config(seed=4, num_seeds=1), tmp_path / "one",
                                         jax.devices()[:1])
  samples_together = np.load(tmp_path / "all" / "final_samples.npy")
  samples_alone = np.load(tmp_path / "one" / "final_samples.npy")
  assert samples_together.shape == (3, 500, 2) and samples_alone.shape == (1, 500, 2)
  np.testing.assert_allclose(samples_together[1], samples_alone[0], rtol=1e-4, atol=1e-5)
  assert together["per_seed"][1] == pytest.approx(alone["per_seed"][0], nan_ok=True)
  # and the seeds differ from each other.
  assert np.max(np.abs(samples_together[0] - samples_together[1])) > 0.01
  # a run keeps no checkpoints to resume from: one of other flags in its workdir is refused, and
  # one while another is under way there (before that one has written anything)
  with pytest.raises(cli.UsageError, match=r"holds another run \(other --seed\)"):
    vanilla_gan.train_and_evaluate(small_config(seed=5, num_seeds=1), tmp_path / "one",
                                   jax.devices()[:1])
  (tmp_path / "new").mkdir()
  with workdir_lock.hold(str(tmp_path / "new")), pytest.raises(
      cli.UsageError, match=f"--workdir={tmp_path / 'new'} is in use by another run"):
    vanilla_gan.train_and_evaluate(small_config(), tmp_path / "new", jax.devices()[:1])
  np.testing.assert_array_equal(np.load(tmp_path / "one" / "final_samples.npy"), samples_alone)


def train_on_mesh(config: vanilla_gan.VanillaConfig, mesh_shape, calls: int):
  """``calls`` compiled chunks of ``config`` on the first devices as a (seed, batch) mesh."""
  devices = np.array(jax.devices()[:mesh_shape[0] * mesh_shape[1]]).reshape(mesh_shape)
  mesh = jax.sharding.Mesh(devices, (parallel.SEED_AXIS, parallel.AXIS_NAME))
  data = vanilla_gan.load_data(config.dataset)
  generator, discriminator = vanilla_gan.build_models(config, data.dim)
  state, keys, data, run = vanilla_gan.prepare_training(config, data, generator, discriminator,
                                                        mesh)
  for _ in range(calls):
    state, metrics = run(state, keys[:, 1], data.arrays)
  for leaf in jax.tree_util.tree_leaves((state, metrics)):  # batch shards hold equal copies
    copies = {}
    for shard in leaf.addressable_shards:
      copies.setdefault(str(shard.index), []).append(np.asarray(shard.data))
    for same_index in copies.values():
      assert all(np.array_equal(c, same_index[0]) for c in same_index)
  return jax.device_get((state, metrics))


# Not with the hinge or Wasserstein losses: at init some of their gradients cancel to about
# Adam's epsilon, and Adam turns the round-off of such a sum into updates of 1e-4.
@pytest.mark.parametrize("overrides", [
    dict(r1_penalty=0.1), dict(gradient_penalty=1.0, n_critic=2, spectral_norm=True)])
def test_seeds_with_their_batch_split_over_two_devices_each_equal_one_device(overrides):
  """2 seeds x 2 batch shards (gradients averaged across the shards) against one device."""
  config = small_config(num_seeds=2, **overrides)
  state_split, metrics_split = train_on_mesh(config, (2, 2), calls=2)
  state_one, metrics_one = train_on_mesh(config, (1, 1), calls=2)
  # every array of the states (params, optimizer moments, EMA); their modules differ as objects
  chex.assert_trees_all_close(jax.tree_util.tree_leaves(state_split),
                              jax.tree_util.tree_leaves(state_one), rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(metrics_split, metrics_one, rtol=1e-4, atol=1e-6)
  assert int(state_one.step[0]) == 2 * config.log_every_steps
  penalty = "r1_penalty" if config.r1_penalty else "gradient_penalty"
  assert float(metrics_one[penalty].min()) > 0  # the penalty is in play


@pytest.mark.parametrize("warmup_steps", [2, 0])
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_warms_up_linearly_then_stays_or_decays_to_zero(schedule, warmup_steps):
  config = vanilla_gan.VanillaConfig(lr_schedule=schedule, warmup_steps=warmup_steps,
                                     num_steps=6)
  adam = vanilla_gan.optimizer(config, 0.1, updates_per_step=2)  # 2 updates per step, 12 in all
  warmup = 2 * warmup_steps
  # for a constant gradient g, Adam's update is -rate * g / (|g| + eps): it reads out the rate
  # (up to float32 rounding of the bias corrections)
  state, rates = adam.init(jnp.zeros(())), []
  for _ in range(12):
    update, state = adam.update(jnp.ones(()), state)
    rates.append(-float(update))
  t = np.arange(12)
  after_warmup = (0.1 if schedule == "constant"
                  else 0.05 * (1 + np.cos(np.pi * (t - warmup) / (12 - warmup))))
  np.testing.assert_allclose(rates, np.where(t < warmup, 0.1 * t / max(warmup, 1), after_warmup),
                             rtol=3e-5, atol=1e-9)


@pytest.mark.parametrize("overrides, message", [
    (dict(dataset="cifar10"), "--dataset must be one of"),
    (dict(loss="vanilla"), "--loss must be one of"),
    (dict(num_steps=25), "not a multiple of --log_every_steps"),
    (dict(snapshot_every_steps=15), "--snapshot_every_steps=15"),
    (dict(batch_size=30, packing=4), "not a multiple of --packing=4"),
    (dict(num_seeds=0), "--num_seeds must be positive"),
    (dict(lr_schedule="linear"), "--lr_schedule must be one of"),
    (dict(warmup_steps=30), "--warmup_steps must be in"),
    (dict(ema_decay=1.0), "--ema_decay must be in"),
    (dict(r1_penalty=-0.1), "--r1_penalty must be >= 0"),
    (dict(beta2=1.0), r"--beta2 must be in \[0, 1\)"),
])
def test_bad_settings_raise_usage_error(overrides, message, tmp_path):
  with pytest.raises(cli.UsageError, match=message):
    vanilla_gan.train_and_evaluate(small_config(**overrides), tmp_path)
  assert not os.listdir(tmp_path)  # nothing written before the check


def test_command_line_reports_bad_input_in_one_line(tmp_path):
  result = run_cli(f"--workdir={tmp_path}", "--dataset=cifar10")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --dataset must be one of ring8, grid25, mnist, got 'cifar10'")
  # a text file given as --flagfile: its words are named, not all of them
  (tmp_path / "notes.txt").write_text("a note that is not a flagfile\n" * 100)
  result = run_cli(f"--workdir={tmp_path}", f"--flagfile={tmp_path / 'notes.txt'}")
  assert result.returncode == 2
  error = result.stderr.strip().splitlines()[-1]
  assert error.startswith("error: unexpected arguments a note that is not a flagfile a note")
  assert error.endswith("[...]; flags look like --name=value") and len(error) < 300


def test_a_device_count_in_xla_flags_is_not_silently_replaced(tmp_path):
  """The command makes its own CPU devices (--cpu_devices); one asked for in XLA_FLAGS is named
  in a warning (here before the run stops: its workdir is a file)."""
  (tmp_path / "file").write_text("")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=with_cpu_devices(
      os.environ["XLA_FLAGS"], 1))
  result = subprocess.run([sys.executable, "-m", "experiments.vanilla_gan", "--num_seeds=2",
                           f"--workdir={tmp_path / 'file'}", "--cpu_devices=2"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert ("XLA_FLAGS asks for 1 CPU devices, and this command makes 2 of its own: set them with "
          "--cpu_devices" in result.stderr)


@pytest.mark.parametrize("cpu_max, cores", [
    ("200000 100000\n", 2),  # docker --cpus=2
    ("150000 100000\n", 2),  # 1.5 CPUs of time: 2 threads can use it
    ("max 100000\n", 16),  # no quota
    ("garbled", 16),
    (None, 16),  # no cgroup v2 file
])
def test_available_cores_are_capped_by_a_container_cpu_quota(tmp_path, monkeypatch, cpu_max,
                                                             cores):
  monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: set(range(16)),
                      raising=False)
  path = tmp_path / "cpu.max"
  if cpu_max is not None:
    path.write_text(cpu_max)
  monkeypatch.setattr(parallel, "CGROUP_CPU_MAX", str(path))
  assert parallel.available_cores() == cores


@pytest.mark.parametrize("signal_at, steps, stopped_by", [(10, 10, "SIGTERM"), (30, 30, None)])
def test_sigterm_stops_after_the_chunk_under_way_and_writes_the_outputs_of_its_step(
    tmp_path, monkeypatch, signal_at, steps, stopped_by):
  """A signal in the last chunk (step 30 of 30) finds the run finished: it did not stop it."""
  write = vanilla_gan.RunLog.write

  def write_then_terminate(log, step, row):
    write(log, step, row)
    if step == signal_at:
      os.kill(os.getpid(), signal.SIGTERM)
  monkeypatch.setattr(vanilla_gan.RunLog, "write", write_then_terminate)
  with preemption.Preemption() as stop:
    results = vanilla_gan.train_and_evaluate(small_config(num_seeds=1), tmp_path / "run",
                                             jax.devices()[:1], stop)
  assert (results["steps"], results["stopped_by"]) == (steps, stopped_by)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    assert [strict_json(line)["step"] for line in f] == list(range(10, steps + 1, 10))
  assert np.load(tmp_path / "run" / "final_samples.npy").shape == (1, 500, 2)
  with open(tmp_path / "run" / "metrics.json") as f:
    assert strict_json(f.read())["steps"] == steps


def test_a_stopped_run_trains_again_from_step_0_and_a_finished_one_is_kept(tmp_path,
                                                                          monkeypatch):
  """Vanilla runs keep no checkpoints: the rerun of a stopped run (a scheduler's, after its
  status 143) trains it again, to bitwise the run that never stopped, with none of the stopped
  run's outputs left; the rerun of a finished run keeps it."""
  config, devices = small_config(num_seeds=1), jax.devices()[:1]
  vanilla_gan.train_and_evaluate(config, tmp_path / "whole", devices)
  run = tmp_path / "run"
  write = vanilla_gan.RunLog.write

  def write_then_terminate(log, step, row):
    write(log, step, row)
    if step == 10:
      os.kill(os.getpid(), signal.SIGTERM)
  with monkeypatch.context() as patch, preemption.Preemption() as stop:
    patch.setattr(vanilla_gan.RunLog, "write", write_then_terminate)
    assert vanilla_gan.train_and_evaluate(config, run, devices, stop)["steps"] == 10
  (run / "samples" / "step_000090.png").write_bytes(b"from a longer attempt")
  results = vanilla_gan.train_and_evaluate(config, run, devices)
  assert (results["steps"], results["stopped_by"]) == (30, None)
  np.testing.assert_array_equal(np.load(run / "final_samples.npy"),
                                np.load(tmp_path / "whole" / "final_samples.npy"))
  rows = [{k: v for k, v in row.items() if k != "steps_per_sec"}
          for row in run_log.read_metrics(str(run))]
  assert rows == [{k: v for k, v in row.items() if k != "steps_per_sec"}
                  for row in run_log.read_metrics(str(tmp_path / "whole"))]
  assert not (run / "samples" / "step_000090.png").exists()
  # finished: the same flags again keep its outputs and return its results
  outputs = {name: (run / name).read_bytes() for name in vanilla_gan.RUN_OUTPUTS}
  assert vanilla_gan.train_and_evaluate(config, run, devices) == strict_json(
      outputs["metrics.json"])
  assert {name: (run / name).read_bytes() for name in vanilla_gan.RUN_OUTPUTS} == outputs


def test_an_attempt_that_failed_before_its_first_row_leaves_nothing_to_keep(tmp_path):
  """Out of memory at the first chunk, say: its config.json and empty metrics.jsonl fix no
  flag, and the next attempt (a smaller batch) trains there."""
  vanilla_gan.write_json(str(tmp_path / "config.json"),
                         dataclasses.asdict(small_config(batch_size=10**9)))
  (tmp_path / "metrics.jsonl").write_text("")
  results = vanilla_gan.train_and_evaluate(small_config(num_seeds=1), tmp_path,
                                           jax.devices()[:1])
  assert results["steps"] == 30
  assert strict_json((tmp_path / "config.json").read_text())["batch_size"] == 64


def test_a_run_whose_every_step_skips_updates_stops_with_one_line(tmp_path):
  with pytest.raises(vanilla_gan.RunError, match="every step of every seed from step 1 to 10 "
                     r"skipped an update \(a non-finite loss, gradient or update\)"):
    vanilla_gan.train_and_evaluate(small_config(num_seeds=2, g_learning_rate=float("inf")),
                                   tmp_path, jax.devices()[:2])


def test_the_summary_over_seeds_leaves_out_undefined_values():
  summary = vanilla_gan.summarize([{"reverse_kl": 0.5, "modes": 8},
                                   {"reverse_kl": float("nan"), "modes": 0},
                                   {"reverse_kl": 1.5, "modes": 7}])
  assert summary["reverse_kl"] == {"mean": 1.0, "std": 0.5, "min": 0.5, "max": 1.5, "seeds": 2}
  assert summary["modes"]["seeds"] == 3 and summary["modes"]["mean"] == 5.0
  assert np.isnan(vanilla_gan.summarize([{"reverse_kl": float("nan")}])["reverse_kl"]["mean"])
