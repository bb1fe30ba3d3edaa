"""Vanilla (fully connected) GAN on the 2-D mixtures and flat MNIST, many seeds in one program.

  python -m experiments.vanilla_gan --flagfile=experiments/configs/ring8.flags --workdir=DIR

``--num_seeds=S`` trains S independent GANs at once: run k starts from ``PRNGKey(seed + k)``, and
the S states are one state ``jax.vmap``-ed over a leading seed axis, so a single compiled program
trains them all and run k equals a run with ``--seed=seed+k --num_seeds=1`` up to float round-off
(which training amplifies). The seeds are split over the local devices, and devices left over
split each seed's batch (``parallel.seed_batch_mesh``: data parallelism, gradients averaged
across the shards); on a CPU the command first makes the CPU several devices
(``parallel.split_cpu``, ``--cpu_devices``), so that the cores train side by side. Each call of
that program does ``log_every_steps`` steps in a ``lax.scan``, drawing the real batches on the
device (batch t of run k from ``fold_in(data_key_k, t)``), so Python only sees the loop every
``log_every_steps`` steps.

Writes to ``--workdir``:

* ``metrics.jsonl`` and ``tensorboard/``: every ``log_every_steps`` steps, the step metrics
  averaged over those steps and over the seeds (``nonfinite``: skipped updates per step, 0 to
  ``n_critic + 1``;
  ``steps_per_sec``: training only, snapshots excluded), and the means over seeds of the mode
  metrics (2-D) at every snapshot;
* ``samples/step_XXXXXX.png``: snapshots, one scatter panel per seed over the true modes (2-D),
  or 64 digits per seed (MNIST);
* ``final_samples.npy``: float32 ``(num_seeds, num_samples, 2)`` for the mixtures;
  ``(num_seeds * num_samples, 28, 28, 1)`` in [-1, 1], seed-major, for MNIST;
* ``final_samples.png`` (the same pictures at the end) and ``curves.png`` (losses, D(x),
  D(G(z)) and gradient norms, one line per seed);
* ``metrics.json``: the configuration, device mesh (and ``padding_runs``, the extra runs that
  filled its last seed block, trained and discarded), the ``steps`` done (fewer when a signal
  stopped the run: ``stopped_by``), skipped updates per seed, wall time, and for the mixtures
  the PacGAN mode metrics of every seed (modes covered, high-quality fraction, reverse KL) with
  their mean and std;
* ``config.json``: the flags, written at start;
* ``.lock``: held while the run lives (``gan_jax.workdir_lock``).

A rerun in the same workdir keeps a finished run and trains a stopped or killed one again from
step 0 (``earlier_run``).
"""
import dataclasses
import glob
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags, logging
from jax import lax
from jax.sharding import PartitionSpec

from gan_jax import (cli, distributions, input_pipeline, parallel, plotting, train_state,
                     train_step, workdir_lock)
from gan_jax.cli import RunError, field, require
from gan_jax.metrics import modes
from gan_jax.models import mlp
from gan_jax.preemption import Preemption, exit_status
from gan_jax.run_log import RunLog, read_json_object, read_metrics, write_json, write_npy

Array = jax.Array
DATASETS = (*distributions.TOY_DATASETS, "mnist")
LR_SCHEDULES = ("constant", "cosine")
MNIST_SIDE = 28
DIGITS_PER_SEED = 64  # digits per seed in the MNIST pictures, 4 rows of 16
DIGITS_PER_ROW = 16
MODE_METRICS = ("modes", "high_quality", "reverse_kl")
MAX_SAMPLES = 100_000  # per seed
# written at the end (metrics.json last), all of one run; metrics.jsonl and TensorBoard restart
# by themselves (RunLog at step 0)
RUN_OUTPUTS = ("metrics.json", "final_samples.npy", "final_samples.png", "curves.png")


