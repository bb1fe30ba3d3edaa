"""Scores generated images against real data: FID, KID, IS, precision, recall, density, coverage.

    python -m experiments.evaluate --workdir=runs/dcgan_mnist          # the newest checkpoint
    python -m experiments.evaluate --workdir=runs/dcgan_mnist --use_final_samples
    python -m experiments.evaluate --samples=other.npy --dataset=mnist --resolution=32

With ``--workdir`` the run's ``config.json`` names the model and the data; the generator of the
newest checkpoint (eval mode, EMA weights when the run keeps them) draws ``--num_samples`` images
from the run's fixed final latents; the checkpoints are only read (a damaged one is skipped and
left in place; a read that fails for another reason, such as the file system's, stops it).
``--samples`` scores any ``.npy`` of images ``(N, H, W, C)``
in [-1, 1], e.g. from another framework. Each metric is printed beside its real-vs-real floor
(two halves of the real set), and everything is written to ``--output`` as JSON: a ``.json``
file that is new or holds an earlier result of this command (no other file is written over).
"""
import dataclasses
import json
import os
from typing import Optional, Tuple

import numpy as np
from absl import flags, logging

from gan_jax import checkpointing, cli, input_pipeline, run_log, trainer

flags.DEFINE_string("workdir", None, "A run's folder (config.json, checkpoints/).")
flags.DEFINE_bool("use_final_samples", False, "With --workdir: score final_samples.npy instead "
                  "of sampling the newest checkpoint.")
flags.DEFINE_string("samples", None, "A .npy of images (N, H, W, C) in [-1, 1] to score.")
flags.DEFINE_integer("num_samples", None, "Images to score, at most 100,000 (default: the "
                     "run's num_final_samples, or all of --samples).")
flags.DEFINE_string("dataset", "mnist", "Real data for --samples (a run uses its own).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir for --dataset=tfds:NAME.")
flags.DEFINE_string("split", "train", "TFDS split of --dataset=tfds:NAME, in TFDS's syntax.")
flags.DEFINE_string("image_feature", "image", "TFDS feature holding the images (for image, "
                    "which the dataset lacks: its only image feature).")
flags.DEFINE_integer("resolution", 28, "Resolution of the real data for --samples.")
flags.DEFINE_integer("channels", 1, "Channels of the real data for --samples.")
flags.DEFINE_string("eval_extractor", None, "Override the run's (or the default) extractor: "
                    "auto, mnist_classifier, inception, none.")
flags.DEFINE_string("inception_weights", None, "FID Inception-v3 weights (.npz); without "
                    "--eval_extractor, scores with them.")
flags.DEFINE_string("output", None, "A .json file for the results, new or an earlier result "
                    "of this command (default: WORKDIR/evaluation.json, or beside --samples).")
FLAGS = flags.FLAGS
REPORTED = ("fid", "kid", "inception_score", "precision", "recall", "density", "coverage")
RESULT_KEYS = ("num_samples", "fid", "real_fid")  # what marks a file as an earlier result


def run_config() -> trainer.TrainConfig:
  """The config of --workdir's run, or one describing --samples' real data."""
  if FLAGS.workdir:
    path = os.path.join(FLAGS.workdir, "config.json")
    saved = trainer.read_saved_config(FLAGS.workdir, "restore it, or score a file of samples "
                                      "with --samples")
    cli.require(saved is not None, f"{path} not found: --workdir must be a folder that "
                "experiments.dcgan trained in")
    try:
      config = trainer.TrainConfig(**saved)
    except TypeError as e:  # other fields
      raise cli.UsageError(f"cannot read {path} as a run's configuration ({e}); was it written "
                           "by experiments.dcgan of this version?") from None
  else:
    config = trainer.TrainConfig(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
                                 split=FLAGS.split, image_feature=FLAGS.image_feature,
                                 resolution=FLAGS.resolution, channels=FLAGS.channels)
  overrides = {name: getattr(FLAGS, name) for name in ("eval_extractor", "inception_weights")
               if getattr(FLAGS, name) is not None}
  if FLAGS.inception_weights and FLAGS.eval_extractor is None:
    overrides["eval_extractor"] = "inception"  # weights given here are meant to be used
  config = dataclasses.replace(config, **overrides)
  trainer.validate_data(config)
  trainer.validate_extractor(config)
  return config


def is_result(path: str) -> bool:
  """Whether ``path`` holds a JSON object with the keys of this command's results."""
  try:
    with open(path) as f:
      content = json.load(f)
  except (OSError, ValueError):  # unreadable, not text, not JSON
    return False
  return isinstance(content, dict) and all(key in content for key in RESULT_KEYS)


def output_path() -> str:
  """Where the results go (its folder is made later, once the inputs have passed their checks).
  Only a ``.json`` file that is new or holds an earlier result is written: never the samples, a
  run's config.json or another file of the user's."""
  path = FLAGS.output or (os.path.join(FLAGS.workdir, "evaluation.json") if FLAGS.workdir
                          else os.path.splitext(FLAGS.samples)[0] + ".evaluation.json")
  cli.require(path.endswith(".json"), f"--output={path} is not a .json file; the results are "
              "JSON: name a new .json file with --output")
  cli.require(not os.path.isfile(path) or is_result(path), f"--output={path} exists and holds "
              "no earlier result of experiments.evaluate; name a new .json file with --output")
  return cli.require_file_path(path, "--output")


