"""Losses against float64 NumPy references, at ordinary and extreme logits."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import losses

LOGITS = np.array([-1e4, -30.0, -10.0, -1.5, 0.0, 0.3, 2.0, 10.0, 30.0, 1e4])


def np_log_sigmoid(x):
  return -np.logaddexp(0.0, -np.asarray(x, np.float64))


REAL = LOGITS
FAKE = LOGITS[::-1] * 0.7


def test_value_function_matches_float64_reference():
  expected = np.mean(np_log_sigmoid(REAL)) + np.mean(np_log_sigmoid(-FAKE))
  np.testing.assert_allclose(losses.value_function(REAL, FAKE), expected, rtol=1e-6)


def test_value_at_coin_flip_discriminator_is_minus_log_4():
  zeros = jnp.zeros(16)
  np.testing.assert_allclose(losses.value_function(zeros, zeros), -np.log(4.0), rtol=1e-6)


def test_discriminator_loss_matches_float64_reference():
  """-mean log D(x) - mean log(1 - D(G(z))): minus the value, in float64."""
  expected = -np.mean(np_log_sigmoid(REAL)) - np.mean(np_log_sigmoid(-FAKE))
  np.testing.assert_allclose(losses.discriminator_loss(REAL, FAKE), expected, rtol=1e-6)


def test_generator_losses_match_float64_reference():
  np.testing.assert_allclose(losses.minimax_generator_loss(FAKE),
                             np.mean(np_log_sigmoid(-FAKE)), rtol=1e-6)
  np.testing.assert_allclose(losses.non_saturating_generator_loss(FAKE),
                             -np.mean(np_log_sigmoid(FAKE)), rtol=1e-6)


MODERATE = np.random.default_rng(0).normal(0.0, 3.0, size=(2, 12)).astype(np.float32)


@pytest.mark.parametrize("real, fake, atol", [
    # float32 sums of +-1e4 logits: absolute error ~ eps_32 * 1e4 * len(LOGITS).
    (REAL, FAKE, 1e-2),
    # where a wrong target or swapped roles would show: |logit| < 10, tight tolerance
    (MODERATE[0], MODERATE[1], 1e-6)])
def test_other_families_match_float64_reference(real, fake, atol):
  r, f = real.astype(np.float64), fake.astype(np.float64)
  cases = [
      (losses.wasserstein_critic_loss(real, fake), f.mean() - r.mean()),
      (losses.wasserstein_generator_loss(fake), -f.mean()),
      (losses.hinge_discriminator_loss(real, fake),
       np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean()),
      (losses.hinge_generator_loss(fake), -f.mean()),
      (losses.least_squares_discriminator_loss(real, fake),
       0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean()),
      (losses.least_squares_generator_loss(fake), 0.5 * ((f - 1) ** 2).mean()),
  ]
  for got, expected in cases:
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=atol)


def np_sigmoid(x):
  return np.exp(np_log_sigmoid(x))


# d(loss)/d(logit) of each loss, times the batch size: (real, fake) for D, fake for G.
GRADIENTS = {
    "minimax": (lambda r, f: (-np_sigmoid(-r), np_sigmoid(f)), lambda f: -np_sigmoid(f)),
    "non_saturating": (lambda r, f: (-np_sigmoid(-r), np_sigmoid(f)), lambda f: -np_sigmoid(-f)),
    "wasserstein": (lambda r, f: (-np.ones_like(r), np.ones_like(f)), lambda f: -np.ones_like(f)),
    "hinge": (lambda r, f: (-1.0 * (r < 1.0), 1.0 * (f > -1.0)), lambda f: -np.ones_like(f)),
    "least_squares": (lambda r, f: (r - 1.0, f), lambda f: f - 1.0),
}


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_gradients_equal_their_closed_form_up_to_extreme_logits(name):
  """Including +-1e4, where a naive log(sigmoid) would give inf or nan."""
  assert set(GRADIENTS) == set(losses.LOSSES)
  pair, (d_grads_expected, g_grad_expected) = losses.get_loss(name), GRADIENTS[name]
  real, fake = jnp.asarray(REAL, jnp.float32), jnp.asarray(FAKE, jnp.float32)
  r, f, n = REAL.astype(np.float64), FAKE.astype(np.float64), len(REAL)
  d_value, d_grads = jax.value_and_grad(pair.discriminator, argnums=(0, 1))(real, fake)
  g_value, g_grad = jax.value_and_grad(pair.generator)(fake)
  chex.assert_tree_all_finite((d_value, g_value))
  for got, expected in zip(d_grads, d_grads_expected(r, f)):
    np.testing.assert_allclose(got, np.asarray(expected, np.float64) / n, rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(g_grad, g_grad_expected(f) / n, rtol=1e-6, atol=1e-12)


def test_saturation_claim_at_logit_minus_10():
  """The seed's claim: at D(G(z)) ~ 0 the minimax loss gives ~e^-10 per example, NS gives ~1."""
  batch = 8
  fake = jnp.full((batch,), -10.0)
  per_example = lambda loss: batch * jax.grad(loss)(fake)
  minimax = per_example(losses.minimax_generator_loss)
  non_saturating = per_example(losses.non_saturating_generator_loss)
  np.testing.assert_allclose(minimax, -1.0 / (1.0 + np.exp(10.0)), rtol=1e-5)  # -sigmoid(-10)
  np.testing.assert_allclose(non_saturating, -1.0 / (1.0 + np.exp(-10.0)), rtol=1e-6)
  assert np.all(np.abs(non_saturating) / np.abs(minimax) > 2e4)


