"""The vanilla GAN experiment: end to end from its flagfiles, seeds vmapped == seeds run alone."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import vanilla_gan
from gan_jax import cli, distributions
from gan_jax.metrics import modes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT_RUN = ["--num_steps=20", "--log_every_steps=10", "--snapshot_every_steps=10",
             "--num_seeds=2", "--num_samples=64"]


def run_cli(*flags, timeout=300):
  # without the 4 devices of conftest.py: the command makes its own CPU devices
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "experiments.vanilla_gan", *flags], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def assert_picture(path):
  with Image.open(path) as picture:
    assert picture.width > 100 and picture.height > 100


@pytest.mark.slow
@pytest.mark.parametrize("flagfile", ["ring8", "grid25", "mnist_mlp"])
def test_experiment_runs_from_its_flagfile_and_writes_every_output(flagfile, tmp_path):
  result = run_cli(f"--flagfile=experiments/configs/{flagfile}.flags", f"--workdir={tmp_path}",
                   *SHORT_RUN)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "2 seed(s) of" in result.stderr and "on 2 device(s)" in result.stderr  # one per seed
  samples = np.load(tmp_path / "final_samples.npy")
  assert samples.dtype == np.float32 and np.all(np.isfinite(samples))
  with open(tmp_path / "metrics.json") as f:
    results = json.load(f)
  assert results["seeds"] == [0, 1] and results["config"]["num_steps"] == 20
  assert results["devices"] == 2
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [row["step"] for row in rows] == [10, 20]
  assert all(np.isfinite(row["d_loss"]) and 0 < row["d_real"] < 1 for row in rows)
  for name in ("samples/step_000010.png", "samples/step_000020.png", "final_samples.png",
               "curves.png"):
    assert_picture(tmp_path / name)

  if flagfile == "mnist_mlp":
    assert samples.shape == (2 * 64, 28, 28, 1)
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    return
  mixture = distributions.get_toy_dataset(flagfile)
  assert samples.shape == (2, 64, 2)
  # metrics.json holds the mode metrics of exactly these samples, and their mean and std.
  for seed_samples, reported in zip(samples, results["per_seed"]):
    expected = modes.mode_metrics(seed_samples, mixture.means, mixture.stds)
    assert {k: reported[k] for k in expected} == pytest.approx(expected, nan_ok=True)
  for name in vanilla_gan.MODE_METRICS:
    values = [m[name] for m in results["per_seed"]]
    assert results["summary"][name]["mean"] == pytest.approx(np.mean(values), nan_ok=True)
    assert results["summary"][name]["std"] == pytest.approx(np.std(values), nan_ok=True)
  assert all(name in rows[-1] for name in vanilla_gan.MODE_METRICS)


def small_config(**overrides) -> vanilla_gan.VanillaConfig:
  settings = dict(dataset="grid25", num_steps=30, batch_size=64, g_width=32, d_width=32,
                  g_depth=2, d_depth=2, packing=2, ema_decay=0.9, log_every_steps=10,
                  snapshot_every_steps=0, num_samples=50)
  return vanilla_gan.VanillaConfig(**dict(settings, **overrides))


def test_seed_k_of_a_vmapped_run_equals_a_run_of_seed_k_alone(tmp_path):
  """Three seeds on three of the four test devices against one seed on one device."""
  together = vanilla_gan.train_and_evaluate(small_config(seed=3, num_seeds=3), tmp_path / "all")
  alone = vanilla_gan.train_and_evaluate(small_config(seed=4, num_seeds=1), tmp_path / "one")
  samples_together = np.load(tmp_path / "all" / "final_samples.npy")
  samples_alone = np.load(tmp_path / "one" / "final_samples.npy")
  assert samples_together.shape == (3, 50, 2) and samples_alone.shape == (1, 50, 2)
  np.testing.assert_allclose(samples_together[1], samples_alone[0], rtol=1e-4, atol=1e-5)
  assert together["per_seed"][1] == pytest.approx(alone["per_seed"][0], nan_ok=True)
  # and the seeds differ from each other.
  assert np.max(np.abs(samples_together[0] - samples_together[1])) > 0.01


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
