"""Bad input: one line that says what is wrong and what to do, a non-zero exit, no traceback."""
import dataclasses
import json
import logging as std_logging
import os
import re
import subprocess
import sys
from typing import Optional

import numpy as np
import pytest
from absl import flags
from PIL import Image

from benchmarks import commands
from gan_jax import checkpointing, cli, run_log, trainer
from gan_jax.metrics import inception
from gan_jax.cli import RunError, UsageError
from tests import dcgan_runs

TINY = ["--g_width=8", "--d_width=8", "--batch_size=8", "--num_steps=2", "--resolution=28"]


@pytest.mark.parametrize("flags, message", [
    (["--dataset=imagenet"], "unknown --dataset='imagenet'; use mnist, tfds:NAME"),
    (["--dataset=tfds:mnist", "--data_dir={tmp}"], r"not prepared in .* `tfds build mnist"),
    (["--dataset=folder:{tmp}"], "holds no image files"),
    (["--batch_size=0"], "--batch_size must be positive"),
    (["--batch_size=-8"], "--batch_size must be positive"),
    (["--batch_size=6"], "not divisible by the 4 devices; use a multiple of 4"),
    (["--num_steps=-1"], "--num_steps must be >= 0"),
    (["--max_train_minutes=-1"], "--max_train_minutes must be >= 0"),
    (["--data_cache_gib=-1"], "--data_cache_gib must be >= 0"),
    (["--resolution=48"], "--resolution must be one of 28, 32, 64"),
    (["--loss=wgan"], "--loss must be one of"),
    (["--d_norm=group"], "--d_norm must be one of batch, layer, spectral, none"),
    (["--r1_penalty=1"], "batch-norm discriminator .* add --d_norm=layer"),
    (["--gradient_penalty=-10", "--d_norm=layer"], "--gradient_penalty must be >= 0"),
    (["--d_learning_rate=0"], "--d_learning_rate must be positive"),
    (["--ema_decay=nan"], "--ema_decay must be a finite number, got nan"),
    (["--max_train_minutes=inf"], "--max_train_minutes must be a finite number, got inf"),
    (["--beta1=-0.5"], r"--beta1 must be in \[0, 1\)"),
    (["--seed=-1"], r"--seed must be in \[0, 4294967295\], got -1"),
    (["--seed=4294967296"], r"--seed must be in \[0, 4294967295\], got 4294967296"),
    (["--sample_every_steps=-1"], "--sample_every_steps must be >= 0"),
    (["--eval_every_steps=-5"], "--eval_every_steps must be >= 0"),
    (["--num_final_samples=0"], "--num_final_samples must be positive"),
    (["--num_eval_real=-5"], "--num_eval_real must be positive"),
    (["--num_final_samples=5", "--eval_extractor=mnist_classifier"],
     "--num_final_samples=5 is too few to score"),
    (["--num_final_samples=100001"], "--num_final_samples=100001 is more than 100,000, which are "
     "held in memory at once"),
    (["--inception_weights={tmp}/w.npz", "--eval_extractor=mnist_classifier"],
     "--inception_weights is for --eval_extractor=inception .*, not "
     "--eval_extractor=mnist_classifier"),
    (["--data_dir={tmp}"], "--data_dir is a TFDS dataset's; --dataset=mnist does not read it"),
    (["--split=test"], "--split is a TFDS dataset's; --dataset=mnist does not read it"),
    (["--dataset=folder:{tmp}", "--image_feature=hr"], "--image_feature is a TFDS dataset's; "
     "--dataset=folder:.* does not read it"),
    (["--dataset=tfds:mnist", "--data_dir={tmp}/nothing"],
     "--data_dir=.*nothing does not exist or is not a folder; pass the folder that `tfds build "
     "mnist --file_format=array_record --data_dir=DIR` prepared"),
])
def test_bad_settings_raise_one_usage_error(tmp_path, flags, message):
  flags = [f.format(tmp=tmp_path) for f in flags]
  with pytest.raises(UsageError, match=message) as error:
    trainer.train_and_evaluate(dcgan_runs.config_from(None, *TINY, *flags),
                               str(tmp_path / "run"))
  assert "\n" not in str(error.value)