def test_losses_commute_with_jit_and_vmap():
  rows = jnp.asarray(np.random.default_rng(0).normal(size=(5, 7)) * 20, jnp.float32)
  for fn in (losses.non_saturating_generator_loss, losses.minimax_generator_loss):
    looped = jnp.stack([fn(r) for r in rows])
    np.testing.assert_allclose(jax.jit(jax.vmap(fn))(rows), looped, rtol=1e-6)
  looped = jnp.stack([losses.value_function(r, r[::-1]) for r in rows])
  np.testing.assert_allclose(jax.vmap(lambda r: losses.value_function(r, r[::-1]))(rows),
                             looped, rtol=1e-6)


def test_gradient_penalty_of_linear_critic_is_closed_form():
  """For f(x) = w.x the input gradient is w everywhere: penalty = (||w|| - 1)^2."""
  w = jnp.array([3.0, -4.0, 12.0])  # norm 13
  logit_fn = lambda x: x @ w
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  real = jax.random.normal(keys[0], (6, 3))
  fake = jax.random.normal(keys[1], (6, 3))
  penalty = losses.gradient_penalty(logit_fn, real, fake, jax.random.PRNGKey(2))
  np.testing.assert_allclose(penalty, 144.0, rtol=1e-6)


def test_gradient_penalty_is_per_example_on_images():
  """f(x) = sum(x^2) / 2 has gradient x: penalty is the mean of (||x_hat_i|| - 1)^2."""
  logit_fn = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  real = jnp.ones((4, 2, 2, 1))
  penalty = losses.gradient_penalty(logit_fn, real, real, jax.random.PRNGKey(0))
  np.testing.assert_allclose(penalty, (2.0 - 1.0) ** 2, rtol=1e-6)  # ||x_hat|| = ||1_4|| = 2


