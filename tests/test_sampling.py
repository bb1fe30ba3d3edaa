"""Sampling in eval mode: running statistics, and standing statistics for EMA weights."""
import jax
import numpy as np

from gan_jax import trainer


def tiny_config(**kwargs):
  return trainer.TrainConfig(resolution=28, g_width=8, d_width=8, latent_dim=16, **kwargs)


def test_ema_samples_use_the_standing_statistics_of_the_ema_weights():
  config = tiny_config(ema_decay=0.99)
  generator, discriminator = trainer.build_models(config, None)
  state = trainer.initial_state(config, generator, discriminator)
  ema = jax.tree_util.tree_map(lambda x: 1.5 * x + 0.01, state.generator.params)
  state = state.replace(ema_params=ema)
  z = trainer.latents(config, trainer.STANDING_LATENTS, trainer.STANDING_BATCH)
  # In eval mode on the standing batch, normalizing with the standing statistics must give what
  # normalizing with that batch's own statistics gives.
  with_batch_stats, _ = generator.apply({"params": ema, "batch_stats":
                                         state.generator.batch_stats}, z, train=True,
                                        mutable=["batch_stats"])
  np.testing.assert_allclose(trainer.sampler(config)(state, z), with_batch_stats, atol=2e-5)


def test_samples_without_ema_use_the_running_statistics():
  config = tiny_config()
  generator, discriminator = trainer.build_models(config, None)
  state = trainer.initial_state(config, generator, discriminator)
  stats = jax.tree_util.tree_map(lambda x: x + 0.3, state.generator.batch_stats)
  state = state.replace(generator=state.generator.replace(batch_stats=stats))
  z = trainer.latents(config, trainer.GRID_LATENTS, 8)
  expected = generator.apply({"params": state.generator.params, "batch_stats": stats}, z,
                             train=False)
  np.testing.assert_allclose(trainer.sampler(config)(state, z), expected, atol=1e-6)
