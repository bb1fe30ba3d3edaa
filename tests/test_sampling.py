"""Sampling in eval mode: running statistics, and standing statistics for EMA weights."""
import dataclasses

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


def test_interpolation_rows_walk_the_great_circle_between_two_fixed_latents_in_equal_steps():
  config = tiny_config()
  z = np.float64(trainer.interpolation_latents(config, rows=3, columns=5)).reshape(3, 5, -1)
  ends = np.float64(trainer.latents(config, trainer.INTERPOLATION_LATENTS, 6)).reshape(3, 2, -1)
  np.testing.assert_allclose(z[:, 0], ends[:, 0], atol=1e-5)
  np.testing.assert_allclose(z[:, -1], ends[:, 1], atol=1e-5)
  unit = z / np.linalg.norm(z, axis=-1, keepdims=True)
  steps = np.arccos(np.clip(np.sum(unit[:, 1:] * unit[:, :-1], -1), -1, 1))  # (3, 4)
  whole = np.arccos(np.sum(unit[:, 0] * unit[:, -1], -1))
  np.testing.assert_allclose(steps, np.repeat(whole[:, None] / 4, 4, axis=1), rtol=1e-4)
  norms = np.linalg.norm(z, axis=-1)  # (3, 5): linear from one end's length to the other's
  np.testing.assert_allclose(norms, np.linspace(norms[:, 0], norms[:, -1], 5, axis=1),
                             rtol=1e-5)
  # one latent dimension has no circle to walk: a straight line between the two ends
  config = dataclasses.replace(config, latent_dim=1)
  line = trainer.interpolation_latents(config, rows=3, columns=5)[:, 0]
  ends = trainer.latents(config, trainer.INTERPOLATION_LATENTS, 6)[:, 0]
  np.testing.assert_allclose(line.reshape(3, 5), np.linspace(ends[0::2], ends[1::2], 5, axis=1),
                             rtol=1e-5, atol=1e-6)
