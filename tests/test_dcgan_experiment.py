"""The DCGAN experiment end to end: embedded MNIST, TFDS mock data, image folders (device
layouts: test_multiprocess.py)."""
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from gan_jax import checkpointing, cli, input_pipeline, trainer
from gan_jax.cli import UsageError
from tests import dcgan_runs

TINY = dcgan_runs.TINY_RUN + ["--num_final_samples=24"]


def config_from(flagfile=None, *overrides) -> trainer.TrainConfig:
  return dcgan_runs.config_from(flagfile, *TINY, *overrides)


def assert_outputs(workdir, config, n_logged_rows=2):
  res, ch = config.resolution, config.channels
  samples = np.load(os.path.join(workdir, "final_samples.npy"))
  assert samples.shape == (config.num_final_samples, res, res, ch) and samples.dtype == np.float32
  assert -1.0 <= samples.min() and samples.max() <= 1.0 and samples.std() > 0
  # they are the final checkpoint's generator on the run's fixed final latents
  step, state, _ = dcgan_runs.latest_checkpoint(workdir, config)
  assert step == config.num_steps
  np.testing.assert_allclose(samples, trainer.sampler(config)(state, trainer.latents(
      config, trainer.FINAL_LATENTS, config.num_final_samples)), atol=1e-6)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  training = [r for r in rows if "d_loss" in r]
  assert [r["step"] for r in training] == [2 * (i + 1) for i in range(n_logged_rows)]
  assert {"d_loss", "g_loss", "d_real", "d_fake", "steps_per_sec"} <= set(training[-1])
  assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in training)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_000002.png",
                                                                  "step_000004.png"]
  grid = np.asarray(Image.open(os.path.join(workdir, "final_grid.png")))
  assert grid.ndim in (2, 3) and grid.shape[0] > 8 * res
  interpolation = np.asarray(Image.open(os.path.join(workdir, "interpolation.png")))
  assert interpolation.shape[:2] == (2 * (8 * (res + 2) + 2),) * 2  # 8 x 8, padded, scaled 2x
  for name in ("curves.png", "config.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))


def test_default_flagfile_on_embedded_mnist_writes_every_output(tmp_path, monkeypatch):
  config = config_from("dcgan_mnist.flags")
  assert config.dataset == "mnist" and jax.local_device_count() == 4  # the pmap path
  summary = trainer.train_and_evaluate(config, str(tmp_path))
  assert summary["step"] == 4 and not summary["preempted"]
  assert_outputs(str(tmp_path), config)
  # scored at the end with the MNIST classifier, beside the real-vs-real floor
  evaluation = [r for r in trainer.read_metrics(str(tmp_path)) if "fid" in r]
  assert [r["step"] for r in evaluation] == [4]
  assert evaluation[0]["fid"] > 10 * evaluation[0]["real_fid"] > 0  # 4 steps: far from data
  assert os.listdir(tmp_path / "best") == ["4"]
  # the same command again, with other flags that would change only the outputs: nothing to do,
  # nothing rewritten (config.json still describes the outputs) or scored twice
  rows, mtime = trainer.read_metrics(str(tmp_path)), os.path.getmtime(tmp_path / "final_grid.png")
  saved_config = (tmp_path / "config.json").read_text()
  with monkeypatch.context() as patched:  # nor is the real data's reference built for nothing
    patched.setattr(trainer, "build_evaluator", lambda *_: pytest.fail("evaluator built"))
    again = trainer.train_and_evaluate(dataclasses.replace(config, num_final_samples=128),
                                       str(tmp_path))
  assert again["already_finished"] and again["step"] == 4
  assert trainer.read_metrics(str(tmp_path)) == rows
  assert os.path.getmtime(tmp_path / "final_grid.png") == mtime
  assert (tmp_path / "config.json").read_text() == saved_config
  (tmp_path / "config.json").unlink()  # lost: written again, for experiments.evaluate --workdir
  trainer.train_and_evaluate(config, str(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text()) == json.loads(saved_config)
  # experiments.evaluate: from the checkpoint and from final_samples.npy, the same score
  for args in (["--workdir", str(tmp_path)], ["--samples", str(tmp_path / "final_samples.npy"),
                                                "--resolution=32"]):
    output = tmp_path / "evaluation.json"
    result = subprocess.run([sys.executable, "-m", "experiments.evaluate", *args,
                             f"--output={output}"], cwd=dcgan_runs.ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fid" in result.stdout and "real vs real" in result.stdout
    scored = json.loads(output.read_text())
    assert scored["num_samples"] == 24
    assert scored.get("step") == (4 if args[0] == "--workdir" else None)
    np.testing.assert_allclose(scored["fid"], evaluation[0]["fid"], rtol=1e-4)
    np.testing.assert_allclose(scored["real_fid"], evaluation[0]["real_fid"], rtol=1e-6)
  # a run that kept too few final samples to score them can still be scored with more
  saved = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(dict(saved, num_final_samples=4)))
  result = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir",
                           str(tmp_path), "--num_samples=12", f"--output={output}"],
                          cwd=dcgan_runs.ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(output.read_text())["num_samples"] == 12


@pytest.mark.parametrize("flagfile, overrides", [
    ("dcgan_cifar10.flags", []),
    ("dcgan_celeba64.flags", []),  # 218x178 photos: central crop, resized to 64
    (None, ["--dataset=tfds:mnist", "--resolution=28"]),
])
def test_tfds_flagfiles_on_mock_data(tmp_path, flagfile, overrides):
  config = config_from(flagfile, *overrides)
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert_outputs(str(tmp_path), config)


def test_a_resume_on_another_tfds_version_warns_naming_the_version_trained_on(
    tmp_path, monkeypatch, caplog):
  """After a TFDS upgrade, a dataset named without a version reads the new one: of as many
  images, it is resumed (the size fixes the order), with a warning that names the old version."""
  config = config_from(None, "--dataset=tfds:mnist", "--resolution=28")
  opened = input_pipeline.TfdsSource.__init__

  def opened_as_an_older_version(self, *args, **kwargs):
    opened(self, *args, **kwargs)
    self.version = "2.0.0"

  caplog.set_level(logging.INFO, logger="absl")
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    with monkeypatch.context() as patched:
      patched.setattr(input_pipeline.TfdsSource, "__init__", opened_as_an_older_version)
      trainer.train_and_evaluate(config, str(tmp_path))
    assert "trained on version" not in caplog.text
    trainer.train_and_evaluate(dataclasses.replace(config, num_steps=6), str(tmp_path))
  assert ("checkpoint 4 was trained on version 2.0.0 of tfds:mnist, this run reads version 3.0.1 "
          "(of as many images)" in caplog.text)
  assert "pass --dataset=tfds:mnist:2.0.0 to read the version trained on" in caplog.text
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
  assert checkpoints.latest_record()[0] == 6
  assert checkpoints.latest_record()[1]["dataset_version"] == "3.0.1"
  checkpoints.close()


@dataclasses.dataclass(frozen=True)
class DenseConfig(trainer.TrainConfig):
  """An experiment of one's own: the loop's settings and one more."""
  hidden: int = cli.field(32, "Hidden units of the fully connected models.")


class DenseGenerator(nn.Module):
  """No batch norm, so no ``batch_norm_momentum``."""
  latent_dim: int
  shape: tuple
  hidden: int

  @nn.compact
  def __call__(self, z, train=True):
    x = nn.relu(nn.Dense(self.hidden)(z))
    return jnp.tanh(nn.Dense(np.prod(self.shape))(x)).reshape((-1,) + self.shape)


class DenseDiscriminator(nn.Module):
  hidden: int
  scores_examples_independently = True

  @nn.compact
  def __call__(self, x, train=True):
    x = nn.leaky_relu(nn.Dense(self.hidden)(x.reshape((len(x), -1))), 0.2)
    return nn.Dense(1)(x)[:, 0]


def dense_models(config: DenseConfig, axis_name):
  del axis_name  # no batch norm
  shape = (config.resolution, config.resolution, config.channels)
  return (DenseGenerator(config.latent_dim, shape, config.hidden),
          DenseDiscriminator(config.hidden))


def test_the_loop_trains_models_and_a_config_of_your_own(tmp_path):
  """``train_and_evaluate(..., models=)`` with a config subclass: its field is a flag and in
  config.json, and the final samples are the final checkpoint's EMA generator's (one without
  batch norm: no standing statistics)."""
  values = flags.FlagValues()
  cli.define_flags(DenseConfig, values)
  values(["dense", *TINY, "--resolution=28", "--hidden=16", "--ema_decay=0.9",
          "--eval_extractor=none"])
  config = cli.config_from_flags(DenseConfig, values)
  workdir = str(tmp_path)
  trainer.train_and_evaluate(config, workdir, models=dense_models)
  assert json.load(open(os.path.join(workdir, "config.json")))["hidden"] == 16
  generator, discriminator = dense_models(config, None)
  checkpoints = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  step, state, _ = checkpoints.restore_latest(trainer.initial_state(config, generator,
                                                                    discriminator))
  checkpoints.close()
  assert step == config.num_steps and state.generator.params["Dense_0"]["kernel"].shape[1] == 16
  z = trainer.latents(config, trainer.FINAL_LATENTS, config.num_final_samples)
  expected = generator.apply({"params": state.ema_params}, z, train=False)
  np.testing.assert_allclose(np.load(os.path.join(workdir, "final_samples.npy")), expected,
                             atol=1e-6)
  assert float(np.max(np.abs(expected - generator.apply({"params": state.generator.params}, z,
                                                          train=False)))) > 1e-4  # EMA differs


def test_image_folder_dataset(tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(10):
    size = (40 + 3 * i, 30 + 5 * i)
    Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(folder / f"{i}.png")
  config = config_from(None, f"--dataset=folder:{folder}", "--channels=3", "--resolution=32")
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert_outputs(str(tmp_path / "run"), config)
  # another image would change every epoch's order: a resume is refused, and nothing is lost
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "new.png")
  kept = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
  with pytest.raises(UsageError, match=r"the dataset has 11 images, and had 10 when checkpoint "
                                       r"\d+ .* was saved: the data order would change"):
    trainer.train_and_evaluate(dataclasses.replace(config, num_steps=config.num_steps + 2),
                               str(tmp_path / "run"))
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == kept


def test_an_image_that_fails_to_decode_mid_run_is_named_and_the_steps_before_it_are_kept(
    tmp_path, caplog):
  """Start-up reads only the files' headers: a cut-off file fails when its batch is read. The
  steps before are saved; with the file replaced, the run resumes to the run that never
  stopped."""
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(24):
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(folder / f"{i:02d}.png")
  config = config_from(None, f"--dataset=folder:{folder}", "--channels=3", "--resolution=32",
                       "--checkpoint_every_steps=100", "--eval_extractor=none")
  trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  source = input_pipeline.make_source(config.dataset, 32, 3)
  damaged = source.files[input_pipeline.BatchIterator(source, 8, config.seed).indices(2)[0]]
  intact = open(damaged, "rb").read()
  open(damaged, "wb").write(intact[:len(intact) // 2])
  caplog.set_level(logging.INFO, logger="absl")
  with pytest.raises(UsageError, match=f"cannot read image {re.escape(repr(damaged))} .*; "
                                       "replace it with a readable copy"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert "saved checkpoint 2 before stopping" in caplog.text
  assert os.listdir(tmp_path / "run" / "checkpoints") == ["2"]
  open(damaged, "wb").write(intact)
  assert trainer.train_and_evaluate(config, str(tmp_path / "run"))["start_step"] == 2
  untimed = lambda workdir: [{k: v for k, v in row.items() if k != "steps_per_sec"}
                             for row in trainer.read_metrics(str(workdir))]
  assert untimed(tmp_path / "run") == untimed(tmp_path / "straight")
  np.testing.assert_array_equal(np.load(tmp_path / "run" / "final_samples.npy"),
                                np.load(tmp_path / "straight" / "final_samples.npy"))


@pytest.mark.parametrize("name", trainer.RUN_FILES)
def test_a_folder_where_the_run_writes_a_file_is_refused_before_training(tmp_path, name):
  """Found at start, not after training when the file is written; the folder stays."""
  (tmp_path / name / "keep").mkdir(parents=True)
  with pytest.raises(UsageError, match=f"{name} is a folder, where the run writes its {name}"):
    trainer.prepare_workdir(str(tmp_path), config_from())
  assert os.listdir(tmp_path) == [name] and os.listdir(tmp_path / name) == ["keep"]


def test_the_real_reference_set_is_one_draw_for_every_seed(monkeypatch):
  """FIDs of runs with different --seed (or of outside samples) are scored against the same
  real images, a subset when the dataset is larger than --num_eval_real."""
  monkeypatch.setattr(trainer.evaluation, "Evaluator", lambda images, extractor: images)
  source = trainer.input_pipeline.mnist_source(28, 1)
  chosen = [trainer.build_evaluator(config_from(None, f"--seed={seed}", "--num_eval_real=1000",
                                                "--eval_extractor=mnist_classifier"), source)
            for seed in (0, 1)]
  assert chosen[0].shape == (1000, 28, 28, 1)
  np.testing.assert_array_equal(*chosen)


def test_best_checkpoint_is_the_lowest_fid_so_far_also_across_a_resume(tmp_path, monkeypatch):
  scripted_fids = iter([5.0, 3.0, 4.0, 3.5, 4.5])  # at steps 2, 4, 6, then 8, 10 after a resume
  monkeypatch.setattr(trainer, "build_evaluator", lambda config, source: (
      lambda samples: {"fid": next(scripted_fids), "real_fid": 0.0}))
  config = config_from(None, "--eval_every_steps=2", "--num_steps=6", "--resolution=28",
                       "--sample_every_steps=0")
  trainer.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / "best") == ["4"]
  trainer.train_and_evaluate(dataclasses.replace(config, num_steps=10), str(tmp_path))
  assert os.listdir(tmp_path / "best") == ["4"]  # 3.5 and 4.5 are worse than step 4's 3.0
  assert [r["fid"] for r in trainer.read_metrics(str(tmp_path)) if "fid" in r] == [
      5.0, 3.0, 4.0, 3.5, 4.5]


@pytest.mark.parametrize("resume_with, changed", [
    ({"inception_weights": "weights.npz"}, {"extractor": "inception"}),  # --eval_extractor=auto
    ({"num_final_samples": 300}, {"num_final_samples": 300}),
    ({"num_eval_real": 400}, {"num_eval_real": 400}),
])
def test_best_checkpoint_restarts_when_a_resume_scores_with_another_setup(tmp_path, monkeypatch,
                                                                          resume_with, changed):
  """FIDs of other features (the MNIST classifier, Inception) or of other sample counts do not
  compare: best/ records its scoring setup, and a resume that scores with another one lets its
  first score replace best/."""
  scripted_fids = iter([5.0, 3.0, 4.5, 6.0])  # steps 2, 4 (first setup); 6, 8 (second)
  monkeypatch.setattr(trainer, "build_evaluator", lambda config, source: (
      lambda samples: {"fid": next(scripted_fids), "real_fid": 0.0}))
  config = config_from(None, "--eval_every_steps=2", "--num_steps=4", "--resolution=28",
                       "--sample_every_steps=0")
  trainer.train_and_evaluate(config, str(tmp_path))
  weights = tmp_path / "weights.npz"
  weights.write_bytes(b"any bytes: the record holds their hash")
  if "inception_weights" in resume_with:
    resume_with = dict(resume_with, inception_weights=str(weights))
  trainer.train_and_evaluate(dataclasses.replace(config, num_steps=8, **resume_with),
                             str(tmp_path))
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "best"), read_only=True)
  step, record = checkpoints.latest_record()
  checkpoints.close()
  assert (step, record["fid"]) == (6, 4.5)
  assert {k: record[k] for k in changed} == changed
  assert record.get("weights_sha256") == (hashlib.sha256(weights.read_bytes()).hexdigest()
                                          if "extractor" in changed else None)


@pytest.mark.parametrize("num_eval_real, older_record, best, real_subset", [
    (400, ("real_subset", "fixed_settings"), (4, 4.5), "one draw per dataset"),  # replaced
    (5000, ("real_subset", "fixed_settings"), (2, 3.0), None),  # stands
    (400, ("real_subset",), (2, 3.0), None),  # stands: drawn as now
    (400, (), (2, 3.0), "one draw per dataset"),  # this version's
])
def test_a_best_checkpoint_of_an_older_version_compares_only_on_the_same_real_images(
    tmp_path, monkeypatch, num_eval_real, older_record, best, real_subset):
  """Versions that recorded neither the real subset nor fixed_settings drew the subset with
  --seed: their best/ gives way to the first new score when the FIDs use a subset of the real
  images (400 of MNIST's 5,000), and stands when they use all of them. Later versions drew it as
  now."""
  scripted_fids = iter([3.0, 4.5])  # step 2 (the older version), step 4
  monkeypatch.setattr(trainer, "build_evaluator", lambda config, source: (
      lambda samples: {"fid": next(scripted_fids), "real_fid": 0.0}))
  config = config_from(None, "--eval_every_steps=2", "--num_steps=2", "--resolution=28",
                       "--sample_every_steps=0", f"--num_eval_real={num_eval_real}")
  setup, record = trainer.scoring_setup, trainer._Run.record
  with monkeypatch.context() as older_version:
    older_version.setattr(trainer, "scoring_setup", lambda *args: {
        k: v for k, v in setup(*args).items() if k not in older_record})
    older_version.setattr(trainer._Run, "record", lambda *args: {
        k: v for k, v in record(*args).items() if k not in older_record})
    trainer.train_and_evaluate(config, str(tmp_path))
  trainer.train_and_evaluate(dataclasses.replace(config, num_steps=4), str(tmp_path))
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "best"), read_only=True)
  step, record = checkpoints.latest_record()
  checkpoints.close()
  assert (step, record["fid"]) == best and record.get("real_subset") == real_subset