@dataclasses.dataclass(frozen=True)
class VanillaConfig:
  """One vanilla GAN experiment; every field is a flag of ``experiments.vanilla_gan``."""
  dataset: str = field("ring8", "ring8 or grid25 (the PacGAN/VEEGAN 2-D mixtures), or mnist "
                       "(the embedded digits, flattened to 784 values in [-1, 1]).")
  loss: str = field("non_saturating", "GAN loss: non_saturating, minimax, wasserstein, hinge, "
                    "least_squares.")
  num_steps: int = field(10000, "Generator updates per seed.")
  batch_size: int = field(256, "Samples per discriminator update, per seed.")
  seed: int = field(0, "Seed of the first run; run k of --num_seeds uses seed + k.")
  num_seeds: int = field(1, "Independent GANs trained at once, vmapped in one program.")
  latent_dim: int = field(2, "Size of the generator's Gaussian noise vector.")
  g_width: int = field(128, "Generator units per hidden layer.")
  g_depth: int = field(3, "Generator hidden layers.")
  g_activation: str = field("relu", "Generator hidden nonlinearity: relu, leaky_relu, elu, gelu, "
                            "tanh.")
  d_width: int = field(128, "Discriminator units per hidden layer.")
  d_depth: int = field(3, "Discriminator hidden layers.")
  d_activation: str = field("leaky_relu", "Discriminator hidden nonlinearity.")
  spectral_norm: bool = field(False, "Spectrally normalize the discriminator's weights.")
  packing: int = field(1, "PacGAN packing: the discriminator judges this many samples jointly.")
  g_learning_rate: float = field(1e-3, "Generator Adam learning rate.")
  d_learning_rate: float = field(1e-3, "Discriminator Adam learning rate.")
  beta1: float = field(0.5, "Adam beta1.")
  beta2: float = field(0.999, "Adam beta2.")
  lr_schedule: str = field("constant", "constant, or cosine: both learning rates decay to 0 "
                           "over --num_steps.")
  warmup_steps: int = field(0, "Steps over which both learning rates first rise linearly from 0 "
                            "(keeps the early, large updates from killing ReLU units).")
  n_critic: int = field(1, "Discriminator updates per generator update.")
  gradient_penalty: float = field(0.0, "WGAN-GP penalty weight (0: off).")
  r1_penalty: float = field(0.0, "R1 penalty weight gamma/2 (0: off).")
  ema_decay: float = field(0.0, "Decay of an EMA of the generator weights used for the samples "
                           "(0: off).")
  log_every_steps: int = field(500, "Steps per compiled call: a progress line and metrics row "
                               "after each.")
  snapshot_every_steps: int = field(2500, "Steps between sample snapshots (0: only the final "
                                    "samples); a multiple of --log_every_steps.")
  num_samples: int = field(modes.NUM_SAMPLES, "Samples per seed in final_samples.npy and in the "
                           "snapshots.")


class RealData(NamedTuple):
  """Data drawn inside the compiled program.

  Attributes:
    arrays: what ``sample`` reads, passed to the program as an argument (not baked into it).
    sample: ``(arrays, key, n) -> (n, dim)`` float32 samples.
    dim: size of a flat sample.
    mixture: the 2-D target, or None for images.
  """
  arrays: Any
  sample: Callable[[Any, Array, int], Array]
  dim: int
  mixture: Optional[distributions.GaussianMixture]