def test_a_run_that_fails_to_start_does_not_fix_the_next_attempts_flags(tmp_path):
  with pytest.raises(UsageError, match="holds no image files"):
    trainer.train_and_evaluate(dcgan_runs.config_from(None, *TINY, f"--dataset=folder:{tmp_path}"),
                               str(tmp_path / "run"))
  assert not (tmp_path / "run" / "config.json").exists()
  trainer.prepare_workdir(str(tmp_path / "run"), dcgan_runs.config_from(None, *TINY))  # accepted


def test_an_attempt_that_died_before_its_first_checkpoint_fixes_no_flag(tmp_path):
  """Its config.json is there (written before the first step), but no checkpoint: the next
  attempt may change the batch size; a resume from a checkpoint may not (test_reliability)."""
  run, config = str(tmp_path / "run"), dcgan_runs.config_from(None, *TINY)
  trainer.prepare_workdir(run, config)
  trainer.save_config(run, config)
  os.makedirs(os.path.join(run, "checkpoints"))
  trainer.prepare_workdir(run, dcgan_runs.config_from(None, *TINY, "--batch_size=4"))  # accepted


@pytest.mark.parametrize("contents, message", [
    ({"metrics.jsonl": "{}\n", "metrics.json": "{}"}, "holds metrics.jsonl of another kind of run"),
    ({"final_samples.npy": ""}, "holds final_samples.npy of another kind of run"),
    ({"config.json": "{not json", "metrics.jsonl": ""},
     "cannot read .*config.json as a run's configuration"),
    ({"config.json": "[1, 2]"}, "config.json holds no run's configuration"),
    ({"checkpoints": "a file"}, "checkpoints is a file, where the run keeps its checkpoints"),
    ({"samples": "a file"}, "samples is a file"),
])
def test_a_workdir_the_run_cannot_take_over_is_refused_and_kept(tmp_path, contents, message):
  """Another kind of run's outputs (a vanilla GAN's, say), a config.json that cannot be read, or a
  file where the run keeps a folder: one UsageError, and every file stays as it was."""
  for name, text in contents.items():
    (tmp_path / name).write_text(text)
  with pytest.raises(UsageError, match=message):
    trainer.prepare_workdir(str(tmp_path), dcgan_runs.config_from(None, *TINY))
  assert {p.name: p.read_text() for p in tmp_path.iterdir()} == contents


@pytest.mark.parametrize("path, message", [("", "--output names no file"),
                                           ("{tmp}", "--output={tmp} is a folder; name a file"),
                                           ("{tmp}/file/x.json", "cannot write to '{tmp}/file'")])
def test_an_output_file_that_cannot_be_written_is_refused_before_any_work(tmp_path, path,
                                                                          message):
  (tmp_path / "file").write_text("")
  with pytest.raises(UsageError, match=re.escape(message.format(tmp=tmp_path))):
    cli.require_writable_file(path.format(tmp=tmp_path), "--output")
  assert cli.require_writable_file(str(tmp_path / "new" / "x.json"), "--output")
  assert (tmp_path / "new").is_dir()


def test_a_log_that_fails_to_close_still_lets_the_checkpoints_finish(tmp_path, monkeypatch):
  """Closing a run waits for its checkpoint saves, even when the log before them fails to close
  (a full disk): a library caller's next run must not meet a save still under way."""
  closed = []
  close = checkpointing.Checkpointer.close

  def failing_close(self):
    raise RunError("could not write metrics.jsonl (full disk)")

  monkeypatch.setattr(run_log.RunLog, "close", failing_close)
  monkeypatch.setattr(checkpointing.Checkpointer, "close",
                      lambda self: closed.append(os.path.basename(self.directory)) or close(self))
  with pytest.raises(RunError, match="could not write metrics.jsonl"):
    trainer.train_and_evaluate(dcgan_runs.config_from(None, *TINY, "--num_final_samples=24",
                                                      "--num_eval_real=200"),
                               str(tmp_path / "run"))
  assert sorted(closed) == ["best", "checkpoints"]