@pytest.mark.parametrize("resumed_fids, best", [
    ((3.5, 3.2), (6, 3.0)),  # both worse than the killed run's step 6, which the rows lost
    ((2.5, 4.5), (6, 2.5)),  # a better step 6 replaces the killed run's step 6
])
def test_best_checkpoint_across_a_resume_from_before_it(tmp_path, monkeypatch, resumed_fids,
                                                        best):
  """Killed after scoring step 6 (best/6) but before checkpointing it, a run resumes from step 4:
  metrics.jsonl loses step 6's row, and best/6 is still what the resumed run must beat."""
  scripted_fids = iter((5.0, 4.0, 3.0) + resumed_fids)  # steps 2, 4, 6; then 6, 8
  monkeypatch.setattr(trainer, "build_evaluator", lambda config, source: (
      lambda samples: {"fid": next(scripted_fids), "real_fid": 0.0}))
  config = config_from(None, "--eval_every_steps=2", "--checkpoint_every_steps=4",
                       "--num_steps=6", "--resolution=28", "--sample_every_steps=0")
  trainer.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / "best") == ["6"]
  shutil.rmtree(tmp_path / "checkpoints" / "6")  # what a SIGKILL after the evaluation leaves
  os.remove(tmp_path / "final_samples.npy")

  trainer.train_and_evaluate(dataclasses.replace(config, num_steps=8), str(tmp_path))
  fids = [r["fid"] for r in trainer.read_metrics(str(tmp_path)) if "fid" in r]
  assert fids == [5.0, 4.0, *resumed_fids]
  checkpoints = checkpointing.Checkpointer(str(tmp_path / "best"), read_only=True)
  step, record = checkpoints.latest_record()
  checkpoints.close()
  assert (step, record["fid"]) == best and os.listdir(tmp_path / "best") == [str(best[0])]


