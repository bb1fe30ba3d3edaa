"""Parallelism: the train step on one or all devices, device-invariant noise, and seeds spread
over devices.

The train step is written once for one shard of the batch. Called with ``axis_name=None`` it is
the single-device step; under ``pmap(axis_name='batch')`` it averages gradients, metrics and
batch statistics across replicas. Noise is drawn per *global example index* (example i of the
global batch always gets the key ``fold_in(key, i)``), so a run on N devices draws the same
latents as the same run on one device: results do not depend on how many devices you have, up to
the order of float reductions.

Independent runs (the seeds of ``experiments.vanilla_gan``) are split whole over the first axis
of a ``(seed, batch)`` mesh (``seed_batch_mesh``) and, where devices are left over, each seed's
batch over the second. A device computes its seeds as one device would, but XLA may pick other
kernels for a different block of seeds, and a split batch sums its gradients in another order, so
the float round-off, which GAN training amplifies, depends on the mesh.
"""
import math
import os
import re
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax import lax
from jax.experimental import multihost_utils

Array = jax.Array
PyTree = Any
AXIS_NAME = "batch"
SEED_AXIS = "seed"
# Ten vmapped grid25 GANs on 2 cores, steps/s: 23.6 on 1 CPU device, 39.7 on 2, 43.3 on 5, 40.5
# on 10 (and 35.5 against 22.4 over a whole 20,000-step run on 5): a plateau from 2.5 to 5 per core.
CPU_DEVICES_PER_CORE = 4
# A toy seed's batch of 256 on 2 cores: 381-395 steps/s on 1 CPU device, 582-597 split over 2.
# Smaller shards than this are not split further (their all-reduces would dominate).
MIN_EXAMPLES_PER_SHARD = 32


def shard_index(axis_name: Optional[str]) -> Array:
  """This replica's position along ``axis_name`` (0 outside pmap)."""
  return jnp.int32(0) if axis_name is None else lax.axis_index(axis_name)


def mean_over_replicas(tree: PyTree, axis_name: Optional[str]) -> PyTree:
  """``lax.pmean`` over ``axis_name``; the identity outside pmap / shard_map."""
  return tree if axis_name is None else lax.pmean(tree, axis_name)


def per_example_noise(key: Array, shape, axis_name: Optional[str],
                      draw: Callable = jax.random.normal) -> Array:
  """Noise for this shard, ``shape = (local_batch, *event_shape)``, standard normal by default.

  Example j of replica r is global example ``i = r * local_batch + j`` and gets
  ``draw(fold_in(key, i), event_shape)``: the same numbers whatever the number of replicas.
  ``draw`` is ``jax.random.normal`` or another sampler ``(key, shape) -> Array``.
  """
  local_batch, event_shape = shape[0], tuple(shape[1:])
  first = shard_index(axis_name) * local_batch
  indices = first + jnp.arange(local_batch)
  return jax.vmap(lambda i: draw(jax.random.fold_in(key, i), event_shape))(indices)


def jit_step(step_fn: Callable) -> Callable:
  """``jax.jit`` with the state (first argument) donated, so its buffers are reused."""
  return jax.jit(step_fn, donate_argnums=(0,))


def pmap_step(step_fn: Callable, axis_name: str = AXIS_NAME,
              devices: Optional[Sequence[jax.Device]] = None) -> Callable:
  """``jax.pmap`` over ``devices`` (default: all local devices; a subset in one process only)
  with the replicated state donated."""
  return jax.pmap(step_fn, axis_name=axis_name, donate_argnums=(0,), devices=devices)


def _one_block_per_device(devices: Sequence[jax.Device]) -> jax.sharding.NamedSharding:
  """The leading axis split over ``devices``, one block each, on a mesh whose axis is named as
  ``pmap_step``'s: where pmap puts its outputs, so that inputs placed so share one compiled
  program with them (other placements compile the step again on the second call)."""
  mesh = jax.sharding.Mesh(np.array(devices), (AXIS_NAME,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS_NAME))