def load_samples(config: trainer.TrainConfig) -> Tuple[np.ndarray, Optional[int]]:
  """The images to score, ``(N, H, W, C)``, and the checkpoint step that drew them (None for a
  file of samples)."""
  path = FLAGS.samples or (os.path.join(FLAGS.workdir, "final_samples.npy")
                           if FLAGS.use_final_samples else None)
  if path:
    cli.require(os.path.isfile(path), f"samples file {path!r} not found")
    try:
      samples = np.load(path)  # a pickle or another format raises; allow_pickle stays off
    except (ValueError, OSError) as e:
      raise cli.UsageError(f"cannot read {path!r} as a .npy array ({e}); pass the "
                           "final_samples.npy of a run") from None
    shape = getattr(samples, "shape", None)  # None for an .npz, which holds several arrays
    cli.require(shape is not None and len(shape) == 4,
                f"{path} holds {'several arrays' if shape is None else f'shape {shape}'}; "
                "expected one array of images (N, H, W, C)")
    size, real = "x".join(map(str, shape[1:])), "x".join(
        map(str, (config.resolution, config.resolution, config.channels)))
    cli.require(size == real, f"{path} holds {size} images but the real data ({config.dataset}) "
                f"is {real}: " + (f"pass the --dataset they imitate, with --resolution="
                                  f"{shape[1]} --channels={shape[3]}" if FLAGS.samples else
                                  "leave out --use_final_samples to sample the newest checkpoint"))
    cli.require(FLAGS.num_samples is None or FLAGS.num_samples <= len(samples),
                f"--num_samples={FLAGS.num_samples} but {path} holds {len(samples)} images; "
                "lower --num_samples or leave it out")
    return samples[:FLAGS.num_samples], None
  generator, discriminator = trainer.build_models(config, axis_name=None)
  checkpoints = checkpointing.Checkpointer(os.path.join(FLAGS.workdir, "checkpoints"),
                                          read_only=True)
  restored = checkpoints.restore_latest(trainer.initial_state(config, generator, discriminator))
  stored = checkpoints.all_steps()
  checkpoints.close()
  cli.require(restored is not None, (
      f"none of the {len(stored)} checkpoints in {FLAGS.workdir}/checkpoints is readable (see the "
      "warnings above); pass --use_final_samples to score the run's final samples" if stored
      else f"no checkpoint in {FLAGS.workdir}/checkpoints; train first or pass "
      "--use_final_samples"))
  step, state, _ = restored
  logging.info("sampling checkpoint %d", step)
  n = FLAGS.num_samples or config.num_final_samples
  return trainer.sampler(config)(state, trainer.latents(config, trainer.FINAL_LATENTS, n)), step


# what a run's config.json names
DATA_FLAGS = ("dataset", "data_dir", "split", "image_feature", "resolution", "channels")


def check_flags() -> None:
  """Raises UsageError on flags that contradict each other or would be ignored."""
  cli.require(bool(FLAGS.workdir) != bool(FLAGS.samples), "pass exactly one of --workdir "
              "(a training run) and --samples (a .npy of images)")
  if FLAGS.workdir:
    given = [f"--{name}" for name in DATA_FLAGS if FLAGS[name].present]
    cli.require(not given, f"{', '.join(given)}: the run's config.json names its data; drop "
                f"{'them' if len(given) > 1 else 'it'} with --workdir")
  cli.require(not (FLAGS.samples and FLAGS.use_final_samples), "--use_final_samples picks a "
              "run's final_samples.npy; with --samples pass that file itself")
  most = trainer.MAX_FINAL_SAMPLES  # as many as a run may draw
  cli.require(FLAGS.num_samples is None or 0 < FLAGS.num_samples <= most,
              f"--num_samples must be in [1, {most:,}] (all the images are held in memory at "
              f"once), got {FLAGS.num_samples}")


def main(argv):
  check_flags()
  config = run_config()
  output = output_path()
  samples, step = load_samples(config)
  source = input_pipeline.make_source(config.dataset, config.resolution, config.channels,
                                      config.data_dir, config.split, config.image_feature)
  cli.require(trainer.resolve_extractor(config) != "none", "no feature extractor for these "
              "images: pass --eval_extractor=mnist_classifier (gray images) or "
              "--inception_weights=PATH")
  cli.require_writable_file(output, "--output")  # before the scoring, the longest part
  evaluator = trainer.build_evaluator(config, source)
  cli.require(evaluator is not None, f"the real images to score against are too few: "
              f"{min(len(source), config.num_eval_real)} ({config.dataset} has {len(source)}, "
              f"num_eval_real is {config.num_eval_real}; see the warning above)")
  results = evaluator(samples)
  drawn_by = "" if step is None else f" of checkpoint {step}"
  print(f"{'metric':<16}{'generated':>12}{'real vs real':>14}   ({len(samples)} samples"
        f"{drawn_by})")
  for name in REPORTED:
    print(f"{name:<16}{results[name]:>12.4f}{results['real_' + name]:>14.4f}")
  run_log.write_json(output, {"num_samples": len(samples),
                              **({} if step is None else {"step": step}), **results})
  logging.info("wrote %s", output)


if __name__ == "__main__":
  cli.run(main)