def scripted_evaluator(monkeypatch, fids):
  """Evaluations that return the given FIDs in turn (and fail if called once more)."""
  fids = iter(fids)
  monkeypatch.setattr(trainer, "build_evaluator", lambda config, source: (
      lambda samples: {"fid": next(fids), "real_fid": 0.0}))


def test_every_output_of_a_step_is_written_before_its_checkpoint(tmp_path, monkeypatch):
  """A run resumed from checkpoint s starts at s + 1, so s's metrics row, score and sample grid
  must be on disk when s's checkpoint starts (a SIGKILL during the save lost them)."""
  scripted_evaluator(monkeypatch, [5.0, 3.0])
  written = {}
  save = trainer._Run.save

  def recording_save(run, step, wait=False):
    rows = trainer.read_metrics(str(tmp_path))
    written[step] = ({r["step"] for r in rows if "d_loss" in r},
                     {r["step"] for r in rows if "fid" in r},
                     sorted(os.listdir(tmp_path / "samples")))
    return save(run, step, wait)

  monkeypatch.setattr(trainer._Run, "save", recording_save)
  config = config_from(None, "--eval_every_steps=2", "--resolution=28")
  trainer.train_and_evaluate(config, str(tmp_path))
  assert written[2] == ({2}, {2}, ["step_000002.png"])
  assert written[4] == ({2, 4}, {2, 4}, ["step_000002.png", "step_000004.png"])