def replicate(tree: PyTree, devices: Optional[Sequence[jax.Device]] = None) -> PyTree:
  """Copies ``tree`` to each of ``devices`` (default: every local device); leading axis: their
  count. Placed as ``pmap_step`` places its outputs, so that its first call and the next share
  one compiled program."""
  devices = list(jax.local_devices() if devices is None else devices)
  sharding = _one_block_per_device(devices)

  def copies(x):
    one = jnp.expand_dims(x, 0)
    return jax.make_array_from_single_device_arrays(
        (len(devices),) + one.shape[1:], sharding, [jax.device_put(one, d) for d in devices])
  return jax.tree_util.tree_map(copies, tree)


def unreplicate(tree: PyTree) -> PyTree:
  """The first local replica of a replicated tree.

  Reads this process's first shard, so it is no collective: in a multi-process job, any process
  may call it alone (``x[0]`` would be a computation over every process's devices).
  """
  return jax.tree_util.tree_map(lambda x: x.addressable_data(0).reshape(x.shape[1:]), tree)


def shard(batch: np.ndarray, num_shards: int) -> np.ndarray:
  """Splits a batch ``(B, ...)`` into ``(num_shards, B // num_shards, ...)``, contiguous blocks."""
  if batch.shape[0] % num_shards:
    raise ValueError(f"batch of {batch.shape[0]} cannot be split over {num_shards} devices")
  return batch.reshape((num_shards, -1) + batch.shape[1:])


def put_sharded(batch: np.ndarray, devices) -> Array:
  """``shard(batch, len(devices))`` placed one block per device, as ``pmap`` expects it."""
  return jax.device_put(shard(batch, len(devices)), _one_block_per_device(devices))


def any_process(flag: bool) -> bool:
  """Whether ``flag`` holds on any process (a collective: every process must call it; just
  ``flag`` in a single process)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def largest_divisor_at_most(n: int, limit: int) -> int:
  """The largest d <= ``limit`` that divides ``n`` (1 when ``limit`` < 1)."""
  return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"


def available_cores() -> int:
  """CPU cores this process may run on: those it may be scheduled on, capped by a container's
  CPU quota (``docker --cpus=2`` on a large host leaves all its cores schedulable)."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  try:
    with open(CGROUP_CPU_MAX) as f:
      quota, period = f.read().split()[:2]
    if quota != "max":
      cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
  except (OSError, ValueError):  # no cgroup v2 limit readable here
    pass
  return cores or 1