def test_gradient_penalty_gradient_is_finite_where_an_input_gradient_is_zero():
  """A ReLU critic is flat where its unit is dead: that interpolate's norm is 0 in a whole
  neighbourhood, so it adds (0 - 1)^2 = 1 to the penalty and nothing to its gradient."""
  def penalty(w, x):
    logit_fn = lambda inputs: jax.nn.relu(inputs @ w)
    return losses.gradient_penalty(logit_fn, x, x, None, weights=jnp.ones(len(x)))
  w = jnp.array([1.0, 2.0])  # live where x . w > 0
  live, dead = jnp.array([[1.0, 1.0]]), jnp.array([[-1.0, -1.0]])
  both = jnp.concatenate([live, dead])
  value, grad = jax.value_and_grad(penalty)(w, both)
  live_value, live_grad = jax.value_and_grad(penalty)(w, live)
  np.testing.assert_allclose(value, (live_value + 1.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(grad, live_grad / 2, rtol=1e-6)  # (||w|| - 1) w / ||w||, halved
  np.testing.assert_allclose(live_grad, 2 * (np.sqrt(5.0) - 1) * np.array([1.0, 2.0]) /
                             np.sqrt(5.0), rtol=1e-6)


def test_r1_penalty_is_mean_squared_input_gradient():
  logit_fn = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=-1)
  real = jnp.array([[1.0, 2.0], [3.0, 0.0]])
  np.testing.assert_allclose(losses.r1_penalty(logit_fn, real), (5.0 + 9.0) / 2, rtol=1e-6)


def test_unknown_loss_names_the_choices():
  with pytest.raises(ValueError, match="non_saturating"):
    losses.get_loss("nonsaturating")


def test_gradient_penalty_interpolates_with_the_given_weights():
  """D(x) = ||x||^2 / 2 has gradient x, so each norm is ||eps real + (1 - eps) fake||."""
  real = jnp.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
  fake = jnp.array([[0.0, 4.0], [1.0, 0.0], [-1.0, 3.0]])
  eps = jnp.array([0.25, 0.5, 1.0])
  logit_fn = lambda x: 0.5 * jnp.sum(x ** 2, axis=-1)
  mixed = eps[:, None] * real + (1 - eps[:, None]) * fake
  expected = np.mean((np.linalg.norm(mixed, axis=-1) - 1.0) ** 2)
  np.testing.assert_allclose(losses.gradient_penalty(logit_fn, real, fake, weights=eps),
                             expected, rtol=1e-6)


def test_penalties_of_a_packing_critic_are_per_pack():
  """A linear critic of packs of 2, D(x1, x2) = w . (x1, x2) with ||w|| = 1: the gradient norm of
  every pack is 1, so the gradient penalty is 0 and R1 is 1, whatever the interpolation."""
  w = jnp.array([0.5, -0.5, 0.5, 0.5])
  logit_fn = lambda x: x.reshape(-1, 4) @ w
  real, fake = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 2))
  penalty = losses.gradient_penalty(logit_fn, real, fake, jax.random.PRNGKey(1), group_size=2)
  np.testing.assert_allclose(penalty, 0.0, atol=1e-10)
  np.testing.assert_allclose(losses.r1_penalty(logit_fn, real, group_size=2), 1.0, rtol=1e-6)
  # without group_size the critic's 4 logits for 8 examples are refused, not misread
  with pytest.raises(ValueError, match=r"one logit per discriminator input, \(8,\), got shape "
                     r"\(4,\)"):
    losses.gradient_penalty(logit_fn, real, fake, jax.random.PRNGKey(1))


@pytest.mark.parametrize("call, message", [
    (lambda f, x: losses.gradient_penalty(f, x, x, None, weights=jnp.ones(5)),
     r"weights must be \(6,\), one per discriminator input, got \(5,\)"),
    (lambda f, x: losses.gradient_penalty(f, x, x[:1], jax.random.PRNGKey(0)),
     r"real and fake must have one shape, got \(6, 2\) and \(1, 2\)"),
    (lambda f, x: losses.gradient_penalty(f, x, x, jax.random.PRNGKey(0), group_size=4),
     "a batch of 6 examples does not split into packs of group_size=4"),
    (lambda f, x: losses.gradient_penalty(f, x, x),
     "gradient_penalty needs a key to draw the interpolation weights, or the weights"),
    (lambda f, x: losses.r1_penalty(f, x, group_size=4),
     "a batch of 6 examples does not split into packs of group_size=4"),
    (lambda f, x: losses.r1_penalty(lambda y: jnp.mean(f(y)), x),
     r"one logit per discriminator input, \(6,\), got shape \(\)"),
])
def test_penalties_refuse_inputs_that_would_be_misread(call, message):
  logit_fn = lambda x: 0.5 * jnp.sum(x ** 2, axis=-1)
  with pytest.raises(ValueError, match=message):
    call(logit_fn, jnp.ones((6, 2)))


@pytest.mark.parametrize("penalty", [losses.r1_penalty, functools.partial(
    losses.gradient_penalty, fake=jnp.ones((0, 2)), key=jax.random.PRNGKey(0))])
def test_penalties_refuse_an_empty_batch(penalty):
  """It divided by zero inside a reshape (ZeroDivisionError without a word on the cause)."""
  with pytest.raises(ValueError, match="an empty batch: the penalties need at least one example"):
    penalty(lambda x: jnp.sum(x, axis=-1), jnp.ones((0, 2)))


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_take_logits_of_any_shape_as_one_batch(name):
  """A (2, 3, 4) batch of logits scores as its 24 values flattened (the batch mean)."""
  pair = losses.get_loss(name)
  real, fake = jnp.asarray(MODERATE[0]), jnp.asarray(MODERATE[1])
  shaped = lambda x: jnp.concatenate([x, -x]).reshape(2, 3, 4)
  np.testing.assert_allclose(pair.discriminator(shaped(real), shaped(fake)),
                             pair.discriminator(shaped(real).ravel(), shaped(fake).ravel()),
                             rtol=1e-6)
  np.testing.assert_allclose(pair.generator(shaped(fake)), pair.generator(shaped(fake).ravel()),
                             rtol=1e-6)