def test_a_run_killed_while_writing_its_final_outputs_writes_them_once_more(tmp_path,
                                                                            monkeypatch):
  """final_samples.npy is written last, whole: without it the rerun writes every final output
  again, the same, without scoring the last step twice."""
  scripted_evaluator(monkeypatch, [5.0, 3.0])  # a second score of step 4 would raise
  config = config_from(None, "--eval_every_steps=2", "--resolution=28")
  trainer.train_and_evaluate(config, str(tmp_path))
  first = np.load(tmp_path / "final_samples.npy")
  rows = trainer.read_metrics(str(tmp_path))
  os.remove(tmp_path / "final_samples.npy")  # what a SIGKILL while writing it leaves
  (tmp_path / "final_grid.png").write_bytes(b"")
  summary = trainer.train_and_evaluate(config, str(tmp_path))
  assert summary["fid"] == 3.0 and trainer.read_metrics(str(tmp_path)) == rows
  np.testing.assert_array_equal(np.load(tmp_path / "final_samples.npy"), first)
  assert os.path.getsize(tmp_path / "final_grid.png") > 0
  assert os.listdir(tmp_path / "best") == ["4"]


def test_a_kill_while_best_is_saved_at_the_last_step_is_scored_again(tmp_path, monkeypatch):
  """The score's row comes after best/'s save: without it, the rerun scores the step again and
  best/ gets it."""
  scripted_evaluator(monkeypatch, [5.0, 5.0])
  config = config_from(None, "--resolution=28", "--sample_every_steps=0")  # scored at the end
  replace = checkpointing.Checkpointer.replace

  def killed(*args, **kwargs):
    raise KeyboardInterrupt("a SIGKILL while best/ is saved")

  monkeypatch.setattr(checkpointing.Checkpointer, "replace", killed)
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not [r for r in trainer.read_metrics(str(tmp_path)) if "fid" in r]
  monkeypatch.setattr(checkpointing.Checkpointer, "replace", replace)
  assert trainer.train_and_evaluate(config, str(tmp_path))["fid"] == 5.0
  assert os.listdir(tmp_path / "best") == ["4"]


def test_a_score_where_a_time_budget_stopped_the_run_does_not_take_best(tmp_path, monkeypatch):
  """A run without the stop would not score that step: best/ is what it would hold. The stop
  step has its metrics row, though a checkpoint read its metrics off the row schedule."""
  scripted_evaluator(monkeypatch, [1.0, 5.0, 4.0])  # step 1 (the stop), then steps 2 and 4
  config = config_from(None, "--eval_every_steps=2", "--resolution=28", "--sample_every_steps=0",
                       "--checkpoint_every_steps=1", "--log_every_steps=50")
  summary = trainer.train_and_evaluate(dataclasses.replace(config, max_train_minutes=1e-9),
                                       str(tmp_path))
  assert summary["time_limited"] and summary["step"] == 1 and summary["fid"] == 1.0
  assert np.isfinite(summary["d_loss"]) and not os.listdir(tmp_path / "best")
  assert [r["step"] for r in trainer.read_metrics(str(tmp_path)) if "d_loss" in r] == [1]
  trainer.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / "best") == ["4"]