def seed_and_batch_blocks(num_seeds: int, batch_size: int, num_devices: int,
                          cores: Optional[int] = None) -> Tuple[int, int]:
  """How independent runs share ``num_devices``: ``(seed_blocks, batch_shards)``.

  The seeds are split into equal blocks, one per device. On accelerators (``cores`` None) there
  are as few blocks as give each device the fewest seeds: 10 seeds on 8 GPUs make 5 blocks of 2;
  13 seeds make 7 blocks of 2, the last padded with an extra run that is trained and discarded
  (``padded_seed_count``), because an idle accelerator costs as much time as a busy one. CPU
  devices share the cores, where a padding run is only more work (9 grid25 seeds on 2 cores:
  11% slower on 5 devices with one padding run than on 3), so on a CPU the blocks are the most
  that divide the seeds (10 seeds on 8 CPU devices use 5 of them, 7 seeds use 7, 13 seeds 1),
  and the cores that they leave over also split the batch of every seed (data parallelism), at
  most one shard per core (unlike independent seeds, batch shards meet at every gradient
  all-reduce, so more shards than cores only add waiting) and at least
  ``MIN_EXAMPLES_PER_SHARD`` examples each. On accelerators the batch is not split: for these
  small models, whose steps are bound by latency, more all-reduces are unlikely to pay (not
  measured).

  Args:
    num_seeds: independent runs.
    batch_size: examples (or PacGAN packs) per update, split in equal shards.
    num_devices: devices available.
    cores: the CPU cores the devices share (``sharing_cores``), or None for accelerators.
  """
  if cores is None:
    seeds_per_block = -(-num_seeds // max(1, num_devices))
    return -(-num_seeds // seeds_per_block), 1
  seed_blocks = largest_divisor_at_most(num_seeds, num_devices)
  spare = min(num_devices // seed_blocks, cores // seed_blocks,
              batch_size // MIN_EXAMPLES_PER_SHARD)
  return seed_blocks, largest_divisor_at_most(batch_size, spare)


def padded_seed_count(num_seeds: int, mesh: jax.sharding.Mesh) -> int:
  """The runs a program on ``mesh`` trains for ``num_seeds``: rounded up to a multiple of its
  seed blocks (the extra runs only fill the last block's device)."""
  blocks = mesh.shape[SEED_AXIS]
  return -(-num_seeds // blocks) * blocks


def split_cpu(num_seeds: int, batch_size: int, count: Optional[int] = None) -> int:
  """Makes JAX's CPU backend several devices, so that the cores train side by side.

  On one CPU device, XLA runs the small matrix products of a toy GAN one after another, each
  using about one core. Independent seeds spread over several CPU devices run side by side (up
  to ``CPU_DEVICES_PER_CORE`` per core); cores that the seeds leave over split each seed's batch
  (``seed_and_batch_blocks``). Must run before JAX initializes its backends (later,
  ``jax.config`` raises RuntimeError); it overrides ``--xla_force_host_platform_device_count``.
  On a GPU or TPU host it only sizes the CPU backend, which the run does not use (its devices
  cost no memory until used).

  Args:
    num_seeds: the runs to spread.
    batch_size: examples (or packs) per update of one run.
    count: CPU devices to make; default: as many as ``seed_and_batch_blocks`` uses of
      ``CPU_DEVICES_PER_CORE`` per core.

  Returns:
    The number of CPU devices set.
  """
  if count is None:
    cores = available_cores()
    seed_blocks, batch_shards = seed_and_batch_blocks(num_seeds, batch_size,
                                                      CPU_DEVICES_PER_CORE * cores, cores)
    count = seed_blocks * batch_shards
  forced = re.search(r"--xla_force_host_platform_device_count=(\d+)",
                     os.environ.get("XLA_FLAGS", ""))
  if forced and int(forced.group(1)) != count:
    logging.warning("XLA_FLAGS asks for %s CPU devices, and this command makes %d of its own: "
                    "set them with --cpu_devices", forced.group(1), count)
  jax.config.update("jax_num_cpu_devices", count)
  return count


def sharing_cores(devices: Sequence[jax.Device]) -> Optional[int]:
  """The CPU cores that ``devices`` share: ``available_cores()`` for CPU devices, None for
  accelerators (each computes on its own)."""
  return available_cores() if devices[0].platform == "cpu" else None


def seed_batch_mesh(num_seeds: int, batch_size: int,
                    devices: Optional[Sequence[jax.Device]] = None) -> jax.sharding.Mesh:
  """A ``(SEED_AXIS, AXIS_NAME)`` mesh of ``devices`` (default: the local ones) shaped by
  ``seed_and_batch_blocks``: seeds split over the first axis, each seed's batch over the second.
  """
  devices = jax.local_devices() if devices is None else list(devices)
  shape = seed_and_batch_blocks(num_seeds, batch_size, len(devices), sharing_cores(devices))
  return jax.sharding.Mesh(np.array(devices[:shape[0] * shape[1]]).reshape(shape),
                           (SEED_AXIS, AXIS_NAME))


def batch_axis(mesh: jax.sharding.Mesh) -> Optional[str]:
  """The axis name a step must average over on ``mesh``: None when the batch is not split."""
  return AXIS_NAME if mesh.shape[AXIS_NAME] > 1 else None


def seed_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Arrays with a leading seed axis, split in equal blocks over ``mesh``'s seed axis."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(SEED_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Whole arrays on every device of ``mesh`` (e.g. data all seeds read)."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def local_block(x: Array, axis_name: Optional[str]) -> Array:
  """This replica's contiguous block of ``x``'s leading axis (all of ``x`` outside pmap /
  shard_map); ValueError if the axis does not split evenly."""
  if axis_name is None:
    return x
  size, rest = divmod(x.shape[0], lax.axis_size(axis_name))
  if rest:
    raise ValueError(f"{x.shape[0]} examples cannot be split over {lax.axis_size(axis_name)} "
                     "replicas")
  return lax.dynamic_slice_in_dim(x, lax.axis_index(axis_name) * size, size)
