"""The train step: determinism, one compilation, pmap == single device, batch norm in sync; the
seed sharding of independent runs."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import losses, parallel, train_state, train_step
from gan_jax.models import dcgan, mlp

N_DEVICES = 4


def mlp_gan(packing=1):
  return mlp.MLPGenerator(latent_dim=4, output_dim=2, width=16, depth=2), \
      mlp.MLPDiscriminator(width=16, depth=2, packing=packing)


def dcgan_pair(axis_name=None, d_norm="batch"):
  kwargs = dict(resolution=28, width=4, axis_name=axis_name)
  return (dcgan.Generator(latent_dim=8, **kwargs),
          dcgan.Discriminator(normalization=d_norm, **kwargs))


def init(generator, discriminator, data_shape, use_ema=False, lr=1e-3):
  tx = optax.adam(lr, b1=0.5)
  return train_state.create_gan_state(jax.random.PRNGKey(0), generator, discriminator,
                                      data_shape, tx, tx, use_ema=use_ema, init_batch_size=2)


def toy_batches(n_steps, batch, dim=2, seed=1):
  return np.random.default_rng(seed).normal(size=(n_steps, batch, dim)).astype(np.float32)


def leaves(state):
  """The arrays of a state (the optimizer objects in its structure differ between inits)."""
  return jax.tree_util.tree_leaves(state)


def run_single(generator, discriminator, config, data, data_shape=(2,), use_ema=False):
  state = init(generator, discriminator, data_shape, use_ema)
  step = parallel.jit_step(train_step.make_train_step(generator, discriminator, config))
  history = []
  for real in data:
    state, metrics = step(state, real)
    history.append(metrics)
  return state, history


def test_same_seed_gives_bit_identical_states():
  g, d = mlp_gan()
  config = train_step.StepConfig()
  data = toy_batches(5, 32)
  a, _ = run_single(g, d, config, data)
  b, _ = run_single(g, d, config, data)
  chex.assert_trees_all_equal(leaves(a), leaves(b))
  assert int(a.step) == 5


def test_step_compiles_once():
  g, d = mlp_gan()
  raw = train_step.make_train_step(g, d, train_step.StepConfig())
  step = jax.jit(chex.assert_max_traces(raw, n=1), donate_argnums=(0,))
  state = init(g, d, (2,))
  for real in toy_batches(5, 32):
    state, _ = step(state, real)  # raises on a second trace
  assert int(state.step) == 5


def reference_step(generator, discriminator, state, real, config, lr):
  """One train step written out by hand for MLP players (no batch statistics) and plain SGD:
  the losses, the penalties and the update order of the module docstring, from the documented
  keys."""
  loss_pairs = {
      "non_saturating": (lambda r, f: jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(f)),
                         lambda f: jnp.mean(jax.nn.softplus(-f))),
      "wasserstein": (lambda r, f: jnp.mean(f) - jnp.mean(r), lambda f: -jnp.mean(f)),
      "least_squares": (lambda r, f: 0.5 * jnp.mean((r - 1) ** 2) + 0.5 * jnp.mean(f ** 2),
                        lambda f: 0.5 * jnp.mean((f - 1) ** 2)),
      "hinge": (lambda r, f: jnp.mean(jax.nn.relu(1 - r)) + jnp.mean(jax.nn.relu(1 + f)),
                lambda f: -jnp.mean(f)),
      "minimax": (lambda r, f: jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(f)),
                  lambda f: -jnp.mean(jax.nn.softplus(f))),  # mean log(1 - D(G(z)))
  }
  d_loss, g_loss = loss_pairs[config.loss]
  G = lambda params, z: generator.apply({"params": params}, z, train=True)
  D = lambda params, x: discriminator.apply({"params": params}, x, train=True)

  packing = discriminator.packing

  def squared_norms(d_params, x):  # of the gradient of each pack's logit, (batch / packing,)
    grads = jax.grad(lambda x: jnp.sum(D(d_params, x)))(x)
    return jnp.sum(grads.reshape(-1, packing * x.shape[-1]) ** 2, axis=-1)

  g_params, d_params = state.generator.params, state.discriminator.params
  step_key = jax.random.fold_in(state.rng, state.step)
  batch = real.shape[0] // config.n_critic
  d_real = []  # mean D(x) of each critic update, before it
  for i in range(config.n_critic):
    noise_key, penalty_key = jax.random.split(jax.random.fold_in(step_key, i))
    latents = parallel.per_example_noise(noise_key, (batch, generator.latent_dim), None)
    fake, data = G(g_params, latents), real[i::config.n_critic]
    d_real.append(jnp.mean(jax.nn.sigmoid(D(d_params, data))))

    def d_total(params):
      total = d_loss(D(params, data), D(params, fake))
      eps = parallel.per_example_noise(penalty_key, (batch // packing,), None,
                                       draw=jax.random.uniform)
      eps = jnp.repeat(eps, packing)[:, None]  # one weight per pack
      norms = jnp.sqrt(squared_norms(params, eps * data + (1 - eps) * fake))
      total += config.gradient_penalty * jnp.mean((norms - 1.0) ** 2)
      total += config.r1_penalty * jnp.mean(squared_norms(params, data))
      return total

    d_params = jax.tree_util.tree_map(lambda p, g: p - lr * g, d_params,
                                      jax.grad(d_total)(d_params))
  g_grads = jax.grad(lambda params: g_loss(D(d_params, G(params, latents))))(g_params)
  g_params = jax.tree_util.tree_map(lambda p, g: p - lr * g, g_params, g_grads)
  return g_params, d_params, d_real


@pytest.mark.parametrize("config, packing", [
    (train_step.StepConfig(), 1),
    (train_step.StepConfig(loss="wasserstein", n_critic=3, gradient_penalty=10.0), 1),
    (train_step.StepConfig(r1_penalty=5.0, gradient_penalty=10.0), 2),
    (train_step.StepConfig(loss="least_squares", n_critic=2, r1_penalty=1.0), 1),
    (train_step.StepConfig(loss="hinge", n_critic=2, gradient_penalty=10.0, r1_penalty=1.0), 2),
    (train_step.StepConfig(loss="minimax"), 1),
], ids=["non_saturating", "wgan_gp_3_critics", "packs_of_2_with_both_penalties",
        "least_squares_2_critics_r1", "hinge_packs_2_critics_both_penalties", "minimax"])
def test_step_equals_the_algorithm_written_out_by_hand(config, packing):
  g, d = mlp_gan(packing)
  lr = 0.05
  state0 = train_state.create_gan_state(jax.random.PRNGKey(0), g, d, (2,), optax.sgd(lr),
                                        optax.sgd(lr), init_batch_size=2)
  real = toy_batches(1, 16 * config.n_critic)[0]
  expected_g, expected_d, d_real = reference_step(g, d, state0, real, config, lr)
  state, metrics = jax.jit(train_step.make_train_step(g, d, config))(state0, real)
  chex.assert_trees_all_close(state.generator.params, expected_g, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state.discriminator.params, expected_d, rtol=1e-5, atol=1e-6)
  # the update moved the players by more than the tolerance
  moved = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))),
                                 state.generator.params, state0.generator.params)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-3
  # the metrics are averaged over the critic updates
  np.testing.assert_allclose(metrics["d_real"], np.mean(d_real), rtol=1e-5)
  assert len(set(np.round(d_real, 6))) == len(d_real)  # (they differ)
  assert int(metrics["nonfinite"]) == 0 and int(state.step) == 1


def run_pmap(generator, discriminator, config, data, data_shape=(2,)):
  state = parallel.replicate(init(generator, discriminator, data_shape))
  step = parallel.pmap_step(train_step.make_train_step(generator, discriminator, config,
                                                       axis_name=parallel.AXIS_NAME))
  for real in data:
    state, metrics = step(state, parallel.shard(real, N_DEVICES))
  return state, metrics


def assert_replicas_identical(replicated):
  for leaf in jax.tree_util.tree_leaves(replicated):
    for replica in range(1, N_DEVICES):
      np.testing.assert_array_equal(leaf[replica], leaf[0])


@pytest.mark.parametrize("n_critic", [1, 2])
def test_parallel_pmap_step_equals_single_device_step(n_critic):
  assert jax.local_device_count() == N_DEVICES
  g, d = mlp_gan()
  config = train_step.StepConfig(n_critic=n_critic)
  data = toy_batches(3, 32 * n_critic)
  single, single_metrics = run_single(g, d, config, data)
  replicated, metrics = run_pmap(g, d, config, data)
  assert_replicas_identical(replicated)
  chex.assert_trees_all_close(leaves(parallel.unreplicate(replicated)), leaves(single),
                              rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["g_loss"][0], single_metrics[-1]["g_loss"], rtol=1e-4)


def test_parallel_dcgan_step_keeps_global_batch_norm_and_penalties_of_one_device():
  """The DCGAN under pmap: the generator's batch norm normalizes with global-batch statistics,
  and the penalties (per-example interpolation weights and input gradients, through a
  spectrally normalized discriminator, whose power-iteration vectors stay in step) give one
  device's numbers; a batch-norm discriminator is refused with them. (A layer-norm one, per
  image, has nothing to keep in step.)"""
  d_norm = "spectral"
  data = np.random.default_rng(0).uniform(-1, 1, (2, 16, 28, 28, 1)).astype(np.float32)
  config = train_step.StepConfig(loss="wasserstein", gradient_penalty=10.0, r1_penalty=1.0)
  replicated, metrics = run_pmap(*dcgan_pair(parallel.AXIS_NAME, d_norm), config, data,
                                 (28, 28, 1))
  assert_replicas_identical(replicated)
  single, history = run_single(*dcgan_pair(d_norm=d_norm), config, data, (28, 28, 1))
  pmapped = parallel.unreplicate(replicated)
  chex.assert_trees_all_close(pmapped.generator.batch_stats, single.generator.batch_stats,
                              rtol=1e-3, atol=1e-5)
  chex.assert_trees_all_close(leaves(pmapped), leaves(single), rtol=1e-4, atol=1e-6)
  for name in ("gradient_penalty", "r1_penalty", "d_loss"):
    np.testing.assert_allclose(metrics[name][0], history[-1][name], rtol=1e-4)
  assert float(history[-1]["gradient_penalty"]) > 0 and float(history[-1]["r1_penalty"]) > 0
  with pytest.raises(ValueError, match="mixes the samples of a batch"):
    train_step.make_train_step(*dcgan_pair(), config)


def test_nonfinite_update_is_skipped_and_counted():
  g, d = mlp_gan()
  state0 = init(g, d, (2,))
  step = jax.jit(train_step.make_train_step(g, d, train_step.StepConfig()))
  bad = np.full((32, 2), np.nan, np.float32)
  state, metrics = step(state0, bad)
  assert int(metrics["nonfinite"]) == 1  # the discriminator update; the generator's is finite
  chex.assert_trees_all_equal(state.discriminator.params, state0.discriminator.params)
  chex.assert_trees_all_equal(state.discriminator.opt_state, state0.discriminator.opt_state)
  assert int(optax.tree_utils.tree_get(state.generator.opt_state, "count")) == 1  # it went on
  assert int(state.step) == 1


def test_an_update_that_is_not_finite_itself_is_skipped_though_its_gradients_are_finite():
  """Finite gradients times an infinite learning rate: the generator keeps its finite params."""
  g, d = mlp_gan()
  tx = optax.adam(1e-3)
  state0 = train_state.create_gan_state(jax.random.PRNGKey(0), g, d, (2,), optax.sgd(np.inf), tx)
  state, metrics = jax.jit(train_step.make_train_step(g, d, train_step.StepConfig()))(
      state0, toy_batches(1, 32)[0])
  assert int(metrics["nonfinite"]) == 1 and np.isfinite(float(metrics["g_grad_norm"]))
  chex.assert_trees_all_equal(state.generator.params, state0.generator.params)
  assert not jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a, b: np.array_equal(a, b), state.discriminator.params, state0.discriminator.params))


@pytest.mark.parametrize("bad_update", [0, 1, 2])
def test_one_nonfinite_critic_update_of_three_is_skipped_and_counted(bad_update):
  """Each critic update counts once, from the loop of the first ones or the last one."""
  g, d = mlp_gan()
  step = jax.jit(train_step.make_train_step(g, d, train_step.StepConfig(n_critic=3)))
  real = toy_batches(1, 48)[0].copy()
  real[bad_update::3][0] = np.nan  # one example of that update's batch
  state0 = init(g, d, (2,))
  state, metrics = step(state0, real)
  assert int(metrics["nonfinite"]) == 1
  chex.assert_tree_all_finite(state)
  # only that update was skipped: Adam counted the other two critic updates and the generator's
  assert int(optax.tree_utils.tree_get(state.discriminator.opt_state, "count")) == 2
  assert int(optax.tree_utils.tree_get(state.generator.opt_state, "count")) == 1
  assert not np.allclose(leaves(state.generator.params)[0], leaves(state0.generator.params)[0])


def test_nonfinite_generator_update_keeps_the_generator_and_discriminator_statistics(
    monkeypatch):
  """A generator loss of NaN: the generator's params, optimizer state and batch statistics stay,
  and so do the discriminator's statistics from the generator update's forward pass; the
  critic update before it is applied as usual."""
  nan_loss = losses.GANLoss(losses.discriminator_loss, lambda logits: jnp.nan * jnp.mean(logits))
  monkeypatch.setitem(losses.LOSSES, "nan_generator", nan_loss)
  g, d = dcgan_pair()
  state0 = init(g, d, (28, 28, 1))
  real = np.random.default_rng(0).uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)
  run = lambda loss: jax.jit(train_step.make_train_step(g, d, train_step.StepConfig(loss=loss)))(
      state0, real)
  skipped, skipped_metrics = run("nan_generator")
  normal, _ = run("non_saturating")
  assert int(skipped_metrics["nonfinite"]) == 1
  chex.assert_trees_all_equal(skipped.generator, state0.generator)
  chex.assert_trees_all_close(skipped.discriminator.params, normal.discriminator.params)
  assert not np.allclose(leaves(normal.discriminator.batch_stats)[0],
                         leaves(skipped.discriminator.batch_stats)[0])
  chex.assert_tree_all_finite(skipped)


def test_ema_tracks_generator_params():
  g, d = mlp_gan()
  config = train_step.StepConfig(ema_decay=0.9)
  state0 = init(g, d, (2,), use_ema=True)
  state, _ = run_single(g, d, config, toy_batches(1, 32), use_ema=True)
  expected = jax.tree_util.tree_map(lambda old, new: 0.9 * old + 0.1 * new,
                                    state0.generator.params, state.generator.params)
  chex.assert_trees_all_close(state.ema_params, expected, rtol=1e-6)


@pytest.mark.parametrize("n, limit, expected", [(10, 8, 5), (10, 4, 2), (7, 4, 1), (12, 12, 12),
                                                (1, 8, 1), (6, 0, 1)])
def test_largest_divisor_at_most(n, limit, expected):
  assert parallel.largest_divisor_at_most(n, limit) == expected


@pytest.mark.parametrize("seeds, batch, devices, cores, expected", [
    (10, 256, 4, None, (4, 1)), (10, 256, 8, None, (5, 1)), (13, 256, 8, None, (7, 1)),
    (1, 256, 4, None, (1, 1)), (9, 256, 8, 2, (3, 1)), (13, 256, 8, 2, (1, 2)),
    (10, 256, 20, 2, (10, 1)), (5, 256, 8, 2, (5, 1)), (1, 256, 8, 2, (1, 2)),
    (3, 64, 16, 16, (3, 2)), (7, 256, 4, 4, (1, 4)), (1, 96, 8, 8, (1, 3)),
    (1, 64, 32, 32, (1, 2)), (1, 48, 8, 8, (1, 1))])
def test_seeds_take_the_devices_first_and_spare_cores_split_the_batch(seeds, batch, devices, cores,
                                                                      expected):
  assert parallel.seed_and_batch_blocks(seeds, batch, devices, cores) == expected


@pytest.mark.parametrize("num_seeds, runs, accelerators", [
    (10, 10, False), (10, 12, True), (3, 3, True), (8, 8, False), (1, 1, True), (5, 5, False),
    (5, 6, True)])
def test_seeds_are_split_in_equal_blocks_over_the_seed_axis_of_the_mesh(num_seeds, runs,
                                                                        accelerators,
                                                                        monkeypatch):
  """On accelerators (here CPU devices taken for them) the seeds are padded to fill them."""
  if accelerators:
    monkeypatch.setattr(parallel, "sharing_cores", lambda devices: None)
  mesh = parallel.seed_batch_mesh(num_seeds, 64, jax.devices()[:4])
  seed_blocks, batch_shards = mesh.shape[parallel.SEED_AXIS], mesh.shape[parallel.AXIS_NAME]
  assert parallel.padded_seed_count(num_seeds, mesh) == runs
  assert runs % seed_blocks == 0 and mesh.size == seed_blocks * batch_shards <= 4
  # padding never leaves a device without a real seed
  assert runs - num_seeds < runs // seed_blocks
  assert parallel.batch_axis(mesh) == (parallel.AXIS_NAME if batch_shards > 1 else None)
  seeds = np.arange(runs * 3.0).reshape(runs, 3)
  shards = jax.device_put(seeds, parallel.seed_sharding(mesh)).addressable_shards
  assert len({s.device for s in shards}) == mesh.size
  for shard in shards:  # every batch shard of a seed block holds all of that block's seeds
    assert shard.data.shape == (runs // seed_blocks, 3)
    np.testing.assert_array_equal(shard.data, seeds[shard.index])


def test_a_batch_that_does_not_split_into_critic_batches_is_named():
  g, d = mlp_gan()
  step = jax.jit(train_step.make_train_step(g, d, train_step.StepConfig(n_critic=3)))
  with pytest.raises(ValueError, match="batch of 14 samples does not split into n_critic=3"):
    step(init(g, d, (2,)), toy_batches(1, 14)[0])


@pytest.mark.parametrize("settings, message", [
    (dict(loss="nonsaturating"), "loss must be one of hinge, .*, got 'nonsaturating'"),
    (dict(loss=3), "loss must be a name or a losses.GANLoss, got 3"),
    (dict(n_critic=0), "n_critic must be positive, got 0"),
    (dict(gradient_penalty=-10.0), r"gradient_penalty must be >= 0 \(0: off\), got -10.0"),
    (dict(r1_penalty=-1.0), "r1_penalty must be >= 0"),
    (dict(ema_decay=2.0), r"ema_decay must be in \[0, 1\), got 2.0"),
])
def test_a_step_config_out_of_range_is_refused(settings, message):
  with pytest.raises(ValueError, match=message):
    train_step.StepConfig(**settings)


def test_a_loss_of_your_own_trains_as_the_named_one_of_the_same_functions():
  g, d = mlp_gan()
  real = toy_batches(1, 16)[0]
  own = losses.GANLoss(losses.hinge_discriminator_loss, losses.hinge_generator_loss)
  states = [jax.jit(train_step.make_train_step(g, d, train_step.StepConfig(loss=loss)))(
      init(g, d, (2,)), real)[0] for loss in ("hinge", own)]
  chex.assert_trees_all_equal(leaves(states[0]), leaves(states[1]))


class UndeclaredDiscriminator(nn.Module):
  """A discriminator that does not say whether its logits mix the samples of a batch."""

  @nn.compact
  def __call__(self, x, train=True):
    return nn.Dense(1)(x)[:, 0]


def test_the_penalties_need_a_discriminator_that_declares_it_scores_samples_on_their_own():
  g, _ = mlp_gan()
  config = train_step.StepConfig(r1_penalty=1.0)
  with pytest.raises(ValueError, match="UndeclaredDiscriminator.* does not say whether"):
    train_step.make_train_step(g, UndeclaredDiscriminator(), config)
  train_step.make_train_step(g, UndeclaredDiscriminator(), train_step.StepConfig())  # no penalty


def test_a_packing_discriminator_is_built_with_one_pack_by_default():
  """Its dummy batch must hold whole packs: 1 sample would not; the params do not depend on it."""
  g, d = mlp_gan(packing=3)
  tx = optax.adam(1e-3)
  default = train_state.create_gan_state(jax.random.PRNGKey(0), g, d, (2,), tx, tx)
  explicit = train_state.create_gan_state(jax.random.PRNGKey(0), g, d, (2,), tx, tx,
                                          init_batch_size=6)
  assert default.discriminator.params["Dense_0"]["kernel"].shape == (6, 16)  # 3 samples of 2
  chex.assert_trees_all_equal(default.discriminator.params, explicit.discriminator.params)
