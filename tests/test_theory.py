"""GAN theory on grids: the identities of Goodfellow et al. 2014, checked numerically."""
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import rel_entr

from gan_jax import distributions, theory

LOG2 = np.log(2.0)
GRID = np.linspace(-6.0, 6.0, 2401)
DX = GRID[1] - GRID[0]


def float64_jsd(p, q, dx) -> float:
  """The Jensen-Shannon divergence in float64, 0 log 0 = 0 (scipy's rel_entr): a reference."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  m = 0.5 * (p + q)
  return 0.5 * dx * float(rel_entr(p, m).sum() + rel_entr(q, m).sum())


def density(mixture):
  p = np.exp(np.asarray(mixture.log_prob(jnp.asarray(GRID[:, None], jnp.float32)), np.float64))
  return p / (p.sum() * DX)  # normalized on the grid


P = density(distributions.mixture([-2.0, 1.0], [0.5, 0.8], [0.3, 0.7]))
Q = density(distributions.mixture([0.0, 2.5], [1.0, 0.4]))


def random_normalized_densities(seed, shape=(30, 40)):
  rng = np.random.default_rng(seed)
  p, q = rng.random(shape) ** 3, rng.random(shape) ** 3
  p[rng.random(shape) < 0.3] = 0.0  # holes: zero density must not give NaN
  dx = 0.05
  return p / (p.sum() * dx), q / (q.sum() * dx), dx


def test_jsd_symmetric_and_zero_for_equal_densities():
  np.testing.assert_allclose(theory.js_divergence(P, Q, DX), theory.js_divergence(Q, P, DX),
                             rtol=1e-6)
  np.testing.assert_allclose(theory.js_divergence(P, P, DX), 0.0, atol=1e-7)


def test_jsd_is_log_2_for_disjoint_supports():
  p = np.where(GRID < 0, 1.0, 0.0)
  q = np.where(GRID >= 0, 1.0, 0.0)
  p, q = p / (p.sum() * DX), q / (q.sum() * DX)
  np.testing.assert_allclose(theory.js_divergence(p, q, DX), LOG2, rtol=1e-6)


def test_jsd_on_random_mixtures_equals_a_float64_reference_and_is_bounded():
  for seed in range(10):
    p, q, dx = random_normalized_densities(seed)
    jsd = float(theory.js_divergence(p, q, dx))
    np.testing.assert_allclose(jsd, float64_jsd(p, q, dx), rtol=1e-5, atol=1e-7)
    assert 0.0 < jsd <= LOG2 + 1e-6


def test_optimal_value_is_minus_log_4_plus_2_jsd():
  for p, q, dx in [(P, Q, DX)] + [random_normalized_densities(s) for s in range(5)]:
    np.testing.assert_allclose(theory.optimal_value(p, q, dx),
                               -np.log(4.0) + 2.0 * theory.js_divergence(p, q, dx), atol=1e-5)


def test_optimal_discriminator_is_one_half_at_equilibrium_and_where_both_vanish():
  np.testing.assert_allclose(theory.optimal_discriminator(P, P), 0.5)
  d = theory.optimal_discriminator(np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 2.0]))
  np.testing.assert_array_equal(d, [0.5, 1.0, 0.0])


def test_optimal_discriminator_maximizes_value():
  d_star = np.asarray(theory.optimal_discriminator(P, Q), np.float64)
  best = float(theory.value(d_star, P, Q, DX))
  rng = np.random.default_rng(0)
  for scale in (1e-3, 1e-2, 0.1):
    d = np.clip(d_star + scale * rng.normal(size=d_star.shape), 1e-6, 1 - 1e-6)
    assert float(theory.value(d, P, Q, DX)) < best
  # and the value is stationary at D*: the gradient in d is zero where there is mass.
  grad = jax.grad(lambda d: theory.value(d, P, Q, DX))(jnp.asarray(np.clip(d_star, 1e-3, 1 - 1e-3)))
  assert float(jnp.max(jnp.abs(grad[(d_star > 1e-3) & (d_star < 1 - 1e-3)]))) < 1e-4


def test_kl_nonnegative_asymmetric_and_infinite_off_support():
  pq, qp = float(theory.kl_divergence(P, Q, DX)), float(theory.kl_divergence(Q, P, DX))
  assert pq > 0 and qp > 0 and abs(pq - qp) > 0.05
  np.testing.assert_allclose(theory.kl_divergence(P, P, DX), 0.0, atol=1e-7)
  assert np.isinf(theory.kl_divergence(np.array([1.0, 1.0]), np.array([2.0, 0.0]), 0.5))


def test_zero_densities_give_no_nan():
  """Where one density vanishes, 0 log 0 counts as 0: the float64 references with rel_entr."""
  p, q, dx = random_normalized_densities(3)
  assert np.any((np.asarray(p) == 0) != (np.asarray(q) == 0))  # the case this test is about
  values = [theory.js_divergence(p, q, dx), theory.optimal_value(p, q, dx),
            theory.optimal_discriminator(p, q), theory.kl_divergence(p, p, dx)]
  assert not any(np.isnan(np.asarray(v)).any() for v in values)
  jsd = float64_jsd(p, q, dx)
  np.testing.assert_allclose(values[0], jsd, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(values[1], -np.log(4.0) + 2 * jsd, atol=1e-5)
  np.testing.assert_allclose(values[3], 0.0, atol=1e-7)


def test_theory_matches_closed_form_for_two_gaussians():
  """KL between N(0, 1) and N(1, 2^2) is log 2 + (1 + 1) / 8 - 1/2."""
  p = np.exp(-0.5 * GRID ** 2) / np.sqrt(2 * np.pi)
  q = np.exp(-0.5 * ((GRID - 1) / 2) ** 2) / (2 * np.sqrt(2 * np.pi))
  np.testing.assert_allclose(theory.kl_divergence(p, q, DX), np.log(2) + 2 / 8 - 0.5, atol=2e-4)


def test_optimal_value_gradient_is_twice_the_jsd_gradient_in_underflowing_tails():
  """d V(D*, G) / d theta = 2 dJSD / d theta, on a float32 grid whose tails reach 1e-32: the
  derivative of the quotient D* = p / (p + q) would divide by their square, 0 in float32."""
  grid = jnp.linspace(-12.0, 12.0, 481)
  dx = float(grid[1] - grid[0])

  def gaussian(mean):
    return jnp.exp(-0.5 * (grid - mean) ** 2) / jnp.sqrt(2 * jnp.pi)

  assert float(jnp.square(gaussian(0.0)[0] + gaussian(1.0)[0])) == 0.0  # the regime in question
  value_grad = jax.grad(lambda m: theory.optimal_value(gaussian(0.0), gaussian(m), dx))(1.0)
  jsd_grad = jax.grad(lambda m: theory.js_divergence(gaussian(0.0), gaussian(m), dx))(1.0)
  np.testing.assert_allclose(value_grad, 2.0 * jsd_grad, rtol=1e-5)
  assert float(jsd_grad) > 0.1