def test_unwritable_workdir_is_a_usage_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(UsageError, match=r"cannot write to .*run' \(--workdir: "):
    trainer.train_and_evaluate(dcgan_runs.config_from(None, *TINY), str(blocker / "run"))


def test_orbax_errors_show_without_their_tracebacks_and_its_info_lines_not_at_all():
  try:
    raise OSError(28, "No space left on device")
  except OSError:
    failure = sys.exc_info()
  record = lambda level, path: std_logging.LogRecord("absl", level, path, 1, "save failed", (),
                                                     failure)
  quiet = cli._QuietLibraries()
  orbax_error = record(std_logging.ERROR, "/site-packages/orbax/checkpoint/future.py")
  assert quiet.filter(orbax_error) and orbax_error.exc_info is None
  assert not quiet.filter(record(std_logging.INFO, "/site-packages/orbax/checkpoint/x.py"))
  own_error = record(std_logging.ERROR, "/gan_jax/trainer.py")
  assert quiet.filter(own_error) and own_error.exc_info == failure


@pytest.mark.parametrize("slash", ["", "/"])
def test_a_workdir_linked_to_a_missing_folder_is_named_as_such(tmp_path, slash):
  (tmp_path / "run").symlink_to(tmp_path / "gone")
  with pytest.raises(UsageError, match=re.escape(
      f"--workdir={tmp_path}/run{slash} is a link to {tmp_path}/gone, which does not exist; "
      "create that folder or mend the link")):
    trainer.train_and_evaluate(dcgan_runs.config_from(None, *TINY), f"{tmp_path}/run{slash}")


def test_a_url_workdir_is_refused_not_taken_for_a_local_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(UsageError, match="--workdir=gs://bucket/run is a URL; .* mount the bucket"):
    trainer.train_and_evaluate(dcgan_runs.config_from(None, *TINY), "gs://bucket/run")
  assert not os.listdir(tmp_path)  # no local gs: folder


@pytest.mark.parametrize("args, message", [
    (["--batchsize=8"], "error: Unknown command line flag 'batchsize'. Did you mean: batch_size"),
    (["--batch_size=6"], "error: --batch_size=6 is not divisible by the 4 devices"),
    (["--dataset=folder:/no/such/dir"], "error: image folder '/no/such/dir' does not exist"),
    (["--eval_extractor=inception"], "error: --eval_extractor=inception needs --inception_weights"),
    (["--flagfile={tmp}/binary.flags"], "error: a --flagfile is not text"),
    (["--flagfile={tmp}/missing.flags"], "error: Unable to open flagfile: [Errno 2] No such file"),
    (["--num_processes=2", "--process_id=1"],
     "error: --num_processes, --process_id without --distributed: each process would train alone"),
])
def test_command_prints_one_error_line_and_exits_2(tmp_path, args, message):
  (tmp_path / "binary.flags").write_bytes(b"--seed=1\n\xff\xfe\x00")
  result = dcgan_runs.run_command(tmp_path / "run", TINY + [a.format(tmp=tmp_path) for a in args])
  assert result.returncode == 2
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(message), result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_tfds_data_that_is_not_prepared_is_one_line_without_the_warnings_of_tfds(tmp_path):
  """TFDS warns about the folders it does not find before failing; the error says it all."""
  (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)  # a version folder without its files
  result = dcgan_runs.run_command(tmp_path / "run", TINY + ["--dataset=tfds:mnist",
                                                          f"--data_dir={tmp_path}"])
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: TFDS dataset 'mnist' is not prepared"), result.stderr
  assert not [line for line in result.stderr.splitlines() if line.startswith("W")], result.stderr


def test_verbose_shows_the_traceback_and_keeps_the_exit_status(tmp_path):
  result = dcgan_runs.run_command(tmp_path / "run", TINY + ["--batch_size=6", "--verbose"])
  assert result.returncode == 2 and "Traceback" in result.stderr
  assert result.stderr.splitlines()[-1].startswith("error: --batch_size=6 is not divisible")


STUCK_THREAD_SCRIPT = """
import threading
from gan_jax import cli
def main(argv):
  threading.Thread(target=threading.Event().wait).start()  # never ends, as orbax's after a failure
  raise cli.RunError("the run cannot go on")
cli.run(main)
"""


