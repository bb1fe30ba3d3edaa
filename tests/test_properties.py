"""Property tests (hypothesis): the losses and the theory hold their guarantees on any input."""
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gan_jax import losses, theory
from tests.test_losses import GRADIENTS, np_log_sigmoid
from tests.test_theory import float64_jsd

# derandomize: the same examples on every run, so CI cannot turn red by chance (the @example
# extremes cover the corners).
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
# Fixed shapes: each new shape would compile the functions again.
finite_logits = hnp.arrays(np.float32, 8, elements=st.floats(-1e4, 1e4, width=32))
# with values near float32's smallest normal number (1.2e-38), whose half is flushed to 0
densities = hnp.arrays(np.float64, 24, elements=st.one_of(st.just(0.0), st.floats(1e-6, 10.0),
                                                          st.floats(1e-35, 1e-30)))


EXTREMES = np.array([-1e4, 1e4, -104.0, 104.0, -30.0, 30.0, 0.0, -0.0], np.float32)


@SETTINGS
@given(real=finite_logits, fake=finite_logits, name=st.sampled_from(sorted(losses.LOSSES)))
@example(real=EXTREMES, fake=EXTREMES[::-1], name="non_saturating")  # exp underflows past -103
@example(real=EXTREMES, fake=EXTREMES[::-1], name="minimax")
def test_losses_finite_and_gradients_their_closed_form_for_any_finite_logits(real, fake, name):
  pair, (d_grads_expected, g_grad_expected) = losses.get_loss(name), GRADIENTS[name]
  d_value, d_grads = jax.value_and_grad(pair.discriminator, argnums=(0, 1))(real, fake)
  g_value, g_grad = jax.value_and_grad(pair.generator)(fake)
  assert np.isfinite(float(d_value)) and np.isfinite(float(g_value))
  r, f, n = real.astype(np.float64), fake.astype(np.float64), len(real)
  for got, expected in zip(d_grads, d_grads_expected(r, f)):
    np.testing.assert_allclose(got, np.asarray(expected, np.float64) / n, rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(g_grad, g_grad_expected(f) / n, rtol=1e-6, atol=1e-12)


@SETTINGS
@given(real=finite_logits, fake=finite_logits)
def test_value_is_at_most_zero_and_its_float64_reference(real, fake):
  v = float(losses.value_function(real, fake))
  assert v <= 0.0
  expected = np.mean(np_log_sigmoid(real)) + np.mean(np_log_sigmoid(-fake))
  # float32 means of logits up to 1e4: absolute error ~ eps_32 * 1e4
  np.testing.assert_allclose(v, expected, rtol=1e-6, atol=1e-3)


def normalize(p):
  total = p.sum()
  return p / total if total > 0 else np.full_like(p, 1.0 / p.size)


@SETTINGS
@given(p=densities, q=densities)
def test_jsd_bounded_symmetric_and_identity_holds(p, q):
  p, q = normalize(p), normalize(q)
  jsd = float(theory.js_divergence(p, q, 1.0))
  assert -1e-6 <= jsd <= np.log(2) + 1e-6
  np.testing.assert_allclose(jsd, float64_jsd(p, q, 1.0), atol=1e-6)
  np.testing.assert_allclose(jsd, float(theory.js_divergence(q, p, 1.0)), atol=1e-6)
  np.testing.assert_allclose(theory.optimal_value(p, q, 1.0), -np.log(4) + 2 * jsd, atol=1e-5)


@SETTINGS
@given(p=densities, q=densities)
def test_optimal_discriminator_is_the_density_ratio_and_never_nan(p, q):
  d = np.asarray(theory.optimal_discriminator(jnp.asarray(p), jnp.asarray(q)))
  assert np.all((d >= 0.0) & (d <= 1.0))
  support = (p + q) > 0
  np.testing.assert_allclose(d[support] * (p + q)[support], p[support], rtol=1e-6)
  assert np.all(d[~support] == 0.5)  # where neither has mass, D* is undetermined: a coin flip