def validate(config: VanillaConfig) -> None:
  """Raises UsageError naming the first bad setting and what to do."""
  cli.require_one_of(config, "dataset", DATASETS)
  cli.require_gan_settings(config)
  for name in ("g_activation", "d_activation"):
    cli.require_one_of(config, name, tuple(mlp.ACTIVATIONS))
  cli.require_one_of(config, "lr_schedule", LR_SCHEDULES)
  cli.require_positive(config, ("num_steps", "batch_size", "num_seeds", "latent_dim", "g_width",
                                "g_depth", "d_width", "d_depth", "packing",
                                "log_every_steps", "num_samples"))
  require(0 <= config.warmup_steps < config.num_steps, f"--warmup_steps must be in [0, "
          f"--num_steps), got {config.warmup_steps}")
  require(config.batch_size % config.packing == 0, f"--batch_size={config.batch_size} is not a "
          f"multiple of --packing={config.packing}; the discriminator judges packs of "
          f"{config.packing} samples")
  require(config.num_steps % config.log_every_steps == 0, f"--num_steps={config.num_steps} is "
          f"not a multiple of --log_every_steps={config.log_every_steps}; every compiled call "
          "runs the same number of steps")
  require(config.num_samples <= MAX_SAMPLES, f"--num_samples={config.num_samples} is more than "
          f"{MAX_SAMPLES:,}: the samples of every seed are generated and held at once")
  if config.dataset in distributions.TOY_DATASETS:
    num_modes = distributions.get_toy_dataset(config.dataset).num_modes
    require(config.num_samples >= modes.MIN_COUNT * num_modes, f"--num_samples="
            f"{config.num_samples} cannot show all {num_modes} modes of {config.dataset} covered "
            f"(each needs {modes.MIN_COUNT} high-quality samples): use at least "
            f"{modes.MIN_COUNT * num_modes} (the protocol draws {modes.NUM_SAMPLES})")
  require(config.snapshot_every_steps >= 0
          and config.snapshot_every_steps % config.log_every_steps == 0,
          f"--snapshot_every_steps={config.snapshot_every_steps} must be 0 or a multiple of "
          f"--log_every_steps={config.log_every_steps}")


def load_data(dataset: str) -> RealData:
  """The named dataset as a sampler that runs on the device."""
  if dataset == "mnist":
    images = input_pipeline.mnist_source(MNIST_SIDE).images.reshape(-1, MNIST_SIDE ** 2)
    sample = lambda images, key, n: images[jax.random.randint(key, (n,), 0, images.shape[0])]
    return RealData(jnp.asarray(images), sample, MNIST_SIDE ** 2, None)
  mixture = distributions.get_toy_dataset(dataset)
  return RealData((), lambda _, key, n: mixture.sample(key, n), mixture.dim, mixture)


def build_models(config: VanillaConfig, dim: int):
  """The generator and discriminator the config describes; tanh outputs for images."""
  generator = mlp.MLPGenerator(
      latent_dim=config.latent_dim, output_dim=dim, width=config.g_width, depth=config.g_depth,
      activation=config.g_activation,
      output_activation="tanh" if config.dataset == "mnist" else None)
  discriminator = mlp.MLPDiscriminator(
      width=config.d_width, depth=config.d_depth, activation=config.d_activation,
      spectral_norm=config.spectral_norm, packing=config.packing)
  return generator, discriminator


def optimizer(config: VanillaConfig, learning_rate: float, updates_per_step: int):
  """Adam at ``learning_rate``: warmed up, then constant or cosine-decayed to 0 at the end.

  ``updates_per_step`` converts the step counts of the config into optimizer updates.
  """
  warmup, total = (config.warmup_steps * updates_per_step, config.num_steps * updates_per_step)
  if config.lr_schedule == "cosine":
    schedule = (optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, total) if warmup
                else optax.cosine_decay_schedule(learning_rate, total))
  else:
    schedule = (optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup),
                                      optax.constant_schedule(learning_rate)], [warmup])
                if warmup else learning_rate)
  # (optax warns of a zero-length warm-up, so none is built when there is none)
  return optax.adam(schedule, b1=config.beta1, b2=config.beta2)


def make_step(config: VanillaConfig, generator: mlp.MLPGenerator,
              discriminator: mlp.MLPDiscriminator, axis_name: Optional[str] = None) -> Callable:
  """The pure train step ``(state, real) -> (state, metrics)`` of one run, as the config says,
  for one shard of its batch (gradients averaged over ``axis_name``, see ``train_step``)."""
  return train_step.make_train_step(generator, discriminator, train_step.StepConfig.of(config),
                                   axis_name)


