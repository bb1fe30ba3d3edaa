"""The image-GAN training loop: data -> compiled step on all local devices -> workdir.

``train_and_evaluate(config, workdir)`` trains the DCGAN of ``config`` (or, with ``models=``,
modules of your own), and writes under ``workdir``:

* ``config.json``: the configuration the run started with (a resume must keep what defines the
  model and the data);
* ``checkpoints/<step>/``: orbax checkpoints of the whole state plus the data position; the run
  resumes from the newest one by itself;
* ``metrics.jsonl``, ``tensorboard/``: a row every ``log_every_steps``, the means over those
  steps (``nonfinite``: the updates skipped per step), and one at the step the run stopped at,
  over the steps so far of its interval;
* ``samples/step_XXXXXX.png``: the generator in eval mode on a fixed batch of latents;
* ``final_samples.npy`` (float32 ``(N, H, W, C)`` in [-1, 1]), ``final_grid.png``,
  ``interpolation.png`` (walks between fixed latents), ``curves.png``;
* ``.lock``: held by process 0 while the run lives (``workdir_lock``).

SIGTERM (a preempted VM) or a first Ctrl-C (SIGINT) saves a checkpoint at the current step and
returns normally, with the signal's name as the summary's ``preempted``
(``preemption.exit_status`` turns it into the command's status).
"""
import contextlib
import dataclasses
import hashlib
import os
import signal
import time
import zlib
from typing import Callable, Optional, Tuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import optax
from absl import logging
from jax.experimental import multihost_utils

from gan_jax import (checkpointing, input_pipeline, parallel, plotting, train_state, train_step,
                     workdir_lock)
from gan_jax.cli import (RunError, UsageError, field, first_line, make_writable_dir, require,
                         require_gan_settings, require_one_of, require_positive)
from gan_jax.metrics import evaluation, inception, mnist_classifier
from gan_jax.models import dcgan, layers
from gan_jax.preemption import Preemption
from gan_jax.run_log import (IntervalMeans, RunLog, read_json_object, read_metrics, write_json,
                             write_npy)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
GRID_SIZE = 64
# What fixed latents (``latents``) are for; each purpose has its own.
GRID_LATENTS, FINAL_LATENTS, STANDING_LATENTS, INTERPOLATION_LATENTS = 0, 1, 2, 3
STANDING_BATCH = 1024  # latents of the EMA generator's standing statistics
EXTRACTORS = ("auto", "mnist_classifier", "inception", "none")
RUN_FOLDERS = ("checkpoints", "best", "samples", "tensorboard")  # what a run keeps in its workdir
RUN_FILES = ("config.json", "metrics.jsonl", "final_samples.npy", "final_grid.png",
             "interpolation.png", "curves.png")  # and writes there