def test_an_error_exits_even_when_a_library_thread_is_stuck(tmp_path):
  result = subprocess.run([sys.executable, "-c", STUCK_THREAD_SCRIPT], capture_output=True,
                          text=True, timeout=120, cwd=dcgan_runs.ROOT)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == "error: the run cannot go on"


def test_reports_of_reads_into_a_closed_event_loop_are_dropped_and_others_kept():
  """What orbax's reads still under way print after a failed restore (one per read)."""
  script = ("from gan_jax import cli\n"
            "class Report:\n"
            "  def __init__(self, error):\n    self.error = error\n"
            "  def __del__(self):\n    raise self.error\n"
            "def main(argv):\n"
            "  Report(RuntimeError('Event loop is closed'))\n"
            "  Report(ValueError('something else'))\n"
            "cli.run(main)\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=dcgan_runs.ROOT)
  assert result.returncode == 0 and "Event loop is closed" not in result.stderr
  assert "ValueError: something else" in result.stderr


@pytest.mark.parametrize("allocation, cause", [
    ("numpy.empty((10**7, 10**7))", "Unable to allocate 728. TiB"),
    ("jax.numpy.zeros((10**7, 10**7))", "RESOURCE_EXHAUSTED: Out of memory allocating"),
    # as a vanilla GAN of --g_width=200000 runs out where the sharded program is dispatched
    ("raise jax.errors.JaxRuntimeError('INTERNAL: Error dispatching computation: Out of memory "
     "allocating 160000000000 bytes.')", "INTERNAL: Error dispatching computation: Out of memory"),
])
def test_running_out_of_memory_is_one_line_and_status_1(allocation, cause):
  """A model, batch or sample count too large for host or device memory (fuzzing found a
  90-line traceback for --latent_dim=1000000000)."""
  script = (f"import jax, jax.numpy, numpy\nfrom gan_jax import cli\n"
            f"def main(argv):\n  {allocation}\ncli.run(main)\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=dcgan_runs.ROOT)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(f"error: out of memory ({cause}")


def test_a_file_that_is_not_inception_weights_gets_advice_that_keeps_it(tmp_path):
  """The advice converts into a new file, not over the user's (here a text file)."""
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(UsageError, match=r"cannot read Inception weights .*notes.txt' as an .npz "
                     r"\(\w+: .+\); pass the .npz .* --output=inception_fid.npz`") as error:
    inception.load_inception(str(tmp_path / "notes.txt"))
  assert "\n" not in str(error.value)


def test_a_ctrl_c_the_command_does_not_handle_is_one_line_and_status_130():
  script = ("from gan_jax import cli\n"
            "def main(argv):\n  raise KeyboardInterrupt\n"
            "cli.run(main)\n")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=dcgan_runs.ROOT)
  assert result.returncode == 130 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("interrupted (Ctrl-C)")


@pytest.mark.parametrize("module, flag", [("dcgan", "--batch_size"),
                                          ("vanilla_gan", "--num_seeds")])
def test_helpshort_lists_the_experiment_flags(module, flag):
  """Every flag error points to --helpshort; it must show the experiment's own flags."""
  result = subprocess.run([sys.executable, "-m", f"experiments.{module}", "--helpshort"],
                          capture_output=True, text=True, cwd=dcgan_runs.ROOT)
  assert f"  {flag}:" in result.stdout + result.stderr


@pytest.mark.parametrize("module, args, message", [
    ("experiments.vanilla_gan", ["--workdir={tmp}/run", "--packing=0"],
     "error: --packing must be positive"),
    ("experiments.vanilla_gan", ["--workdir={tmp}/run", "--num_steps=0"],
     "error: --num_steps must be positive, got 0"),
    ("experiments.vanilla_gan", ["--workdir={tmp}/run", "--seed=4294967290", "--num_seeds=10"],
     "error: --seed must be in [0, 4294967286] with --num_seeds=10, got 4294967290"),
    ("experiments.vanilla_gan", ["--workdir={tmp}/run", "--g_learning_rate=inf"],
     "error: --g_learning_rate must be a finite number, got inf"),
    ("experiments.vanilla_gan", ["--workdir={tmp}/run", "--num_samples=100"],
     "error: --num_samples=100 cannot show all 8 modes of ring8 covered (each needs 20 "
     "high-quality samples): use at least 160"),
    ("experiments.vanilla_gan", ["--workdir={tmp}/run", "--num_samples=200000"],
     "error: --num_samples=200000 is more than 100,000"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--eval_extractor=bogus"],
     "error: --eval_extractor must be one of auto, mnist_classifier, inception, none"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--eval_extractor=inception"],
     "error: --eval_extractor=inception needs --inception_weights"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--inception_weights={tmp}/no.npz"],
     "error: Inception weights '{tmp}/no.npz' not found"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--resolution=-4"],
     "error: --resolution must be one of 28, 32, 64, got -4"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--output={tmp}/junk.npy/out.json"],
     "error: cannot write to '{tmp}/junk.npy' (--output: "),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--output=gs://bucket/eval.json"],
     "error: --output=gs://bucket is a URL"),
    ("experiments.evaluate", ["--workdir={tmp}/garbled"],
     "error: cannot read {tmp}/garbled/config.json as a run's configuration"),
    ("experiments.evaluate", ["--workdir={tmp}/other_version"],
     "error: cannot read {tmp}/other_version/config.json as a run's configuration"),
    ("experiments.evaluate", ["--samples={tmp}/junk.npy", "--resolution=32"],
     "error: cannot read"),
    ("experiments.evaluate", ["--workdir={tmp}", "--resolution=32"],
     "error: --resolution: the run's config.json names its data"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--num_samples=10"],
     "error: --num_samples=10 but"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--dataset=folder:{tmp}/few",
                              "--eval_extractor=mnist_classifier"],
     "error: the real images to score against are too few: 3 (folder:{tmp}/few has 3"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--output={tmp}/garbled"],
     "error: --output={tmp}/garbled is not a .json file"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--output={tmp}/folder.json"],
     "error: --output={tmp}/folder.json is a folder; name a file"),
    ("experiments.evaluate", ["--samples={tmp}/c3.npy"], "error: {tmp}/c3.npy holds 32x32x3 "
     "images but the real data (mnist) is 28x28x1: pass the --dataset they imitate, with "
     "--resolution=32 --channels=3"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--resolution=64", "--channels=3"],
     "error: {tmp}/four.npy holds 28x28x1 images but the real data (mnist) is 64x64x3: pass the "
     "--dataset they imitate, with --resolution=28 --channels=1"),
    ("experiments.evaluate", ["--workdir={tmp}/garbled", "--num_samples=1000000000"],
     "error: --num_samples must be in [1, 100,000] (all the images are held in memory at once), "
     "got 1000000000"),
    ("experiments.convert_inception_weights", ["--input={tmp}/four.npy", "--output={tmp}/garbled"],
     "error: --output={tmp}/garbled is a folder; name a file"),
    ("experiments.convert_inception_weights", ["--input={tmp}/no.pth", "--output={tmp}/w.npz"],
     "error: --input={tmp}/no.pth is not a file; download pytorch-fid's weights from https://"),
    ("experiments.train_classifier", ["--output={tmp}/c.msgpack", "--epochs=0"],
     "error: --epochs must be positive, got 0"),
    ("experiments.train_classifier", ["--output={tmp}/c.msgpack", "--batch_size=100000"],
     "error: --batch_size must be in [1, 4500] (the training digits), got 100000"),
    ("experiments.train_classifier", ["--output={tmp}/four.npy"],
     "error: --output={tmp}/four.npy exists; pass --overwrite to replace it"),
    ("experiments.train_classifier", ["--output={tmp}/c.msgpack", "--epochs=1", "--max_shift=28"],
     "error: --max_shift must be in [0, 28) (the image size), got 28"),
    ("experiments.theory", ["--workdir={tmp}/lab", "--seed=-1"],
     "error: --seed must be in [0, 4294967295], got -1"),
    ("benchmarks.dcgan_throughput", ["--peak_tflops=0"], "error: flag --peak_tflops=0.0: "
     "--peak_tflops must be a positive number"),
    ("benchmarks.dcgan_throughput", ["--peak_tflops=inf"], "error: flag --peak_tflops=inf: "
     "--peak_tflops must be a positive number"),
    ("benchmarks.dcgan_throughput", ["--resolution=48"], "error: flag --resolution=48: "
     "--resolution must be 32 or 64"),
    ("benchmarks.toy_throughput", ["--torch_python={tmp}/junk.npy"],
     "error: flag --torch_python="),
    ("benchmarks.toy_throughput", ["--steps=1000", "--chunk=300"],
     "error: flags steps=1000, chunk=300: --steps must be a multiple of --chunk"),
])
def test_other_commands_print_one_error_line(tmp_path, module, args, message):
  (tmp_path / "junk.npy").write_bytes(b"not an array")
  np.save(tmp_path / "four.npy", np.zeros((4, 28, 28, 1), np.float32))
  np.save(tmp_path / "c3.npy", np.zeros((4, 32, 32, 3), np.float32))
  (tmp_path / "few").mkdir()
  (tmp_path / "folder.json").mkdir()
  for i in range(3):
    Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(tmp_path / "few" / f"{i}.png")
  for run, config in (("garbled", "garbage"), ("other_version", '{"old_removed_flag": 1}')):
    (tmp_path / run).mkdir()
    (tmp_path / run / "config.json").write_text(config)
  command = [sys.executable, "-m", module, *[a.format(tmp=tmp_path) for a in args]]
  result = subprocess.run(command, capture_output=True, text=True, cwd=dcgan_runs.ROOT)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith(message.format(tmp=tmp_path)), result.stderr[-2000:]