def seed_keys(first_seed: int, count: int) -> Array:
  """``(count, 3, 2)``: the init, data and sample keys of the runs ``first_seed + k``."""
  # uint32: key seeds up to 2^32 - 1 (JAX's default int32 would overflow above 2^31 - 1); the
  # padding runs past 2^32 - 1 wrap around
  seeds = (first_seed + np.arange(count, dtype=np.uint64)).astype(np.uint32)
  return jax.vmap(lambda s: jax.random.split(jax.random.PRNGKey(s), 3))(seeds)


def make_train_chunk(step_fn: Callable, sample: Callable[[Any, Array, int], Array],
                     real_per_step: int, length: int, axis_name: Optional[str] = None):
  """``chunk(state, data_key, arrays) -> (state, metrics)``: ``length`` steps of one run.

  Step t trains on ``sample(arrays, fold_in(data_key, t), real_per_step)``, or with the batch
  split over ``axis_name``, on this replica's contiguous block of it (the same global batch on
  any number of shards); ``metrics`` maps names to ``(length,)`` arrays, one value per step.
  """
  def chunk(state: train_state.GANState, data_key: Array, arrays):
    def body(state, _):
      real = sample(arrays, jax.random.fold_in(data_key, state.step), real_per_step)
      return step_fn(state, parallel.local_block(real, axis_name))
    return lax.scan(body, state, None, length=length)
  return chunk


def compile_train_program(step_fn: Callable, data: RealData, real_per_step: int, length: int,
                          state: train_state.GANState, data_keys: Array,
                          mesh: jax.sharding.Mesh):
  """``program(state, data_keys, data.arrays) -> (state, metrics)``: ``length`` steps of every
  seed; compiled, and the state donated.

  The seeds are vmapped over the leading axis of ``state`` and ``data_keys``, which are split
  over ``mesh``'s seed axis; each seed's batch is split over its batch axis, where ``step_fn``
  must average over ``parallel.batch_axis(mesh)``. ``data.arrays`` is replicated.
  """
  chunk = make_train_chunk(step_fn, data.sample, real_per_step, length,
                           parallel.batch_axis(mesh))
  seeds = PartitionSpec(parallel.SEED_AXIS)
  # check_vma=False: pmap's semantics, which the step is written for. With it on, JAX would
  # already sum the gradients of the replicated params over the batch shards, before the step
  # averages them.
  program = jax.shard_map(jax.vmap(chunk, in_axes=(0, 0, None)), mesh=mesh,
                          in_specs=(seeds, seeds, PartitionSpec()), out_specs=(seeds, seeds),
                          check_vma=False)
  return jax.jit(program, donate_argnums=(0,)).lower(state, data_keys, data.arrays).compile()


def make_generate(generator: mlp.MLPGenerator, num_samples: int):
  """``generate(state, key) -> (num_samples, dim)``: one run's generator (its EMA if kept)."""
  def generate(state: train_state.GANState, key: Array) -> Array:
    params = state.generator.params if state.ema_params is None else state.ema_params
    latents = jax.random.normal(key, (num_samples, generator.latent_dim))
    return generator.apply({"params": params, "batch_stats": state.generator.batch_stats},
                           latents, train=False)
  return generate


def evaluate_modes(samples: np.ndarray, mixture: distributions.GaussianMixture
                   ) -> List[Dict[str, float]]:
  """PacGAN mode metrics of each seed's samples ``(num_seeds, n, 2)``."""
  return [modes.mode_metrics(s, mixture.means, mixture.stds) for s in samples]


def finite_values(values) -> np.ndarray:
  """The finite ones of ``values``, float64: a seed without high-quality samples has no reverse
  KL, a skipped step no loss."""
  values = np.asarray(values, np.float64)
  return values[np.isfinite(values)]


def mean_over_finite(values) -> float:
  """The mean of the finite values (NaN if there are none)."""
  finite = finite_values(values)
  return float(finite.mean()) if finite.size else float("nan")