# The most final samples a run draws: FID's usual 50,000 and room to spare; they are held in
# host memory at once (100,000 at 64x64x3 are 4.9 GB).
MAX_FINAL_SAMPLES = 100_000


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One DCGAN experiment; every field is a flag of ``experiments.dcgan``."""
  dataset: str = field("mnist", "mnist (embedded, offline), tfds:NAME or folder:PATH.")
  data_dir: Optional[str] = field(None, "TFDS data_dir holding prepared datasets.")
  split: str = field("train", "TFDS split to train on, in TFDS's syntax (train+validation, "
                     "train[:90%]); the evaluation's real images come from it too.")
  image_feature: str = field("image", "TFDS feature holding the images (for image, which the "
                             "dataset lacks: its only image feature).")
  data_cache_gib: float = field(4.0, "Keep the images of a folder or TFDS dataset in host "
                                "memory once decoded (as uint8), so that later epochs skip "
                                "decoding, if they take at most this many GiB (0: never).")
  resolution: int = field(32, "Image size: 28, 32 or 64.")
  channels: int = field(1, "Image channels: 1 or 3.")
  latent_dim: int = field(100, "Size of the generator's noise vector.")
  g_width: int = field(64, "Generator width (channels of its last hidden layer).")
  d_width: int = field(64, "Discriminator width (channels of its first layer).")
  d_norm: str = field("batch", "Normalization of the discriminator: batch norm of its hidden "
                      "layers (the DCGAN reference), layer (per image, as in WGAN-GP), spectral "
                      "(every layer's weights, as in SNGAN) or none; --gradient_penalty and "
                      "--r1_penalty need one other than batch.")
  batch_size: int = field(64, "Global batch size over all devices and processes.")
  num_devices: int = field(0, "Train on the first N local devices (0: all of them; one "
                           "process only). A resumed run keeps its --batch_size, which must "
                           "divide over them: fewer devices resume a run on a machine with "
                           "another count.")
  num_steps: int = field(2000, "Generator updates to train for (a resumed run continues).")
  max_train_minutes: float = field(0.0, "Stop the training loop after this many minutes, the "
                                   "first step's compilation included (0: no limit), and "
                                   "finish as at --num_steps (samples, scores); rerun to "
                                   "continue to --num_steps.")
  seed: int = field(0, "Seed of the initialization, the noise and the data order.")
  loss: str = field("non_saturating", "GAN loss: non_saturating, minimax, wasserstein, hinge, "
                    "least_squares.")
  n_critic: int = field(1, "Discriminator updates per generator update.")
  gradient_penalty: float = field(0.0, "WGAN-GP penalty weight (0: off).")
  r1_penalty: float = field(0.0, "R1 penalty weight gamma/2 (0: off).")
  g_learning_rate: float = field(2e-4, "Generator Adam learning rate.")
  d_learning_rate: float = field(2e-4, "Discriminator Adam learning rate.")
  beta1: float = field(0.5, "Adam beta1.")
  beta2: float = field(0.999, "Adam beta2.")
  ema_decay: float = field(0.0, "Decay of an EMA of the generator weights used for samples "
                           "(0: off, samples from the trained weights).")
  conv_method: str = field("auto", "Resampling convolutions: auto, xla or matmul (same math).")
  dtype: str = field("float32", "Operand dtype of the matrix products: float32, or bfloat16 for "
                     "mixed precision (products accumulate in float32; params, batch norm and "
                     "activations stay float32). float32 products take the backend's default "
                     "precision: full on CPUs, TF32 on recent NVIDIA GPUs, bfloat16 passes on "
                     "TPUs (JAX_DEFAULT_MATMUL_PRECISION=highest for full float32 there).")
  keep_freed_memory: bool = field(True, "Ask glibc to keep freed memory, so that XLA's CPU "
                                  "backend reuses its per-step scratch block instead of "
                                  "page-faulting through a fresh one (gan_jax.host_memory); "
                                  "only where JAX will run on the CPU alone.")
  log_every_steps: int = field(50, "Steps between metrics rows and progress lines; each row "
                              "holds the means over those steps.")
  sample_every_steps: int = field(500, "Steps between sample grids (0: only at the end).")
  checkpoint_every_steps: int = field(500, "Steps between checkpoints.")
  eval_every_steps: int = field(0, "Steps between quality evaluations (0: only at the end).")
  eval_extractor: str = field("auto", "Features for FID/KID/IS/precision/recall: mnist_classifier "
                              "(shipped weights), inception (needs --inception_weights), none, "
                              "or auto (inception if weights are given, else the classifier "
                              "for 1 channel and none for RGB).")
  inception_weights: Optional[str] = field(None, "FID Inception-v3 weights (.npz made by "
                                           "experiments/convert_inception_weights.py).")
  num_eval_real: int = field(10000, "Real images in the evaluation reference set (at most all).")
  keep_checkpoints: int = field(3, "How many of the newest checkpoints to keep.")
  num_final_samples: int = field(5000, "Samples written to final_samples.npy.")
  max_nonfinite_steps: int = field(20, "Stop after this many steps in a row with non-finite "
                                   "losses or gradients.")


T = TypeVar("T")
# What defines the model and the data: a resumed run must keep these.
RESUME_FIXED = ("dataset", "split", "image_feature", "resolution", "channels", "latent_dim",
                "g_width", "d_width", "d_norm", "batch_size", "seed", "n_critic", "ema_decay")


def validate(config: TrainConfig, device_count: int) -> None:
  """Raises UsageError naming the first bad setting and what to do, for a job of
  ``device_count`` devices (over all processes)."""
  require(config.batch_size > 0, f"--batch_size must be positive, got {config.batch_size}")
  fewer = (", or fewer devices with --num_devices (a resumed run keeps its --batch_size)"
           if jax.process_count() == 1 else "")
  require(config.batch_size % device_count == 0,
          f"--batch_size={config.batch_size} is not divisible by the {device_count} devices; "
          f"use a multiple of {device_count}{fewer}")
  require(config.num_steps >= 0, f"--num_steps must be >= 0, got {config.num_steps}")
  require(config.max_train_minutes >= 0,
          f"--max_train_minutes must be >= 0 (0: no limit), got {config.max_train_minutes}")
  require(config.data_cache_gib >= 0,
          f"--data_cache_gib must be >= 0 (0: no cache), got {config.data_cache_gib}")
  validate_data(config)
  require_one_of(config, "dtype", tuple(DTYPES))
  require_one_of(config, "conv_method", layers.METHODS)
  require_gan_settings(config)
  require_one_of(config, "d_norm", dcgan.D_NORMS)
  require(config.d_norm != "batch" or not (config.gradient_penalty or config.r1_penalty),
          "--gradient_penalty and --r1_penalty take each image's own input gradient, which a "
          "batch-norm discriminator does not give (its logits mix the batch); add --d_norm=layer "
          "or --d_norm=spectral")
  validate_extractor(config)
  require_positive(config, ("latent_dim", "g_width", "d_width", "log_every_steps",
                            "checkpoint_every_steps", "keep_checkpoints", "max_nonfinite_steps",
                            "num_final_samples", "num_eval_real"))
  require(config.num_final_samples <= MAX_FINAL_SAMPLES, f"--num_final_samples="
          f"{config.num_final_samples} is more than {MAX_FINAL_SAMPLES:,}, which are held in "
          "memory at once; lower it")
  require(not config.inception_weights or config.eval_extractor in ("auto", "inception"),
          f"--inception_weights is for --eval_extractor=inception (or auto), not "
          f"--eval_extractor={config.eval_extractor}; drop one of them")
  for name in ("sample_every_steps", "eval_every_steps"):
    require(getattr(config, name) >= 0,
            f"--{name} must be >= 0 (0: only at the end), got {getattr(config, name)}")
  needed = evaluation.MetricOptions().minimum_samples
  require(config.eval_extractor == "none" or config.num_final_samples >= needed,
          f"--num_final_samples={config.num_final_samples} is too few to score (the metrics "
          f"need {needed}); raise it or pass --eval_extractor=none")


def validate_data(config: TrainConfig) -> None:
  """Raises UsageError for a resolution or channel count the models do not take."""
  require_one_of(config, "resolution", dcgan.RESOLUTIONS)
  require_one_of(config, "channels", (1, 3))


def validate_extractor(config: TrainConfig) -> None:
  """Raises UsageError for an unknown ``eval_extractor``, or Inception without weights."""
  require_one_of(config, "eval_extractor", EXTRACTORS)
  require(config.eval_extractor != "inception" or config.inception_weights,
          "--eval_extractor=inception needs --inception_weights=FILE.npz (see "
          "experiments/convert_inception_weights.py)")


def training_devices(config: TrainConfig) -> list:
  """This process's devices that train: the first ``num_devices``, or all (0). UsageError for a
  count out of range, or set in a job of several processes (each trains on all of its own)."""
  available = jax.local_devices()
  require(0 <= config.num_devices <= len(available), f"--num_devices={config.num_devices} must "
          f"be in [0, {len(available)}] (0: all {len(available)} {jax.default_backend()} "
          "devices)")
  require(config.num_devices == 0 or jax.process_count() == 1, "--num_devices is for a run of "
          "one process; a job of several trains on all their devices: drop it")
  return available[:config.num_devices or None]


def agreed(check: Callable[[], T]) -> T:
  """``check()`` (start-up checks, which raise UsageError or RunError), run on every process; if
  it failed on any, all raise: the failing ones their own error, the others one naming the first
  of them. A process that stopped alone would leave the others waiting in a collective."""
  error = result = None
  try:
    result = check()
  except (UsageError, RunError) as e:
    error = e
  if jax.process_count() > 1:
    failed = multihost_utils.process_allgather(np.int32(error is not None))
    if error is None and np.any(failed):
      raise UsageError(f"process {int(np.argmax(failed))} failed a start-up check (its error line "
                       "says which); every process stopped")
  if error is not None:
    raise error
  return result


def _here_and_on_process_0(values) -> Tuple[np.ndarray, np.ndarray]:
  """This process's int32 ``values`` and process 0's (a collective)."""
  seen = multihost_utils.process_allgather(np.int32(values))  # (processes, len(values))
  return seen[jax.process_index()], seen[0]


def check_same_dataset(source) -> None:
  """Every process must read the same images: each global batch is a slice of one permutation
  of them. UsageError on a process whose ``source`` differs from process 0's in size or, for an
  image folder, in its file names (a collective)."""
  names = zlib.crc32(b"\n".join(map(os.fsencode, getattr(source, "files", ())))) % 2**31
  here, first = _here_and_on_process_0([len(source), names])
  what = (f"{here[0]} images, process 0 {first[0]}" if here[0] != first[0] else
          f"other file names than process 0 ({here[0]} images each)")
  require(np.array_equal(here, first), f"process {jax.process_index()} reads {what}: every host "
          "must read the same dataset (sync the image folder, or prepare the same TFDS version "
          "on each host)")


def check_same_weights(variables, source: str, remedy: str) -> None:
  """Every process must score with the same feature network, or each would score its share of
  the samples with its own. UsageError on a process whose ``variables`` (numpy or replicated
  arrays) differ from process 0's in any byte, naming their ``source`` and the ``remedy`` (a
  collective)."""
  checksum = 0
  for leaf in jax.tree.leaves(variables):
    checksum = zlib.crc32(np.ascontiguousarray(leaf).tobytes(), checksum)
  here, first = _here_and_on_process_0([checksum % 2**31])
  require(np.array_equal(here, first), f"process {jax.process_index()} loaded other weights "
          f"from {source} than process 0: every host must score with the same feature network "
          f"({remedy})")


SHARED_CHECK_FILE = ".shared_workdir_check"


def check_shared_workdir(workdir: str) -> None:
  """Process 0 writes a fresh token into ``workdir``; every process must read it back (a
  collective). UsageError on a process that does not: its ``workdir`` is another folder (a host
  without the shared mount), where its checkpoints would go astray."""
  path = os.path.join(workdir, SHARED_CHECK_FILE)
  token = str(int(multihost_utils.broadcast_one_to_all(
      np.int32(np.random.default_rng().integers(2**31 - 1)))))
  written = None
  if jax.process_index() == 0:
    try:
      with open(path, "w") as f:
        f.write(token)
    except OSError as e:
      written = e
  multihost_utils.sync_global_devices("gan_jax: shared workdir token written")
  if written is not None:
    raise RunError(f"could not write {path} ({written}); fix the folder's permissions")
  try:
    with open(path) as f:
      seen = f.read()
  except OSError:
    seen = None
  require(seen == token, f"--workdir={workdir} on this host (process {jax.process_index()}) is "
          "not the folder process 0 writes to: mount the same shared folder (NFS, Filestore) at "
          "the same path on every host")


def prepare_workdir(workdir: str, config: TrainConfig) -> None:
  """Creates ``workdir``, checks it is writable, and checks a resume keeps the model and data.

  Only a run with a checkpoint has anything to keep: an attempt that failed before its first
  checkpoint (out of memory at the first step, say) leaves its ``config.json`` but fixes no flag.
  """
  make_writable_dir(workdir)
  for folder in RUN_FOLDERS:
    path = os.path.join(workdir, folder)
    require(not os.path.exists(path) or os.path.isdir(path), f"{path} is a file, where the run "
            f"keeps its {folder} folder; move it away or use a new --workdir")
  for name in RUN_FILES:  # found now, not when the file is written after training
    path = os.path.join(workdir, name)
    require(not os.path.isdir(path), f"{path} is a folder, where the run writes its {name}; "
            "move it away or use a new --workdir")
  checkpoints = os.path.join(workdir, "checkpoints")
  if os.path.isdir(checkpoints):  # a resume writes there too
    make_writable_dir(checkpoints)
  saved = read_saved_config(workdir)
  resumable = os.path.isdir(checkpoints) and bool(checkpointing.saved_steps(checkpoints))
  outputs = [name for name in ("metrics.jsonl", "final_samples.npy")
             if os.path.exists(os.path.join(workdir, name))]
  require(saved is not None or resumable or not outputs, f"--workdir={workdir} holds "
          f"{' and '.join(outputs)} of another kind of run (it has neither config.json nor "
          "checkpoints of this training loop); use a new --workdir")
  if saved is not None and resumable:
    check_resume_settings(config, saved, workdir)
    changed = [f"--{name} {saved[name]} -> {value}" for name, value in
               dataclasses.asdict(config).items() if name in saved and saved[name] != value]
    if changed:  # allowed (the model and data stay), but a run's history should say so
      logging.info("flags changed since the run's config.json: %s", ", ".join(changed))


# Settings that joined RESUME_FIXED later: what a run without them in its record used.
RESUME_FIXED_BEFORE = {"split": "train", "image_feature": "image"}


def check_resume_settings(config: TrainConfig, settings: dict, workdir: str) -> None:
  """UsageError naming the first flag of ``RESUME_FIXED`` that differs from its value in
  ``settings`` (a run's config.json, or a checkpoint's record of them)."""
  for name in RESUME_FIXED:
    saved = settings.get(name, RESUME_FIXED_BEFORE.get(name, getattr(config, name)))
    pins_a_version = (name == "dataset" and saved.startswith("tfds:") and ":" not in saved[5:]
                      and config.dataset.startswith(saved + ":"))  # after a TFDS upgrade
    if saved != getattr(config, name) and not pins_a_version:
      raise UsageError(
          f"--{name}={getattr(config, name)} differs from {saved} of the run in "
          f"{workdir}; resume with --{name}={saved} or use a new --workdir")


def read_saved_config(workdir: str, advice: str = "restore it, or use a new --workdir"
                      ) -> Optional[dict]:
  """The settings in ``workdir/config.json``, or None if there is none; UsageError ending in
  ``advice`` if it cannot be read as a run's configuration."""
  return read_json_object(os.path.join(workdir, "config.json"), "run's configuration", advice)