def files_in(folder) -> dict:
  """Every file under ``folder``: its path there and its bytes."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("module, args, message", [
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--output={tmp}/four.npy"],
     "error: --output={tmp}/four.npy is not a .json file; the results are JSON: name a new .json "
     "file with --output"),
    ("experiments.evaluate", ["--workdir={tmp}/run", "--output={tmp}/run/config.json"],
     "error: --output={tmp}/run/config.json exists and holds no earlier result of "
     "experiments.evaluate; name a new .json file with --output"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--output={tmp}/notes.json"],
     "error: --output={tmp}/notes.json exists and holds no earlier result of experiments.evaluate"),
    ("experiments.evaluate", ["--samples={tmp}/four.npy", "--output={tmp}/new/results.txt"],
     "error: --output={tmp}/new/results.txt is not a .json file"),
    ("experiments.evaluate", ["--samples={tmp}/missing.npy", "--output={tmp}/new/results.json"],
     "error: samples file '{tmp}/missing.npy' not found"),
    ("experiments.convert_inception_weights", ["--input={tmp}/missing.pth",
                                                "--output={tmp}/new/weights.npz"],
     "error: --input={tmp}/missing.pth is not a file"),
    ("experiments.train_classifier", ["--output={tmp}/c.json", "--epochs=1"],
     "error: --output={tmp}/c.json ends in .json, the extension of the accuracy record written "
     "beside the weights; pass --output={tmp}/c.msgpack"),
    ("experiments.train_classifier", ["--output={tmp}/notes.msgpack", "--epochs=1"],
     "error: {tmp}/notes.json (the accuracy record beside --output) exists; pass --overwrite to "
     "replace it, or name another file"),
    ("experiments.convert_inception_weights", ["--input={tmp}/four.npy",
                                                "--output={tmp}/weights.npz"],
     "error: --output={tmp}/weights.npz exists; pass --overwrite to replace it"),
])
def test_commands_refuse_to_write_over_a_file_and_keep_every_file(tmp_path, module, args,
                                                                   message):
  """The samples, a run's config.json, a file of the user's: one error line, before any work, and
  every file stays as it was (none added, and no folder made for a refused output)."""
  np.save(tmp_path / "four.npy", np.zeros((4, 28, 28, 1), np.float32))
  (tmp_path / "notes.json").write_text('{"mine": 1}')
  (tmp_path / "weights.npz").write_bytes(b"earlier weights")
  (tmp_path / "run").mkdir()
  trainer.save_config(str(tmp_path / "run"), trainer.TrainConfig())
  before, folders = files_in(tmp_path), sorted(tmp_path.rglob("*"))
  command = [sys.executable, "-m", module, *[a.format(tmp=tmp_path) for a in args]]
  result = subprocess.run(command, capture_output=True, text=True, cwd=dcgan_runs.ROOT)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith(message.format(tmp=tmp_path)), result.stderr[-2000:]
  assert files_in(tmp_path) == before and sorted(tmp_path.rglob("*")) == folders


def test_converting_inception_weights_without_torch_makes_no_output_folder(tmp_path):
  (tmp_path / "hide" / "torch").mkdir(parents=True)  # torch, installed or not, fails to import
  (tmp_path / "hide" / "torch" / "__init__.py").write_text("raise ImportError('hidden')")
  (tmp_path / "weights.pth").write_bytes(b"pytorch-fid's weights")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.convert_inception_weights",
       f"--input={tmp_path}/weights.pth", f"--output={tmp_path}/new/w.npz"],
      capture_output=True, text=True, cwd=dcgan_runs.ROOT,
      env=dict(os.environ, PYTHONPATH=f"{tmp_path / 'hide'}{os.pathsep}{dcgan_runs.ROOT}"))
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
      "error: reading the .pth file needs torch; `pip install torch`"), result.stderr[-2000:]
  assert not (tmp_path / "new").exists()


def test_evaluate_writes_over_an_earlier_result_of_its_own(tmp_path):
  np.save(tmp_path / "s.npy", np.random.default_rng(0).uniform(-1, 1, (64, 28, 28, 1)))
  (tmp_path / "s.evaluation.json").write_text('{"num_samples": 9, "fid": 1, "real_fid": 1}')
  result = subprocess.run([sys.executable, "-m", "experiments.evaluate",
                           f"--samples={tmp_path}/s.npy", "--eval_extractor=mnist_classifier"],
                          capture_output=True, text=True, cwd=dcgan_runs.ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads((tmp_path / "s.evaluation.json").read_text())["num_samples"] == 64


@pytest.mark.parametrize("annotation, flag_type", [(Optional[str], str), (str | None, str),
                                                  (int, int), (float | None, float)])
def test_config_fields_become_flags_of_their_type(annotation, flag_type):
  config_class = dataclasses.make_dataclass(
      "Config", [("setting", annotation, cli.field(None, "A setting."))], frozen=True)
  values = flags.FlagValues()
  cli.define_flags(config_class, values)
  parse = {str: "x", int: "3", float: "0.5"}[flag_type]
  values([__file__, f"--setting={parse}"])
  assert cli.config_from_flags(config_class, values).setting == flag_type(parse)


def test_a_config_field_of_another_type_is_named():
  config_class = dataclasses.make_dataclass(
      "Config", [("sizes", tuple, cli.field((1, 2), "Sizes."))], frozen=True)
  with pytest.raises(TypeError, match="field 'sizes' is annotated <class 'tuple'>"):
    cli.define_flags(config_class, flags.FlagValues())


def test_a_reference_that_prints_no_json_result_is_one_run_error():
  script = [sys.executable, "-c"]
  assert commands.last_json_line(script + ["print('x'); print('{\"a\": 1}')"], "it") == {"a": 1}
  for printed in ("print('done')", "pass", "print('[1]')"):
    with pytest.raises(cli.RunError, match="it .* printed no JSON object last, but"):
      commands.last_json_line(script + [printed], "it")


def test_the_library_defines_no_command_line_flags_on_import():
  """Research code with absl flags of its own (say a --verbose) imports the library without a
  DuplicateFlagError: only gan_jax.cli and the modules that build commands define flags."""
  library = ["losses", "theory", "train_step", "train_state", "parallel", "input_pipeline",
             "checkpointing", "run_log", "plotting", "metrics", "metrics.evaluation",
             "metrics.inception", "models.dcgan", "models.mlp"]
  script = ("import importlib; from absl import flags, logging; import orbax.checkpoint; "
            "before = set(flags.FLAGS); "  # absl's logging flags and orbax's are theirs
            f"[importlib.import_module('gan_jax.' + m) for m in {library!r}]; "
            "print(sorted(set(flags.FLAGS) - before))")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.stdout.strip() == "[]"
