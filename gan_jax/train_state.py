"""GANState: everything a GAN run needs to continue exactly, as one pytree.

Both players are Flax ``TrainState``s with a ``batch_stats`` collection (running batch-norm
statistics, spectral-norm power-iteration vectors; empty for models without them). ``step`` counts
generator updates; ``rng`` is the run's root key, from which every step derives its own key with
``jax.random.fold_in(rng, step)``, so the state never threads keys through Python.
"""
import dataclasses
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

Array = jax.Array
PyTree = Any


class ModelState(train_state.TrainState):
  """A Flax TrainState plus the model's non-trainable ``batch_stats`` collection."""
  batch_stats: PyTree = dataclasses.field(default_factory=dict)

  @property
  def variables(self) -> dict:
    """The variables to pass to ``module.apply``."""
    return {"params": self.params, "batch_stats": self.batch_stats}


@flax.struct.dataclass
class GANState:
  """The whole training state.

  Attributes:
    generator: the generator's params, optimizer state and batch statistics.
    discriminator: the discriminator's params, optimizer state and batch statistics.
    step: int32 scalar, generator updates done so far.
    rng: the run's root PRNG key (raw uint32 ``(2,)`` key, so checkpoints can store it).
    ema_params: exponential moving average of the generator params, or None when disabled.
  """
  generator: ModelState
  discriminator: ModelState
  step: Array
  rng: Array
  ema_params: Optional[PyTree] = None


def _init(module: nn.Module, key: Array, example: Array) -> PyTree:
  return module.init(key, example, train=False)


# Runs once per run, so on the CPU compiled for speed of compiling (1.4 s instead of 6.6 s for
# the DCGAN) with a lower backend (LLVM) optimization level; other backends compile it as usual
# (XLA:GPU warns below its default level, and the option was never tried on a TPU).
_fast_compiling_init = jax.jit(_init, static_argnums=0,
                               compiler_options={"xla_backend_optimization_level": 0})
_compiled_init = jax.jit(_init, static_argnums=0)


def _init_variables(module: nn.Module, key: Array, example: Array) -> PyTree:
  """``module``'s variables, built as one program: eagerly, the forward pass that creates them
  would compile op by op (12 s for the DCGAN). Cached per module and example shape. Inside a
  caller's ``jit``, ``vmap`` or ``eval_shape`` they are part of the caller's program."""
  if isinstance(key, jax.core.Tracer):
    return _init(module, key, example)
  devices = key.devices() if isinstance(key, jax.Array) else ()
  on_cpu = (all(d.platform == "cpu" for d in devices) if devices
            else jax.default_backend() == "cpu")
  return (_fast_compiling_init if on_cpu else _compiled_init)(module, key, example)


def _init_model(module: nn.Module, key: Array, example: Array, tx: optax.GradientTransformation):
  variables = _init_variables(module, key, example)
  return ModelState.create(apply_fn=module.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def create_gan_state(key: Array, generator: nn.Module, discriminator: nn.Module, data_shape,
                     generator_tx: optax.GradientTransformation,
                     discriminator_tx: optax.GradientTransformation,
                     use_ema: bool = False, init_batch_size: Optional[int] = None) -> GANState:
  """Initializes both players from ``key``.

  Args:
    key: PRNG key; the same key gives the same state.
    generator: module mapping latents ``(batch, generator.latent_dim)`` to samples.
    discriminator: module mapping samples ``(batch, *data_shape)`` to logits ``(batch,)``.
    data_shape: shape of one sample, e.g. ``(2,)`` or ``(32, 32, 1)``.
    generator_tx: the generator's optax optimizer.
    discriminator_tx: the discriminator's optax optimizer.
    use_ema: whether to keep an exponential moving average of the generator params.
    init_batch_size: batch of the dummy inputs used to build the params (a multiple of the
      discriminator's packing, where it packs samples); default: that packing, else 1.

  Returns:
    A GANState at step 0.
  """
  if init_batch_size is None:
    init_batch_size = getattr(discriminator, "packing", 1)
  g_key, d_key, run_key = jax.random.split(key, 3)
  g_state = _init_model(generator, g_key, jnp.zeros((init_batch_size, generator.latent_dim)),
                        generator_tx)
  d_state = _init_model(discriminator, d_key, jnp.zeros((init_batch_size,) + tuple(data_shape)),
                        discriminator_tx)
  return GANState(generator=g_state, discriminator=d_state, step=jnp.zeros((), jnp.int32),
                  rng=run_key,
                  # a copy: a donated state must not hold the same buffer twice.
                  ema_params=jax.tree_util.tree_map(jnp.copy, g_state.params) if use_ema else None)


def count_params(params: PyTree) -> int:
  """Number of scalars in a parameter tree."""
  return sum(x.size for x in jax.tree_util.tree_leaves(params))