def save_config(workdir: str, config: TrainConfig) -> None:
  """Writes ``config.json``, once the run has passed every check (a run that fails to start
  must not fix the flags of the next attempt)."""
  write_json(os.path.join(workdir, "config.json"), dataclasses.asdict(config))


ModelBuilder = Callable[[TrainConfig, Optional[str]], Tuple[nn.Module, nn.Module]]


def build_models(config: TrainConfig, axis_name: Optional[str]):
  """The DCGAN generator and discriminator the config describes (a ``ModelBuilder``)."""
  common = dict(resolution=config.resolution, conv_method=config.conv_method,
                axis_name=axis_name, dtype=DTYPES[config.dtype])
  return (dcgan.Generator(channels=config.channels, width=config.g_width,
                          latent_dim=config.latent_dim, **common),
          dcgan.Discriminator(width=config.d_width, normalization=config.d_norm, **common))


def step_flops(config: TrainConfig) -> float:
  """Floating-point operations of one train step (``n_critic`` batches of ``batch_size``), for
  model FLOP utilization.

  XLA's count for the step written with ``lax`` convolutions, in which no product meets the
  padding: the model's arithmetic, the same figure whichever ``conv_method`` runs (the matmul
  forms also multiply the padding, about 20% more at 32x32). Elementwise work is included (under
  1% of it at the default widths). The step is lowered for the CPU, whatever the default device
  (XLA's GPU and TPU clients count only compiled programs); nothing is computed or compiled.
  Where ``JAX_PLATFORMS`` leaves the CPU out, the step is compiled for the default device and
  its optimized program counted instead (a full compile, and fusion may change the count).
  """
  config = dataclasses.replace(config, conv_method="xla")
  generator, discriminator = build_models(config, axis_name=None)
  state = jax.eval_shape(lambda: initial_state(config, generator, discriminator))
  real = jax.ShapeDtypeStruct((config.batch_size * config.n_critic, config.resolution,
                               config.resolution, config.channels), jnp.float32)
  step = jax.jit(train_step.make_train_step(generator, discriminator,
                                            train_step.StepConfig.of(config)))
  try:
    cpu = jax.devices("cpu")[0]
  except RuntimeError:  # JAX_PLATFORMS leaves the CPU out: count the compiled program
    return float(step.lower(state, real).compile().cost_analysis()["flops"])
  with jax.default_device(cpu):
    return float(step.lower(state, real).cost_analysis()["flops"])