def summarize(per_seed: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
  """Mean, std (over seeds, ddof 0), min and max of every metric, over the seeds where it is
  finite (``seeds``: how many; a reverse KL needs high-quality samples)."""
  summary = {}
  for name in per_seed[0]:
    values = finite_values([m[name] for m in per_seed])
    summary[name] = ({"mean": float(values.mean()), "std": float(values.std()),
                      "min": float(values.min()), "max": float(values.max())}
                     if values.size else dict.fromkeys(("mean", "std", "min", "max"), np.nan))
    summary[name]["seeds"] = int(values.size)
  return summary


def check_skipped_updates(nonfinite: np.ndarray, seeds: np.ndarray, step: int) -> None:
  """Warns naming the seeds that skipped updates (a non-finite loss, gradient or update) in the
  chunk of steps ending at ``step``; RunError when every step of every seed skipped one: no
  seed trains as configured any more.

  Args:
    nonfinite: ``(num_seeds, steps)``, updates skipped per step of each seed.
    seeds: the seeds, ``(num_seeds,)``.
    step: the chunk's last step.
  """
  steps = nonfinite.shape[1]
  skipping = np.sum(nonfinite > 0, axis=1)  # steps with a skipped update, per seed
  first = step - steps + 1
  if np.all(skipping == steps):
    raise RunError(f"every step of every seed from step {first} to {step} skipped an update (a "
                   "non-finite loss, gradient or update); stopped. Lower the learning rates or "
                   "the penalties and run again in a new --workdir")
  if skipping.any():
    logging.warning("steps %d-%d: updates skipped as non-finite, seed (steps): %s", first, step,
                    ", ".join(f"{s} ({n})" for s, n in zip(seeds, skipping) if n))


def save_pictures(samples: np.ndarray, data: RealData, seeds: np.ndarray, path: str,
                  per_seed: Optional[List[Dict[str, float]]] = None) -> None:
  """Scatter panels over the modes (2-D, titled with ``per_seed`` metrics) or digit rows."""
  if data.mixture is None:
    digits = samples[:, :DIGITS_PER_SEED].reshape(len(samples), -1, MNIST_SIDE, MNIST_SIDE, 1)
    blank = -digits.shape[1] % DIGITS_PER_ROW  # gray cells: each seed starts a row
    digits = np.pad(digits, ((0, 0), (0, blank), (0, 0), (0, 0), (0, 0)))
    plotting.save_image_grid(digits.reshape(-1, MNIST_SIDE, MNIST_SIDE, 1), path,
                             columns=DIGITS_PER_ROW)
    return
  titles = [f"seed {s}" for s in seeds]
  if per_seed is not None:
    num_modes = data.mixture.num_modes
    titles = [f"{t}: {m['modes']}/{num_modes} modes, HQ {m['high_quality']:.1%}, "
              f"rKL {m['reverse_kl']:.3f}" for t, m in zip(titles, per_seed)]
  plotting.plot_samples_over_modes(samples, data.mixture.means, data.mixture.stds, path, titles)


def init_states(config: VanillaConfig, generator: mlp.MLPGenerator,
                discriminator: mlp.MLPDiscriminator, dim: int, init_keys: Array,
                sharding: jax.sharding.NamedSharding) -> train_state.GANState:
  """One GANState per seed, stacked along a leading seed axis split by ``sharding``."""
  def init(key):
    return train_state.create_gan_state(
        key, generator, discriminator, (dim,),
        optimizer(config, config.g_learning_rate, 1),
        optimizer(config, config.d_learning_rate, config.n_critic),
        use_ema=config.ema_decay > 0)
  return jax.jit(jax.vmap(init), out_shardings=sharding)(init_keys)


class Training(NamedTuple):
  """A compiled training program and what it starts from (see ``prepare_training``).

  Attributes:
    state: every run's GANState, split over the mesh's seed axis: the ``num_seeds`` seeds first,
      then the padding runs that fill the last seed block (``parallel.padded_seed_count``).
    keys: ``(runs, 3, 2)``, the init, data and sample keys of each run.
    data: the dataset, its arrays replicated over the mesh.
    run: ``run(state, keys[:, 1], data.arrays) -> (state, metrics)``: ``log_every_steps`` steps
      of every seed (``compile_train_program``).
  """
  state: train_state.GANState
  keys: Array
  data: RealData
  run: Callable


def prepare_training(config: VanillaConfig, data: RealData, generator: mlp.MLPGenerator,
                     discriminator: mlp.MLPDiscriminator, mesh: jax.sharding.Mesh) -> Training:
  """The seeds' initial states and keys placed on ``mesh``, and the program compiled for it
  (its step averaging over the batch shards where the mesh splits the batch)."""
  step_fn = make_step(config, generator, discriminator, parallel.batch_axis(mesh))
  sharding = parallel.seed_sharding(mesh)
  data = data._replace(arrays=jax.device_put(data.arrays, parallel.replicated(mesh)))
  runs = parallel.padded_seed_count(config.num_seeds, mesh)
  keys = jax.device_put(seed_keys(config.seed, runs), sharding)
  state = init_states(config, generator, discriminator, data.dim, keys[:, 0], sharding)
  run = compile_train_program(step_fn, data, config.batch_size * config.n_critic,
                              config.log_every_steps, state, keys[:, 1], mesh)
  return Training(state, keys, data, run)


def seed_mesh(config: VanillaConfig, devices: Optional[List[jax.Device]] = None
              ) -> jax.sharding.Mesh:
  """The (seed, batch) mesh of ``devices`` (default: the local ones) for the config's runs.

  The seeds are independent: they are split over the devices (each trains its share), and
  devices left over split each seed's batch (of packs: a pack is judged whole).
  """
  return parallel.seed_batch_mesh(config.num_seeds, config.batch_size // config.packing, devices)


def write_final_outputs(workdir: str, samples: np.ndarray, data: RealData, seeds: np.ndarray,
                        results: dict) -> None:
  """``final_samples.npy`` and ``final_samples.png``; the mode metrics go into ``results``."""
  path = os.path.join(workdir, "final_samples")
  if data.mixture is None:
    write_npy(path + ".npy", samples.reshape(-1, MNIST_SIDE, MNIST_SIDE, 1))
    save_pictures(samples, data, seeds, path + ".png")
    return
  write_npy(path + ".npy", samples)
  per_seed = evaluate_modes(samples, data.mixture)
  results.update(per_seed=[dict(m, seed=int(s)) for s, m in zip(seeds, per_seed)],
                 summary=summarize(per_seed))
  save_pictures(samples, data, seeds, path + ".png", per_seed)


def earlier_run(config: VanillaConfig, workdir: str) -> Optional[dict]:
  """What a run of ``config`` does with the run already in ``workdir``.

  Vanilla runs keep no checkpoints: a run of the same flags that was stopped or killed trains
  again from step 0 (on the same devices, bitwise the same run), its outputs removed first so
  that none of them is left beside the new ones. A run that finished is kept: its results
  (``metrics.json``) are returned. A run of other flags, or one without ``config.json``, is
  refused with UsageError, unless it wrote no metrics row (it failed at start: nothing to keep).
  """
  results = read_json_object(os.path.join(workdir, "metrics.json"), "run's results",
                             "move it away or use a new --workdir")
  if results is None and not read_metrics(workdir):
    return None
  saved = read_json_object(os.path.join(workdir, "config.json"), "run's configuration",
                           "move it away or use a new --workdir")
  changed = [f"--{name}" for name, value in dataclasses.asdict(config).items()
             if saved is not None and saved.get(name) != value]
  require(saved is not None and not changed, f"--workdir={workdir} holds another run ("
          f"{'other ' + ', '.join(changed) if changed else 'without config.json'}), and vanilla "
          "runs keep no checkpoints to resume from; use a new --workdir")
  if results is not None and results.get("stopped_by") is None:
    return results
  logging.warning("the run in %s %s; vanilla runs keep no checkpoints, so it trains again from "
                  "step 0", workdir, f"was stopped by {results['stopped_by']} at step "
                  f"{results.get('steps')}" if results else "was killed before it finished")
  stale = [os.path.join(workdir, name) for name in RUN_OUTPUTS]
  stale += glob.glob(os.path.join(workdir, "samples", "step_*.png"))
  for path in stale:
    if os.path.isfile(path):
      os.remove(path)
  return None


def train_and_evaluate(config: VanillaConfig, workdir: str,
                       devices: Optional[List[jax.Device]] = None,
                       stop: Optional[Preemption] = None) -> dict:
  """Trains ``config.num_seeds`` GANs at once on ``devices`` (default: the local ones) and
  writes everything under ``workdir``.

  Once ``stop`` (the command installs one) has caught a SIGTERM or a first Ctrl-C, the training
  stops after the chunk of steps under way; the run then writes its outputs for the steps done
  (``steps`` and ``stopped_by`` in ``metrics.json``). A run already in ``workdir`` is kept if it
  finished, or trained again if not (``earlier_run``).

  Returns:
    What ``metrics.json`` holds (see the module docstring).
  """
  start_time = time.time()
  validate(config)
  cli.make_writable_dir(workdir)
  with workdir_lock.hold(workdir):
    return _train(config, workdir, devices, stop, start_time)


def _train(config: VanillaConfig, workdir: str, devices: Optional[List[jax.Device]],
           stop: Optional[Preemption], start_time: float) -> dict:
  """``train_and_evaluate`` in its workdir, locked."""
  finished = earlier_run(config, workdir)
  if finished is not None:
    logging.info("the run in %s finished already; its outputs are kept (train again in a new "
                 "--workdir)", workdir)
    return finished
  cli.make_writable_dir(os.path.join(workdir, "samples"))
  write_json(os.path.join(workdir, "config.json"), dataclasses.asdict(config))
  data = load_data(config.dataset)
  generator, discriminator = build_models(config, data.dim)
  mesh = seed_mesh(config, devices)
  state, keys, data, run_chunk = prepare_training(config, data, generator, discriminator, mesh)
  data_keys, sample_keys = keys[:, 1], keys[:, 2]
  runs, num_seeds = len(keys), config.num_seeds
  generate_all = jax.jit(jax.vmap(make_generate(generator, config.num_samples)))
  generate = lambda state: np.asarray(generate_all(state, sample_keys))[:num_seeds]
  logging.info("%d seed(s) of %s on %d device(s) (%d seed block(s) x %d batch shard(s)%s): "
               "%d + %d parameters per seed, compiled in %.1f s", num_seeds, config.dataset,
               mesh.size, mesh.shape[parallel.SEED_AXIS], mesh.shape[parallel.AXIS_NAME],
               f", {runs - num_seeds} padding run(s) discarded" if runs > num_seeds else "",
               train_state.count_params(state.generator.params) // runs,
               train_state.count_params(state.discriminator.params) // runs,
               time.time() - start_time)

  seeds = config.seed + np.arange(config.num_seeds)
  log = RunLog(workdir, 0, config.num_steps)
  # metric name -> one (num_seeds,) array per chunk
  history = {name: [] for group in plotting.TRAINING_CURVES.values() for name in group}
  nonfinite, train_start, snapshot_s, step = np.zeros(num_seeds, int), time.time(), 0.0, 0
  while step < config.num_steps:
    state, metrics = run_chunk(state, data_keys, data.arrays)
    step += config.log_every_steps
    metrics = {name: np.asarray(v)[:num_seeds] for name, v in metrics.items()}  # (S, steps)
    check_skipped_updates(metrics["nonfinite"], seeds, step)
    nonfinite += np.sum(metrics["nonfinite"], axis=1).astype(int)
    per_seed = {name: np.array([mean_over_finite(seed) for seed in v])
                for name, v in metrics.items()}  # (S,) each
    for name, values in history.items():
      values.append(per_seed[name])
    row = {name: mean_over_finite(v) for name, v in per_seed.items()}
    row["steps_per_sec"] = log.progress(step, row)
    if config.snapshot_every_steps and step % config.snapshot_every_steps == 0:
      snapshot_start = time.time()
      samples = generate(state)
      snapshot = evaluate_modes(samples, data.mixture) if data.mixture else None
      if snapshot:
        row.update({name: mean_over_finite([m[name] for m in snapshot])
                    for name in MODE_METRICS})
        logging.info("step %d: modes per seed %s | mean high quality %.3f | mean reverse KL "
                     "%.4f", step, " ".join(str(m["modes"]) for m in snapshot),
                     row["high_quality"], row["reverse_kl"])
      save_pictures(samples, data, seeds, os.path.join(workdir, "samples", f"step_{step:06d}.png"),
                    snapshot)
      snapshot_s += time.time() - snapshot_start
      log.restart_clock(step)  # the next chunk's rate times its training only
    log.write(step, row)
    stopped_by = stop and stop.requested if step < config.num_steps else None
    if stopped_by:  # checked after a chunk: a run stopped during its set-up trains one
      break
  log.close()
  train_time = time.time() - train_start - snapshot_s
  if stopped_by:
    logging.warning("stopped by %s after step %d of %d: the outputs are of that step (vanilla "
                    "runs keep no checkpoints: the same command trains it again from step 0)",
                    stopped_by, step, config.num_steps)

  results = {"config": dataclasses.asdict(config), "seeds": seeds.tolist(),
             "devices": mesh.size, "mesh": dict(mesh.shape), "padding_runs": runs - num_seeds,
             "steps": step, "stopped_by": stopped_by,
             "train_s": train_time, "snapshot_s": snapshot_s,
             "steps_per_sec": step / train_time,
             "nonfinite_updates": int(nonfinite.sum()),
             "nonfinite_updates_per_seed": nonfinite.tolist()}
  write_final_outputs(workdir, generate(state).astype(np.float32), data, seeds, results)
  steps = np.arange(1, len(history["d_loss"]) + 1) * config.log_every_steps
  plotting.plot_seed_curves(steps, {k: np.stack(v) for k, v in history.items()},
                            plotting.TRAINING_CURVES, os.path.join(workdir, "curves.png"))
  results["wall_s"] = time.time() - start_time
  write_json(os.path.join(workdir, "metrics.json"), results)
  return results


def main(argv):
  config = cli.config_from_flags(VanillaConfig)
  validate(config)  # before the devices are split by its settings
  parallel.split_cpu(config.num_seeds, config.batch_size // config.packing,
                     flags.FLAGS.cpu_devices)
  with Preemption() as stop:
    results = train_and_evaluate(config, flags.FLAGS.workdir, stop=stop)
  if results["stopped_by"]:
    return exit_status(results["stopped_by"])
  for name, stats in results.get("summary", {}).items():
    logging.info("%s over %d seeds: %.4f +- %.4f (min %.4f, max %.4f)", name, stats["seeds"],
                 stats["mean"], stats["std"], stats["min"], stats["max"])
  logging.info("wall time %.1f s (training %.1f s, %.1f steps/s); outputs in %s",
               results["wall_s"], results["train_s"], results["steps_per_sec"], flags.FLAGS.workdir)


if __name__ == "__main__":
  # Defined here, not on import: experiments.theory and benchmarks.toy_throughput import this
  # module and define flags of their own (--dataset, --cpu_devices, ...).
  cli.define_flags(VanillaConfig)
  flags.adopt_module_key_flags(cli)  # --helpshort lists them
  flags.DEFINE_string("workdir", None, "Folder for samples, metrics and pictures.")
  flags.DEFINE_integer("cpu_devices", None, "JAX devices to make of the CPU: the seeds are split "
                       "over the largest number of them that divides --num_seeds, and spare ones "
                       "(up to one per core, 32 examples or more each) split each seed's batch "
                       "(default: up to 4 per core for the seeds). Exact results depend on the "
                       "count.", lower_bound=1)
  flags.mark_flag_as_required("workdir")
  cli.run(main)