def resolve_extractor(config: TrainConfig) -> str:
  """The feature extractor the config's ``eval_extractor`` means: "auto" is "inception" when
  weights are given, else "mnist_classifier" for 1 channel and "none" for RGB."""
  if config.eval_extractor != "auto":
    return config.eval_extractor
  return ("inception" if config.inception_weights
          else "mnist_classifier" if config.channels == 1 else "none")


def scoring_setup(config: TrainConfig, dataset_size: int) -> dict:
  """What a FID depends on besides the generator: the features (and the SHA-256 of Inception's
  weights file), the sample counts (of real images: at most the ``dataset_size``) and which real
  images (all, or the subset drawn with ``REAL_SUBSET_SEED``). FIDs scored with different setups
  do not compare."""
  name = resolve_extractor(config)
  num_eval_real = min(dataset_size, config.num_eval_real)
  setup = {"extractor": name, "num_final_samples": config.num_final_samples,
           "num_eval_real": num_eval_real,
           "real_subset": "all" if num_eval_real == dataset_size else "one draw per dataset"}
  if name == "inception":
    with open(config.inception_weights, "rb") as f:
      setup["weights_sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
  return setup


# The real images a dataset's FIDs are scored against: one draw, whatever the run's --seed, so that
# runs of different seeds (and experiments.evaluate on outside samples) compare. Its own stream:
# data orders are default_rng([seed, epoch]), and the spawn key keeps them apart.
REAL_SUBSET_SEED = np.random.SeedSequence(0, spawn_key=(1,))


def build_evaluator(config: TrainConfig, source) -> Optional[evaluation.Evaluator]:
  """The sample-quality evaluator the config asks for, against a fixed random subset of
  ``num_eval_real`` images of the training data ``source`` (the same for every ``--seed``: see
  ``REAL_SUBSET_SEED``); None when the extractor resolves to
  "none" (with a log line when "auto" chose it) or, with a warning, when ``source`` has too few
  images to score against."""
  name = resolve_extractor(config)
  if name == "none":
    if config.eval_extractor == "auto":
      logging.info("no --inception_weights: RGB samples are not scored (FID needs them)")
    return None
  if name == "mnist_classifier" and not (config.dataset == "mnist"
                                         or config.dataset.startswith("tfds:mnist")):
    logging.warning("scoring %s with the features of an MNIST digit classifier: the scores rank "
                    "runs on this data but compare with no published figure (pass "
                    "--inception_weights for Inception features)", config.dataset)
  # agreed: a host whose weights file fails to load must not leave the others in a collective
  extractor = agreed(lambda: mnist_classifier.load_mnist_classifier() if name == "mnist_classifier"
                     else inception.load_inception(config.inception_weights))
  if jax.process_count() > 1:  # every process scores the same images: each takes a share
    weights_from, remedy = (
        ("the MNIST classifier gan_jax ships", "install one gan_jax version on every host")
        if name == "mnist_classifier" else
        (f"--inception_weights={config.inception_weights}", "copy process 0's file to every host"))
    agreed(lambda: check_same_weights(extractor.variables, weights_from, remedy))
    extractor = extractor.on(jax.devices())
  elif config.num_devices:  # the run's devices (of those here: experiments.evaluate reads them)
    extractor = extractor.on(jax.local_devices()[:config.num_devices])
  count = min(len(source), config.num_eval_real)
  needed = 2 * evaluation.MetricOptions().minimum_samples
  if count < needed:
    logging.warning("only %d real images: evaluation needs %d; samples are not scored", count,
                    needed)
    return None
  chosen = np.sort(np.random.default_rng(REAL_SUBSET_SEED).choice(len(source), count,
                                                                 replace=False))
  return evaluation.Evaluator(source[chosen], extractor)


def initial_state(config: TrainConfig, generator, discriminator) -> train_state.GANState:
  """The state at step 0: both models initialized from ``config.seed``, each with its Adam, and
  an EMA of the generator when ``config.ema_decay`` > 0."""
  adam = lambda lr: optax.adam(lr, b1=config.beta1, b2=config.beta2)
  return train_state.create_gan_state(
      jax.random.PRNGKey(config.seed), generator, discriminator,
      (config.resolution, config.resolution, config.channels), adam(config.g_learning_rate),
      adam(config.d_learning_rate), use_ema=config.ema_decay > 0)


def sampler(config: TrainConfig, models: ModelBuilder = build_models) -> Callable:
  """``sample(state, latents (N, latent_dim)) -> images (N, H, W, C)``, eval mode, batched.

  With an EMA of the generator weights, the samples come from the EMA weights with batch-norm
  statistics of their own: the running statistics were gathered by the trained weights, whose
  activations differ. The EMA generator's "standing statistics" (Brock et al. 2019) are its
  batch statistics on a fixed batch of ``STANDING_BATCH`` latents, measured by the generator
  with a ``batch_norm_momentum`` of 0 (a generator without that attribute keeps the trained
  weights' running statistics).
  """
  generator, _ = models(config, None)
  apply = jax.jit(lambda variables, z: generator.apply(variables, z, train=False))
  standing_statistics = None
  if hasattr(generator, "batch_norm_momentum"):
    measure = generator.clone(batch_norm_momentum=0.0)
    standing_statistics = jax.jit(lambda variables, z: measure.apply(
        variables, z, train=True, mutable=["batch_stats"])[1]["batch_stats"])

  def sample(state: train_state.GANState, latents_: np.ndarray, chunk: int = 500) -> np.ndarray:
    variables = state.generator.variables
    if state.ema_params is not None:
      variables = dict(variables, params=state.ema_params)
      if standing_statistics is not None:
        variables["batch_stats"] = standing_statistics(
            variables, latents(config, STANDING_LATENTS, STANDING_BATCH))
    return np.concatenate([np.asarray(apply(variables, latents_[i:i + chunk]))
                           for i in range(0, len(latents_), chunk)])

  return sample


def latents(config: TrainConfig, purpose: int, n: int) -> np.ndarray:
  """``(n, latent_dim)`` fixed latents for one ``purpose``: ``GRID_LATENTS``, ``FINAL_LATENTS``,
  ``STANDING_LATENTS`` or ``INTERPOLATION_LATENTS``; the same seed and purpose give the same
  latents in every run."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1_000_000 + purpose)
  return np.asarray(jax.random.normal(key, (n, config.latent_dim)))


def interpolation_latents(config: TrainConfig, rows: int = 8, columns: int = 8) -> np.ndarray:
  """``(rows * columns, latent_dim)``: row i walks in ``columns`` steps from one fixed latent to
  another, turning by equal angles along the great circle between their directions while its
  length changes linearly (spherical interpolation, as White 2016 advises for GANs). A straight
  line would pass through latents shorter than the Gaussian prior gives (in 100 dimensions,
  about 0.7 times as long near the middle), which the generator never saw."""
  ends = np.float64(latents(config, INTERPOLATION_LATENTS, 2 * rows)).reshape(rows, 2, -1)
  lengths = np.linalg.norm(ends, axis=-1, keepdims=True)  # (rows, 2, 1)
  start, end = np.split(ends / lengths, 2, axis=1)  # unit directions, (rows, 1, latent_dim)
  angle = np.arccos(np.clip(np.sum(start * end, -1, keepdims=True), -1.0, 1.0))
  t = np.linspace(0.0, 1.0, columns)[None, :, None]
  turns = np.sin(angle) > 1e-6  # not with one latent dimension, where directions are +-1
  direction = (np.sin((1 - t) * angle) * start + np.sin(t * angle) * end) / np.where(
      turns, np.sin(angle), 1.0)
  length = (1 - t) * lengths[:, :1] + t * lengths[:, 1:]
  straight = (1 - t) * ends[:, :1] + t * ends[:, 1:]  # where there is no circle to walk
  return np.where(turns, direction * length, straight).reshape(rows * columns, -1).astype(
      np.float32)


# With several processes, how often (in steps) they agree whether any of them must stop.
PREEMPTION_SYNC_STEPS = 10
OUT_OF_TIME = "out of time"


def agreed_stop(preemption: Preemption, step: int, out_of_time: bool,
                every: int = PREEMPTION_SYNC_STEPS) -> Optional[str]:
  """Why the training loop stops after ``step``: a signal's name, ``OUT_OF_TIME`` (this
  process's ``--max_train_minutes`` ran out) or None to go on.

  Several processes must stop at the same step: one that stopped alone would wait at the final
  checkpoint's barrier for the others, and they for it in the next step's all-reduce. So at every
  ``every``-th step they gather each other's signal and clock (a small collective) and all stop
  when any was signalled (each then relays the signal with the highest number, so that all exit
  with one status) or out of time; between those steps a stop waits. A single process stops
  before its next step.
  """
  signum = signal.Signals[preemption.requested].value if preemption.requested else 0
  flags_here = np.int32([signum, out_of_time])
  if jax.process_count() > 1:
    if step % every:
      return None
    flags_here = np.max(multihost_utils.process_allgather(flags_here), axis=0)
    if flags_here[0]:
      preemption.relay(int(flags_here[0]))
  return preemption.requested if flags_here[0] else OUT_OF_TIME if flags_here[1] else None


def train_and_evaluate(config: TrainConfig, workdir: str,
                       models: ModelBuilder = build_models) -> dict:
  """Trains (or resumes) the run in ``workdir`` up to ``config.num_steps``.

  Sample quality (FID, KID, IS, precision, recall, density, coverage and their real-vs-real
  floors, see ``gan_jax.metrics.evaluation``) is measured every ``eval_every_steps`` and at the
  end, into ``metrics.jsonl``; the best checkpoint by FID is kept in ``workdir/best``.

  Args:
    config: the experiment (a ``TrainConfig``, or a subclass with fields of your own).
    workdir: where everything is written (see module docstring).
    models: ``models(config, axis_name) -> (generator, discriminator)``: Flax modules as
      ``train_step.make_train_step`` takes them, the generator's samples
      ``(b, resolution, resolution, channels)`` in [-1, 1], batch norm (if any) averaged over
      ``axis_name`` (None on one device).

  Returns:
    A summary: steps trained, wall time, steps/s, final metrics and evaluation, and
    ``preempted``: the name of the signal that stopped the run early, or None.
  """
  # From the start: a signal while setting up is kept too; the workdir's lock, once taken, is
  # held until the run is closed or fails.
  with Preemption() as preemption, contextlib.ExitStack() as held:
    run = _Run(config, workdir, models, held)
    try:
      summary = run.train(preemption)
    except BaseException:
      with contextlib.suppress(Exception):  # the first failure (a full disk) is the one to tell
        run.close()
      raise
    run.close()
    return summary


class _Run:
  """One run's state and outputs; ``train`` is the loop."""

  def __init__(self, config: TrainConfig, workdir: str, models: ModelBuilder,
               held: contextlib.ExitStack):
    self.config, self.workdir = config, workdir
    # With several processes, process 0 writes the files; all take part in checkpoints.
    self.primary = jax.process_index() == 0

    def start_up_checks():
      self.devices = training_devices(config)
      self.device_count = len(self.devices) * jax.process_count()  # over all processes
      validate(config, self.device_count)
      prepare_workdir(workdir, config)
      if self.primary:  # a process of another job, on process 0's workdir, is refused with it
        held.enter_context(workdir_lock.hold(workdir))
      source = input_pipeline.make_source(config.dataset, config.resolution, config.channels,
                                          config.data_dir, config.split, config.image_feature)
      require(len(source) >= config.batch_size, f"the dataset has {len(source)} images, fewer "
              f"than --batch_size={config.batch_size}; lower --batch_size")
      return source
    source = agreed(start_up_checks)
    if jax.process_count() > 1:
      agreed(lambda: check_same_dataset(source))
      agreed(lambda: check_shared_workdir(workdir))
      if self.primary:  # every process has read it (the agreement is a collective after that)
        with contextlib.suppress(OSError):  # a leftover token harms nothing; a lone exit would
          os.remove(os.path.join(workdir, SHARED_CHECK_FILE))
    self.dataset_version = getattr(source, "version", None)  # TFDS's; other sources have none
    source = input_pipeline.cached(source, config.resolution, config.channels,
                                   config.data_cache_gib)

    self.use_pmap = self.device_count > 1
    axis_name = parallel.AXIS_NAME if self.use_pmap else None
    generator, discriminator = models(config, axis_name)
    state = initial_state(config, generator, discriminator)
    self.dataset_size = len(source)
    logging.info("%s (%d images) at %dx%dx%d: G %s and D %s parameters, global batch %d on %d "
                 "%s device(s) in %d process(es)", config.dataset, self.dataset_size,
                 config.resolution, config.resolution, config.channels,
                 f"{train_state.count_params(state.generator.params):,}",
                 f"{train_state.count_params(state.discriminator.params):,}",
                 config.batch_size, self.device_count,
                 jax.default_backend(), jax.process_count())
    self.checkpoints = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                                  config.keep_checkpoints)
    self.start_step, position, since_row = 0, 0, None
    try:
      restored = self.checkpoints.restore_latest(state)
    except UsageError:  # another model: the newest record may name the flag that made it
      newest = self.checkpoints.latest_record()
      check_resume_settings(config, newest[1].get("fixed_settings", {}) if newest else {},
                            workdir)
      raise
    if restored is not None:
      self.start_step, state, record = restored
      position = record["data_position"]
      since_row = record.get("metrics_since_row")  # older checkpoints lack it
      # config.json may be lost or edited: the checkpoint's own record of the settings holds
      # (agreed: the processes' flags were compared with nothing else then)
      agreed(lambda: check_resume_settings(config, record.get("fixed_settings", {}), workdir))
      saved_size = record.get("dataset_size", self.dataset_size)  # older checkpoints lack it
      require(saved_size == self.dataset_size, f"the dataset has {self.dataset_size} images, "
              f"and had {saved_size} when checkpoint {self.start_step} in {workdir} was saved: "
              "the data order would change; restore the dataset (replace unreadable files "
              "rather than remove them) or use a new --workdir")
      logging.info("resuming from checkpoint %d in %s", self.start_step, workdir)
      # None for other sources (read back as NaN, as every null of a record), and older
      # checkpoints lack it
      saved_version = record.get("dataset_version")
      if isinstance(saved_version, str) and saved_version != self.dataset_version:
        unpinned = ":".join(config.dataset.split(":")[:2])  # tfds:NAME[/CONFIG]
        logging.warning("checkpoint %d was trained on version %s of %s, this run reads version "
                        "%s (of as many images): the same order of indices, whose images may "
                        "differ; pass --dataset=%s:%s to read the version trained on",
                        self.start_step, saved_version, unpinned, self.dataset_version,
                        unpinned, saved_version)
      saved_devices = record.get("devices")
      if saved_devices not in (None, self.device_count):  # older checkpoints lack it
        logging.warning("checkpoint %d was written by a run on %d devices, this one trains on "
                        "%d: it goes on with the same data and noise, equal up to the rounding "
                        "of the float sums over devices, not bitwise", self.start_step,
                        saved_devices, self.device_count)
    if self.finished:  # its outputs stand: nothing to build for training or scoring
      if self.primary and not os.path.exists(os.path.join(workdir, "config.json")):
        save_config(workdir, config)  # lost: from these flags, whose resume settings held
      self.log = self.best = self.device_batches = None
      return

    raw_step = train_step.make_train_step(generator, discriminator,
                                          train_step.StepConfig.of(config), axis_name)
    if self.use_pmap:
      subset = self.devices if config.num_devices else None  # pmap takes them in one process
      self.step_fn = parallel.pmap_step(raw_step, devices=subset)
      self.state = parallel.replicate(state, subset)
      to_device = lambda batch: parallel.put_sharded(batch, self.devices)
    else:
      # on the device, as the step's outputs: restored scalars come back as NumPy arrays, whose
      # placement differs, and the second step compiled again
      self.state = jax.device_put(state, self.devices[0])
      self.step_fn, to_device = parallel.jit_step(raw_step), jax.device_put
    batches = input_pipeline.BatchIterator(
        source, config.batch_size * config.n_critic, config.seed, jax.process_index(),
        jax.process_count(), position)
    self.device_batches = input_pipeline.prefetch(map(to_device, batches))

    self.evaluator = build_evaluator(config, source)
    if self.primary:
      save_config(workdir, config)
    self.sample = sampler(config, models)
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    self.log = RunLog(workdir, self.start_step, config.num_steps, write=self.primary,
                      after_failure="the checkpoints are intact: free space and run the same "
                      "command to resume")
    # The best checkpoint's own record says what a new one must beat: metrics.jsonl loses the
    # rows after the checkpoint a run resumes from, while best/ may hold a later step.
    self.best = (checkpointing.Checkpointer(os.path.join(workdir, "best"), max_to_keep=None)
                 if self.evaluator else None)
    best = self.best.latest_record() if self.best else None
    self.scoring = scoring_setup(config, self.dataset_size) if self.best else {}
    self.best_fid = best[1]["fid"] if best else np.inf
    # Records of older versions lack some of the setup's keys: those are not compared, but for
    # the real subset. Versions that record fixed_settings draw it as now; earlier ones drew a
    # subset with --seed (a few drew it as now without fixed_settings: the safe side).
    saved = dict(best[1]) if best else {}
    if best and not {"real_subset", "fixed_settings"} & saved.keys() and self.scoring.get(
        "real_subset", "all") != "all":
      saved["real_subset"] = "drawn with --seed"
    changed = {k: (saved[k], v) for k, v in self.scoring.items() if k in saved and saved[k] != v}
    if changed:
      logging.warning("best/ holds checkpoint %d, scored with %s; this run scores with %s, "
                      "whose FIDs do not compare: its next score replaces it", best[0],
                      ", ".join(f"{k}={old}" for k, (old, _) in changed.items()),
                      ", ".join(f"{k}={new}" for k, (_, new) in changed.items()))
      self.best_fid = np.inf
    self.nonfinite_run, self.logged_step = 0, None
    self.interval, self.last_logged_metrics = IntervalMeans(since_row), {}
    # A run killed while writing its final outputs scored its last step already: once is enough.
    scored = [row for row in read_metrics(workdir) if row["step"] == self.start_step
              and "fid" in row]
    self.evaluation = ((self.start_step, {k: v for k, v in scored[-1].items() if k != "step"})
                       if scored else (None, {}))

  @property
  def final_samples_path(self) -> str:
    return os.path.join(self.workdir, "final_samples.npy")

  @property
  def finished(self) -> bool:
    """Whether the run reached ``num_steps`` and wrote its final outputs already."""
    return self.start_step >= self.config.num_steps and os.path.exists(self.final_samples_path)

  def host_state(self) -> train_state.GANState:
    """The state as host arrays (one replica)."""
    return jax.device_get(parallel.unreplicate(self.state) if self.use_pmap else self.state)

  def samples(self, purpose: int, n: int) -> np.ndarray:
    """``(n, H, W, C)`` samples of the current state on the fixed latents of ``purpose``."""
    return self.sample(self.host_state(), latents(self.config, purpose, n))

  def record(self, step: int) -> dict:
    """What a checkpoint of ``step`` records besides the state: the batches consumed, the
    dataset's size, which fixes the data order, and its TFDS version, the devices that trained,
    the metrics since the last row, and the settings a resume must keep."""
    return {"data_position": step, "dataset_size": self.dataset_size,
            "dataset_version": self.dataset_version, "devices": self.device_count,
            "metrics_since_row": self.interval.state(),
            "fixed_settings": {name: getattr(self.config, name) for name in RESUME_FIXED}}

  def next_batch(self, step: int, pending: Optional[tuple]):
    """The global batch of ``step`` on the devices. Where an image does not decode (UsageError),
    the steps since the last checkpoint are saved first, ``pending`` metrics included; in one
    process only: with several, the others wait for this one in the step's collective."""
    try:
      return next(self.device_batches)
    except UsageError as error:
      if jax.process_count() == 1 and step > self.start_step:
        try:
          if pending is not None:
            self.handle_metrics(*pending)
          if self.save(step, wait=True):
            logging.info("saved checkpoint %d before stopping", step)
        except Exception as failure:  # a full disk: the image is still the error to tell
          logging.warning("could not save checkpoint %d before stopping: %s", step,
                          first_line(failure))
      raise error

  def save(self, step: int, wait: bool = False) -> bool:
    """Checkpoints ``step`` and returns True, unless the latest steps were non-finite (False): a
    checkpoint must hold a state that trains."""
    if self.nonfinite_run:
      return False
    self.checkpoints.save(step, self.host_state(), self.record(step), wait=wait)
    return True

  def scheduled(self, step: int) -> bool:
    """Whether an uninterrupted run scores ``step``: every ``eval_every_steps`` and the last."""
    every = self.config.eval_every_steps
    return step == self.config.num_steps or bool(every and step % every == 0)

  def evaluate(self, step: int, samples: Optional[np.ndarray] = None) -> dict:
    """Scores the samples of ``step`` (once: a repeated call returns the same results), given
    or drawn. Only a scheduled step may replace best/: a score at the step where a time budget
    stopped the run, which a run without the stop would not have, must not take it."""
    if self.evaluation[0] == step:
      return self.evaluation[1]
    if samples is None:
      samples = self.samples(FINAL_LATENTS, self.config.num_final_samples)
    results = self.evaluator(samples)
    self.evaluation = (step, results)
    logging.info("step %d evaluation (real-vs-real floor in brackets): %s", step, ", ".join(
        f"{k} {v:.4g} ({results['real_' + k]:.4g})" for k, v in results.items()
        if "real_" + k in results and not k.endswith("_std")))
    improved = "fid" in results and results["fid"] < self.best_fid and self.scheduled(step)
    if jax.process_count() > 1:  # all processes replace best/ or none (its saves are collective)
      improved = bool(multihost_utils.broadcast_one_to_all(np.int32(improved)))
    if improved:
      self.best_fid = results["fid"]
      self.checkpoints.wait()  # one background save at a time
      self.best.replace(step, self.host_state(),
                        {**self.record(step), **self.scoring, **results})
    # The row last: a rerun after a kill before it scores this step again (and reconsiders
    # best/); a row there means the step's score is complete (see the evaluation cache).
    self.log.write(step, results)
    return results

  def handle_metrics(self, step: int, metrics) -> None:
    """Reads one step's metrics: non-finite accounting, and on the row schedule (and at
    ``num_steps``) the metrics row of the interval and the progress line; ``train`` logs the
    step it stopped at."""
    metrics = parallel.unreplicate(metrics) if self.use_pmap else metrics
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    self.interval.add(metrics)
    self.nonfinite_run = self.nonfinite_run + 1 if metrics["nonfinite"] > 0 else 0
    on_schedule = step % self.config.log_every_steps == 0
    if on_schedule or step == self.config.num_steps:
      self.log_row(step)
    if on_schedule:  # a row off the schedule leaves the interval to the next one: see train
      self.interval.reset()
    if self.nonfinite_run >= self.config.max_nonfinite_steps:
      kept = self.checkpoints.latest_step()
      raise RunError(
          f"{self.nonfinite_run} steps in a row up to step {step} had non-finite losses or "
          "gradients (their updates were skipped); stopped. The last good checkpoint "
          f"{'does not exist yet' if kept is None else f'is step {kept}'}; lower the learning "
          "rates, then resume")

  def log_row(self, step: int) -> None:
    """The metrics row and progress line of ``step``: the means since the previous row."""
    metrics = self.interval.means()
    rate = self.log.progress(step, metrics)  # NaN at the first step: it compiled
    self.log.write(step, dict(metrics, steps_per_sec=rate) if np.isfinite(rate) else metrics)
    self.last_logged_metrics, self.logged_step = metrics, step

  def periodic_work(self, step: int, metrics) -> bool:
    """The sample grid, evaluation and checkpoint due at ``step``, off the progress clock;
    False if none is due. The checkpoint comes last, after the step's metrics row: a run resumed
    from it starts at the next step, so it must find every output of this one written."""
    config = self.config  # what is due must not depend on the process: it times collectives
    grid = config.sample_every_steps and step % config.sample_every_steps == 0
    checkpoint = step % config.checkpoint_every_steps == 0
    evaluate = (self.evaluator is not None and config.eval_every_steps
                and step % config.eval_every_steps == 0)
    if not (grid or checkpoint or evaluate):
      return False
    self.handle_metrics(step, metrics)
    jax.block_until_ready(self.state)  # the step itself stays on the clock
    with self.log.off_the_clock():
      if grid and self.primary:
        write_grid(self.log, self.workdir, step, self.samples(GRID_LATENTS, GRID_SIZE))
      if evaluate:
        self.evaluate(step)
      if checkpoint:
        self.save(step)
    return True

  def train(self, preemption: Preemption) -> dict:
    """Trains from ``start_step`` until ``num_steps``, a signal or the time budget, doing each
    step's periodic work; then the final checkpoint and, for a run that was not stopped by a
    signal, the final outputs. Returns ``train_and_evaluate``'s summary."""
    config, step = self.config, self.start_step
    if self.finished:
      logging.info("the run in %s finished at step %d already; its outputs and config.json are "
                   "kept as they were (raise --num_steps to train on)", self.workdir, step)
      return {"start_step": step, "step": step, "preempted": None, "time_limited": False,
              "already_finished": True}
    start_time = time.time()
    deadline = (time.monotonic() + 60 * config.max_train_minutes if config.max_train_minutes
                else np.inf)
    pending = None  # (step, metrics) of the previous step, read while the next step runs
    stop = None
    while step < config.num_steps:
      # At least one step, however short the budget: a run always moves on.
      stop = agreed_stop(preemption, step,
                         step > self.start_step and time.monotonic() >= deadline)
      if stop:
        break
      self.state, metrics = self.step_fn(self.state, self.next_batch(step, pending))
      step += 1
      if step == self.start_step + 1:  # that call compiled the step: time the rest from here
        jax.block_until_ready(self.state)
        logging.info("compiled and ran the first step in %.1f s", time.time() - start_time)
        self.log.restart_clock(step)
      if pending is not None:
        self.handle_metrics(*pending)
      pending = None if self.periodic_work(step, metrics) else (step, metrics)
    if pending is not None:
      self.handle_metrics(*pending)
    if step > self.start_step and self.logged_step != step:
      # A row for the step it stopped at. The interval goes on, into the checkpoint's record, as
      # after the row at num_steps: the next row of a resumed (or extended) run is then the one
      # of a run that never stopped.
      self.log_row(step)
    saved = self.save(step, wait=True)
    # Agreed once more: a signal after the loop's last agreement must stop every process or none.
    wall = time.time() - start_time
    preempted = agreed_stop(preemption, step, out_of_time=False, every=1)
    summary = {"start_step": self.start_step, "step": step, "wall_s": wall,
               "steps_per_sec": (step - self.start_step) / max(wall, 1e-9),
               "preempted": preempted, **self.last_logged_metrics,
               "time_limited": stop == OUT_OF_TIME and not preempted}
    if preempted:
      kept = self.checkpoints.latest_step()
      logging.info("%s%s: %s; rerun the same command to resume", preempted,
                   " (to another process)" if preemption.relayed else "",
                   f"saved checkpoint {step}" if saved else
                   f"step {step} not saved (non-finite steps); the newest checkpoint is "
                   f"{'none' if kept is None else kept}")
      return summary
    if summary["time_limited"]:
      logging.info("--max_train_minutes=%g reached at step %d of %d; rerun the same command to "
                   "continue", config.max_train_minutes, step, config.num_steps)
    state = self.host_state() if self.primary or self.evaluator else None  # once, for both
    final = (None if state is None else
             self.sample(state, latents(config, FINAL_LATENTS, config.num_final_samples)))
    if self.evaluator:
      summary.update(self.evaluate(step, final))
    if self.primary:  # final_samples.npy last and whole: it marks a finished run
      plotting.save_image_grid(final[:GRID_SIZE], os.path.join(self.workdir, "final_grid.png"))
      plotting.save_image_grid(self.sample(state, interpolation_latents(config)),
                               os.path.join(self.workdir, "interpolation.png"), columns=8)
      rows = read_metrics(self.workdir)
      plotting.plot_curves(rows, curve_panels(rows), os.path.join(self.workdir, "curves.png"))
      write_npy(self.final_samples_path, final.astype(np.float32))
    return summary

  def close(self) -> None:
    """Ends the batch thread and closes the log and both checkpointers (waiting for their
    saves), each one even if another fails."""
    with contextlib.ExitStack() as closing:
      for closable in (self.best, self.checkpoints, self.log,  # closed last to first
                       self.device_batches):  # its thread ends
        if closable is not None:
          closing.callback(closable.close)


def curve_panels(rows: list) -> dict:
  """The panels of ``curves.png`` for ``metrics.jsonl``'s ``rows``: the training curves, and FID
  over training with its real-vs-real floor when the run was scored more than once."""
  if sum("fid" in row for row in rows) < 2:
    return plotting.TRAINING_CURVES
  return {**plotting.TRAINING_CURVES, "FID (lower is better)": ("fid", "real_fid")}


def write_grid(log: RunLog, workdir: str, step: int, images: np.ndarray) -> None:
  """Writes ``images`` ``(N, H, W, C)`` in [-1, 1] as ``samples/step_XXXXXX.png`` and to
  TensorBoard."""
  path = os.path.join(workdir, "samples", f"step_{step:06d}.png")
  plotting.save_image_grid(images, path)
  log.image(step, "samples", plotting.image_grid(images))
